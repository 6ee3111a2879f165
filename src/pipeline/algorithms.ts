/**
 * The algorithm table: per algorithm, its handler (how it rounds one weight into its planned codec),
 * whether it needs calibration, and its scope.
 *
 *   scope 'tensor': the weight alone decides its bytes (RTN, HQQ): streamed tensor by tensor by the
 *                   writer, no model run and no whole-model float copy;
 *   scope 'layer' : the weight's input statistics decide (GPTQ, AWQ; RTN becomes imatrix-RTN when
 *                   calibration text is given): run layer by layer by the calibration driver
 *                   (calibrate.ts), which collects each input's Hessian and hands it to the handler.
 *
 * A recipe names an algorithm per rule (or one default); a combination is a list applied in order:
 * every member's input transform (AWQ's scales) first, then the last member rounds ('awq+gptq', the
 * string older recipes use, is the list ['awq', 'gptq']). Model-wide transforms are options, not
 * algorithms: rotation (ptq.rotate) before everything, SmoothQuant (ptq.smooth) per input group.
 */
import { fail } from '../errors.js';
import { CLIP_SEARCH_MAX_BITS, codeLayout, type BlockCodec } from '../algos/block-codec.js';
import { clipBlocks, hqqApplies, hqqBlocks, rtnBlocks, type BlockResult } from '../algos/blockwise.js';
import { easyQuantBlocks, outliersPerRow } from '../algos/easyquant.js';
import { addLowRank, lowRankFactors } from '../algos/lorc.js';
import { fromFloat32 } from '../io/tensor-data.js';
import type { PtqOptions } from '../algos/ptq-options.js';
import { algorithmList, ruleFor, type BaseAlgorithm, type Recipe } from '../algos/recipe.js';
import type { ResolveOptions } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';
import { autoroundSchedule } from './block-round.js';
import { autoRoundBlocksParallel, gptqBlocksParallel, partTarget, type GptqWorkers } from './gptq-parts.js';

/** The statistics of a linear's input the layer-scope handlers read (calibrate.ts collects them). */
export interface InputStatistics {
  /** input width */
  readonly k: number;
  /** H = 2 X^T X / N, k x k */
  readonly h: Float64Array;
  /** diag(H) = 2 mean x^2 per input channel */
  diag(): Float32Array;
}

/** One weight to round: row-major rows x cols floats, its planned codec, and its input's statistics. */
export interface WeightJob {
  readonly name: string;
  readonly codec: BlockCodec;
  readonly w: Float32Array;
  readonly rows: number;
  readonly cols: number;
  /** the planned target (GPTQ's worker threads rebuild the codec from it) */
  readonly scheme?: QuantScheme;
  readonly ggmlType?: string;
  /** what the plan resolved `scheme` from (resolveScheme(name, options)): the workers rebuild it so when its id alone does not resolve */
  readonly schemeFrom?: { readonly name: string; readonly options: ResolveOptions };
  /** absent for tensor-scope runs and for weights no input reaches (token_embd) */
  readonly stats?: InputStatistics;
  readonly options: PtqOptions;
  readonly gptqWorkers?: GptqWorkers;
  /** the algorithms applied to this weight before the rounding one (['gptq'] in 'gptq+autoround') */
  readonly before?: readonly BaseAlgorithm[];
}

export interface Rounded extends BlockResult {
  /** what was done, for the report ('gptq', 'awq+clip', 'imatrix-rtn', ...) */
  readonly label: string;
  /** tensors stored beside the weight (LoRC factors, EasyQuant outliers); `q` already includes them */
  readonly extras?: readonly ExtraTensor[];
}

/**
 * A tensor stored beside a quantized weight W in lowbit safetensors, named `W` + suffix, listed in
 * `__metadata__["lowbit.extras.W"]`; lowbit's loader applies it to W's dequantized values:
 *   .lorc_a [rows, r] F16, .lorc_b [r, cols] F16     W += A B            (LoRC)
 *   .outlier_index [rows, m] U16, .outlier_value [rows, m] F16   W[row, index] = value   (EasyQuant)
 * GGUF has no place for them (llama.cpp would run Q alone): such recipes are refused for GGUF.
 */
export interface ExtraTensor {
  readonly suffix: '.lorc_a' | '.lorc_b' | '.outlier_index' | '.outlier_value';
  readonly dtype: 'F16' | 'U16';
  readonly shape: readonly number[];
  readonly data?: Uint8Array;
}

/** The extra tensors a weight of rows x cols gets with these algorithms and options (shapes only). */
export function extraTensorSpecs(list: readonly AlgorithmSpec[], rows: number, cols: number, o: PtqOptions): ExtraTensor[] {
  const out: ExtraTensor[] = [];
  const m = list[list.length - 1]?.name === 'easyquant' ? outliersPerRow(o.easyquantOutliers, cols) : 0;
  if (m) out.push({ suffix: '.outlier_index', dtype: 'U16', shape: [rows, m] }, { suffix: '.outlier_value', dtype: 'F16', shape: [rows, m] });
  if (o.lorc > 0) out.push({ suffix: '.lorc_a', dtype: 'F16', shape: [rows, o.lorc] }, { suffix: '.lorc_b', dtype: 'F16', shape: [o.lorc, cols] });
  return out;
}

/** Does a weight need its algorithms' handler (anything but plain RTN, or a LoRC post-step)? */
export const needsHandler = (list: readonly AlgorithmSpec[], o: PtqOptions) => o.lorc > 0 || list.some((a) => a.name !== 'rtn');

export interface AlgorithmSpec {
  readonly name: BaseAlgorithm;
  readonly scope: 'tensor' | 'layer';
  readonly needsCalibration: boolean;
  /** AWQ: searches per-channel scales for each input group before its linears are rounded */
  readonly scalesInputs?: boolean;
  /**
   * OmniQuant: learned by the calibration driver on a whole layer's output (pipeline/omniquant.ts:
   * equivalent transforms folded into the layer, clip ratios per block); `round` is its per-linear form
   * for the weights outside the layers (the output head) and for layers the training engine cannot run
   */
  readonly learnsLayer?: boolean;
  readonly help: string;
  /** round one weight (with `stats` in a calibrated run, without otherwise) */
  round(job: WeightJob): Promise<Rounded> | Rounded;
}

const searchable = (c: BlockCodec) => codeLayout(c).bits <= CLIP_SEARCH_MAX_BITS;

function hqq(job: WeightJob): Rounded {
  const { codec, name } = job;
  if (!hqqApplies(codec.name)) fail(`HQQ optimizes a zero-point: ${name} is planned as ${codec.name}, which has none (use an asymmetric target such as --type uint4 --group 64 --asym, or Q4_1)`);
  return { ...hqqBlocks(codec, job.w, job.rows, job.cols, { iters: job.options.hqqIters, p: job.options.hqqP }), label: 'hqq' };
}

/** RTN; with statistics imatrix-RTN: the codec's importance path with mean x^2, or a weighted clip search */
function rtn(job: WeightJob): Rounded {
  const { codec, w, rows: n, cols: k, stats } = job;
  if (!stats) return { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
  const imp = stats.diag();
  if (codec.usesImportance) return { ...rtnBlocks(codec, w, n, k, imp), label: 'imatrix-rtn' };
  return searchable(codec) ? { ...clipBlocks(codec, w, n, k, { importance: imp }), label: 'imatrix-rtn' } : { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
}

async function gptq(job: WeightJob): Promise<Rounded> {
  const { codec, w, rows: n, cols: k, stats, options: o } = job;
  if (!stats) return { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
  const diag = stats.diag();
  const clip = o.gptqClip && searchable(codec);
  const target = partTarget(job.scheme, job.ggmlType, job.schemeFrom);
  const r = await gptqBlocksParallel(w, n, k, stats.h, codec, target, { percDamp: o.percDamp, blockSize: o.gptqBlock, actOrder: o.actOrder, importance: o.gptqImportance && codec.usesImportance ? diag : undefined, clipWeights: clip ? diag : undefined }, job.gptqWorkers);
  return { ...r, label: 'gptq' };
}

/** AWQ's rounding after its scales: a clip-ratio search per block weighted by H (not for q/k, whose errors the softmax amplifies) */
function awq(job: WeightJob): Rounded {
  const { codec, w, rows: n, cols: k, stats, name } = job;
  if (!stats) return { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
  const clip = job.options.awqClip && searchable(codec) && !/attn_[qk]\.weight$/.test(name);
  return clip ? { ...clipBlocks(codec, w, n, k, { h: stats.h }), label: 'awq+clip' } : { ...rtnBlocks(codec, w, n, k), label: 'awq' };
}

/**
 * AutoRound: learned rounding offsets and per-block clip ratios by signed gradient descent on the
 * linear's output error (algos/autoround.ts); after GPTQ ('gptq+autoround') it starts from GPTQ's
 * grids and choices and learns the rounding only. With the block objective this is the start the
 * calibration driver then relearns on the layer's output (pipeline/block-round.ts; starting the block
 * stage from GPTQ's result directly gave 0.81x GPTQ's KLD instead of 0.69x on tinyllama256 Q3_K).
 */
async function autoround(job: WeightJob): Promise<Rounded> {
  const { codec, w, rows: n, cols: k, stats, options: o } = job;
  if (!stats) return { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
  const init = job.before?.includes('gptq') ? await gptq(job) : undefined;
  const r = await autoRoundBlocksParallel(w, n, k, stats.h, codec, partTarget(job.scheme, job.ggmlType, job.schemeFrom), { ...autoroundSchedule(o, 'linear', init !== undefined), clip: o.autoroundClip, importance: codec.usesImportance ? stats.diag() : undefined, init }, job.gptqWorkers);
  return { bytes: r.bytes, q: r.q, label: 'autoround' };
}

/**
 * OmniQuant outside a learned layer: its weight clipping on the linear's own output error, i.e. the
 * clip ratio per block minimizing e^T H_bb e (the layer's equivalent transforms need the layer).
 */
function omniquant(job: WeightJob): Rounded {
  const { codec, w, rows: n, cols: k, stats } = job;
  if (!stats || !searchable(codec)) return { ...rtnBlocks(codec, w, n, k), label: 'rtn' };
  return { ...clipBlocks(codec, w, n, k, { h: stats.h }), label: 'omniquant (clip)' };
}

/** EasyQuant: data-free; f16 outliers per row, then each block's range fitted to the rest (easyquant.ts) */
function easyquant(job: WeightJob): Rounded {
  const { codec, w, rows: n, cols: k, options: o } = job;
  const r = easyQuantBlocks(codec, w, n, k, o.easyquantOutliers);
  const { perRow, index, value } = r.outliers;
  const extras: ExtraTensor[] = perRow
    ? [
        { suffix: '.outlier_index', dtype: 'U16', shape: [n, perRow], data: new Uint8Array(index.buffer, index.byteOffset, index.byteLength) },
        { suffix: '.outlier_value', dtype: 'F16', shape: [n, perRow], data: fromFloat32('F16', value) },
      ]
    : [];
  return { bytes: r.bytes, q: r.q, extras, label: 'easyquant' };
}

/** LoRC after any rounding: E = W - Q factored to rank r (f16), Q + A B is what the runtime computes with */
function withLorc(r: Rounded, job: WeightJob): Rounded {
  const { w, rows: n, cols: k, options: o } = job;
  const e = new Float32Array(n * k);
  for (let i = 0; i < e.length; i++) e[i] = w[i] - r.q[i];
  const f = lowRankFactors(e, n, k, o.lorc, { seed: o.seed });
  const q = Float32Array.from(r.q);
  addLowRank(q, n, k, f);
  const extras: ExtraTensor[] = [
    ...(r.extras ?? []),
    { suffix: '.lorc_a', dtype: 'F16', shape: [n, f.rank], data: fromFloat32('F16', f.a) },
    { suffix: '.lorc_b', dtype: 'F16', shape: [f.rank, k], data: fromFloat32('F16', f.b) },
  ];
  return { bytes: r.bytes, q, extras, label: `${r.label}+lorc${f.rank}` };
}

export const ALGORITHM_TABLE: Readonly<Record<BaseAlgorithm, AlgorithmSpec>> = Object.freeze({
  rtn: { name: 'rtn', scope: 'tensor', needsCalibration: false, help: 'round to nearest (imatrix-weighted when calibration text is given)', round: rtn },
  hqq: { name: 'hqq', scope: 'tensor', needsCalibration: false, help: 'HQQ: half-quadratic zero-point/scale fit (asymmetric targets)', round: hqq },
  gptq: { name: 'gptq', scope: 'layer', needsCalibration: true, help: 'GPTQ: error-compensating rounding with the input Hessian', round: gptq },
  awq: { name: 'awq', scope: 'layer', needsCalibration: true, scalesInputs: true, help: 'AWQ: activation-aware per-channel scales, then a clip search', round: awq },
  autoround: { name: 'autoround', scope: 'layer', needsCalibration: true, help: 'AutoRound: rounding offsets (and clip ratios) learned by signed gradient descent on each transformer layer\'s output error (--autoround-objective linear: each linear\'s)', round: autoround },
  omniquant: { name: 'omniquant', scope: 'layer', needsCalibration: true, learnsLayer: true, help: 'OmniQuant: clip ratios per block and equivalent-transform scales (folded into the norms, v/o, up/down) learned by Adam on each transformer layer\'s output error', round: omniquant },
  easyquant: { name: 'easyquant', scope: 'tensor', needsCalibration: false, help: 'EasyQuant: data-free; ~1 % outliers per row kept in f16, block ranges fitted to the rest (lowbit safetensors)', round: easyquant },
} satisfies Record<BaseAlgorithm, AlgorithmSpec>);

/** The algorithms a recipe applies to a tensor, in order (the rule's, else the recipe's default, else rtn). */
export function algorithmsOf(recipe: Recipe, tensorName: string): readonly AlgorithmSpec[] {
  const a = ruleFor(recipe, tensorName)?.algorithm ?? recipe.algorithm ?? 'rtn';
  return algorithmList(a).map((n) => ALGORITHM_TABLE[n]);
}

/** Round one weight with a tensor's algorithms: the last member of the list rounds ('awq+gptq' is reported as such). */
export async function roundWeight(list: readonly AlgorithmSpec[], job: WeightJob): Promise<Rounded> {
  let r = await (list[list.length - 1] ?? ALGORITHM_TABLE.rtn).round({ ...job, before: list.slice(0, -1).map((a) => a.name) });
  if (list.length > 1 && job.stats) r = { ...r, label: list.map((a) => a.name).join('+') };
  return job.options.lorc > 0 ? withLorc(r, job) : r;
}

/** Is the list learned on whole layers (OmniQuant)? */
export const learnsLayer = (list: readonly AlgorithmSpec[]) => list.some((a) => a.learnsLayer);

/** Does the list scale its inputs (AWQ) before rounding? */
export const scalesInputs = (list: readonly AlgorithmSpec[]) => list.some((a) => a.scalesInputs);
