/**
 * Loading of the WebAssembly kernels built from wasm/*.ts (scripts/build-wasm.mjs). Each kernel module
 * comes in two builds: relaxed SIMD and plain SIMD; the relaxed one is used where the engine validates
 * it (env.ts). Node compiles synchronously on first use; in browsers, whose main thread refuses
 * synchronous compilation of large modules, await `initKernels()` once at start-up (until then, and
 * wherever WebAssembly SIMD is missing, the public functions use the scalar references).
 */
import { hasRelaxedSimd, hasSimd, wasmSetting } from '../env.js';

export type WasmVariant = 'relaxed' | 'simd' | 'off';

export interface KernelSource {
  readonly wasmRelaxed: string;
  readonly wasmSimd: string;
}

export interface KernelInstance {
  readonly exports: Record<string, unknown>;
  readonly memory: WebAssembly.Memory;
  readonly variant: 'relaxed' | 'simd';
}

let forced: WasmVariant | undefined;
const instances = new Map<string, KernelInstance>();
const modules = new Map<string, WebAssembly.Module>();

/** Force one build ('relaxed', 'simd') or the scalar references ('off'); undefined restores auto. */
export function setWasmVariant(v: WasmVariant | undefined): void {
  if (v === 'relaxed' && !hasRelaxedSimd()) throw new Error('this engine has no relaxed SIMD');
  forced = v;
}

/** The build the kernels use now: setWasmVariant's, else LOWBIT_WASM's (off, simd, relaxed), else the best. */
export function wasmVariant(): WasmVariant {
  if (forced) return forced;
  const env = wasmSetting();
  if (!hasSimd() || env === 'off') return 'off';
  if (env === 'simd') return 'simd';
  return hasRelaxedSimd() ? 'relaxed' : 'simd';
}

function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function key(name: string, variant: string): string {
  return `${name}:${variant}`;
}

/** Compile a kernel module ahead of use (asynchronously: required on browser main threads). */
export async function compileKernel(name: string, src: KernelSource): Promise<void> {
  for (const variant of ['relaxed', 'simd'] as const) {
    if (variant === 'relaxed' && !hasRelaxedSimd()) continue;
    if (!hasSimd()) continue;
    const k = key(name, variant);
    if (!modules.has(k)) modules.set(k, await WebAssembly.compile(decodeBase64(variant === 'relaxed' ? src.wasmRelaxed : src.wasmSimd) as BufferSource));
  }
}

/**
 * The instance of a kernel module for the current variant, with a fresh memory of `initialPages`
 * 64 KiB pages (growable to 4 GiB); null when WebAssembly SIMD is unavailable or turned off.
 */
export function kernelInstance(name: string, src: KernelSource, initialPages: number): KernelInstance | null {
  const variant = wasmVariant();
  if (variant === 'off') return null;
  const k = key(name, variant);
  const have = instances.get(k);
  if (have !== undefined) return have;
  const inst = newKernelInstance(name, src, initialPages);
  if (inst) instances.set(k, inst);
  return inst;
}

/** A new, unshared instance with its own memory of `pages` 64 KiB pages (null as above). */
export function newKernelInstance(name: string, src: KernelSource, pages: number): KernelInstance | null {
  const variant = wasmVariant();
  if (variant === 'off') return null;
  const k = key(name, variant);
  let inst: KernelInstance | null = null;
  try {
    let mod = modules.get(k);
    if (!mod) {
      mod = new WebAssembly.Module(decodeBase64(variant === 'relaxed' ? src.wasmRelaxed : src.wasmSimd) as BufferSource);
      modules.set(k, mod);
    }
    const memory = new WebAssembly.Memory({ initial: pages, maximum: 65536 });
    const instance = new WebAssembly.Instance(mod, { env: { memory } });
    inst = { exports: instance.exports as Record<string, unknown>, memory, variant };
  } catch {
    return null; // e.g. synchronous compilation refused (browser main thread): reference path until initKernels()
  }
  return inst;
}

/** A kernel source built also for a shared memory (`// build: shared-memory`, see scripts/build-wasm.mjs). */
export interface SharedKernelSource extends KernelSource {
  readonly wasmRelaxedShared?: string;
  readonly wasmSimdShared?: string;
}

/**
 * A new instance of the shared-memory build with a shared memory of `pages` 64 KiB pages, and its
 * module (threads instantiate it on the same memory: threads.ts); null where shared memory or
 * WebAssembly SIMD is unavailable.
 */
export function newSharedKernelInstance(name: string, src: SharedKernelSource, pages: number): (KernelInstance & { module: WebAssembly.Module }) | null {
  const variant = wasmVariant();
  if (variant === 'off' || typeof SharedArrayBuffer === 'undefined') return null;
  const bytes = variant === 'relaxed' ? src.wasmRelaxedShared : src.wasmSimdShared;
  if (!bytes) return null;
  const k = key(name, `${variant}-shared`);
  try {
    let mod = modules.get(k);
    if (!mod) {
      mod = new WebAssembly.Module(decodeBase64(bytes) as BufferSource);
      modules.set(k, mod);
    }
    const memory = new WebAssembly.Memory({ initial: pages, maximum: 65536, shared: true });
    const instance = new WebAssembly.Instance(mod, { env: { memory } });
    return { exports: instance.exports as Record<string, unknown>, memory, variant, module: mod };
  } catch {
    return null;
  }
}
