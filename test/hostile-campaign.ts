/**
 * The hostile-input campaign of issue 22, as a program: seeded cases over every reader and every
 * command, each run through the CLI's own `main` in this process (hundreds of runs per second instead
 * of one process start each). A case is a command line whose input is a damaged file (truncated,
 * bytes flipped, header fields set to extremes), a special file (directory, FIFO, device, symlink
 * loop, missing, empty) in place of an input or an output, or an absurd option value.
 *
 * Each run is judged:
 *   clean   exit 2, one line on stderr starting "lowbit: ", no output file created or changed, no temp file
 *   ok      exit 0 (a damaged byte in tensor data is still a valid file), inputs unchanged, no temp file
 *   other   anything else: exit 1 (internal error), a stack trace, a partial output, a changed input,
 *           a leftover temp file, more than LIMIT_MS.
 * Prints one JSON line per `other` case and a summary line {tried, clean, ok, other}.
 *
 *   node dist/test/hostile-campaign.js [--seed N] [--count N] [--only SUBSTRING]
 * (`node --test` runs it through test/reliability-campaign.test.ts with a seeded subset.)
 */
import v8 from 'node:v8';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

const root = path.resolve(import.meta.dirname, '../..');
const data = (f: string) => path.join(root, 'data', f);
const { main } = (await import(path.join(root, 'dist/src/cli/main.js'))) as { main(argv: readonly string[]): Promise<number> };

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const SEED = Number(opt('seed', '1'));
const COUNT = Number(opt('count', '300'));
const ONLY = opt('only', '');
const VERBOSE = argv.includes('--verbose');
const LIMIT_MS = 60000; // generous: CI machines are shared

// ---------------------------------------------------------------------------------------------------
// seeded randomness

let state = SEED >>> 0 || 1;
function rand(): number {
  // mulberry32
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const int = (n: number) => Math.floor(rand() * n);

// ---------------------------------------------------------------------------------------------------
// the workspace: pristine inputs, made once with the CLI itself

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-campaign-'));
const base = path.join(work, 'base');
const cases = path.join(work, 'case');
const outDir = path.join(work, 'out');
for (const d of [base, cases, outDir]) fs.mkdirSync(d);
process.chdir(outDir); // relative names (an option value taken as a file name) land where they are checked
const TEXT = path.join(base, 'text.txt');
fs.writeFileSync(TEXT, fs.readFileSync(data('tinystories-valid-head.txt'), 'utf8').slice(0, 6000));

/** run main with stdout/stderr captured */
async function run(args: readonly string[]): Promise<{ rc: number; stdout: string; stderr: string; ms: number }> {
  const out: string[] = [];
  const err: string[] = [];
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  const capture = (sink: string[]) =>
    ((chunk: string | Uint8Array, enc?: unknown, cb?: unknown) => {
      sink.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('latin1'));
      const done = typeof enc === 'function' ? enc : cb;
      if (typeof done === 'function') queueMicrotask(() => (done as () => void)());
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = capture(out);
  process.stderr.write = capture(err);
  const t0 = performance.now();
  let rc: number;
  try {
    rc = await main(args);
  } catch (e) {
    rc = -1;
    err.push(`escaped: ${(e as Error)?.stack ?? String(e)}`);
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
  return { rc, stdout: out.join(''), stderr: err.join(''), ms: performance.now() - t0 };
}

async function setup(args: string[]): Promise<void> {
  const r = await run(args);
  if (r.rc !== 0) throw new Error(`campaign setup failed: lowbit ${args.join(' ')}: ${r.stderr}`);
}

const GGUF = path.join(base, 'm.gguf');
const BIN = path.join(base, 'm.bin');
const TOK_BIN = path.join(base, 'tok512.bin');
const TOK_MODEL = path.join(base, 'tok512.model');
fs.copyFileSync(data('stories260K.gguf'), GGUF);
fs.copyFileSync(data('stories260K.bin'), BIN);
fs.copyFileSync(data('tok512.bin'), TOK_BIN);
fs.copyFileSync(data('tok512.model'), TOK_MODEL);
const ST_DIR = path.join(base, 'hf');
fs.mkdirSync(ST_DIR);
const ST = path.join(ST_DIR, 'model.safetensors');
await setup(['convert', GGUF, ST]);
const LOWBIT_ST = path.join(base, 'q.safetensors');
await setup(['quantize', GGUF, LOWBIT_ST, '--type', 'int4', '--group', '32']);
const IMATRIX_GGUF = path.join(base, 'imatrix.gguf');
const IMATRIX_DAT = path.join(base, 'imatrix.dat');
await setup(['imatrix', GGUF, '--text', TEXT, '--ctx', '16', '--chunks', '2', '-o', IMATRIX_GGUF]);
await setup(['imatrix', GGUF, '--text', TEXT, '--ctx', '16', '--chunks', '2', '-o', IMATRIX_DAT]);
const LOGITS = path.join(base, 'logits.bin');
await setup(['eval', GGUF, '--text', TEXT, '--ctx', '16', '--chunks', '1', '--save-logits', LOGITS]);
const RECIPE = path.join(base, 'recipe.json');
{
  // a real recipe: the one quantize --dry-run --json reports for a llama.cpp mixture
  const r = await run(['quantize', GGUF, '--type', 'Q4_K_M', '--dry-run', '--json']);
  fs.writeFileSync(RECIPE, r.rc === 0 ? JSON.stringify((JSON.parse(r.stdout) as { recipe: unknown }).recipe) : '{}');
}
const F32 = path.join(base, 'x.f32');
fs.writeFileSync(F32, new Uint8Array(Float32Array.from({ length: 256 }, (_, i) => Math.sin(i) * 3).buffer));
const CODES = path.join(base, 'x.q4_0');
await setup(['cast', '--to', 'q4_0', '--row-length', '32', '--codes', '--in', F32, '--out', CODES]);
const HAS_RECIPE = (await run(['quantize', GGUF, path.join(outDir, 'r.gguf'), '--recipe', RECIPE, '--dry-run'])).rc === 0;
for (const f of fs.readdirSync(outDir)) fs.rmSync(path.join(outDir, f), { recursive: true, force: true });

// ---------------------------------------------------------------------------------------------------
// damaged files

/** A damaged copy of `src`: truncated, bytes flipped (mostly in the header), or a header field set to an extreme. */
function damage(src: Uint8Array): { bytes: Uint8Array; how: string } {
  const b = new Uint8Array(src);
  const head = Math.min(b.length, 4096);
  switch (int(5)) {
    case 0: {
      // truncation, mostly inside the header
      const at = rand() < 0.7 ? int(head + 1) : int(b.length + 1);
      return { bytes: b.subarray(0, at), how: `truncated at ${at}` };
    }
    case 1: {
      const n = 1 + int(4);
      const where: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = rand() < 0.8 ? int(head) : int(b.length);
        b[p] ^= 1 << int(8);
        where.push(p);
      }
      return { bytes: b, how: `bits flipped at ${where.join(',')}` };
    }
    case 2: {
      // a 4- or 8-byte field in the header set to an extreme
      const w = pick([4, 8]);
      const p = int(Math.max(1, head - w));
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const v = pick(['zero', 'max', 'neg', 'big']);
      if (w === 4) dv.setUint32(p, v === 'zero' ? 0 : v === 'max' ? 0xffffffff : v === 'neg' ? 0x80000000 : 0x7fffffff, true);
      else dv.setBigUint64(p, v === 'zero' ? 0n : v === 'max' ? 0xffffffffffffffffn : v === 'neg' ? 1n << 63n : 1n << 40n, true);
      return { bytes: b, how: `${w}-byte field at ${p} = ${v}` };
    }
    case 3: {
      // a block of random bytes
      const p = int(head);
      const n = 1 + int(64);
      for (let i = p; i < Math.min(b.length, p + n); i++) b[i] = int(256);
      return { bytes: b, how: `random bytes at ${p}..${p + n}` };
    }
    default: {
      // garbage appended, or the file doubled
      const extra = rand() < 0.5 ? Uint8Array.from({ length: 1 + int(100) }, () => int(256)) : src;
      const c = new Uint8Array(b.length + extra.length);
      c.set(b);
      c.set(extra, b.length);
      return { bytes: c, how: `${extra.length} bytes appended` };
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// the cases

interface Case {
  what: string;
  args: string[];
  /** files the run reads (must be unchanged after it) */
  inputs: string[];
}

const T = TEXT;
const out = (name: string) => path.join(outDir, name);

/** Command lines that read `f` as the given kind of input. */
function readersOf(kind: string, f: string): string[][] {
  switch (kind) {
    case 'gguf':
    case 'safetensors':
    case 'lowbit-safetensors':
      return [
        ['inspect', f],
        ['inspect', '--json', f],
        ['convert', f, out('o.gguf')],
        ['convert', f, out('o.safetensors'), '--type', 'f16'],
        ['quantize', f, out('q.gguf'), '--type', 'Q8_0'],
        ['quantize', f, out('q.gguf'), '--type', 'Q4_K_M'],
        ['quantize', f, out('q.safetensors'), '--type', 'int4', '--group', '32'],
        ['eval', f, '--text', T, '--ctx', '16', '--chunks', '1'],
        ['generate', f, '-p', 'Once', '-n', '2', '--temp', '0'],
        ['imatrix', f, '--text', T, '--ctx', '16', '--chunks', '1', '-o', out('i.gguf')],
      ];
    case 'llama2c':
      return [
        ['inspect', f],
        ['convert', f, out('o.gguf'), '--tokenizer', TOK_BIN],
        ['quantize', f, out('q.gguf'), '--type', 'Q8_0'],
        ['eval', f, '-z', TOK_BIN, '--text', T, '--ctx', '16', '--chunks', '1'],
        ['generate', f, '-z', TOK_BIN, '-p', 'Once', '-n', '2', '--temp', '0'],
      ];
    case 'tokenizer':
      return [
        ['eval', BIN, '-z', f, '--text', T, '--ctx', '16', '--chunks', '1'],
        ['generate', BIN, '-z', f, '-p', 'Once', '-n', '2', '--temp', '0'],
        ['convert', BIN, out('o.gguf'), '--tokenizer', f],
      ];
    case 'imatrix':
      return [['quantize', GGUF, out('q.gguf'), '--type', 'Q4_K_M', '--imatrix', f]];
    case 'logits':
      return [['eval', GGUF, '--base-logits', f]];
    case 'recipe':
      return HAS_RECIPE ? [['quantize', GGUF, out('q.gguf'), '--recipe', f]] : [];
    case 'f32':
      return [
        ['cast', '--to', 'int8', '--in', f, '--out', out('c.bin')],
        ['cast', '--to', 'e4m3', '--codes', '--in', f, '--out', out('c.bin')],
        ['cast', '--to', 'mxfp4', '--row-length', '32', '--in', f, '--out', out('c.bin')],
        ['cast', '--to', 'nvfp4', '--in', f, '--out', out('c.bin'), '--stats'],
      ];
    case 'codes':
      return [
        ['cast', '--from', 'q4_0', '--codes', '--row-length', '32', '--in', f, '--out', out('c.bin')],
        ['cast', '--from', 'e4m3', '--codes', '--in', f, '--out', out('c.bin')],
      ];
    case 'text':
      return [
        ['eval', GGUF, '--text', f, '--ctx', '16', '--chunks', '1'],
        ['imatrix', GGUF, '--text', f, '--ctx', '16', '--chunks', '1', '-o', out('i.gguf')],
        ['train', out('t.gguf'), '--dim', '8', '--layers', '1', '--heads', '1', '--hidden', '8', '--vocab-from', TOK_BIN, '--text', f, '--steps', '1', '--batch', '1', '--ctx', '8'],
      ];
  }
  return [];
}

const SOURCES: readonly [string, string][] = [
  ['gguf', GGUF],
  ['safetensors', ST],
  ['lowbit-safetensors', LOWBIT_ST],
  ['llama2c', BIN],
  ['tokenizer', TOK_BIN],
  ['tokenizer', TOK_MODEL],
  ['imatrix', IMATRIX_GGUF],
  ['imatrix', IMATRIX_DAT],
  ['logits', LOGITS],
  ['recipe', RECIPE],
  ['f32', F32],
  ['codes', CODES],
];

let seq = 0;
/** a damaged copy of one of the sources, read by one command */
function damagedCase(): Case | undefined {
  const [kind, src] = pick(SOURCES);
  const lines = readersOf(kind, '@');
  if (!lines.length) return undefined;
  const { bytes, how } = damage(new Uint8Array(fs.readFileSync(src)));
  // keep the name (and the folder's config.json for a Hugging Face checkpoint): the name is part of the input
  const dir = path.join(cases, `c${seq++}`);
  fs.mkdirSync(dir);
  const f = path.join(dir, path.basename(src));
  fs.writeFileSync(f, bytes);
  const inputs = [f];
  if (kind === 'safetensors') {
    fs.copyFileSync(path.join(ST_DIR, 'config.json'), path.join(dir, 'config.json'));
    inputs.push(path.join(dir, 'config.json'));
  }
  const args = pick(lines).map((x) => (x === '@' ? f : x));
  return { what: `${kind} ${how}`, args, inputs };
}

/** a Hugging Face checkpoint whose config.json is damaged */
function damagedConfigCase(): Case {
  const dir = path.join(cases, `c${seq++}`);
  fs.mkdirSync(dir);
  fs.copyFileSync(ST, path.join(dir, 'model.safetensors'));
  const cfg = new TextEncoder().encode(fs.readFileSync(path.join(ST_DIR, 'config.json'), 'utf8'));
  let bytes: Uint8Array;
  let how: string;
  if (rand() < 0.5) ({ bytes, how } = damage(cfg));
  else {
    // a field set to a hostile value
    const c = JSON.parse(new TextDecoder().decode(cfg)) as Record<string, unknown>;
    const key = pick(Object.keys(c));
    const v = pick([0, -1, 1e9, 1e300, 'x', null, [], {}, 0.5, 2 ** 53]);
    c[key] = v;
    bytes = new TextEncoder().encode(JSON.stringify(c));
    how = `${key} = ${JSON.stringify(v)}`;
  }
  fs.writeFileSync(path.join(dir, 'config.json'), bytes);
  const f = path.join(dir, 'model.safetensors');
  const args = pick(readersOf('safetensors', f));
  return { what: `config.json ${how}`, args, inputs: [f, path.join(dir, 'config.json')] };
}

/** a special file in place of an input or an output */
function specialCase(): Case {
  const dir = path.join(cases, `c${seq++}`);
  fs.mkdirSync(dir);
  const kind = pick(['directory', 'fifo', 'device', 'loop', 'missing', 'empty', 'dangling']);
  const make = (p: string): string => {
    switch (kind) {
      case 'directory':
        fs.mkdirSync(p);
        break;
      case 'fifo':
        if (spawnSync('mkfifo', [p]).status !== 0) fs.mkdirSync(p);
        break;
      case 'device':
        return '/dev/null';
      case 'loop':
        fs.symlinkSync(path.basename(p) + '.b', p);
        fs.symlinkSync(path.basename(p), p + '.b');
        break;
      case 'empty':
        fs.writeFileSync(p, '');
        break;
      case 'dangling':
        fs.symlinkSync(path.join(dir, 'nowhere'), p);
        break;
    }
    return p;
  };
  if (rand() < 0.5) {
    // as an input
    const [k, src] = pick(SOURCES);
    const lines = readersOf(k, '@');
    const f = make(path.join(dir, path.basename(src)));
    const args = (lines.length ? pick(lines) : ['inspect', '@']).map((x) => (x === '@' ? f : x));
    return { what: `${kind} as input (${k})`, args, inputs: [] };
  }
  // as an output: it must not be replaced
  const lines: [string, string[]][] = [
    ['o.gguf', ['convert', GGUF, '@']],
    ['o.safetensors', ['convert', GGUF, '@']],
    ['q.gguf', ['quantize', GGUF, '@', '--type', 'Q8_0']],
    ['r.html', ['quantize', GGUF, out('q.gguf'), '--type', 'Q8_0', '--report', '@']],
    ['i.gguf', ['imatrix', GGUF, '--text', T, '--ctx', '16', '--chunks', '1', '-o', '@']],
    ['l.bin', ['eval', GGUF, '--text', T, '--ctx', '16', '--chunks', '1', '--save-logits', '@']],
    ['c.bin', ['cast', '--to', 'int8', '--in', F32, '--out', '@']],
    ['c.bin', ['cast', '--to', 'mxfp4', '--in', F32, '--out', '@']],
  ];
  const [name, line] = pick(lines);
  const target = make(path.join(dir, name));
  return { what: `${kind} as output`, args: line.map((x) => (x === '@' ? target : x)), inputs: [] };
}

/** an output that is one of the run's inputs under another name */
function aliasCase(): Case {
  const dir = path.join(cases, `c${seq++}`);
  fs.mkdirSync(dir);
  const m = path.join(dir, 'm.gguf');
  const t = path.join(dir, 't.txt');
  fs.copyFileSync(GGUF, m);
  fs.copyFileSync(TEXT, t);
  const how = pick(['same', 'dot', 'hard', 'sym', 'dotdot']);
  const alias = (p: string) => {
    const a = path.join(dir, `alias-${path.basename(p)}`);
    if (how === 'same') return p;
    if (how === 'dot') return path.join(dir, '.', path.basename(p)).replace(path.basename(p), `./${path.basename(p)}`);
    if (how === 'dotdot') return path.join(dir, '..', path.basename(dir), path.basename(p));
    if (how === 'hard') fs.linkSync(p, a);
    else fs.symlinkSync(path.basename(p), a);
    return a;
  };
  const lines: (() => string[])[] = [
    () => ['convert', m, alias(m)],
    () => ['quantize', m, alias(m), '--type', 'Q8_0'],
    () => ['eval', m, '--text', t, '--ctx', '16', '--chunks', '1', '--save-logits', alias(m)],
    () => ['eval', m, '--text', t, '--ctx', '16', '--chunks', '1', '--save-logits', alias(t)],
    () => ['imatrix', m, '--text', t, '--ctx', '16', '--chunks', '1', '-o', alias(t)],
  ];
  return { what: `output = input (${how})`, args: pick(lines)(), inputs: [m, t] };
}

const HOSTILE_VALUES = ['-1', '0', '1', '1e9', '1e400', 'NaN', '', 'abc', '0x10', '1.5', '-0', '99999999999999999999', '--', 'x'.repeat(3000), '-5e-324', 'Infinity'];
const BASE_LINES: readonly string[][] = [
  ['inspect', GGUF],
  ['convert', GGUF, out('o.gguf')],
  ['quantize', GGUF, out('q.gguf'), '--type', 'Q8_0'],
  ['quantize', GGUF, out('q.safetensors'), '--type', 'int4'],
  ['eval', GGUF, '--text', T, '--ctx', '16', '--chunks', '1'],
  ['generate', GGUF, '-p', 'Once', '-n', '2', '--temp', '0'],
  ['imatrix', GGUF, '--text', T, '--ctx', '16', '--chunks', '1', '-o', out('i.gguf')],
  ['cast', '--to', 'int8', '--in', F32, '--out', out('c.bin')],
  ['cast', '--to', 'mxfp4', '--row-length', '32', '--in', F32, '--out', out('c.bin')],
  ['formats'],
  ['schemes'],
];

/** an absurd value for one option of a command (the command's own table) */
async function optionCase(): Promise<Case> {
  const { loadCommand } = (await import(path.join(root, 'dist/src/cli/commands/index.js'))) as { loadCommand(n: string): Promise<{ options: readonly { name: string; type: string }[] } | undefined> };
  const line = [...pick(BASE_LINES)];
  const cmd = await loadCommand(line[0]);
  const o = pick(cmd!.options);
  // expensive algorithms and long runs are not what this campaign measures
  if (['algo', 'calib', 'target-size', 'target-bpw', 'steps', 'eval', 'allocate'].includes(o.name)) return { what: 'skipped', args: [], inputs: [] };
  const v = o.type === 'boolean' ? pick(['', 'true', 'maybe', '2']) : pick(HOSTILE_VALUES);
  const flag = o.type === 'boolean' && v === '' ? [`--${o.name}`] : [`--${o.name}=${v}`];
  return { what: `--${o.name} ${JSON.stringify(v.length > 20 ? v.slice(0, 20) + '...' : v)}`, args: [...line, ...flag], inputs: [GGUF, T, F32] };
}

// ---------------------------------------------------------------------------------------------------
// judging

function listing(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    m.set(name, st.isFile() ? `${st.size}:${st.mtimeMs}:${st.ino}` : st.isSymbolicLink() ? `link:${fs.readlinkSync(p)}` : `${st.mode}`);
  }
  return m;
}
function digest(file: string): string {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile()) return `special:${st.mode}`;
    const b = fs.readFileSync(file);
    let h = 2166136261;
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
    return `${b.length}:${h >>> 0}`;
  } catch {
    return 'missing';
  }
}

const summary = { seed: SEED, tried: 0, clean: 0, ok: 0, other: 0, byKind: {} as Record<string, { tried: number; clean: number; ok: number; other: number }> };
const t0 = performance.now();
const devNull = fs.statSync('/dev/null');
for (let i = 0; summary.tried < COUNT && i < COUNT * 4; i++) {
  const r = rand();
  const c = r < 0.45 ? damagedCase() : r < 0.55 ? damagedConfigCase() : r < 0.7 ? specialCase() : r < 0.78 ? aliasCase() : await optionCase();
  if (!c || !c.args.length) continue;
  if (ONLY && !c.args.join(' ').includes(ONLY) && !c.what.includes(ONLY)) continue;
  const kind = `${c.args[0]}:${c.what.split(' ')[0]}`;
  const inputsBefore = c.inputs.map(digest);
  const casesBefore = listing(cases);
  const res = await run(c.args);
  const problems: string[] = [];
  const stderr = res.stderr.trim();
  if (res.rc === 2) {
    if (!/^lowbit: /.test(stderr) || stderr.includes('\n')) problems.push('exit 2 without exactly one "lowbit: " line');
    if (fs.readdirSync(outDir).length) problems.push(`output written by a failed run: ${fs.readdirSync(outDir).join(', ')}`);
    const after = listing(cases);
    for (const [name, v] of after) if (casesBefore.get(name) !== v) problems.push(`file ${name} created or changed by a failed run`);
    for (const [name] of casesBefore) if (!after.has(name)) problems.push(`file ${name} removed by a failed run`);
  } else if (res.rc !== 0) problems.push(`exit ${res.rc}`);
  // a special file (FIFO, symlink, directory) is never replaced, whatever the exit code
  const afterAll = listing(cases);
  for (const [name, v] of casesBefore) if (!/^\d+:/.test(v) && afterAll.get(name) !== v) problems.push(`special file ${name} replaced or removed`);
  if (/internal error|\n\s+at .*\(.*:\d+:\d+\)/.test(res.stderr)) problems.push('internal error or stack trace');
  c.inputs.forEach((f, k) => {
    if (digest(f) !== inputsBefore[k]) problems.push(`input ${path.basename(f)} changed`);
  });
  const temps = [...listing(work).keys()].filter((n) => n.endsWith('.tmp'));
  if (temps.length) problems.push(`temp files left: ${temps.join(', ')}`);
  const nowNull = fs.statSync('/dev/null');
  if (!nowNull.isCharacterDevice() || nowNull.ino !== devNull.ino) problems.push('/dev/null replaced');
  if (res.ms > LIMIT_MS) problems.push(`took ${res.ms.toFixed(0)} ms`);
  summary.tried++;
  const k = (summary.byKind[kind] ??= { tried: 0, clean: 0, ok: 0, other: 0 });
  k.tried++;
  if (problems.length) {
    summary.other++;
    k.other++;
    process.stdout.write(JSON.stringify({ case: summary.tried, what: c.what, args: c.args.map((x) => x.replace(work, '$W')), rc: res.rc, problems, stderr: stderr.slice(0, 500) }) + '\n');
  } else if (res.rc === 2) {
    if (VERBOSE) process.stdout.write(JSON.stringify({ clean: c.what, args: c.args.map((x) => x.replace(work, '$W')), stderr }) + '\n');
    summary.clean++;
    k.clean++;
  } else {
    if (VERBOSE) process.stdout.write(JSON.stringify({ ok: c.what, args: c.args.map((x) => x.replace(work, '$W')) }) + '\n');
    summary.ok++;
    k.ok++;
  }
  for (const f of fs.readdirSync(outDir)) fs.rmSync(path.join(outDir, f), { recursive: true, force: true });
  for (const f of fs.readdirSync(cases)) fs.rmSync(path.join(cases, f), { recursive: true, force: true });
}
fs.rmSync(work, { recursive: true, force: true });
process.stdout.write(JSON.stringify({ summary: { ...summary, seconds: (performance.now() - t0) / 1000 } }) + '\n');
process.exit(0); // worker threads of the kernels may linger
