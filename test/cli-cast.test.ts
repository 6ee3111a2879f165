import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveScheme, schemes } from '../src/quant/index.js';
import { decode, encode, fakeQuant } from '../src/kernels/cast.js';
import { parseFormat } from '../src/formats/registry.js';

// dist/test/cli-cast.test.js -> repository root
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'bin', 'lowbit.js');

function lowbit(args: string[], input?: Uint8Array) {
  const r = spawnSync(process.execPath, [bin, ...args], { input, maxBuffer: 1 << 26 });
  return { code: r.status, stdout: new Uint8Array(r.stdout), stderr: r.stderr.toString() };
}

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-cast-'));
}

function normal(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return x;
}

const bytesOf = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

function writeInput(dir: string, x: Float32Array | Uint8Array, name = 'x.bin'): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, x instanceof Float32Array ? bytesOf(x) : x);
  return p;
}

/** Exit 2, one line on stderr naming the problem, no output file and no temp file left. */
function assertRefused(r: ReturnType<typeof lowbit>, dir: string, pattern: RegExp, keep: string[]) {
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
  assert.deepEqual(fs.readdirSync(dir).sort(), keep.sort());
}

test('lowbit schemes lists every registered scheme (table and JSON)', () => {
  const r = lowbit(['schemes', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(Buffer.from(r.stdout).toString()) as { id: string; bitsPerWeight: number; blockSize: string; bytesPerBlock: number | null; description: string }[];
  assert.deepEqual(rows.map((x) => x.id), schemes().map((s) => s.id));
  const mx = rows.find((x) => x.id === 'mxfp4')!;
  assert.deepEqual([mx.bitsPerWeight, mx.blockSize, mx.bytesPerBlock], [4.25, '32', 17]);
  const t = lowbit(['schemes']);
  assert.equal(t.code, 0);
  const text = Buffer.from(t.stdout).toString();
  for (const s of schemes()) assert.ok(text.includes(s.id), s.id);
});

test('cast --to SCHEME: dequantized output and --codes equal the library; --from decodes; row streaming', () => {
  const dir = tmpdir();
  const x = normal(8 * 256, 4);
  const inp = writeInput(dir, x);
  for (const id of ['mxfp4', 'mxfp6_e3m2', 'nvfp4', 'nf4_dq', 'int4_g32', 'mxint8']) {
    const s = resolveScheme(id);
    const packed = s.quantizeRef(x, 8, 256);
    const out = path.join(dir, `${id}.f32`);
    let r = lowbit(['cast', '--to', id, '--row-length', '256', '--in', inp, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(new Uint8Array(fs.readFileSync(out)), bytesOf(s.dequantizeRef(packed, 8, 256)), id);
    const codes = path.join(dir, `${id}.codes`);
    r = lowbit(['cast', '--to', id, '--row-length', '256', '--codes', '--in', inp, '--out', codes]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(new Uint8Array(fs.readFileSync(codes)), packed, id);
    r = lowbit(['cast', '--from', id, '--codes', '--row-length', '256', '--in', codes]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, new Uint8Array(fs.readFileSync(out)), `${id} --from`);
    // stdin -> stdout gives the same bytes
    r = lowbit(['cast', '--to', id, '--row-length', '256', '--codes'], bytesOf(x));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, packed, `${id} stdin`);
  }
  // default row length: the whole input is one row
  const s = resolveScheme('mxfp4');
  const r = lowbit(['cast', '--to', 'mxfp4', '--codes', '--in', inp]);
  assert.deepEqual(r.stdout, s.quantizeRef(x, 1, x.length));
  fs.rmSync(dir, { recursive: true });
});

test('cast --to ELEMENT --group/--asym builds a generic scheme; --stats reports SQNR, max error, bpw', () => {
  const dir = tmpdir();
  const x = normal(4 * 256, 6);
  const inp = writeInput(dir, x);
  const r = lowbit(['cast', '--to', 'int4', '--group', '128', '--asym', '--row-length', '256', '--codes', '--stats', '--json', '--in', inp]);
  assert.equal(r.code, 0, r.stderr);
  const s = resolveScheme('int4', { groupSize: 128, asymmetric: true });
  assert.deepEqual(r.stdout, s.quantizeRef(x, 4, 256));
  const st = JSON.parse(r.stderr);
  assert.equal(st.scheme, 'uint4_g128_asym_f16');
  assert.equal(st.elements, 1024);
  assert.ok(st.sqnrDb > 15 && st.sqnrDb < 30, String(st.sqnrDb));
  assert.equal(st.bitsPerWeight, ((1024 / 128) * 67 * 8) / 1024);
  const t = lowbit(['cast', '--to', 'mxfp8_e4m3', '--stats', '--in', inp, '--out', path.join(dir, 'y')]);
  assert.match(t.stderr, /^mxfp8_e4m3: 1024 values, SQNR \d+\.\d\d dB, max abs error [\d.e-]+, 8\.250 bits per weight\n$/);
  const b = lowbit(['cast', '--to', 'int8', '--granularity', 'block2d', '--tile', '16', '--row-length', '64', '--in', inp, '--out', path.join(dir, 'z')]);
  assert.equal(b.code, 0, b.stderr);
  fs.rmSync(dir, { recursive: true });
});

test('scheme errors: exit 2, one line, nothing written', () => {
  const dir = tmpdir();
  const x = normal(512, 1);
  const inp = writeInput(dir, x);
  const out = path.join(dir, 'out.bin');
  const keep = ['x.bin'];
  assertRefused(lowbit(['cast', '--to', 'mxfp4', '--row-length', '100', '--in', inp, '--out', out]), dir, /not a multiple of the block size 32/, keep);
  assertRefused(lowbit(['cast', '--to', 'nvfp4', '--row-length', '24', '--in', inp, '--out', out]), dir, /block size 16/, keep);
  assertRefused(lowbit(['cast', '--to', 'nosuch', '--in', inp, '--out', out]), dir, /unknown scheme 'nosuch'.*mxfp4.*nvfp4/, keep);
  assertRefused(lowbit(['cast', '--to', 'int4_g32', '--row-length', '96', '--in', inp, '--out', out]), dir, /512 floats, not a whole number of rows of 96/, keep);
  const bad = x.slice();
  bad[300] = NaN;
  const badIn = writeInput(dir, bad, 'nan.bin');
  keep.push('nan.bin');
  for (const id of ['nvfp4', 'nf4_dq', 'int4_g32']) assertRefused(lowbit(['cast', '--to', id, '--row-length', '128', '--in', badIn, '--out', out]), dir, /cannot hold NaN/, keep);
  bad[300] = Infinity;
  fs.writeFileSync(badIn, bytesOf(bad));
  assertRefused(lowbit(['cast', '--to', 'int8_ch', '--row-length', '128', '--in', badIn, '--out', out]), dir, /cannot hold Infinity/, keep);
  const odd = writeInput(dir, new Uint8Array(130), 'odd.bin');
  keep.push('odd.bin');
  assertRefused(lowbit(['cast', '--to', 'mxfp4', '--in', odd, '--out', out]), dir, /not a multiple of 4/, keep);
  assertRefused(lowbit(['cast', '--to', 'int4_g32', '--rounding', 'stochastic', '--in', inp, '--out', out]), dir, /--rounding and --seed apply to element formats/, keep);
  assertRefused(lowbit(['cast', '--to', 'mxfp4', '--group', '64', '--in', inp, '--out', out]), dir, /fixed layout/, keep);
  assertRefused(lowbit(['cast', '--to', 'mxfp4', '--scale', '2', '--in', inp, '--out', out]), dir, /--scale applies to element formats/, keep);
  assertRefused(lowbit(['cast', '--to', 'ggml_q9_9', '--in', inp, '--out', out]), dir, /unknown scheme 'ggml_q9_9'/, keep);
  assertRefused(lowbit(['cast', '--to', 'q4_K', '--row-length', '128', '--in', inp, '--out', out]), dir, /row length 128 is not a multiple of the block size 256|Q4_K has no codec/, keep);
  fs.rmSync(dir, { recursive: true });
});

test('element formats keep their streaming cast and its errors', () => {
  const dir = tmpdir();
  const x = new Float32Array([0, 1, -2.5, 3.3, 1000]);
  const inp = writeInput(dir, x);
  const r = lowbit(['cast', '--to', 'int4', '--codes', '--in', inp]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(Array.from(r.stdout), [0, 1, 16 - 2, 3, 7]); // -2.5 ties to even -2; 1000 saturates to 7
  const f = lowbit(['cast', '--to', 'fp8_e4m3fn', '--in', inp]);
  assert.deepEqual(Array.from(new Float32Array(f.stdout.slice().buffer)), [0, 1, -2.5, 3.25, 448]);
  const out = path.join(dir, 'out.bin');
  const keep = ['x.bin'];
  assertRefused(lowbit(['cast', '--to', 'int5x', '--in', inp, '--out', out]), dir, /unknown scheme 'int5x'/, keep);
  const odd = writeInput(dir, new Uint8Array(7), 'odd.bin');
  keep.push('odd.bin');
  assertRefused(lowbit(['cast', '--to', 'int4', '--in', odd, '--out', out]), dir, /7 bytes, not a multiple of 4/, keep);
  assertRefused(lowbit(['cast', '--to', 'int4', '--no-saturate', '--in', inp, '--out', out]), dir, /--no-saturate needs a format with inf or NaN/, keep);
  assertRefused(lowbit(['cast', '--to', 'int4', '--row-length', '4', '--in', inp, '--out', out]), dir, /--row-length applies to schemes/, keep);
  fs.rmSync(dir, { recursive: true });
});

// against the library's array casts (kernels/cast.ts, bit-exact with the references: kernels-cast.test)
test('element cast streams files of many chunks: file and stdin, values, --codes, --from, --stats, odd scale', () => {
  const dir = tmpdir();
  // 10.5 M values (42 MB): eleven 4 MiB read chunks and a short last one; the output passes the 32 MiB
  // at which the stream starts flushing it to disk in the background
  const n = 10.5 * 2 ** 20 + 3;
  const x = new Float32Array(n);
  let s = 7;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = ((s / 2 ** 32) * 2 - 1) * 2 ** ((s >>> 27) - 8);
  }
  x[5] = -0;
  x[2 ** 20 + 1] = 1e30;
  const inp = writeInput(dir, x);
  const bf16 = parseFormat('bf16');
  const out = path.join(dir, 'y.f32');
  let r = lowbit(['cast', '--to', 'bf16', '--in', inp, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(fs.readFileSync(out).equals(bytesOf(fakeQuant(bf16, x))), 'bf16 file');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['x.bin', 'y.f32']);
  // a smaller input through stdin/stdout, codes and back
  const m = 2.5 * 2 ** 20 + 1;
  const xs = x.subarray(0, m);
  const e4m3 = parseFormat('fp8_e4m3fn');
  r = lowbit(['cast', '--to', 'fp8_e4m3fn', '--scale', '0.375'], bytesOf(xs));
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Buffer.from(r.stdout).equals(bytesOf(fakeQuant(e4m3, xs, { scale: 0.375 }))), 'fp8 stdin');
  const codes = path.join(dir, 'c.bin');
  r = lowbit(['cast', '--to', 'fp16', '--codes', '--stats', '--json', '--in', inp, '--out', codes]);
  assert.equal(r.code, 0, r.stderr);
  const fp16 = parseFormat('fp16');
  const want = encode(fp16, x);
  assert.ok(fs.readFileSync(codes).equals(new Uint8Array(want.buffer)), 'fp16 codes');
  assert.equal(JSON.parse(r.stderr).elements, n);
  r = lowbit(['cast', '--from', 'fp16', '--codes', '--in', codes]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Buffer.from(r.stdout).equals(bytesOf(decode(fp16, want))), 'fp16 --from');
  fs.rmSync(dir, { recursive: true });
});

test('the CLI option checks of the scheme flags come from the scheme-options table (one declaration)', async () => {
  const { OPTION_RULES } = await import('../src/cli/args.js');
  const { SCHEME_OPTIONS } = await import('../src/quant/scheme-options.js');
  for (const o of SCHEME_OPTIONS) {
    const r = OPTION_RULES[o.flag];
    assert.ok(r, `--${o.flag} has a rule`);
    assert.equal(r.min, o.min, `--${o.flag} min`);
    assert.equal(r.max, o.max, `--${o.flag} max`);
    assert.deepEqual(r.requires, o.requires ? [o.requires] : undefined, `--${o.flag} requires`);
  }
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'lowbit.js'), 'cast', '--help'], { encoding: 'utf8' });
  assert.match(r.stdout, /--group <int> .*\(1\.\.65536\)/);
  assert.match(r.stdout, /--percentile <number> .*0\.\.100; with --clip/);
});

test("the Lab's scheme-option fields come from the same table: every option a recipe carries has its input in the page", async () => {
  const { SCHEME_OPTIONS } = await import('../src/quant/scheme-options.js');
  const { schemeFields } = await import('../src/lab/recipe-form.js');
  const html = fs.readFileSync(path.join(root, 'lab', 'index.html'), 'utf8');
  const fields = schemeFields();
  assert.deepEqual(
    fields.map((f) => f.id),
    SCHEME_OPTIONS.filter((o) => o.recipeField).map((o) => o.flag),
  );
  for (const f of fields) {
    assert.match(html, new RegExp(`id="${f.id}"`), `lab/index.html has the ${f.id} field`);
    assert.equal(f.spec, SCHEME_OPTIONS.find((o) => o.flag === f.id), `${f.id}: the table's own spec`);
    if (f.spec.choices) assert.deepEqual(f.choices!.map((c) => c.value), [...f.spec.choices]);
  }
});
