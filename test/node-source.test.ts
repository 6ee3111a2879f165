// The CLI's file sources: big ranges are read in concurrent parts (libuv's thread pool); the bytes must be
// those of the file, at any offset, for both the sync and the thread-pool source.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { asyncFileSource, fileSource } from '../src/cli/node-source.js';

test('file sources: big ranges in concurrent parts give the file bytes at any offset', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-src-'));
  try {
    const file = path.join(dir, 'f.bin');
    const bytes = new Uint8Array(21 * 1024 * 1024 + 12345);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    fs.writeFileSync(file, bytes);
    for (const open of [fileSource, asyncFileSource]) {
      const src = open(file);
      try {
        for (const [offset, length] of [[0, bytes.length], [7, 5 * 1024 * 1024 + 3], [4096 * 3 + 1, 16 * 1024 * 1024], [bytes.length - 10, 10], [100, 4 << 20], [3, 300 * 1024], [5, 1000]]) {
          const dest = new Uint8Array(length);
          await src.readInto!(offset, dest);
          assert.deepEqual(dest, bytes.subarray(offset, offset + length), `${open.name} ${offset}+${length}`);
        }
        await assert.rejects(src.readInto!(bytes.length - 5, new Uint8Array(10)), /outside|range|beyond|past|exceeds/i);
        // synchronous reads (the sync source only: lazily loaded tensors read through them)
        if (open === fileSource) {
          for (const [offset, length] of [[11, 3000], [bytes.length - 700, 700], [1 << 20, 5 << 20]]) {
            const dest = new Uint8Array(length);
            src.readIntoSync!(offset, dest);
            assert.deepEqual(dest, bytes.subarray(offset, offset + length), `readIntoSync ${offset}+${length}`);
          }
          assert.throws(() => src.readIntoSync!(bytes.length - 5, new Uint8Array(10)), /outside/);
        } else assert.equal(src.readIntoSync, undefined);
      } finally {
        src.close();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
