/**
 * Writing a Hugging Face checkpoint with GPTQ or AWQ packed int4 linear layers
 * (`quantize(model, recipe, sink, { layout: 'gptq' | 'awq' })`, `lowbit quantize --layout gptq|awq`), for
 * every family of model/family.ts: HF names, fused tensors (Phi-3's qkv_proj / gate_up_proj) packed
 * whole, 3-D expert tensors split into one packed layer per expert, Gemma's norms stored as w - 1, the
 * family's config.json (io/hf-families.ts hfConfigFromGguf; llama: io/hf-llama.ts).
 *
 * The values are lowbit's own: each linear weight is quantized by the recipe's generic int4 scheme
 * (e.g. int4 --group 128 --asym = uint4_g128_asym) exactly as the native safetensors layout stores it,
 * then its codes, zero-points and f16 scales are repacked (src/io/packed-int4.ts), so both files
 * dequantize to the same floats. Tensors get HF names, q/k rows go back to HF's rotate-half order
 * (the inverse of convert_hf_to_gguf's permutation), embeddings / lm_head / norms stay float, and the
 * config.json object (hyper-parameters + quantization_config) is returned in the report.
 * One tensor is in memory at a time.
 */
import { fail } from '../errors.js';
import { sqnrDb } from '../eval/metrics.js';
import { llama2cHparams } from '../io/convert.js';
import { plainValue } from '../io/gguf.js';
import { hfConfigFromGguf, llama3RopeScaling } from '../io/hf-families.js';
import { FAMILIES, familyOf, hfNameOf, LLAMA, roleOfTensor, type ModelFamily } from '../model/family.js';
import { ggufToHfName, hfConfigFromHparams, hparamsFromGguf, ropePermuteHeads, toHfRows, type LlamaHparams } from '../io/hf-llama.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import {
  dequantizeInt4Linear,
  hfQuantizationConfig,
  int4LinearFromScheme,
  int4RowsToHf,
  int4SchemeProblem,
  int4ShapeProblem,
  LOWBIT_TOKENIZER_KEY,
  packedInt4Shapes,
  packInt4Linear,
  type Int4Linear,
  type PackedInt4Layout,
} from '../io/packed-int4.js';
import { SafetensorsWriter } from '../io/safetensors.js';
import type { ByteSink } from '../io/sink.js';
import { fromFloat32, isFloatKind, toFloat32 } from '../io/tensor-data.js';
import { ggmlCodec, ggmlTypeTraits } from '../quant/ggml/registry.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';
import { genericConfigOf } from '../quant/schemes/generic.js';
import { readFloats, type PackedPlanInfo, type QuantizeOptions, type QuantizePlan, type TensorPlan, type TensorReport } from './plan.js';

export interface PackedLayoutOptions {
  readonly layout: PackedInt4Layout;
  /** store linear layers whose shape cannot be packed (e.g. 172 outputs) in F16 instead of failing */
  readonly keepUnpackable?: boolean;
}


/** the linear layers inside blocks (the family's linears but MoE routers, which GPTQ/AWQ tools keep float): the only tensors packed */
const isLinear = (f: ModelFamily, name: string) => {
  const r = roleOfTensor(f, name);
  return r !== undefined && r.spec.role !== 'router';
};

/** The family of the model: GGUF general.architecture (with experts: Mixtral), llama for llama2.c. */
function familyOfModel(m: ModelFile): ModelFamily {
  const arch = m.gguf?.metadata.get('general.architecture')?.value;
  return arch === undefined ? LLAMA : familyOf(String(arch), m.tensors.some((t) => t.name.endsWith('.ffn_gate_inp.weight')));
}

/** experts of a 3-D tensor (ggml ne [in, out, experts]); 1 for 2-D */
const expertsOf = (p: { ne: readonly number[] }) => (p.ne.length === 3 ? p.ne[2] : 1);

const F16 = ggmlTypeByName('F16')!;

function hparamsOf(m: ModelFile): LlamaHparams {
  if (m.gguf) return hparamsFromGguf(m.gguf.metadata, m.tensors.find((t) => t.name === 'token_embd.weight')?.shape[0]);
  if (m.format === 'llama2c') return llama2cHparams(m);
  fail(`${m.name}: the GPTQ/AWQ layouts are written from a GGUF or llama2.c llama model (convert ${m.format} to GGUF first)`);
}

/** Turn a native safetensors plan into a GPTQ/AWQ one: check every packed layer, keep the rest float. */
export function planPackedLayout(m: ModelFile, plan: QuantizePlan, o: PackedLayoutOptions): QuantizePlan {
  const { layout } = o;
  if (layout !== 'gptq' && layout !== 'awq') fail(`unknown layout '${String(layout)}' (valid: lowbit, gptq, awq)`);
  if (plan.output !== 'safetensors' || plan.recipe.llama) fail(`the ${layout} layout is a safetensors checkpoint of int4 layers: write a .safetensors with an int4 scheme (--type int4 --group G [--asym])`);
  const family = familyOfModel(m);
  for (const t of m.tensors) {
    if (t.name === 'rope_freqs.weight') continue; // Llama 3's RoPE factors: config.json rope_scaling, not a tensor
    if (hfNameOf(family, t.name) === undefined) fail(`${m.name}: tensor '${t.name}' has no Hugging Face ${family.name} name; the ${layout} layout writes HF checkpoints`);
  }
  const hparams = hparamsOf(m);
  let groupSize: number | undefined;
  let symmetric: boolean | undefined;
  let groupFrom = '';
  const tensors: TensorPlan[] = [];
  const keepF16 = (p: TensorPlan, from: string): TensorPlan => ({ name: p.name, ne: p.ne, from: p.from, to: 'F16', ggml: F16, rule: p.rule, fallbackFrom: from });
  const unpackable = (p: TensorPlan, problem: string, from: string): TensorPlan => {
    if (o.keepUnpackable) return keepF16(p, from);
    fail(`${p.name} [${p.ne[1]}, ${p.ne[0]}] cannot be stored in the ${layout} layout: ${problem}; keep such layers in F16 with --keep-unpackable (or a recipe rule)`);
  };
  for (const p of plan.tensors) {
    if (p.name === 'rope_freqs.weight') continue; // written as config.json rope_scaling (writePacked)
    if (!p.scheme) {
      // the native plan keeps rows that do not fit the group in F16; the packed layouts say so
      if (p.fallbackFrom && isLinear(family, p.name)) {
        tensors.push(unpackable(p, `its ${p.ne[0]} input features are not a multiple of ${p.fallbackFrom}'s group size (choose a group size that divides ${p.ne[0]})`, p.fallbackFrom));
        continue;
      }
      tensors.push(p);
      continue;
    }
    if (!isLinear(family, p.name)) {
      // embeddings and lm_head are not GPTQ/AWQ linear layers: kept in F16, as those tools do
      tensors.push(keepF16(p, p.scheme.id));
      continue;
    }
    const problem = int4SchemeProblem(p.scheme);
    if (problem) fail(`${p.name}: ${problem}`);
    const c = genericConfigOf(p.scheme)!;
    const G = c.groupSize!;
    const shape = int4ShapeProblem(layout, p.ne[1], p.ne[0], G); // per expert for 3-D tensors
    if (shape) {
      tensors.push(unpackable(p, shape, p.scheme.id));
      continue;
    }
    const sym = !c.asymmetric;
    if (groupSize === undefined) [groupSize, symmetric, groupFrom] = [G, sym, p.name];
    else if (G !== groupSize || sym !== symmetric)
      fail(`the ${layout} layout has one group size and one sym flag per checkpoint: ${groupFrom} uses group ${groupSize}${symmetric ? ' sym' : ' asym'}, ${p.name} group ${G}${sym ? ' sym' : ' asym'}`);
    tensors.push(p);
  }
  if (groupSize === undefined) fail(`no linear layer of ${m.name} is quantized to int4 by recipe ${plan.recipe.name}: nothing to store in the ${layout} layout`);
  const tokenizer = m.gguf ? Object.fromEntries([...m.gguf.metadata].filter(([k]) => k.startsWith('tokenizer.')).map(([k, v]) => [k, plainValue(v)])) : undefined;
  const packed: PackedPlanInfo = {
    layout,
    family: family.name,
    hparams,
    groupSize,
    symmetric: symmetric!,
    tieEmbeddings: !m.tensors.some((t) => t.name === 'output.weight'),
    tokenizer: tokenizer && Object.keys(tokenizer).length ? tokenizer : undefined,
    // non-llama families: their config.json from the GGUF metadata (llama: from hparams, as before)
    config: family === LLAMA || !m.gguf ? undefined : hfConfigFromGguf(m.gguf.metadata, family, { vocabSize: hparams.vocabSize, tied: !m.tensors.some((t) => t.name === 'output.weight') }),
  };
  return { ...plan, tensors, packed };
}

const familyNamed = (name: string): ModelFamily => FAMILIES.find((f) => f.name === name) ?? fail(`internal: no family ${name}`);
/** HF module prefix of a GGUF tensor (expert e of a 3-D tensor: its own module) */
const hfPrefix = (f: ModelFamily, ggufName: string, expert?: number) => {
  const hf = ggufToHfName(ggufName, f).replace(/\.weight$/, '');
  return expert === undefined ? hf : hf.replace('{e}', String(expert));
};
/** the HF modules of a planned tensor: one, or one per expert */
const hfModules = (f: ModelFamily, p: TensorPlan): { prefix: string; expert: number }[] =>
  expertsOf(p) === 1 && !/\{e\}/.test(ggufToHfName(p.name, f)) ? [{ prefix: hfPrefix(f, p.name), expert: 0 }] : Array.from({ length: expertsOf(p) }, (_, e) => ({ prefix: hfPrefix(f, p.name, e), expert: e }));

/**
 * The config.json object: the family's hyper-parameters and quantization_config. Linear layers left in
 * float are named (GPTQ: modules_in_block_to_quantize lists the packed ones; AWQ: modules_to_not_convert).
 */
export function packedHfConfig(plan: QuantizePlan, ropeScaling?: Record<string, unknown>): Record<string, unknown> {
  const info = plan.packed;
  if (!info) fail('packedHfConfig: not a GPTQ/AWQ plan');
  const f = familyNamed(info.family);
  const linear = plan.tensors.filter((p) => isLinear(f, p.name));
  const packed = linear.filter((p) => p.scheme);
  const kept = linear.filter((p) => !p.scheme);
  const modules = (list: TensorPlan[]) => list.flatMap((p) => hfModules(f, p).map((x) => x.prefix));
  const perLayer = (list: TensorPlan[]) => {
    const sets = new Map<string, string[]>();
    for (let l = 0; l < info.hparams.nLayers; l++) sets.set(String(l), []);
    for (const p of list) sets.get(/^blk\.(\d+)\./.exec(p.name)![1])?.push(...modules([p]).map((x) => x.replace(/^model\.layers\.\d+\./, '')));
    const first = JSON.stringify([...sets.values()][0]);
    return [...sets.values()].every((s) => JSON.stringify(s) === first) ? [...sets.values()][0] : undefined;
  };
  let quantized: string[][] | undefined;
  let notConverted: string[] = [];
  if (kept.length) {
    if (info.layout === 'gptq') quantized = [perLayer(packed) ?? modules(packed)];
    else notConverted = perLayer(kept) ?? modules(kept);
  }
  return {
    ...(info.config ?? hfConfigFromHparams(info.hparams, 'float16')),
    ...(ropeScaling ? { rope_scaling: ropeScaling } : {}),
    tie_word_embeddings: info.tieEmbeddings,
    quantization_config: hfQuantizationConfig(info.layout, info.groupSize, info.symmetric, notConverted, quantized),
  };
}

/** Rows r0 .. r0 + n of an int4 layer (one expert of a 3-D tensor). */
function int4Rows(w: Int4Linear, r0: number, n: number): Int4Linear {
  if (r0 === 0 && n === w.outFeatures) return w;
  const ng = w.inFeatures / w.groupSize;
  return { ...w, outFeatures: n, q: w.q.subarray(r0 * w.inFeatures, (r0 + n) * w.inFeatures), zeros: w.zeros.subarray(r0 * ng, (r0 + n) * ng), scales: w.scales.subarray(r0 * ng, (r0 + n) * ng) };
}

/**
 * The writer of a Hugging Face GPTQ/AWQ checkpoint (a row of quantize.ts's writer table): every linear
 * quantized by its int4 scheme (or given by the calibrated algorithms: opts.ptq, opts.roundTensor),
 * repacked in the layout (3-D expert tensors: one packed module per expert); the rest float (Gemma's
 * norms as w - 1, the inverse of the converter's + 1). Returns the config.json object.
 */
export async function writePacked(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions, done: (r: TensorReport) => void): Promise<{ hfConfig: Record<string, unknown> }> {
  const info = plan.packed;
  if (!info) fail('writePacked: not a GPTQ/AWQ plan');
  const { layout, hparams } = info;
  const f = familyNamed(info.family);
  // Llama 3's RoPE factors: config.json's rope_scaling (rope type llama3), as Hugging Face reads them (checked before any byte is written)
  const freqs = m.tensors.find((t) => t.name === 'rope_freqs.weight');
  const headDim = hparams.headDim ?? hparams.dim / hparams.nHeads;
  const ropeScaling = freqs ? llama3RopeScaling(await readFloats(m, freqs), headDim, hparams.ropeTheta ?? 10000, `${m.name}: rope_freqs.weight`) : undefined;
  const specs = plan.tensors.flatMap((p) => {
    const shape = [...p.ne].reverse();
    if (p.scheme) {
      const G = genericConfigOf(p.scheme)!.groupSize!;
      return hfModules(f, p).flatMap(({ prefix }) => packedInt4Shapes(layout, p.ne[1], p.ne[0], G).map((s) => ({ name: `${prefix}.${s.suffix}`, dtype: s.dtype, shape: [...s.shape] })));
    }
    const dtype: string = isFloatKind(p.to) ? p.to : fail(`${p.name}: type ${p.to} cannot be stored in a ${layout} checkpoint`);
    const mods = hfModules(f, p);
    if (mods.length > 1 || expertsOf(p) > 1) return mods.map(({ prefix }) => ({ name: `${prefix}.weight`, dtype, shape: shape.slice(1) }));
    return [{ name: ggufToHfName(p.name, f), dtype, shape }];
  });
  const metadata: Record<string, string> = { format: 'pt', 'lowbit.recipe': JSON.stringify(plan.recipe), 'lowbit.layout': layout };
  if (info.tokenizer)
    metadata[LOWBIT_TOKENIZER_KEY] = JSON.stringify(info.tokenizer, (_k, v) => (typeof v === 'bigint' ? Number(v) : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v));
  const w = new SafetensorsWriter(sink, specs, metadata);
  await w.begin();
  for (const p of plan.tensors) {
    const t = m.tensor(p.name);
    let x = opts.ptq?.floats.get(p.name) ?? (await readFloats(m, t));
    const heads = ropePermuteHeads(p.name, hparams, f);
    const E = expertsOf(p);
    if (p.scheme) {
      for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) fail(`${p.name}: non-finite value at element ${i}`);
      const [K, N] = p.ne;
      // the scheme's packed bytes: from the calibrated algorithms (GPTQ, AWQ, HQQ) when they ran, else RTN
      const round = opts.ptq ? undefined : opts.roundTensor?.(p);
      const given = opts.ptq?.quantized.get(p.name)?.bytes ?? (round ? (await round(x)).bytes : undefined);
      const int4 = int4LinearFromScheme(p.scheme, given ?? p.scheme.quantizeRef(x, N * E, K), N * E, K);
      const dq = dequantizeInt4Linear(int4);
      let bytes = 0;
      for (let e = 0; e < E; e++) {
        const one = int4Rows(int4, e * N, N);
        for (const part of packInt4Linear(layout, heads !== undefined ? int4RowsToHf(one, heads) : one, p.name)) {
          await w.write(part.data);
          bytes += part.data.length;
        }
      }
      done({ name: p.name, shape: p.ne, type: `${layout}:${p.scheme.id}`, bytes, bitsPerWeight: (bytes * 8) / x.length, sqnrDb: sqnrDb(x, dq) });
    } else {
      const kind = p.to;
      if (f.hfNormPlusOne && p.name.endsWith('norm.weight')) x = x.map((v) => v - 1); // HF stores Gemma's gains as w (used as 1 + w)
      let bytes = fromFloat32(kind, x);
      const sq = ggmlTypeTraits(kind)?.exactF32 ? Infinity : sqnrDb(x, toFloat32(kind, bytes));
      if (heads !== undefined) bytes = toHfRows(bytes, p.ne.length === 2 ? p.ne[1] : p.ne[0], (p.ne.length === 2 ? p.ne[0] : 1) * bytes.length / x.length, heads);
      await w.write(bytes); // 3-D experts: expert 0's matrix, then 1's, ... as the per-expert specs above
      done({ name: p.name, shape: p.ne, type: kind, bytes: bytes.length, bitsPerWeight: (bytes.length * 8) / x.length, sqnrDb: sq, ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
    }
  }
  await w.end();
  return { hfConfig: packedHfConfig(plan, ropeScaling) };
}
