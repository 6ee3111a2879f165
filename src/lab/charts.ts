/**
 * The Lab's own plots, as SVG strings on the report's axes (pipeline/report-html.ts draws the SQNR per
 * layer and the KLD histogram for both the page and the HTML report): size vs KLD of the session's
 * variants, a format's grid of values, and a tensor's values against their quantized values.
 */
import { axes, escapeHtml, PALETTE, ticks, type Frame } from '../pipeline/report-html.js';

const FRAME: Frame = { w: 760, h: 300, left: 64, right: 24, top: 16, bottom: 44 };

function svg(f: Frame, label: string, body: string[]): string {
  return `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.w} ${f.h}" role="img" aria-label="${escapeHtml(label)}">${body.join('')}</svg>`;
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-2 ? v.toExponential(0) : String(Number(v.toPrecision(3)));
}

export interface SizePoint {
  label: string;
  bitsPerWeight: number;
  kld: number;
}

/** Size (bits per weight) against mean KLD (log scale), one labelled point per variant. */
export function sizeVsKldSvg(points: readonly SizePoint[]): string {
  const pts = points.filter((p) => p.kld > 0 && Number.isFinite(p.kld));
  if (pts.length === 0) return '';
  const f = FRAME;
  const bx = pts.map((p) => p.bitsPerWeight);
  const x0 = Math.floor(Math.min(...bx)) - 0.5;
  const x1 = Math.ceil(Math.max(...bx)) + 0.5;
  const ly = pts.map((p) => Math.log10(p.kld));
  const y0 = Math.floor(Math.min(...ly));
  const y1 = Math.max(y0 + 1, Math.ceil(Math.max(...ly)));
  const x = (v: number) => f.left + ((v - x0) / (x1 - x0)) * (f.w - f.left - f.right);
  const y = (e: number) => f.h - f.bottom - ((e - y0) / (y1 - y0)) * (f.h - f.top - f.bottom);
  const yTicks: number[] = [];
  for (let e = y0; e <= y1; e++) yTicks.push(e);
  const body = [axes(f, ticks(x0, x1).map((v) => ({ v, label: fmtTick(v) })), yTicks, x, y, 'bits per weight', 'mean KLD (log)')];
  // the y tick labels are exponents: relabel as powers of ten
  body[0] = body[0].replace(/(<text x="[\d.]+" y="[\d.]+" text-anchor="end" dominant-baseline="middle">)(-?\d+)(<\/text>)/g, (_m, a, e, b) => `${a}1e${e}${b}`);
  const sorted = [...pts].sort((a, b) => a.bitsPerWeight - b.bitsPerWeight);
  // the Pareto front: variants no other variant beats on both size and KLD
  const front = sorted.filter((p) => !pts.some((q) => q !== p && q.bitsPerWeight <= p.bitsPerWeight && q.kld < p.kld));
  if (front.length > 1) body.push(`<polyline fill="none" stroke="#98a2b3" stroke-dasharray="4 3" points="${front.map((p) => `${x(p.bitsPerWeight).toFixed(1)},${y(Math.log10(p.kld)).toFixed(1)}`).join(' ')}"/>`);
  sorted.forEach((p, i) => {
    const cx = x(p.bitsPerWeight).toFixed(1);
    const cy = y(Math.log10(p.kld)).toFixed(1);
    const color = PALETTE[i % PALETTE.length];
    body.push(`<circle cx="${cx}" cy="${cy}" r="5" fill="${color}"><title>${escapeHtml(p.label)}: ${p.bitsPerWeight.toFixed(3)} bpw, KLD ${p.kld.toExponential(3)}</title></circle>`);
    body.push(`<text x="${cx}" y="${cy}" dx="8" dy="${i % 2 ? 12 : -6}" fill="${color}">${escapeHtml(p.label)}</text>`);
  });
  return svg(f, 'size against KL divergence', body);
}

/**
 * The finite non-negative values of a format on a number line, linear (top) and log2 (bottom), with the
 * typed value and where it rounds to.
 */
export function formatGridSvg(values: readonly number[], typed?: { x: number; q: number }): string {
  const f: Frame = { w: 760, h: 170, left: 24, right: 24, top: 14, bottom: 30 };
  const pos = [...new Set(values.filter((v) => v >= 0 && Number.isFinite(v)))].sort((a, b) => a - b);
  if (pos.length === 0) return '';
  const max = pos[pos.length - 1] || 1;
  const body: string[] = [];
  const w = f.w - f.left - f.right;
  const xl = (v: number) => f.left + (v / max) * w;
  const rowY = [48, 122];
  body.push(`<text x="${f.left}" y="${rowY[0] - 26}" fill="#667085">linear: ${pos.length} non-negative values, 0 … ${fmtTick(max)}</text>`);
  body.push(`<line x1="${f.left}" y1="${rowY[0]}" x2="${f.left + w}" y2="${rowY[0]}" stroke="#98a2b3"/>`);
  for (const v of pos) body.push(`<line x1="${xl(v).toFixed(2)}" y1="${rowY[0] - 9}" x2="${xl(v).toFixed(2)}" y2="${rowY[0] + 9}" stroke="#3656d8" stroke-width="1"><title>${v}</title></line>`);
  for (const t of ticks(0, max, 4)) body.push(`<text x="${xl(t).toFixed(1)}" y="${rowY[0] + 24}" text-anchor="middle" fill="#667085">${fmtTick(t)}</text>`);
  const nz = pos.filter((v) => v > 0);
  if (nz.length) {
    const e0 = Math.floor(Math.log2(nz[0]));
    const e1 = Math.max(e0 + 1, Math.ceil(Math.log2(max)));
    const xg = (v: number) => f.left + ((Math.log2(v) - e0) / (e1 - e0)) * w;
    body.push(`<text x="${f.left}" y="${rowY[1] - 26}" fill="#667085">log2: 2^${e0} … 2^${e1} (the relative spacing of the grid)</text>`);
    body.push(`<line x1="${f.left}" y1="${rowY[1]}" x2="${f.left + w}" y2="${rowY[1]}" stroke="#98a2b3"/>`);
    for (const v of nz) body.push(`<line x1="${xg(v).toFixed(2)}" y1="${rowY[1] - 9}" x2="${xg(v).toFixed(2)}" y2="${rowY[1] + 9}" stroke="#3656d8"><title>${v}</title></line>`);
    const step = Math.max(1, Math.ceil((e1 - e0) / 8));
    for (let e = e0; e <= e1; e += step) body.push(`<text x="${xg(2 ** e).toFixed(1)}" y="${rowY[1] + 24}" text-anchor="middle" fill="#667085">2^${e}</text>`);
    if (typed && typed.q !== 0 && Math.abs(typed.q) >= nz[0] && Math.abs(typed.q) <= max) {
      const xx = xg(Math.abs(typed.q)).toFixed(1);
      body.push(`<circle cx="${xx}" cy="${rowY[1]}" r="5" fill="#d62728"><title>${typed.x} → ${typed.q}</title></circle>`);
    }
  }
  if (typed && Math.abs(typed.q) <= max && Number.isFinite(typed.q)) {
    const xx = xl(Math.abs(typed.q)).toFixed(1);
    body.push(`<circle cx="${xx}" cy="${rowY[0]}" r="5" fill="#d62728"><title>${typed.x} → ${typed.q}</title></circle>`);
  }
  return svg(f, 'grid of representable values', body);
}

/** A tensor's values (x) against their quantized values (y) with the identity line. */
export function quantScatterSvg(sample: readonly [number, number][], title: string): string {
  if (!sample.length) return '';
  const f: Frame = { w: 420, h: 300, left: 56, right: 16, top: 16, bottom: 44 };
  let lo = Infinity;
  let hi = -Infinity;
  for (const [a, b] of sample) {
    lo = Math.min(lo, a, b);
    hi = Math.max(hi, a, b);
  }
  if (!(hi > lo)) hi = lo + 1;
  const x = (v: number) => f.left + ((v - lo) / (hi - lo)) * (f.w - f.left - f.right);
  const y = (v: number) => f.h - f.bottom - ((v - lo) / (hi - lo)) * (f.h - f.top - f.bottom);
  const t = ticks(lo, hi, 4);
  const body = [axes(f, t.map((v) => ({ v, label: fmtTick(v) })), t, x, y, 'original value', 'quantized value')];
  body.push(`<line x1="${x(lo)}" y1="${y(lo)}" x2="${x(hi)}" y2="${y(hi)}" stroke="#98a2b3" stroke-dasharray="3 3"/>`);
  body.push(`<g fill="#3656d8" fill-opacity=".45">${sample.map(([a, b]) => `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="1.6"/>`).join('')}</g>`);
  return svg(f, title, body);
}
