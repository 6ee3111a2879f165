#!/usr/bin/env node
// Expected llama-quantize outputs for the parity test (test/llama-quantize-parity.test.ts).
//
//   npm run build && node tools/llama-quantize-expected/generate.mjs
//
// Runs llama.cpp's own llama-quantize (built by scripts/build-llama-cpp.mjs from node-llama-cpp's source
// bundle) on two models, for every type in TYPES, without and with --pure, and (for the types whose
// quantizers read an importance matrix) with --imatrix, and records per tensor the GGML type and the
// sha256 of its bytes in test/golden/llama-quantize/expected.json. Never edit that file by hand.
//
// Models:
//  - data/stories260K.gguf (dim 64, ffn 172: the k-quants and IQ4_XS fall back to other types);
//  - a synthetic llama (scripts/synthetic-model.ts: dim 256, ffn 512, 2 layers, GQA 4/2, seed 1), so
//    the k-quants, IQ4_XS and TQ types really run. The test rebuilds it and checks its sha256.
// Importance matrices (committed next to expected.json):
//  - stories260K.imatrix.gguf / .dat: llama-imatrix on data/tinystories-valid-head.txt, -c 128,
//    16 chunks, f32 KV cache, no flash attention (the --imatrix runs use the .gguf; DAT_TYPES also
//    run with the .dat, recorded as imatrix: "dat");
//  - synthetic.imatrix.gguf: seeded values written by lowbit (the synthetic model has no tokenizer).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (p) => import(path.join(root, 'dist', p));
const { readGguf, readGgufTensor } = await dist('src/io/gguf.js');
const { writeImatrixGguf } = await dist('src/pipeline/imatrix-file.js');
const { memorySink } = await dist('src/io/sink.js');
const { bytesSource } = await dist('src/io/source.js');
const { llamaBin, runLlamaImatrix, runLlamaQuantize } = await dist('scripts/llama-tools.js');
const { writeSyntheticLlama, syntheticImatrix } = await dist('scripts/synthetic-model.js');

export const TYPES = [
  'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K_M', 'Q4_K_M', 'Q5_K_M', 'Q6_K', 'IQ4_NL', 'IQ4_XS', 'TQ1_0', 'TQ2_0', 'MXFP4_MOE',
  'IQ2_XXS', 'IQ2_XS', 'IQ2_S', 'IQ2_M', 'IQ1_S', 'IQ1_M', 'IQ3_XXS', 'IQ3_XS', 'IQ3_S', 'IQ3_M',
];
/** types whose quantizers ignore the importance matrix in ggml (no --imatrix runs for them) */
const NO_IMATRIX = new Set(['Q8_0', 'TQ1_0', 'TQ2_0', 'MXFP4_MOE']);
/**
 * file types llama-quantize runs only with an importance matrix (their IQ1/IQ2/IQ3_XXS tensors need one),
 * and not --pure (token_embd, which the imatrix does not cover, would be quantized without one: ggml aborts)
 */
const ONLY_IMATRIX = new Set(['IQ2_XXS', 'IQ2_XS', 'IQ2_S', 'IQ2_M', 'IQ1_S', 'IQ1_M', 'IQ3_XXS', 'IQ3_XS']);
/**
 * llama-quantize's per-tensor flags (--tensor-type, --tensor-type-file, --output-tensor-type,
 * --token-embedding-type, --prune-layers), each run without and with --imatrix; `file` entries are
 * written to a --tensor-type-file. Patterns include upper case (llama-quantize lowercases them), an
 * earlier entry shadowing a later one, and --pure.
 */
const FLAG_CASES = [
  { type: 'Q4_K_M', flags: ['--tensor-type', 'attn_v=q8_0', '--tensor-type', 'FFN_DOWN=iq4_xs', '--tensor-type', 'blk\\.1\\.ffn_down=q5_0'] },
  { type: 'Q4_K_M', flags: ['--tensor-type', 'blk\\.0\\.=q6_k'], file: ['ATTN_Q=iq3_s', 'ffn_(gate|up)=q5_k'] },
  { type: 'Q3_K_M', pure: true, flags: ['--tensor-type', 'attn_output=q8_0', '--tensor-type', 'nothing_matches=q8_0'] },
  { type: 'IQ3_M', flags: ['--tensor-type', 'attn_k=iq2_s', '--tensor-type', 'ffn_up=iq1_m'], imatrixOnly: true },
  { type: 'Q4_K_M', flags: ['--prune-layers', '0'] },
  { type: 'IQ3_S', flags: ['--prune-layers', '1,3', '--tensor-type', 'attn_v=q4_0'], models: ['stories260K'] },
  ...['Q8_0', 'Q4_0', 'Q5_K', 'Q6_K', 'IQ4_XS', 'IQ3_S', 'IQ2_S', 'IQ3_XXS'].map((t) => ({ type: 'Q4_K_M', flags: ['--output-tensor-type', t.toLowerCase(), '--token-embedding-type', t], models: ['synthetic'], imatrixOnly: ['IQ2_S', 'IQ3_XXS'].includes(t) })),
  ...['Q8_0', 'Q4_0', 'Q5_1', 'IQ4_NL'].map((t) => ({ type: 'Q3_K_M', flags: ['--output-tensor-type', t, '--token-embedding-type', t.toLowerCase()] })),
];
/** types also run with the legacy .dat imatrix (stories260K) */
const DAT_TYPES = ['Q4_0', 'Q5_1', 'Q4_K_M', 'IQ4_NL'];
export const SYNTHETIC = { dim: 256, hidden: 512, layers: 2, vocab: 256, heads: 4, kvHeads: 2, seed: 1 };

const outDir = path.join(root, 'test', 'golden', 'llama-quantize');
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

async function tensorsOf(file) {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const g = await readGguf(bytesSource(bytes, file));
  const out = {};
  for (const t of g.tensors) out[t.name] = `${t.type.name}:${sha256(await readGgufTensor(g, t)).slice(0, 16)}`;
  return out;
}

async function main() {
  if (!llamaBin('llama-quantize') || !llamaBin('llama-imatrix')) throw new Error('llama.cpp tools are not built: node scripts/build-llama-cpp.mjs');
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-llama-quantize-expected-'));
  const commit = execFileSync('git', ['-C', path.join(root, '.cache', 'llama.cpp-src'), 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();

  // models and importance matrices
  const stories = path.join(root, 'data', 'stories260K.gguf');
  const storiesIm = path.join(outDir, 'stories260K.imatrix.gguf');
  // relative paths: llama-imatrix records the text path in the file
  const imRun = { model: 'data/stories260K.gguf', text: 'data/tinystories-valid-head.txt', ctx: 128, chunks: 16, threads: 2, cwd: root };
  runLlamaImatrix({ ...imRun, out: storiesIm });
  runLlamaImatrix({ ...imRun, out: path.join(outDir, 'stories260K.imatrix.dat'), format: 'dat' });
  const synthetic = path.join(tmp, 'synthetic.gguf');
  const sink = memorySink();
  await writeSyntheticLlama(sink, SYNTHETIC);
  fs.writeFileSync(synthetic, sink.bytes());
  const synIm = path.join(outDir, 'synthetic.imatrix.gguf');
  const imSink = memorySink();
  await writeImatrixGguf(syntheticImatrix(SYNTHETIC), imSink);
  fs.writeFileSync(synIm, imSink.bytes());

  const models = {
    stories260K: { file: 'data/stories260K.gguf', path: stories, imatrix: 'stories260K.imatrix.gguf', imatrixPath: storiesIm, imatrixDat: 'stories260K.imatrix.dat' },
    synthetic: { synthetic: SYNTHETIC, path: synthetic, imatrix: 'synthetic.imatrix.gguf', imatrixPath: synIm },
  };
  const expected = {
    generator: 'tools/llama-quantize-expected/generate.mjs',
    llamaCpp: commit,
    note: 'per tensor "TYPE:first 16 hex digits of sha256(tensor bytes)"; llama-quantize [--pure] [flags] [--tensor-type-file F (tensorTypeFile)] [--imatrix F] IN OUT TYPE 2',
    imatrixRun: { model: 'data/stories260K.gguf', text: 'data/tinystories-valid-head.txt', ctx: imRun.ctx, chunks: imRun.chunks, flags: '-fa off -ctk f32 -ctv f32' },
    models: {},
  };
  for (const [name, m] of Object.entries(models)) {
    const cases = [];
    for (const type of TYPES) {
      for (const imatrix of NO_IMATRIX.has(type) ? [false] : ONLY_IMATRIX.has(type) ? [true] : [false, true]) {
        for (const pure of ONLY_IMATRIX.has(type) ? [false] : [false, true]) {
          const flags = [...(pure ? ['--pure'] : []), ...(imatrix ? ['--imatrix', m.imatrixPath] : [])];
          const out = path.join(tmp, `${name}-${type}${pure ? '-pure' : ''}${imatrix ? '-imatrix' : ''}.gguf`);
          runLlamaQuantize(m.path, out, type, flags, 2);
          cases.push({ type, pure, imatrix, tensors: await tensorsOf(out) });
          fs.rmSync(out);
          process.stdout.write(`${name} ${type}${pure ? ' --pure' : ''}${imatrix ? ' --imatrix' : ''}\n`);
        }
      }
    }
    for (const fc of FLAG_CASES) {
      if (fc.models && !fc.models.includes(name)) continue;
      for (const imatrix of fc.imatrixOnly ? [true] : [false, true]) {
        const flags = [...fc.flags];
        if (fc.file) {
          const f = path.join(tmp, 'tensor-types.txt');
          fs.writeFileSync(f, fc.file.join('\n') + '\n');
          flags.push('--tensor-type-file', f);
        }
        const all = [...(fc.pure ? ['--pure'] : []), ...flags, ...(imatrix ? ['--imatrix', m.imatrixPath] : [])];
        const out = path.join(tmp, `${name}-flags.gguf`);
        runLlamaQuantize(m.path, out, fc.type, all, 2);
        // the file's entries are recorded inline, as lowbit reads them
        cases.push({ type: fc.type, pure: !!fc.pure, imatrix, flags: fc.flags, ...(fc.file ? { tensorTypeFile: fc.file } : {}), tensors: await tensorsOf(out) });
        fs.rmSync(out);
        process.stdout.write(`${name} ${fc.type} ${all.join(' ')}\n`);
      }
    }
    // the legacy .dat form of the same importance matrix, for a few types
    if (m.imatrixDat)
      for (const type of DAT_TYPES) {
        const out = path.join(tmp, `${name}-${type}-dat.gguf`);
        runLlamaQuantize(m.path, out, type, ['--imatrix', path.join(outDir, m.imatrixDat)], 2);
        cases.push({ type, pure: false, imatrix: 'dat', tensors: await tensorsOf(out) });
        fs.rmSync(out);
        process.stdout.write(`${name} ${type} --imatrix ${m.imatrixDat}\n`);
      }
    expected.models[name] = {
      ...(m.file ? { file: m.file } : { synthetic: m.synthetic }),
      sha256: sha256(fs.readFileSync(m.path)),
      imatrix: m.imatrix,
      ...(m.imatrixDat ? { imatrixDat: m.imatrixDat } : {}),
      cases,
    };
  }
  fs.writeFileSync(path.join(outDir, 'expected.json'), JSON.stringify(expected, null, 1) + '\n');
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`wrote ${path.relative(root, path.join(outDir, 'expected.json'))}`);
}

await main();
