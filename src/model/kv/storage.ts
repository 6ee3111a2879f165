/**
 * Where the runtime keeps keys and values (src/model/llama.ts reads and writes through this interface).
 * The default is f32 rows; a packed store (src/model/kv/cache.ts) keeps rows in a quantized type and
 * computes attention over them itself.
 */

/** The shape of a cache: `capacity` positions of nKvHeads * headDim values per layer, for keys and values. */
export interface KvGeometry {
  readonly nLayers: number;
  readonly capacity: number;
  readonly nKvHeads: number;
  readonly headDim: number;
}

/** What attention needs besides the cache: the query heads and the query scale. */
export interface AttentionShape {
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly scale: number;
}

export interface KvStorage {
  /** positions each layer can hold */
  readonly capacity: number;
  /** store the key and value vectors (kvDim each) of position `pos` of `layer` */
  store(layer: number, pos: number, key: Float32Array, value: Float32Array): void;
  /**
   * Optional fast path: store positions [pos, pos + n) of `layer` from the first n rows (kvDim each) of
   * k and v, in place (no allocation per token). Without it the runtime calls store() per position.
   */
  append?(layer: number, pos: number, n: number, k: Float32Array, v: Float32Array): void;
  /** keys of positions [0, n) of `layer` as f32, kvDim per position, contiguous (dequantized when packed) */
  keys(layer: number, n: number): Float32Array;
  /** values of positions [0, n) of `layer` as f32, kvDim per position, contiguous */
  values(layer: number, n: number): Float32Array;
  /** bytes the cache holds per position, all layers, keys and values (f32: 8 * nLayers * kvDim) */
  readonly bytesPerToken?: number;
  /**
   * Causal attention of layer l computed by the store itself (packed caches): nTok query rows at
   * positions pos.. (nHeads * headDim each, not modified) against positions [0, pos + nTok); the
   * output rows (nHeads * headDim) before Wo into out.
   */
  attention?(layer: number, q: Float32Array, nTok: number, pos: number, shape: AttentionShape, out: Float32Array): void;
  /** true: append() takes keys before RoPE, and the store applies RoPE (given by setRope) to what it reads */
  readonly preRopeKeys?: boolean;
  /** the runtime's RoPE of `n` key rows (kvDim each) of a layer at positions pos0.., in place */
  setRope?(fn: (layer: number, rows: Float32Array, n: number, pos0: number) => void, table?: (layer: number) => KvRopeTable): void;
  /**
   * Optional: write every memory page of positions [0, n) of every layer once, keeping its bytes, so that
   * storing those positions later takes no page faults (fresh memory is mapped on its first write: ~25 µs
   * a 4 KiB page on the VMs measured, 18 pages a token on the 155M model).
   */
  reserve?(n: number): void;
}

/**
 * Write each 4 KiB page of `a`'s elements [from, to) once with its own bits (an atomic or of 0 on one 32-bit
 * word per page): the page is then mapped, and no value changes.
 */
export function touchPages(a: Float32Array, from: number, to: number): void {
  if (to <= from) return;
  const w = new Int32Array(a.buffer, a.byteOffset, a.length);
  for (let i = from; i < to; i += 1024) Atomics.or(w, i, 0);
  Atomics.or(w, to - 1, 0);
}

/**
 * KvStorage.reserve of a (layer, position, kvDim) cache in two arrays: positions [0, min(n, capacity)) of
 * every layer's keys and values touched (touchPages); base(layer, pos) is an element's offset
 */
export function reserveLayers(k: Float32Array, v: Float32Array, nLayers: number, capacity: number, n: number, base: (layer: number, pos: number) => number): void {
  for (let l = 0; l < nLayers; l++) {
    touchPages(k, base(l, 0), base(l, Math.min(n, capacity)));
    touchPages(v, base(l, 0), base(l, Math.min(n, capacity)));
  }
}

/** the cos / sin table behind setRope's function for a layer (so that a kernel can apply the same RoPE) */
export interface KvRopeTable {
  /** `half` values per position, position p at p * half (f64, already scaled as the runtime's RoPE) */
  readonly cos: Float64Array;
  readonly sin: Float64Array;
  readonly positions: number;
  /** ropeDim / 2 */
  readonly half: number;
  /** pairs (2i, 2i + 1); else (i, i + half) */
  readonly normal: boolean;
}

export function f32KvStorage(nLayers: number, capacity: number, kvDim: number): KvStorage {
  const k = new Float32Array(nLayers * capacity * kvDim); // (layer, pos, kvDim)
  const v = new Float32Array(nLayers * capacity * kvDim); // (layer, pos, kvDim)
  const base = (layer: number, pos: number) => (layer * capacity + pos) * kvDim;
  return {
    capacity,
    bytesPerToken: 8 * nLayers * kvDim,
    store(layer, pos, key, value) {
      k.set(key.subarray(0, kvDim), base(layer, pos));
      v.set(value.subarray(0, kvDim), base(layer, pos));
    },
    keys: (layer, n) => k.subarray(base(layer, 0), base(layer, n)),
    values: (layer, n) => v.subarray(base(layer, 0), base(layer, n)),
    reserve: (n) => reserveLayers(k, v, nLayers, capacity, n, base),
  };
}
