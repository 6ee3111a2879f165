/**
 * `npm run bench -- files [--gb 2]`: convert a synthetic llama-shaped F32 GGUF (~2 GB, written once
 * into .cache/) to F16 GGUF and to safetensors, next to fs.copyFile of the same file in the same run.
 * Prints GB/s (input bytes / second) and the ratio to copyFile, and each conversion's peak RSS
 * (measured in a child process so the generator's memory does not count).
 * Targets: >= 0.5x copyFile throughput, peak RSS < 400 MB.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AtomicFile } from '../src/cli/files.js';
import { openModelPath, pipelinedSink } from '../src/cli/model-open.js';
import { convertModel, type FloatType } from '../src/io/convert.js';
import { gguf, GgufWriter } from '../src/io/gguf.js';
import { ggufLlamaMetadata, type LlamaHparams } from '../src/io/hf-llama.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const cache = path.join(root, '.cache');

/** llama-shaped: dim 2048, ffn 5632, vocab 32000; layers chosen to reach the size */
async function makeSynthetic(file: string, gb: number): Promise<void> {
  const dim = 2048;
  const hidden = 5632;
  const vocab = 32000;
  const perLayer = (4 * dim * dim + 3 * dim * hidden + 2 * dim) * 4;
  const nLayers = Math.max(1, Math.round((gb * 1e9 - 2 * vocab * dim * 4) / perLayer));
  const hp: LlamaHparams = { vocabSize: vocab, dim, hiddenDim: hidden, nLayers, nHeads: 16, nKvHeads: 16, seqLen: 2048, normEps: 1e-5 };
  const f32 = ggmlTypeByName('F32')!;
  const specs = [
    { name: 'token_embd.weight', ne: [dim, vocab], type: f32 },
    { name: 'output_norm.weight', ne: [dim], type: f32 },
    { name: 'output.weight', ne: [dim, vocab], type: f32 },
  ];
  for (let l = 0; l < nLayers; l++)
    for (const [s, ne] of [
      ['attn_q', [dim, dim]],
      ['attn_k', [dim, dim]],
      ['attn_v', [dim, dim]],
      ['attn_output', [dim, dim]],
      ['attn_norm', [dim]],
      ['ffn_gate', [dim, hidden]],
      ['ffn_down', [hidden, dim]],
      ['ffn_up', [dim, hidden]],
      ['ffn_norm', [dim]],
    ] as const)
      specs.push({ name: `blk.${l}.${s}.weight`, ne: [...ne], type: f32 });
  const out = new AtomicFile(file);
  try {
    const w = new GgufWriter(out, [['general.architecture', gguf.str('llama')], ['general.name', gguf.str('synthetic')], ...ggufLlamaMetadata(hp)], specs);
    await w.begin();
    const block = new Float32Array(1 << 22);
    let s = 1;
    for (let i = 0; i < block.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      block[i] = (s / 2 ** 32 - 0.5) * 0.1;
    }
    const bytes = new Uint8Array(block.buffer);
    for (const t of specs) {
      let left = t.ne.reduce((a, b) => a * b, 1) * 4;
      while (left > 0) {
        const n = Math.min(left, bytes.length);
        await w.write(bytes.subarray(0, n));
        left -= n;
      }
    }
    await w.end();
    out.commit();
  } catch (e) {
    out.abort();
    throw e;
  }
}

/** child mode: one conversion, then print seconds and peak RSS as JSON */
async function child(input: string, output: string, to: 'gguf' | 'safetensors', type?: FloatType): Promise<void> {
  const t0 = performance.now();
  const { model, close } = await openModelPath(input);
  const f = new AtomicFile(output);
  const sink = pipelinedSink(f);
  await convertModel(model, sink, { to, type });
  await sink.flush();
  const t1 = performance.now();
  f.commit(); // fsync + rename
  close();
  const t2 = performance.now();
  process.stdout.write(JSON.stringify({ seconds: (t1 - t0) / 1000, fsyncSeconds: (t2 - t1) / 1000, maxRssMb: process.resourceUsage().maxRSS / 1024 }) + '\n');
}

export async function run(args: string[]): Promise<void> {
  const gbArg = args.indexOf('--gb');
  const gb = gbArg >= 0 ? Number(args[gbArg + 1]) : 2;
  fs.mkdirSync(cache, { recursive: true });
  const input = path.join(cache, `bench-files-${gb}g-f32.gguf`);
  if (!fs.existsSync(input)) {
    console.log(`writing ${input} ...`);
    await makeSynthetic(input, gb);
  }
  const size = fs.statSync(input).size;
  const gbIn = size / 1e9;
  const tmp = (n: string) => path.join(cache, `bench-files-out.${n}`);
  const copyOut = tmp('copy');
  // warm the page cache once so every measurement reads from memory alike
  await fs.promises.copyFile(input, copyOut);
  let t0 = performance.now();
  await fs.promises.copyFile(input, copyOut);
  const copySec = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const fd = fs.openSync(copyOut, 'r+');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const copySyncSec = (performance.now() - t0) / 1000;
  fs.rmSync(copyOut);
  // a second anchor: plain sequential writeSync of as many bytes (the disk's write ceiling)
  const block = new Uint8Array(16 << 20).fill(1);
  t0 = performance.now();
  const wfd = fs.openSync(copyOut, 'w');
  for (let left = size; left > 0; left -= block.length) fs.writeSync(wfd, block, 0, Math.min(left, block.length));
  fs.closeSync(wfd);
  const writeSec = (performance.now() - t0) / 1000;
  fs.rmSync(copyOut);
  console.log(`input ${input}: ${gbIn.toFixed(3)} GB (times exclude fsync; fsync shown separately)`);
  console.log(`fs.copyFile           ${(gbIn / copySec).toFixed(3)} GB/s  (${copySec.toFixed(2)} s, + fsync ${copySyncSec.toFixed(2)} s)`);
  console.log(`writeSync same bytes  ${(gbIn / writeSec).toFixed(3)} GB/s  (${writeSec.toFixed(2)} s)`);
  for (const [label, out, to, type] of [
    ['convert -> F16 GGUF', tmp('gguf'), 'gguf', 'F16'],
    ['convert -> safetensors', tmp('safetensors'), 'safetensors', undefined],
  ] as const) {
    t0 = performance.now();
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', input, out, to, type ?? ''], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${label} failed: ${r.stderr}`);
    const { seconds, fsyncSeconds, maxRssMb } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { seconds: number; fsyncSeconds: number; maxRssMb: number };
    console.log(
      `${label.padEnd(22)} ${(gbIn / seconds).toFixed(3)} GB/s  (${seconds.toFixed(2)} s, + fsync ${fsyncSeconds.toFixed(2)} s; ${(gbIn / seconds / (gbIn / copySec)).toFixed(2)}x copyFile), ` +
        `peak RSS ${maxRssMb.toFixed(0)} MB, output ${(fs.statSync(out).size / 1e9).toFixed(3)} GB`,
    );
    fs.rmSync(out);
  }
}

if (process.argv[2] === '--child') {
  const [, , , input, output, to, type] = process.argv;
  await child(input, output, to as 'gguf' | 'safetensors', (type || undefined) as FloatType | undefined);
}
