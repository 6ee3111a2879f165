/**
 * llama.cpp's file types ("ftypes": Q4_K_M, Q2_K_S, ...) and the per-tensor type each one chooses.
 * The rules are llama.cpp's (src/llama-quant.cpp, v0.5.0): which tensors are quantized at all, the
 * mixing rules that give attn_v / ffn_down / output / token_embd more bits, and the fallbacks when a
 * row is not a multiple of the block size. Expressed here as data and small functions.
 */
import { fail } from '../errors.js';
import { ggmlTypeTraits } from '../quant/ggml/registry.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';

/** ftype name -> [llama_ftype id (general.file_type), default tensor type] */
export const LLAMA_FTYPES: Readonly<Record<string, readonly [number, string]>> = Object.freeze({
  F32: [0, 'F32'],
  F16: [1, 'F16'],
  Q4_0: [2, 'Q4_0'],
  Q4_1: [3, 'Q4_1'],
  Q8_0: [7, 'Q8_0'],
  Q5_0: [8, 'Q5_0'],
  Q5_1: [9, 'Q5_1'],
  Q2_K: [10, 'Q2_K'],
  Q3_K_S: [11, 'Q3_K'],
  Q3_K_M: [12, 'Q3_K'],
  Q3_K_L: [13, 'Q3_K'],
  Q4_K_S: [14, 'Q4_K'],
  Q4_K_M: [15, 'Q4_K'],
  Q5_K_S: [16, 'Q5_K'],
  Q5_K_M: [17, 'Q5_K'],
  Q6_K: [18, 'Q6_K'],
  IQ2_XXS: [19, 'IQ2_XXS'],
  IQ2_XS: [20, 'IQ2_XS'],
  Q2_K_S: [21, 'Q2_K'],
  IQ3_XS: [22, 'IQ3_S'],
  IQ3_XXS: [23, 'IQ3_XXS'],
  IQ1_S: [24, 'IQ1_S'],
  IQ4_NL: [25, 'IQ4_NL'],
  IQ3_S: [26, 'IQ3_S'],
  IQ3_M: [27, 'IQ3_S'],
  IQ2_S: [28, 'IQ2_XS'],
  IQ2_M: [29, 'IQ2_S'],
  IQ4_XS: [30, 'IQ4_XS'],
  IQ1_M: [31, 'IQ1_M'],
  BF16: [32, 'BF16'],
  TQ1_0: [36, 'TQ1_0'],
  TQ2_0: [37, 'TQ2_0'],
  MXFP4_MOE: [38, 'MXFP4'],
  NVFP4: [39, 'NVFP4'],
  Q1_0: [40, 'Q1_0'],
  Q2_0: [41, 'Q2_0'],
});

export function llamaFtype(name: string): { name: string; id: number; defaultType: GgmlTypeInfo } {
  const key = Object.keys(LLAMA_FTYPES).find((k) => k.toLowerCase() === name.toLowerCase());
  if (!key) fail(`unknown llama.cpp file type '${name}' (valid: ${Object.keys(LLAMA_FTYPES).join(', ')})`);
  const [id, t] = LLAMA_FTYPES[key];
  return { name: key, id, defaultType: ggmlTypeByName(t) as GgmlTypeInfo };
}

/** llama.cpp's tensor categories: what its mixing rules tell apart */
export type LlamaCategory = 'output' | 'token_embd' | 'attn_qkv' | 'attn_kv_b' | 'attn_v' | 'attn_k' | 'attn_q' | 'attn_output' | 'ffn_up' | 'ffn_gate' | 'ffn_down' | 'other';
type Category = LlamaCategory;

/**
 * The category of a layer linear's role in the model-family table (model/family.ts's LinearRole; the
 * roles come in through PlanModel.roleOf, since algos sits below model): the category llama.cpp's
 * name matching gives that tensor (Phi-3's fused gate+up is stored as ffn_up; the router, never
 * quantized, matches ffn_gate). test/llama-types.test.ts checks both agree for every family's linears.
 */
export const ROLE_CATEGORY: Readonly<Record<string, Category>> = Object.freeze({
  q: 'attn_q', k: 'attn_k', v: 'attn_v', o: 'attn_output', qkv: 'attn_qkv',
  gate: 'ffn_gate', up: 'ffn_up', gateUp: 'ffn_up', down: 'ffn_down', router: 'ffn_gate', gateExps: 'ffn_gate', upExps: 'ffn_up', downExps: 'ffn_down',
});

/**
 * A tensor's category: from its family role when the family table describes it, otherwise by
 * llama.cpp's own name matching (the global tensors, architectures without a family row, tensors no
 * family lists such as DeepSeek's attn_kv_b or shared experts) -- the rule llama-quantize applies.
 */
export function llamaCategory(name: string, role?: string): Category {
  if (role !== undefined) return ROLE_CATEGORY[role] ?? fail(`internal: no llama.cpp category for the family role ${role} (${name})`);
  return categoryByName(name);
}

function categoryByName(name: string): Category {
  if (name === 'output.weight') return 'output';
  if (name === 'token_embd.weight' || name === 'per_layer_token_embd.weight') return 'token_embd';
  for (const c of ['attn_qkv', 'attn_kv_b', 'attn_v', 'attn_k', 'attn_q', 'attn_output'] as const) if (name.includes(`${c}.weight`)) return c;
  for (const c of ['ffn_up', 'ffn_gate', 'ffn_down'] as const) if (name.includes(c)) return c;
  return 'other';
}
const isAttnV = (c: Category) => c === 'attn_v' || c === 'attn_qkv' || c === 'attn_kv_b';

/** Tensors llama-quantize never quantizes (norms, 1-D tensors, small special tables). */
export function allowsQuantization(name: string, nDims: number, quantizeOutput = true): boolean {
  if (nDims < 2 || !name.endsWith('weight') || name.includes('_norm.weight')) return false;
  if (!quantizeOutput && name === 'output.weight') return false;
  const never = ['ffn_gate_inp.weight', 'ffn_gate_tid2eid.weight', 'altup', 'laurel', 'per_layer_model_proj', 'ssm_conv1d', 'shortconv.conv.weight',
    'indexer.k_proj.weight', 'indexer.q_proj.weight', 'time_mix_', 'attn_rel_b.weight', '.position_embd', 'sam.pos_embd', 'sam.neck.', 'sam.net_', '.rel_pos',
    '.patch_embd', '.patch_merger', 'a.rvq.codebook', 'mm.a.code_embd'];
  if (name === 'position_embd.weight' || name === 'token_types.weight') return false;
  return !never.some((s) => name.includes(s));
}

export interface PlanTensor {
  name: string;
  /** GGUF dimension order: ne[0] (row length) first */
  shape: readonly number[];
  /** current GGML type name */
  type: string;
}

export interface PlanModel {
  arch: string;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nExpert?: number;
  /** the family role of a layer linear (model/family.ts roleOfTensor), when the model's family has a row */
  roleOf?: (tensorName: string) => string | undefined;
}

export interface LlamaQuantParams {
  ftype: string;
  pure?: boolean;
  hasImatrix?: boolean;
  outputTensorType?: string;
  tokenEmbeddingType?: string;
  /** llama-quantize --leave-output-tensor */
  leaveOutputTensor?: boolean;
  /** --tensor-type overrides: first matching pattern wins */
  overrides?: readonly (readonly [RegExp, string])[];
}

export interface PlannedTensor {
  name: string;
  from: string;
  to: string;
  /** set when the chosen type did not fit the row length and a fallback was used */
  fallbackFrom?: string;
}

function fallback(type: string, ncols: number): [string, string | undefined] {
  const t = ggmlTypeByName(type) as GgmlTypeInfo;
  if (ncols % t.blockSize === 0) return [type, undefined];
  const map: Record<string, string> = {
    IQ1_S: 'IQ4_NL', IQ1_M: 'IQ4_NL', IQ2_XXS: 'IQ4_NL', IQ2_XS: 'IQ4_NL', IQ2_S: 'IQ4_NL', IQ3_XXS: 'IQ4_NL', IQ3_S: 'IQ4_NL', IQ4_XS: 'IQ4_NL',
    Q2_0: 'Q4_0', Q2_K: 'Q4_0', Q3_K: 'Q4_0', TQ1_0: 'Q4_0', TQ2_0: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0',
  };
  let next = map[type];
  if (!next) {
    if (t.blockSize > 32) fail(`no tensor type fallback is defined for ${type}`);
    next = type;
  }
  if (ncols % (ggmlTypeByName(next) as GgmlTypeInfo).blockSize !== 0) next = 'F16';
  return [next, type];
}

/**
 * The type llama-quantize gives each tensor. Counters (i_attention_wv, i_ffn_down, ...) advance in
 * file order exactly as in llama.cpp, so tensors must be given in file order.
 */
export function planLlamaTypes(tensors: readonly PlanTensor[], model: PlanModel, p: LlamaQuantParams): PlannedTensor[] {
  const ft = llamaFtype(p.ftype);
  const F = ft.name;
  const def = ft.defaultType.name;
  const nExpert = Math.max(1, model.nExpert ?? 0);
  const nGqa = model.nHeadKv > 0 ? model.nHead / model.nHeadKv : 1;
  const tied = !tensors.some((t) => t.name === 'output.weight');
  const category = (name: string) => llamaCategory(name, model.roleOf?.(name));
  const nAttnV = tensors.filter((t) => isAttnV(category(t.name))).length;
  const nLayer = model.nLayer;
  let iAttnV = 0;
  let iFfnDown = 0;
  const hasImatrix = p.hasImatrix ?? false;
  const moreBits = (i: number, n: number) => i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
  const layerOf = (counter: number, name: string) => {
    if (nExpert > 1) {
      const m = /^blk\.(\d+)\./.exec(name);
      if (!m) fail(`cannot determine the layer of tensor ${name}`);
      return Number(m[1]);
    }
    return counter;
  };
  const IQ12 = ['IQ2_XXS', 'IQ2_XS', 'IQ1_S', 'IQ2_S', 'IQ2_M', 'IQ1_M'];

  const mix = (type: string, t: PlanTensor, cat: Category): string => {
    if (cat === 'output' || (tied && cat === 'token_embd')) {
      if (p.outputTensorType) return p.outputTensorType;
      const bs = (ggmlTypeByName(type) as GgmlTypeInfo).blockSize;
      if (F === 'MXFP4_MOE' || model.arch === 'falcon' || t.shape[0] % bs !== 0) return 'Q8_0';
      if (['IQ2_XXS', 'IQ2_XS', 'IQ3_XXS', 'IQ1_S', 'IQ2_S', 'IQ2_M', 'IQ1_M'].includes(F)) return 'Q5_K';
      return type !== 'Q8_0' ? 'Q6_K' : type;
    }
    if (F === 'MXFP4_MOE') return (t.shape[2] ?? 1) > 1 ? 'MXFP4' : 'Q8_0';
    if (cat === 'token_embd') {
      if (p.tokenEmbeddingType) return p.tokenEmbeddingType;
      if (['IQ2_XXS', 'IQ2_XS', 'IQ1_S', 'IQ1_M'].includes(F)) return 'Q2_K';
      if (['IQ2_S', 'IQ2_M', 'IQ3_XXS'].includes(F)) return 'IQ3_S';
      if (['TQ1_0', 'TQ2_0', 'Q2_0'].includes(F)) return 'Q4_K';
      return type;
    }
    if (IQ12.includes(F)) {
      const sm = F === 'IQ2_S' || F === 'IQ2_M';
      if (isAttnV(cat)) {
        iAttnV++;
        return nGqa >= 4 || nExpert >= 4 ? 'Q4_K' : sm ? 'IQ3_S' : 'Q2_K';
      }
      if (nExpert === 8 && cat === 'attn_k') return 'Q4_K';
      if (cat === 'ffn_down') {
        const r = iFfnDown < Math.trunc(nLayer / 8) ? (sm ? 'IQ3_S' : 'Q2_K') : type;
        iFfnDown++;
        return r;
      }
      if (cat === 'attn_output') {
        if (nExpert === 8) return 'Q5_K';
        if (F === 'IQ1_S' || F === 'IQ1_M') return 'IQ2_XXS';
        if (sm) return 'IQ3_S';
      }
      return type;
    }
    if (isAttnV(cat)) {
      let r = type;
      if (F === 'Q2_K') r = nGqa >= 4 ? 'Q4_K' : 'Q3_K';
      else if (F === 'Q2_K_S' && nGqa >= 4) r = 'Q4_K';
      else if (F === 'IQ3_XXS') r = nGqa >= 4 ? 'Q4_K' : !hasImatrix ? 'IQ3_S' : 'IQ3_XXS';
      else if ((F === 'IQ3_XS' || F === 'IQ3_S') && nGqa >= 4) r = 'Q4_K';
      else if (F === 'IQ3_M') r = 'Q4_K';
      else if (F === 'Q3_K_M') r = iAttnV < 2 ? 'Q5_K' : 'Q4_K';
      else if (F === 'Q3_K_L') r = 'Q5_K';
      else if ((F === 'IQ4_NL' || F === 'IQ4_XS') && nGqa >= 4) r = 'Q5_K';
      else if ((F === 'Q4_K_M' || F === 'Q5_K_M') && moreBits(iAttnV, nAttnV)) r = 'Q6_K';
      else if (F === 'Q4_K_S' && iAttnV < 4) r = 'Q5_K';
      if (nExpert === 8) r = 'Q8_0';
      iAttnV++;
      return r;
    }
    if (cat === 'attn_k') {
      if (nExpert === 8) return 'Q8_0';
      if (F === 'IQ3_XS') return 'IQ3_XXS';
      if (F === 'IQ3_XXS') return 'IQ2_S';
      return type;
    }
    if (cat === 'attn_q') {
      if (F === 'IQ3_XS') return 'IQ3_XXS';
      if (F === 'IQ3_XXS') return 'IQ2_S';
      return type;
    }
    if (cat === 'ffn_down') {
      const i = layerOf(iFfnDown, t.name);
      const n = nLayer;
      let r = type;
      if (F === 'Q2_K') r = 'Q3_K';
      else if (F === 'Q2_K_S') {
        if (i < Math.trunc(n / 8)) r = 'Q4_K';
      } else if (F === 'IQ3_XXS' && !hasImatrix) r = i < Math.trunc(n / 8) ? 'Q4_K' : 'Q3_K';
      else if (F === 'Q3_K_M') r = i < Math.trunc(n / 16) ? 'Q5_K' : model.arch !== 'falcon' || moreBits(i, n) ? 'Q4_K' : 'Q3_K';
      else if (F === 'IQ3_M' && (i < Math.trunc(n / 8) || (nExpert === 8 && moreBits(i, n)))) r = 'Q4_K';
      else if (F === 'Q3_K_L') r = model.arch === 'falcon' ? 'Q4_K' : 'Q5_K';
      else if (F === 'Q4_K_M') {
        if (model.arch === 'falcon') r = i < Math.trunc(n / 16) ? 'Q6_K' : moreBits(i, n) ? 'Q5_K' : 'Q4_K';
        else if (moreBits(i, n)) r = 'Q6_K';
      } else if (i < Math.trunc(n / 8) && (F === 'IQ4_NL' || F === 'IQ4_XS') && !hasImatrix) r = 'Q5_K';
      else if (F === 'Q5_K_M' && moreBits(i, n)) r = 'Q6_K';
      else if (F === 'Q4_K_S' && model.arch !== 'falcon' && i < Math.trunc(n / 8)) r = 'Q5_K';
      else if ((F === 'Q4_0' || F === 'Q5_0') && hasImatrix && i < Math.trunc(n / 8)) r = F === 'Q4_0' ? 'Q4_1' : 'Q5_1';
      iFfnDown++;
      return r;
    }
    if (cat === 'attn_output') {
      if (model.arch !== 'falcon') {
        if (nExpert === 8) {
          return ['Q2_K', 'IQ3_XS', 'IQ3_XXS', 'Q3_K_S', 'Q3_K_M', 'IQ4_NL', 'Q4_K_S', 'Q4_K_M', 'IQ3_S', 'IQ3_M', 'IQ4_XS'].includes(F) ? 'Q5_K' : type;
        }
        if (F === 'Q2_K') return 'Q3_K';
        if (F === 'IQ3_XXS') return 'IQ3_S';
        if (F === 'Q3_K_M') return 'Q4_K';
        if (F === 'Q3_K_L') return 'Q5_K';
        if (F === 'IQ3_M') return 'Q4_K';
        return type;
      }
      return F === 'Q3_K_L' ? 'Q4_K' : type;
    }
    // (llama.cpp's separate attn_qkv rule is unreachable: attn_qkv is handled with attn_v above)
    if ((cat === 'ffn_gate' || cat === 'ffn_up') && F === 'IQ3_XS') {
      // counters for gate/up only matter for IQ3_XS
      const i = layerOf(cat === 'ffn_gate' ? gateI++ : upI++, t.name);
      if (i >= Math.trunc(nLayer / 8) && i < Math.trunc((7 * nLayer) / 8)) return 'IQ3_XXS';
      return type;
    }
    if (cat === 'ffn_gate') gateI++;
    if (cat === 'ffn_up') upI++;
    return type;
  };
  let gateI = 0;
  let upI = 0;

  const out: PlannedTensor[] = [];
  for (const t of tensors) {
    const cat = category(t.name);
    if (!allowsQuantization(t.name, t.shape.length, !p.leaveOutputTensor)) {
      out.push({ name: t.name, from: t.type, to: t.type });
      continue;
    }
    if (p.tokenEmbeddingType && cat === 'token_embd') {
      out.push({ name: t.name, from: t.type, to: p.tokenEmbeddingType });
      continue;
    }
    if (p.outputTensorType && cat === 'output') {
      out.push({ name: t.name, from: t.type, to: p.outputTensorType });
      continue;
    }
    let type = def;
    let fb: string | undefined;
    if (ggmlTypeTraits(def)!.quantized) {
      const manual = p.overrides?.find(([re]) => re.test(t.name));
      if (manual) type = manual[1];
      else if (!p.pure) type = mix(type, t, cat);
      [type, fb] = fallback(type, t.shape[0]);
    }
    out.push({ name: t.name, from: t.type, to: type, ...(fb ? { fallbackFrom: fb } : {}) });
  }
  return out;
}

/** Tensors for which llama-quantize insists on an importance matrix. */
export function requiresImatrix(name: string, type: string, ftype: string): boolean {
  if (name === 'token_embd.weight' || name === 'per_layer_token_embd.weight' || name === 'output.weight') return false;
  if (['IQ3_XXS', 'IQ2_XXS', 'IQ2_XS', 'IQ2_S', 'IQ1_M', 'IQ1_S'].includes(type)) return true;
  return type === 'Q2_K' && llamaFtype(ftype).name === 'Q2_K_S';
}
