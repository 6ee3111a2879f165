import * as fs from 'node:fs';
import { fail } from '../../errors.js';
import { LLAMA_FTYPES } from '../../algos/llama-types.js';
import { PTQ_OPTIONS, ptqOptions } from '../../algos/ptq-options.js';
import { ALGORITHMS, defineRecipe, llamaRecipe, recipeFromJSON, schemeRecipe, type Algorithm, type Recipe } from '../../algos/recipe.js';
import { runPtq, type PtqOutput } from '../../pipeline/calibrate.js';
import { planQuantization, quantizeModel, type QuantizeReport, type TensorReport } from '../../pipeline/quantize.js';
import { readImatrix } from '../../pipeline/imatrix-file.js';
import type { Command, ParsedArgs } from '../args.js';
import { refuseSameFile, withAtomicFile } from '../files.js';
import { openModelPath } from '../model-open.js';
import { fileSource } from '../node-source.js';
import { renderTable } from './formats.js';

/** The recipe of the flags, with --algo and the PTQ options that were given folded in. */
function recipeOf(a: ParsedArgs, output: 'gguf' | 'safetensors'): Recipe {
  const base = baseRecipeOf(a, output);
  const algo = a.values.algo as Algorithm | undefined;
  const given = PTQ_OPTIONS.filter((o) => a.given.has(o.flag));
  if (!algo && !given.length) return base;
  const ptq = { ...(base.ptq ?? {}), ...Object.fromEntries(given.map((o) => [o.key, a.values[o.flag]])) };
  return defineRecipe({ ...JSON.parse(JSON.stringify(base)), ...(algo ? { algorithm: algo } : {}), ...(Object.keys(ptq).length ? { ptq } : {}) });
}

function baseRecipeOf(a: ParsedArgs, output: 'gguf' | 'safetensors'): Recipe {
  const file = a.values.recipe as string | undefined;
  const type = a.values.type as string | undefined;
  if (file && type) fail('give either --type or --recipe, not both');
  if (file) {
    if (!fs.existsSync(file)) fail(`recipe file ${file} does not exist`);
    return recipeFromJSON(fs.readFileSync(file, 'utf8'));
  }
  if (!type) fail(`quantize needs --type T (llama.cpp types: ${Object.keys(LLAMA_FTYPES).join(', ')}; or a scheme such as int4, mxfp4, nvfp4, nf4) or --recipe FILE`);
  // names that are both (NVFP4): a llama.cpp file type for GGUF output, the NVIDIA scheme for safetensors
  const isFtype = output === 'gguf' && Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === type.toLowerCase());
  if (isFtype)
    return llamaRecipe(type, {
      pure: a.values.pure as boolean,
      outputTensorType: (a.values['output-tensor-type'] as string | undefined)?.toUpperCase(),
      tokenEmbeddingType: (a.values['token-embedding-type'] as string | undefined)?.toUpperCase(),
      leaveOutputTensor: a.values['leave-output-tensor'] as boolean,
    });
  if (a.given.has('zero-point') && !a.values.asym) fail('--zero-point applies with --asym');
  return schemeRecipe(type, { groupSize: a.values.group as number | undefined, asym: a.values.asym as boolean, zeroPoint: a.values['zero-point'] as 'int' | 'float' | undefined, keepEmbeddings: a.values['keep-embeddings'] as boolean });
}

export function reportTable(r: QuantizeReport): string {
  const rows = r.tensors.map((t: TensorReport) => [
    t.name,
    t.shape.join('x'),
    t.type + (t.fallbackFrom ? ` (from ${t.fallbackFrom})` : ''),
    t.bitsPerWeight.toFixed(2),
    Number.isFinite(t.sqnrDb) ? t.sqnrDb.toFixed(2) : 'exact',
  ]);
  const table = renderTable(['tensor', 'shape', 'type', 'bpw', 'SQNR dB'], rows, [false, false, false, true, true]);
  return `${table}\n\ntotal: ${r.parameters} parameters, ${r.bytes} bytes of tensor data, ${r.bitsPerWeight.toFixed(3)} bits per weight, ${r.seconds.toFixed(2)} s`;
}

export const quantizeCommand: Command = {
  name: 'quantize',
  summary: 'quantize a model to GGUF (llama.cpp types) or safetensors (generic schemes), with a per-tensor report',
  usage:
    'lowbit quantize IN OUT (--type T | --recipe FILE) [--algo rtn|gptq|awq|hqq] [--calib FILE --calib-tokens N --calib-ctx C --seed S] [--rotate hadamard] [--imatrix F] [--pure] [--dry-run] [--json]',
  positionals: [1, 2],
  options: [
    { name: 'type', type: 'string', help: 'llama.cpp file type (Q4_K_M, Q8_0, ...) or a scheme (int4, mxfp4, nvfp4, nf4, q4_0, ...)' },
    { name: 'recipe', type: 'string', help: 'a recipe JSON file' },
    { name: 'group', type: 'int', help: 'group size for generic integer/float schemes', min: 1 },
    { name: 'asym', type: 'boolean', help: 'asymmetric (zero-point) generic scheme' },
    { name: 'zero-point', type: 'string', choices: ['int', 'float'], help: 'with --asym: integer zero-point (default) or float minimum (as Q4_1; HQQ\'s)' },
    { name: 'keep-embeddings', type: 'boolean', help: 'generic schemes: keep token_embd/output in f16' },
    { name: 'imatrix', type: 'string', help: 'importance matrix (llama-imatrix .dat or .gguf) for the weighted quantizers' },
    { name: 'pure', type: 'boolean', help: 'llama.cpp types: no mixing, every tensor gets the default type (as llama-quantize --pure)' },
    { name: 'output-tensor-type', type: 'string', help: 'type of output.weight' },
    { name: 'token-embedding-type', type: 'string', help: 'type of token_embd.weight' },
    { name: 'leave-output-tensor', type: 'boolean', help: 'do not quantize output.weight' },
    { name: 'algo', type: 'string', choices: ALGORITHMS, help: 'rtn (default; imatrix-weighted with --calib), gptq, awq (need --calib), hqq (asymmetric targets, no calibration)' },
    { name: 'calib', type: 'string', help: 'calibration text (UTF-8) for gptq, awq, --smooth and imatrix-rtn' },
    ...PTQ_OPTIONS.map((o) => ({ name: o.flag, type: o.type, help: `${o.help} (default ${String(o.default)})`, ...(o.choices ? { choices: o.choices } : {}), ...(o.min !== undefined ? { min: o.min } : {}), ...(o.max !== undefined ? { max: o.max } : {}) })),
    { name: 'dry-run', type: 'boolean', help: 'print the per-tensor plan and write nothing' },
    { name: 'json', type: 'boolean', help: 'print the report as JSON (no progress)' },
  ],
  async run(a) {
    const [input, output] = a.positionals;
    const dry = a.values['dry-run'] as boolean;
    if (!output && !dry) fail('quantize needs an output path (or --dry-run)');
    const out = output ?? 'plan.gguf';
    const kind = /\.gguf$/i.test(out) ? 'gguf' : /\.safetensors$/i.test(out) ? 'safetensors' : fail(`output ${out}: extension must be .gguf or .safetensors`);
    refuseSameFile(input, output);
    const recipe = recipeOf(a, kind);
    const imFile = a.values.imatrix as string | undefined;
    refuseSameFile(imFile, output);
    let imatrix: Awaited<ReturnType<typeof readImatrix>> | undefined;
    if (imFile) {
      const src = fileSource(imFile);
      try {
        imatrix = await readImatrix(src);
      } finally {
        src.close();
      }
    }
    const json = a.values.json as boolean;
    const { model, close } = await openModelPath(input);
    try {
      const plan = planQuantization(model, recipe, kind, { hasImatrix: !!imatrix });
      if (imatrix) {
        const names = new Set(model.tensors.map((t) => t.name));
        const unknown = [...imatrix.entries.keys()].filter((n) => !names.has(n));
        if (unknown.length) fail(`imatrix ${imFile} does not match this model: it has entries for ${unknown.slice(0, 3).join(', ')}${unknown.length > 3 ? ', ...' : ''}`);
      }
      if (dry) {
        const rows = plan.tensors.map((p) => [p.name, p.ne.join('x'), p.from, p.to + (p.fallbackFrom ? ` (from ${p.fallbackFrom})` : '')]);
        if (json) process.stdout.write(JSON.stringify({ recipe: plan.recipe, tensors: plan.tensors.map(({ name, ne, from, to, fallbackFrom }) => ({ name, ne, from, to, fallbackFrom })) }, null, 1) + '\n');
        else process.stdout.write(renderTable(['tensor', 'shape', 'from', 'to'], rows) + '\n');
        return;
      }
      const tty = !json && process.stderr.isTTY;
      const calibFile = a.values.calib as string | undefined;
      refuseSameFile(calibFile, output);
      if (calibFile && !fs.existsSync(calibFile)) fail(`calibration file ${calibFile} does not exist`);
      const options = ptqOptions(recipe.ptq ?? {});
      let ptq: PtqOutput | undefined;
      const calibrated = (recipe.algorithm ?? 'rtn') !== 'rtn' || recipe.rules.some((r) => r.algorithm && r.algorithm !== 'rtn') || calibFile || options.rotate !== 'none' || options.smooth > 0;
      if (calibrated) {
        ptq = await runPtq(model, plan, {
          recipe,
          options,
          calibText: calibFile ? fs.readFileSync(calibFile, 'utf8') : undefined,
          onProgress: tty ? (msg) => process.stderr.write(`\r${msg.padEnd(60)}`) : undefined,
        });
        if (tty) process.stderr.write('\r' + ' '.repeat(60) + '\r');
      }
      const report = await withAtomicFile(out, (f) =>
        quantizeModel(model, plan, { write: (b) => f.write(b) }, {
          ptq,
          imatrix,
          onTensor: tty ? (i, n, r) => process.stderr.write(`\r[${i}/${n}] ${r.name.padEnd(40).slice(0, 40)}`) : undefined,
        }),
      );
      if (tty) process.stderr.write('\r' + ' '.repeat(50) + '\r');
      const algorithms = ptq ? Object.fromEntries([...ptq.quantized].map(([n, t]) => [n, t.algorithm])) : {};
      if (json)
        process.stdout.write(
          JSON.stringify({
            ...report,
            output: out,
            algorithm: recipe.algorithm ?? 'rtn',
            ...(ptq ? { ptq: { notes: ptq.notes, seconds: ptq.seconds, calibrationTokens: ptq.calibrationTokens, rotationMaxLogitDiff: ptq.rotationMaxLogitDiff } } : {}),
            tensors: report.tensors.map((t) => ({ ...t, sqnrDb: Number.isFinite(t.sqnrDb) ? t.sqnrDb : null, ...(algorithms[t.name] ? { algorithm: algorithms[t.name] } : {}) })),
          }) + '\n',
        );
      else process.stdout.write(`${out}: ${recipe.name}${recipe.algorithm ? ` (${recipe.algorithm})` : ''}\n\n${reportTable(report)}\n${ptq ? `${ptq.notes.join('\n')}\n${ptq.calibrationTokens ? `calibration: ${ptq.calibrationTokens} tokens, ` : ''}${ptq.seconds.toFixed(2)} s\n` : ''}`);
    } finally {
      close();
    }
  },
};
