/**
 * Split GGUF (llama.cpp's PREFIX-00001-of-0000N.gguf sets): cutting a model into parts and reading the
 * parts back as one virtual GGUF gives the original file byte for byte; the clear errors of a wrong
 * part, a missing part and a wrong count; and `lowbit quantize --keep-split` writes the same part files
 * as `llama-quantize --keep-split` on a split input written by lowbit (which llama.cpp's loader reads),
 * and `lowbit eval` runs the split model (skipped where llama-quantize is not built).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { GgufType, readGguf } from '../src/io/gguf.js';
import { ggufSplitParts, openGgufSplit, parseSplitPath, splitPath, splitPartsOf, writeGgufPart } from '../src/io/gguf-split.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource, type ByteSource } from '../src/io/source.js';
import { llamaBin, ROOT } from '../scripts/llama-tools.js';

const MODEL = path.join(ROOT, 'data', 'stories260K.gguf');

/** the parts of stories260K cut after `cut` tensors, as name -> bytes */
async function cutModel(prefix: string, cuts: number[]): Promise<Map<string, Uint8Array>> {
  const g = await readGguf(bytesSource(new Uint8Array(fs.readFileSync(MODEL)), MODEL));
  const names = g.tensors.map((t) => t.name);
  const bounds = [0, ...cuts, names.length];
  const parts = bounds.slice(1).map((b, i) => names.slice(bounds[i], b));
  const files = new Map<string, Uint8Array>();
  const cut = ggufSplitParts(g, parts);
  for (let i = 0; i < cut.length; i++) {
    const sink = memorySink();
    await writeGgufPart(g, cut[i], sink, 4096);
    files.set(splitPath(prefix, i, cut.length), sink.bytes());
  }
  return files;
}

const opener = (files: Map<string, Uint8Array>) => async (name: string): Promise<ByteSource> => {
  const b = files.get(name);
  if (!b) throw new Error(`no such file ${name}`);
  return bytesSource(b, name);
};

test('split names as llama.cpp: PREFIX-00001-of-00003.gguf', () => {
  assert.equal(splitPath('out/m', 0, 3), 'out/m-00001-of-00003.gguf');
  assert.deepEqual(parseSplitPath('m-00002-of-00003.gguf'), { prefix: 'm', no: 1, count: 3 });
  assert.equal(parseSplitPath('m-2-of-3.gguf'), undefined);
});

test('a model cut into 3 parts reads back as the original GGUF, byte for byte', async () => {
  const original = new Uint8Array(fs.readFileSync(MODEL));
  const files = await cutModel('m', [3, 7]);
  assert.equal(files.size, 3);
  const p0 = await readGguf(bytesSource(files.get('m-00001-of-00003.gguf')!));
  assert.equal(p0.metadata.get('split.count')?.value, 3);
  assert.equal(p0.metadata.get('split.count')?.type, GgufType.UINT16);
  assert.equal(p0.metadata.get('split.tensors.count')?.type, GgufType.INT32);
  const p1 = await readGguf(bytesSource(files.get('m-00002-of-00003.gguf')!));
  assert.deepEqual([...p1.metadata.keys()], ['split.no', 'split.count', 'split.tensors.count'], 'parts after the first carry only the split keys');
  assert.equal(p1.tensors.length, 4);
  const merged = await openGgufSplit(bytesSource(files.get('m-00001-of-00003.gguf')!, 'dir/m-00001-of-00003.gguf'), opener(files));
  assert.equal(merged.size, original.length);
  assert.deepEqual(await merged.read(0, merged.size), original);
  // reads across tensor boundaries and padding, and readInto
  const dest = new Uint8Array(5000);
  await merged.readInto!(original.length - 7000, dest);
  assert.deepEqual(dest, original.subarray(original.length - 7000, original.length - 2000));
  assert.equal(splitPartsOf(merged)?.length, 3);
  // a single file is returned as it is
  const single = bytesSource(original, MODEL);
  assert.equal(await openGgufSplit(single, undefined), single);
});

test('split errors: a later part, a missing part, a wrong name', async () => {
  const files = await cutModel('m', [5]);
  await assert.rejects(openGgufSplit(bytesSource(files.get('m-00002-of-00002.gguf')!, 'm-00002-of-00002.gguf'), opener(files)), /part 2 of a split model of 2 files: open the first part \(m-00001-of-00002\.gguf\)/);
  const missing = new Map([...files].slice(0, 1));
  await assert.rejects(openGgufSplit(bytesSource(files.get('m-00001-of-00002.gguf')!, 'm-00001-of-00002.gguf'), opener(missing)), /part 2 of 2 \(m-00002-of-00002\.gguf\) cannot be opened/);
  await assert.rejects(openGgufSplit(bytesSource(files.get('m-00001-of-00002.gguf')!, 'model.gguf'), opener(files)), /must be named PREFIX-00001-of-00002\.gguf/);
});

test('lowbit quantize --keep-split = llama-quantize --keep-split on a split input; eval reads the split model', async (t) => {
  const bin = llamaBin('llama-quantize');
  if (!bin) return t.skip('llama-quantize is not built (node scripts/build-llama-cpp.mjs)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-split-'));
  try {
    for (const [name, bytes] of await cutModel('in', [4])) fs.writeFileSync(path.join(dir, name), bytes);
    const input = path.join(dir, 'in-00001-of-00002.gguf');
    const theirs = spawnSync(bin, ['--keep-split', input, path.join(dir, 'ref.gguf'), 'Q8_0', '1'], { encoding: 'utf8' });
    assert.equal(theirs.status, 0, theirs.stderr.split('\n').slice(-5).join('\n'));
    const ours = spawnSync(process.execPath, [path.join(ROOT, 'bin/lowbit.js'), 'quantize', input, path.join(dir, 'out.gguf'), '--type', 'Q8_0', '--keep-split', '--json'], { encoding: 'utf8' });
    assert.equal(ours.status, 0, ours.stderr);
    assert.deepEqual(JSON.parse(ours.stdout).outputs, [1, 2].map((i) => path.join(dir, `out-0000${i}-of-00002.gguf`)));
    for (const i of [1, 2]) assert.deepEqual(fs.readFileSync(path.join(dir, `out-0000${i}-of-00002.gguf`)), fs.readFileSync(path.join(dir, `ref-0000${i}-of-00002.gguf`)), `part ${i}`);
    assert.ok(!fs.existsSync(path.join(dir, 'out.gguf')), 'no unsplit file left');
    const ev = spawnSync(process.execPath, [path.join(ROOT, 'bin/lowbit.js'), 'eval', path.join(dir, 'out-00001-of-00002.gguf'), '--text', path.join(ROOT, 'data', 'tinystories-valid-head.txt'), '--ctx', '64', '--chunks', '2', '--json'], { encoding: 'utf8' });
    assert.equal(ev.status, 0, ev.stderr);
    assert.ok(Number.isFinite(JSON.parse(ev.stdout).ppl), ev.stdout);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
