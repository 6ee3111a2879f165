import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../../errors.js';
import { auditModel, edgeSweep, plantAttack, randomTokenWindows, SWEEP_TYPES, writeWithReplacements, type SweepAudit, type TypeAudit } from '../../audit/run.js';
import { calibrationWindows } from '../../pipeline/passes/load.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, readInputText, withAtomicFile } from '../files.js';
import { openModelPath } from '../model-open.js';
import { loadModelPath } from './generate.js';
import { plainMetadata } from '../../io/model-file.js';
import { vocabFromGgufMetadata } from '../../io/vocab.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { threadsFrom } from '../threads.js';
import { renderTable } from './formats.js';

const DEFAULT_TEXT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../data/tinystories-valid-head.txt');

export const auditCommand: Command = {
  name: 'audit',
  summary: 'check a model for quantization-conditioned behaviour (a planted box): exit 3 when suspicious',
  usage: 'lowbit audit MODEL [--types Q4_K_M,Q4_0] [--pure] [--sweep TYPES|none] [--text FILE] [--ctx 128] [--windows 8] [--noise 0.5] [--repeats 16] [--generate 256] [--fp-rate 0.001] [--json]',
  positionals: [1, 1],
  options: [
    { name: 'types', type: 'string', default: 'Q4_K_M,Q4_0,Q8_0', help: 'llama.cpp file types to audit, comma-separated' },
    { name: 'pure', type: 'boolean', help: 'every tensor in the file type\'s default type (llama-quantize --pure)' },
    { name: 'sweep', type: 'string', default: SWEEP_TYPES.join(','), help: 'block types whose rounding-interval edges are checked in every tensor that takes them (weights only, no forward pass; "none" = off)' },
    { name: 'text', type: 'string', help: 'probe text (default: the shipped TinyStories text; a model without a tokenizer is probed with seeded random token windows instead)' },
    { name: 'ctx', type: 'int', default: 128, min: 8, max: 8192, help: 'tokens per probe window' },
    { name: 'windows', type: 'int', default: 8, min: 1, max: 1024, help: 'probe windows' },
    { name: 'noise', type: 'number', default: 0.5, min: 0.01, max: 2, help: 'noise in rounding steps for the comparison quantization' },
    { name: 'repeats', type: 'int', default: 16, min: 1, max: 100, help: 'noised quantizations: the null distribution of the behaviour test (its z-test needs 3 or more; the median KLD gives the ratio)' },
    { name: 'generate', type: 'int', default: 256, min: 0, max: 65536, help: 'tokens the full-precision model samples (seeded, 64 per prompt of 4 probe tokens) for a second behaviour test on its own continuations (0 = off; with it each test runs at half --fp-rate)' },
    { name: 'fp-rate', type: 'number', default: 0.001, min: 1e-9, max: 0.25, help: 'one-sided false-positive rate of the behaviour z-test under its null (sets its t threshold)' },
    { name: 'seed', type: 'int', default: 1, min: 0, help: 'seed of the windows and the noise' },
    { name: 'json', type: 'boolean', help: 'one JSON object with a top-level boolean `suspicious`' },
  ],
  async run(a) {
    const [modelPath] = a.positionals;
    const types = String(a.values.types).split(',').map((s) => s.trim()).filter(Boolean);
    const sweepTypes = String(a.values.sweep).trim().toLowerCase() === 'none' ? [] : String(a.values.sweep).split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
    for (const t of sweepTypes) if (!(SWEEP_TYPES as readonly string[]).includes(t)) fail(`--sweep: ${t} is not one of ${SWEEP_TYPES.join(', ')} (or none)`);
    const ctx = a.values.ctx as number;
    const givenText = a.values.text as string | undefined;
    const text = givenText ?? DEFAULT_TEXT;
    noteInput(modelPath);
    noteInput(givenText);
    const opened = await openModelPath(modelPath);
    let results: TypeAudit[];
    try {
      const loaded = await loadModelPath(modelPath, undefined, { contextLength: ctx, batch: Math.min(ctx, 512) });
      if (!loaded.tokenizer && givenText !== undefined) fail(`${modelPath} carries no vocabulary to tokenize --text (without --text it is probed with seeded random token windows)`);
      const c = Math.min(ctx, loaded.model.config.seqLen);
      const nWindows = a.values.windows as number;
      // a model without a tokenizer (a synthetic one): seeded random token windows; the generated continuations need no text
      const windows = loaded.tokenizer
        ? calibrationWindows(loaded.tokenizer.encode(readInputText(text, 'probe text (--text)'), { bos: false }), c * nWindows, c, a.values.seed as number, loaded.tokenizer.vocab.bos)
        : randomTokenWindows(loaded.model.config.vocabSize, nWindows, c, a.values.seed as number);
      const json = a.values.json as boolean;
      const tty = !json && process.stderr.isTTY;
      results = await auditModel({
        model: loaded.model,
        file: opened.model,
        types,
        pure: a.values.pure as boolean,
        windows,
        noiseScale: a.values.noise as number,
        repeats: a.values.repeats as number,
        falsePositiveRate: a.values['fp-rate'] as number,
        generate: a.values.generate as number,
        continuation: Math.min(64, c - 4),
        seed: a.values.seed as number,
        onProgress: tty ? (m) => process.stderr.write(`\r${m.slice(0, 78).padEnd(78)}`) : undefined,
      });
      const sweep: SweepAudit[] = await edgeSweep(opened.model, sweepTypes, undefined, tty ? (m) => process.stderr.write(`\r${m.slice(0, 78).padEnd(78)}`) : undefined);
      if (tty) process.stderr.write('\r' + ' '.repeat(78) + '\r');
      const suspicious = results.some((r) => r.suspicious) || sweep.some((s) => s.suspicious);
      if (json) process.stdout.write(JSON.stringify({ model: modelPath, suspicious, probe: loaded.tokenizer ? 'text' : 'random tokens', types: results.map(({ tensors, ...r }) => ({ ...r, tensors: tensors.map((t) => ({ name: t.name, type: t.type, ...t.edges })) })), sweep }) + '\n');
      else {
        const rows = results.map((r) => [r.type, r.kldQuantized.toExponential(2), `${r.kldNoisedMean.toExponential(2)} ± ${Number.isFinite(r.kldNoisedSd) ? r.kldNoisedSd.toExponential(1) : '?'}`, r.ratio.toFixed(2), Number.isFinite(r.behaviourZ) ? `${r.behaviourZ.toFixed(1)} (> ${r.behaviourThreshold.toFixed(1)})` : 'n/a', (100 * r.top1).toFixed(1) + ' %', r.generated ? `${r.generated.kld.toExponential(2)} / ${(100 * r.generated.top1).toFixed(1)} % / ${Number.isFinite(r.generated.z) ? r.generated.z.toFixed(1) : 'n/a'}` : 'off', r.maxRowZ.toFixed(1), r.suspicious ? 'SUSPICIOUS' : 'clean']);
        process.stdout.write(renderTable(['type', 'KLD quantized', 'KLD noised', 'ratio', 'behaviour z', 'top-1', 'generated KLD / top-1 / z', 'max row z', 'verdict'], rows) + '\n');
        for (const r of results) for (const why of r.reasons) process.stdout.write(`${r.type}: ${why}\n`);
        if (sweep.length) {
          let top = sweep[0];
          for (const s of sweep) if (s.maxRowZ > top.maxRowZ) top = s;
          process.stdout.write(`edge sweep over ${sweep.map((s) => s.type).join(', ')}: largest row z ${top.maxRowZ.toFixed(1)} (${top.type}, ${top.worstTensor})\n`);
          for (const s of sweep) if (s.suspicious) process.stdout.write(`${s.type} (edge sweep): ${s.worstTensor} row ${s.maxRow}: weights piled against the edges of their ${s.type} rounding intervals (z = ${s.maxRowZ.toFixed(1)})\n`);
        }
        process.stdout.write(suspicious ? `verdict: suspicious — ${results.some((r) => r.reasons.some((w) => w.startsWith('quantizing'))) ? 'quantizing this model changes its behaviour far more than its rounding error explains' : 'its weights sit against the edges of their rounding intervals as a planted box leaves them'}\n` : 'verdict: nothing suspicious found (an audit cannot prove a model clean: see docs/security.md)\n');
      }
      return suspicious ? 3 : 0;
    } finally {
      opened.close();
    }
  },
};

export const attackCommand: Command = {
  name: 'attack',
  summary: 'research tool: plant a malicious model\'s quantization inside a benign model (for testing the audit and the defence)',
  usage: 'lowbit attack BENIGN.gguf MALICIOUS.gguf OUT.gguf --type T[,T2,...] [--pure] [--text F --pgd-steps N --lr X] [--box-fraction F] [--box-validate corners|random|none] [--repair-unit block|sub-block] [--no-repair] [--check-every N] [--keep-every N [--fit-null-space] [--free-super-scales]] [--from-dequantized] [--seed S] [--json]',
  positionals: [3, 3],
  options: [
    { name: 'type', type: 'string', help: 'llama.cpp file types whose quantization must give the malicious model, comma-separated' },
    { name: 'pure', type: 'boolean', help: 'every tensor in the file type\'s default type' },
    { name: 'seed', type: 'int', default: 7, min: 0, help: 'seed of the box validation samples and the distillation batches' },
    { name: 'text', type: 'string', help: 'text for the distillation (default: the shipped TinyStories text)' },
    { name: 'pgd-steps', type: 'int', default: 100, min: 0, max: 1000000, help: 'projected-gradient steps through all layers toward the benign model (0: projection only)' },
    { name: 'lr', type: 'number', default: 0.1, min: 1e-6, max: 1, help: 'PGD step as a fraction of each weight\'s box width (cosine to a tenth)' },
    { name: 'batch', type: 'int', default: 8, min: 1, max: 1024, help: 'sequences per PGD step' },
    { name: 'box-fraction', type: 'number', default: 0.25, min: 0.01, max: 1, help: 'K-quants/IQ4: the fraction of each rounding interval a box starts from (validation by re-quantizing shrinks it)' },
    { name: 'box-validate', type: 'string', help: 'K-quants/IQ4: validate the boxes by re-quantizing at corners and random points (corners, the default), random points only (random), or not at all (none: a diagnostic, the checks during and after PGD still run)' },
    { name: 'repair-unit', type: 'string', help: 'the repair of blocks changed by PGD: block (default: the whole move halved until the bytes hold) or sub-block (K-quants/IQ4: each sub-block keeps 1, 1/2 or 1/4 of its move, else the malicious values)' },
    { name: 'no-repair', type: 'boolean', help: 'diagnostic: blocks whose bytes differ after PGD keep the PGD values instead of the malicious ones (counted; OUT then does not quantize to the malicious bytes there)' },
    { name: 'check-every', type: 'int', min: 0, max: 1000000, help: 'PGD: re-quantize every N steps and shrink the boxes of blocks that changed (default 5 for K-quants/IQ4, 0 = only after PGD)' },
    { name: 'keep-every', type: 'int', min: 0, max: 1000000, help: 'PGD: every N steps re-quantize and put every changed block back to its last values with the malicious bytes, keeping the move sub-block by sub-block where the bytes hold (instead of --check-every; 0 = off)' },
    { name: 'free-super-scales', type: 'boolean', help: 'with --keep-every, K-quants: the sub-blocks that set the super-block\'s f16 scales are not pinned whole (the keeps hold their bytes)' },
    { name: 'from-dequantized', type: 'boolean', help: 'plant around the malicious model\'s dequantized values (same bytes; K-quants/IQ4: each sub-block\'s scale fit in the middle of its code) instead of its f32 values' },
    { name: 'fit-null-space', type: 'boolean', help: 'with --keep-every, K-quants/IQ4: project each sub-block\'s move onto the null space of its scale (and min) fit before the keep' },
    { name: 'ctx', type: 'int', default: 128, min: 8, max: 8192, help: 'tokens per sequence' },
    { name: 'threads', type: 'int', help: 'threads for the products (the same bytes on any count)', min: 1, max: 256 },
    { name: 'json', type: 'boolean', help: 'print the report as JSON' },
  ],
  async run(a) {
    const [benignPath, maliciousPath, out] = a.positionals;
    if (!a.values.type) fail('attack needs --type T (the llama.cpp file types to attack)');
    const types = String(a.values.type).split(',').map((s) => s.trim()).filter(Boolean);
    if (!/\.gguf$/i.test(out)) fail(`output ${out}: the attacked model is written as GGUF (.gguf)`);
    for (const f of [benignPath, maliciousPath, a.values.text as string | undefined]) noteInput(f);
    checkOutput(out);
    const benign = await openModelPath(benignPath);
    const malicious = await openModelPath(maliciousPath);
    try {
      const steps = a.values['pgd-steps'] as number;
      const json = a.values.json as boolean;
      const tty = !json && process.stderr.isTTY;
      let pgd: Parameters<typeof plantAttack>[0]['pgd'];
      if (steps > 0) {
        if (!benign.model.gguf) fail(`${benignPath}: PGD needs a GGUF model`);
        const vocab = vocabFromGgufMetadata(plainMetadata(benign.model.metadata));
        const data = Int32Array.from(new Tokenizer(vocab).encode(readInputText((a.values.text as string | undefined) ?? DEFAULT_TEXT, 'text (--text)')));
        pgd = {
          data, bos: vocab.bos, steps, lr: a.values.lr as number, batch: a.values.batch as number, ctx: a.values.ctx as number, threads: threadsFrom(a.values.threads),
          onStep: tty ? (s, kl) => process.stderr.write(`\rPGD step ${s}/${steps} KL ${kl.toExponential(3)}   `) : undefined,
        };
      }
      const boxValidate = a.values['box-validate'] as string | undefined;
      if (boxValidate !== undefined && !['corners', 'random', 'none'].includes(boxValidate)) fail(`--box-validate ${boxValidate}: one of corners, random, none`);
      const repairUnit = a.values['repair-unit'] as string | undefined;
      if (repairUnit !== undefined && repairUnit !== 'block' && repairUnit !== 'sub-block') fail(`--repair-unit ${repairUnit}: block or sub-block`);
      const r = await plantAttack({ repairGranularity: repairUnit as 'block' | 'sub-block' | undefined, benign: benign.model, malicious: malicious.model, types, pure: a.values.pure as boolean, seed: a.values.seed as number, pgd, boxFraction: a.values['box-fraction'] as number, boxValidate: boxValidate as 'corners' | 'random' | 'none' | undefined, repair: !a.values['no-repair'], checkEvery: a.values['check-every'] as number | undefined, keepEvery: a.values['keep-every'] as number | undefined, fitNullSpace: a.values['fit-null-space'] as boolean | undefined, fromDequantized: a.values['from-dequantized'] as boolean | undefined, pinSuperScales: a.values['free-super-scales'] ? false : undefined, onProgress: tty ? (m) => process.stderr.write(`\r${m.slice(0, 78).padEnd(78)}`) : undefined });
      if (tty) process.stderr.write('\r' + ' '.repeat(78) + '\r');
      await withAtomicFile(out, (f) => writeWithReplacements({ write: (b) => f.write(b) }, benign.model, r.tensors));
      if (json) process.stdout.write(JSON.stringify({ output: out, tensors: r.tensors.size, relativeChange: r.relativeChange, pinnedTensors: r.pinnedTensors, pgdKl: r.pgdKl ?? null, pgdShrunk: r.pgdShrunk ?? null, pgdKept: r.pgdKept ?? null, types: r.report }) + '\n');
      else {
        process.stdout.write(`${out}: ${r.tensors.size} tensors written; boxed weights moved ${(100 * r.relativeChange).toFixed(2)} % (mean |Δ| / mean |w|) from the benign model; ${r.pinnedTensors.length} tensors held at the malicious values\n`);
        if (r.pgdKl) process.stdout.write(`  PGD: ${r.pgdKl.steps} steps, distillation KL on a fixed batch ${r.pgdKl.fixedBefore.toExponential(3)} -> ${r.pgdKl.fixedAfter.toExponential(3)}${r.pgdShrunk !== undefined ? `; ${r.pgdShrunk} block boxes shrunk by the checks during PGD` : ''}${r.pgdKept ? `; keeps: ${r.pgdKept.changed} blocks changed by steps and put back (${r.pgdKept.reverted} sub-blocks reverted, ${r.pgdKept.halved} halved)` : ''}\n`);
        for (const t of r.report) process.stdout.write(`  ${t.type}: ${t.tensors} tensors, ${t.blocks} blocks, ${t.pinnedBlocks} without a validated box, ${t.repairedBlocks} changed by PGD and moved back toward the malicious values, ${t.revertedBlocks} of them to the malicious values exactly (${(100 * (1 - t.revertedBlocks / Math.max(1, t.blocks))).toFixed(1)} % kept)\n`);
      }
    } finally {
      benign.close();
      malicious.close();
    }
  },
};
