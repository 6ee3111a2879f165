/**
 * `npm run bench -- f32-decode [threads=1,2] [MB=600] [rounds=3]`: one-token F32 matvecs (MatmulEngine.matmul,
 * as `lowbit generate` runs them) over the 1.1B model's shapes (2048 x 2048, 5632 x 2048, 2048 x 5632),
 * cycled through ~MB of weights (from DRAM), row by row (the weights as stored) and on the copies
 * interleaved by 4 rows (prepareDecode); row by row as tile3x1 (3 adjacent rows) or in 4 strands (tile4x1s), alternated `rounds` times in one process. GB/s of weights.
 */
import { kernelEngine } from './_kernels.js';
import { type KernelWeight } from '../src/kernels/matmul.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

export async function run(args: string[]): Promise<void> {
  const threadList = (args[0] ?? '1,2').split(',').map(Number);
  const mb = Number(args[1] ?? 600);
  const rounds = Number(args[2] ?? 3);
  const e = kernelEngine(1);
  if (!e) return;
  const f32 = ggmlTypeByName('F32')!;
  const shapes = [[2048, 2048], [5632, 2048], [2048, 5632]];
  const ws: KernelWeight[] = [];
  let bytes = 0;
  for (let i = 0; bytes < mb * 1e6; i++) {
    const [n, k] = shapes[i % shapes.length];
    const v = new Float32Array(n * k);
    for (let j = 0; j < v.length; j += 97) v[j] = Math.sin(j + i);
    const w = e.storeWeight(f32, n, k, k * 4, new Uint8Array(v.buffer));
    if (!w) throw new Error('kernel memory is full');
    ws.push(w);
    bytes += n * k * 4;
  }
  const copies = ws.map((w) => e.prepareDecode(w));
  const xs = new Map<number, Float32Array>(shapes.map(([, k]) => [k, Float32Array.from({ length: k }, (_, i) => Math.cos(i))]));
  const ys = new Map<number, Float32Array>(shapes.map(([n]) => [n, new Float32Array(n)]));
  console.log(`one-token F32 matvec, ${ws.length} weights, ${(bytes / 1e6).toFixed(0)} MB cycled, ${e.variant} build; copies ${copies.every((c) => c > 0) ? 'made' : 'MISSING'}`);
  for (const t of threadList) {
    e.setThreads(t);
    const modes = ['rows3', 'strands4', 'interleaved'] as const;
    const res: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
    for (let r = 0; r < rounds; r++) {
      for (const mode of modes) {
        e.setDecodeInterleave(mode === 'interleaved');
        e.f32Strands = mode === 'strands4';
        const t0 = performance.now();
        for (const w of ws) e.matmul(ys.get(w.rows)!, xs.get(w.cols)!, w, 1);
        res[mode].push(bytes / ((performance.now() - t0) / 1000) / 1e9);
      }
    }
    e.setDecodeInterleave(true);
    e.f32Strands = true;
    console.log(`  ${e.threads} thread(s): ` + Object.entries(res).map(([m, v]) => `${m} ${v.map((g) => g.toFixed(1)).join(' / ')} GB/s`).join(';  '));
  }
  e.close();
}
