#!/usr/bin/env node
// Golden vectors for every GGML block type, produced by llama.cpp's own C code.
//
//   node tools/ggml-golden/generate.mjs                 regenerate test/golden/ggml/
//   node tools/ggml-golden/generate.mjs --compare-opt   also build at -O0 and -O3 -march=native and
//                                                       report any output byte that differs from -O2
//
// Steps: clone node-llama-cpp's llama.cpp bundle into .cache/llama.cpp-src (reused when present),
// compile tools/ggml-golden/driver.c with ggml/src/ggml.c + ggml/src/ggml-quants.c, write the float32
// datasets (own PRNG, fixed seed), run the driver per dataset, and write manifest.json with sha256s.
// Identical output files are stored once; several manifest entries may then name the same file.
// See README.md in this folder.

import { findLlamaCppBundle } from '../../scripts/setup-llama-cpp.mjs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const outDir = join(root, 'test', 'golden', 'ggml');
const cacheDir = join(root, '.cache');
const srcDir = join(cacheDir, 'llama.cpp-src');

/** Compiler flags: no FMA contraction and no fast-math, so results follow C's float semantics literally. */
export const CFLAGS = ['-O2', '-std=gnu11', '-ffp-contract=off', '-fno-fast-math'];
const SEED = 20240607;
const RANDOM_BLOCK_ELEMENTS = 2048;

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
}

// ---------- llama.cpp sources ----------
const findBundle = findLlamaCppBundle;

function ensureSources() {
  if (!existsSync(join(srcDir, 'ggml', 'src', 'ggml-quants.c'))) {
    const bundle = findBundle();
    mkdirSync(cacheDir, { recursive: true });
    rmSync(srcDir, { recursive: true, force: true });
    console.log(`cloning ${relative(root, bundle)} -> ${relative(root, srcDir)}`);
    sh('git', ['clone', '--quiet', bundle, srcDir], { stdio: 'inherit' });
  }
  const commit = sh('git', ['-C', srcDir, 'rev-parse', 'HEAD']).trim();
  let tag = null;
  try {
    tag = JSON.parse(readFileSync(join(dirname(findBundle()), 'llama.cpp.info.json'), 'utf8')).tag ?? null;
  } catch { /* informational only */ }
  return { commit, tag };
}

// ---------- build ----------
function buildDriver(cflags) {
  const key = createHash('sha256').update(cflags.join(' ')).update(readFileSync(join(here, 'driver.c'))).digest('hex').slice(0, 12);
  const buildDir = join(cacheDir, 'ggml-golden-build', key);
  const exe = join(buildDir, 'driver');
  if (existsSync(exe)) return exe;
  mkdirSync(buildDir, { recursive: true });
  // ggml.c includes a CMake-generated version header; any values do.
  writeFileSync(join(buildDir, 'ggml-version.h'), '#pragma once\n#define GGML_VERSION "golden"\n#define GGML_COMMIT "golden"\n');
  const inc = ['-I', buildDir, '-I', join(srcDir, 'ggml', 'include'), '-I', join(srcDir, 'ggml', 'src')];
  const objs = [];
  for (const [name, file] of [['ggml', join(srcDir, 'ggml', 'src', 'ggml.c')], ['ggml-quants', join(srcDir, 'ggml', 'src', 'ggml-quants.c')], ['driver', join(here, 'driver.c')]]) {
    const obj = join(buildDir, `${name}.o`);
    console.log(`gcc ${cflags.join(' ')} -c ${relative(root, file)}`);
    sh('gcc', [...cflags, ...inc, '-c', file, '-o', obj], { stdio: 'inherit' });
    objs.push(obj);
  }
  sh('gcc', ['-o', exe, ...objs, '-lm', '-lpthread'], { stdio: 'inherit' });
  return exe;
}

// ---------- datasets ----------
/** splitmix32-style generator; uniform() in [0,1) with 32 random bits. */
function makeRng(seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const uniform = () => next() / 4294967296;
  const normal = () => {
    const u = 1 - uniform(); // (0,1]
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return { next, uniform, normal };
}

function studentT(rng, dof) {
  let chi2 = 0;
  for (let i = 0; i < dof; i++) chi2 += rng.normal() ** 2;
  return rng.normal() / Math.sqrt(chi2 / dof);
}

/** Each dataset: rows x rowLength float32 values plus one importance vector (length rowLength). */
function makeDatasets() {
  const rng = makeRng(SEED);
  const sets = [];
  const add = (name, rows, rowLength, fill) => {
    const x = new Float32Array(rows * rowLength);
    for (let r = 0; r < rows; r++) for (let j = 0; j < rowLength; j++) x[r * rowLength + j] = fill(r, j);
    // positive, spread over orders of magnitude, like a real imatrix (mean of squared activations)
    const importance = new Float32Array(rowLength);
    for (let j = 0; j < rowLength; j++) importance[j] = Math.exp(1.5 * rng.normal()) * (j % 97 === 0 ? 20 : 1);
    sets.push({ name, rows, rowLength, x, importance });
  };
  add('normal', 4, 512, () => 0.05 * rng.normal());
  add('normal-1024', 1, 1024, () => rng.normal());
  add('heavy-tail', 2, 1024, () => {
    const v = 0.02 * studentT(rng, 3);
    return rng.uniform() < 0.01 ? v * 50 : v;
  });
  add('zero', 1, 512, () => 0);
  // row 0: each 32-block one positive constant; row 1: negative; row 2: sign and size alternate per 32-block
  const consts = [0.7, 1, 3e-3, 12.5, 0.1, 2 ** -7, 65504 / 8, 1e-6];
  add('constant', 3, 512, (r, j) => {
    const b = j >> 5;
    const c = consts[b % consts.length];
    if (r === 0) return c;
    if (r === 1) return -c;
    return (b & 1 ? -1 : 1) * consts[(b * 3) % consts.length];
  });
  // f16 scales become subnormal (~1e-8 / 1e-6 values) or underflow to zero (~1e-30)
  const tinyScale = [1e-8, 1e-30, 1e-6];
  add('tiny', 3, 512, (r) => tinyScale[r] * rng.normal());
  // near f16 max: scales stay finite (max |x| 6e4 < 65504)
  add('huge', 2, 512, (r, j) => (r === 0 ? (rng.uniform() * 2 - 1) * 6e4 : (j % 61 === 0 ? (j & 1 ? -6e4 : 6e4) : 1e3 * rng.normal())));
  // per 32-block: zero, tiny, normal, large, constant, single spike, then repeat
  add('mixed', 2, 512, (r, j) => {
    const kind = ((j >> 5) + r) % 6;
    switch (kind) {
      case 0: return 0;
      case 1: return 1e-8 * rng.normal();
      case 2: return 0.05 * rng.normal();
      case 3: return 300 * rng.normal();
      case 4: return -0.25;
      default: return (j & 31) === 7 ? 4 : 0;
    }
  });
  return sets;
}

// ---------- run ----------
function runAll(exe, dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'inputs'), { recursive: true });
  const entries = [];
  const failures = [];
  const datasets = makeDatasets();
  const list = [];
  for (const ds of datasets) {
    const inPath = join(dir, 'inputs', `${ds.name}.f32`);
    const impPath = join(dir, 'inputs', `${ds.name}.importance.f32`);
    writeFileSync(inPath, new Uint8Array(ds.x.buffer));
    writeFileSync(impPath, new Uint8Array(ds.importance.buffer));
    list.push(`${ds.name} ${ds.rows} ${ds.rowLength} ${inPath} ${impPath}\n`);
  }
  const listPath = join(cacheDir, `ggml-golden-datasets-${process.pid}.txt`);
  writeFileSync(listPath, list.join(''));
  const quantOut = sh(exe, ['quant', dir, listPath], { env: { ...process.env, GGML_NO_BACKTRACE: '1' }, stdio: ['ignore', 'pipe', 'ignore'] });
  unlinkSync(listPath);
  for (const line of quantOut.split('\n').filter(Boolean)) {
    const e = JSON.parse(line);
    if (e.status !== 'ok') { failures.push(e); continue; }
    delete e.status;
    e.input = `inputs/${e.dataset}.f32`;
    if (e.variant === 'imatrix') e.importance = `inputs/${e.dataset}.importance.f32`;
    entries.push(e);
  }
  const out = sh(exe, ['random', dir, String(RANDOM_BLOCK_ELEMENTS), String(SEED)]);
  for (const line of out.split('\n').filter(Boolean)) {
    const e = JSON.parse(line);
    delete e.status;
    entries.push(e);
  }
  return { entries, failures };
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** Replace duplicate files by references to the first file with the same content; return file records. */
function dedupe(dir, entries) {
  const bySha = new Map();
  const files = new Map();
  const canon = (name) => {
    if (name == null) return null;
    if (files.has(name)) return files.get(name).name;
    const buf = readFileSync(join(dir, name));
    const h = sha256(buf);
    const first = bySha.get(h);
    if (first) {
      unlinkSync(join(dir, name));
      files.set(name, first);
      return first.name;
    }
    const rec = { name, bytes: buf.length, sha256: h };
    bySha.set(h, rec);
    files.set(name, rec);
    return name;
  };
  for (const e of entries) {
    for (const k of ['input', 'importance', 'bytes', 'dequant']) if (k in e) e[k] = canon(e[k]);
  }
  return [...bySha.values()].sort((a, b) => a.name.localeCompare(b.name));
}

function listFiles(dir) {
  const res = [];
  const walk = (d) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else res.push(relative(dir, p));
    }
  };
  walk(dir);
  return res.sort();
}

function compareOpt(baseline, cflagsList) {
  const baseDir = join(cacheDir, 'ggml-golden-cmp', 'base');
  const base = runAll(baseline, baseDir);
  for (const cflags of cflagsList) {
    const exe = buildDriver(cflags);
    const dir = join(cacheDir, 'ggml-golden-cmp', cflags.join('_').replace(/[^\w.=-]/g, ''));
    const res = runAll(exe, dir);
    const diffs = [];
    for (const f of listFiles(baseDir)) {
      const other = join(dir, f);
      if (!existsSync(other) || sha256(readFileSync(other)) !== sha256(readFileSync(join(baseDir, f)))) diffs.push(f);
    }
    const failDiff = JSON.stringify(res.failures) !== JSON.stringify(base.failures);
    console.log(`${cflags.join(' ')} vs ${CFLAGS.join(' ')}: ${diffs.length} differing files${failDiff ? ', different failures' : ''}${diffs.length ? ': ' + diffs.slice(0, 20).join(', ') : ''}`);
  }
}

function main() {
  const { commit, tag } = ensureSources();
  const exe = buildDriver(CFLAGS);
  const types = sh(exe, ['types']).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const { entries, failures } = runAll(exe, outDir);
  const files = dedupe(outDir, entries);
  entries.sort((a, b) => a.id - b.id || a.dataset.localeCompare(b.dataset) || a.variant.localeCompare(b.variant));
  const manifest = {
    generator: 'tools/ggml-golden/generate.mjs',
    llamaCpp: { tag, commit },
    cflags: CFLAGS.join(' '),
    seed: SEED,
    note: 'float32/uint8 little-endian raw files; variants: ref = quantize_row_X_ref (ggml type traits from_float_ref), noimatrix = quantize_X(..., quant_weights=NULL), imatrix = quantize_X(..., importance), dequant = random block bytes with sane scales. dequant files are dequantize_row_X of the bytes.',
    ggmlTypes: types,
    failures,
    entries,
    files,
  };
  writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
  const total = files.reduce((s, f) => s + f.bytes, 0);
  console.log(`${entries.length} entries, ${files.length} files, ${(total / 1048576).toFixed(2)} MiB, ${failures.length} failed variants`);
  for (const f of failures) console.log(`  failed: ${f.type} ${f.dataset} ${f.variant}`);
  if (process.argv.includes('--compare-opt')) {
    compareOpt(exe, [['-O0', ...CFLAGS.slice(1)], ['-O3', '-march=native', ...CFLAGS.slice(1)], ['-O2', '-std=gnu11']]);
  }
}

main();
