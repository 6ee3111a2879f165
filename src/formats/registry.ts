/**
 * The named number formats, and parsing of format names typed by users:
 *   - a registered name or alias (case-insensitive): fp8_e4m3fn, bf16, int4, nf4, ...
 *   - any minifloat `eXmY` (e.g. e3m4, e5m10), with optional bias / subnormals / specials overrides
 *   - a user codebook `codebook:v0,v1,...`
 */
import { fail } from '../errors.js';
import { defineCodebook } from './codebook.js';
import type { Format, Specials } from './descriptor.js';
import { decodeFloat, defineFloat } from './float.js';
import { defineInt } from './int.js';

const named: Format[] = [];
const byName = new Map<string, Format>();

function add(f: Format, ...aliases: string[]): Format {
  named.push(f);
  for (const n of [f.name, ...aliases]) byName.set(n.toLowerCase(), f);
  return f;
}

for (let b = 2; b <= 8; b++) add(defineInt(b, true));
for (let b = 2; b <= 8; b++) add(defineInt(b, false));

// OCP OFP8: E4M3 max (1 + 6/8) * 2^8 = 448, no inf, NaN = S.1111.111; E5M2 IEEE-like, max 1.75 * 2^15 = 57344.
export const fp8_e4m3fn = add(defineFloat({ name: 'fp8_e4m3fn', expBits: 4, manBits: 3, bias: 7, specials: 'fn', description: 'OCP FP8 E4M3 (no inf, one NaN per sign)' }), 'e4m3fn', 'fp8_e4m3', 'float8_e4m3fn');
// fnuz (Graphcore/AMD): bias one larger, no -0, 0x80 = NaN; max 1.875 * 2^7 = 240 and 1.75 * 2^15 = 57344.
add(defineFloat({ name: 'fp8_e4m3fnuz', expBits: 4, manBits: 3, bias: 8, specials: 'fnuz', description: 'FP8 E4M3 fnuz (no inf, no -0, NaN = 0x80)' }), 'e4m3fnuz', 'float8_e4m3fnuz');
export const fp8_e5m2 = add(defineFloat({ name: 'fp8_e5m2', expBits: 5, manBits: 2, bias: 15, specials: 'ieee', description: 'OCP FP8 E5M2 (IEEE-like: inf and NaN)' }), 'e5m2', 'float8_e5m2');
add(defineFloat({ name: 'fp8_e5m2fnuz', expBits: 5, manBits: 2, bias: 16, specials: 'fnuz', description: 'FP8 E5M2 fnuz (no inf, no -0, NaN = 0x80)' }), 'e5m2fnuz', 'float8_e5m2fnuz');
// OCP MX v1.0 element types: E2M3 max 1.875 * 2^2 = 7.5, E3M2 max 1.75 * 2^4 = 28, E2M1 max 1.5 * 2^2 = 6.
export const fp6_e2m3fn = add(defineFloat({ name: 'fp6_e2m3fn', expBits: 2, manBits: 3, bias: 1, specials: 'none', description: 'OCP MX FP6 E2M3 (all codes finite)' }), 'e2m3', 'fp6_e2m3', 'e2m3fn');
export const fp6_e3m2fn = add(defineFloat({ name: 'fp6_e3m2fn', expBits: 3, manBits: 2, bias: 3, specials: 'none', description: 'OCP MX FP6 E3M2 (all codes finite)' }), 'e3m2', 'fp6_e3m2', 'e3m2fn');
export const fp4_e2m1fn = add(defineFloat({ name: 'fp4_e2m1fn', expBits: 2, manBits: 1, bias: 1, specials: 'none', description: 'OCP MX FP4 E2M1 (all codes finite)' }), 'e2m1', 'fp4_e2m1', 'fp4', 'e2m1fn', 'float4_e2m1fn');
// OCP MX E8M0: unsigned power of two 2^(E - 127), E = 0..254, 0xFF = NaN; no zero.
export const e8m0 = add(defineFloat({ name: 'e8m0', expBits: 8, manBits: 0, bias: 127, signed: false, hasZero: false, specials: 'fn', description: 'OCP MX E8M0 scale (unsigned power of two, 0xFF = NaN)' }), 'fp8_e8m0fnu', 'e8m0fnu', 'float8_e8m0fnu');
export const fp16 = add(defineFloat({ name: 'fp16', expBits: 5, manBits: 10, bias: 15, specials: 'ieee', description: 'IEEE binary16' }), 'f16', 'float16', 'half', 'e5m10');
export const bf16 = add(defineFloat({ name: 'bf16', expBits: 8, manBits: 7, bias: 127, specials: 'ieee', description: 'bfloat16' }), 'bfloat16', 'e8m7');
add(defineFloat({ name: 'tf32', expBits: 8, manBits: 10, bias: 127, specials: 'ieee', description: 'NVIDIA TensorFloat-32 (19 bits)' }), 'e8m10');
export const fp32 = add(defineFloat({ name: 'fp32', expBits: 8, manBits: 23, bias: 127, specials: 'ieee', description: 'IEEE binary32' }), 'f32', 'float32', 'float', 'e8m23');

/** NF4 levels of bitsandbytes / QLoRA (float32 values as published). */
export const NF4_LEVELS = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];
export const nf4 = add(defineCodebook('nf4', NF4_LEVELS, 'NormalFloat4 (QLoRA): 16 normal quantiles in [-1, 1], exact zero'));

/** A minifloat's values in code order, as a codebook (the FP4 variants people tabulate). */
function codebookOfFloat(name: string, expBits: number, manBits: number, bias: number, description: string) {
  const f = defineFloat({ name: `${name}_float`, expBits, manBits, bias, specials: 'none' });
  const values = Array.from({ length: 2 ** f.bits }, (_, c) => decodeFloat(f, c));
  return defineCodebook(name, values, description);
}
add(codebookOfFloat('fp4_e2m1_cb', 2, 1, 1, 'FP4 E2M1 as a 16-entry codebook (code = sign|exp|man)'));
add(codebookOfFloat('fp4_e3m0_cb', 3, 0, 3, 'FP4 E3M0 as a 16-entry codebook: 0, ±2^-2..2^4 (log-like)'));
add(codebookOfFloat('fp4_e1m2_cb', 1, 2, 1, 'FP4 E1M2 as a 16-entry codebook: 0..1.75 in steps of 0.25 (int-like)'));

export const formats: readonly Format[] = named;

export interface FormatOverrides {
  /** exponent bias for eXmY (default 2^(X-1) - 1) */
  bias?: number;
  /** subnormals on (default) or flushed */
  subnormals?: boolean;
  /** special-value policy for eXmY (default ieee when it fits, else none) */
  specials?: Specials;
}

const SPECIALS: readonly Specials[] = ['ieee', 'fn', 'fnuz', 'none'];

/**
 * Resolve a format name. Overrides apply only to generic eXmY names; they are refused for named
 * formats so that `fp8_e4m3fn --bias 3` cannot silently mean something else.
 */
export function parseFormat(name: string, overrides: FormatOverrides = {}): Format {
  const key = name.trim().toLowerCase();
  const hasOverrides = overrides.bias !== undefined || overrides.subnormals !== undefined || overrides.specials !== undefined;
  if (overrides.specials !== undefined && !SPECIALS.includes(overrides.specials))
    fail(`unknown specials policy '${overrides.specials}' (valid: ${SPECIALS.join(', ')})`);
  const generic = /^(?:fp\d+_)?e(\d+)m(\d+)$/.exec(key);
  const known = byName.get(key);
  if (known && !(hasOverrides && generic)) {
    if (hasOverrides) fail(`--bias, --no-subnormals and --specials apply to generic eXmY formats, not to ${known.name}`);
    return known;
  }
  if (generic) {
    const expBits = Number(generic[1]);
    const manBits = Number(generic[2]);
    const bias = overrides.bias ?? 2 ** (expBits - 1) - 1;
    const specials = overrides.specials ?? (manBits > 0 && expBits >= 2 ? 'ieee' : 'none');
    const sub = overrides.subnormals ?? true;
    const spelled = `e${expBits}m${manBits}` + (overrides.bias !== undefined ? `_b${bias}` : '') + (specials !== 'ieee' ? specials : '') + (sub ? '' : '_nosub');
    return defineFloat({ name: spelled, expBits, manBits, bias, specials, subnormals: sub });
  }
  if (key.startsWith('codebook:')) {
    const parts = key.slice('codebook:'.length).split(',').filter((s) => s.trim() !== '');
    const values = parts.map((s) => {
      const v = Number(s);
      if (!Number.isFinite(v)) fail(`codebook level '${s}' is not a finite number`);
      return v;
    });
    return defineCodebook(`codebook${values.length}`, values, `user codebook of ${values.length} levels`);
  }
  fail(`unknown format '${name}' (valid: ${named.map((f) => f.name).join(', ')}, any eXmY such as e3m4, or codebook:v0,v1,...)`);
}
