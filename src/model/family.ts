/**
 * Model families: the one description of an architecture's weights that calibration, rotation, the
 * packed Hugging Face layouts, the converters and the runtime read. A family is data, one row per
 * architecture (llama.cpp's `general.architecture` values); adding an architecture means adding a row
 * here (and, where its forward pass differs, a branch in the runtime), never new wiring elsewhere.
 *
 * A decoder layer, as every family row describes it:
 *
 *   x += o( attention( q(n1), k(n1), v(n1) ) )        n1 = attn_norm(x): q, k, v share one input
 *   x += down( act(gate(n2)) * up(n2) )               n2 = ffn_norm(x):  gate, up share one input
 *
 * - `linears`: every per-layer linear with its role, its GGUF name (blk.L.<gguf>.weight), its Hugging
 *   Face name (model.layers.L.<hf>.weight) and the runtime stage whose output is its input;
 * - `inputGroups`: linears that read the same input (one Hessian, one equivalence-transform scale);
 *   `norm` names the RMSNorm producing it, when there is one (its gain folds into the group);
 * - `foldPairs`: a producer whose output rows are the consumer's input columns with nothing nonlinear
 *   between (v -> o through the attention average, up -> down through the elementwise product), so a
 *   per-channel scale can move from one to the other exactly; `heads`: the consumer's input channel
 *   (head h, i) is the producer's row (kv head of h, i);
 * - residual readers / writers: the linears that read the residual stream (rows rotate) and write it
 *   (columns rotate) -- derived from the groups below;
 * - `globals`: the tensors outside the layers, with their HF names.
 *
 * Everything is named in GGUF's convention; `hf` names are for the converters and the packed layouts.
 */
import { fail } from '../errors.js';

/**
 * What a linear computes in the layer. Fused tensors (Phi-3) and 3-D expert tensors (MoE) are roles of
 * their own: 'qkv' holds q, k, v rows; 'gateUp' holds gate then up rows; 'router' scores the experts;
 * 'gateExps' / 'upExps' / 'downExps' hold one gate / up / down matrix per expert (3-D GGUF tensors).
 */
export type LinearRole = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down' | 'qkv' | 'gateUp' | 'router' | 'gateExps' | 'upExps' | 'downExps';

/**
 * The runtime stage whose output feeds a linear (Llama.runStage's names):
 *   attnNorm: rmsnorm(x) before attention     ffnNorm: rmsnorm(x) before the MLP
 *   attention: the attention output (input of o)    ffn: act(gate) * up (input of down; per expert in MoE)
 */
export type LayerInput = 'attnNorm' | 'ffnNorm' | 'attention' | 'ffn';

export interface LinearSpec {
  readonly role: LinearRole;
  /** GGUF name inside a layer: the tensor is blk.L.<gguf>.weight */
  readonly gguf: string;
  /** Hugging Face name inside a layer: model.layers.L.<hf>.weight ({e}: the expert's index) */
  readonly hf: string;
  readonly input: LayerInput;
  /** rows stored per head in rotary pairs that HF orders differently ('heads': query heads, 'kvHeads') */
  readonly ropePermuted?: 'heads' | 'kvHeads';
  /** a fused tensor: the roles whose rows it stores, in order (rowsOf gives each part's row count) */
  readonly parts?: readonly LinearRole[];
  /** a 3-D tensor of one matrix per expert (each sees only the tokens routed to it) */
  readonly perExpert?: boolean;
}

export interface InputGroup {
  readonly input: LayerInput;
  /** the RMSNorm (GGUF name inside a layer, e.g. attn_norm) whose output is the input, if any */
  readonly norm?: string;
  /** linears reading this input, in the order the pipeline quantizes them */
  readonly linears: readonly LinearRole[];
}

export interface FoldPair {
  /** a role, or a part of a fused tensor (Phi-3's v inside attn_qkv, up inside ffn_up) */
  readonly producer: LinearRole;
  readonly consumer: LinearRole;
  /** 'rows': consumer column c = producer row c; 'heads': query heads sharing a kv head share the producer row */
  readonly channels: 'rows' | 'heads';
}

export interface NamedTensor {
  readonly gguf: string;
  readonly hf: string;
}

/** Sliding-window attention, as llama.cpp runs the family (the metadata may override the defaults). */
export interface SlidingWindowTraits {
  /** window when the metadata has no attention.sliding_window (0: none) */
  readonly window: number;
  /** every n-th layer is global (layer l slides when l % n < n - 1), when the metadata has no pattern */
  readonly pattern: number;
  /** RoPE base of the sliding layers when the metadata has no rope.freq_base_swa (default: the global base) */
  readonly ropeBaseSwa?: number;
  /** sliding layers ignore linear RoPE scaling (Gemma 3) */
  readonly swaRopeUnscaled?: boolean;
}

export interface ModelFamily {
  /** the family's name */
  readonly name: string;
  /** GGUF `general.architecture` values this row describes */
  readonly architectures: readonly string[];
  /** Hugging Face `architectures[0]` and `model_type` values */
  readonly hfArchitectures: readonly string[];
  readonly hfModelTypes: readonly string[];
  readonly ropeStyle: RopeStyle;
  readonly linears: readonly LinearSpec[];
  /** per-layer norms and biases with their HF names (GGUF name inside a layer, with its suffix) */
  readonly layerTensors: readonly NamedTensor[];
  readonly inputGroups: readonly InputGroup[];
  readonly foldPairs: readonly FoldPair[];
  /** tensors outside the layers (GGUF full names) */
  readonly globals: readonly NamedTensor[];
  // ---- the forward pass (llama.cpp's graph for the architecture) ----
  /** gate activation of the feed-forward block: SwiGLU (silu) or GeGLU (gelu, tanh form, as ggml) */
  readonly activation: 'silu' | 'gelu';
  /** token embeddings multiplied by sqrt(dim) (Gemma) */
  readonly embedScaleSqrtDim?: boolean;
  /** RMSNorm epsilon when the metadata has none */
  readonly normEps: number;
  /** RMSNorms of the attention and FFN outputs before each residual add (Gemma 2/3) */
  readonly postNorms?: boolean;
  /** soft-capping read from {arch}.attn_logit_softcapping / final_logit_softcapping */
  readonly softcaps?: { readonly attention: boolean; readonly final: boolean };
  /** Gemma's 27B models scale queries by 1/sqrt(dim/heads) instead of 1/sqrt(headDim): their layer count */
  readonly wideQueryScaleLayers?: number;
  readonly slidingWindow?: SlidingWindowTraits;
  /** mixture of experts: softmax router, top-k, the chosen weights renormalised to sum 1 or not */
  readonly moe?: { readonly normalizeTopK: boolean };
  // ---- Hugging Face checkpoints (convert_hf_to_gguf's conventions) ----
  /** norm gains stored as w in HF, used (and stored in GGUF) as 1 + w (Gemma) */
  readonly hfNormPlusOne?: boolean;
  /** lm_head.weight is dropped by the converter (the output is tied to the embeddings) */
  readonly hfDropLmHead?: boolean;
}

/** How RoPE pairs dimensions: 'normal' rotates (2i, 2i+1) (llama2.c, GGUF llama); 'neox' rotates (i, i + d/2). */
export type RopeStyle = 'normal' | 'neox';

/**
 * The one hyper-parameter type (every reader fills it: GGUF metadata, llama2.c headers, HF config.json).
 */
export interface ModelConfig {
  /** model width (embedding length) */
  dim: number;
  /** SwiGLU inner width */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  /** key/value heads (grouped-query attention when < nHeads) */
  nKvHeads: number;
  vocabSize: number;
  /** context length the model was trained for */
  seqLen: number;
  /** per-head width, normally dim / nHeads */
  headDim: number;
  /** RMSNorm epsilon */
  normEps: number;
  /** RoPE base frequency */
  ropeTheta: number;
  /** number of leading dimensions of each head that RoPE rotates (normally headDim) */
  ropeDim: number;
  ropeStyle: RopeStyle;
  // ---- family traits (absent = Llama 2 behaviour); see src/model/llama.ts llamaConfigFromGguf ----
  /** GGUF general.architecture the model came from (llama, qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3) */
  arch?: string;
  /** the row of FAMILIES the model runs as (mixtral: arch llama with experts) */
  family?: string;
  /** gate activation of the feed-forward block: SwiGLU (silu) or GeGLU (gelu, tanh form, as ggml) */
  activation?: 'silu' | 'gelu';
  /** query scale (default 1/sqrt(headDim)) */
  attnScale?: number;
  /** attention scores soft-capped to cap*tanh(s/cap) (Gemma 2) */
  attnSoftcap?: number;
  /** logits soft-capped to cap*tanh(z/cap) (Gemma 2/3) */
  finalSoftcap?: number;
  /** token embeddings multiplied by this (Gemma: sqrt(dim)) */
  embedScale?: number;
  /** sliding-window size of the layers flagged in swaLayers: position p attends to p-window+1 .. p */
  slidingWindow?: number;
  /** per layer: true when it uses sliding-window attention */
  swaLayers?: readonly boolean[];
  /** RoPE base of sliding-window layers (Gemma 3: 10000) */
  ropeThetaSwa?: number;
  /** linear RoPE scaling: positions are multiplied by this (1/factor) */
  ropeFreqScale?: number;
  /** YaRN RoPE scaling (llama.cpp's rope_yarn with ext_factor 1): the original context and the ramp's betas */
  ropeYarn?: { origCtx: number; betaFast: number; betaSlow: number };
  /** cos and sin of RoPE multiplied by this (YaRN's attention factor; rope.scaling.attn_factor) */
  ropeMscale?: number;
  /** the same for sliding-window layers (default ropeFreqScale) */
  ropeFreqScaleSwa?: number;
  /** mixture of experts: experts per layer, experts used per token, each expert's inner width */
  nExperts?: number;
  nExpertsUsed?: number;
  expertHiddenDim?: number;
  /** MoE: the top-k router weights renormalised to sum 1 (Mixtral, Qwen3-MoE) */
  expertWeightsNorm?: boolean;
}

const ATTN_LINEARS: readonly LinearSpec[] = [
  { role: 'q', gguf: 'attn_q', hf: 'self_attn.q_proj', input: 'attnNorm' },
  { role: 'k', gguf: 'attn_k', hf: 'self_attn.k_proj', input: 'attnNorm' },
  { role: 'v', gguf: 'attn_v', hf: 'self_attn.v_proj', input: 'attnNorm' },
  { role: 'o', gguf: 'attn_output', hf: 'self_attn.o_proj', input: 'attention' },
];
const MLP_LINEARS: readonly LinearSpec[] = [
  { role: 'gate', gguf: 'ffn_gate', hf: 'mlp.gate_proj', input: 'ffnNorm' },
  { role: 'up', gguf: 'ffn_up', hf: 'mlp.up_proj', input: 'ffnNorm' },
  { role: 'down', gguf: 'ffn_down', hf: 'mlp.down_proj', input: 'ffn' },
];
/** Meta's layout: q/k rows in adjacent rotary pairs, which HF's rotate_half orders per head differently */
const LLAMA_LINEARS: readonly LinearSpec[] = [
  { ...ATTN_LINEARS[0], ropePermuted: 'heads' },
  { ...ATTN_LINEARS[1], ropePermuted: 'kvHeads' },
  ATTN_LINEARS[2],
  ATTN_LINEARS[3],
  ...MLP_LINEARS,
];
const BIASES: readonly NamedTensor[] = [
  { gguf: 'attn_q.bias', hf: 'self_attn.q_proj.bias' },
  { gguf: 'attn_k.bias', hf: 'self_attn.k_proj.bias' },
  { gguf: 'attn_v.bias', hf: 'self_attn.v_proj.bias' },
  { gguf: 'attn_output.bias', hf: 'self_attn.o_proj.bias' },
];
const LLAMA_NORMS: readonly NamedTensor[] = [
  { gguf: 'attn_norm.weight', hf: 'input_layernorm.weight' },
  { gguf: 'ffn_norm.weight', hf: 'post_attention_layernorm.weight' },
];
const QK_NORMS: readonly NamedTensor[] = [
  { gguf: 'attn_q_norm.weight', hf: 'self_attn.q_norm.weight' },
  { gguf: 'attn_k_norm.weight', hf: 'self_attn.k_norm.weight' },
];
const DENSE_GROUPS: readonly InputGroup[] = [
  { input: 'attnNorm', norm: 'attn_norm', linears: ['q', 'k', 'v'] },
  { input: 'attention', linears: ['o'] },
  { input: 'ffnNorm', norm: 'ffn_norm', linears: ['gate', 'up'] },
  { input: 'ffn', linears: ['down'] },
];
const GLOBALS: readonly NamedTensor[] = [
  { gguf: 'token_embd.weight', hf: 'model.embed_tokens.weight' },
  { gguf: 'output_norm.weight', hf: 'model.norm.weight' },
  { gguf: 'output.weight', hf: 'lm_head.weight' },
];

/** LLaMA (Llama 2/3, and the families with its layout: Mistral). */
export const LLAMA: ModelFamily = Object.freeze({
  name: 'llama',
  architectures: ['llama', 'mistral'],
  hfArchitectures: ['LlamaForCausalLM', 'MistralForCausalLM'],
  hfModelTypes: ['llama', 'mistral'],
  ropeStyle: 'normal',
  linears: LLAMA_LINEARS,
  layerTensors: [...LLAMA_NORMS, ...BIASES],
  inputGroups: DENSE_GROUPS,
  foldPairs: [
    { producer: 'v', consumer: 'o', channels: 'heads' },
    { producer: 'up', consumer: 'down', channels: 'rows' },
  ],
  globals: GLOBALS,
  activation: 'silu',
  normEps: 1e-5,
} satisfies ModelFamily);

/** the mixture-of-experts FFN: a router and 3-D gate/up/down experts reading ffn_norm's output */
function moeLinears(router: string, gate: string, up: string, down: string): LinearSpec[] {
  return [
    { role: 'router', gguf: 'ffn_gate_inp', hf: router, input: 'ffnNorm' },
    { role: 'gateExps', gguf: 'ffn_gate_exps', hf: gate, input: 'ffnNorm', perExpert: true },
    { role: 'upExps', gguf: 'ffn_up_exps', hf: up, input: 'ffnNorm', perExpert: true },
    { role: 'downExps', gguf: 'ffn_down_exps', hf: down, input: 'ffn', perExpert: true },
  ];
}
const MOE_GROUPS: readonly InputGroup[] = [
  DENSE_GROUPS[0],
  DENSE_GROUPS[1],
  { input: 'ffnNorm', norm: 'ffn_norm', linears: ['router', 'gateExps', 'upExps'] },
  { input: 'ffn', linears: ['downExps'] },
];
const MOE_FOLDS: readonly FoldPair[] = [
  { producer: 'v', consumer: 'o', channels: 'heads' },
  { producer: 'upExps', consumer: 'downExps', channels: 'rows' },
];

/** Mixtral: LLaMA (GGUF arch llama) with top-2 softmax-routed experts, weights renormalised. */
export const MIXTRAL: ModelFamily = Object.freeze({
  ...LLAMA,
  name: 'mixtral',
  architectures: ['llama'],
  hfArchitectures: ['MixtralForCausalLM'],
  hfModelTypes: ['mixtral'],
  linears: [...LLAMA_LINEARS.slice(0, 4), ...moeLinears('block_sparse_moe.gate', 'block_sparse_moe.experts.{e}.w1', 'block_sparse_moe.experts.{e}.w3', 'block_sparse_moe.experts.{e}.w2')],
  inputGroups: MOE_GROUPS,
  foldPairs: MOE_FOLDS,
  moe: { normalizeTopK: true },
} satisfies ModelFamily);

/** Qwen2 / 2.5: LLaMA's layout with q/k/v biases and NeoX-style RoPE (no q/k row permutation). */
export const QWEN2: ModelFamily = Object.freeze({
  ...LLAMA,
  name: 'qwen2',
  architectures: ['qwen2'],
  hfArchitectures: ['Qwen2ForCausalLM'],
  hfModelTypes: ['qwen2'],
  ropeStyle: 'neox',
  linears: [...ATTN_LINEARS, ...MLP_LINEARS],
} satisfies ModelFamily);

/** Qwen3: Qwen2 with per-head RMSNorms of q and k (inside attention), no biases. */
export const QWEN3: ModelFamily = Object.freeze({
  ...QWEN2,
  name: 'qwen3',
  architectures: ['qwen3'],
  hfArchitectures: ['Qwen3ForCausalLM'],
  hfModelTypes: ['qwen3'],
  layerTensors: [...LLAMA_NORMS, ...BIASES, ...QK_NORMS],
} satisfies ModelFamily);

/** Qwen3-MoE: Qwen3's attention, top-k softmax-routed experts with the chosen weights renormalised (norm_topk_prob). */
export const QWEN3MOE: ModelFamily = Object.freeze({
  ...QWEN3,
  name: 'qwen3moe',
  architectures: ['qwen3moe'],
  hfArchitectures: ['Qwen3MoeForCausalLM'],
  hfModelTypes: ['qwen3_moe'],
  linears: [...ATTN_LINEARS, ...moeLinears('mlp.gate', 'mlp.experts.{e}.gate_proj', 'mlp.experts.{e}.up_proj', 'mlp.experts.{e}.down_proj')],
  inputGroups: MOE_GROUPS,
  foldPairs: MOE_FOLDS,
  moe: { normalizeTopK: true },
} satisfies ModelFamily);

/** Phi-3: q|k|v rows in one attn_qkv, gate|up rows in one ffn_up, NeoX RoPE. */
export const PHI3: ModelFamily = Object.freeze({
  ...LLAMA,
  name: 'phi3',
  architectures: ['phi3'],
  hfArchitectures: ['Phi3ForCausalLM'],
  hfModelTypes: ['phi3'],
  ropeStyle: 'neox',
  linears: [
    { role: 'qkv', gguf: 'attn_qkv', hf: 'self_attn.qkv_proj', input: 'attnNorm', parts: ['q', 'k', 'v'] },
    ATTN_LINEARS[3],
    { role: 'gateUp', gguf: 'ffn_up', hf: 'mlp.gate_up_proj', input: 'ffnNorm', parts: ['gate', 'up'] },
    MLP_LINEARS[2],
  ],
  layerTensors: LLAMA_NORMS,
  inputGroups: [
    { input: 'attnNorm', norm: 'attn_norm', linears: ['qkv'] },
    { input: 'attention', linears: ['o'] },
    { input: 'ffnNorm', norm: 'ffn_norm', linears: ['gateUp'] },
    { input: 'ffn', linears: ['down'] },
  ],
} satisfies ModelFamily);

const GEMMA_NORMS: readonly NamedTensor[] = [
  { gguf: 'attn_norm.weight', hf: 'input_layernorm.weight' },
  { gguf: 'post_attention_norm.weight', hf: 'post_attention_layernorm.weight' },
  { gguf: 'ffn_norm.weight', hf: 'pre_feedforward_layernorm.weight' },
  { gguf: 'post_ffw_norm.weight', hf: 'post_feedforward_layernorm.weight' },
];

/**
 * Gemma 2: GeGLU, embeddings x sqrt(dim), post-attention / post-FFN RMSNorms, attention and final logit
 * soft-capping, sliding window on even layers (window 4096), norm gains stored +1, tied output.
 */
export const GEMMA2: ModelFamily = Object.freeze({
  ...QWEN2,
  name: 'gemma2',
  architectures: ['gemma2'],
  hfArchitectures: ['Gemma2ForCausalLM'],
  hfModelTypes: ['gemma2'],
  layerTensors: [...GEMMA_NORMS, ...BIASES],
  activation: 'gelu',
  embedScaleSqrtDim: true,
  normEps: 1e-6,
  postNorms: true,
  softcaps: { attention: true, final: true },
  wideQueryScaleLayers: 46,
  slidingWindow: { window: 4096, pattern: 2 },
  hfNormPlusOne: true,
  hfDropLmHead: true,
} satisfies ModelFamily);

/** Gemma 3: Gemma 2 without attention soft-capping, with q/k norms, 5 sliding layers of 6 (local RoPE base 10000, unscaled). */
export const GEMMA3: ModelFamily = Object.freeze({
  ...GEMMA2,
  name: 'gemma3',
  architectures: ['gemma3'],
  hfArchitectures: ['Gemma3ForCausalLM'],
  hfModelTypes: ['gemma3', 'gemma3_text'],
  layerTensors: [...GEMMA_NORMS, ...BIASES, ...QK_NORMS],
  softcaps: { attention: false, final: true },
  wideQueryScaleLayers: 62,
  slidingWindow: { window: 0, pattern: 6, ropeBaseSwa: 10000, swaRopeUnscaled: true },
  hfDropLmHead: false,
} satisfies ModelFamily);

/**
 * Every family lowbit knows, one row each: the runtime (model/llama.ts), calibration, rotation, the
 * packed layouts and the converters read these rows.
 */
export const FAMILIES: readonly ModelFamily[] = Object.freeze([LLAMA, MIXTRAL, QWEN2, QWEN3, QWEN3MOE, PHI3, GEMMA2, GEMMA3]);

/** The GGUF architectures lowbit runs. */
export const KNOWN_ARCHITECTURES: readonly string[] = Object.freeze([...new Set(FAMILIES.flatMap((x) => x.architectures))]);

/**
 * The family of a GGUF architecture name (`moe`: the model has expert tensors -- Mixtral is GGUF arch
 * llama with experts), or a clear error naming the known architectures.
 */
export function familyOf(architecture: string, moe?: boolean): ModelFamily {
  const rows = FAMILIES.filter((x) => x.architectures.includes(architecture));
  if (!rows.length) fail(`architecture '${architecture}' is not supported (known: ${KNOWN_ARCHITECTURES.join(', ')}); lowbit quantize with a llama.cpp recipe (no forward pass) still works`);
  return (moe === undefined ? rows[0] : rows.find((x) => (x.moe !== undefined) === moe)) ?? rows[0];
}

/** The family of a Hugging Face config.json (model_type or architectures[0]), or a clear error. */
export function familyOfHfConfig(config: Record<string, unknown>): ModelFamily {
  const mt = config.model_type;
  const archs = Array.isArray(config.architectures) ? config.architectures : [];
  const f = FAMILIES.find((x) => (typeof mt === 'string' && x.hfModelTypes.includes(mt)) || archs.some((a) => x.hfArchitectures.includes(a as string)));
  if (f) return f;
  if (mt === undefined && !archs.length) return LLAMA; // a bare config: the llama layout
  fail(`config.json: model_type '${String(mt ?? archs[0])}' is not supported (${FAMILIES.flatMap((x) => x.hfModelTypes).join(', ')})`);
}

/** The spec of a role in a family. */
export function linearOf(f: ModelFamily, role: LinearRole): LinearSpec {
  const s = f.linears.find((x) => x.role === role);
  if (!s) fail(`${f.name} has no ${role} linear`);
  return s;
}

/** GGUF name of a layer's linear: blk.L.attn_q.weight */
export function linearName(f: ModelFamily, layer: number, role: LinearRole): string {
  return `blk.${layer}.${linearOf(f, role).gguf}.weight`;
}

/** The layer and role of a GGUF tensor name, when it is one of the family's linears. */
export function roleOfTensor(f: ModelFamily, name: string): { layer: number; spec: LinearSpec } | undefined {
  const m = /^blk\.(\d+)\.(.+)\.weight$/.exec(name);
  if (!m) return undefined;
  const spec = f.linears.find((s) => s.gguf === m[2]);
  return spec ? { layer: Number(m[1]), spec } : undefined;
}

/** Linears reading the residual stream (their input is a norm of it) and writing it (o, down). */
export function residualReaders(f: ModelFamily): LinearRole[] {
  return f.inputGroups.filter((g) => g.norm).flatMap((g) => g.linears);
}
export function residualWriters(f: ModelFamily): LinearRole[] {
  const readers = new Set(residualReaders(f));
  return f.linears.map((s) => s.role).filter((r) => !readers.has(r));
}

/** The spec of a role and where its rows are: the role's own tensor, or a row range of the fused tensor storing it. */
export function storageOf(f: ModelFamily, role: LinearRole, c: Pick<ModelConfig, 'nHeads' | 'nKvHeads' | 'headDim' | 'hiddenDim'>): { spec: LinearSpec; r0: number; rows?: number } {
  const own = f.linears.find((x) => x.role === role);
  if (own) return { spec: own, r0: 0 };
  for (const spec of f.linears) {
    const i = spec.parts?.indexOf(role) ?? -1;
    if (i < 0) continue;
    const r0 = spec.parts!.slice(0, i).reduce((a, r) => a + partRows(r, c), 0);
    return { spec, r0, rows: partRows(role, c) };
  }
  fail(`${f.name} has no ${role} linear`);
}

/** rows of a part of a fused tensor: q = heads x headDim, k and v = kv heads x headDim, gate and up = hiddenDim */
export function partRows(role: LinearRole, c: Pick<ModelConfig, 'nHeads' | 'nKvHeads' | 'headDim' | 'hiddenDim'>): number {
  if (role === 'q') return c.nHeads * c.headDim;
  if (role === 'k' || role === 'v') return c.nKvHeads * c.headDim;
  if (role === 'gate' || role === 'up') return c.hiddenDim;
  fail(`internal: ${role} is not a part of a fused tensor`);
}

/** the regular expression of a per-layer HF name ({e} = an expert index) after model.layers.L. */
const hfPattern = (hf: string) => new RegExp(`^${hf.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace('{e}', '(\\d+|\\{e\\})')}\\.weight$`);

/** GGUF <-> HF tensor names of a family (per-layer linears, norms, biases, and the globals); an expert's HF name has {e} for its index. */
export function hfNameOf(f: ModelFamily, gguf: string): string | undefined {
  const g = f.globals.find((x) => x.gguf === gguf);
  if (g) return g.hf;
  const m = /^blk\.(\d+)\.(.+)$/.exec(gguf);
  if (!m) return undefined;
  const lin = f.linears.find((s) => `${s.gguf}.weight` === m[2]);
  if (lin) return `model.layers.${m[1]}.${lin.hf}.weight`;
  const t = f.layerTensors.find((x) => x.gguf === m[2]);
  return t ? `model.layers.${m[1]}.${t.hf}` : undefined;
}
export function ggufNameOf(f: ModelFamily, hf: string): string | undefined {
  return hfTensorOf(f, hf)?.gguf;
}

/** The GGUF tensor of an HF name, with the expert index when it is one expert's matrix of a 3-D tensor. */
export function hfTensorOf(f: ModelFamily, hf: string): { gguf: string; expert?: number; spec?: LinearSpec } | undefined {
  const g = f.globals.find((x) => x.hf === hf);
  if (g) return { gguf: g.gguf };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return undefined;
  for (const spec of f.linears) {
    if (!spec.perExpert) {
      if (`${spec.hf}.weight` === m[2]) return { gguf: `blk.${m[1]}.${spec.gguf}.weight`, spec };
      continue;
    }
    const e = hfPattern(spec.hf).exec(m[2]);
    if (e) return { gguf: `blk.${m[1]}.${spec.gguf}.weight`, expert: e[1] === '{e}' ? undefined : Number(e[1]), spec };
  }
  const t = f.layerTensors.find((x) => x.hf === m[2]);
  return t ? { gguf: `blk.${m[1]}.${t.gguf}` } : undefined;
}
