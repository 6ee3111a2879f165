/**
 * `lowbit convert HF-FOLDER out.gguf` for every family: the random model of scripts/family-models.ts is
 * written as the Hugging Face checkpoint convert_hf_to_gguf would read (HF names, rotate_half q/k order,
 * Gemma norms as w - 1, experts as separate tensors, Llama 3 rope_scaling, tokenizer.json with BPE merges
 * and the Split regex, or tokenizer.model), sharded for one family; converting it back must give every
 * tensor byte for byte (same names, dims, types) and the same architecture and tokenizer metadata as the
 * GGUF llama.cpp's converter conventions produce (which test/families-llamacpp.test.ts runs against
 * llama.cpp). Bad input: unknown architecture, inconsistent expert counts, unknown pre-tokenizer -> exit 2,
 * nothing written.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FAMILIES, familyHfFolder, familyModel, familyVocab, type Family, type HfFolder } from '../scripts/family-models.js';
import { fileSource } from '../src/cli/node-source.js';
import { plainValue, readGguf, readGgufTensor } from '../src/io/gguf.js';
import { memorySink } from '../src/io/sink.js';
import { SafetensorsWriter } from '../src/io/safetensors.js';
import type { Vocab } from '../src/model/types.js';

const DATA = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const STORIES = readFileSync(DATA('tinystories-valid-head.txt'), 'utf8');
const WIKI = readFileSync(DATA('wikitext-2-test.raw'), 'utf8');
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;

const vocabFor = (f: Family): Vocab => familyVocab(f, new URL('../../data/', import.meta.url));

async function safetensorsBytes(tensors: HfFolder['tensors']): Promise<Uint8Array> {
  const sink = memorySink();
  const w = new SafetensorsWriter(sink, tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape })), { format: 'pt' });
  await w.begin();
  for (const t of tensors) await w.write(t.data);
  await w.end();
  return sink.bytes();
}

/** write the folder; `shards` > 1 splits the tensors over files with a model.safetensors.index.json */
async function writeFolder(dir: string, h: HfFolder, shards = 1): Promise<void> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(h.config, null, 2));
  writeFileSync(join(dir, 'tokenizer_config.json'), h.tokenizerConfig);
  if (h.tokenizerJson) writeFileSync(join(dir, 'tokenizer.json'), h.tokenizerJson);
  if (h.sentencepiece) copyFileSync(DATA('tok512.model'), join(dir, 'tokenizer.model'));
  if (shards === 1) {
    writeFileSync(join(dir, 'model.safetensors'), await safetensorsBytes(h.tensors));
    return;
  }
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(h.tensors.length / shards);
  for (let s = 0; s < shards; s++) {
    const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = h.tensors.slice(s * per, (s + 1) * per);
    for (const t of part) weightMap[t.name] = name;
    writeFileSync(join(dir, name), await safetensorsBytes(part));
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

function convert(dir: string, out: string): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, 'convert', dir, out], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

test('lowbit convert HF folder -> GGUF gives the converter-convention GGUF of every family, tensor for tensor', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-hfconv-'));
  try {
    for (const family of FAMILIES) {
      const vocab = vocabFor(family);
      const fm = familyModel(family, vocab, 5);
      const dir = join(root, family);
      await writeFolder(dir, familyHfFolder(fm, vocab), family === 'mixtral' ? 3 : 1);
      const out = join(root, `${family}.gguf`);
      const r = convert(dir, out);
      assert.equal(r.status, 0, `${family}: ${r.stderr}`);
      const src = fileSource(out);
      try {
        const g = await readGguf(src);
        const got = new Map(g.tensors.map((x) => [x.name, x]));
        assert.deepEqual([...got.keys()].sort(), fm.tensors.map((x) => x.name).sort(), `${family}: tensor names`);
        for (const want of fm.tensors) {
          const x = got.get(want.name)!;
          assert.deepEqual([...x.ne], want.ne, `${family} ${want.name}: dims`);
          assert.equal(x.type.name, 'F32', `${family} ${want.name}: type`);
          assert.ok(Buffer.from(await readGgufTensor(g, x)).equals(Buffer.from(want.data)), `${family} ${want.name}: bytes`);
        }
        const meta = new Map([...g.metadata].map(([k, v]) => [k, plainValue(v)]));
        for (const [k, v] of fm.metadata) {
          if (k === 'general.name' || k === 'general.file_type') continue;
          const want = plainValue(v);
          const have = meta.get(k);
          if (typeof want === 'number' && typeof have === 'number') assert.ok(Math.abs(want - have) <= 1e-6 * Math.abs(want), `${family} ${k}: ${have} vs ${want}`);
          else assert.deepEqual(ArrayBuffer.isView(have) ? Array.from(have as unknown as ArrayLike<number>) : have, ArrayBuffer.isView(want) ? Array.from(want as unknown as ArrayLike<number>) : want, `${family} ${k}`);
        }
        t.diagnostic(`${family}: ${fm.tensors.length} tensors byte-identical, ${fm.metadata.length - 2} metadata keys equal (${g.metadata.get('general.architecture')!.value})`);
      } finally {
        src.close();
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('lowbit convert HF folder: unknown architecture, inconsistent expert counts, unknown pre-tokenizer exit 2 and write nothing', async () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-hfconv-bad-'));
  try {
    const cases: [string, (h: HfFolder) => void, RegExp][] = [
      ['arch', (h) => (h.config.architectures = ['MambaForCausalLM']), /architecture 'MambaForCausalLM' is not one lowbit converts \(known: LlamaForCausalLM.*Qwen3MoeForCausalLM.*Gemma3ForCausalLM\)/],
      ['experts', (h) => (h.config.num_experts = 5), /ffn_\w+_exps\.weight: the checkpoint has experts \[0, 1, 2, 3\], but config.json says 5 \(inconsistent expert counts\)/],
      [
        'pre',
        (h) => {
          const j = JSON.parse(h.tokenizerJson!);
          j.pre_tokenizer.pretokenizers[0].pattern.Regex = '\\p{N}+|[^\\p{N}]+';
          h.tokenizerJson = JSON.stringify(j);
        },
        /tokenizer.json: unknown pre-tokenizer .*known: llama-bpe \(Llama 3\), qwen2, tekken, gpt-2/,
      ],
    ];
    for (const [name, spoil, pattern] of cases) {
      const vocab = vocabFor('qwen3moe');
      const h = familyHfFolder(familyModel('qwen3moe', vocab, 1), vocab);
      spoil(h);
      const dir = join(root, name);
      await writeFolder(dir, h);
      const out = join(root, `${name}.gguf`);
      const r = convert(dir, out);
      assert.equal(r.status, 2, `${name}: exit ${r.status}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.ok(!r.stderr.includes('    at '), `${name}: no stack trace`);
      assert.ok(!existsSync(out), `${name}: nothing written`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
