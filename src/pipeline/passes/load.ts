/**
 * Pass "load / tokenize": what every calibrated quantization starts from. The model's shape and family
 * from the GGUF header (modelShape), every tensor as float32 (loadWeights: the transforms and quantizers
 * write into them), which tensors are quantized with which codec, whether the plan needs the layer pass
 * and calibration text (calibrationNeeds, from the algorithm table), and the calibration windows.
 */
import { fail } from '../../errors.js';
import { rngStream } from '../../rng.js';
import { blockCodecFor, type BlockCodec } from '../../algos/block-codec.js';
import type { PtqOptions } from '../../algos/ptq-options.js';
import { plainValue } from '../../io/gguf.js';
import type { ModelFile } from '../../io/model-file.js';
import { vocabFromGgufMetadata } from '../../io/vocab.js';
import { familyOf, type ModelFamily } from '../../model/family.js';
import { llamaConfigFromGguf } from '../../model/llama.js';
import { Tokenizer } from '../../model/tokenizer.js';
import type { LlamaConfig, StoredTensor } from '../../model/types.js';
import { ggmlTypeByName, isGgmlFloat } from '../../quant/ggml/types.js';
import { algorithmsOf, needsHandler } from '../algorithms.js';
import type { QuantizePlan, TensorPlan } from '../plan.js';
import type { FloatTensor } from './input-stats.js';

/** is a planned tensor quantized (not a float target)? */
export const isQuantized = (p: TensorPlan) => p.scheme !== undefined || (p.ggml !== undefined && !isGgmlFloat(p.ggml));

/** the codec a planned tensor is quantized with, or undefined for a float target */
export function codecOf(p: TensorPlan): BlockCodec | undefined {
  if (p.scheme) return blockCodecFor(p.scheme, p.ne[0]);
  if (p.ggml && !isGgmlFloat(p.ggml)) return blockCodecFor(p.ggml.name, p.ne[0]);
  return undefined;
}

const shapeOf = (m: ModelFile, name: string): number[] => {
  const t = m.tensor(name);
  return t.ne ? [...t.ne] : [...t.shape].reverse();
};

/** Stage: every tensor of the model as float32 (fresh arrays: transforms and quantizers write into them); `skip`: names left out (read later by readWeight) */
export async function loadWeights(m: ModelFile, skip?: ReadonlySet<string>): Promise<Map<string, FloatTensor>> {
  const weights = new Map<string, FloatTensor>();
  for (const t of m.tensors) if (!skip?.has(t.name)) weights.set(t.name, await readWeight(m, t.name));
  return weights;
}

/** one tensor of the model as float32 (a fresh array) */
async function readWeight(m: ModelFile, name: string): Promise<FloatTensor> {
  const ne = shapeOf(m, name);
  return { data: await m.readFloat32(m.tensor(name)), rows: ne.slice(1).reduce((a, b) => a * b, 1), cols: ne[0] };
}

let layerByLayer = true;

/** Load the whole f32 model first even where the layer pass could read it layer by layer (tests compare the two). */
export function setLayerByLayerLoading(on: boolean): void {
  layerByLayer = on;
}

/**
 * The layers' matrices the layer pass may read one layer at a time (read when the pass reaches their
 * layer, let go when it has rounded them): when every quantized tensor's algorithms are GPTQ or RTN and
 * nothing transforms across layers (no rotation, SmoothQuant, OS+ shift, experts or fused tensors).
 * Empty otherwise: the whole f32 model is loaded first.
 */
function layerByLayerNames(m: ModelFile, plan: QuantizePlan, o: PtqOptions, config: LlamaConfig, family: ModelFamily): Set<string> {
  if (!layerByLayer) return new Set();
  const across = o.rotate !== 'none' || o.shift || o.smooth > 0 || config.nExperts !== undefined || family.linears.some((s) => s.parts); // experts or fused tensors (model/family.ts)
  const simple = plan.tensors.every((p) => !isQuantized(p) || algorithmsOf(plan.recipe, p.name).every((a) => a.name === 'gptq' || a.name === 'rtn'));
  if (across || !simple) return new Set();
  return new Set(m.tensors.filter((t) => /^blk\.\d+\./.test(t.name) && shapeOf(m, t.name).length >= 2 && m.tensor(t.name).nElements > 0).map((t) => t.name));
}

/** The runtime's configuration and family of a GGUF model, from its header alone. */
export function modelShape(m: ModelFile): { config: LlamaConfig; family: ModelFamily; metadata: Map<string, unknown> } {
  if (!m.gguf) fail(`the calibration pass needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
  const metadata = new Map<string, unknown>([...m.gguf.metadata].map(([k, v]) => [k, plainValue(v)]));
  const f32 = ggmlTypeByName('F32')!;
  const infos: StoredTensor[] = m.tensors.map((t) => ({ name: t.name, type: f32, dims: t.ne ? [...t.ne] : [...t.shape].reverse(), data: new Uint8Array(0) }));
  const config = llamaConfigFromGguf(metadata, infos);
  return { config, family: familyOf(config.arch ?? String(metadata.get('general.architecture')), config.nExperts !== undefined), metadata };
}

/** A model loaded for calibration: its float weights, header and family. */
export interface LoadedModel {
  readonly weights: Map<string, FloatTensor>;
  readonly metadata: Map<string, unknown>;
  readonly config: LlamaConfig;
  readonly family: ModelFamily;
  /** the architecture's name (for messages) */
  readonly arch: string;
  /** the current float weights as the runtime's tensors (views, not copies; zeros for a matrix not loaded) */
  stored(): StoredTensor[];
  /** every tensor's name (the weights may hold only some: layer-by-layer loading) */
  readonly names: readonly string[];
  /** matrices read one layer at a time by the layer pass (readWeight), not in `weights` at the start */
  readonly lazy: ReadonlySet<string>;
  readWeight(name: string): Promise<FloatTensor>;
}

/**
 * Pass "load": the header's shape and family (model/family.ts) and every tensor as float32 -- but with
 * `layerPass` (the layer-by-layer driver will run this plan), the layers' matrices it may read one layer
 * at a time are left out (`lazy`, layerByLayerNames).
 */
export async function loadPass(m: ModelFile, layerPass?: { plan: QuantizePlan; options: PtqOptions }): Promise<LoadedModel> {
  if (!m.gguf) fail(`calibrated quantization needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
  const { config, family, metadata } = modelShape(m);
  const lazy = layerPass ? layerByLayerNames(m, layerPass.plan, layerPass.options, config, family) : new Set<string>();
  const weights = await loadWeights(m, lazy);
  const f32 = ggmlTypeByName('F32')!;
  // a matrix not read yet (or let go) stands in the runtime as zeros of its size: the layer pass never reads it (LayerCalibration.notLoaded)
  const zeros = new Uint8Array(Math.max(0, ...[...lazy].map((n) => 4 * m.tensor(n).nElements)));
  const inFile = new Set(m.tensors.map((t) => t.name));
  // the file's tensors in order, then any the transforms added to the weights
  const stored = (): StoredTensor[] =>
    [...inFile, ...[...weights.keys()].filter((n) => !inFile.has(n))].map((name) => {
      const t = weights.get(name);
      return { name, type: f32, dims: shapeOf(m, name), data: t ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : zeros.subarray(0, 4 * m.tensor(name).nElements) };
    });
  const names = [...inFile];
  return { weights, metadata, config, family, arch: config.arch ?? String(metadata.get('general.architecture')), stored, names, lazy, readWeight: (n) => readWeight(m, n) };
}

/**
 * Pass "tokenize": the calibration windows (of ctx = min(calibCtx, the model's context) tokens) from
 * the token stream, or from the calibration text through the model's own vocabulary, when the layer
 * pass or a rotation needs them; a plan that needs text and has none is an error, never a silent RTN.
 */
export function tokenizePass(m: ModelFile, model: LoadedModel, o: PtqOptions, input: { calibText?: string; calibStream?: ArrayLike<number> }, needs: CalibrationNeeds): { windows: Int32Array[]; ctx: number } {
  const { metadata, config } = model;
  let windows: Int32Array[] = [];
  const ctx = Math.min(o.calibCtx, config.seqLen);
  if (input.calibStream) windows = calibrationWindows(input.calibStream, o.calibTokens, ctx, o.seed, Number(metadata.get('tokenizer.ggml.bos_token_id') ?? 1));
  else if (needs.layerPass || o.rotate === 'learned' || (o.rotate === 'hadamard' && input.calibText)) {
    if (o.rotate === 'learned' && input.calibText === undefined) fail('--rotate learned needs calibration text: --calib FILE (or { calibText } in quantize())');
    if (input.calibText === undefined) fail(`${needs.algorithms.join('/') || 'SmoothQuant'} needs calibration text: --calib FILE (or { calibText } in quantize())`);
    if (metadata.get('tokenizer.ggml.tokens') === undefined) fail(`${m.name} carries no vocabulary to tokenize the calibration text`);
    const tok = new Tokenizer(vocabFromGgufMetadata(metadata));
    const stream = tok.encode(input.calibText, { bos: false });
    windows = calibrationWindows(stream, o.calibTokens, ctx, o.seed, tok.vocab.bos);
  }
  return { windows, ctx };
}

/**
 * nSeq = floor(nTokens / ctx) windows of ctx tokens from the token stream, starting at seeded random
 * offsets (GPTQ's sampling of calibration segments); the first token of each window becomes BOS.
 */
export function calibrationWindows(stream: ArrayLike<number>, nTokens: number, ctx: number, seed: number, bos: number): Int32Array[] {
  const nSeq = Math.floor(nTokens / ctx);
  if (nSeq < 1) fail(`--calib-tokens ${nTokens} is less than one sequence of --calib-ctx ${ctx}`);
  if (stream.length < ctx + 1) fail(`the calibration text has ${stream.length} tokens, fewer than one sequence of ${ctx}`);
  const rand = rngStream('calibrationWindows', seed);
  const out: Int32Array[] = [];
  for (let s = 0; s < nSeq; s++) {
    const start = Math.floor(rand() * (stream.length - ctx));
    const w = Int32Array.from({ length: ctx }, (_, i) => stream[start + i]);
    w[0] = bos;
    out.push(w);
  }
  return out;
}

/** what a plan asks of calibration */
export interface CalibrationNeeds {
  /** the layer-by-layer driver runs (an algorithm needs calibration, or RTN becomes imatrix-RTN with text) */
  layerPass: boolean;
  needsText: boolean;
  /** the algorithms that need calibration text (for the message when it is missing) */
  algorithms: string[];
  /** some tensor's algorithms have a handler (not plain rounding in the writer) */
  tensorPass: boolean;
}

/** Does a plan need the layer-by-layer calibration driver, and does it need calibration text? */
export function calibrationNeeds(plan: QuantizePlan, options: PtqOptions, hasCalib: boolean): CalibrationNeeds {
  const algorithms = new Set<string>();
  let needsText = options.smooth > 0 || options.shift;
  if (options.shift) algorithms.add('Outlier Suppression+ (--shift)');
  let tensorPass = false;
  for (const p of plan.tensors) {
    if (!isQuantized(p)) continue;
    const list = algorithmsOf(plan.recipe, p.name);
    for (const a of list) if (a.needsCalibration) {
      needsText = true;
      algorithms.add(a.name);
    }
    if (needsHandler(list, options)) tensorPass = true;
  }
  const hasRtn = plan.tensors.some((p) => isQuantized(p) && algorithmsOf(plan.recipe, p.name).every((a) => a.name === 'rtn'));
  return { layerPass: needsText || (hasCalib && hasRtn), needsText, algorithms: [...algorithms], tensorPass };
}
