/**
 * The hostile-input campaign (test/hostile-campaign.ts) as part of the suite: a seeded subset of
 * damaged files, special files and absurd options over every reader and every command. Nothing may
 * end in anything but a clean error (exit 2, one line, nothing written) or a correct run.
 * LOWBIT_FULL=1 runs the whole corpus (several seeds, thousands of cases).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(import.meta.dirname, '../..');
const full = process.env.LOWBIT_FULL === '1';
const runs = full ? [1, 2, 3, 4, 5, 6, 7, 8].map((seed) => ({ seed, count: 500 })) : [{ seed: Number(process.env.LOWBIT_CAMPAIGN_SEED ?? 20261203), count: 160 }];

for (const { seed, count } of runs) {
  test(`hostile campaign, seed ${seed}: ${count} runs, every one a clean error or a correct run`, { timeout: full ? 3_600_000 : 600_000 }, () => {
    const r = spawnSync(process.execPath, [path.join(root, 'dist/test/hostile-campaign.js'), '--seed', String(seed), '--count', String(count)], {
      encoding: 'utf8',
      cwd: root,
      timeout: full ? 3_500_000 : 540_000,
      maxBuffer: 64 << 20,
    });
    assert.equal(r.signal, null, `the campaign was killed (${r.signal}): a hang? last output: ${r.stdout.slice(-2000)} ${r.stderr.slice(-2000)}`);
    const lines = r.stdout.trim().split('\n').filter(Boolean);
    const last = lines.at(-1);
    assert.ok(last && last.startsWith('{"summary"'), `no summary: ${r.stdout.slice(-2000)} ${r.stderr.slice(-2000)}`);
    const { summary } = JSON.parse(last) as { summary: { tried: number; clean: number; ok: number; other: number; seconds: number } };
    const others = lines.slice(0, -1);
    // the counts the issue asks for, in the test log
    console.log(`campaign seed ${seed}: tried ${summary.tried}, clean errors ${summary.clean}, correct runs ${summary.ok}, anything else ${summary.other} (${summary.seconds.toFixed(1)} s)`);
    assert.equal(summary.tried, count);
    assert.ok(summary.clean > count / 3, `most hostile runs end in a clean error (${summary.clean} of ${count})`);
    assert.deepEqual(others, [], 'runs that ended in anything but a clean error or a correct run');
  });
}
