/**
 * llama-imatrix files in both forms, read and written:
 *  - the legacy `.dat` (layout in algos/imatrix.ts: per entry the mean x^2 times ncall, and ncall);
 *  - the GGUF form (general.type = imatrix; per weight `<weight>.in_sum2` F32 ne [n_in, n_mat] holding
 *    the raw sums of x^2 and `<weight>.counts` F32 ne [1, n_mat] holding the rows summed per matrix
 *    (n_mat = number of experts, 1 for a dense weight; ggml then stores ne [n_in] and [1]); keys imatrix.datasets (string array),
 *    imatrix.chunk_count (u32), imatrix.chunk_size (u32); tensors sorted by name, in_sum2 first).
 * The writers put keys and tensors in llama-imatrix's order, so a file read and written again is
 * byte-identical to the one llama-imatrix wrote.
 */
import { fail } from '../errors.js';
import { emptyImatrix, readImatrixDat, writeImatrixDat, type Imatrix } from '../algos/imatrix.js';
import { gguf, GgufType, metaNumber, readGguf, readGgufTensor, writeGguf, type GgufValue } from '../io/gguf.js';
import type { ByteSink } from '../io/sink.js';
import type { ByteSource } from '../io/source.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';

export type ImatrixFormat = 'gguf' | 'dat';

/** Read either form (sniffed by the GGUF magic); any inconsistency is one clear error. */
export async function readImatrix(src: ByteSource): Promise<Imatrix> {
  const head = await src.read(0, Math.min(4, src.size));
  if (head.length === 4 && head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46) return readImatrixGguf(src);
  if (src.size === 0) fail(`${src.name}: empty file, not an imatrix`);
  return readImatrixDat(await src.read(0, src.size), src.name);
}

async function readImatrixGguf(src: ByteSource): Promise<Imatrix> {
  const f = await readGguf(src);
  const type = f.metadata.get('general.type');
  if (type && type.value !== 'imatrix') fail(`${src.name}: a GGUF, but general.type is '${String(type.value)}', not imatrix (is this a model?)`);
  if (!type && f.metadata.has('general.architecture')) fail(`${src.name}: a GGUF model, not an imatrix`);
  const m = emptyImatrix(metaNumber(f.metadata, 'imatrix.chunk_size') ?? 0);
  m.chunkCount = metaNumber(f.metadata, 'imatrix.chunk_count') ?? 0;
  const ds = f.metadata.get('imatrix.datasets');
  if (ds) {
    if (ds.type !== GgufType.ARRAY || (ds.value as { itemType: number }).itemType !== GgufType.STRING) fail(`${src.name}: imatrix.datasets must be an array of strings`);
    m.datasets.push(...((ds.value as { values: string[] }).values ?? []));
  }
  const byName = new Map(f.tensors.map((t) => [t.name, t]));
  for (const t of f.tensors) {
    if (t.name.endsWith('.counts')) {
      const base = t.name.slice(0, -'.counts'.length);
      if (!byName.has(`${base}.in_sum2`)) fail(`${src.name}: ${t.name} has no matching ${base}.in_sum2`);
      continue;
    }
    if (!t.name.endsWith('.in_sum2')) fail(`${src.name}: unexpected tensor '${t.name}' (an imatrix holds only *.in_sum2 and *.counts)`);
    const name = t.name.slice(0, -'.in_sum2'.length);
    const c = byName.get(`${name}.counts`);
    if (!c) fail(`${src.name}: ${t.name} has no matching ${name}.counts`);
    if (t.type.name !== 'F32' || c.type.name !== 'F32') fail(`${src.name}: ${name}: imatrix tensors must be F32 (got ${t.type.name}, ${c.type.name})`);
    const nMat = t.ne.length > 1 ? t.ne.slice(1).reduce((a, b) => a * b, 1) : 1;
    if (c.nElements !== nMat || c.ne[0] !== 1) fail(`${src.name}: ${name}: counts has shape [${c.ne.join(', ')}] but in_sum2 [${t.ne.join(', ')}] needs [1, ${nMat}]`);
    if (t.nElements === 0) fail(`${src.name}: ${name}: in_sum2 is empty`);
    const sums = new Float32Array((await readGgufTensor(f, t)).slice().buffer);
    const counts = new Float32Array((await readGgufTensor(f, c)).slice().buffer);
    for (let j = 0; j < sums.length; j++) if (!(Number.isFinite(sums[j]) && sums[j] >= 0)) fail(`${src.name}: ${name}: in_sum2[${j}] = ${sums[j]} (sums of squares must be finite and >= 0)`);
    // llama.cpp rounds counts to integers (std::lround)
    const roundedCounts = Float64Array.from(counts, (x) => {
      if (!(Number.isFinite(x) && x >= 0)) fail(`${src.name}: ${name}: count ${x} is not a finite non-negative number`);
      return Math.sign(x) * Math.round(Math.abs(x));
    });
    m.entries.set(name, { name, sums: Float64Array.from(sums), counts: roundedCounts });
  }
  if (m.entries.size === 0) fail(`${src.name}: no imatrix entries (*.in_sum2 tensors)`);
  return m;
}

/** llama-imatrix's GGUF form. Sums and counts are stored as f32, as llama.cpp keeps them. */
export async function writeImatrixGguf(m: Imatrix, sink: ByteSink): Promise<void> {
  const f32 = ggmlTypeByName('F32') as GgmlTypeInfo;
  const meta: [string, GgufValue][] = [
    ['general.type', gguf.str('imatrix')],
    ['imatrix.datasets', gguf.strings(m.datasets)],
    ['imatrix.chunk_count', gguf.u32(m.chunkCount)],
    ['imatrix.chunk_size', gguf.u32(m.chunkSize)],
  ];
  const tensors = [...m.entries.keys()].sort(byteOrder).flatMap((name) => {
    const e = m.entries.get(name)!;
    const nMat = e.counts.length;
    const sums = Float32Array.from(e.sums);
    const counts = Float32Array.from(e.counts);
    // ggml writes ggml_n_dims dimensions: a trailing 1 (one matrix) is dropped
    const matrices = nMat > 1 ? [nMat] : [];
    return [
      { name: `${name}.in_sum2`, ne: [e.sums.length / nMat, ...matrices], type: f32, data: new Uint8Array(sums.buffer) },
      { name: `${name}.counts`, ne: [1, ...matrices], type: f32, data: new Uint8Array(counts.buffer) },
    ];
  });
  await writeGguf(sink, meta, tensors);
}

/** std::sort order of std::string (byte-wise), which is what llama-imatrix uses */
function byteOrder(a: string, b: string): number {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(ea.length, eb.length); i++) if (ea[i] !== eb[i]) return ea[i] - eb[i];
  return ea.length - eb.length;
}

/** Write either form. */
export async function writeImatrix(m: Imatrix, format: ImatrixFormat, sink: ByteSink): Promise<void> {
  if (format === 'dat') await sink.write(writeImatrixDat(m));
  else await writeImatrixGguf(m, sink);
}

export { writeImatrixDat };
