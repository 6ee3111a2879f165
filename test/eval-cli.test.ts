import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/lowbit.js'), ...args], { cwd: root, encoding: 'utf8' });

test('lowbit generate: greedy continuation from the llama2.c checkpoint and from GGUF', () => {
  const a = lowbit('generate', 'data/stories260K.bin', '--tokenizer', 'data/tok512.bin', '--prompt', 'Once upon a time', '-n', '252', '--temp', '0');
  assert.equal(a.status, 0, a.stderr);
  assert.ok(a.stdout.startsWith('Once upon a time, there was a little girl named Lily.'));
  assert.ok(a.stdout.endsWith('Her mom said, "Don\'t worry, Lily. We can help you.\n'));
  const b = lowbit('generate', 'data/stories260K.gguf', '--prompt', 'Once upon a time', '-n', '252', '--temp', '0');
  assert.equal(b.stdout, a.stdout);
  const c = lowbit('generate', 'data/stories260K.bin', '--prompt', 'x');
  assert.equal(c.status, 2);
  assert.match(c.stderr, /^lowbit: .*--tokenizer/);
  const d = lowbit('generate', 'data/stories260K.bin', '-z', 'data/tokenizer.bin', '--prompt', 'x');
  assert.equal(d.status, 2);
  assert.match(d.stderr, /32000 tokens but the model's vocabulary is 512|bytes left/);
});

test('lowbit eval: --json perplexity, --save-logits then --base-logits, --base', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-eval-'));
  try {
    const logits = join(dir, 'base.logits');
    const a = lowbit('eval', 'data/stories260K.gguf', '--text', 'data/tinystories-valid-head.txt', '--ctx', '64', '--chunks', '3', '--json', '--save-logits', logits);
    assert.equal(a.status, 0, a.stderr);
    const r = JSON.parse(a.stdout);
    assert.equal(r.tokens, 3 * 31);
    assert.ok(r.ppl > 1 && r.ppl < 20 && r.seconds > 0 && r.pplStderr > 0);
    assert.ok(statSync(logits).size > 0);
    const b = lowbit('eval', 'data/stories260K.bin', '-z', 'data/tok512.model', '--base-logits', logits, '--json');
    assert.equal(b.status, 0, b.stderr);
    const k = JSON.parse(b.stdout);
    assert.equal(k.ppl, r.ppl);
    for (const key of ['mean', 'stderr', 'median', 'p90', 'p95', 'p99', 'max']) assert.equal(typeof k.kld[key], 'number');
    assert.ok(k.kld.mean < 1e-4 && k.top1 > 0.98 && typeof k.dp.mean === 'number' && typeof k.dp.rms === 'number');
    const c = lowbit('eval', 'data/stories260K.bin', '-z', 'data/tok512.bin', '--base', 'data/stories260K.gguf', '--text', 'data/tinystories-valid-head.txt', '--ctx', '64', '--chunks', '2');
    assert.equal(c.status, 0, c.stderr);
    assert.match(c.stdout, /^PPL = [0-9.]+ \+\/- [0-9.]+/);
    assert.match(c.stdout, /KLD: mean 0\.000000/);
    const d = lowbit('eval', 'data/stories260K.gguf', '--text', 'data/tok512.bin', '--ctx', '4096');
    assert.equal(d.status, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
