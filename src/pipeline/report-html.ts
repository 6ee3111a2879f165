/**
 * The quantize report as one self-contained HTML page: inline CSS and inline SVG plots, no scripts, no
 * external assets (it opens from disk, from an e-mail, offline). Sections: summary (size, bits per
 * weight, time; PPL, KLD, top-1 when evaluated), SQNR per layer (one line per kind of weight), the KLD
 * distribution of the scored tokens (log-spaced bins), and the per-tensor table.
 */
import type { QuantizeEvaluation } from './evaluate.js';
import type { QuantizeReport, TensorReport } from './quantize.js';

export interface HtmlReportInput {
  report: QuantizeReport;
  input: string;
  output: string;
  evaluation?: QuantizeEvaluation;
  /** shown in the footer, e.g. "lowbit 0.1.0" */
  generator?: string;
}

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 3 : 1)} MiB`;
}

function fmtDb(x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : 'exact';
}

/** "nice" tick values covering [lo, hi] */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export interface Frame {
  w: number;
  h: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}
const frame: Frame = { w: 760, h: 320, left: 56, right: 150, top: 16, bottom: 44 };

export function axes(f: Frame, xTicks: { v: number; label: string }[], yTicks: number[], x: (v: number) => number, y: (v: number) => number, xLabel: string, yLabel: string): string {
  const x0 = f.left;
  const x1 = f.w - f.right;
  const y0 = f.h - f.bottom;
  const y1 = f.top;
  const parts = [`<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="#333"/>`, `<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y1}" stroke="#333"/>`];
  for (const t of yTicks) {
    const yy = y(t).toFixed(1);
    parts.push(`<line x1="${x0}" y1="${yy}" x2="${x1}" y2="${yy}" stroke="#e4e4e4"/>`, `<text x="${x0 - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  for (const t of xTicks) parts.push(`<text x="${x(t.v).toFixed(1)}" y="${y0 + 16}" text-anchor="middle">${escapeHtml(t.label)}</text>`);
  parts.push(`<text x="${(x0 + x1) / 2}" y="${f.h - 6}" text-anchor="middle">${escapeHtml(xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(yLabel)}</text>`);
  return parts.join('');
}

/** SQNR (dB) of every blk.N.* tensor against N, one polyline per weight kind. */
export function sqnrPerLayerSvg(tensors: readonly TensorReport[]): string {
  const series = new Map<string, { layer: number; db: number; type: string }[]>();
  for (const t of tensors) {
    const m = /^blk\.(\d+)\.(.+?)(\.weight)?$/.exec(t.name);
    if (!m || !Number.isFinite(t.sqnrDb)) continue;
    const kind = m[2];
    if (!series.has(kind)) series.set(kind, []);
    series.get(kind)!.push({ layer: Number(m[1]), db: t.sqnrDb, type: t.type });
  }
  if (series.size === 0) return '<p>No quantized per-layer tensors.</p>';
  const all = [...series.values()].flat();
  const nLayers = Math.max(...all.map((p) => p.layer)) + 1;
  const lo = Math.floor(Math.min(...all.map((p) => p.db)) / 5) * 5;
  const hi = Math.max(lo + 5, Math.ceil(Math.max(...all.map((p) => p.db)) / 5) * 5);
  const f = frame;
  const x = (v: number) => f.left + ((v + 0.5) / nLayers) * (f.w - f.left - f.right);
  const y = (v: number) => f.h - f.bottom - ((v - lo) / (hi - lo)) * (f.h - f.top - f.bottom);
  const step = Math.max(1, Math.ceil(nLayers / 16));
  const xTicks = Array.from({ length: nLayers }, (_, i) => i).filter((i) => i % step === 0).map((i) => ({ v: i, label: String(i) }));
  const body: string[] = [axes(f, xTicks, ticks(lo, hi), x, y, 'layer', 'SQNR (dB)')];
  [...series.entries()].forEach(([kind, pts], i) => {
    const color = PALETTE[i % PALETTE.length];
    pts.sort((a, b) => a.layer - b.layer);
    body.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.map((p) => `${x(p.layer).toFixed(1)},${y(p.db).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) body.push(`<circle cx="${x(p.layer).toFixed(1)}" cy="${y(p.db).toFixed(1)}" r="2.5" fill="${color}"><title>blk.${p.layer}.${escapeHtml(kind)}: ${p.type}, ${p.db.toFixed(2)} dB</title></circle>`);
    const ly = f.top + 10 + i * 16;
    body.push(`<line x1="${f.w - f.right + 12}" y1="${ly}" x2="${f.w - f.right + 30}" y2="${ly}" stroke="${color}" stroke-width="2"/><text x="${f.w - f.right + 36}" y="${ly}" dominant-baseline="middle">${escapeHtml(kind)}</text>`);
  });
  return `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.w} ${f.h}" role="img" aria-label="SQNR per layer">${body.join('')}</svg>`;
}

/** Histogram of per-token KLD over log10-spaced bins (values below 1e-6 share the first bin). */
export function kldHistogramSvg(values: ArrayLike<number>, stats?: { mean: number; p99: number }): string {
  const n = values.length;
  if (n === 0) return '<p>No scored tokens.</p>';
  const floor = 1e-6;
  let max = floor;
  for (let i = 0; i < n; i++) if (values[i] > max) max = values[i];
  const loExp = Math.log10(floor);
  const hiExp = Math.max(loExp + 1, Math.ceil(Math.log10(max) * 4) / 4);
  const binsPerDecade = 4;
  const nBins = Math.round((hiExp - loExp) * binsPerDecade);
  const counts = new Array<number>(nBins).fill(0);
  for (let i = 0; i < n; i++) {
    const v = Math.max(values[i], floor);
    counts[Math.min(nBins - 1, Math.max(0, Math.floor((Math.log10(v) - loExp) * binsPerDecade)))]++;
  }
  const f = { ...frame, right: 24 };
  const top = Math.ceil(Math.max(...counts) * 1.12);
  const x = (e: number) => f.left + ((e - loExp) / (hiExp - loExp)) * (f.w - f.left - f.right);
  const y = (c: number) => f.h - f.bottom - (c / top) * (f.h - f.top - f.bottom);
  const xTicks: { v: number; label: string }[] = [];
  for (let e = Math.ceil(loExp); e <= hiExp; e++) xTicks.push({ v: e, label: e === loExp ? `≤1e${e}` : `1e${e}` });
  const body: string[] = [axes(f, xTicks, ticks(0, top), x, y, 'KL divergence per token (nats, log scale)', 'tokens')];
  counts.forEach((c, i) => {
    if (!c) return;
    const e0 = loExp + i / binsPerDecade;
    const e1 = e0 + 1 / binsPerDecade;
    body.push(`<rect x="${(x(e0) + 0.5).toFixed(1)}" y="${y(c).toFixed(1)}" width="${(x(e1) - x(e0) - 1).toFixed(1)}" height="${(y(0) - y(c)).toFixed(1)}" fill="#4c78a8"><title>${c} tokens with KLD in [${Math.pow(10, e0).toExponential(1)}, ${Math.pow(10, e1).toExponential(1)})</title></rect>`);
  });
  if (stats)
    for (const [i, [label, v, color]] of ([['mean', stats.mean, '#d62728'], ['p99', stats.p99, '#ff7f0e']] as const).entries()) {
      if (!(v > 0)) continue;
      const xx = x(Math.min(hiExp, Math.max(loExp, Math.log10(v)))).toFixed(1);
      body.push(`<line x1="${xx}" y1="${f.top}" x2="${xx}" y2="${f.h - f.bottom}" stroke="${color}" stroke-dasharray="4 3"/><text x="${xx}" y="${f.top + 10 + 14 * i}" dx="4" fill="${color}">${label} ${v.toExponential(2)}</text>`);
    }
  return `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.w} ${f.h}" role="img" aria-label="KLD distribution">${body.join('')}</svg>`;
}

function table(head: string[] | null, rows: string[][], numeric: boolean[] = []): string {
  const th = head ? `<thead><tr>${head.map((h, i) => `<th${numeric[i] ? ' class="num"' : ''}>${escapeHtml(h)}</th>`).join('')}</tr></thead>` : '';
  const tr = rows.map((r) => `<tr>${r.map((c, i) => `<td${numeric[i] ? ' class="num"' : ''}>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table>${th}<tbody>\n${tr}\n</tbody></table>`;
}

export function quantizeReportHtml(x: HtmlReportInput): string {
  const r = x.report;
  const ev = x.evaluation;
  const summary: string[][] = [
    ['input', x.input],
    ['output', `${x.output} (${r.output})`],
    ['recipe', r.recipe],
    ['tensors', String(r.tensors.length)],
    ['parameters', r.parameters.toLocaleString('en-US')],
    ['size of tensor data', `${mib(r.bytes)} (${r.bytes.toLocaleString('en-US')} bytes)`],
    ['bits per weight', r.bitsPerWeight.toFixed(3)],
    ['quantize time', `${r.seconds.toFixed(2)} s`],
  ];
  if (ev)
    summary.push(
      ['evaluation text', `${ev.text}: ${ev.chunks} chunks of ${ev.ctx}, ${ev.tokens} scored tokens`],
      ['PPL original → quantized', `${ev.pplBase.toFixed(4)} → ${ev.ppl.toFixed(4)} ± ${ev.pplStderr.toFixed(4)} (${(100 * (ev.ppl / ev.pplBase - 1)).toFixed(2)} %)`],
      ['KLD mean ± stderr', `${ev.kld.mean.toExponential(3)} ± ${ev.kld.stderr.toExponential(2)}`],
      ['KLD median / p99 / max', `${ev.kld.median.toExponential(3)} / ${ev.kld.p99.toExponential(3)} / ${ev.kld.max.toExponential(3)}`],
      ['same top-1 token', `${(100 * ev.top1).toFixed(2)} %`],
      ['Δp mean / RMS', `${(100 * ev.dp.mean).toFixed(3)} % / ${(100 * ev.dp.rms).toFixed(3)} %`],
    );
  const byType = new Map<string, { n: number; params: number; bytes: number }>();
  for (const t of r.tensors) {
    const e = byType.get(t.type) ?? { n: 0, params: 0, bytes: 0 };
    e.n++;
    e.params += t.shape.reduce((a, b) => a * b, 1);
    e.bytes += t.bytes;
    byType.set(t.type, e);
  }
  const typeRows = [...byType.entries()].sort((a, b) => b[1].bytes - a[1].bytes).map(([type, e]) => [type, String(e.n), e.params.toLocaleString('en-US'), mib(e.bytes), ((8 * e.bytes) / e.params).toFixed(3)]);
  const tensorRows = r.tensors.map((t) => [t.name, t.shape.join(' × '), t.type + (t.fallbackFrom ? ` (from ${t.fallbackFrom})` : ''), t.bytes.toLocaleString('en-US'), t.bitsPerWeight.toFixed(3), fmtDb(t.sqnrDb)]);
  const css = `body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:980px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.plot{width:100%;height:auto;font-size:11px;font-family:inherit}.note{color:#666;font-size:12px}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lowbit quantize report: ${escapeHtml(x.output)}</title>
<style>
${css}
</style>
</head>
<body>
<h1>Quantization report</h1>
<p class="note">${escapeHtml(x.input)} → ${escapeHtml(x.output)} · recipe ${escapeHtml(r.recipe)}</p>
<h2>Summary</h2>
${table(null, summary)}
<h2>By type</h2>
${table(['type', 'tensors', 'parameters', 'size', 'bpw'], typeRows, [false, true, true, true, true])}
<h2>SQNR per layer</h2>
<p class="note">Signal-to-quantization-noise ratio of each stored weight against the input, 10·log10(Σx² / Σ(x − x̂)²); higher is better. Exact copies are not plotted.</p>
${sqnrPerLayerSvg(r.tensors)}
${ev ? `<h2>KLD distribution</h2>\n<p class="note">KL divergence of the quantized model's next-token distribution from the original's, per scored token (${ev.tokens} tokens).</p>\n${kldHistogramSvg(ev.kldValues, ev.kld)}` : ''}
<h2>Tensors</h2>
${table(['tensor', 'shape', 'type', 'bytes', 'bpw', 'SQNR dB'], tensorRows, [false, false, false, true, true, true])}
<p class="note">${escapeHtml(x.generator ?? 'lowbit')}</p>
</body>
</html>
`;
}
