/**
 * The one RNG module (src/rng.ts): every named stream gives the numbers its consumer drew before the
 * streams were folded into one table (values pinned from the code before the fold: the salted
 * generators at each call site and the sampler's own xorshift64*), and no two streams share a salt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RNG_STREAMS, rngStream, type RngStreamName } from '../src/rng.js';

// the first four draws of each stream for seed 1234, from the code before the fold (commit 37b2af7)
const PINNED: Record<RngStreamName, number[]> = {
  calibrationWindows: [0.09694620012305677, 0.07542640739120543, 0.42045426135882735, 0.23111673956736922],
  omniquantOrder: [0.532633883645758, 0.6341422314289957, 0.22458982188254595, 0.2070727499667555],
  spinquantOrder: [0.04428449273109436, 0.0773202192503959, 0.8665605429559946, 0.23041048645973206],
  blockRoundOrder: [0.8006975674070418, 0.3007816788740456, 0.4012101257685572, 0.7541543901897967],
  lorcStart: [0.128215785138309, 0.010111621813848615, 0.5004765738267452, 0.4286633573938161],
  allocateSearch: [1121882470, 2393979647, 2487176968, 3322957063],
  auditBoxes: [3335107990, 4279941323, 2826048906, 2997304715],
  auditProbe: [0.02269282122142613, 0.3175438290927559, 0.10102243139408529, 0.5540409435052425], // new in session 30 (no code before it)
  embeddingFisher: [0.3669977062381804, 0.8146917030680925, 0.21270733000710607, 0.3661622751969844], // new in session 31 (no code before it)
  sampler: [3159758022, 1306163061, 1764681998, 1393191135],
};

test('rng: every named stream draws what its consumer drew before the fold', () => {
  assert.deepEqual(Object.keys(PINNED).sort(), Object.keys(RNG_STREAMS).sort());
  for (const name of Object.keys(PINNED) as RngStreamName[]) {
    const g = rngStream(name, 1234);
    assert.deepEqual(Array.from({ length: 4 }, () => g()), PINNED[name], name);
  }
  // the sampler takes its seed as a 64-bit integer, as run.c's unsigned long long
  const big = rngStream('sampler', 2 ** 40 + 5);
  assert.deepEqual(Array.from({ length: 4 }, () => big()), [3053569086, 3281052678, 1192634299, 3638576009]);
});

test('rng: streams are separated (distinct salts per generator) and yield what they say', () => {
  const seen = new Set<string>();
  for (const [name, s] of Object.entries(RNG_STREAMS)) {
    const key = `${s.generator}:${s.salt}`;
    assert.ok(!seen.has(key), `${name} shares ${key}`);
    seen.add(key);
    const g = rngStream(name as RngStreamName, 7);
    for (let i = 0; i < 100; i++) {
      const x = g();
      if (s.yields === 'unit') assert.ok(x >= 0 && x < 1, name);
      else assert.ok(Number.isInteger(x) && x >= 0 && x < 2 ** 32, name);
    }
  }
});
