/** Set-up shared by the kernel micro-benchmarks (matvec, prefill-tile) and the per-op profile. */
import { useNodeThreads } from '../src/cli/threads.js';
import '../src/index.js';
import { MatmulEngine, type KernelWeight } from '../src/kernels/matmul.js';
import { ggmlRowBytes, type GgmlCodec, type GgmlTypeInfo } from '../src/quant/ggml/types.js';

/** process CPU time in ms (user + system): the machine is shared, wall time counts other jobs' slices */
export function cpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

/** The kernel engine on `threads` threads (Node workers), or undefined (said) without WebAssembly SIMD */
export function kernelEngine(threads: number): MatmulEngine | undefined {
  useNodeThreads();
  const e = MatmulEngine.get();
  if (!e) {
    console.log('no WebAssembly SIMD: skipping');
    return undefined;
  }
  e.setThreads(threads);
  return e;
}

/** An n x k weight of uniform values in [-0.5, 0.5) from `next`, quantized to `type` and stored in the engine */
export function storeRandomWeight(e: MatmulEngine, type: GgmlTypeInfo, codec: GgmlCodec, n: number, k: number, next: () => number): { w: KernelWeight; rowBytes: number } {
  const rowBytes = ggmlRowBytes(type, k);
  const src = Float32Array.from({ length: n * k }, () => next() / 2 ** 32 - 0.5);
  const bytes = new Uint8Array(n * rowBytes);
  codec.quantize!(src, n, k, bytes);
  const w = e.storeWeight(type, n, k, rowBytes, bytes);
  if (!w) throw new Error('kernel memory is full');
  return { w, rowBytes };
}
