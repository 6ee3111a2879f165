/**
 * `lowbit qat`: quantization-aware fine-tuning of an existing model toward a GGML type (the same plan
 * `lowbit quantize --type T` makes), then the real quantized file.
 *
 *   1. plan the target type of every tensor (llama.cpp's mixture, or --pure)
 *   2. master weights = the file's weights (init rtn) or GPTQ's dequantized weights (init gptq)
 *   3. train: forward through codec(w) (quantize + dequantize, the bytes the file will hold), gradients
 *      mapped by STE / DGE / LSQ (src/train/qat.ts), loss KL to the original model's logits (kd) or
 *      next-token cross-entropy (ce)
 *   4. write the trained master weights through the same codecs: a GGUF of type T
 */
import { fail } from '../errors.js';
import { llamaRecipe, schemeRecipe, type Recipe } from '../algos/recipe.js';
import { LLAMA_FTYPES } from '../algos/llama-types.js';
import { quantizeScheme } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';
import { GgufWriter, type GgufValue } from '../io/gguf.js';
import { openModelFile, plainMetadata, type ModelFile } from '../io/model-file.js';
import { memorySink, type ByteSink } from '../io/sink.js';
import { bytesSource } from '../io/source.js';
import { llamaConfigFromGguf } from '../model/llama.js';
import { ggmlCodec, ggmlRoundsFloats } from '../quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { wasmBackend, referenceBackend } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';
import { learningRate } from '../train/optim.js';
import { distillationLoss, Qat, type QatMethod, type ScaledGrid, type WeightCodec } from '../train/qat.js';
import { kvaluesIq4nl } from '../quant/ggml/iq-grids.js';
import { DEFAULT_TRAIN, Trainer, type TrainOptions } from '../train/trainer.js';
import { planQuantization, quantize, readFloats, type QuantizePlan, type QuantizeReport } from './quantize.js';

export interface QatOptions {
  /** a llama.cpp type (GGUF out) or, with container 'safetensors', a scheme of the registry (int4, nvfp4, mxfp4, ...) */
  type: string;
  /** 'gguf' (default) or lowbit's safetensors layout (generic schemes; lowbit's runtime loads it) */
  container?: 'gguf' | 'safetensors';
  /** safetensors schemes: elements per scale group (int-N) */
  groupSize?: number;
  pure: boolean;
  method: QatMethod;
  loss: 'kd' | 'ce';
  init: 'rtn' | 'gptq';
  steps: number;
  lr: number;
  /** LSQ: learning rate of the scales relative to --lr */
  scaleLr?: number;
  batch: number;
  ctx: number;
  seed: number;
  warmup: number;
  /** threads for the products (same bytes on any count) */
  threads?: number;
  /** start from this quantized file of the target type (e.g. \`lowbit quantize --algo gptq\`'s output): its bytes and values */
  initFrom?: ModelFile;
  /** GPTQ init: calibration text, tokens and sequence length */
  calibText?: string;
  calibTokens?: number;
  calibCtx?: number;
  onProgress?: (msg: string) => void;
}

export interface QatRun {
  container: 'gguf' | 'safetensors';
  trainer: Trainer;
  qat: Qat;
  plan: QuantizePlan;
  recipe: Recipe;
  /** the trained master weights by tensor name */
  floats: Map<string, Float32Array>;
}

const range = (lo: number, hi: number) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
/** nibbles as Q4_0 / IQ4_NL store them: byte j holds levels j (low) and j + 16 (high) */
function packNibbles(idx: Uint8Array, out: Uint8Array, o: number): void {
  for (let j = 0; j < 16; j++) out[o + 2 + j] = (idx[j] & 15) | ((idx[j + 16] & 15) << 4);
}

/** The GGML types with one f16 scale per block in front of level indices (ggml-common.h layouts): what LSQ learns. */
const SCALED_GRIDS: Record<string, ScaledGrid> = {
  Q4_0: { block: 32, blockBytes: 18, grid: range(-8, 7), packLevels: packNibbles },
  IQ4_NL: { block: 32, blockBytes: 18, grid: Array.from(kvaluesIq4nl), packLevels: packNibbles },
  Q5_0: {
    block: 32, blockBytes: 22, grid: range(-16, 15),
    packLevels(idx, out, o) {
      let qh = 0;
      for (let j = 0; j < 32; j++) qh |= ((idx[j] >>> 4) & 1) << j;
      new DataView(out.buffer, out.byteOffset).setUint32(o + 2, qh >>> 0, true);
      for (let j = 0; j < 16; j++) out[o + 6 + j] = (idx[j] & 15) | ((idx[j + 16] & 15) << 4);
    },
  },
  Q8_0: { block: 32, blockBytes: 34, grid: range(-128, 127), packLevels: (idx, out, o) => { for (let j = 0; j < 32; j++) out[o + 2 + j] = idx[j] ^ 0x80; } },
  Q2_0: {
    block: 64, blockBytes: 18, grid: range(-1, 2),
    packLevels(idx, out, o) {
      for (let b = 0; b < 16; b++) out[o + 2 + b] = idx[4 * b] | (idx[4 * b + 1] << 2) | (idx[4 * b + 2] << 4) | (idx[4 * b + 3] << 6);
    },
  },
  Q1_0: {
    block: 128, blockBytes: 18, grid: [-1, 1],
    packLevels(idx, out, o) {
      for (let b = 0; b < 16; b++) {
        let q = 0;
        for (let k = 0; k < 8; k++) q |= idx[8 * b + k] << k;
        out[o + 2 + b] = q;
      }
    },
  },
};

/** A generic scheme (int-N groups, NVFP4, MXFP4, ...) as a QAT weight codec: the bytes lowbit's safetensors holds, decoded. */
export function schemeWeightCodec(s: QuantScheme): WeightCodec {
  const quantize = (src: Float32Array, rows: number, cols: number) => quantizeScheme(s, src, rows, cols);
  return {
    bits: Math.max(1, Math.floor(s.bitsPerWeight)),
    quantize,
    fakeQuant(src, rows, cols, out) {
      s.dequantizeRef(quantize(src, rows, cols), rows, cols, out);
    },
  };
}

/** A GGML type's codec as a QAT weight codec (bytes per row as the file stores them). */
export function ggmlWeightCodec(type: GgmlTypeInfo): WeightCodec {
  const codec = ggmlCodec(type);
  if (!codec?.quantize) fail(`QAT: lowbit cannot quantize to ${type.name}`);
  const bits = Math.floor((8 * type.typeSize) / type.blockSize);
  const quantize = (src: Float32Array, rows: number, cols: number) => {
    const bytes = new Uint8Array(rows * ggmlRowBytes(type, cols));
    codec.quantize!(src, rows, cols, bytes);
    return bytes;
  };
  return {
    bits,
    quantize,
    scaled: SCALED_GRIDS[type.name],
    fakeQuant(src, rows, cols, out) {
      codec.dequantize(quantize(src, rows, cols), rows * cols, out);
    },
  };
}

/** The training config of a llama GGUF (context at least `seqLen`). */
export function trainConfigOf(m: ModelFile, seqLen: number): TrainConfig {
  const meta = plainMetadata(m.metadata);
  const tensors = m.tensors.map((t) => ({ name: t.name, dims: t.ne ? [...t.ne] : [...t.shape].reverse() }));
  const c = llamaConfigFromGguf(meta, tensors as never);
  if (c.ropeStyle !== 'normal') fail('QAT trains llama-architecture models (normal RoPE)');
  return { ...c, seqLen: Math.max(seqLen, Math.min(c.seqLen, 4096)), tiedOutput: !m.tensors.some((t) => t.name === 'output.weight') };
}

/** Set every parameter of `model` from the file `m` (read as f32); returns copies of the values by name. */
export async function loadTrainParams(model: TrainModel, m: ModelFile): Promise<Map<string, Float32Array>> {
  const values = new Map<string, Float32Array>();
  for (const t of model.tensors) {
    const f = m.tensors.find((x) => x.name === t.name);
    if (!f) fail(`${m.name}: the model has no tensor ${t.name}`);
    const v = await readFloats(m, f);
    if (v.length !== t.size) fail(`${m.name}: ${t.name} has ${v.length} values, expected ${t.size}`);
    values.set(t.name, Float32Array.from(v));
    model.view(t.name).set(v);
  }
  return values;
}

/** Fine-tune `m` toward opts.type on the token stream `data`. */
export async function runQat(m: ModelFile, data: Int32Array, bos: number, opts: QatOptions): Promise<QatRun> {
  if (!m.gguf) fail('qat needs a GGUF model (convert first: lowbit convert)');
  const say = opts.onProgress ?? (() => {});
  const container = opts.container ?? 'gguf';
  const isFtype = Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === opts.type.toLowerCase());
  if (container === 'gguf' && opts.groupSize) fail('--group applies to the generic schemes written as safetensors (int4, ...), not to llama.cpp types');
  if (container === 'safetensors' && isFtype && !/^(nvfp4|mxfp4)$/i.test(opts.type)) fail(`${opts.type} is a llama.cpp type: QAT writes it as GGUF (an output ending in .gguf); safetensors takes the schemes (int4, int8, nvfp4, mxfp4, nf4, ...)`);
  const recipe = container === 'gguf' ? llamaRecipe(opts.type, { pure: opts.pure }) : schemeRecipe(opts.type.toLowerCase(), { groupSize: opts.groupSize });
  const plan = planQuantization(m, recipe, container);
  const config = trainConfigOf(m, opts.ctx);
  const codecs = new Map<string, WeightCodec>();
  let extra = 0;
  for (const p of plan.tensors) {
    if (p.ne.length !== 2) continue;
    if (p.scheme) codecs.set(p.name, schemeWeightCodec(p.scheme));
    else if (p.ggml && p.ggml.blockSize > 1) codecs.set(p.name, ggmlWeightCodec(p.ggml));
    // a tensor the plan stores as f16/bf16 (e.g. rows a scheme's groups do not divide): trained through that rounding
    else if (ggmlRoundsFloats(p.to) && opts.method !== 'lsq') codecs.set(p.name, ggmlWeightCodec(ggmlTypeByName(p.to)!));
    else continue; // f32 stays as it is
    extra += p.ne[0] * p.ne[1] + 16;
  }
  if (codecs.size === 0) fail(`QAT: ${opts.type} quantizes no tensor of this model`);
  const trainOpts: TrainOptions = {
    ...DEFAULT_TRAIN, steps: opts.steps, lr: opts.lr, batch: opts.batch, ctx: opts.ctx, seed: opts.seed, warmup: opts.warmup, bos, weightDecay: 0, minLrRatio: 0, extraFloats: extra, threads: opts.threads,
  };
  const trainer = new Trainer(config, trainOpts, data);
  const model = trainer.model;
  // master weights from the file
  const original = await loadTrainParams(model, m);
  const initBytes = new Map<string, Uint8Array>();
  if (opts.init === 'gptq') {
    if (!opts.calibText) fail('--init gptq needs --calib FILE (calibration text)');
    if (container !== 'gguf') fail('--init gptq starts QAT toward GGML types (GGUF output); the schemes start from RTN');
    say('GPTQ initialization');
    // the one verb with the GPTQ recipe: the file `lowbit quantize --algo gptq` writes, in memory; the
    // tensors GPTQ rounded start from its bytes (the rest from the file's weights, as with --init rtn)
    const grecipe = { ...recipe, algorithm: 'gptq', ptq: { ...recipe.ptq, calibTokens: opts.calibTokens ?? 16384, calibCtx: opts.calibCtx ?? opts.ctx, seed: opts.seed } } as Recipe;
    const gsink = memorySink();
    const report = await quantize(m, grecipe, gsink, { output: 'gguf', calibText: opts.calibText, onProgress: say });
    const gfile = await openModelFile(bytesSource(gsink.bytes(), 'gptq-init.gguf'));
    for (const name of Object.keys(report.ptq?.algorithms ?? {})) {
      const t = gfile.tensor(name);
      const bytes = await gfile.read(t);
      const v = new Float32Array(t.nElements);
      ggmlCodec(t.type)!.dequantize(bytes, v.length, v);
      model.view(name).set(v);
      initBytes.set(name, bytes);
    }
  }
  if (opts.initFrom) {
    if (opts.init === 'gptq') fail('--init-from replaces --init gptq (give one of them)');
    for (const name of codecs.keys()) {
      const p = plan.tensors.find((x) => x.name === name)!;
      const f = opts.initFrom.tensors.find((x) => x.name === name);
      if (!f) fail(`--init-from ${opts.initFrom.name}: it has no tensor ${name}`);
      const want = p.ggml?.name ?? p.to;
      if (f.type !== want) fail(`--init-from ${opts.initFrom.name}: ${name} is ${f.type}, the plan quantizes it to ${want}`);
      const v = await readFloats(opts.initFrom, f);
      if (v.length !== model.byName.get(name)!.size) fail(`--init-from ${opts.initFrom.name}: ${name} has ${v.length} values, expected ${model.byName.get(name)!.size}`);
      model.view(name).set(v);
      initBytes.set(name, await opts.initFrom.read(f));
    }
  }
  const qat = new Qat(model, codecs, opts.method, { scaleLr: opts.scaleLr, initBytes });
  if (opts.loss === 'kd') {
    const mo = { batch: opts.batch, ctx: opts.ctx };
    const teacher = new TrainModel(config, wasmBackend(trainModelFloats(config, mo), opts.threads ?? 1) ?? referenceBackend('f32'), mo);
    for (const [name, v] of original) teacher.view(name).set(v);
    trainer.hooks.afterForward = (b) => {
      teacher.forward(b.tokens, b.targets);
      return distillationLoss(model.logits(), teacher.logits(), model.logitGrads(), b.targets, config.vocabSize);
    };
  }
  trainer.hooks.afterBackward = () => qat.mapGrads();
  trainer.hooks.afterStep = () => {
    const o = trainer.optim.opts;
    if (qat.lsq.size) qat.stepScales(learningRate(o, trainer.step - 1), o.beta1, o.beta2, o.eps);
    qat.refresh();
  };
  const floats = new Map<string, Float32Array>();
  return { container, trainer, qat, plan, recipe, floats };
}

/**
 * After training: the master weights written by the one verb, `quantize()` (the same plan and the same
 * writer as `lowbit quantize`): an F32 GGUF of the trained weights with the original metadata goes
 * through `quantize(trained, recipe, sink)`; LSQ's learned scales and levels enter as the per-tensor
 * rounding (`roundTensor`), as the per-tensor algorithms do.
 */
export async function writeQatModel(m: ModelFile, run: QatRun, sink: ByteSink): Promise<QuantizeReport> {
  const model = run.trainer.model;
  // an F32 GGUF of the trained weights with the original metadata, then the ordinary quantizer
  const meta = [...m.gguf!.metadata].filter(([k]) => k !== 'general.file_type') as [string, GgufValue][];
  const f32 = ggmlTypeByName('F32')!;
  const specs = m.tensors.map((t) => ({ name: t.name, ne: t.ne ? [...t.ne] : [...t.shape].reverse(), type: f32 }));
  const mem = memorySink();
  const w = new GgufWriter(mem, meta, specs);
  await w.begin();
  for (const t of m.tensors) {
    const p = model.byName.get(t.name);
    let v: Float32Array;
    if (p) v = Float32Array.from(model.view(t.name));
    else v = Float32Array.from(await readFloats(m, t));
    run.floats.set(t.name, v);
    await w.write(new Uint8Array(v.buffer));
  }
  await w.end();
  const trained = await openModelFile(bytesSource(mem.bytes(), 'qat-f32.gguf'));
  // LSQ: the learned scales and the levels, packed as they are (re-quantizing would choose other scales)
  const roundTensor = (p: { name: string }) => {
    const bytes = run.qat.lsqBytes(p.name);
    if (!bytes) return undefined;
    return async () => ({ bytes, q: Float32Array.from(run.qat.quantized.get(p.name)!), label: 'lsq' });
  };
  return quantize(trained, run.recipe, sink, { output: run.container, ...(run.qat.lsq.size ? { roundTensor } : {}) });
}
