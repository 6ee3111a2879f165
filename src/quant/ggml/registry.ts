/**
 * The GGML codec registry: one GgmlCodec per GGML type that lowbit can dequantize (and quantize).
 * Tests iterate it, so a type is tested the moment it is registered.
 */
import type { GgmlCodec, GgmlTypeInfo } from './types.js';
import { ggmlTypeById, ggmlTypeByName } from './types.js';

const codecs: GgmlCodec[] = [];

export const ggmlCodecs: readonly GgmlCodec[] = codecs;

export function registerGgmlCodec(c: GgmlCodec): void {
  if (codecs.some((x) => x.type.id === c.type.id)) throw new Error(`GGML codec for ${c.type.name} registered twice`);
  codecs.push(c);
}

export function ggmlCodec(t: GgmlTypeInfo | number | string): GgmlCodec | undefined {
  const info = typeof t === 'number' ? ggmlTypeById(t) : typeof t === 'string' ? ggmlTypeByName(t) : t;
  if (!info) return undefined;
  return codecs.find((c) => c.type.id === info.id);
}

/** Registers each codec whose type has none yet (idempotent for repeated imports of a codec list). */
export function registerGgmlCodecs(list: readonly GgmlCodec[]): void {
  for (const c of list) if (!codecs.some((x) => x.type.id === c.type.id)) codecs.push(c);
}
