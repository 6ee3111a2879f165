/**
 * A small protobuf codec driven by declarative message schemas (protobuf encoding spec:
 * protobuf.dev/programming-guides/encoding). Enough for ONNX: varint, 64-bit, length-delimited and
 * 32-bit wire types; packed and unpacked repeated scalars; nested messages; unknown fields are kept
 * as raw bytes and written back, so a read-then-write round trip loses nothing.
 *
 * Wire format: each field is a key varint (fieldNumber << 3 | wireType) followed by
 *   wire 0: varint (int32/int64/uint64/enum/bool; negative int32/int64 as 10-byte two's complement)
 *   wire 1: 8 bytes little-endian (double, fixed64)
 *   wire 2: varint length + that many bytes (string, bytes, message, packed repeated scalars)
 *   wire 5: 4 bytes little-endian (float, fixed32)
 * Decoded `bytes` fields are views into the input (no copy); the encoder streams them as separate parts
 * so multi-gigabyte payloads are never concatenated.
 */
import { fail } from '../../errors.js';

export type FieldKind = 'int32' | 'int64' | 'uint64' | 'enum' | 'float' | 'double' | 'string' | 'bytes' | 'message';

export interface FieldSpec {
  readonly no: number;
  readonly name: string;
  readonly kind: FieldKind;
  readonly repeated?: boolean;
  /** repeated scalars written packed (as onnx.proto's [packed = true]); reading accepts both */
  readonly packed?: boolean;
  /** for kind 'message' */
  readonly message?: () => MessageSchema;
}

export interface MessageSchema {
  readonly name: string;
  readonly fields: readonly FieldSpec[];
}

/** int64 values: a number when it is a safe integer, else a bigint (e.g. INT64_MAX in Slice ends) */
export type Int64 = number | bigint;

/** A decoded message: field names to values; `$unknown` holds fields the schema does not know. */
export type Message = { [field: string]: unknown; $unknown?: Uint8Array[] };

/** nesting limit (subgraphs inside subgraphs); real models use a handful of levels */
export const MAX_DEPTH = 100;

const byNumber = new WeakMap<MessageSchema, Map<number, FieldSpec>>();
function fieldMap(s: MessageSchema): Map<number, FieldSpec> {
  let m = byNumber.get(s);
  if (!m) byNumber.set(s, (m = new Map(s.fields.map((f) => [f.no, f]))));
  return m;
}

const TWO64 = 1n << 64n;
const TWO63 = 1n << 63n;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Enc = new TextEncoder();

class Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, start: number, readonly end: number, readonly label: string) {
    this.pos = start;
  }
  bad(what: string): never {
    fail(`${this.label}: not a valid protobuf (${what} at byte ${this.pos})`);
  }
  /** an unsigned varint: a number below 2^53, a bigint above */
  varint(): number | bigint {
    let lo = 0;
    let mul = 1;
    const b = this.buf;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) this.bad('truncated varint');
      const c = b[this.pos++];
      lo += (c & 0x7f) * mul;
      if (c < 0x80) return lo;
      mul *= 128;
    }
    // more than 49 bits: finish in bigint (at most 10 bytes)
    let v = BigInt(lo);
    let shift = 49n;
    for (let i = 7; i < 10; i++) {
      if (this.pos >= this.end) this.bad('truncated varint');
      const c = b[this.pos++];
      v |= BigInt(c & 0x7f) << shift;
      if (c < 0x80) {
        v &= TWO64 - 1n;
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      shift += 7n;
    }
    this.bad('varint longer than 10 bytes');
  }
  length(): number {
    const n = this.varint();
    if (typeof n !== 'number' || n > this.end - this.pos) this.bad(`length ${n} past the end of its message`);
    return n;
  }
  skip(n: number): void {
    if (n > this.end - this.pos) this.bad('field past the end of its message');
    this.pos += n;
  }
}

function toInt64(v: number | bigint): Int64 {
  if (typeof v === 'number') return v;
  const s = v >= TWO63 ? v - TWO64 : v;
  return s >= BigInt(Number.MIN_SAFE_INTEGER) && s <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : s;
}
function toInt32(v: number | bigint): number {
  return typeof v === 'number' ? v | 0 : Number(BigInt.asIntN(32, v));
}

function scalar(r: Reader, f: FieldSpec, wire: number): unknown {
  switch (f.kind) {
    case 'int32':
    case 'enum':
      if (wire !== 0) r.bad(`field ${f.name} has wire type ${wire}`);
      return toInt32(r.varint());
    case 'int64':
      if (wire !== 0) r.bad(`field ${f.name} has wire type ${wire}`);
      return toInt64(r.varint());
    case 'uint64':
      if (wire !== 0) r.bad(`field ${f.name} has wire type ${wire}`);
      return r.varint();
    case 'float': {
      if (wire !== 5) r.bad(`field ${f.name} has wire type ${wire}`);
      r.skip(4);
      return new DataView(r.buf.buffer, r.buf.byteOffset + r.pos - 4, 4).getFloat32(0, true);
    }
    case 'double': {
      if (wire !== 1) r.bad(`field ${f.name} has wire type ${wire}`);
      r.skip(8);
      return new DataView(r.buf.buffer, r.buf.byteOffset + r.pos - 8, 8).getFloat64(0, true);
    }
    default:
      r.bad(`field ${f.name} is not a scalar`);
  }
}

function packed(r: Reader, f: FieldSpec, end: number): unknown[] | Float32Array | Float64Array {
  const n = end - r.pos;
  if (f.kind === 'float' || f.kind === 'double') {
    const w = f.kind === 'float' ? 4 : 8;
    if (n % w) r.bad(`packed ${f.name} of ${n} bytes`);
    const out = f.kind === 'float' ? new Float32Array(n / 4) : new Float64Array(n / 8);
    const dv = new DataView(r.buf.buffer, r.buf.byteOffset + r.pos, n);
    for (let i = 0; i < out.length; i++) out[i] = w === 4 ? dv.getFloat32(i * 4, true) : dv.getFloat64(i * 8, true);
    r.pos = end;
    return out;
  }
  const out: unknown[] = [];
  const sub = new Reader(r.buf, r.pos, end, r.label);
  while (sub.pos < end) out.push(scalar(sub, f, 0));
  r.pos = end;
  return out;
}

/** append one value, or (batch) the values of a packed run, to a repeated field */
function pushRepeated(m: Message, name: string, v: unknown, batch: boolean): void {
  const cur = m[name] as unknown[] | Float32Array | Float64Array | undefined;
  if (cur === undefined) m[name] = batch ? v : [v];
  else {
    // a packed float run decodes to a typed array; anything following turns the field into a plain array
    const arr = Array.isArray(cur) ? cur : (Array.from(cur) as unknown[]);
    if (batch) for (const x of Array.from(v as ArrayLike<unknown>)) arr.push(x);
    else arr.push(v);
    m[name] = arr;
  }
}

function decodeRange(buf: Uint8Array, start: number, end: number, schema: MessageSchema, label: string, depth: number): Message {
  if (depth > MAX_DEPTH) fail(`${label}: messages nested deeper than ${MAX_DEPTH} levels`);
  const fields = fieldMap(schema);
  const r = new Reader(buf, start, end, label);
  const m: Message = {};
  while (r.pos < end) {
    const keyAt = r.pos;
    const rawKey = r.varint();
    if (typeof rawKey !== 'number' || rawKey > 0xffffffff) r.bad('field key too large');
    const key = rawKey as number;
    const no = Math.floor(key / 8);
    const wire = key & 7;
    if (no === 0) r.bad('field number 0');
    const f = fields.get(no);
    if (!f) {
      // unknown: skip by wire type, keep the raw bytes
      if (wire === 0) r.varint();
      else if (wire === 1) r.skip(8);
      else if (wire === 2) r.skip(r.length());
      else if (wire === 5) r.skip(4);
      else r.bad(`wire type ${wire} (field ${no} of ${schema.name})`);
      (m.$unknown ??= []).push(buf.subarray(keyAt, r.pos));
      continue;
    }
    let v: unknown;
    if (f.kind === 'message') {
      if (wire !== 2) r.bad(`field ${schema.name}.${f.name} has wire type ${wire}`);
      const n = r.length();
      v = decodeRange(buf, r.pos, r.pos + n, f.message!(), label, depth + 1);
      r.pos += n;
    } else if (f.kind === 'string' || f.kind === 'bytes') {
      if (wire !== 2) r.bad(`field ${schema.name}.${f.name} has wire type ${wire}`);
      const n = r.length();
      const bytes = buf.subarray(r.pos, r.pos + n);
      r.pos += n;
      if (f.kind === 'string') {
        try {
          v = utf8.decode(bytes);
        } catch {
          r.bad(`${schema.name}.${f.name} is not UTF-8`);
        }
      } else v = bytes;
    } else if (wire === 2 && f.repeated) {
      const n = r.length();
      pushRepeated(m, f.name, packed(r, f, r.pos + n), true);
      continue;
    } else v = scalar(r, f, wire);
    if (f.repeated) pushRepeated(m, f.name, v, false);
    else m[f.name] = v; // last one wins (protobuf merge semantics for scalars)
  }
  return m;
}

/** Decode a whole buffer as one message of `schema`; errors name `label` and the byte position. */
export function decodeMessage(buf: Uint8Array, schema: MessageSchema, label = 'protobuf'): Message {
  return decodeRange(buf, 0, buf.length, schema, label, 0);
}

// ---------------------------------------------------------------------------------------------------
// Encoding: a message becomes a list of parts (small bytes gathered, large bytes by reference).

/** bytes fields at least this long are referenced rather than copied */
const BIG = 4096;

export class Emitter {
  readonly parts: Uint8Array[] = [];
  length = 0;
  private buf = new Uint8Array(256);
  private n = 0;
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.n + k));
    b.set(this.buf.subarray(0, this.n));
    this.buf = b;
  }
  private flushSmall(): void {
    if (!this.n) return;
    this.parts.push(this.buf.slice(0, this.n));
    this.n = 0;
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.n++] = b;
    this.length++;
  }
  varint(v: number | bigint): void {
    if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      while (v >= 128) {
        this.byte((v % 128) | 128);
        v = Math.floor(v / 128);
      }
      this.byte(v);
      return;
    }
    let b = BigInt.asUintN(64, BigInt(v));
    while (b >= 128n) {
      this.byte(Number(b & 127n) | 128);
      b >>= 7n;
    }
    this.byte(Number(b));
  }
  key(no: number, wire: number): void {
    this.varint(no * 8 + wire);
  }
  raw(bytes: Uint8Array): void {
    if (bytes.length >= BIG) {
      this.flushSmall();
      this.parts.push(bytes);
    } else {
      this.room(bytes.length);
      this.buf.set(bytes, this.n);
      this.n += bytes.length;
    }
    this.length += bytes.length;
  }
  fixed(bytes: number, write: (dv: DataView) => void): void {
    this.room(bytes);
    write(new DataView(this.buf.buffer, this.n, bytes));
    this.n += bytes;
    this.length += bytes;
  }
  append(child: Emitter): void {
    child.flushSmall();
    this.flushSmall();
    for (const p of child.parts) this.parts.push(p);
    this.length += child.length;
  }
  finish(): Uint8Array[] {
    this.flushSmall();
    return this.parts;
  }
}

function encodeScalar(e: Emitter, f: FieldSpec, v: unknown): void {
  switch (f.kind) {
    case 'int32':
    case 'enum':
    case 'int64':
    case 'uint64':
      if (typeof v !== 'number' && typeof v !== 'bigint') fail(`protobuf: ${f.name} must be an integer, got ${typeof v}`);
      e.varint(typeof v === 'number' && f.kind !== 'uint64' ? Math.trunc(v) : v);
      return;
    case 'float':
      e.fixed(4, (dv) => dv.setFloat32(0, v as number, true));
      return;
    case 'double':
      e.fixed(8, (dv) => dv.setFloat64(0, v as number, true));
      return;
  }
}
const WIRE: Record<FieldKind, number> = { int32: 0, int64: 0, uint64: 0, enum: 0, float: 5, double: 1, string: 2, bytes: 2, message: 2 };

const sortedFields = new WeakMap<MessageSchema, FieldSpec[]>();
/** fields in number order, as protobuf's own serializers write them (byte-identical round trips) */
function inNumberOrder(s: MessageSchema): FieldSpec[] {
  let f = sortedFields.get(s);
  if (!f) sortedFields.set(s, (f = [...s.fields].sort((a, b) => a.no - b.no)));
  return f;
}

function encodeInto(e: Emitter, m: Message, schema: MessageSchema): void {
  for (const f of inNumberOrder(schema)) {
    const v = m[f.name];
    if (v === undefined || v === null) continue;
    const values: ArrayLike<unknown> = f.repeated ? (v as ArrayLike<unknown>) : [v];
    if (f.repeated && f.packed && f.kind !== 'string' && f.kind !== 'bytes' && f.kind !== 'message') {
      if (!values.length) continue;
      const sub = new Emitter();
      for (let i = 0; i < values.length; i++) encodeScalar(sub, f, values[i]);
      e.key(f.no, 2);
      e.varint(sub.length);
      e.append(sub);
      continue;
    }
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      e.key(f.no, WIRE[f.kind]);
      if (f.kind === 'message') {
        const sub = new Emitter();
        encodeInto(sub, x as Message, f.message!());
        e.varint(sub.length);
        e.append(sub);
      } else if (f.kind === 'string') {
        const b = utf8Enc.encode(x as string);
        e.varint(b.length);
        e.raw(b);
      } else if (f.kind === 'bytes') {
        const b = x as Uint8Array;
        e.varint(b.length);
        e.raw(b);
      } else encodeScalar(e, f, x);
    }
  }
  for (const u of m.$unknown ?? []) e.raw(u);
}

/** Encode a message as parts (concatenated, they are the message's bytes); total length in `length`. */
export function encodeMessage(m: Message, schema: MessageSchema): { parts: Uint8Array[]; length: number } {
  const e = new Emitter();
  encodeInto(e, m, schema);
  return { parts: e.finish(), length: e.length };
}

export { concatParts } from '../sink.js';
