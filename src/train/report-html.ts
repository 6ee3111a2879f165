/**
 * A self-contained HTML page comparing training runs: loss vs step (inline SVG, one line per run) and
 * a table of final training and held-out losses. Pure string building: runs in Node and browsers.
 */
export interface RunCurve {
  label: string;
  /** training loss per step (1-based steps) */
  losses: number[];
  heldOut?: number;
  /** extra columns for the table */
  extra?: Record<string, string>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22'];

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export function trainingReportHtml(title: string, runs: readonly RunCurve[], smooth = 10): string {
  const W = 760, H = 380, L = 50, B = 30;
  const all = runs.flatMap((r) => r.losses).filter(Number.isFinite);
  const steps = Math.max(1, ...runs.map((r) => r.losses.length));
  const lo = Math.min(...all), hi = Math.max(...all);
  const x = (s: number) => L + ((W - L - 10) * (s - 1)) / Math.max(1, steps - 1);
  const y = (v: number) => 10 + ((H - B - 10) * (hi - v)) / Math.max(1e-9, hi - lo);
  const lines = runs.map((r, i) => {
    const pts: string[] = [];
    for (let s = 0; s < r.losses.length; s++) {
      const w = r.losses.slice(Math.max(0, s - smooth + 1), s + 1);
      pts.push(`${x(s + 1).toFixed(1)},${y(w.reduce((a, b) => a + b, 0) / w.length).toFixed(1)}`);
    }
    return `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${pts.join(' ')}"/>`;
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = lo + (hi - lo) * f;
    return `<text x="${L - 4}" y="${y(v) + 4}" text-anchor="end" font-size="11">${v.toFixed(2)}</text><line x1="${L}" x2="${W - 10}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>`;
  });
  const legend = runs.map((r, i) => `<span style="color:${COLORS[i % COLORS.length]}">&#9632; ${esc(r.label)}</span>`).join(' &nbsp; ');
  const extraKeys = [...new Set(runs.flatMap((r) => Object.keys(r.extra ?? {})))];
  const rows = runs.map((r) => {
    const last = r.losses.slice(-smooth);
    const fin = last.reduce((a, b) => a + b, 0) / Math.max(1, last.length);
    return `<tr><td>${esc(r.label)}</td><td>${fin.toFixed(4)}</td><td>${r.heldOut?.toFixed(4) ?? ''}</td>${extraKeys.map((k) => `<td>${esc(r.extra?.[k] ?? '')}</td>`).join('')}</tr>`;
  });
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style></head>
<body><h1>${esc(title)}</h1><p>training loss vs step (mean of the last ${smooth} steps)</p>
<svg width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">${ticks.join('')}${lines.join('')}
<text x="${(W + L) / 2}" y="${H - 5}" text-anchor="middle" font-size="12">step (1 .. ${steps})</text></svg>
<p>${legend}</p>
<table><tr><th>run</th><th>final train loss (last ${smooth})</th><th>held-out loss</th>${extraKeys.map((k) => `<th>${esc(k)}</th>`).join('')}</tr>${rows.join('')}</table></body></html>
`;
}
