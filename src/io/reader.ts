/**
 * A buffered little-endian cursor over a ByteSource, for parsing file headers lazily. Every length or
 * count is checked against the bytes left in the source before anything is allocated, so a corrupt
 * header can never make us allocate more than the file holds.
 */
import { fail } from '../errors.js';
import type { ByteSource } from './source.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode UTF-8 strictly; undefined when the bytes are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

export class SourceReader {
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  /** file offset of buf[0] */
  private base = 0;
  /** current file offset */
  pos: number;

  constructor(
    readonly src: ByteSource,
    /** what the file is, for messages: 'GGUF', 'safetensors' */
    readonly kind: string,
    start = 0,
    private readonly chunk = 1 << 16,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.src.size - this.pos;
  }

  /** Make `n` bytes at pos available, or fail naming `what` was being read. */
  async need(n: number, what: string): Promise<void> {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining)
      fail(`${this.src.name}: ${this.kind} truncated: ${what} needs ${n} bytes at offset ${this.pos} but only ${this.remaining} remain`);
    if (this.pos >= this.base && this.pos + n <= this.base + this.buf.length) return;
    const len = Math.min(Math.max(n, this.chunk), this.remaining);
    const bytes = await this.src.read(this.pos, len);
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.base = this.pos;
  }

  private at(n: number): number {
    const i = this.pos - this.base;
    this.pos += n;
    return i;
  }
  u8(): number {
    return this.view.getUint8(this.at(1));
  }
  i8(): number {
    return this.view.getInt8(this.at(1));
  }
  u16(): number {
    return this.view.getUint16(this.at(2), true);
  }
  i16(): number {
    return this.view.getInt16(this.at(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.at(4), true);
  }
  i32(): number {
    return this.view.getInt32(this.at(4), true);
  }
  f32(): number {
    return this.view.getFloat32(this.at(4), true);
  }
  f64(): number {
    return this.view.getFloat64(this.at(8), true);
  }
  u64big(): bigint {
    return this.view.getBigUint64(this.at(8), true);
  }
  i64big(): bigint {
    return this.view.getBigInt64(this.at(8), true);
  }
  /** u64 that must fit a safe integer (counts, lengths, offsets) */
  u64(what: string): number {
    const v = this.u64big();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${this.src.name}: ${this.kind} ${what} ${v} is impossibly large`);
    return Number(v);
  }
  /** are the n bytes at pos already buffered (so that need(n) would not read)? */
  has(n: number): boolean {
    return n <= this.remaining && this.pos >= this.base && this.pos + n <= this.base + this.buf.length;
  }
  /** the u64 at pos, not consumed (after has(8)) */
  peekU64(): bigint {
    return this.view.getBigUint64(this.pos - this.base, true);
  }
  /** the next n bytes as a view of the buffer (after need(n) or has(n)): valid until the next read */
  viewBytes(n: number): Uint8Array {
    const i = this.at(n);
    return this.buf.subarray(i, i + n);
  }
  /** copy of the next n bytes (after need(n)) */
  bytes(n: number): Uint8Array {
    const i = this.at(n);
    return this.buf.slice(i, i + n);
  }
}

/** Little-endian writer into a growable buffer (for headers). */
export class ByteWriter {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private grow(n: number): number {
    if (this.length + n > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < this.length + n) cap *= 2;
      const b = new Uint8Array(cap);
      b.set(this.buf.subarray(0, this.length));
      this.buf = b;
      this.view = new DataView(b.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number): void {
    const at = this.grow(1);
    this.view.setUint8(at, v);
  }
  i8(v: number): void {
    const at = this.grow(1);
    this.view.setInt8(at, v);
  }
  u16(v: number): void {
    const at = this.grow(2);
    this.view.setUint16(at, v, true);
  }
  i16(v: number): void {
    const at = this.grow(2);
    this.view.setInt16(at, v, true);
  }
  u32(v: number): void {
    const at = this.grow(4);
    this.view.setUint32(at, v, true);
  }
  i32(v: number): void {
    const at = this.grow(4);
    this.view.setInt32(at, v, true);
  }
  f32(v: number): void {
    const at = this.grow(4);
    this.view.setFloat32(at, v, true);
  }
  f64(v: number): void {
    const at = this.grow(8);
    this.view.setFloat64(at, v, true);
  }
  u64(v: number | bigint): void {
    const at = this.grow(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  i64(v: number | bigint): void {
    const at = this.grow(8);
    this.view.setBigInt64(at, BigInt(v), true);
  }
  bytes(b: Uint8Array): void {
    const at = this.grow(b.length);
    this.buf.set(b, at);
  }
  zeros(n: number): void {
    this.buf.fill(0, this.grow(n), this.length);
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}
