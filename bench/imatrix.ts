/**
 * `npm run bench -- imatrix [ctx] [chunks]`: lowbit's importance matrix against llama-imatrix's on
 * stories260K with data/tinystories-valid-head.txt, same ctx and chunks, in the same run. Prints, per
 * tensor, the max relative difference of the statistic (mean x^2 per column) and whether the token
 * counts agree, then the wall times and their ratio.
 *
 * llama-imatrix runs with an f32 KV cache and flash attention off (-ctk f32 -ctv f32 -fa off) so its
 * attention is f32 like lowbit's; its defaults round the attention to f16 (shown in the last line).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { imatrixDifference, type Imatrix } from '../src/algos/imatrix.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { collectImatrix } from '../src/pipeline/imatrix-collect.js';
import { readImatrix } from '../src/pipeline/imatrix-file.js';
import { llamaBin, ROOT, runLlamaImatrix } from '../scripts/llama-tools.js';

async function readFile(f: string): Promise<Imatrix> {
  const s = fileSource(f);
  try {
    return await readImatrix(s);
  } finally {
    s.close();
  }
}

export async function run(args: string[]): Promise<void> {
  const ctx = Number(args[0] ?? 512);
  const chunks = Number(args[1] ?? 20);
  const model = path.join(ROOT, 'data', 'stories260K.gguf');
  const text = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  if (!llamaBin('llama-imatrix')) {
    console.log('llama-imatrix is not built (node scripts/build-llama-cpp.mjs): nothing to compare with');
    return;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bench-imatrix-'));
  try {
    const t0 = performance.now();
    const src = fileSource(model);
    const m = await loadModel(src, { contextLength: ctx, batch: Math.min(ctx, 512) });
    src.close();
    const tokens = m.tokenizer!.encode(fs.readFileSync(text, 'utf8'));
    const ours = collectImatrix(m.model, tokens, { ctx, chunks, bos: m.tokenizer!.vocab.bos, addBos: m.tokenizer!.vocab.addBos, dataset: text }).imatrix;
    const tOurs = (performance.now() - t0) / 1000;
    const exactFile = path.join(tmp, 'llama-f32.gguf');
    const tLlama = runLlamaImatrix({ model, text, out: exactFile, ctx, chunks });
    const theirs = await readFile(exactFile);
    const d = imatrixDifference(ours, theirs);
    console.log(`stories260K, ctx ${ctx}, ${chunks} chunks (${ours.chunkCount} run by lowbit, ${theirs.chunkCount} by llama-imatrix)`);
    console.log(`${'tensor'.padEnd(28)} ${'tokens lowbit'.padStart(13)} ${'llama'.padStart(7)} ${'max rel diff'.padStart(13)} ${'max diff/scale'.padStart(15)}`);
    for (const e of d.entries)
      console.log(`${e.name.padEnd(28)} ${String(e.countA).padStart(13)} ${String(e.countB).padStart(7)} ${e.maxRelative.toExponential(2).padStart(13)} ${e.maxScaled.toExponential(2).padStart(15)}`);
    if (d.onlyA.length || d.onlyB.length) console.log(`only in lowbit: ${d.onlyA.join(', ') || '-'}; only in llama-imatrix: ${d.onlyB.join(', ') || '-'}`);
    const worst = Math.max(...d.entries.map((e) => e.maxRelative));
    const countsAgree = d.entries.every((e) => e.countA === e.countB);
    console.log(`max relative difference over ${d.entries.length} tensors: ${worst.toExponential(2)}; token counts ${countsAgree ? 'identical' : 'DIFFER'}`);
    console.log(`time: lowbit ${tOurs.toFixed(2)} s (load + tokenize + run), llama-imatrix ${tLlama.toFixed(2)} s; ratio ${(tOurs / tLlama).toFixed(2)}x`);
    const defFile = path.join(tmp, 'llama-default.gguf');
    runLlamaImatrix({ model, text, out: defFile, ctx, chunks, f32Attention: false });
    const dd = imatrixDifference(ours, await readFile(defFile));
    console.log(`(llama-imatrix with its default f16 KV cache + flash attention: max relative difference ${Math.max(...dd.entries.map((e) => e.maxRelative)).toExponential(2)})`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
