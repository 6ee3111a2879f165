/**
 * llama-quantize's model edits, as views over an open model (nothing is copied):
 *  - `--prune-layers L0,L1,...`: drop the tensors of those blocks and renumber the rest (blocks below the
 *    first pruned one keep their number, the others close up in layer order), `<arch>.block_count` set to
 *    the number of blocks kept; the importance matrix is looked up under the original names;
 *  - `--override-kv KEY=TYPE:VALUE` (int, float, bool, str): metadata written into the output as
 *    llama-quantize writes it (int as u32 of |value|, float as f32);
 *  - `--tensor-type PATTERN=TYPE`: parsed as llama-quantize parses it (the pattern is lowercased, the type
 *    is a GGML type name in any case); patterns are regular expressions searched in the tensor name, the
 *    first matching one wins. They travel in the recipe as rules { match, scheme }.
 */
import { fail } from '../errors.js';
import { gguf, type GgufValue } from '../io/gguf.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import type { Imatrix, ImatrixEntry } from '../algos/imatrix.js';
import { defineRecipe, type Recipe } from '../algos/recipe.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import { ggmlTypeByName, isGgmlFloat } from '../quant/ggml/types.js';

// ---------------------------------------------------------------- --tensor-type

export interface TensorTypeOverride {
  /** regular expression (lowercased, as llama-quantize stores it) */
  readonly pattern: string;
  /** GGML type name, upper case */
  readonly type: string;
}

/** `PATTERN=TYPE` as llama-quantize's parse_tensor_type reads it; a clear error for every malformed form. */
export function parseTensorTypeOverride(arg: string, where = '--tensor-type'): TensorTypeOverride {
  const eq = arg.indexOf('=');
  if (eq < 0) fail(`${where} '${arg}': expected PATTERN=TYPE (e.g. attn_v=q8_0)`);
  if (eq === 0) fail(`${where} '${arg}': missing tensor name pattern before '='`);
  const typeName = arg.slice(eq + 1);
  if (!typeName) fail(`${where} '${arg}': missing quantization type after '='`);
  const pattern = arg.slice(0, eq).toLowerCase();
  try {
    new RegExp(pattern);
  } catch (e) {
    fail(`${where} '${arg}': '${pattern}' is not a valid regular expression (${(e as Error).message})`);
  }
  const t = ggmlTypeByName(typeName);
  const writable = t && (isGgmlFloat(t) || ggmlCodec(t)?.quantize);
  if (!t || !writable) fail(`${where} '${arg}': unknown or unwritable GGML type '${typeName}'`);
  return { pattern, type: t.name };
}

/**
 * The recipe with per-tensor overrides in front of its own rules (they win: first match), as rules
 * { match: PATTERN, scheme: TYPE } -- so a saved recipe file carries them.
 */
export function recipeWithOverrides(recipe: Recipe, overrides: readonly TensorTypeOverride[]): Recipe {
  if (!overrides.length) return recipe;
  if (!recipe.llama) fail('--tensor-type / --tensor-type-file set GGML types: use them with a llama.cpp file type (--type Q4_K_M ...) and a .gguf output');
  const rules = [...overrides.map((o) => ({ match: o.pattern, scheme: o.type })), ...recipe.rules];
  return defineRecipe({ ...JSON.parse(JSON.stringify(recipe)), rules });
}

/** The entries of a `--tensor-type-file`: PATTERN=TYPE tokens separated by whitespace (as llama-quantize reads it). */
export function parseTensorTypeFile(text: string, file: string): TensorTypeOverride[] {
  return text
    .split(/\s+/)
    .filter(Boolean)
    .map((tok) => parseTensorTypeOverride(tok, `--tensor-type-file ${file}:`));
}

/** Overrides whose pattern matches no tensor name (llama-quantize silently ignores them; lowbit warns). */
export function unmatchedOverrides(names: readonly string[], overrides: readonly TensorTypeOverride[]): TensorTypeOverride[] {
  return overrides.filter((o) => {
    const re = new RegExp(o.pattern);
    return !names.some((n) => re.test(n));
  });
}

// ---------------------------------------------------------------- --override-kv

export interface KvOverride {
  readonly key: string;
  readonly value: GgufValue;
}

/** KEY=TYPE:VALUE with TYPE int, float, bool or str, as llama.cpp's string_parse_kv_override. */
export function parseKvOverride(arg: string): KvOverride {
  const eq = arg.indexOf('=');
  if (eq <= 0 || eq >= 128) fail(`--override-kv '${arg}': expected KEY=TYPE:VALUE with a key of 1..127 characters (TYPE int, float, bool or str)`);
  const key = arg.slice(0, eq);
  const rest = arg.slice(eq + 1);
  const colon = rest.indexOf(':');
  const kind = colon < 0 ? rest : rest.slice(0, colon);
  const v = colon < 0 ? '' : rest.slice(colon + 1);
  switch (colon < 0 ? '' : kind) {
    case 'int': {
      if (!/^\s*[+-]?\d+/.test(v)) fail(`--override-kv '${arg}': '${v}' is not an integer`);
      const n = Math.abs(parseInt(v, 10));
      if (n > 0xffffffff) fail(`--override-kv '${arg}': ${v} does not fit the u32 llama-quantize writes`);
      return { key, value: gguf.u32(n) };
    }
    case 'float': {
      const x = Number.parseFloat(v);
      if (!Number.isFinite(x)) fail(`--override-kv '${arg}': '${v}' is not a finite number`);
      return { key, value: gguf.f32(x) };
    }
    case 'bool':
      if (v !== 'true' && v !== 'false') fail(`--override-kv '${arg}': a bool is true or false`);
      return { key, value: gguf.bool(v === 'true') };
    case 'str':
      if (v.length > 127) fail(`--override-kv '${arg}': a string value cannot exceed 127 characters`);
      return { key, value: gguf.str(v) };
    default:
      fail(`--override-kv '${arg}': unknown value type '${kind}' (int, float, bool or str)`);
  }
}

// ---------------------------------------------------------------- --prune-layers

/** `L0,L1,...` as llama-quantize's parse_layer_prune: non-negative integers, sorted and deduplicated. */
export function parsePruneLayers(arg: string): number[] {
  const ids = arg.split(',').map((s) => {
    if (!/^\s*\d+\s*$/.test(s)) fail(`--prune-layers: invalid layer id '${s}' (a comma-separated list of layer numbers)`);
    return Number(s);
  });
  return [...new Set(ids)].sort((a, b) => a - b);
}

export interface EditedModel {
  readonly model: ModelFile;
  /** output tensor name -> input tensor name (for the importance matrix), when layers were pruned */
  readonly originalName: ReadonlyMap<string, string>;
  /**
   * the input model's block count when layers were pruned: llama-quantize's ffn_down/gate/up mixing
   * counters use it (hparams.n_layer_all), not the pruned count (pass as planQuantization's mixLayers)
   */
  readonly mixLayers?: number;
}

const layerOf = (name: string) => {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
};

/** A view of `m` with layers pruned and metadata overridden (llama-quantize's order: prune, then overrides). */
export function editModel(m: ModelFile, opts: { pruneLayers?: readonly number[]; kvOverrides?: readonly KvOverride[] }): EditedModel {
  const prune = opts.pruneLayers ?? [];
  const kv = opts.kvOverrides ?? [];
  const originalName = new Map<string, string>();
  if (!prune.length && !kv.length) return { model: m, originalName };
  if (m.format !== 'gguf' || !m.gguf) fail('--prune-layers and --override-kv edit GGUF models (convert first: lowbit convert IN model.gguf)');
  const arch = String(m.gguf.metadata.get('general.architecture')?.value ?? 'llama');
  const meta = new Map<string, GgufValue>(m.gguf.metadata);
  let tensors: readonly ModelTensor[] = m.tensors;
  let mixLayers: number | undefined;
  if (prune.length) {
    const layers = [...new Set(m.tensors.map((t) => layerOf(t.name)).filter((l) => l >= 0))].sort((a, b) => a - b);
    const missing = prune.filter((l) => !layers.includes(l));
    if (missing.length) fail(`--prune-layers: the model has no layer ${missing.join(', ')} (layers 0..${layers.length ? layers[layers.length - 1] : -1})`);
    if (prune.length >= layers.length) fail(`--prune-layers: pruning all ${layers.length} layers leaves no model`);
    // remap_layer in layer order: below the first pruned block the numbers stay, after it they close up
    const mapped = new Map<number, number>();
    let next = 0;
    for (const l of layers) {
      if (prune.includes(l)) continue;
      if (l < prune[0]) {
        mapped.set(l, l);
        next = l + 1;
      } else mapped.set(l, next++);
    }
    const out: ModelTensor[] = [];
    for (const t of m.tensors) {
      const l = layerOf(t.name);
      if (l < 0) {
        out.push(t);
        continue;
      }
      const to = mapped.get(l);
      if (to === undefined) continue;
      const name = t.name.replace(/^blk\.\d+\./, `blk.${to}.`);
      originalName.set(name, t.name);
      out.push(name === t.name ? t : { ...t, name });
    }
    tensors = out;
    mixLayers = Number(m.gguf.metadata.get(`${arch}.block_count`)?.value ?? layers.length);
    meta.set(`${arch}.block_count`, gguf.u32(next));
  }
  for (const o of kv) meta.set(o.key, o.value);
  const by = new Map(tensors.map((t) => [t.name, t]));
  const model: ModelFile = {
    ...m,
    tensors,
    metadata: meta as ModelFile['metadata'],
    gguf: { ...m.gguf, metadata: meta, tensors: m.gguf.tensors },
    tensor(n: string) {
      const t = by.get(n);
      if (!t) fail(`${m.name}: no tensor named '${n}'`);
      return t;
    },
    read: (t, start, length) => m.read(t, start, length),
    ...(m.readInto ? { readInto: (t: ModelTensor, start: number, dest: Uint8Array) => m.readInto!(t, start, dest) } : {}),
    readFloat32: (t) => m.readFloat32(t),
  };
  return { model, originalName, ...(mixLayers !== undefined ? { mixLayers } : {}) };
}

/** The importance matrix under the pruned model's names (entries of pruned layers dropped). */
export function remapImatrix(im: Imatrix, originalName: ReadonlyMap<string, string>): Imatrix {
  if (!originalName.size) return im;
  const entries = new Map<string, ImatrixEntry>();
  for (const [name, e] of im.entries) if (layerOf(name) < 0) entries.set(name, e);
  for (const [to, from] of originalName) {
    const e = im.entries.get(from);
    if (e) entries.set(to, { ...e, name: to });
  }
  return { ...im, entries };
}
