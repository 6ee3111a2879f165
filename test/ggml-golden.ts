/**
 * Loader for the GGML golden vectors in test/golden/ggml/ (produced by llama.cpp's own C code through
 * tools/ggml-golden/generate.mjs; never edited by hand). Node-only test helper.
 *
 * Variants:
 *   ref        quantize_row_X_ref(input) (ggml's from_float_ref type trait; ggml_fp32_to_fp16_row for F16)
 *   noimatrix  quantize_X(input, quant_weights = NULL), what llama-quantize does without an imatrix
 *   imatrix    quantize_X(input, quant_weights = importance), importance has length rowLength
 *   dequant    random block bytes with sane scale fields (no input); tests dequantizers only
 * `dequant` (the floats) is dequantize_row_X(bytes); absent where ggml has no dequantizer (Q8_1).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type GoldenVariant = 'ref' | 'noimatrix' | 'imatrix' | 'dequant';

export interface GoldenManifestEntry {
  readonly type: string;
  readonly id: number;
  readonly blockSize: number;
  readonly typeSize: number;
  readonly dataset: string;
  readonly variant: GoldenVariant;
  readonly rows: number;
  readonly rowLength: number;
  /** file names relative to the golden directory */
  readonly input?: string;
  readonly importance?: string;
  readonly bytes: string;
  readonly dequant: string | null;
}

export interface GoldenFile {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface GoldenManifest {
  readonly llamaCpp: { readonly tag: string | null; readonly commit: string };
  readonly cflags: string;
  readonly ggmlTypes: readonly { id: number; name: string; blockSize: number; typeSize: number; hasRef: boolean; hasDequant: boolean }[];
  readonly failures: readonly { type: string; dataset: string; variant: string }[];
  readonly entries: readonly GoldenManifestEntry[];
  readonly files: readonly GoldenFile[];
}

export interface GoldenEntry {
  /** llama.cpp's type name in upper case, as in src/quant/ggml/types.ts (e.g. 'Q4_K') */
  readonly type: string;
  readonly typeId: number;
  readonly blockSize: number;
  readonly typeSize: number;
  readonly dataset: string;
  readonly variant: GoldenVariant;
  readonly rows: number;
  readonly rowLength: number;
  /** rows * rowLength floats; absent for variant 'dequant' */
  readonly input?: Float32Array;
  /** rowLength positive floats; present for variant 'imatrix' only */
  readonly importance?: Float32Array;
  /** rows * rowLength / blockSize * typeSize bytes */
  readonly bytes: Uint8Array;
  /** rows * rowLength floats; absent where ggml has no dequantizer (Q8_1) */
  readonly dequant?: Float32Array;
}

/** The folder holding manifest.json, found from this module's location (test/ or dist/test/). */
export function goldenDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'test', 'golden', 'ggml');
    if (existsSync(join(candidate, 'manifest.json'))) return candidate;
    const sibling = join(dir, 'golden', 'ggml');
    if (existsSync(join(sibling, 'manifest.json'))) return sibling;
    dir = dirname(dir);
  }
  throw new Error('cannot find test/golden/ggml/manifest.json');
}

let manifestCache: GoldenManifest | undefined;

export function loadGoldenManifest(): GoldenManifest {
  manifestCache ??= JSON.parse(readFileSync(join(goldenDir(), 'manifest.json'), 'utf8')) as GoldenManifest;
  return manifestCache;
}

const fileCache = new Map<string, Uint8Array>();

/** Raw bytes of one golden file (a fresh copy, aligned for typed-array views). */
export function readGoldenFile(name: string): Uint8Array {
  let buf = fileCache.get(name);
  if (!buf) {
    buf = new Uint8Array(readFileSync(join(goldenDir(), name)));
    fileCache.set(name, buf);
  }
  return buf.slice();
}

function floats(name: string): Float32Array {
  const b = readGoldenFile(name);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface GoldenFilter {
  readonly type?: string;
  readonly variant?: GoldenVariant;
  readonly dataset?: string;
}

/** All golden entries (optionally filtered), with their files loaded as typed arrays. */
export function loadGolden(filter: GoldenFilter = {}): GoldenEntry[] {
  const m = loadGoldenManifest();
  const out: GoldenEntry[] = [];
  for (const e of m.entries) {
    if (filter.type !== undefined && e.type.toUpperCase() !== filter.type.toUpperCase()) continue;
    if (filter.variant !== undefined && e.variant !== filter.variant) continue;
    if (filter.dataset !== undefined && e.dataset !== filter.dataset) continue;
    out.push({
      type: e.type,
      typeId: e.id,
      blockSize: e.blockSize,
      typeSize: e.typeSize,
      dataset: e.dataset,
      variant: e.variant,
      rows: e.rows,
      rowLength: e.rowLength,
      ...(e.input ? { input: floats(e.input) } : {}),
      ...(e.importance ? { importance: floats(e.importance) } : {}),
      bytes: readGoldenFile(e.bytes),
      ...(e.dequant ? { dequant: floats(e.dequant) } : {}),
    });
  }
  return out;
}

/** Distinct type names that have golden entries, in type-id order. */
export function goldenTypes(): string[] {
  const seen = new Map<string, number>();
  for (const e of loadGoldenManifest().entries) seen.set(e.type, e.id);
  return [...seen.entries()].sort((a, b) => a[1] - b[1]).map(([name]) => name);
}
