/**
 * `npm run bench -- quantize [--layers N] [--types Q8_0,Q4_K_M] [--threads 2]`: wall time and peak RSS
 * of `lowbit quantize --type T` and `llama-quantize IN OUT T <threads>` on a synthetic llama-shaped F32
 * GGUF of ~1.1B parameters (dim 2048, ffn 5632, 22 layers, vocab 32000, 32 heads / 4 KV heads: the
 * TinyLlama-1.1B shape; seeded, written once with lowbit's GGUF writer into .cache/bench/, 4.4 GB),
 * side by side in the same run, each in its own process (peak RSS from /usr/bin/time, else VmHWM).
 * Also checks that both wrote the same tensor bytes.
 *
 * Targets (issue 7): lowbit's time <= 1.0x llama-quantize's; peak RSS <= largest tensor x 1.2 + 256 MB.
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AtomicFile } from '../src/cli/files.js';
import { fileSource } from '../src/cli/node-source.js';
import { readGguf, readGgufTensor } from '../src/io/gguf.js';
import { llamaBin, measure, ROOT, type Measured } from '../scripts/llama-tools.js';
import { syntheticTensors, writeSyntheticLlama, type SyntheticLlama } from '../scripts/synthetic-model.js';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

const MB = 1e6;

/** free bytes on the file system holding `dir` */
function freeBytes(dir: string): number {
  const out = execFileSync('df', ['-Pk', dir], { encoding: 'utf8' }).trim().split('\n').pop()!.split(/\s+/);
  return Number(out[3]) * 1024;
}

export async function ensureModel(o: SyntheticLlama): Promise<string> {
  const dir = path.join(ROOT, '.cache', 'bench');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `llama-synth-${o.dim}x${o.hidden}x${o.layers}-v${o.vocab}-h${o.heads}-${o.kvHeads}-s${o.seed}-f32.gguf`);
  if (fs.existsSync(file)) return file;
  const bytes = syntheticTensors(o).reduce((a, t) => a + 4 * t.ne.reduce((x, y) => x * y, 1), 0);
  if (freeBytes(dir) < bytes * 2.2) throw new Error(`need ~${((bytes * 2.2) / 1e9).toFixed(1)} GB free in ${dir} (model + outputs); have ${(freeBytes(dir) / 1e9).toFixed(1)} GB: use --layers N`);
  console.log(`writing ${path.relative(ROOT, file)} (${(bytes / 1e9).toFixed(2)} GB) ...`);
  const t0 = performance.now();
  const out = new AtomicFile(file);
  try {
    await writeSyntheticLlama(out, o);
    out.commit();
  } catch (e) {
    out.abort();
    throw e;
  }
  console.log(`  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return file;
}

/** sha256 of every tensor's bytes (streamed) */
export async function tensorHashes(file: string): Promise<Map<string, string>> {
  const src = fileSource(file);
  try {
    const g = await readGguf(src);
    const out = new Map<string, string>();
    for (const t of g.tensors) {
      const h = createHash('sha256');
      for (let off = 0; off < t.byteLength; off += 64 << 20) h.update(await readGgufTensor(g, t, off, Math.min(64 << 20, t.byteLength - off)));
      out.set(t.name, `${t.type.name}:${h.digest('hex')}`);
    }
    return out;
  } finally {
    src.close();
  }
}

export function warmPageCache(file: string): void {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(64 << 20);
  try {
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    fs.closeSync(fd);
  }
}

export async function run(args: string[]): Promise<void> {
  const o: SyntheticLlama = { dim: 2048, hidden: 5632, layers: Number(arg(args, 'layers', '22')), vocab: 32000, heads: 32, kvHeads: 4, seed: 1234 };
  const types = arg(args, 'types', 'Q8_0,Q4_K_M').split(',');
  const threads = Number(arg(args, 'threads', '2'));
  const llama = llamaBin('llama-quantize');
  if (!llama) console.log('llama-quantize is not built (node scripts/build-llama-cpp.mjs): measuring lowbit alone');
  const input = await ensureModel(o);
  const tensors = syntheticTensors(o);
  const params = tensors.reduce((a, t) => a + t.ne.reduce((x, y) => x * y, 1), 0);
  const largest = Math.max(...tensors.map((t) => 4 * t.ne.reduce((x, y) => x * y, 1)));
  const rssTarget = largest * 1.2 + 256 * MB;
  const lowbitHelp = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'lowbit.js'), 'quantize', '--help'], { encoding: 'utf8' }).stdout;
  const lowbitThreads = /--threads/.test(lowbitHelp) ? ['--threads', String(threads)] : [];
  console.log(`model: ${(params / 1e9).toFixed(3)} B parameters (dim ${o.dim}, ffn ${o.hidden}, ${o.layers} layers, vocab ${o.vocab}), ${(fs.statSync(input).size / 1e9).toFixed(2)} GB F32`);
  console.log(`largest tensor ${(largest / MB).toFixed(0)} MB -> RSS target ${(rssTarget / MB).toFixed(0)} MB; threads ${threads}${lowbitThreads.length ? '' : ' (lowbit has no --threads option yet: single-threaded)'}`);
  warmPageCache(input);
  const outDir = path.join(ROOT, '.cache', 'bench', 'quantize-out');
  fs.mkdirSync(outDir, { recursive: true });
  const rows: string[] = [];
  const line = (tool: string, type: string, m: Measured, extra = '') =>
    rows.push(`${tool.padEnd(16)} ${type.padEnd(7)} ${m.seconds.toFixed(1).padStart(8)} s ${(m.peakRss / MB).toFixed(0).padStart(8)} MB  ${extra}`);
  for (const type of types) {
    const ours = path.join(outDir, `lowbit-${type}.gguf`);
    const theirs = path.join(outDir, `llama-${type}.gguf`);
    let ref: Measured | undefined;
    if (llama) {
      ref = await measure(llama, [input, theirs, type, String(threads)]);
      if (ref.status !== 0) throw new Error(`llama-quantize ${type} failed: ${ref.stderr.split('\n').slice(-5).join('\n')}`);
      line('llama-quantize', type, ref);
    }
    const m = await measure(process.execPath, [path.join(ROOT, 'bin', 'lowbit.js'), 'quantize', input, ours, '--type', type, ...lowbitThreads, '--json']);
    if (m.status !== 0) throw new Error(`lowbit quantize ${type} failed: ${m.stderr}`);
    const ratio = ref ? `time ${(m.seconds / ref.seconds).toFixed(2)}x, RSS ${(m.peakRss / ref.peakRss).toFixed(2)}x llama-quantize; ` : '';
    line('lowbit quantize', type, m, `${ratio}RSS ${m.peakRss <= rssTarget ? 'within' : 'OVER'} target`);
    if (ref) {
      const [a, b] = [await tensorHashes(ours), await tensorHashes(theirs)];
      const differ = [...b.keys()].filter((k) => a.get(k) !== b.get(k));
      rows.push(`${''.padEnd(16)} ${type.padEnd(7)} tensor bytes: ${differ.length === 0 ? `all ${b.size} identical to llama-quantize's` : `${differ.length} of ${b.size} differ (${differ.slice(0, 3).join(', ')})`}`);
    }
    fs.rmSync(ours, { force: true });
    fs.rmSync(theirs, { force: true });
  }
  console.log(`${'tool'.padEnd(16)} ${'type'.padEnd(7)} ${'wall'.padStart(10)} ${'peak RSS'.padStart(11)}`);
  for (const r of rows) console.log(r);
}
