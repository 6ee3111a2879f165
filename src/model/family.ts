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

/** What a linear computes in the layer (the same roles in every family). */
export type LinearRole = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

/**
 * The runtime stage whose output feeds a linear (Llama.runStage's names):
 *   attnNorm: rmsnorm(x) before attention     ffnNorm: rmsnorm(x) before the MLP
 *   attention: the attention output (input of o)    ffn: act(gate) * up (input of down)
 */
export type LayerInput = 'attnNorm' | 'ffnNorm' | 'attention' | 'ffn';

export interface LinearSpec {
  readonly role: LinearRole;
  /** GGUF name inside a layer: the tensor is blk.L.<gguf>.weight */
  readonly gguf: string;
  /** Hugging Face name inside a layer: model.layers.L.<hf>.weight */
  readonly hf: string;
  readonly input: LayerInput;
  /** rows stored per head in rotary pairs that HF orders differently ('heads': query heads, 'kvHeads') */
  readonly ropePermuted?: 'heads' | 'kvHeads';
}

export interface InputGroup {
  readonly input: LayerInput;
  /** the RMSNorm (GGUF name inside a layer, e.g. attn_norm) whose output is the input, if any */
  readonly norm?: string;
  /** linears reading this input, in the order the pipeline quantizes them */
  readonly linears: readonly LinearRole[];
}

export interface FoldPair {
  readonly producer: LinearRole;
  readonly consumer: LinearRole;
  /** 'rows': consumer column c = producer row c; 'heads': query heads sharing a kv head share the producer row */
  readonly channels: 'rows' | 'heads';
}

export interface NamedTensor {
  readonly gguf: string;
  readonly hf: string;
}

export interface ModelFamily {
  /** the family's name (its first GGUF architecture) */
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
  /** the same for sliding-window layers (default ropeFreqScale) */
  ropeFreqScaleSwa?: number;
  /** mixture of experts: experts per layer, experts used per token, each expert's inner width */
  nExperts?: number;
  nExpertsUsed?: number;
  expertHiddenDim?: number;
}

const LLAMA_LINEARS: readonly LinearSpec[] = [
  { role: 'q', gguf: 'attn_q', hf: 'self_attn.q_proj', input: 'attnNorm', ropePermuted: 'heads' },
  { role: 'k', gguf: 'attn_k', hf: 'self_attn.k_proj', input: 'attnNorm', ropePermuted: 'kvHeads' },
  { role: 'v', gguf: 'attn_v', hf: 'self_attn.v_proj', input: 'attnNorm' },
  { role: 'o', gguf: 'attn_output', hf: 'self_attn.o_proj', input: 'attention' },
  { role: 'gate', gguf: 'ffn_gate', hf: 'mlp.gate_proj', input: 'ffnNorm' },
  { role: 'up', gguf: 'ffn_up', hf: 'mlp.up_proj', input: 'ffnNorm' },
  { role: 'down', gguf: 'ffn_down', hf: 'mlp.down_proj', input: 'ffn' },
];

/** LLaMA (and the families with its layout: Mistral). */
export const LLAMA: ModelFamily = Object.freeze({
  name: 'llama',
  architectures: ['llama', 'mistral'],
  hfArchitectures: ['LlamaForCausalLM', 'MistralForCausalLM'],
  hfModelTypes: ['llama', 'mistral'],
  ropeStyle: 'normal',
  linears: LLAMA_LINEARS,
  layerTensors: [
    { gguf: 'attn_norm.weight', hf: 'input_layernorm.weight' },
    { gguf: 'ffn_norm.weight', hf: 'post_attention_layernorm.weight' },
    { gguf: 'attn_q.bias', hf: 'self_attn.q_proj.bias' },
    { gguf: 'attn_k.bias', hf: 'self_attn.k_proj.bias' },
    { gguf: 'attn_v.bias', hf: 'self_attn.v_proj.bias' },
    { gguf: 'attn_output.bias', hf: 'self_attn.o_proj.bias' },
  ],
  inputGroups: [
    { input: 'attnNorm', norm: 'attn_norm', linears: ['q', 'k', 'v'] },
    { input: 'attention', linears: ['o'] },
    { input: 'ffnNorm', norm: 'ffn_norm', linears: ['gate', 'up'] },
    { input: 'ffn', linears: ['down'] },
  ],
  foldPairs: [
    { producer: 'v', consumer: 'o', channels: 'heads' },
    { producer: 'up', consumer: 'down', channels: 'rows' },
  ],
  globals: [
    { gguf: 'token_embd.weight', hf: 'model.embed_tokens.weight' },
    { gguf: 'output_norm.weight', hf: 'model.norm.weight' },
    { gguf: 'output.weight', hf: 'lm_head.weight' },
  ],
} satisfies ModelFamily);

/** Qwen2: LLaMA's layout with q/k/v biases and NeoX-style RoPE. */
export const QWEN2: ModelFamily = Object.freeze({ ...LLAMA, name: 'qwen2', architectures: ['qwen2'], hfArchitectures: ['Qwen2ForCausalLM'], hfModelTypes: ['qwen2'], ropeStyle: 'neox' } satisfies ModelFamily);

/** Qwen3: LLaMA's layout with per-head RMSNorms of q and k (inside attention) and NeoX-style RoPE. */
export const QWEN3: ModelFamily = Object.freeze({
  ...LLAMA,
  name: 'qwen3',
  architectures: ['qwen3'],
  hfArchitectures: ['Qwen3ForCausalLM'],
  hfModelTypes: ['qwen3'],
  ropeStyle: 'neox',
  layerTensors: [...LLAMA.layerTensors, { gguf: 'attn_q_norm.weight', hf: 'self_attn.q_norm.weight' }, { gguf: 'attn_k_norm.weight', hf: 'self_attn.k_norm.weight' }],
} satisfies ModelFamily);

/**
 * Every family lowbit knows, one row each. The runtime runs more architectures (model/llama.ts: Phi-3's
 * fused linears, Gemma's post-norms, MoE experts); calibration, rotation and the packed layouts accept
 * the ones with a row here and name the others in a clear error.
 */
export const FAMILIES: readonly ModelFamily[] = Object.freeze([LLAMA, QWEN2, QWEN3]);

/** The family of a GGUF architecture name, or a clear error. */
export function familyOf(architecture: string): ModelFamily {
  const f = FAMILIES.find((x) => x.architectures.includes(architecture));
  if (!f) fail(`architecture '${architecture}' is not supported (${FAMILIES.flatMap((x) => x.architectures).join(', ')})`);
  return f;
}

/** The family of a Hugging Face config.json (model_type or architectures[0]), or a clear error. */
export function familyOfHfConfig(config: Record<string, unknown>): ModelFamily {
  const mt = config.model_type;
  const archs = Array.isArray(config.architectures) ? config.architectures : [];
  const f = FAMILIES.find((x) => (typeof mt === 'string' && x.hfModelTypes.includes(mt)) || (mt === undefined && archs.some((a) => x.hfArchitectures.includes(a as string))));
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

/** GGUF <-> HF tensor names of a family (per-layer linears, norms, biases, and the globals). */
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
  const g = f.globals.find((x) => x.hf === hf);
  if (g) return g.gguf;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return undefined;
  const lin = f.linears.find((s) => `${s.hf}.weight` === m[2]);
  if (lin) return `blk.${m[1]}.${lin.gguf}.weight`;
  const t = f.layerTensors.find((x) => x.hf === m[2]);
  return t ? `blk.${m[1]}.${t.gguf}` : undefined;
}
