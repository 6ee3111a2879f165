/**
 * Activation schemes of the runtime (--act mxfp8|mxfp4|nvfp4) and QuaRot's online rotations
 * (--rotate-act): the rotation leaves an f32 product unchanged, spreads an outlier so that 4-bit inputs
 * lose less, and needs --act.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { actQuantLinear, actQuantSchemeLinear, hadamardBlock, isOnlineRotated, rotatedInputLinear } from '../src/model/act-quant.js';
import { linear, makeLinearWeight } from '../src/model/matmul.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { resolveScheme } from '../src/quant/registry.js';
import '../src/quant/index.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('online Hadamard rotation: exact in f32, lower int4 error with an outlier; MX/NVFP4 input schemes', () => {
  const rows = 8, cols = 128, nTok = 3;
  const w = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.7) * 0.5);
  const x = new Float32Array(nTok * cols).map((_, i) => Math.cos(i * 1.3));
  for (let t = 0; t < nTok; t++) x[t * cols + 5] = 30; // an outlier feature (channel 5 of every token)
  const W = makeLinearWeight('blk.0.ffn_down.weight', ggmlTypeByName('F32')!, rows, cols, new Uint8Array(w.buffer), false, null);
  const exact = new Float32Array(nTok * rows);
  linear(exact, x, W, nTok);
  const err = (f: (o: Float32Array, x: Float32Array, w: typeof W, n: number) => void) => {
    const o = new Float32Array(nTok * rows);
    f(o, x, W, nTok);
    return Math.sqrt(o.reduce((m, v, i) => m + (v - exact[i]) ** 2, 0) / o.length);
  };
  assert.equal(hadamardBlock(96), 32);
  assert.equal(hadamardBlock(cols), 128);
  assert.ok(err(rotatedInputLinear((o, xx, ww, n) => linear(o, xx, ww, n), isOnlineRotated)) < 1e-4, 'rotation alone changes nothing');
  const plain = err(actQuantLinear(4));
  const rotated = err(rotatedInputLinear(actQuantLinear(4), isOnlineRotated));
  assert.ok(rotated < 0.9 * plain, `int4 error ${plain} -> rotated ${rotated}`);
  assert.ok(isOnlineRotated('blk.3.attn_output.weight') && !isOnlineRotated('blk.3.attn_q.weight'));
  for (const id of ['mxfp8_e4m3', 'mxfp4', 'nvfp4']) {
    const e = err(actQuantSchemeLinear(resolveScheme(id)));
    assert.ok(e > 0 && e < (id === 'mxfp8_e4m3' ? 2 : 20), `${id}: ${e}`);
  }
});

test('lowbit eval --rotate-act without --act: one line, exit 2', () => {
  const r = spawnSync(process.execPath, [join(root, 'bin/lowbit.js'), 'eval', 'data/tinyllama256.gguf', '--text', 'data/tinystories-valid-head.txt', '--ctx', '64', '--chunks', '1', '--rotate-act'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--rotate-act applies with --act/);
});
