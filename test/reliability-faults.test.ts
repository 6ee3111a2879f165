/**
 * Faults while writing (issue 22): a run killed with SIGKILL mid-write leaves no file under the
 * output's name (an existing one stays as it was) and its input unchanged, and the next run into the
 * same folder removes its temp file; SIGTERM cleans up at once; a full disk (ENOSPC, on a small tmpfs
 * where one can be mounted) is a clean error naming the file, with nothing left behind.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin/lowbit.js');
const data = (f: string) => path.join(root, 'data', f);
const temps = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));

async function until(cond: () => boolean, ms = 20000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** cast from stdin to `out`, fed `chunks` of 1 MiB of floats, then left waiting for more (mid-write) */
async function castMidWrite(dir: string, out: string, chunks: number) {
  const child = spawn(process.execPath, [bin, 'cast', '--to', 'e4m3', '--out', out], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin.on('error', () => {}); // EPIPE once it is killed
  const block = new Uint8Array(new Float32Array(1 << 18).map((_, i) => Math.sin(i)).buffer);
  for (let i = 0; i < chunks; i++) child.stdin.write(block);
  // the first chunks are written to the temp file while the command waits for the rest of stdin
  await until(() => temps(dir).some((t) => fs.statSync(path.join(dir, t)).size > 0));
  return child;
}

test('SIGKILL mid-write: no file under the output name, the old one intact; the next run removes the temp file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-kill-'));
  fs.writeFileSync(path.join(dir, 'old.bin'), 'OLD');
  for (const out of ['new.bin', 'old.bin']) {
    const child = await castMidWrite(dir, out, 6);
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    assert.equal(fs.existsSync(path.join(dir, 'new.bin')), false, 'no new.bin');
    assert.equal(fs.readFileSync(path.join(dir, 'old.bin'), 'utf8'), 'OLD', 'old.bin as it was');
    assert.equal(temps(dir).length, 1, 'the killed run could not remove its temp file');
    // the next run into the folder removes it (its process is gone), whatever it writes
    fs.writeFileSync(path.join(dir, 'x.f32'), new Uint8Array(16));
    const r = spawnSync(process.execPath, [bin, 'cast', '--to', 'int8', '--in', 'x.f32', '--out', 'y.bin'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(temps(dir), [], 'stale temp file removed');
  }
});

test('SIGKILL at random points of a convert: the input unchanged, the output absent, old or complete', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-kill-'));
  const src = path.join(dir, 'm.bin');
  fs.copyFileSync(data('stories260K.bin'), src);
  const before = fs.readFileSync(src);
  const ref = path.join(dir, 'ref.gguf');
  assert.equal(spawnSync(process.execPath, [bin, 'convert', src, ref, '--tokenizer', data('tok512.bin')]).status, 0);
  const want = fs.readFileSync(ref);
  const out = path.join(dir, 'out.gguf');
  fs.writeFileSync(out, 'OLD');
  for (const ms of [50, 150, 300, 450, 600, 900]) {
    const child = spawn(process.execPath, [bin, 'convert', src, out, '--tokenizer', data('tok512.bin')], { stdio: 'ignore' });
    const exited = new Promise((r) => child.on('exit', r));
    await new Promise((r) => setTimeout(r, ms));
    child.kill('SIGKILL');
    await exited;
    const now = fs.readFileSync(out);
    assert.ok(now.toString() === 'OLD' || now.equals(want), `after ${ms} ms: out.gguf is the old file or the complete new one`);
    assert.ok(fs.readFileSync(src).equals(before), 'input unchanged');
    fs.writeFileSync(out, 'OLD');
  }
  // one ordinary run clears whatever the killed ones left
  assert.equal(spawnSync(process.execPath, [bin, 'convert', src, path.join(dir, 'again.gguf'), '--tokenizer', data('tok512.bin')]).status, 0);
  assert.deepEqual(temps(dir), []);
});

test('SIGTERM mid-write removes the temp file at once and leaves the old output', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-term-'));
  fs.writeFileSync(path.join(dir, 'old.bin'), 'OLD');
  const child = await castMidWrite(dir, 'old.bin', 4);
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(signal)));
  child.kill('SIGTERM');
  assert.equal(await exited, 'SIGTERM');
  assert.deepEqual(temps(dir), []);
  assert.equal(fs.readFileSync(path.join(dir, 'old.bin'), 'utf8'), 'OLD');
});

test('ENOSPC on a small tmpfs: exit 2 naming the file, nothing left behind, the old output intact', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-enospc-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', dir], { encoding: 'utf8' });
  if (m.status !== 0) {
    fs.rmdirSync(dir);
    return t.skip(`cannot mount a tmpfs here (${(m.stderr || m.error?.message || '').trim()})`);
  }
  try {
    fs.writeFileSync(path.join(dir, 'old.gguf'), 'OLD');
    for (const args of [
      ['convert', data('stories260K.gguf'), path.join(dir, 'old.gguf')],
      ['quantize', data('stories260K.gguf'), path.join(dir, 'q.gguf'), '--type', 'F16'],
      ['cast', '--to', 'bf16', '--in', data('stories260K.bin'), '--out', path.join(dir, 'c.bin')],
    ]) {
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 2, `${args[0]}: exit 2 (${r.stderr})`);
      assert.match(r.stderr, /^lowbit: .*(old\.gguf|q\.gguf|c\.bin).*no space left on device \(ENOSPC\)\n$/, args[0]);
      assert.deepEqual(fs.readdirSync(dir).sort(), ['old.gguf'], `${args[0]}: nothing left behind`);
      assert.equal(fs.readFileSync(path.join(dir, 'old.gguf'), 'utf8'), 'OLD');
    }
  } finally {
    spawnSync('umount', [dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
