/**
 * One test per defect of issue 22 ("no command may destroy a file, exit 2 after writing, or accept
 * what it cannot honour"), through the real CLI. Each states the file-system state after the run:
 * a refused run leaves every existing file byte-identical and no temp file behind.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin/lowbit.js');
const data = (f: string) => path.join(root, 'data', f);
const TEXT = data('tinystories-valid-head.txt');

function lowbit(cwd: string, ...args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd, env: { ...process.env, LOWBIT_DEBUG: '' } });
}

/** a fresh folder with a copy of the model and a short text */
function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-rel-'));
  fs.copyFileSync(data('stories260K.gguf'), path.join(dir, 'm.gguf'));
  fs.writeFileSync(path.join(dir, 't.txt'), fs.readFileSync(TEXT, 'utf8').slice(0, 20000));
  return dir;
}

/** every file of dir (recursively) with its bytes' digest and kind: what a refused run must leave alone */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    out[name] = st.isSymbolicLink() ? `link:${fs.readlinkSync(p)}` : st.isFile() ? `file:${st.size}:${fs.readFileSync(p).toString('base64').slice(0, 64)}:${hash(fs.readFileSync(p))}` : st.isDirectory() ? 'dir' : `special:${st.mode}`;
  }
  return out;
}
function hash(b: Buffer): number {
  let h = 2166136261;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
  return h >>> 0;
}

/** run, expect exit 2 with one clear line matching `re`, and the folder exactly as before */
function refused(dir: string, re: RegExp, ...args: string[]): void {
  const before = snapshot(dir);
  const r = lowbit(dir, ...args);
  assert.equal(r.status, 2, `exit 2 for ${args.join(' ')}: ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
  assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  assert.deepEqual(snapshot(dir), before, `nothing changed by ${args.join(' ')}`);
}

test('1: no output may be an input of the same run (same name, ./, hard link, symlink), for every command', () => {
  const dir = scratch();
  fs.copyFileSync(path.join(dir, 't.txt'), path.join(dir, 't.html'));
  fs.linkSync(path.join(dir, 'm.gguf'), path.join(dir, 'hard.gguf'));
  fs.symlinkSync('m.gguf', path.join(dir, 'sym.gguf'));
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.mkdirSync(path.join(dir, 'dir.gguf'));
  fs.writeFileSync(path.join(dir, 'x.f32'), new Uint8Array(64));
  const ev = ['eval', 'm.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '1'];
  for (const o of ['m.gguf', './m.gguf', 'sub/../m.gguf', 'hard.gguf', 'sym.gguf', path.join(dir, 'm.gguf')]) refused(dir, /is the input file/, ...ev, '--save-logits', o);
  refused(dir, /is the input file/, ...ev, '--save-logits', 't.txt');
  refused(dir, /is the input file/, 'eval', 'm.gguf', '--base', 'hard.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '1', '--save-logits', 'hard.gguf');
  refused(dir, /is the input file/, 'quantize', 'm.gguf', 'sym.gguf', '--type', 'Q8_0');
  refused(dir, /is the input file/, 'quantize', 'm.gguf', 'q.gguf', '--type', 'Q8_0', '--eval', 't.html', '--report', 't.html');
  refused(dir, /is the input file/, 'quantize', 'm.gguf', 'q.gguf', '--type', 'Q8_0', '--calib', 't.html', '--report', './t.html');
  fs.writeFileSync(path.join(dir, 'q.gguf'), 'OLD');
  fs.symlinkSync('q.gguf', path.join(dir, 'q.html'));
  refused(dir, /is also the output/, 'quantize', 'm.gguf', 'q.gguf', '--type', 'Q8_0', '--report', 'q.html');
  refused(dir, /is the input file/, 'convert', 'm.gguf', 'hard.gguf');
  refused(dir, /is the input file/, 'imatrix', 'm.gguf', '--text', 't.txt', '-o', './t.txt', '--ctx', '64', '--chunks', '1');
  refused(dir, /is the input file/, 'imatrix', 'm.gguf', '--text', 't.txt', '-o', 'sym.gguf', '--ctx', '64', '--chunks', '1');
  refused(dir, /is the input file/, 'cast', '--to', 'int8', '--in', 'x.f32', '--out', './x.f32');
  refused(dir, /is the input file/, 'cast', '--to', 'mxfp4', '--in', 'x.f32', '--out', 'x.f32');
  refused(dir, /is a directory/, 'convert', 'm.gguf', 'dir.gguf');
  refused(dir, /is a directory/, ...ev, '--save-logits', 'sub');
});

test('2: an existing FIFO or device node is never replaced by a file', (t) => {
  const dir = scratch();
  fs.writeFileSync(path.join(dir, 'x.f32'), new Uint8Array(64));
  const fifo = spawnSync('mkfifo', [path.join(dir, 'p.gguf')]);
  if (fifo.status !== 0) return t.skip('mkfifo unavailable');
  refused(dir, /is a FIFO/, 'convert', 'm.gguf', 'p.gguf');
  refused(dir, /is a FIFO/, 'cast', '--to', 'int8', '--in', 'x.f32', '--out', 'p.gguf');
  spawnSync('mkfifo', [path.join(dir, 'r.html')]);
  refused(dir, /is a FIFO/, 'quantize', 'm.gguf', 'q.gguf', '--type', 'Q8_0', '--report', 'r.html');
  // /dev/null as an output: refused, and still a character device afterwards
  const r = lowbit(dir, 'cast', '--to', 'int8', '--in', 'x.f32', '--out', '/dev/null');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /character device/);
  assert.ok(fs.statSync('/dev/null').isCharacterDevice());
  const sym = path.join(dir, 'null.gguf');
  fs.symlinkSync('/dev/null', sym);
  refused(dir, /character device/, 'convert', 'm.gguf', 'null.gguf');
});

test('3: quantize exits 2 before replacing OUT when --report, --eval or anything else fails', () => {
  const dir = scratch();
  fs.writeFileSync(path.join(dir, 'old.gguf'), 'OLD\n');
  refused(dir, /nodir.* does not exist/, 'quantize', 'm.gguf', 'old.gguf', '--type', 'Q8_0', '--report', 'nodir/r.html');
  refused(dir, /--eval text .*missing.txt does not exist/, 'quantize', 'm.gguf', 'old.gguf', '--type', 'Q8_0', '--eval', 'missing.txt');
  refused(dir, /calib.*does not exist/, 'quantize', 'm.gguf', 'old.gguf', '--type', 'Q8_0', '--calib', 'missing.txt');
  // the evaluation itself fails (the text is too short for the context) after OUT was written: OUT stays OLD
  fs.writeFileSync(path.join(dir, 'short.txt'), 'Once upon a time.');
  refused(dir, /tokens/, 'quantize', 'm.gguf', 'old.gguf', '--type', 'Q8_0', '--eval', 'short.txt', '--eval-ctx', '64', '--report', 'r.html');
  assert.equal(fs.readFileSync(path.join(dir, 'old.gguf'), 'utf8'), 'OLD\n');
});

test('6: quantize --eval T --eval-ctx 64 --eval-chunks 1 works as eval --ctx 64 --chunks 1 does', () => {
  const dir = scratch();
  const r = lowbit(dir, 'quantize', 'm.gguf', 'q.gguf', '--type', 'Q8_0', '--eval', 't.txt', '--eval-ctx', '64', '--eval-chunks', '1', '--report', 'r.html', '--json');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.evaluation.chunks, 1);
  assert.equal(j.evaluation.ctx, 64);
  assert.ok(j.evaluation.kld.mean >= 0 && j.evaluation.kld.mean < 0.01, `KLD ${j.evaluation.kld.mean}`);
  assert.ok(fs.existsSync(path.join(dir, 'r.html')) && fs.existsSync(path.join(dir, 'q.gguf')));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
});

test('9: --layout gptq refuses to replace an existing config.json (unless --force), and never the input\'s', () => {
  const dir = scratch();
  fs.mkdirSync(path.join(dir, 'hf'));
  fs.writeFileSync(path.join(dir, 'hf/config.json'), '{"other": "checkpoint"}\n');
  const q = ['quantize', 'm.gguf', 'hf/b.safetensors', '--type', 'int4', '--group', '32', '--layout', 'gptq', '--keep-unpackable'];
  refused(dir, /config\.json already exists.*--force/, ...q);
  const r = lowbit(dir, ...q, '--force');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'hf/config.json'), 'utf8')).model_type, 'llama');
  // a checkpoint quantized into its own folder: its config.json is an input, --force or not
  refused(dir, /is the input file/, 'quantize', 'hf/b.safetensors', 'hf/c.safetensors', '--type', 'int4', '--group', '32', '--layout', 'gptq', '--keep-unpackable', '--force');
});

test('12: temp files of a killed run are removed by the next run into the same folder; live ones are kept', () => {
  const dir = scratch();
  const dead = path.join(dir, '.q.gguf.3999999.0a1b2c3d4e5f.tmp'); // pid above pid_max: never running
  const live = path.join(dir, `.q.gguf.${process.pid}.0a1b2c3d4e5f.tmp`);
  const foreign = path.join(dir, '.notes.tmp');
  for (const f of [dead, live, foreign]) fs.writeFileSync(f, 'x');
  const r = lowbit(dir, 'convert', 'm.gguf', 'c.gguf');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(!fs.existsSync(dead), 'stale temp file removed');
  assert.ok(fs.existsSync(live), "a running process's temp file is kept");
  assert.ok(fs.existsSync(foreign), 'files of other naming schemes are kept');
});

test('14: small ones: symlink loop, a value-less option, usage on stderr', () => {
  const dir = scratch();
  fs.symlinkSync('l2', path.join(dir, 'l1'));
  fs.symlinkSync('l1', path.join(dir, 'l2'));
  refused(dir, /symlink loop/, 'inspect', 'l1');
  refused(dir, /--text needs a value.*--ctx/, 'eval', 'm.gguf', '--text', '--ctx', '64');
  const r = lowbit(dir);
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /usage: lowbit <command>/);
});

test('4, 10: contexts are checked before anything is allocated or printed', () => {
  const dir = scratch();
  refused(dir, /--ctx: 100000000 is above the maximum/, 'eval', 'm.gguf', '--text', 't.txt', '--ctx', '100000000');
  refused(dir, /longer than the model's 2048/, 'eval', 'm.gguf', '--text', 't.txt', '--ctx', '1000000');
  refused(dir, /longer than the model's 2048/, 'generate', 'm.gguf', '--ctx', '1000000', '-p', 'Once');
  refused(dir, /longer than the model's 2048/, 'imatrix', 'm.gguf', '--text', 't.txt', '--ctx', '4096', '-o', 'i.gguf');
  refused(dir, /maximum/, 'eval', 'm.gguf', '--text', 't.txt', '--ctx', '1e12');
  // a GGUF whose context_length is 0xffffffff: the default context is capped (4096), the KV cache bounded
  const b = fs.readFileSync(path.join(dir, 'm.gguf'));
  const k = b.indexOf('llama.context_length') + 'llama.context_length'.length;
  b.writeUInt32LE(0xffffffff, k + 4);
  fs.writeFileSync(path.join(dir, 'big.gguf'), b);
  const g = lowbit(dir, 'generate', 'big.gguf', '-p', 'Once', '-n', '4', '--temp', '0');
  assert.equal(g.status, 0, g.stderr);
  assert.match(g.stdout, /^Once upon/);
  // prompt + n beyond the context: exit 2 and nothing on stdout
  const r = lowbit(dir, 'generate', 'm.gguf', '-p', 'Once', '-n', '5000', '--temp', '0');
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /exceed the context of 2048/);
});

test('5, 13: one option table: ranges and conflicts are the same for every command', () => {
  const dir = scratch();
  const q = ['quantize', 'm.gguf', 'q.gguf'];
  refused(dir, /--calib-tokens: 1000000000000 is above the maximum/, ...q, '--type', 'Q8_0', '--calib-tokens', '1e12');
  refused(dir, /--calib-tokens: 100000000 is above the maximum/, ...q, '--type', 'Q8_0', '--calib-tokens', '100000000');
  refused(dir, /--threads: 99999 is above the maximum 256/, ...q, '--type', 'Q8_0', '--threads', '99999');
  refused(dir, /--threads: 99999 is above the maximum 256/, 'eval', 'm.gguf', '--text', 't.txt', '--threads', '99999');
  refused(dir, /--seed: -1 is below the minimum 0/, 'generate', 'm.gguf', '--seed', '-1');
  refused(dir, /--seed: -1 is below the minimum 0/, ...q, '--type', 'Q8_0', '--seed', '-1');
  refused(dir, /--group: 1000000000 is above the maximum/, 'quantize', 'm.gguf', 'q.safetensors', '--type', 'int4', '--group', '1e9');
  refused(dir, /--group 4096 fits no tensor/, 'quantize', 'm.gguf', 'q.safetensors', '--type', 'int4', '--group', '4096');
  refused(dir, /--pure applies to llama\.cpp types/, 'quantize', 'm.gguf', 'q.safetensors', '--type', 'int4', '--pure');
  refused(dir, /--group applies to generic schemes/, ...q, '--type', 'Q4_0', '--group', '32');
  refused(dir, /--act-order applies to --algo gptq/, ...q, '--type', 'Q4_0', '--act-order');
  refused(dir, /give either --base or --base-logits/, 'eval', 'm.gguf', '--base', 'm.gguf', '--base-logits', 'x');
  refused(dir, /give either --type or --recipe/, ...q, '--type', 'Q8_0', '--recipe', 'x.json');
  refused(dir, /--eval-ctx applies only with --eval/, ...q, '--type', 'Q8_0', '--eval-ctx', '64');
  const help = lowbit(dir, 'quantize', '--help').stdout;
  assert.match(help, /--threads <int>.*\(1\.\.256\)/);
});

test('7, 8: a tokenizer of another vocabulary is refused; damaged safetensors are reported as safetensors', () => {
  const dir = scratch();
  refused(dir, /32000 tokens, but the model's vocabulary is 512/, 'convert', data('stories260K.bin'), 'wv.gguf', '--tokenizer', data('tokenizer.bin'));
  refused(dir, /32000 tokens, but the model's vocabulary is 512/, 'convert', data('stories260K.bin'), 'wv.gguf', '--tokenizer', data('tokenizer.model'));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(1000000000n);
  fs.writeFileSync(path.join(dir, 'big.safetensors'), Buffer.concat([head, Buffer.from('{"a":1}')]));
  head.writeBigUInt64LE(8n);
  fs.writeFileSync(path.join(dir, 'nj.safetensors'), Buffer.concat([head, Buffer.from('notjson!'), Buffer.alloc(100)]));
  for (const c of [['inspect'], ['eval', '--text', 't.txt'], ['quantize', '--type', 'Q8_0', 'q.gguf'], ['convert', 'o.gguf']]) {
    refused(dir, /big\.safetensors: safetensors header length 1000000000 runs past the end of the file/, c[0], 'big.safetensors', ...c.slice(1));
    refused(dir, /nj\.safetensors: safetensors header is not JSON/, c[0], 'nj.safetensors', ...c.slice(1));
  }
});

test('11: a NaN in the weights is an error naming the layer where it first appears', () => {
  const dir = scratch();
  const info = JSON.parse(lowbit(dir, 'inspect', '--json', 'm.gguf').stdout) as { tensors: { name: string; offset: number }[] };
  const t = info.tensors.find((x) => x.name === 'blk.2.ffn_norm.weight')!;
  const b = fs.readFileSync(path.join(dir, 'm.gguf'));
  b.writeFloatLE(NaN, t.offset);
  fs.writeFileSync(path.join(dir, 'nan.gguf'), b);
  refused(dir, /non-finite value \(NaN\) in the output of layer 2 \(blk\.2\) at token position 0/, 'eval', 'nan.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '1');
  refused(dir, /non-finite value .* layer 2/, 'eval', 'nan.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '1', '--save-logits', 'l.bin');
  refused(dir, /non-finite value .* layer 2/, 'generate', 'nan.gguf', '-p', 'Once', '-n', '4');
  refused(dir, /non-finite|overflows/, 'imatrix', 'nan.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '2', '-o', 'i.gguf');
});

test('14: convert GGUF -> safetensors writes config.json, so lowbit reads its own output back; ENOSPC names the file (reliability-faults)', () => {
  const dir = scratch();
  fs.mkdirSync(path.join(dir, 'st'));
  let r = lowbit(dir, 'convert', 'm.gguf', 'st/m.safetensors');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'st/config.json'), 'utf8')).num_hidden_layers, 5);
  r = lowbit(dir, 'eval', 'st/m.safetensors', '-z', data('tok512.model'), '--text', 't.txt', '--ctx', '64', '--chunks', '1', '--json');
  const s = lowbit(dir, 'eval', 'm.gguf', '--text', 't.txt', '--ctx', '64', '--chunks', '1', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Math.abs(JSON.parse(r.stdout).ppl - JSON.parse(s.stdout).ppl) < 1e-3, 'same model read back');
  // another checkpoint's config.json in the folder is not replaced without --force
  fs.mkdirSync(path.join(dir, 'other'));
  fs.writeFileSync(path.join(dir, 'other/config.json'), '{"model_type": "other"}');
  refused(dir, /config\.json already exists and differs.*--force/, 'convert', 'm.gguf', 'other/m.safetensors');
});
