/**
 * llama-imatrix files in both forms: the legacy `.dat` (algos/imatrix.ts) and the GGUF form
 * (general.type = imatrix; tensors `<weight>.in_sum2` F32 [n_in, n_mat] and `<weight>.counts`
 * F32 [1, n_mat]; keys imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size).
 */
import { fail } from '../errors.js';
import { emptyImatrix, readImatrixDat, writeImatrixDat, type Imatrix } from '../algos/imatrix.js';
import { gguf, GgufType, metaNumber, readGguf, readGgufTensor, writeGguf, type GgufValue } from '../io/gguf.js';
import type { ByteSink } from '../io/sink.js';
import type { ByteSource } from '../io/source.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';

export async function readImatrix(src: ByteSource): Promise<Imatrix> {
  const head = await src.read(0, Math.min(4, src.size));
  if (head.length === 4 && head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46) {
    const f = await readGguf(src);
    const type = f.metadata.get('general.type');
    if (type && type.value !== 'imatrix') fail(`${src.name}: a GGUF, but general.type is '${String(type.value)}', not imatrix`);
    const m = emptyImatrix(metaNumber(f.metadata, 'imatrix.chunk_size') ?? 0);
    m.chunkCount = metaNumber(f.metadata, 'imatrix.chunk_count') ?? 0;
    const ds = f.metadata.get('imatrix.datasets');
    if (ds && ds.type === GgufType.ARRAY) m.datasets.push(...((ds.value as { values: string[] }).values ?? []));
    const byName = new Map(f.tensors.map((t) => [t.name, t]));
    for (const t of f.tensors) {
      if (!t.name.endsWith('.in_sum2')) continue;
      const name = t.name.slice(0, -'.in_sum2'.length);
      const c = byName.get(`${name}.counts`);
      if (!c) fail(`${src.name}: ${t.name} has no matching ${name}.counts`);
      if (t.type.name !== 'F32' || c.type.name !== 'F32') fail(`${src.name}: imatrix tensors must be F32`);
      const sums = new Float32Array((await readGgufTensor(f, t)).slice().buffer);
      const counts = new Float32Array((await readGgufTensor(f, c)).slice().buffer);
      if (counts.length === 0 || sums.length % counts.length !== 0) fail(`${src.name}: ${name} has ${sums.length} sums for ${counts.length} matrices`);
      m.entries.set(name, { name, sums: Float64Array.from(sums), counts: Float64Array.from(counts) });
    }
    if (m.entries.size === 0) fail(`${src.name}: no imatrix entries (*.in_sum2 tensors)`);
    return m;
  }
  return readImatrixDat(await src.read(0, src.size), src.name);
}

export async function writeImatrixGguf(m: Imatrix, sink: ByteSink): Promise<void> {
  const f32 = ggmlTypeByName('F32') as GgmlTypeInfo;
  const meta: [string, GgufValue][] = [
    ['general.type', gguf.str('imatrix')],
    ['imatrix.datasets', gguf.strings(m.datasets)],
    ['imatrix.chunk_count', gguf.u32(m.chunkCount)],
    ['imatrix.chunk_size', gguf.u32(m.chunkSize)],
  ];
  const tensors = [...m.entries.keys()].sort().flatMap((name) => {
    const e = m.entries.get(name)!;
    const nMat = e.counts.length;
    const sums = Float32Array.from(e.sums);
    const counts = Float32Array.from(e.counts);
    return [
      { name: `${name}.in_sum2`, ne: [e.sums.length / nMat, nMat], type: f32, data: new Uint8Array(sums.buffer) },
      { name: `${name}.counts`, ne: [1, nMat], type: f32, data: new Uint8Array(counts.buffer) },
    ];
  });
  await writeGguf(sink, meta, tensors);
}

export { writeImatrixDat };
