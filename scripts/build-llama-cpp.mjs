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
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
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

function ensureSources() {
  if (existsSync(join(srcDir, 'CMakeLists.txt'))) return;
  const bundle = findLlamaCppBundle();
  mkdirSync(cacheDir, { recursive: true });
  rmSync(srcDir, { recursive: true, force: true });
  run('git', ['clone', '--quiet', bundle, srcDir]);
}

function main() {
  if (!force && TARGETS.every((t) => existsSync(binPath(t)))) {
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
  ]));
  run(...niced('cmake', ['--build', buildDir, '--config', 'Release', '-j', String(jobs), '--target', ...TARGETS]));
  for (const t of TARGETS) {
    if (!existsSync(binPath(t))) throw new Error(`build finished but ${binPath(t)} is missing`);
    console.log(`${t}\t${binPath(t)}`);
  }
}

main();
