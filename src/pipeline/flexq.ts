/**
 * FlexQ's layer-wise sensitivity analysis (Zhang et al. 2025): which linears keep 8-bit activations
 * in a W6A6 model. Each linear's input alone is quantized to INT6 per token (every other product in
 * f32) and the KL divergence of the model's next-token distributions from the unquantized run is
 * measured on calibration text; the `fraction` most sensitive linears keep INT8 inputs
 * (model/act-quant.ts actQuantLinear(6, keep8)).
 */
import { logitsFileBase, perplexity } from '../eval/perplexity.js';
import { memorySink } from '../io/sink.js';
import { bytesSource } from '../io/source.js';
import { actQuantLinear } from '../model/act-quant.js';
import type { Llama } from '../model/llama.js';
import { linear } from '../model/matmul.js';

export interface FlexqSensitivity {
  /** linear weight names whose inputs stay INT8, most sensitive first */
  keep8: string[];
  /** every linear with its A6-alone KLD, most sensitive first */
  scores: { name: string; kld: number }[];
}

const LINEAR = /^blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$/;

export async function flexqSensitivity(model: Llama, tokens: ArrayLike<number>, opts: { ctx: number; chunks: number; bos: number; addBos: boolean; fraction: number }): Promise<FlexqSensitivity> {
  const setup = { ctx: opts.ctx, chunks: opts.chunks, bos: opts.bos, addBos: opts.addBos };
  const saved = model.hooks.linear;
  const names = new Set<string>();
  model.hooks.linear = (out, x, w, nTok) => {
    if (LINEAR.test(w.name)) names.add(w.name);
    linear(out, x, w, nTok);
  };
  try {
    const sink = memorySink();
    await perplexity(model, tokens, { ...setup, saveLogits: (b) => sink.write(b) });
    const base = await logitsFileBase(bytesSource(sink.bytes(), 'flexq base logits'));
    const a6 = actQuantLinear(6);
    const scores: { name: string; kld: number }[] = [];
    for (const name of names) {
      model.hooks.linear = (out, x, w, nTok) => (w.name === name ? a6(out, x, w, nTok) : linear(out, x, w, nTok));
      const r = await perplexity(model, tokens, { ...setup, base });
      scores.push({ name, kld: r.kld!.mean });
    }
    scores.sort((a, b) => b.kld - a.kld || (a.name < b.name ? -1 : 1));
    return { keep8: scores.slice(0, Math.round(opts.fraction * scores.length)).map((s) => s.name), scores };
  } finally {
    model.hooks.linear = saved;
  }
}
