#!/usr/bin/env node
// Builds llama.cpp's llama-quantize, llama-perplexity, llama-imatrix, llama-bench and llama-completion (CPU only) from the source bundle
// shipped inside node-llama-cpp, for comparisons and benchmarks. Idempotent: does nothing when the binaries
// already exist. Prints the binary paths (one per line: name<TAB>path).
//
//   node scripts/build-llama-cpp.mjs [--jobs N] [--force]
//
// Sources: .cache/llama.cpp-src (cloned from node-llama-cpp's llama/gitRelease.bundle when absent -- see
// scripts/setup-llama-cpp.mjs -- shared with tools/ggml-golden/generate.mjs). Build: .cache/llama.cpp-build.
// Needs git, cmake and a C/C++ compiler; uses Ninja when installed (else cmake's default generator) and runs
// the compiler under `nice` where there is one.
//
// AMX: a native build on a CPU that reports AMX compiles ggml's AMX path, which holds quantized weights in
// tile form. Some virtual machines report AMX in CPUID but never enable its register state, and there
// every llama.cpp prompt pass dies of SIGILL at the first tile instruction (seen on a KVM Xeon, 2026-12).
// So when the native target has AMX, a 15-line probe runs one tile instruction first; if it dies, the build
// undefines the AMX macros (the rest of the native ISA, and the repacked-weight paths, stay) and records
// that in .cache/llama.cpp-build/lowbit-build.json. A later run rebuilds when that choice changes.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLlamaCppBundle } from './setup-llama-cpp.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = join(root, '.cache');
const srcDir = join(cacheDir, 'llama.cpp-src');
const buildDir = join(cacheDir, 'llama.cpp-build');
const TARGETS = ['llama-quantize', 'llama-perplexity', 'llama-imatrix', 'llama-bench', 'llama-completion'];

const args = process.argv.slice(2);
const jobsArg = args.indexOf('--jobs');
const jobs = jobsArg >= 0 ? Number(args[jobsArg + 1]) : 2;
const force = args.includes('--force');

const exe = (t) => (process.platform === 'win32' ? `${t}.exe` : t);
/** bin/ for single-config generators (Ninja, Makefiles), bin/Release/ for Visual Studio */
const binPath = (t) => [join(buildDir, 'bin', exe(t)), join(buildDir, 'bin', 'Release', exe(t))].find(existsSync) ?? join(buildDir, 'bin', exe(t));
const has = (cmd, arg = '--version') => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0;
/** run a long build step at low priority where `nice` exists */
const niced = (cmd, argv) => (process.platform !== 'win32' && has('nice', '--version') ? ['nice', ['-n', '15', cmd, ...argv]] : [cmd, argv]);

function run(cmd, argv) {
  console.error(`$ ${cmd} ${argv.join(' ')}`);
  execFileSync(cmd, argv, { stdio: ['ignore', 'inherit', 'inherit'] });
}

const AMX_PROBE = `#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 2; /* ARCH_REQ_XCOMP_PERM, XTILEDATA */
  unsigned char cfg[64];
  memset(cfg, 0, sizeof cfg);
  cfg[0] = 1; cfg[16] = 64; cfg[48] = 16; /* palette 1; tile 0: 16 rows of 64 bytes */
  _tile_loadconfig(cfg);
  _tile_zero(0);
  _tile_release();
  return 0;
}
`;

/**
 * Whether the native build would compile ggml's AMX path on a CPU that cannot run it: the C compiler's
 * -march=native defines __AMX_INT8__ and the probe above dies (or cannot be built). False off x86 Linux.
 */
function amxBroken() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return false;
  const cc = process.env.CC || 'cc';
  const macros = spawnSync(cc, ['-march=native', '-dM', '-E', '-x', 'c', '-'], { input: '', encoding: 'utf8' });
  if (macros.status !== 0 || !/#define __AMX_INT8__ /.test(macros.stdout)) return false;
  const dir = join(tmpdir(), `lowbit-amx-probe-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  try {
    writeFileSync(join(dir, 'probe.c'), AMX_PROBE);
    const built = spawnSync(cc, ['-O1', '-mamx-tile', join(dir, 'probe.c'), '-o', join(dir, 'probe')], { stdio: 'ignore' });
    if (built.status !== 0) return true;
    const r = spawnSync(join(dir, 'probe'), [], { stdio: 'ignore' });
    return r.status !== 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const NO_AMX_FLAGS = '-U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__';
const stampPath = join(buildDir, 'lowbit-build.json');
function readStamp() {
  try {
    return JSON.parse(readFileSync(stampPath, 'utf8'));
  } catch {
    return null;
  }
}

function ensureSources() {
  if (existsSync(join(srcDir, 'CMakeLists.txt'))) return;
  const bundle = findLlamaCppBundle();
  mkdirSync(cacheDir, { recursive: true });
  rmSync(srcDir, { recursive: true, force: true });
  run('git', ['clone', '--quiet', bundle, srcDir]);
}

function main() {
  const noAmx = amxBroken();
  const stamp = readStamp();
  const sameChoice = (stamp?.noAmx ?? false) === noAmx;
  if (!force && sameChoice && TARGETS.every((t) => existsSync(binPath(t)))) {
    for (const t of TARGETS) console.log(`${t}\t${binPath(t)}`);
    return;
  }
  ensureSources();
  run(...niced('cmake', [
    '-S', srcDir, '-B', buildDir, ...(has('ninja') ? ['-G', 'Ninja'] : []),
    '-DCMAKE_BUILD_TYPE=Release',
    '-DGGML_NATIVE=ON',
    '-DBUILD_SHARED_LIBS=OFF',
    '-DLLAMA_OPENSSL=OFF', // LLAMA_CURL is deprecated in this version; no network access is needed
    '-DLLAMA_BUILD_SERVER=OFF',
    '-DLLAMA_BUILD_TESTS=OFF',
    '-DLLAMA_BUILD_EXAMPLES=OFF',
    '-DLLAMA_BUILD_APP=OFF',
    '-DLLAMA_BUILD_TOOLS=ON',
    '-DGGML_OPENMP=OFF',
    // -U after -march=native's builtin macros: ggml's AMX code is left out, nothing else changes
    // (always passed, so that a cached configure forgets an earlier choice)
    `-DCMAKE_C_FLAGS=${noAmx ? NO_AMX_FLAGS : ''}`,
    `-DCMAKE_CXX_FLAGS=${noAmx ? NO_AMX_FLAGS : ''}`,
  ]));
  if (noAmx) console.error('[llama.cpp] this CPU reports AMX but cannot run a tile instruction: building without ggml\'s AMX path');
  run(...niced('cmake', ['--build', buildDir, '--config', 'Release', '-j', String(jobs), '--target', ...TARGETS]));
  writeFileSync(stampPath, JSON.stringify({ noAmx }) + '\n');
  for (const t of TARGETS) {
    if (!existsSync(binPath(t))) throw new Error(`build finished but ${binPath(t)} is missing`);
    console.log(`${t}\t${binPath(t)}`);
  }
}

main();
