/**
 * The sensitivity report as one self-contained HTML page (inline CSS and SVG, no scripts): bytes vs
 * cost of every candidate type per tensor on log axes, the Pareto front of each tensor drawn as a line,
 * and the table of costs.
 */
import { convexHull } from '../alloc/solve.js';
import type { SensitivityDb } from './sensitivity.js';

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

/** Kinds of tensor get one colour each (attn_q, ffn_down, ...). */
function kindOf(name: string): string {
  return name.replace(/^blk\.\d+\./, '').replace(/\.weight$/, '');
}

export function paretoSvg(db: SensitivityDb, width = 760, height = 420): string {
  const pts = db.tensors.flatMap((t) => t.candidates.filter((c) => c.cost > 0).map((c) => ({ t, c })));
  if (pts.length === 0) return '<p>no positive costs to plot</p>';
  const m = { l: 64, r: 150, t: 16, b: 40 };
  const bpw = (t: SensitivityDb['tensors'][number], bytes: number) => (8 * bytes) / (t.shape[0] * t.shape[1]);
  const xs = pts.map((p) => bpw(p.t, p.c.bytes));
  const ys = pts.map((p) => Math.log10(p.c.cost));
  const x0 = Math.min(...xs), x1 = Math.max(...xs) + 1e-9;
  const y0 = Math.floor(Math.min(...ys)), y1 = Math.ceil(Math.max(...ys) + 1e-9);
  const X = (v: number) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (v: number) => height - m.b - ((v - y0) / (y1 - y0 || 1)) * (height - m.t - m.b);
  const kinds = [...new Set(db.tensors.map((t) => kindOf(t.name)))];
  const colour = (name: string) => PALETTE[kinds.indexOf(kindOf(name)) % PALETTE.length];
  const parts: string[] = [];
  for (let e = y0; e <= y1; e++) parts.push(`<line x1="${m.l}" x2="${width - m.r}" y1="${Y(e)}" y2="${Y(e)}" stroke="#eee"/><text x="${m.l - 6}" y="${Y(e) + 4}" text-anchor="end" font-size="11">1e${e}</text>`);
  for (let b = Math.ceil(x0); b <= x1; b++) parts.push(`<text x="${X(b)}" y="${height - m.b + 16}" text-anchor="middle" font-size="11">${b}</text>`);
  parts.push(`<text x="${(m.l + width - m.r) / 2}" y="${height - 6}" text-anchor="middle" font-size="12">bits per weight</text>`);
  parts.push(`<text transform="translate(14 ${(m.t + height - m.b) / 2}) rotate(-90)" text-anchor="middle" font-size="12">cost (${db.estimator === 'kld' || db.outputFactor === 'kld' ? 'KLD' : 'tr(ΔW H ΔWᵀ)'})</text>`);
  for (const t of db.tensors) {
    const cands = t.candidates.filter((c) => c.cost > 0);
    const hull = convexHull(cands.map((c) => ({ label: c.type, bytes: c.bytes, cost: c.cost })));
    const path = hull.map((i, k) => `${k ? 'L' : 'M'}${X(bpw(t, cands[i].bytes)).toFixed(1)},${Y(Math.log10(cands[i].cost)).toFixed(1)}`).join('');
    parts.push(`<path d="${path}" fill="none" stroke="${colour(t.name)}" stroke-opacity="0.45"><title>${escapeHtml(t.name)}</title></path>`);
    for (const c of cands) parts.push(`<circle cx="${X(bpw(t, c.bytes)).toFixed(1)}" cy="${Y(Math.log10(c.cost)).toFixed(1)}" r="2.5" fill="${colour(t.name)}"><title>${escapeHtml(`${t.name} ${c.type}: ${c.cost.toExponential(3)}`)}</title></circle>`);
  }
  kinds.forEach((k, i) => parts.push(`<rect x="${width - m.r + 12}" y="${m.t + i * 18}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/><text x="${width - m.r + 28}" y="${m.t + i * 18 + 9}" font-size="11">${escapeHtml(k)}</text>`));
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="cost against bits per weight, per tensor">${parts.join('')}</svg>`;
}

export function sensitivityReportHtml(db: SensitivityDb, model: string): string {
  const types = [...new Set(db.tensors.flatMap((t) => t.candidates.map((c) => c.type)))];
  const rows = db.tensors
    .map((t) => `<tr><td>${escapeHtml(t.name)}</td><td>${t.shape.join('×')}</td>${types.map((ty) => {
      const c = t.candidates.find((x) => x.type === ty);
      return `<td class="n">${c ? c.cost.toExponential(3) : '–'}</td>`;
    }).join('')}</tr>`)
    .join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lowbit sensitivity: ${escapeHtml(model)}</title>
<style>body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee}td.n{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left}</style></head><body>
<h1>Sensitivity of ${escapeHtml(model)}</h1>
<p>${db.tensors.length} tensors × ${types.length} candidate types; estimator <b>${db.estimator}</b>${db.estimator === 'hessian' ? ` (output factor: ${db.outputFactor})` : ''}; ${db.calibration.tokens} calibration tokens in windows of ${db.calibration.ctx}; ${db.seconds.toFixed(1)} s. Lines: each tensor's Pareto front (lower convex hull of bytes vs cost), the curve the allocator walks.</p>
${paretoSvg(db)}
<table><thead><tr><th>tensor</th><th>shape</th>${types.map((t) => `<th>${t}</th>`).join('')}</tr></thead><tbody>
${rows}
</tbody></table><p>model fingerprint ${db.modelHash}</p></body></html>
`;
}
