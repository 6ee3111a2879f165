import { fail } from '../../errors.js';
import type { CastOptions } from '../../formats/cast.js';
import type { Format, Specials } from '../../formats/descriptor.js';
import { parseFormat } from '../../formats/registry.js';
import { ROUNDING_MODES, type RoundingMode } from '../../formats/rounding.js';
import { decode, encode, fakeQuant } from '../../kernels/cast.js';
import { dequantizeScheme, quantizeScheme, resolveScheme, type ResolveOptions } from '../../quant/registry.js';
import type { QuantScheme, ScaleFormatName } from '../../quant/scheme.js';
import type { ClipMethod, Granularity } from '../../quant/schemes/generic.js';
import { SCHEME_OPTIONS, schemeOptionFlag } from '../../quant/scheme-options.js';
import type { Command, ParsedArgs } from '../args.js';
import { checkOutput, noteInput, openInput, writeFileAtomic } from '../files.js';
import { f32View, runStream } from '../stream.js';
import * as fs from 'node:fs';

function formatOf(name: string, a: ParsedArgs): Format {
  return parseFormat(name, {
    bias: a.given.has('bias') ? (a.values.bias as number) : undefined,
    subnormals: a.given.has('subnormals') ? (a.values.subnormals as boolean) : undefined,
    specials: a.given.has('specials') ? (a.values.specials as Specials) : undefined,
  });
}

/** Bytes per stored code: 1 up to 8 bits, 2 up to 16, else 4 (little-endian). */
export function codeWidth(f: Format): number {
  return f.bits <= 8 ? 1 : f.bits <= 16 ? 2 : 4;
}

interface Stats {
  signal: number;
  noise: number;
  maxAbs: number;
  n: number;
}

function accumulate(s: Stats, x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - y[i];
    s.signal += x[i] * x[i];
    s.noise += d * d;
    const a = Math.abs(d);
    if (a > s.maxAbs || a !== a) s.maxAbs = a;
  }
  s.n += x.length;
}

export const castCommand: Command = {
  name: 'cast',
  summary: 'quantize raw float32 to a number format or scheme (or decode codes back to float32)',
  usage:
    'lowbit cast --to FORMAT [--rounding MODE] [--seed N] [--no-saturate] [--scale S] [--codes] [--stats] [--in F] [--out F]\n' +
    '       lowbit cast --to SCHEME [--row-length N] [--group G] [--granularity G] [--asym] [--scale-format F] [--clip C] [--codes] [--stats] [--in F] [--out F]\n' +
    '       lowbit cast --from FORMAT|SCHEME --codes [--row-length N] [--scale S] [--in F] [--out F]',
  options: [
    { name: 'to', type: 'string', help: 'target format (lowbit formats) or scheme (lowbit schemes)' },
    { name: 'from', type: 'string', help: 'decode codes of this format or scheme to float32 (needs --codes)' },
    { name: 'row-length', type: 'int', help: 'schemes: floats per row (default: the whole input is one row)', min: 1 },
    ...SCHEME_OPTIONS.map((o) => schemeOptionFlag(o.flag)), // --group, --granularity, --tile, --asym, --zero-point, --scale-format, --clip, --percentile
    { name: 'rounding', type: 'string', help: 'rounding mode', choices: ROUNDING_MODES, default: 'nearest-even' },
    { name: 'seed', type: 'int', help: 'seed of stochastic rounding', default: 0 },
    { name: 'saturate', type: 'boolean', help: 'clamp overflow to ±max finite; --no-saturate overflows to inf (or NaN)', default: true },
    { name: 'nan-to-zero', type: 'boolean', help: 'map NaN to 0 in formats without NaN', default: false },
    { name: 'scale', type: 'number', help: 'divide by S before quantizing, multiply after', default: 1 },
    { name: 'codes', type: 'boolean', help: 'write (or, with --from, read) codes instead of float32', default: false },
    { name: 'in', type: 'string', help: 'input file (default stdin)' },
    { name: 'out', type: 'string', help: 'output file (default stdout), replaced atomically' },
    { name: 'bias', type: 'int', help: 'exponent bias of a generic eXmY format' },
    { name: 'subnormals', type: 'boolean', help: 'generic eXmY: keep subnormals (--no-subnormals flushes them)' },
    { name: 'specials', type: 'string', help: 'generic eXmY special values', choices: ['ieee', 'fn', 'fnuz', 'none'] },
    { name: 'stats', type: 'boolean', help: 'print SQNR dB, max abs error and bits per weight to stderr', default: false },
    { name: 'json', type: 'boolean', help: 'with --stats: one JSON line', default: false },
  ],
  async run(a) {
    const to = a.values.to as string | undefined;
    const from = a.values.from as string | undefined;
    if ((to === undefined) === (from === undefined)) fail('cast needs exactly one of --to FORMAT or --from FORMAT');
    const scale = a.values.scale as number;
    if (!(scale > 0)) fail(`--scale must be positive, got ${scale}`);
    const input = a.values.in as string | undefined;
    const output = a.values.out as string | undefined;
    const scheme = schemeOf((to ?? from) as string, a);
    if (scheme) return runScheme(scheme, a, to === undefined);
    if (a.given.has('row-length')) fail('--row-length applies to schemes, not to element formats (they are cast value by value)');
    if (from !== undefined) {
      if (!a.values.codes) fail('--from decodes codes: add --codes');
      const f = formatOf(from, a);
      const w = codeWidth(f);
      await runStream({
        input,
        output,
        unit: w,
        transform(chunk, _index, dest) {
          const n = chunk.length / w;
          const codes = w === 1 ? chunk : w === 2 ? new Uint16Array(chunk.slice().buffer) : new Uint32Array(chunk.slice().buffer);
          const bytes = dest(n * 4); // written from without a copy
          const dst = decode(f, codes, new Float32Array(bytes.buffer, bytes.byteOffset, n), scale);
          return new Uint8Array(dst.buffer, dst.byteOffset, n * 4);
        },
      });
      return;
    }
    const f = formatOf(to as string, a);
    const opts: CastOptions = {
      rounding: a.values.rounding as RoundingMode,
      seed: a.values.seed as number,
      saturate: a.values.saturate as boolean,
      nanToZero: a.values['nan-to-zero'] as boolean,
      scale,
    };
    // validate options before any output exists
    fakeQuant(f, new Float32Array(0), opts);
    const stats: Stats | undefined = a.values.stats ? { signal: 0, noise: 0, maxAbs: 0, n: 0 } : undefined;
    const scratch: { buf?: Float32Array } = {};
    let fbuf = new Float32Array(0);
    await runStream({
      input,
      output,
      unit: 4,
      transform(chunk, index, dest) {
        const x = f32View(chunk, scratch);
        const n = x.length;
        const o = { ...opts, offset: index };
        // results go straight into the buffer they are written from (dest), without a copy
        if (a.values.codes) {
          const w = codeWidth(f);
          const bytes = dest(n * w);
          const view = w === 1 ? bytes : w === 2 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.buffer, bytes.byteOffset, n);
          const c = encode(f, x, o, view);
          if (stats) {
            if (fbuf.length < n) fbuf = new Float32Array(n);
            accumulate(stats, x, decode(f, c, fbuf.subarray(0, n), scale));
          }
          return new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
        }
        const bytes = dest(n * 4);
        const y = fakeQuant(f, x, o, new Float32Array(bytes.buffer, bytes.byteOffset, n));
        if (stats) accumulate(stats, x, y);
        return new Uint8Array(y.buffer, y.byteOffset, n * 4);
      },
    });
    if (stats) {
      const sqnr = stats.noise === 0 ? Infinity : 10 * Math.log10(stats.signal / stats.noise);
      const report = { format: f.name, elements: stats.n, sqnrDb: sqnr, maxAbsError: stats.maxAbs, bitsPerWeight: f.bits };
      process.stderr.write(
        a.values.json
          ? JSON.stringify({ ...report, sqnrDb: Number.isFinite(sqnr) ? sqnr : null }) + '\n'
          : `${f.name}: ${stats.n} values, SQNR ${sqnr.toFixed(2)} dB, max abs error ${stats.maxAbs.toPrecision(4)}, ${f.bits} bits per weight\n`,
      );
    }
  },
};

const SCHEME_FLAGS = SCHEME_OPTIONS.map((o) => o.flag);
const ELEMENT_ONLY = ['saturate', 'nan-to-zero', 'scale', 'bias', 'subnormals', 'specials'];

/** The scheme named by --to/--from, or undefined when it is a bare element format (the streaming cast). */
function schemeOf(name: string, a: ParsedArgs): QuantScheme | undefined {
  const o: ResolveOptions = {
    granularity: a.values.granularity as Granularity | undefined,
    groupSize: a.values.group as number | undefined,
    tileSize: a.values.tile as number | undefined,
    asymmetric: a.given.has('asym') ? (a.values.asym as boolean) : undefined,
    zeroPoint: a.values['zero-point'] as 'int' | 'float' | undefined,
    scaleFormat: a.values['scale-format'] as ScaleFormatName | undefined,
    clip: a.values.clip as ClipMethod | undefined,
    percentile: a.values.percentile as number | undefined,
  };
  if (o.asymmetric === false) o.asymmetric = undefined;
  const generic = SCHEME_FLAGS.some((k) => a.given.has(k) && !(k === 'asym' && a.values.asym === false));
  if (generic) {
    if (a.given.has('rounding')) o.rounding = a.values.rounding as RoundingMode;
    if (a.given.has('seed')) o.seed = a.values.seed as number;
  }
  if ((a.given.has('zero-point') || a.given.has('percentile')) && !generic) fail('--zero-point and --percentile need --asym or --clip');
  const s = resolveScheme(name, generic ? o : {});
  if (s.family === 'element') return undefined;
  for (const k of ELEMENT_ONLY) if (a.given.has(k)) fail(`--${k} applies to element formats, not to the scheme ${s.id}`);
  if (!generic && (a.given.has('rounding') || a.given.has('seed')))
    fail(`${s.id} rounds to nearest even; --rounding and --seed apply to element formats, alone or with --group/--granularity (e.g. --to int4 --group 32 --rounding stochastic)`);
  return s;
}

function readAll(input: string | undefined): Promise<Uint8Array> {
  if (input) {
    const { fd } = openInput(input);
    fs.closeSync(fd);
    return Promise.resolve(new Uint8Array(fs.readFileSync(input)));
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    process.stdin.on('data', (d: Buffer) => parts.push(d));
    process.stdin.on('end', () => resolve(new Uint8Array(Buffer.concat(parts))));
    process.stdin.on('error', reject);
  });
}

function writeAll(output: string | undefined, bytes: Uint8Array): Promise<void> {
  if (output) {
    writeFileAtomic(output, bytes, 'output (--out)');
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => process.stdout.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (e) => (e ? reject(e) : resolve())));
}

function f32Of(bytes: Uint8Array): Float32Array {
  const copy = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength >>> 2);
}

function asBytes(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** Rows of a tensor-scoped layout from its byte size (packedBytes grows with rows). */
function rowsFromBytes(s: QuantScheme, size: number, rowLength: number): number {
  let lo = 1;
  let hi = Math.max(1, Math.ceil(size / Math.max(1, s.packedBytes(1, rowLength))) + 1);
  while (s.packedBytes(hi, rowLength) < size) hi *= 2;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (s.packedBytes(mid, rowLength) < size) lo = mid + 1;
    else hi = mid;
  }
  if (s.packedBytes(lo, rowLength) !== size) fail(`${size} bytes are not a whole number of ${s.id} rows of ${rowLength}`);
  return lo;
}

async function runScheme(s: QuantScheme, a: ParsedArgs, decoding: boolean): Promise<void> {
  const input = a.values.in as string | undefined;
  const output = a.values.out as string | undefined;
  noteInput(input);
  if (output) checkOutput(output, 'output (--out)');
  const rowLength = a.values['row-length'] as number | undefined;
  if (rowLength !== undefined) s.packedBytes(1, rowLength); // block-size check before any output
  if (decoding) {
    if (!a.values.codes) fail('--from decodes codes: add --codes');
    if (rowLength === undefined) fail(`--from ${s.id} needs --row-length (the layout depends on it)`);
    if (!s.tensorScoped && input) {
      const rowBytes = s.packedBytes(1, rowLength);
      let out = new Float32Array(0);
      await runStream({
        input,
        output,
        unit: rowBytes,
        transform(chunk) {
          const rows = chunk.length / rowBytes;
          if (out.length < rows * rowLength) out = new Float32Array(rows * rowLength);
          return asBytes(dequantizeScheme(s, chunk.slice(), rows, rowLength, out.subarray(0, rows * rowLength)));
        },
      });
      return;
    }
    const bytes = await readAll(input);
    if (bytes.length === 0) fail('input is empty');
    const rows = s.tensorScoped ? rowsFromBytes(s, bytes.length, rowLength) : bytes.length / s.packedBytes(1, rowLength);
    if (!Number.isInteger(rows)) fail(`input has ${bytes.length} bytes, not a whole number of ${s.id} rows of ${rowLength} (${s.packedBytes(1, rowLength)} bytes each)`);
    await writeAll(output, asBytes(dequantizeScheme(s, bytes, rows, rowLength)));
    return;
  }
  const codesOut = a.values.codes as boolean;
  const stats: Stats | undefined = a.values.stats ? { signal: 0, noise: 0, maxAbs: 0, n: 0 } : undefined;
  let packedTotal = 0;
  const convert = (x: Float32Array, rows: number, L: number): Uint8Array => {
    const packed = quantizeScheme(s, x, rows, L);
    packedTotal += packed.length;
    if (!codesOut || stats) {
      const y = dequantizeScheme(s, packed, rows, L);
      if (stats) accumulate(stats, x, y);
      if (!codesOut) return asBytes(y);
    }
    return packed;
  };
  if (rowLength !== undefined && !s.tensorScoped) {
    if (input) {
      const { fd, size } = openInput(input);
      fs.closeSync(fd);
      if (size % 4 !== 0) fail(`input ${input} has ${size} bytes, not a multiple of 4 (float32)`);
      if ((size / 4) % rowLength !== 0) fail(`input ${input} has ${size / 4} floats, not a whole number of rows of ${rowLength}`);
    }
    const scratch: { buf?: Float32Array } = {};
    await runStream({
      input,
      output,
      unit: 4 * rowLength,
      transform(chunk) {
        const x = f32View(chunk, scratch);
        return convert(x, x.length / rowLength, rowLength);
      },
    });
  } else {
    const bytes = await readAll(input);
    if (bytes.length % 4 !== 0) fail(`input has ${bytes.length} bytes, not a multiple of 4 (float32)`);
    if (bytes.length === 0) fail('input is empty');
    const x = f32Of(bytes);
    const L = rowLength ?? x.length;
    if (x.length % L !== 0) fail(`input has ${x.length} floats, not a whole number of rows of ${L}`);
    const out = convert(x, x.length / L, L);
    await writeAll(output, out);
  }
  if (stats) {
    const sqnr = stats.noise === 0 ? Infinity : 10 * Math.log10(stats.signal / stats.noise);
    const bpw = (packedTotal * 8) / stats.n;
    const report = { scheme: s.id, elements: stats.n, sqnrDb: sqnr, maxAbsError: stats.maxAbs, bitsPerWeight: bpw };
    process.stderr.write(
      a.values.json
        ? JSON.stringify({ ...report, sqnrDb: Number.isFinite(sqnr) ? sqnr : null }) + '\n'
        : `${s.id}: ${stats.n} values, SQNR ${sqnr.toFixed(2)} dB, max abs error ${stats.maxAbs.toPrecision(4)}, ${bpw.toFixed(3)} bits per weight\n`,
    );
  }
}
