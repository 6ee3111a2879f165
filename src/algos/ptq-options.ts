/**
 * Options of the calibrated algorithms, declared once (name, type, default, help, range): this table
 * feeds the CLI flags of `lowbit quantize`, the recipe field `ptq` and its validation.
 * Defaults are the papers' (GPTQ: 1 % dampening, blocks of 128; AWQ: a grid of 20 over alpha;
 * HQQ: p = 0.7, beta = 10, kappa = 1.01, 20 iterations; SmoothQuant: alpha = 0.5; EasyQuant: ~1 % outliers).
 */
import { fail } from '../errors.js';

export interface PtqOptions {
  /** calibration tokens and sequence length; the seed picks the windows of the calibration text */
  readonly calibTokens: number;
  readonly calibCtx: number;
  readonly seed: number;
  /** 'hadamard': QuaRot-style rotation of the residual stream folded into the weights; 'learned': SpinQuant's R1 learned from it */
  readonly rotate: 'none' | 'hadamard' | 'learned';
  /** --rotate learned: Cayley SGD steps, first step (Frobenius norm of the Cayley generator), windows per step */
  readonly rotateIters: number;
  readonly rotateLr: number;
  readonly rotateBatch: number;
  /** also rotate each attention head's values (W_v rows and W_o columns per head, exact) */
  readonly rotateHeads: boolean;
  readonly percDamp: number;
  readonly gptqBlock: number;
  readonly actOrder: boolean;
  /** GPTQ: let GGML codecs choose each block's scales with diag(H) as the importance vector */
  readonly gptqImportance: boolean;
  /** GPTQ: search each group's clip ratio (the codec's grid of x * r) by diag(H)-weighted error */
  readonly gptqClip: boolean;
  readonly awqGrid: number;
  readonly awqClip: boolean;
  /** SmoothQuant migration strength; 0 = off */
  readonly smooth: number;
  /** Outlier Suppression+: shift each norm output channel to centre it, then scale (alpha = smooth, or 0.5) */
  readonly shift: boolean;
  readonly hqqIters: number;
  readonly hqqP: number;
  /** AutoRound: sign-gradient iterations and first step (0 = the objective's default: pipeline/block-round.ts autoroundSchedule), learned clip ratios */
  readonly autoroundIters: number;
  readonly autoroundLr: number;
  readonly autoroundClip: boolean;
  /** AutoRound's objective: 'block' (the transformer layer's output, the paper's) or 'linear' (each linear's own output from H) */
  readonly autoroundObjective: 'block' | 'linear';
  /** AutoRound (block): calibration windows per signed-gradient step */
  readonly autoroundBatch: number;
  /** AutoRound (block objective): its own steps and first step (0 = autoroundIters / autoroundLr, or their defaults); the per-linear stage keeps autoroundIters / autoroundLr */
  readonly autoroundBlockIters: number;
  readonly autoroundBlockLr: number;
  /** AutoRound (block objective): judge the iterate every N steps on the evaluation windows, keep the best (0 = off) */
  readonly autoroundBlockEval: number;
  /** AutoRound (block objective): steps learning the output head's rounding on the logits' KL divergence (0 = off) */
  readonly autoroundHeadIters: number;
  readonly autoroundHeadLr: number;
  /** AutoRound (block objective): learn the token embedding's rounding in layer 0's block stage (its input) */
  readonly autoroundEmbedding: boolean;
  /** the token embedding rounded by its algorithms with the float model's Fisher at its rows as H (sampled label sets per window; 0 = off: round to nearest) */
  readonly embeddingFisher: number;
  /** AutoRound (block objective): each layer's output error measured in the float model's Fisher at that point (sampled label sets per window; 0 = off: the squared error) */
  readonly autoroundBlockFisher: number;
  /** AutoRound (block objective): steps, first step (0 = 0.2 / steps) and windows per step of the end-to-end stage (every AutoRound tensor's rounding on the whole model's KL divergence; 0 steps = off) */
  readonly autoroundE2eIters: number;
  readonly autoroundE2eLr: number;
  readonly autoroundE2eBatch: number;
  /** AutoRound end to end: > 0 = greedy flips (at most this fraction of the elements per step, kept when the evaluation loss falls) instead of signed-gradient steps */
  readonly autoroundE2eFlips: number;
  /** OmniQuant: Adam iterations, first step (0 = 0.005), calibration windows per step, learn the equivalent transforms (LET) */
  readonly omniquantIters: number;
  readonly omniquantLr: number;
  readonly omniquantBatch: number;
  readonly omniquantLet: boolean;
  /** LoRC (ZeroQuant-V2): rank of the low-rank compensation of each weight's quantization error; 0 = off */
  readonly lorc: number;
  /** EasyQuant: fraction of each row's weights kept in f16 as outliers (the largest |w - mean|) */
  readonly easyquantOutliers: number;
}

export interface PtqOptionSpec {
  readonly key: keyof PtqOptions;
  /** CLI flag name */
  readonly flag: string;
  readonly type: 'int' | 'number' | 'boolean' | 'string';
  readonly default: number | boolean | string;
  readonly help: string;
  readonly min?: number;
  readonly max?: number;
  readonly choices?: readonly string[];
}

export const PTQ_OPTIONS: readonly PtqOptionSpec[] = Object.freeze([
  { key: 'calibTokens', flag: 'calib-tokens', type: 'int', default: 16384, min: 1, help: 'calibration tokens (whole sequences of --calib-ctx)' },
  { key: 'calibCtx', flag: 'calib-ctx', type: 'int', default: 512, min: 2, help: 'tokens per calibration sequence (capped at the model context)' },
  { key: 'seed', flag: 'seed', type: 'int', default: 0, min: 0, help: 'seed for the calibration windows and the Hadamard signs' },
  { key: 'rotate', flag: 'rotate', type: 'string', default: 'none', choices: ['none', 'hadamard', 'learned'], help: 'rotate the residual stream, folded into the weights: hadamard (QuaRot-style), learned (SpinQuant: Cayley SGD from the Hadamard rotation on the quantized model\'s KL divergence)' },
  { key: 'rotateIters', flag: 'rotate-iters', type: 'int', default: 40, min: 0, max: 100000, help: '--rotate learned: Cayley SGD steps' },
  { key: 'rotateLr', flag: 'rotate-lr', type: 'number', default: 0.1, min: 0, max: 10, help: '--rotate learned: first step, as the Frobenius norm of the Cayley generator (decayed linearly)' },
  { key: 'rotateBatch', flag: 'rotate-batch', type: 'int', default: 2, min: 1, max: 4096, help: '--rotate learned: calibration windows per step' },
  { key: 'rotateHeads', flag: 'rotate-heads', type: 'boolean', default: true, help: 'with --rotate: also rotate every head\'s values (W_v rows, W_o columns)' },
  { key: 'percDamp', flag: 'damp', type: 'number', default: 0.01, min: 0, max: 10, help: 'GPTQ dampening, fraction of mean(diag H)' },
  { key: 'gptqBlock', flag: 'gptq-block', type: 'int', default: 128, min: 1, help: 'GPTQ lazy-update block width' },
  { key: 'actOrder', flag: 'act-order', type: 'boolean', default: false, help: 'GPTQ: columns by decreasing diag(H), static groups' },
  { key: 'gptqImportance', flag: 'gptq-importance', type: 'boolean', default: true, help: 'GPTQ: GGML codecs choose block scales weighted by diag(H)' },
  { key: 'gptqClip', flag: 'gptq-clip', type: 'boolean', default: true, help: 'GPTQ: clip-ratio search per group at its start, weighted by diag(H) (GPTQ\'s mse grid)' },
  { key: 'awqGrid', flag: 'awq-grid', type: 'int', default: 20, min: 1, max: 1000, help: 'AWQ: alpha grid points in [0, 1)' },
  { key: 'awqClip', flag: 'awq-clip', type: 'boolean', default: true, help: 'AWQ: clip-ratio search per block (not for q/k)' },
  { key: 'smooth', flag: 'smooth', type: 'number', default: 0, min: 0, max: 1, help: 'SmoothQuant migration strength alpha (0 = off), folded into the norms' },
  { key: 'shift', flag: 'shift', type: 'boolean', default: false, help: 'Outlier Suppression+: centre each norm output channel (shift folded into new norm / linear biases) and scale it (--smooth alpha, default 0.5); lowbit safetensors' },
  { key: 'hqqIters', flag: 'hqq-iters', type: 'int', default: 20, min: 1, help: 'HQQ: solver iterations' },
  { key: 'lorc', flag: 'lorc', type: 'int', default: 0, min: 0, help: 'LoRC: store a rank-R f16 factorization of each weight\'s quantization error (lowbit safetensors; applied at load)' },
  { key: 'easyquantOutliers', flag: 'easyquant-outliers', type: 'number', default: 0.01, min: 0, max: 0.25, help: 'EasyQuant: fraction of each row kept in f16 as outliers (largest |w - row mean|)' },
  { key: 'hqqP', flag: 'hqq-p', type: 'number', default: 0.7, min: 0.01, max: 2, help: 'HQQ: l_p norm of the error (p < 1 promotes sparse errors)' },
  { key: 'autoroundIters', flag: 'autoround-iters', type: 'int', default: 0, min: 0, max: 100000, help: 'AutoRound: signed-gradient iterations (0 = the default: 14 steps of the block objective, and of its per-linear start after GPTQ; 100 for the per-linear objective, within 0.2 % of the paper\'s 200)' },
  { key: 'autoroundLr', flag: 'autoround-lr', type: 'number', default: 0, min: 0, max: 0.5, help: 'AutoRound: first step of the rounding offsets and clip ratios, decayed linearly (0 = the default: 0.2 / iterations on the block objective, 1 / iterations on the per-linear one)' },
  { key: 'autoroundClip', flag: 'autoround-clip', type: 'boolean', default: true, help: 'AutoRound: learn a clip ratio per block (the codec keeps choosing its scales for the clipped block)' },
  { key: 'autoroundObjective', flag: 'autoround-objective', type: 'string', default: 'block', choices: ['block', 'linear'], help: 'AutoRound: minimize each transformer layer\'s output error (block: the paper\'s, learned through the layer\'s backward pass after the per-linear start) or each linear\'s own output error (linear)' },
  { key: 'autoroundBatch', flag: 'autoround-batch', type: 'int', default: 1, min: 1, max: 4096, help: 'AutoRound (block objective): calibration windows per signed-gradient step' },
  { key: 'autoroundBlockIters', flag: 'autoround-block-iters', type: 'int', default: 0, min: 0, max: 100000, help: 'AutoRound (block objective): signed-gradient steps of the block stage only (0 = --autoround-iters, or its default 14); the per-linear start keeps --autoround-iters' },
  { key: 'autoroundBlockLr', flag: 'autoround-block-lr', type: 'number', default: 0, min: 0, max: 0.5, help: 'AutoRound (block objective): first step of the block stage only, decayed linearly (0 = --autoround-lr, or its default 0.2 / steps)' },
  { key: 'autoroundBlockEval', flag: 'autoround-block-eval', type: 'int', default: 0, min: 0, max: 100000, help: 'AutoRound (block objective): every N steps judge the iterate on the evaluation windows (8 spread over the calibration set) and keep the best one (0 = off: the start, the last or, with --autoround-batch 2+, the best minibatch iterate)' },
  { key: 'autoroundHeadIters', flag: 'autoround-head-iters', type: 'int', default: 0, min: 0, max: 100000, help: 'AutoRound (block objective): after its per-linear start, learn the output head\'s rounding on the KL divergence of the quantized model\'s logits from the float model\'s, this many signed-gradient steps (--autoround-batch windows per step, the iterate judged every tenth of the steps; 0 = off)' },
  { key: 'autoroundHeadLr', flag: 'autoround-head-lr', type: 'number', default: 0, min: 0, max: 0.5, help: 'AutoRound: first step of the output head\'s rounding offsets on the logits\' KL divergence, decayed linearly (0 = 0.2 / --autoround-head-iters)' },
  { key: 'autoroundEmbedding', flag: 'autoround-embedding', type: 'boolean', default: false, help: 'AutoRound (block objective): learn the token embedding\'s rounding in layer 0\'s block stage, through the layer\'s input gradient (untied embeddings; rows of tokens absent from the calibration keep theirs)' },
  { key: 'embeddingFisher', flag: 'embedding-fisher', type: 'int', default: 0, min: 0, max: 64, help: 'calibrated methods: round the token embedding with its algorithms (GPTQ, AutoRound, ...) on H = the Fisher of the float model\'s next-token distributions at its rows, from N sampled next tokens per position and window (a forward and backward of the float model each; 0 = off: round to nearest)' },
  { key: 'autoroundBlockFisher', flag: 'autoround-block-fisher', type: 'int', default: 0, min: 0, max: 64, help: 'AutoRound (block objective): measure each layer\'s output error d by d^T M d, M the float model\'s Fisher of its next-token distributions at that layer\'s output (normalized to trace dim, plus 0.1 I), from N sampled next tokens per position and window (0 = off: the squared error d^T d)' },
  { key: 'autoroundE2eIters', flag: 'autoround-e2e-iters', type: 'int', default: 0, min: 0, max: 100000, help: 'AutoRound (block objective): after the layers and the head, learn every AutoRound tensor\'s rounding at once on the KL divergence of the whole quantized model\'s next-token distributions from the float model\'s on the calibration windows, this many signed-gradient steps (the whole model\'s backward pass; the iterate judged every tenth of the steps, the best kept; 0 = off)' },
  { key: 'autoroundE2eLr', flag: 'autoround-e2e-lr', type: 'number', default: 0, min: 0, max: 0.5, help: 'AutoRound: first step of the end-to-end stage\'s rounding offsets, decayed linearly (0 = 0.2 / --autoround-e2e-iters)' },
  { key: 'autoroundE2eBatch', flag: 'autoround-e2e-batch', type: 'int', default: 4, min: 1, max: 4096, help: 'AutoRound: calibration windows per step of the end-to-end stage' },
  { key: 'autoroundE2eFlips', flag: 'autoround-e2e-flips', type: 'number', default: 0, min: 0, max: 1, help: 'AutoRound end to end: instead of signed-gradient steps, each step flips at most this fraction of the learned elements, those whose flip the gradient predicts to lower the KL divergence most, and keeps them only when the loss on the evaluation windows falls (else undone and the fraction halved; 0 = signed-gradient steps)' },
  { key: 'omniquantIters', flag: 'omniquant-iters', type: 'int', default: 40, min: 0, max: 100000, help: 'OmniQuant: Adam steps per layer on the block output error (learned clip ratios and equivalent-transform scales)' },
  { key: 'omniquantLr', flag: 'omniquant-lr', type: 'number', default: 0, min: 0, max: 1, help: 'OmniQuant: first Adam step of the log-scales and clip ratios, decayed linearly (0 = 0.01)' },
  { key: 'omniquantBatch', flag: 'omniquant-batch', type: 'int', default: 4, min: 1, max: 4096, help: 'OmniQuant: calibration windows per step' },
  { key: 'omniquantLet', flag: 'omniquant-let', type: 'boolean', default: true, help: 'OmniQuant: learn the equivalent transforms (scales folded into the norms, v/o and up/down); false: clipping only' },
] as const satisfies readonly PtqOptionSpec[]);

export const DEFAULT_PTQ: PtqOptions = Object.freeze(Object.fromEntries(PTQ_OPTIONS.map((o) => [o.key, o.default])) as unknown as PtqOptions);

/** Validate a partial options object (from JSON or flags) and fill defaults. */
export function ptqOptions(o: unknown = {}): PtqOptions {
  if (!o || typeof o !== 'object' || Array.isArray(o)) fail('ptq options must be an object');
  const r = o as Record<string, unknown>;
  const known = new Set(PTQ_OPTIONS.map((s) => s.key as string));
  for (const k of Object.keys(r)) if (!known.has(k)) fail(`ptq: unknown option '${k}' (valid: ${[...known].join(', ')})`);
  const out: Record<string, unknown> = {};
  for (const s of PTQ_OPTIONS) {
    const v = r[s.key] ?? s.default;
    if (s.type === 'boolean' ? typeof v !== 'boolean' : s.type === 'string' ? typeof v !== 'string' : typeof v !== 'number' || !Number.isFinite(v))
      fail(`ptq: ${s.key} must be a ${s.type}, got ${JSON.stringify(v)}`);
    if (s.type === 'int' && !Number.isSafeInteger(v)) fail(`ptq: ${s.key} must be an integer, got ${v}`);
    if (typeof v === 'number' && ((s.min !== undefined && v < s.min) || (s.max !== undefined && v > s.max))) fail(`ptq: ${s.key} = ${v} is outside [${s.min ?? '-inf'}, ${s.max ?? 'inf'}]`);
    if (s.choices && !s.choices.includes(v as string)) fail(`ptq: ${s.key} must be one of ${s.choices.join(', ')}`);
    out[s.key] = v;
  }
  return Object.freeze(out) as unknown as PtqOptions;
}
