/**
 * The learned PTQ methods against GPTQ, whole quantize() runs on the synthetic ~112M llama of
 * bench/gptq.ts (dim 768, hidden 2816, vocabulary 4096), the same calibration tokens for each: GPTQ
 * (the anchor, in the same run), AutoRound at its default iterations, and GPTQ+AutoRound. Prints each
 * wall time, its quantization phase, its CPU time (all threads: the measure that survives a shared
 * machine) and the ratios to GPTQ's (goal for AutoRound: <= 3x). AutoRound runs twice: on each
 * linear's own output error (--autoround-objective linear: per-linear stage only, rows split over the
 * threads like GPTQ's) and with the default objective (block: the per-linear stage, then the rounding
 * relearned on each layer's output through the training engine's backward pass).
 *
 *   npm run bench -- ptq [sequences=32] [layers=12] [threads=2] [target=int4_g128] [methods=all] [ptq-json]
 *
 * methods: a comma list of gptq, autoround-linear, autoround, gptq+autoround (GPTQ always runs: the anchor).
 * ptq-json: options for the AutoRound runs (not GPTQ's), e.g. '{"autoroundIters":40,"autoroundBatch":1}'.
 *
 * target: a scheme (int4_g128 = int4 groups of 128, as bench/gptq.ts) or a GGML type (Q4_K, Q3_K...).
 *
 * Each line ends with the sha256 (first 16 hex digits) of the safetensors file the run wrote: the
 * exactness check of speed work (`ptq 8 2 2 int4_g128 autoround`: AutoRound's output on 2 layers x 8
 * windows, the same on 1 and 2 threads; it differs between the relaxed and the plain SIMD build).
 */
import { createHash } from 'node:crypto';
import { defineRecipe, schemeRecipe, type Algorithm } from '../src/algos/recipe.js';
import { GptqPool } from '../src/cli/gptq-pool.js';
import { openModelFile } from '../src/io/model-file.js';
import { bytesSource } from '../src/io/source.js';
import { useNodeThreads } from '../src/node.js';
import { quantize } from '../src/pipeline/quantize.js';
import { syntheticModel } from './gptq.js';

const CTX = 512;
const VOCAB = 4096;

export async function run(args: string[]): Promise<void> {
  const nSeq = Number(args[0] ?? 32);
  const layers = Number(args[1] ?? 12);
  const threads = Number(args[2] ?? 2);
  const target = args[3] ?? 'int4_g128';
  const methods = (args[4] ?? 'autoround-linear,autoround,gptq+autoround').split(',');
  const ar = JSON.parse(args[5] ?? '{}') as Record<string, unknown>;
  useNodeThreads();
  const m = await openModelFile(bytesSource(await syntheticModel(layers), 'synthetic.gguf'));
  const params = m.tensors.reduce((s, t) => s + t.nElements, 0);
  console.log(`synthetic llama: ${layers} layers, ${(params / 1e6).toFixed(1)} M parameters; ${nSeq} x ${CTX} calibration tokens; target ${target}; ${threads} threads`);
  let s = 777;
  const stream = Int32Array.from({ length: nSeq * CTX + 1 }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % VOCAB);
  const g = /^int(\d)_g(\d+)$/.exec(target);
  const base = g ? schemeRecipe(`int${g[1]}`, { groupSize: Number(g[2]) }) : schemeRecipe(target);
  const runOne = async (algorithm: Algorithm, ptq: Record<string, unknown> = {}) => {
    const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(base)), algorithm, ptq: { calibTokens: nSeq * CTX, calibCtx: CTX, seed: 0, ...ptq } });
    const workers = threads > 1 ? new GptqPool(threads - 1) : undefined;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const hash = createHash('sha256');
    try {
      const r = await quantize(m, recipe, { write: (b) => void hash.update(b) }, { output: 'safetensors', calibStream: stream, threads, gptqWorkers: workers });
      const c = process.cpuUsage(c0);
      for (const n of r.ptq!.notes) if (/block output error/.test(n)) console.log(`  ${algorithm}: ${n}`);
      return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, phases: r.ptq!.phases!, sha: hash.digest('hex').slice(0, 16) };
    } finally {
      await workers?.close();
    }
  };
  const gptq = await runOne('gptq');
  const line = (name: string, r: typeof gptq) =>
    console.log(`${name.padEnd(17)} ${r.wall.toFixed(1)} s wall (quantization ${r.phases.quantization.toFixed(1)} s, statistics ${r.phases.statistics.toFixed(1)} s, forward ${r.phases.forward.toFixed(1)} s), CPU ${r.cpu.toFixed(1)} s (all threads); ratio to GPTQ ${(r.wall / gptq.wall).toFixed(2)}x wall, ${(r.cpu / gptq.cpu).toFixed(2)}x CPU; sha256 ${r.sha}`);
  line('GPTQ (anchor)', gptq);
  if (Object.keys(ar).length) console.log(`AutoRound options: ${JSON.stringify(ar)}`);
  if (methods.includes('autoround-linear')) line('AutoRound linear', await runOne('autoround', { ...ar, autoroundObjective: 'linear' }));
  if (methods.includes('autoround')) line('AutoRound', await runOne('autoround', ar));
  if (methods.includes('gptq+autoround')) line('GPTQ+AutoRound', await runOne('gptq+autoround', ar));
}
