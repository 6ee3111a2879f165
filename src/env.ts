/**
 * Environment detection, in one place. Core modules ask here instead of touching `process`.
 */
export const isNode: boolean =
  typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === 'string';

let relaxed: boolean | undefined;
/** Does this engine validate a module that uses a relaxed-SIMD instruction? */
export function hasRelaxedSimd(): boolean {
  if (relaxed === undefined) {
    // (module (func (result v128) (f32x4.relaxed_madd (v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0))))
    // code section: size 61 = 1 (count) + 1 (body size) + 59; body 59 = 1 (no locals) + 3 x 18 (0xfd 0x0c + 16 bytes)
    // + 3 (0xfd, LEB128 0x105 = relaxed_madd) + 1 (end)
    const zero16 = new Array<number>(16).fill(0);
    const constZero = [0xfd, 0x0c, ...zero16];
    const bytes = new Uint8Array([
      0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 61, 1, 59, 0, ...constZero, ...constZero, ...constZero, 0xfd, 0x85, 0x02, 0x0b,
    ]);
    try {
      relaxed = WebAssembly.validate(bytes);
    } catch {
      relaxed = false;
    }
  }
  return relaxed;
}

let simd: boolean | undefined;
/** Does this engine support fixed-width SIMD (v128)? (asked once: callers ask per kernel call) */
export function hasSimd(): boolean {
  if (simd === undefined) {
    // (module (func (result v128) v128.const i64x2 0 0))
    const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);
    try {
      simd = WebAssembly.validate(bytes);
    } catch {
      simd = false;
    }
  }
  return simd;
}

/** Number of hardware threads (navigator.hardwareConcurrency, or Node's os.availableParallelism), at least 1. */
export function hardwareConcurrency(): number {
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  const n = nav?.hardwareConcurrency;
  return typeof n === 'number' && n >= 1 ? n : 1;
}

/**
 * LOWBIT_WASM from the environment (Node): 'off' (scalar references), 'simd' (plain SIMD builds) or
 * 'relaxed'; undefined when unset or elsewhere.
 */
export function wasmSetting(): 'off' | 'simd' | 'relaxed' | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  const v = env?.LOWBIT_WASM?.toLowerCase();
  return v === 'off' || v === 'simd' || v === 'relaxed' ? v : undefined;
}
