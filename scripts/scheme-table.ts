/**
 * Compare quantization schemes on the real stories260K weights: SQNR (dB) over all 2-D weight
 * matrices, energy-weighted (10 log10(sum x^2 / sum (x - x^)^2) over every matrix element), and the
 * storage bits per weight actually used. Prints a markdown table.
 *
 *   node dist/scripts/scheme-table.js [data/stories260K.bin] [--json]
 *
 * stories260K.bin: 7 int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
 * then float32: token_embedding [vocab x dim], per layer rms_att, wq [dim x dim], wk [kv_dim x dim],
 * wv [kv_dim x dim], wo [dim x dim], rms_ffn, w1 [hidden x dim], w2 [dim x hidden], w3 [hidden x dim]
 * (all layers of one kind stored together), rms_final, freq_cis. Matrix rows are output channels.
 * Row-local block schemes need the row length to be a multiple of the block size; w2's rows of 172
 * are not, so for those schemes w2 is quantized as one flat row (its blocks then span rows).
 * GGML block types are included when their codecs are registered (every module in
 * dist/src/quant/ggml/ is imported first).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolveScheme, schemes } from '../src/quant/registry.js';
import type { QuantScheme } from '../src/quant/scheme.js';

interface Matrix {
  name: string;
  rows: number;
  cols: number;
  data: Float32Array;
}

export function stories260KMatrices(bytes: Uint8Array): Matrix[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(4 * i, true));
  const [dim, hidden, layers, heads, kvHeads, vocabRaw] = h;
  const vocab = Math.abs(vocabRaw);
  const kvDim = (dim * kvHeads) / heads;
  const f = new Float32Array(bytes.slice(28).buffer);
  let at = 0;
  const out: Matrix[] = [];
  const take = (n: number) => f.subarray(at, (at += n));
  const mat = (name: string, rows: number, cols: number) => out.push({ name, rows, cols, data: take(rows * cols) });
  mat('token_embedding', vocab, dim);
  take(layers * dim); // rms_att
  for (const [n, r, c] of [['wq', dim, dim], ['wk', kvDim, dim], ['wv', kvDim, dim], ['wo', dim, dim]] as const)
    for (let l = 0; l < layers; l++) mat(`${n}.${l}`, r, c);
  take(layers * dim); // rms_ffn
  for (const [n, r, c] of [['w1', hidden, dim], ['w2', dim, hidden], ['w3', hidden, dim]] as const)
    for (let l = 0; l < layers; l++) mat(`${n}.${l}`, r, c);
  return out;
}

export interface SchemeResult {
  scheme: string;
  bitsPerWeight: number;
  sqnrDb: number;
  flattened: string[];
}

export function evaluate(s: QuantScheme, mats: Matrix[]): SchemeResult {
  let signal = 0;
  let noise = 0;
  let bytes = 0;
  let n = 0;
  const flattened: string[] = [];
  for (const m of mats) {
    let rows = m.rows;
    let cols = m.cols;
    if (s.blockSize > 1 && cols % s.blockSize !== 0) {
      rows = 1;
      cols = m.rows * m.cols;
      flattened.push(m.name);
    }
    const packed = s.quantizeRef(m.data, rows, cols);
    const y = s.dequantizeRef(packed, rows, cols);
    bytes += packed.length;
    n += m.data.length;
    for (let i = 0; i < y.length; i++) {
      signal += m.data[i] * m.data[i];
      noise += (m.data[i] - y[i]) ** 2;
    }
  }
  return { scheme: s.id, bitsPerWeight: (bytes * 8) / n, sqnrDb: 10 * Math.log10(signal / noise), flattened };
}

const GROUPS: [string, string[]][] = [
  ['8-bit', ['mxint8', 'mxfp8_e4m3', 'mxfp8_e5m2', 'int8_ch', 'int8_g32', 'fp8_e4m3_ch', 'ggml_q8_0']],
  ['6-bit', ['mxfp6_e2m3', 'mxfp6_e3m2', 'ggml_q6_k']],
  ['4-bit', ['mxfp4', 'nvfp4', 'int4_g32', 'int4_g128', 'uint4_g128_asym', 'uint4_g32_fzp', 'int4_ch_mse', 'nf4_dq', 'nf4_g64', 'ggml_q4_0', 'ggml_q4_k', 'ggml_iq4_nl', 'ggml_iq4_xs', 'ggml_mxfp4', 'ggml_nvfp4']],
  ['2-bit', ['uint2_g16_asym', 'ggml_q2_k']],
];

async function importGgmlCodecs(): Promise<void> {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'quant', 'ggml');
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []) {
    if (!f.endsWith('.js')) continue;
    try {
      await import(pathToFileURL(path.join(dir, f)).href);
    } catch {
      /* a module that does not load on its own is not a codec */
    }
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--')) ?? 'data/stories260K.bin';
  await importGgmlCodecs();
  const mats = stories260KMatrices(new Uint8Array(fs.readFileSync(file)));
  const total = mats.reduce((a, m) => a + m.data.length, 0);
  const known = new Set(schemes().map((s) => s.id));
  const results: (SchemeResult & { group: string })[] = [];
  for (const [group, ids] of GROUPS)
    for (const id of ids) {
      if (!known.has(id)) continue;
      const s = resolveScheme(id);
      if (s.family === 'ggml' && !s.quantizeRef) continue;
      try {
        results.push({ group, ...evaluate(s, mats) });
      } catch (e) {
        process.stderr.write(`${id}: ${(e as Error).message}\n`);
      }
    }
  if (args.includes('--json')) {
    process.stdout.write(JSON.stringify(results, null, 1) + '\n');
    return;
  }
  const lines = [
    `SQNR of stories260K's ${mats.length} weight matrices (${total} weights), energy-weighted; bpw = stored bits / weights.`,
    '',
    '| bits | scheme | bpw | SQNR dB | matrices flattened* |',
    '| --- | --- | ---: | ---: | ---: |',
    ...results.map((r) => `| ${r.group} | ${r.scheme} | ${r.bitsPerWeight.toFixed(3)} | ${r.sqnrDb.toFixed(2)} | ${r.flattened.length} |`),
  ];
  lines.push('', `\\* matrices whose row length (64, or 172 for w2) is not a multiple of the block size are quantized as one flat row (blocks span rows); ${mats.length} matrices in all.`);
  process.stdout.write(lines.join('\n') + '\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
