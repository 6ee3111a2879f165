// ad hoc A/B: decode passes alternating attentionRows off/on in one process
import { useNodeThreads } from '../dist/src/cli/threads.js';
import { fileSource } from '../dist/src/cli/node-source.js';
import { loadModel } from '../dist/src/eval/load.js';
import '../dist/src/index.js';
import { MatmulEngine } from '../dist/src/kernels/matmul.js';
import { modelFile } from '../dist/bench/profile.js';
const [type, threads, N, reps] = [process.argv[2] ?? 'Q4_0', Number(process.argv[3] ?? 1), Number(process.argv[4] ?? 128), Number(process.argv[5] ?? 5)];
useNodeThreads();
const src = fileSource(await modelFile(type));
const { model } = await loadModel(src, { contextLength: N + 8, threads, activations: 'ggml' });
model.prepareDecode();
model.reserveKv(N + 5);
const engine = MatmulEngine.get('relaxed') ?? MatmulEngine.get('simd');
const toks = Array.from({ length: N + 5 }, (_, i) => 1 + ((i * 7919) % 31000));
const pass = () => {
  model.forward(toks.slice(0, 5), 0);
  const t0 = performance.now(); const c0 = process.cpuUsage();
  for (let p = 5; p < 5 + N; p++) model.forward([toks[p]], p);
  const c = process.cpuUsage(c0);
  cpu.push((c.user + c.system) / N);
  return (performance.now() - t0) / N * 1000;
};
var cpu = []; pass(); pass();
const res = { off: [], on: [] }; const cres = { off: [], on: [] };
var cpu = [];
for (let r = 0; r < reps; r++) for (const k of ['off', 'on']) { engine.attentionRows = k === 'on'; res[k].push(pass()); cres[k].push(cpu.pop()); }
const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
console.log('cpu µs/token off', cres.off.map((x) => x.toFixed(0)).join(' '), '| on', cres.on.map((x) => x.toFixed(0)).join(' '), '| median on/off', (med(cres.on) / med(cres.off)).toFixed(3));
console.log(type, threads, 'thr; µs/token off', res.off.map((x) => x.toFixed(0)).join(' '), '| on', res.on.map((x) => x.toFixed(0)).join(' '), '| median on/off time', (med(res.on) / med(res.off)).toFixed(3));
for (const v of ['relaxed', 'simd']) MatmulEngine.get(v)?.close();
await src.close?.();
