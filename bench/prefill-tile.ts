/**
 * `npm run bench -- prefill-tile [types=Q8_0] [T=512] [threads=1] [rounds=6]`: the block-32 prefill
 * matmul (MatmulEngine.matmulInt, 4 tokens and more) alone, with the two tile layouts alternated in the
 * same process (ABBA): tokens in the lanes (qtile16p, 4 rows x 8 tokens) and weight rows in the lanes (qtile16r,
 * 8 rows x 4 tokens; `prefillTile`). (A 16 rows x 2 tokens variant, 4 vector loads and 2 splats per 8
 * products, ran at the 8 x 4's speed; 3 steps per loop iteration spilled: 0.75x.) The shapes of the ~100M synthetic llama's FFN (768 -> 2816 and
 * 2816 -> 768). GFLOP/s = 2 T K N per CPU second, best of `rounds` calls each; the activations are
 * rounded once (sameInput), so the time is the unpacking and the tiles. Output hashes must agree.
 */
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { cpuMs, kernelEngine, storeRandomWeight } from './_kernels.js';

function hash(y: Float32Array): string {
  const u = new Uint32Array(y.buffer, y.byteOffset, y.length);
  let h = 2166136261;
  for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i], 16777619) >>> 0;
  return h.toString(16).padStart(8, '0');
}

export async function run(args: string[]): Promise<void> {
  const types = (args[0] ?? 'Q8_0').split(',');
  const T = Number(args[1] ?? 512);
  const threads = Number(args[2] ?? 1);
  const rounds = Number(args[3] ?? 6);
  const e = kernelEngine(threads);
  if (!e) return;
  console.log(`block-32 prefill matmul, T = ${T}, ${e.threads} thread(s), ${e.variant} build; best of ${rounds}, layouts alternated`);
  const next = xorshift32(11);
  for (const name of types) {
    const type = ggmlTypeByName(name);
    const codec = type && ggmlCodec(type);
    if (!type || !codec?.quantize || !['Q8_0', 'Q4_0', 'Q5_0', 'IQ4_NL'].includes(name)) {
      console.log(`  ${name}: not a block-32 integer type`);
      continue;
    }
    for (const [k, n] of [[768, 2816], [2816, 768]]) {
      const { w } = storeRandomWeight(e, type, codec, n, k, next);
      const x = Float32Array.from({ length: T * k }, () => next() / 2 ** 31 - 1);
      const y = new Float32Array(T * n);
      const tiles = ['tokens', 'rows'] as const;
      const best = [Infinity, Infinity];
      const hashes = ['', ''];
      e.matmulInt(y, x, w, T);
      for (let r = 0; r < rounds; r++) {
        for (const v of r % 2 === 0 ? [0, 1] : [1, 0]) {
          e.prefillTile = tiles[v];
          const c0 = cpuMs();
          e.matmulInt(y, x, w, T, true);
          best[v] = Math.min(best[v], cpuMs() - c0);
          hashes[v] = hash(y);
        }
      }
      e.prefillTile = 'rows';
      const gf = (ms: number) => (2 * T * k * n) / ms / 1e6;
      console.log(
        `  ${name} ${k} -> ${n}: ` + tiles.map((t, i) => `${t} ${best[i].toFixed(2)} ms (${gf(best[i]).toFixed(1)} GFLOP/s per CPU-s, x${(best[0] / best[i]).toFixed(3)})`).join(', ') +
          `; hashes ${hashes.join(' ')}${hashes.every((h) => h === hashes[0]) ? ' (same)' : ' DIFFER'}`,
      );
    }
  }
}
