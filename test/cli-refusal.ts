import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

/** Runs `node BIN ...argv` and checks the refusal contract: exit 2, one stderr line matching `re`, no `out` written. */
export function assertRefused(bin: string, argv: readonly string[], re: RegExp, out: string): void {
  const r = spawnSync(process.execPath, [bin, ...argv], { encoding: 'utf8' });
  assert.equal(r.status, 2, `${argv.join(' ')}: exit ${r.status} ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  assert.ok(!fs.existsSync(out));
}
