import { plainValue, GGUF_TYPE_NAMES, GgufType, type GgufArray, type GgufValue } from '../../io/gguf.js';
import { hparamsFromGguf, hparamsFromHfConfig, type LlamaHparams } from '../../io/hf-llama.js';
import type { ModelFile } from '../../io/model-file.js';
import type { Command } from '../args.js';
import { openModelPath, readSiblingConfig } from '../model-open.js';
import { isOnnxPath, openOnnxPath } from '../onnx-open.js';
import { onnxSummary, onnxSummaryText } from '../../io/onnx/summary.js';

async function inspectOnnx(file: string, json: boolean): Promise<void> {
  const { model, close } = await openOnnxPath(file);
  try {
    const s = onnxSummary(model);
    process.stdout.write((json ? JSON.stringify(s) : onnxSummaryText(s)) + '\n');
  } finally {
    close();
  }
}

const MAX_ITEMS = 8;
/** metadata values longer than this are cut in the text listing (--json has them whole) */
const MAX_TEXT = 160;

/** quantization_config from config.json beside a safetensors checkpoint */
function quantizationConfig(m: ModelFile, file: string): unknown {
  if (m.format !== 'safetensors') return undefined;
  try {
    const c = readSiblingConfig(file) as Record<string, unknown> | undefined;
    return c && typeof c === 'object' ? c.quantization_config : undefined;
  } catch {
    return undefined;
  }
}

function summarize(v: GgufValue | string | number): unknown {
  if (typeof v !== 'object') return v;
  if (v.type === GgufType.ARRAY) {
    const a = v.value as GgufArray;
    const n = a.values.length;
    const items = plainValue({ ...a, values: a.values.slice(0, MAX_ITEMS) as never } as GgufArray) as unknown[];
    const it = GGUF_TYPE_NAMES[a.itemType];
    return n > MAX_ITEMS ? { type: `array<${it}>`, length: n, first: items.map(big) } : items.map(big);
  }
  return big(v.value);
}
function big(x: unknown): unknown {
  return typeof x === 'bigint' ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x;
}

function hparams(m: ModelFile, file: string): LlamaHparams | undefined {
  try {
    if (m.gguf) return hparamsFromGguf(m.gguf.metadata);
    if (m.format === 'llama2c') {
      const g = (k: string) => m.metadata.get(k) as number;
      return { vocabSize: g('vocab_size'), dim: g('dim'), hiddenDim: g('hidden_dim'), nLayers: g('n_layers'), nHeads: g('n_heads'), nKvHeads: g('n_kv_heads'), seqLen: g('seq_len'), normEps: 1e-5 };
    }
    const c = readSiblingConfig(file);
    return c ? hparamsFromHfConfig(c) : undefined;
  } catch {
    return undefined;
  }
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'show a model file: format, hyper-parameters, metadata, tensors, totals (GGUF, safetensors (+index), llama2.c, ONNX)',
  usage: 'lowbit inspect FILE [--json]',
  positionals: [1, 1],
  options: [{ name: 'json', type: 'boolean', help: 'print one JSON object', default: false }],
  async run(a) {
    const file = a.positionals[0];
    if (isOnnxPath(file)) return inspectOnnx(file, a.values.json as boolean);
    const { model: m, close } = await openModelPath(file);
    try {
      const meta: Record<string, unknown> = {};
      for (const [k, v] of m.metadata) meta[k] = summarize(v);
      const arch = m.gguf ? (m.gguf.metadata.get('general.architecture')?.value as string | undefined) : m.format === 'llama2c' ? 'llama' : undefined;
      const hp = hparams(m, file);
      let params = 0;
      let bytes = 0;
      // packed int4 layers count their weights (in x out), not their I32 words, scales and zero-points
      const packedParts = new Set(m.packedInt4?.flatMap((g) => [g.qweight, g.scales, g.qzeros, g.gIdx].filter((t) => t !== undefined).map((t) => t.name)));
      for (const g of m.packedInt4 ?? []) params += g.inFeatures * g.outFeatures;
      const tensors = m.tensors.map((t) => {
        if (!packedParts.has(t.name)) params += t.nElements;
        bytes += t.byteLength;
        return { name: t.name, shape: t.shape, type: t.type, bytes: t.byteLength, offset: t.byteOffset };
      });
      const report = {
        file,
        format: m.format,
        version: m.version,
        alignment: m.gguf?.alignment,
        architecture: arch,
        hyperParameters: hp,
        metadata: meta,
        quantizationConfig: quantizationConfig(m, file),
        packedInt4Problems: m.packedInt4Problems,
        packedInt4: m.packedInt4?.map((g) => ({
          prefix: g.prefix,
          layout: g.layout,
          bits: g.bits,
          inFeatures: g.inFeatures,
          outFeatures: g.outFeatures,
          groupSize: g.groupSize,
          zeroPoints: g.qzeros ? 'qzeros' : 'none (8)',
          gIdx: g.gIdx !== undefined,
        })),
        tensors,
        totals: { tensors: tensors.length, parameters: params, bytes, bitsPerWeight: params ? (bytes * 8) / params : 0 },
      };
      if (a.values.json) {
        process.stdout.write(JSON.stringify(report, (_k, v) => (typeof v === 'bigint' ? big(v) : v)) + '\n');
        return;
      }
      const out: string[] = [];
      out.push(`${file}: ${m.format}${m.version !== undefined ? ` v${m.version}` : ''}${arch ? `, architecture ${arch}` : ''}${m.gguf ? `, alignment ${m.gguf.alignment}` : ''}`);
      if (hp) out.push(`hyper-parameters: ${Object.entries(hp).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`).join(' ')}`);
      if (Object.keys(meta).length) {
        out.push(`metadata (${Object.keys(meta).length}):`);
        for (const [k, v] of Object.entries(meta)) {
          const text = JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x));
          out.push(`  ${k} = ${text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}... (${text.length} characters)` : text}`);
        }
      }
      if (report.quantizationConfig) out.push(`quantization_config (config.json): ${JSON.stringify(report.quantizationConfig)}`);
      if (report.packedInt4?.length) {
        out.push(`packed int4 layers (${report.packedInt4.length}):`);
        const pw = Math.max(6, ...report.packedInt4.map((g) => g.prefix.length));
        out.push(`  ${'prefix'.padEnd(pw)}  layout  bits  ${'in x out'.padEnd(13)} group  zero-points  g_idx`);
        for (const g of report.packedInt4)
          out.push(`  ${g.prefix.padEnd(pw)}  ${g.layout.padEnd(6)}  ${String(g.bits).padStart(4)}  ${`${g.inFeatures} x ${g.outFeatures}`.padEnd(13)} ${String(g.groupSize).padStart(5)}  ${g.zeroPoints.padEnd(11)}  ${g.gIdx ? 'yes' : 'no'}`);
      }
      for (const p of report.packedInt4Problems ?? []) out.push(`not a readable packed int4 layer: ${p}`);
      out.push(`tensors (${tensors.length}):`);
      const w = Math.max(4, ...tensors.map((t) => t.name.length));
      out.push(`  ${'name'.padEnd(w)}  ${'shape'.padEnd(18)} ${'type'.padEnd(8)} ${'bytes'.padStart(12)} ${'offset'.padStart(12)}`);
      for (const t of tensors) out.push(`  ${t.name.padEnd(w)}  ${`[${t.shape.join(', ')}]`.padEnd(18)} ${t.type.padEnd(8)} ${String(t.bytes).padStart(12)} ${String(t.offset).padStart(12)}`);
      out.push(`total: ${params} parameters, ${bytes} bytes, ${report.totals.bitsPerWeight.toFixed(3)} bits per weight`);
      process.stdout.write(out.join('\n') + '\n');
    } finally {
      close();
    }
  },
};
