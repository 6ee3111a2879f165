/**
 * `npm run bench -- matvec-dram [types=Q4_K,Q6_K] [threads=1,2] [MB=600] [rounds=3] [strands=1,2,4] [model=155m|1.1b]`: the
 * one-token Q4_K / Q6_K matvecs (MatmulEngine.matmulInt on the decode copies made by prepareDecode, as
 * `lowbit generate` runs them) cycled through ~MB of distinct weights of each type (file bytes; the 155M
 * model's decode shapes 5632 x 768 (gate | up), 768 x 2816 (down), 32000 x 768 (output); 1.1b: 11264 x 2048,
 * 2048 x 5632, 32000 x 2048), so every weight
 * comes from DRAM as in a real decode. The weights are one quantized matrix per shape, stored again and
 * again (distinct memory, the same values). Each `kStrands` setting in turn, `rounds` times in one process;
 * GB/s of file bytes (rows x rowBytes) and of the copies' bytes, best and median of the rounds.
 */
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { type KernelWeight } from '../src/kernels/matmul.js';
import { kernelEngine, storeRandomWeight } from './_kernels.js';

export async function run(args: string[]): Promise<void> {
  const types = (args[0] ?? 'Q4_K,Q6_K').split(',');
  const threadList = (args[1] ?? '1,2').split(',').map(Number);
  const mb = Number(args[2] ?? 600);
  const rounds = Number(args[3] ?? 3);
  const strandList = (args[4] ?? '1,2,4').split(',').map(Number);
  const e = kernelEngine(1);
  if (!e) return;
  const strands0 = e.kStrands;
  const next = xorshift32(11);
  const model = args[5] ?? '155m';
  const shapes = model === '1.1b' ? [[11264, 2048], [2048, 5632], [32000, 2048]] : [[5632, 768], [768, 2816], [32000, 768]];
  const typed = types.map((name) => ({ name, type: ggmlTypeByName(name) }));
  for (const { name, type } of typed) {
    const codec = type && ggmlCodec(type);
    if (type?.id !== 12 && type?.id !== 14) throw new Error(`${name}: the types with strands are Q4_K and Q6_K`);
    if (!codec?.quantize) throw new Error(`${name}: no quantizer`);
    // one quantized matrix per shape, then its bytes stored until the type's weights reach mb / types
    const proto = shapes.map(([n, k]) => {
      const { w, rowBytes } = storeRandomWeight(e, type, codec, Math.min(n, 4096), k, next);
      const bytes = new Uint8Array(e.memory.buffer, w.ptr, w.rows * rowBytes).slice();
      const full = new Uint8Array(n * rowBytes);
      for (let o = 0; o < full.length; o += bytes.length) full.set(bytes.subarray(0, Math.min(bytes.length, full.length - o)), o);
      return { n, k, rowBytes, full };
    });
    const ws: KernelWeight[] = [];
    let file = 0;
    let copy = 0;
    for (let i = 0; file < (mb * 1e6) / types.length; i++) {
      const s = proto[i % proto.length];
      const w = e.storeWeight(type, s.n, s.k, s.rowBytes, s.full);
      if (!w) throw new Error('kernel memory is full');
      ws.push(w);
      file += s.n * s.rowBytes;
      copy += e.prepareDecode(w);
    }
    const xs = new Map<number, Float32Array>(shapes.map(([, k]) => [k, Float32Array.from({ length: k }, (_, i) => Math.sin(i * 0.37))]));
    const ys = new Map<number, Float32Array>(shapes.map(([n]) => [n, new Float32Array(n)]));
    console.log(`one-token ${name} matvec from DRAM: ${ws.length} weights, ${(file / 1e6).toFixed(0)} MB of file bytes, copies ${(copy / 1e6).toFixed(0)} MB (${((copy / file) * 100 - 100).toFixed(1)} % larger), ${e.variant} build`);
    for (const t of threadList) {
      e.setThreads(t);
      const res = new Map<number, number[]>(strandList.map((s) => [s, []]));
      // seconds per shape (rows) in each strand setting's fastest pass
      const byShape = new Map<number, Map<number, number>>();
      let shapeSec = new Map<number, number>();
      const pass = (): number => {
        shapeSec = new Map();
        const t0 = performance.now();
        for (const w of ws) {
          const t1 = performance.now();
          e.matmulInt(ys.get(w.rows)!, xs.get(w.cols)!, w, 1);
          shapeSec.set(w.rows, (shapeSec.get(w.rows) ?? 0) + (performance.now() - t1) / 1000);
        }
        return (performance.now() - t0) / 1000;
      };
      for (const s of strandList) {
        e.kStrands = s;
        pass(); // warm-up (compiles)
      }
      for (let r = 0; r < rounds; r++) {
        for (const s of strandList) {
          e.kStrands = s;
          const sec = pass();
          if (sec <= Math.min(...res.get(s)!)) byShape.set(s, shapeSec);
          res.get(s)!.push(sec);
        }
      }
      e.kStrands = strands0;
      const fmt = (v: number[]): string => {
        const sorted = [...v].sort((a, b) => a - b);
        const best = sorted[0];
        const med = sorted[sorted.length >> 1];
        return `${(file / best / 1e9).toFixed(1)} / ${(file / med / 1e9).toFixed(1)} GB/s (copy ${(copy / best / 1e9).toFixed(1)} / ${(copy / med / 1e9).toFixed(1)})`;
      };
      const base = [...res.get(strandList[0])!].sort((a, b) => a - b)[0];
      console.log(
        `  ${e.threads} thread(s), best / median of ${rounds}: ` +
          strandList.map((s) => `strands ${s}: ${fmt(res.get(s)!)} [${(base / [...res.get(s)!].sort((a, b) => a - b)[0]).toFixed(2)}x]`).join(';  '),
      );
      const shapeBytes = new Map<number, number>();
      for (const w of ws) shapeBytes.set(w.rows, (shapeBytes.get(w.rows) ?? 0) + w.rows * w.rowBytes);
      for (const [rows, b] of shapeBytes) {
        const w = ws.find((v) => v.rows === rows)!;
        console.log(`    ${rows} x ${w.cols}: ` + strandList.map((s) => `strands ${s} ${(b / byShape.get(s)!.get(rows)! / 1e9).toFixed(1)}`).join(', ') + ' GB/s (file bytes, fastest pass)');
      }
    }
  }
  e.close();
}
