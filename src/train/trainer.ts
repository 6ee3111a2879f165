/**
 * The training loop: micro-batches accumulated into one optimizer step, AdamW with a schedule and
 * clipping, held-out evaluation, checkpoints that resume to the same bytes, and a stop with a clear
 * message when the loss stops being finite.
 *
 * Determinism: batches come from one seeded generator (its state is in the checkpoint), every product
 * has a fixed order of operations (src/train/gemm.ts), and nothing depends on timing or thread count:
 * same data, options and seed -> same parameters, whether run in one go or resumed.
 */
import { fail, LowbitError } from '../errors.js';
import { referenceBackend, wasmBackend, type Backend } from './gemm.js';
import { evalBatches, Rng, sampleBatch, type Batch } from './data.js';
import { TrainModel, trainModelFloats, type TrainConfig } from './llama-grad.js';
import { AdamW, DEFAULT_OPTIM, type OptimOptions } from './optim.js';
import { applyPrecision, precisionScratchFloats, type Precision, type PrecisionOp } from './precision.js';

export interface TrainOptions extends OptimOptions {
  batch: number;
  ctx: number;
  /** micro-batches per optimizer step */
  accum: number;
  seed: number;
  precision: Precision;
  checkpointActivations: boolean;
  /** replace the first input of each window by this id (BOS) */
  bos?: number;
  /** 'wasm' (default where available) or the scalar reference */
  kernels?: 'wasm' | 'reference';
  /** floats to reserve in the backend for callers' arrays (e.g. QAT's quantized weights) */
  extraFloats?: number;
  /** threads for the products (same bytes on any count; needs a host thread starter, src/kernels/threads.ts) */
  threads?: number;
}

/** Where QAT and distillation plug into the loop. */
export interface TrainHooks {
  /** after each forward pass of a training micro-batch: may replace the loss and the logit gradients */
  afterForward?(batch: Batch, loss: number): number;
  /** after the micro-batches' backward passes, before the optimizer: map the gradients */
  afterBackward?(): void;
  /** after each optimizer step */
  afterStep?(): void;
}

export const DEFAULT_TRAIN: Readonly<Omit<TrainOptions, 'steps'>> = Object.freeze({
  ...DEFAULT_OPTIM, batch: 8, ctx: 128, accum: 1, seed: 1, precision: 'fp32' as Precision, checkpointActivations: false,
});

export interface StepResult {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

export class Trainer {
  readonly model: TrainModel;
  readonly optim: AdamW;
  readonly rng: Rng;
  readonly history: StepResult[] = [];
  readonly evals: { step: number; loss: number }[] = [];
  hooks: TrainHooks = {};
  /** the low-precision products, unless fp32 */
  readonly precision: PrecisionOp | undefined;

  constructor(readonly config: TrainConfig, readonly opts: TrainOptions, readonly data: ArrayLike<number>) {
    if (!(Number.isInteger(opts.steps) && opts.steps > 0)) fail(`steps must be a positive integer (got ${opts.steps})`);
    if (!(Number.isInteger(opts.accum) && opts.accum > 0)) fail(`accum must be a positive integer (got ${opts.accum})`);
    if (data.length < opts.ctx + 1) fail(`the training text has ${data.length} tokens, fewer than one sequence of --ctx ${opts.ctx} + 1`);
    if (opts.ctx > config.seqLen) fail(`--ctx ${opts.ctx} is longer than the model's context ${config.seqLen}`);
    const mo = { batch: opts.batch, ctx: opts.ctx, checkpointActivations: opts.checkpointActivations };
    const be: Backend = (opts.kernels !== 'reference' && wasmBackend(trainModelFloats(config, mo) + precisionFloats(config, opts) + (opts.extraFloats ?? 0), opts.threads ?? 1)) || referenceBackend('f32');
    this.model = new TrainModel(config, be, mo);
    this.rng = new Rng(opts.seed);
    this.model.initialize(() => this.rng.normal());
    this.precision = applyPrecision(this.model, opts.precision, opts.seed);
    this.optim = new AdamW(opts, this.model.tensors, this.model.params.length);
  }

  get step(): number {
    return this.optim.t;
  }

  /** stop the backend's worker threads (if any) */
  close(): void {
    this.model.be.close?.();
  }

  /** One optimizer step over `accum` micro-batches. Throws (leaving parameters untouched) when the loss or gradient is not finite. */
  trainStep(): StepResult {
    const m = this.model;
    m.zeroGrads();
    let loss = 0;
    for (let a = 0; a < this.opts.accum; a++) {
      this.precision?.beginStep(this.step * this.opts.accum + a);
      const b = sampleBatch(this.data, this.opts.batch, this.opts.ctx, this.rng, this.opts.bos);
      let l = m.forward(b.tokens, b.targets);
      if (this.hooks.afterForward) l = this.hooks.afterForward(b, l);
      loss += l / this.opts.accum;
      if (!Number.isFinite(loss)) throw new NonFiniteLoss(this.step + 1, loss);
      if (this.opts.accum > 1) scale(m.logitGrads(), 1 / this.opts.accum);
      m.backward();
    }
    for (let i = 0; i < m.grads.length; i++) if (!Number.isFinite(m.grads[i])) throw new NonFiniteLoss(this.step + 1, NaN, 'gradient');
    this.hooks.afterBackward?.();
    const { gradNorm, lr } = this.optim.step(m.params, m.grads);
    this.hooks.afterStep?.();
    const r = { step: this.step, loss, gradNorm, lr };
    this.history.push(r);
    return r;
  }

  /** mean next-token loss on held-out tokens, scored as llama-perplexity does (ctx chunks, second half) */
  evaluate(tokens: ArrayLike<number>, maxChunks = 64): number {
    return evalLoss(this.model, evalBatches(tokens, this.opts.batch, this.opts.ctx, this.opts.bos, maxChunks));
  }
}

export class NonFiniteLoss extends LowbitError {
  constructor(readonly step: number, readonly value: number, what = 'loss') {
    super(`the ${what} became ${Number.isNaN(value) ? 'NaN' : value} at step ${step}; stopped (lower --lr, or use --clip)`);
  }
}

export function evalLoss(m: TrainModel, batches: Batch[]): number {
  let sum = 0;
  let count = 0;
  for (const b of batches) {
    const n = b.targets.reduce((s, y) => s + (y >= 0 ? 1 : 0), 0);
    if (n === 0) continue;
    sum += m.forward(b.tokens, b.targets) * n;
    count += n;
  }
  if (count === 0) fail('held-out text is shorter than one evaluation chunk');
  return sum / count;
}

function scale(v: { length: number; [i: number]: number }, s: number): void {
  for (let i = 0; i < v.length; i++) v[i] *= s;
}

/** extra floats the precision mode's scratch takes */
function precisionFloats(c: TrainConfig, o: { batch: number; ctx: number; precision: Precision }): number {
  if (o.precision === 'fp32') return 0;
  return precisionScratchFloats(o.batch * o.ctx, Math.max(c.dim, c.hiddenDim, c.vocabSize, c.nHeads * c.headDim)) + 1024;
}

// ---------------------------------------------------------------------------------------------------
// Checkpoints: 'LBTRAIN1' | u32 JSON length | JSON (config, options, step, generator state, history) |
// zero padding to 8 | f32 params | f32 Adam m | f32 Adam v. Written atomically by the caller.

const MAGIC = 'LBTRAIN1';

export function checkpointBytes(t: Trainer): Uint8Array {
  const json = new TextEncoder().encode(
    JSON.stringify({ version: 1, config: t.config, opts: t.opts, step: t.step, rng: t.rng.state, history: t.history, evals: t.evals, size: t.model.params.length }),
  );
  const head = 8 + 4 + json.length;
  const start = Math.ceil(head / 8) * 8;
  const n = t.model.params.length;
  const out = new Uint8Array(start + 3 * n * 4);
  out.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(out.buffer).setUint32(8, json.length, true);
  out.set(json, 12);
  const f = new Float32Array(out.buffer, start, 3 * n);
  f.set(t.model.params, 0);
  f.set(t.optim.m, n);
  f.set(t.optim.v, 2 * n);
  return out;
}

interface CheckpointHead {
  version: number;
  config: TrainConfig;
  opts: TrainOptions;
  step: number;
  rng: number;
  history: StepResult[];
  evals: { step: number; loss: number }[];
  size: number;
}

export function readCheckpointHead(bytes: Uint8Array, name = 'checkpoint'): { head: CheckpointHead; start: number } {
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) fail(`${name} is not a lowbit training checkpoint`);
  const len = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  if (12 + len > bytes.length) fail(`${name} is truncated (header)`);
  let head: CheckpointHead;
  try {
    head = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + len))) as CheckpointHead;
  } catch {
    fail(`${name}: checkpoint header is not valid JSON`);
  }
  if (head.version !== 1) fail(`${name}: checkpoint version ${head.version} is not supported`);
  const start = Math.ceil((12 + len) / 8) * 8;
  if (bytes.length !== start + 3 * head.size * 4) fail(`${name} is truncated or has trailing bytes (${bytes.length} bytes, expected ${start + 3 * head.size * 4})`);
  return { head, start };
}

/** Restore a trainer's state from a checkpoint made with the same config and options (steps may differ). */
export function restoreCheckpoint(t: Trainer, bytes: Uint8Array, name = 'checkpoint'): void {
  const { head, start } = readCheckpointHead(bytes, name);
  const diff = (Object.keys(t.config) as (keyof TrainConfig)[]).filter((k) => head.config[k] !== t.config[k]);
  if (diff.length) fail(`${name} was made for a different model (${diff.map((k) => `${k} ${String(head.config[k])} vs ${String(t.config[k])}`).join(', ')})`);
  const keys: (keyof TrainOptions)[] = ['steps', 'batch', 'ctx', 'accum', 'seed', 'precision', 'lr', 'minLrRatio', 'warmup', 'schedule', 'beta1', 'beta2', 'eps', 'weightDecay', 'clip', 'bos'];
  const od = keys.filter((k) => head.opts[k] !== t.opts[k]);
  if (od.length) fail(`${name} was made with different options (${od.map((k) => `${k} ${String(head.opts[k])} vs ${String(t.opts[k])}`).join(', ')})`);
  if (head.size !== t.model.params.length) fail(`${name} holds ${head.size} parameters, the model has ${t.model.params.length}`);
  if (head.step > t.opts.steps) fail(`${name} is at step ${head.step}, past --steps ${t.opts.steps}`);
  const n = head.size;
  const f = new Float32Array(3 * n); // (a copy: Node's Buffer.slice would be a view of a shared pool)
  new Uint8Array(f.buffer).set(bytes.subarray(start, start + 3 * n * 4));
  t.model.params.set(f.subarray(0, n));
  t.optim.m.set(f.subarray(n, 2 * n));
  t.optim.v.set(f.subarray(2 * n, 3 * n));
  t.optim.t = head.step;
  t.rng.state = head.rng;
  t.history.splice(0, t.history.length, ...head.history);
  t.evals.splice(0, t.evals.length, ...head.evals);
}
