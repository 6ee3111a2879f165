/**
 * GPTQ at scale: int4 g128 on a synthetic ~100M-parameter llama (dim 768, hidden 2816, 12 layers,
 * 12 heads, vocabulary 4096, random seeded weights) with 128 calibration sequences of 512 tokens,
 * through the real pipeline (layer by layer: statistics pass with X^T X, GPTQ of the 7 linears, forward
 * pass). Prints wall time per phase and peak RSS. Anchor, measured in the same run: the forward pass
 * alone (all layers, the runtime's kernels on the same threads) over 8 of the sequences, scaled to 128; the ratio says
 * how many forward passes' worth of time GPTQ takes.
 *
 *   npm run bench -- gptq [sequences=128] [layers=12] [threads=2] [cli | cli-only]
 *
 * `cli`: the user's command, timed whole as a child process (start-up, loading, tokenizing included):
 *   node bin/lowbit.js quantize MODEL OUT.safetensors --type int4 --group 128 --algo gptq --calib TEXT
 *        --calib-tokens N --calib-ctx 512 --seed 0 --threads T
 * on the same synthetic model written once to .cache/bench/ with a vocabulary of 4096 single-character
 * tokens (U+4E00 + id, no merges, no space prefix), and a calibration text of the bench's token stream
 * written in those characters (the model's tokenizer gives back exactly the stream: checked here), so the
 * command calibrates on the same windows. Then the anchor, then the in-process run on the same file and
 * stream, whose bytes must equal the command's (`cli-only` skips that run). Both modes also print the
 * sha256 of the safetensors data section (after the header, which in `cli` mode also carries the
 * vocabulary): the tensors' bytes, equal between the modes.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { measure, ROOT } from '../scripts/llama-tools.js';
import { fileSource } from '../src/cli/node-source.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { vocabFromGgufMetadata } from '../src/io/vocab.js';
import { defineRecipe, schemeRecipe } from '../src/algos/recipe.js';
import { gguf, GgufWriter, type GgufValue } from '../src/io/gguf.js';
import { openModelFile, plainMetadata } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { useNodeThreads } from '../src/node.js';
import { GptqPool } from '../src/cli/gptq-pool.js';
import { Llama } from '../src/model/llama.js';
import { quantize } from '../src/pipeline/quantize.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import type { StoredTensor } from '../src/model/types.js';

export const DIM = 768;
export const HIDDEN = 2816;
const HEADS = 12;
const VOCAB = 4096;
const CTX = 512;

/** seeded standard normal draws (Box-Muller over a 32-bit LCG): the bench models' and Hessians' values */
export function normal(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** normal()'s generator state after `steps` more draws from state s: x -> 1664525 x + 1013904223 (mod 2^32) composed by squaring */
function lcgSkip(s: number, steps: number): number {
  let a = 1664525, c = 1013904223; // the map applied 2^i times
  let ra = 1, rc = 0; // the maps taken so far
  for (let n = steps; n > 0; n = Math.floor(n / 2)) {
    if (n % 2 === 1) {
      rc = (Math.imul(a, rc) + c) >>> 0;
      ra = Math.imul(a, ra) >>> 0;
    }
    c = (Math.imul(a, c) + c) >>> 0;
    a = Math.imul(a, a) >>> 0;
  }
  return (Math.imul(ra, s >>> 0) + rc) >>> 0;
}

/**
 * A worker filling ranges of the weights: for each job, `count` values of normal() from generator state
 * `state`, times `scale`, into a Float32Array (the same values, bit for bit, as drawing them in order:
 * the same Math functions on the same doubles).
 */
const FILL_SOURCE = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (jobs) => {
  for (const j of jobs) {
    let s = j.state;
    const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
    const rnd = () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    const x = new Float32Array(j.count);
    for (let i = 0; i < j.count; i++) x[i] = rnd() * j.scale;
    parentPort.postMessage({ id: j.id, x }, [x.buffer]);
  }
});
`;

/** the `cli` mode's vocabulary: token id i is the character U+4E00 + i (one UTF-16 unit, no merges) */
const tokenChar = (id: number) => String.fromCharCode(0x4e00 + id);

export async function syntheticModel(layers: number, withVocab = false): Promise<Uint8Array> {
  const f32 = ggmlTypeByName('F32')!;
  const specs: { name: string; ne: number[] }[] = [{ name: 'token_embd.weight', ne: [DIM, VOCAB] }, { name: 'output_norm.weight', ne: [DIM] }, { name: 'output.weight', ne: [DIM, VOCAB] }];
  for (let l = 0; l < layers; l++)
    specs.push(
      { name: `blk.${l}.attn_norm.weight`, ne: [DIM] },
      { name: `blk.${l}.attn_q.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_k.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_v.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_output.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.ffn_norm.weight`, ne: [DIM] },
      { name: `blk.${l}.ffn_gate.weight`, ne: [DIM, HIDDEN] },
      { name: `blk.${l}.ffn_up.weight`, ne: [DIM, HIDDEN] },
      { name: `blk.${l}.ffn_down.weight`, ne: [HIDDEN, DIM] },
    );
  const meta: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['llama.embedding_length', gguf.u32(DIM)],
    ['llama.feed_forward_length', gguf.u32(HIDDEN)],
    ['llama.block_count', gguf.u32(layers)],
    ['llama.attention.head_count', gguf.u32(HEADS)],
    ['llama.attention.head_count_kv', gguf.u32(HEADS)],
    ['llama.context_length', gguf.u32(CTX)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(1e-5)],
  ];
  if (withVocab)
    meta.push(
      ['tokenizer.ggml.model', gguf.str('llama')],
      ['tokenizer.ggml.tokens', gguf.strings(Array.from({ length: VOCAB }, (_, i) => tokenChar(i)))],
      ['tokenizer.ggml.bos_token_id', gguf.u32(1)],
      ['tokenizer.ggml.eos_token_id', gguf.u32(2)],
      ['tokenizer.ggml.add_space_prefix', gguf.bool(false)],
    );
  // the matrices' values are one stream of normal(12345) draws in tensor order (two generator steps per
  // value); a worker fills the second half of every matrix from the skipped-ahead state while this
  // thread fills the first half: the same bytes as drawing them in order, in about half the time
  const sizes = specs.map((s) => s.ne.reduce((a, b) => a * b, 1));
  const starts: number[] = [];
  const jobs: { id: number; state: number; count: number; scale: number }[] = [];
  let drawn = 0;
  specs.forEach((s, id) => {
    starts.push(drawn);
    if (s.ne.length === 1) return;
    const half = Math.floor(sizes[id] / 2);
    jobs.push({ id, state: lcgSkip(12345, 2 * (drawn + half)), count: sizes[id] - half, scale: 1 / Math.sqrt(s.ne[0]) });
    drawn += sizes[id];
  });
  const worker = new Worker(FILL_SOURCE, { eval: true });
  const waiting = new Map<number, { resolve: (x: Float32Array) => void; reject: (e: unknown) => void }>();
  const arrived = new Map<number, Float32Array>();
  worker.on('message', (m: { id: number; x: Float32Array }) => {
    const w = waiting.get(m.id);
    if (w) (waiting.delete(m.id), w.resolve(m.x));
    else arrived.set(m.id, m.x);
  });
  let failed: unknown;
  worker.on('error', (e) => {
    failed = e;
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  });
  const secondHalf = (id: number) => new Promise<Float32Array>((resolve, reject) => {
    if (failed) return reject(failed);
    const x = arrived.get(id);
    if (x) return (arrived.delete(id), resolve(x));
    waiting.set(id, { resolve, reject });
  });
  worker.postMessage(jobs);
  const sink = memorySink();
  const w = new GgufWriter(sink, meta, specs.map((s) => ({ name: s.name, ne: s.ne, type: f32 })));
  await w.begin();
  try {
    for (let id = 0; id < specs.length; id++) {
      const s = specs[id];
      const x = new Float32Array(sizes[id]);
      if (s.ne.length === 1) x.fill(1);
      else {
        const rnd = normal(lcgSkip(12345, 2 * starts[id]));
        const scale = 1 / Math.sqrt(s.ne[0]);
        const half = Math.floor(x.length / 2);
        for (let i = 0; i < half; i++) x[i] = rnd() * scale;
        x.set(await secondHalf(id), half);
      }
      await w.write(new Uint8Array(x.buffer));
    }
  } finally {
    await worker.terminate();
  }
  await w.end();
  return sink.bytes();
}

/** The bench's calibration token stream: nSeq x CTX + 1 seeded draws below VOCAB. */
function calibrationStream(nSeq: number): Int32Array {
  const rnd = normal(777);
  return Int32Array.from({ length: nSeq * CTX + 1 }, () => Math.floor(((rnd() + 4) / 8) * VOCAB) & (VOCAB - 1));
}

/** sha256 of a safetensors file's bytes as they stream past: the whole file, and its data section (after the 8-byte length and the JSON header) */
function safetensorsHasher() {
  const whole = createHash('sha256');
  const data = createHash('sha256');
  let seen = 0;
  let head = new Uint8Array(0);
  let dataStart = -1;
  return {
    update(b: Uint8Array) {
      whole.update(b);
      if (dataStart < 0) {
        head = Uint8Array.from([...head, ...b.subarray(0, Math.max(0, 8 - head.length))]);
        if (head.length === 8) dataStart = 8 + Number(new DataView(head.buffer).getBigUint64(0, true));
      }
      if (dataStart >= 0 && seen + b.length > dataStart) data.update(b.subarray(Math.max(0, dataStart - seen)));
      seen += b.length;
    },
    digest: () => ({ whole: whole.digest('hex').slice(0, 16), data: data.digest('hex').slice(0, 16) }),
  };
}


export async function run(args: string[]): Promise<void> {
  const nSeq = Number(args[0] ?? 128);
  const layers = Number(args[1] ?? 12);
  const threads = Number(args[2] ?? 2);
  const mode = args[3];
  if (mode === 'cli' || mode === 'cli-only') return runCli(nSeq, layers, threads, mode === 'cli');
  if (mode !== undefined) throw new Error(`bench gptq: mode '${mode}' is not cli or cli-only`);
  useNodeThreads();
  const t0 = performance.now();
  const bytes = await syntheticModel(layers);
  const m = await openModelFile(bytesSource(bytes, 'synthetic.gguf'));
  const params = m.tensors.reduce((s, t) => s + t.nElements, 0);
  console.log(`synthetic llama: dim ${DIM}, hidden ${HIDDEN}, ${layers} layers, vocab ${VOCAB}: ${(params / 1e6).toFixed(1)} M parameters (built in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const stream = calibrationStream(nSeq);
  const forwardAll = await anchor(m, stream, nSeq, layers, threads);
  const r = await inProcess(m, stream, nSeq, threads);
  console.log(`ratio: GPTQ pipeline / one forward pass = ${(r.total / forwardAll).toFixed(2)}x`);
}

/** the forward pass alone over 8 sequences, the runtime on the same threads: seconds for all nSeq */
async function anchor(m: Awaited<ReturnType<typeof openModelFile>>, stream: Int32Array, nSeq: number, layers: number, threads: number): Promise<number> {
  const f32 = ggmlTypeByName('F32')!;
  const stored: StoredTensor[] = [];
  for (const t of m.tensors) stored.push({ name: t.name, type: f32, dims: [...t.ne!], data: await m.read(t) });
  const llama = new Llama({ dim: DIM, hiddenDim: HIDDEN, nLayers: layers, nHeads: HEADS, nKvHeads: HEADS, vocabSize: VOCAB, seqLen: CTX, headDim: DIM / HEADS, normEps: 1e-5, ropeTheta: 10000, ropeDim: DIM / HEADS, ropeStyle: 'normal' }, stored, { contextLength: CTX, batch: CTX, threads });
  const anchorSeqs = Math.min(8, nSeq);
  const ta = performance.now();
  for (let s = 0; s < anchorSeqs; s++) llama.forward(stream.subarray(s * CTX, (s + 1) * CTX), 0);
  const forwardAll = (((performance.now() - ta) / 1000) * nSeq) / anchorSeqs;
  console.log(`anchor: one forward pass over ${nSeq} x ${CTX} tokens = ${forwardAll.toFixed(1)} s (measured on ${anchorSeqs} sequences)`);
  return forwardAll;
}

/** GPTQ int4 g128 through quantize() in this process, on calibration tokens given directly */
async function inProcess(m: Awaited<ReturnType<typeof openModelFile>>, stream: Int32Array, nSeq: number, threads: number) {
  const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(schemeRecipe('int4', { groupSize: 128 }))), algorithm: 'gptq', ptq: { calibTokens: nSeq * CTX, calibCtx: CTX, seed: 0 } });
  const tp = performance.now();
  const gptqWorkers = threads > 1 ? new GptqPool(threads - 1) : undefined;
  let written = 0;
  const hash = safetensorsHasher(); // the bytes must not change with the speed work (1 and 2 threads alike)
  const report = await quantize(m, recipe, { write: (b) => void ((written += b.length), hash.update(b)) }, {
    output: 'safetensors',
    calibStream: stream,
    threads,
    gptqWorkers,
    onProgress: (msg) => process.stderr.write(`  ${msg} [${((performance.now() - tp) / 1000).toFixed(0)} s]\n`),
  });
  await gptqWorkers?.close();
  const total = (performance.now() - tp) / 1000;
  const ph = report.ptq!.phases!;
  const rss = process.resourceUsage().maxRSS / 1024;
  const h = hash.digest();
  console.log(
    `GPTQ int4 g128, ${nSeq} x ${CTX} calibration tokens: ${total.toFixed(1)} s wall ` +
      `(statistics pass ${ph.statistics.toFixed(1)} s, GPTQ ${ph.quantization.toFixed(1)} s, forward ${ph.forward.toFixed(1)} s, rest ${(total - ph.statistics - ph.quantization - ph.forward).toFixed(1)} s); ` +
      `${(written / 1e6).toFixed(1)} MB written (sha256 ${h.whole}, data ${h.data}); peak RSS ${rss.toFixed(0)} MiB`,
  );
  return { total, hash: h };
}

/** `cli` / `cli-only`: the user's command on the model and text written once under .cache/bench */
async function runCli(nSeq: number, layers: number, threads: number, check: boolean): Promise<void> {
  const dir = join(ROOT, '.cache', 'bench');
  mkdirSync(dir, { recursive: true });
  const modelPath = join(dir, `gptq-synth-${layers}L-vocab.gguf`);
  const textPath = join(dir, `gptq-calib-${nSeq}x${CTX}.txt`);
  const outPath = join(dir, `gptq-out-${nSeq}x${layers}-t${threads}.safetensors`);
  const stream = calibrationStream(nSeq);
  const atomicWrite = (file: string, data: Uint8Array | string) => {
    writeFileSync(`${file}.tmp-${process.pid}`, data);
    renameSync(`${file}.tmp-${process.pid}`, file);
  };
  const t0 = performance.now();
  if (!existsSync(modelPath)) atomicWrite(modelPath, await syntheticModel(layers, true)); // deterministic: the same bytes every time
  const text = Array.from(stream, tokenChar).join('');
  if (!existsSync(textPath) || readFileSync(textPath, 'utf8') !== text) atomicWrite(textPath, text);
  console.log(`model ${modelPath} (${(statSync(modelPath).size / 1e6).toFixed(1)} MB), calibration text ${textPath} (${stream.length} tokens); ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const args = ['quantize', modelPath, outPath, '--type', 'int4', '--group', '128', '--algo', 'gptq', '--calib', textPath, '--calib-tokens', String(nSeq * CTX), '--calib-ctx', String(CTX), '--seed', '0', '--threads', String(threads), '--force'];
  console.log(`$ node bin/lowbit.js ${args.map((a) => a.replace(`${ROOT}/`, '')).join(' ')}`);
  const r = await measure(process.execPath, [join(ROOT, 'bin/lowbit.js'), ...args]);
  const wall = r.seconds;
  if (r.status !== 0) throw new Error(`lowbit quantize exited with ${r.status}: ${r.stderr.split('\n').slice(-8).join('\n')}`);
  const cliHash = safetensorsHasher();
  cliHash.update(new Uint8Array(readFileSync(outPath)));
  rmSync(outPath);
  const ch = cliHash.digest();
  const ptqLine = r.stdout.split('\n').find((l) => /calibration: \d+ tokens/.test(l)) ?? '';
  console.log(`lowbit quantize (whole command): ${wall.toFixed(1)} s wall, ${r.cpuSeconds?.toFixed(1) ?? '?'} CPU-s, peak RSS ${(r.peakRss / 2 ** 20).toFixed(0)} MiB; ${ptqLine.trim()}; sha256 ${ch.whole}, data ${ch.data}`);

  useNodeThreads();
  const m = await openModelFile(fileSource(modelPath));
  const tok = new Tokenizer(vocabFromGgufMetadata(plainMetadata(m.metadata)));
  const ids = tok.encode(text, { bos: false });
  if (ids.length !== stream.length || ids.some((id, i) => id !== stream[i])) throw new Error('the model\'s tokenizer does not give back the bench stream from the calibration text');
  const forwardAll = await anchor(m, stream, nSeq, layers, threads);
  console.log(`ratio: whole command / one forward pass = ${(wall / forwardAll).toFixed(2)}x`);
  if (!check) return;
  const ref = await inProcess(m, stream, nSeq, threads);
  if (ref.hash.whole !== ch.whole) throw new Error(`the command's output (sha256 ${ch.whole}) differs from the in-process run's (${ref.hash.whole})`);
  console.log(`same bytes: the command and the in-process run (sha256 ${ch.whole})`);
}
