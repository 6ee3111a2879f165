/**
 * llama-quantize parity: for every case llama-quantize ran in tools/llama-quantize-expected/generate.mjs
 * (25 file types incl. every IQ type, with and without --pure, with and without --imatrix (GGUF form; a few
 * types also with the legacy .dat form of the same matrix); per-tensor flags: --tensor-type (first match
 * wins, lowercased patterns), --tensor-type-file, --output-tensor-type / --token-embedding-type for many
 * types, --prune-layers), on stories260K and on a synthetic llama whose rows are multiples of 256,
 * lowbit's quantize must choose the same GGML type for every tensor and write the same bytes (sha256
 * recorded in test/golden/llama-quantize/expected.json).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { llamaRecipe } from '../src/algos/recipe.js';
import type { Imatrix } from '../src/algos/imatrix.js';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { readImatrix } from '../src/pipeline/imatrix-file.js';
import { planQuantization, quantize } from '../src/pipeline/quantize.js';
import { editModel, parsePruneLayers, parseTensorTypeFile, parseTensorTypeOverride, recipeWithOverrides, remapImatrix } from '../src/pipeline/model-edit.js';
import { writeSyntheticLlama, type SyntheticLlama } from '../scripts/synthetic-model.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GOLDEN = path.join(ROOT, 'test', 'golden', 'llama-quantize');

interface Case {
  type: string;
  pure: boolean;
  /** true: the GGUF imatrix; 'dat': the same importance matrix in llama-imatrix's legacy .dat form */
  imatrix: boolean | 'dat';
  /** llama-quantize's per-tensor flags (--tensor-type, --output-tensor-type, --token-embedding-type, --prune-layers) */
  flags?: string[];
  /** entries of a --tensor-type-file given after the flags */
  tensorTypeFile?: string[];
  tensors: Record<string, string>;
}
interface Expected {
  llamaCpp: string;
  models: Record<string, { file?: string; synthetic?: SyntheticLlama; sha256: string; imatrix: string; imatrixDat?: string; cases: Case[] }>;
}

const expected = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'expected.json'), 'utf8')) as Expected;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function modelBytes(m: Expected['models'][string]): Promise<Uint8Array> {
  if (m.file) return new Uint8Array(fs.readFileSync(path.join(ROOT, m.file)));
  const sink = memorySink();
  await writeSyntheticLlama(sink, m.synthetic!);
  return sink.bytes();
}

/** lowbit's recipe, model view and imatrix for a case's llama-quantize flags */
function withFlags(model: ModelFile, c: Case, imatrix: Imatrix | undefined) {
  const f = c.flags ?? [];
  const value = (name: string) => {
    const i = f.lastIndexOf(name);
    return i >= 0 ? f[i + 1] : undefined;
  };
  const overrides = [
    ...f.flatMap((x, i) => (x === '--tensor-type' ? [parseTensorTypeOverride(f[i + 1])] : [])),
    ...(c.tensorTypeFile ? parseTensorTypeFile(c.tensorTypeFile.join('\n'), 'tensor-types.txt') : []),
  ];
  const recipe = recipeWithOverrides(
    llamaRecipe(c.type, { pure: c.pure, outputTensorType: value('--output-tensor-type')?.toUpperCase(), tokenEmbeddingType: value('--token-embedding-type')?.toUpperCase() }),
    overrides,
  );
  const prune = value('--prune-layers');
  const edited = editModel(model, { pruneLayers: prune ? parsePruneLayers(prune) : [] });
  return { recipe, model: edited.model, imatrix: imatrix && remapImatrix(imatrix, edited.originalName), mixLayers: edited.mixLayers };
}

async function quantizedTensors(model0: ModelFile, c: Case, imatrix0: Imatrix | undefined): Promise<Record<string, string>> {
  const { recipe, model, imatrix, mixLayers } = withFlags(model0, c, imatrix0);
  const plan = planQuantization(model, recipe, 'gguf', { hasImatrix: !!imatrix, mixLayers });
  const sink = memorySink();
  await quantize(model, recipe, sink, { output: 'gguf', imatrix, mixLayers }); // the one verb, as the CLI calls it
  const q = await openModelFile(bytesSource(sink.bytes(), 'out.gguf'));
  const got: Record<string, string> = {};
  for (const t of q.tensors) got[t.name] = `${t.type}:${sha256(await q.read(t)).slice(0, 16)}`;
  // the plan's types must be the ones written
  for (const p of plan.tensors) assert.equal(got[p.name].split(':')[0], p.to, `${p.name}: plan ${p.to}`);
  return got;
}

for (const [name, m] of Object.entries(expected.models)) {
  test(`llama-quantize parity on ${name}: per-tensor types and bytes (llama.cpp ${expected.llamaCpp.slice(0, 10)})`, async (t) => {
    const bytes = await modelBytes(m);
    assert.equal(sha256(bytes), m.sha256, `${name}: the input model is not the one the expected outputs were made from`);
    const model = await openModelFile(bytesSource(bytes, name));
    const readIm = async (f: string) => readImatrix(bytesSource(new Uint8Array(fs.readFileSync(path.join(GOLDEN, f))), f));
    const imatrix = await readIm(m.imatrix);
    const imatrixDat = m.imatrixDat ? await readIm(m.imatrixDat) : undefined;
    const typeDiffs: string[] = [];
    const byteDiffs: string[] = [];
    for (const c of m.cases) {
      const label = `${c.type}${c.pure ? ' --pure' : ''}${c.flags ? ` ${c.flags.join(' ')}` : ''}${c.tensorTypeFile ? ` --tensor-type-file [${c.tensorTypeFile.join(' ')}]` : ''}${c.imatrix === 'dat' ? ' --imatrix (.dat)' : c.imatrix ? ' --imatrix' : ''}`;
      const got = await quantizedTensors(model, c, c.imatrix === 'dat' ? imatrixDat : c.imatrix ? imatrix : undefined);
      assert.deepEqual(Object.keys(got).sort(), Object.keys(c.tensors).sort(), `${label}: tensor names`);
      let same = 0;
      for (const [tensor, want] of Object.entries(c.tensors)) {
        const [wantType] = want.split(':');
        const [gotType] = got[tensor].split(':');
        if (wantType !== gotType) typeDiffs.push(`${label} ${tensor}: llama-quantize ${wantType}, lowbit ${gotType}`);
        else if (want !== got[tensor]) byteDiffs.push(`${label} ${tensor} (${wantType})`);
        else same++;
      }
      t.diagnostic(`${label}: ${same}/${Object.keys(c.tensors).length} tensors byte-identical`);
    }
    assert.deepEqual(typeDiffs, [], 'per-tensor types differ from llama-quantize');
    assert.deepEqual(byteDiffs, [], 'tensor bytes differ from llama-quantize');
  });
}
