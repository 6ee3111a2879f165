/**
 * `lowbit quantize in/model.json out/model.json --type uint8|uint16|float16`: a TensorFlow.js graph
 * model's float32 weights stored in TFJS's own weight quantization (io/tfjs.ts); `--type <lowbit scheme>`
 * (int4_g32, nf4_g64, q4_k, q8_0, int4 --group 64, ...) stores them in lowbit's formats, read back by
 * readTfjs (TFJS alone refuses them by name). The shards are written
 * next to the output model.json (each atomically, model.json last).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import { readTfjs, writeTfjs, type LowbitSchemeOptions, type TfjsQuantization } from '../io/tfjs.js';
import { resolveScheme } from '../quant/registry.js';
import type { ParsedArgs } from './args.js';
import { checkOutput, noteInput, withAtomicFile } from './files.js';

/** a .json file that is a TensorFlow.js model (its text names modelTopology; other .json inputs go elsewhere) */
export function isTfjsPath(file: string | undefined): boolean {
  if (!file || !/\.json$/i.test(file) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return false;
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(1 << 16);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    return head.subarray(0, n).includes('"modelTopology"');
  } finally {
    fs.closeSync(fd);
  }
}

export async function runTfjsQuantize(a: ParsedArgs): Promise<void> {
  const [input, output] = a.positionals;
  if (!output) fail('quantize needs an output path');
  if (!/\.json$/i.test(output)) fail(`output ${output}: a TensorFlow.js model is written as model.json (shards beside it)`);
  noteInput(input);
  checkOutput(output, 'output');
  const type = ((a.values.type as string | undefined) ?? fail('quantize model.json needs --type uint8, uint16 or float16 (TensorFlow.js weight quantization) or a lowbit scheme (int4_g32, nf4_g64, q4_k, ...)')).toLowerCase();
  // lowbit's formats: any scheme resolveScheme knows (a clear line naming the schemes otherwise)
  const group = a.values.group as number | undefined;
  const options: LowbitSchemeOptions | undefined = group !== undefined || a.values.asym ? { ...(group !== undefined ? { groupSize: group } : {}), ...(a.values.asym ? { asymmetric: true } : {}) } : undefined;
  const tfjsType = ['uint8', 'uint16', 'float16'].includes(type);
  if (!tfjsType) {
    try {
      resolveScheme(type, options ?? {});
    } catch (e) {
      fail(`--type ${type}: TensorFlow.js models take uint8, uint16 or float16 (TFJS's own) or a lowbit scheme: ${(e as Error).message}`);
    }
  }
  const t0 = performance.now();
  const dir = path.dirname(input);
  const m = await readTfjs(fs.readFileSync(input, 'utf8'), input, async (p) => {
    const f = path.join(dir, p);
    if (!fs.existsSync(f)) fail(`${input}: weight shard ${p} is missing`);
    return new Uint8Array(fs.readFileSync(f));
  });
  const inBytes = m.weights.reduce((s, w) => s + (w.values ? w.values.byteLength : w.raw!.length), 0);
  // tensors under 16 elements (epsilons, scalars) stay float32: 1e-12 would be 0 in float16
  // lowbit schemes: matrices of >= 4096 elements, blocks along the first axes where they divide (TF
  // MatMul kernels [K, N] group along K), else along the last; the rest stays float32
  const r = tfjsType ? writeTfjs(m, type as TfjsQuantization, { minElements: 16 }) : writeTfjs(m, undefined, { lowbit: { name: type, options, transposed: 'auto' } });
  const outDir = path.dirname(output);
  for (const s of r.shards) await withAtomicFile(path.join(outDir, s.path), async (f) => void (await f.write(s.bytes)));
  await withAtomicFile(output, async (f) => void (await f.write(new TextEncoder().encode(r.modelJson))));
  const outBytes = r.shards.reduce((s, x) => s + x.bytes.length, 0);
  const worst = r.report.reduce((w, x) => (x.sqnrDb < w.sqnrDb ? x : w), { name: '-', elements: 0, sqnrDb: Infinity });
  const rep = { input, output, type, weights: r.report.length, inputWeightBytes: inBytes, outputWeightBytes: outBytes, shards: r.shards.map((s) => s.path), worstSqnrDb: worst.sqnrDb, worstWeight: worst.name, seconds: (performance.now() - t0) / 1000 };
  if (a.values.json) process.stdout.write(JSON.stringify(rep) + '\n');
  else process.stdout.write(`${input} -> ${output}: ${r.report.length} float32 weights as ${type}${tfjsType ? '' : ` (lowbit's format: read back by lowbit's readTfjs, not by TensorFlow.js alone; ${r.report.length - JSON.parse(r.modelJson).weightsManifest[0].weights.filter((w: { quantization?: { dtype: string } }) => w.quantization?.dtype === 'lowbit').length} small/unfit weights stay float32)`}, ${inBytes} -> ${outBytes} bytes (${((100 * outBytes) / inBytes).toFixed(1)} %) in ${r.shards.length} shard(s); worst weight SQNR ${worst.sqnrDb.toFixed(1)} dB (${worst.name})\n`);
}
