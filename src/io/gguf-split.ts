/**
 * Split GGUF models, llama.cpp's format (llama-gguf-split, llama-quantize --keep-split): one model in N
 * files named PREFIX-00001-of-0000N.gguf ... PREFIX-0000N-of-0000N.gguf, each a complete GGUF holding
 * some of the tensors. The first carries the model's metadata; every part carries split.no (u16,
 * 0-based), split.count (u16) and split.tensors.count (i32, the tensors of all parts).
 *
 * Reading: `openGgufSplit` presents the parts as ONE virtual GGUF source (the first part's metadata
 * without the split keys, then every part's tensors in order, data read from the parts on demand), so
 * every reader (readGguf, openModelFile, loadModel, ...) works on split models unchanged.
 * Writing: `ggufSplitParts` + `writeGgufPart` cut a GGUF into parts the way llama-quantize --keep-split
 * writes them (the same bytes).
 */
import { fail } from '../errors.js';
import { ggufHeaderBytes, ggufTensorBytes, GgufType, GgufWriter, readGguf, type GgufFile, type GgufTensorInfo, type GgufValue } from './gguf.js';
import type { ByteSink } from './sink.js';
import { checkRange, type ByteSource } from './source.js';

export const SPLIT_NO = 'split.no';
export const SPLIT_COUNT = 'split.count';
export const SPLIT_TENSORS_COUNT = 'split.tensors.count';
const SPLIT_KEYS = new Set([SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT]);

/** llama_split_path: PREFIX-0000{no+1}-of-0000{count}.gguf (no 0-based) */
export function splitPath(prefix: string, no: number, count: number): string {
  return `${prefix}-${String(no + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`;
}

/** The prefix, part (0-based) and count of a split file name, or undefined when it is not one. */
export function parseSplitPath(name: string): { prefix: string; no: number; count: number } | undefined {
  const m = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/.exec(name);
  if (!m) return undefined;
  return { prefix: m[1], no: Number(m[2]) - 1, count: Number(m[3]) };
}

/** split.count of a GGUF (1 when absent) */
export function splitCountOf(g: GgufFile): number {
  const v = g.metadata.get(SPLIT_COUNT);
  return v === undefined ? 1 : Number(v.value);
}

function splitNoOf(g: GgufFile): number {
  const v = g.metadata.get(SPLIT_NO);
  return v === undefined ? 0 : Number(v.value);
}

const baseName = (name: string) => name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
const pad = (n: number, a: number) => Math.ceil(n / a) * a;

/** A split model seen as one GGUF: `parts` lists each part's tensor names (for --keep-split). */
export interface SplitSource extends ByteSource {
  readonly split: { readonly files: readonly string[]; readonly parts: readonly (readonly string[])[] };
}

/**
 * The model behind `first` as one GGUF source: `first` itself when it is not split, else a virtual
 * merged GGUF over all parts, opened with `openSibling(fileName)` (names as llama.cpp derives them
 * from the first part's name). Clear errors for a part other than the first, a missing or
 * inconsistent part, duplicate tensors or a wrong tensor count.
 */
export async function openGgufSplit(first: ByteSource, openSibling: ((fileName: string) => Promise<ByteSource>) | undefined, g0?: GgufFile): Promise<ByteSource | SplitSource> {
  g0 ??= await readGguf(first);
  const count = splitCountOf(g0);
  if (count <= 1) return first;
  const name = baseName(first.name);
  const no = splitNoOf(g0);
  const parsed = parseSplitPath(name);
  if (no !== 0) fail(`${first.name}: part ${no + 1} of a split model of ${count} files: open the first part${parsed ? ` (${splitPath(parsed.prefix, 0, count)})` : ''}`);
  if (!parsed || parsed.no !== 0 || parsed.count !== count)
    fail(`${first.name}: the first of ${count} split files must be named PREFIX-00001-of-${String(count).padStart(5, '0')}.gguf (llama.cpp's naming) to find the others`);
  if (!openSibling) fail(`${first.name}: a split model needs access to its other ${count - 1} file(s)`);
  const gs: GgufFile[] = [g0];
  const files = [name];
  for (let i = 1; i < count; i++) {
    const fname = splitPath(parsed.prefix, i, count);
    let src: ByteSource;
    try {
      src = await openSibling(fname);
    } catch (e) {
      fail(`${first.name}: part ${i + 1} of ${count} (${fname}) cannot be opened: ${(e as Error).message}`);
    }
    const g = await readGguf(src);
    if (splitCountOf(g) !== count || splitNoOf(g) !== i) fail(`${src.name}: expected part ${i + 1} of ${count}, found split.no ${splitNoOf(g)} of split.count ${splitCountOf(g)}`);
    gs.push(g);
    files.push(fname);
  }
  const total = gs.reduce((a, g) => a + g.tensors.length, 0);
  const declared = g0.metadata.get(SPLIT_TENSORS_COUNT);
  if (declared !== undefined && Number(declared.value) !== total) fail(`${first.name}: split.tensors.count is ${declared.value} but the ${count} parts hold ${total} tensors`);
  const metadata = [...g0.metadata].filter(([k]) => !SPLIT_KEYS.has(k));
  const where: { t: GgufTensorInfo; src: ByteSource }[] = [];
  const seen = new Set<string>();
  for (const g of gs)
    for (const t of g.tensors) {
      if (seen.has(t.name)) fail(`${g.source.name}: tensor '${t.name}' is also in an earlier part`);
      seen.add(t.name);
      where.push({ t, src: g.source });
    }
  const header = ggufHeaderBytes(metadata, where.map(({ t }) => t), g0.alignment);
  // virtual layout: header, then each tensor padded to the alignment (as ggufHeaderBytes numbered them)
  const starts: number[] = [];
  let at = header.length;
  for (const { t } of where) {
    starts.push(at);
    at += pad(t.byteLength, g0.alignment);
  }
  const size = at;
  const fill = async (offset: number, dest: Uint8Array) => {
    const end = offset + dest.length;
    if (offset < header.length) dest.set(header.subarray(offset, Math.min(end, header.length)));
    // first tensor whose data ends after offset
    let lo = 0;
    let hi = where.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] + where[mid].t.byteLength <= offset) lo = mid + 1;
      else hi = mid;
    }
    const reads: Promise<void>[] = [];
    for (let i = lo; i < where.length && starts[i] < end; i++) {
      const { t, src } = where[i];
      const a = Math.max(offset, starts[i]);
      const b = Math.min(end, starts[i] + t.byteLength);
      if (b <= a) continue;
      const part = dest.subarray(a - offset, b - offset);
      const from = t.fileOffset + (a - starts[i]);
      reads.push(src.readInto ? src.readInto(from, part) : src.read(from, part.length).then((x) => part.set(x)));
    }
    for (const r of await Promise.allSettled(reads)) if (r.status === 'rejected') throw r.reason;
  };
  const merged: SplitSource = {
    size,
    name: first.name,
    split: { files, parts: gs.map((g) => g.tensors.map((t) => t.name)) },
    async read(offset, length) {
      checkRange(merged, offset, length);
      const out = new Uint8Array(length); // padding stays zero
      await fill(offset, out);
      return out;
    },
    async readInto(offset, dest) {
      checkRange(merged, offset, dest.length);
      await fill(offset, dest);
    },
  };
  return merged;
}

/** the split parts of a source opened by openGgufSplit, undefined when it is one file */
export function splitPartsOf(src: ByteSource): readonly (readonly string[])[] | undefined {
  return (src as Partial<SplitSource>).split?.parts;
}

/** One output part: its metadata and tensors (from the GGUF being cut). */
export interface GgufPart {
  readonly metadata: [string, GgufValue][];
  readonly tensors: readonly GgufTensorInfo[];
}

/**
 * Cut GGUF `g` into parts as llama-quantize --keep-split does: tensor t goes to the part whose input
 * held a tensor of that name (`parts`, in order; a name no input part held stays with the tensor before
 * it); the first part keeps all metadata, the others none; with more than one part each gets split.no,
 * split.count and split.tensors.count (appended last). Tensors keep their order within a part.
 */
export function ggufSplitParts(g: GgufFile, parts: readonly (readonly string[])[]): GgufPart[] {
  const n = Math.max(1, parts.length);
  const partOf = new Map<string, number>();
  parts.forEach((names, i) => names.forEach((nm) => partOf.set(nm, i)));
  const lists: GgufTensorInfo[][] = Array.from({ length: n }, () => []);
  let cur = 0;
  for (const t of g.tensors) {
    const p = partOf.get(t.name);
    if (p !== undefined) {
      if (p < cur) fail(`--keep-split: tensor '${t.name}' belongs to part ${p + 1} but comes after tensors of part ${cur + 1}`);
      cur = p;
    }
    lists[cur].push(t);
  }
  const base = [...g.metadata].filter(([k]) => !SPLIT_KEYS.has(k));
  return lists.map((tensors, i) => {
    const metadata: [string, GgufValue][] = i === 0 ? [...base] : [];
    if (n > 1)
      metadata.push(
        [SPLIT_NO, { type: GgufType.UINT16, value: i }],
        [SPLIT_COUNT, { type: GgufType.UINT16, value: n }],
        [SPLIT_TENSORS_COUNT, { type: GgufType.INT32, value: g.tensors.length }],
      );
    return { metadata, tensors };
  });
}

/** Write one part (ggufSplitParts) to `sink`, its tensors read from g's source `chunk` bytes at a time. */
export async function writeGgufPart(g: GgufFile, part: GgufPart, sink: ByteSink, chunk = 16 << 20): Promise<void> {
  const w = new GgufWriter(sink, part.metadata, part.tensors);
  await w.begin();
  for (const t of part.tensors) {
    const n = ggufTensorBytes(t);
    for (let o = 0; o < n; o += chunk) await w.write(await g.source.read(t.fileOffset + o, Math.min(chunk, n - o)));
  }
  await w.end();
}
