// Where GPTQ's memory goes: peak RSS of quantize() with --algo gptq against plain RTN on the same synthetic
// model (bench/gptq.ts's llama: dim 768, hidden 2816, vocab 4096), with the process's memory sampled at
// every progress line (calibration layer) and after each phase.
//   node scripts/gptq-rss.mjs make FILE [layers=4]
//   /usr/bin/time -v node --experimental-wasm-relaxed-simd scripts/gptq-rss.mjs run FILE gptq|rtn [nSeq=16] [ROOT]
// docs/architecture.md "Memory" has the numbers.
import * as fs from 'node:fs';
import * as path from 'node:path';
const [cmd, file, algo, nSeqArg, rootArg] = process.argv.slice(2);
const root = path.resolve(rootArg ?? path.join(path.dirname(new URL(import.meta.url).pathname), '..'));
const MiB = (b) => (b / 2 ** 20).toFixed(0);
if (cmd === 'make') {
  const { syntheticModel } = await import(root + '/dist/bench/gptq.js');
  fs.writeFileSync(file, await syntheticModel(Number(algo ?? 4)));
} else {
  const { fileSource } = await import(root + '/dist/src/cli/node-source.js');
  const { openModelFile } = await import(root + '/dist/src/io/model-file.js');
  const { defineRecipe, schemeRecipe } = await import(root + '/dist/src/algos/recipe.js');
  const { quantize } = await import(root + '/dist/src/pipeline/quantize.js');
  const nSeq = Number(nSeqArg ?? 16);
  const CTX = 256;
  const m = await openModelFile(fileSource(file));
  let peak = { rss: 0, arrayBuffers: 0, heapUsed: 0, at: '' };
  const sample = (at) => {
    const u = process.memoryUsage();
    if (u.rss > peak.rss) peak = { rss: u.rss, arrayBuffers: u.arrayBuffers, heapUsed: u.heapUsed, at };
    if (process.env.RSS_TRACE) process.stderr.write(`  ${at}: rss ${MiB(u.rss)} MiB, arrayBuffers ${MiB(u.arrayBuffers)}, heap ${MiB(u.heapUsed)}\n`);
  };
  sample('opened');
  let s = 12345;
  const stream = Int32Array.from({ length: nSeq * CTX + 1 }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 20) & 4095);
  const gptq = algo === 'gptq';
  const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(schemeRecipe('int4', { groupSize: 128 }))), ...(gptq ? { algorithm: 'gptq', ptq: { calibTokens: nSeq * CTX, calibCtx: CTX, seed: 0 } } : {}) });
  let written = 0;
  const { createHash } = await import('node:crypto');
  const hash = createHash('sha256');
  const timer = setInterval(() => sample('timer'), 20);
  const report = await quantize(m, recipe, { write: (b) => void ((written += b.length), hash.update(b)) }, {
    output: 'safetensors',
    ...(gptq ? { calibStream: stream } : {}),
    threads: 1,
    onProgress: (msg) => sample(msg.slice(0, 40)),
    onTensor: (i, n, r) => sample(`tensor ${i}/${n} ${r.name}`),
  });
  clearInterval(timer);
  sample('done');
  const params = m.tensors.reduce((a, t) => a + t.nElements, 0);
  console.log(`${algo}: ${(params / 1e6).toFixed(1)} M parameters (f32 ${MiB(4 * params)} MiB), ${report.tensors.length} tensors, ${MiB(written)} MiB written (sha256 ${hash.digest('hex').slice(0, 16)}); ` +
    `peak RSS ${MiB(process.resourceUsage().maxRSS * 1024)} MiB (sampled peak ${MiB(peak.rss)} MiB at "${peak.at}": arrayBuffers ${MiB(peak.arrayBuffers)}, heap ${MiB(peak.heapUsed)})`);
}
