import { useNodeThreads } from '../dist/src/cli/threads.js';
import { fileSource } from '../dist/src/cli/node-source.js';
import { loadModel } from '../dist/src/eval/load.js';
import '../dist/src/index.js';
import { MatmulEngine } from '../dist/src/kernels/matmul.js';
import { modelFile } from '../dist/bench/profile.js';
const [type, threads, N, reps] = [process.argv[2] ?? 'Q4_0', Number(process.argv[3] ?? 1), Number(process.argv[4] ?? 128), Number(process.argv[5] ?? 5)];
const modes = (process.argv[6] ?? 'off,on').split(',');
useNodeThreads();
const src = fileSource(await modelFile(type));
const { model } = await loadModel(src, { contextLength: N + 8, threads, activations: 'ggml' });
model.prepareDecode();
model.reserveKv(N + 5);
const engine = MatmulEngine.get('relaxed') ?? MatmulEngine.get('simd');
const toks = Array.from({ length: N + 5 }, (_, i) => 1 + ((i * 7919) % 31000));
const pass = () => {
  model.forward(toks.slice(0, 5), 0);
  const t0 = performance.now();
  for (let p = 5; p < 5 + N; p++) model.forward([toks[p]], p);
  return (performance.now() - t0) / N * 1000;
};
const set = (m) => { engine.attentionRows = m !== 'off'; engine.attentionRowsHeads = m.startsWith('on:') ? Number(m.slice(3)) : undefined; };
for (const m of modes) { set(m); pass(); }
const res = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < reps; r++) for (const m of modes) { set(m); res[m].push(pass()); }
const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
console.log(type, threads, 'thr, µs/token medians:', modes.map((m) => `${m} ${med(res[m]).toFixed(0)}`).join(', '));
for (const v of ['relaxed', 'simd']) MatmulEngine.get(v)?.close();
await src.close?.();
