// GPTQ's factor alone (U = upper Cholesky factor of H^-1) at one k, its paths alternated in one process:
// the factor memory on 1 and 2 threads (factorMemory, in place: this tree's path), the matmul engine's
// threaded Cholesky inverse on 2 threads (MatmulEngine.choleskyInverse: GPTQ's path before session 29) and
// the one-thread kernels in a workspace (gptqWorkspace.inverseCholesky: session 29's path). Same bits on every
// path (checked here). Seconds per factor, each path `reps` times; the first call of each is a warm-up.
//   node --experimental-wasm-relaxed-simd scripts/gptq-factor-time.mjs [k=2816] [reps=3]
import * as fs from 'node:fs';
const root = new URL('..', import.meta.url).pathname;
const k = Number(process.argv[2] ?? 2816);
const reps = Number(process.argv[3] ?? 3);
const { factorMemory, factorThreadStats, gptqWorkspace, inverseCholeskyUpper } = await import(root + 'dist/src/kernels/gptq.js');
const { MatmulEngine } = await import(root + 'dist/src/kernels/matmul.js');
const { useNodeThreads } = await import(root + 'dist/src/node.js');
useNodeThreads();
const engine = MatmulEngine.get();
engine.setThreads(2);
let s = 7;
const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
const h = new Float64Array(k * k);
for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) { const v = i === j ? 2 + rnd() : 0.02 * rnd(); h[i * k + j] = v; h[j * k + i] = v; }
const ws = gptqWorkspace(0, k, 1);
const paths = {
  'factorMemory 1 thread': () => factorMemory(h, k, 1).factor.u,
  'factorMemory 2 threads': () => factorMemory(h, k, 2).factor.u,
  'engine 2 threads': () => inverseCholeskyUpper(h, k, engine).u,
  'workspace 1 thread': () => (ws.inverseCholesky(h), ws.u),
};
const bits = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const first = Object.fromEntries(Object.entries(paths).map(([name, f]) => [name, bits(Float64Array.from(f()))]));
const same = Object.values(first).every((b) => b.equals(first['factorMemory 1 thread']));
for (let t = 0; factorThreadStats().ready < 1 && engine.threadStats().ready < 1 && t < 200; t++) await new Promise((r) => setTimeout(r, 25));
const times = Object.fromEntries(Object.keys(paths).map((n) => [n, []]));
for (let r = 0; r < reps; r++)
  for (const [name, f] of Object.entries(paths)) {
    const t0 = performance.now();
    f();
    times[name].push((performance.now() - t0) / 1000);
  }
console.log(`k = ${k}, same bits on every path: ${same}; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
for (const [name, t] of Object.entries(times)) console.log(`  ${name.padEnd(24)} ${t.map((x) => x.toFixed(2)).join(' ')} s (min ${Math.min(...t).toFixed(2)})`);
process.exit(0);
