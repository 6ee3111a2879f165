/**
 * The Quantization Lab's page: the form, the tables and the charts. All work happens in a job worker
 * (worker.ts) that calls the library; this module only turns the page's state into requests and the
 * answers into DOM. Cancel terminates the job worker (its nested workers end with it) and starts a
 * fresh one, which re-opens the model (opening is lazy, so that is instant).
 *
 * Automation contract (data-testid): model-file, bundled-model, type, quantize, progress, status,
 * download, eval-text, evaluate, kld. URL parameters: ?type=Q4_K_M presets the type; ?sink=memory|opfs,
 * ?threads=N and ?container=gguf|safetensors are honoured too.
 */
import { formats, parseFormat } from '../formats/registry.js';
import { ROUNDING_MODES, type RoundingMode } from '../formats/rounding.js';
import type { Format } from '../formats/descriptor.js';
import { decode, encode } from '../kernels/cast.js';
import { PTQ_OPTIONS } from '../algos/ptq-options.js';
import { hasRelaxedSimd, hasSimd } from '../env.js';
import { kldHistogramSvg, quantizeReportHtml, sqnrPerLayerSvg } from '../pipeline/report-html.js';
import type { QuantizeEvaluation } from '../pipeline/evaluate.js';
import type { QuantizeReport } from '../pipeline/quantize.js';
import { formatGridSvg, quantScatterSvg, sizeVsKldSvg } from './charts.js';
import type { EvaluateResult, ModelSummary, PlanSummary, QuantizeResult, Reply, Request, SinkKind, TensorSqnrResult } from './protocol.js';
import { cliCommand, containerOf, isGgmlType, isLlamaFtype, schemeFields, typeChoices, type QuantizeForm } from './recipe-form.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
/** the job worker, with the page's ?threads= (the worker reads it from its own URL) */
const workerUrl = new URL(`./worker.js${params.has('threads') ? `?threads=${encodeURIComponent(params.get('threads')!)}` : ''}`, import.meta.url);

// ---- the job worker -----------------------------------------------------------------------------

type Pending = { resolve(v: unknown): void; reject(e: Error): void; onProgress?(r: Reply & { kind: 'progress' }): void; onText?(t: string): void };

class Job {
  private worker!: Worker;
  private pending = new Map<number, Pending>();
  private next = 1;

  constructor() {
    this.start();
  }

  private start(): void {
    this.worker = new Worker(workerUrl, { type: 'module', name: 'job' });
    this.worker.onmessage = (e) => {
      const r = e.data as Reply;
      const p = this.pending.get(r.id);
      if (!p) return;
      if (r.kind === 'progress') p.onProgress?.(r);
      else if (r.kind === 'text') p.onText?.(r.text);
      else {
        this.pending.delete(r.id);
        if (r.kind === 'error') p.reject(new Error(r.message));
        else p.resolve(r.value);
      }
    };
    this.worker.onerror = (e) => {
      e.preventDefault();
      for (const p of this.pending.values()) p.reject(new Error(e.message || 'the worker failed'));
      this.pending.clear();
    };
  }

  call<T>(req: Request, hooks: Omit<Pending, 'resolve' | 'reject'> = {}): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, ...hooks });
      this.worker.postMessage({ id, req });
    });
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  /** Stop everything now: the worker and its nested workers end; pending calls fail with 'cancelled'. */
  cancel(): void {
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(new Cancelled());
    this.pending.clear();
    this.start();
  }
}

class Cancelled extends Error {
  constructor() {
    super('cancelled');
  }
}

const job = new Job();

// ---- state --------------------------------------------------------------------------------------

interface Variant {
  name: string;
  recipe: string;
  report: QuantizeReport;
  file: Blob;
  url: string;
  evaluation?: QuantizeEvaluation;
}

let files: File[] = [];
let summary: ModelSummary | undefined;
let current: Variant | undefined;
const variants: Variant[] = [];
let bundledTexts = new Map<string, string>();

// ---- status -------------------------------------------------------------------------------------

const statusEl = $('status');
const progressEl = $<HTMLProgressElement>('progress');
const rateEl = $('rate');

function status(text: string, kind: 'busy' | 'done' | 'error' | 'idle' = 'idle'): void {
  statusEl.textContent = kind === 'error' ? `error: ${text}` : kind === 'done' ? `${text} — done` : text;
  statusEl.className = kind;
}

function showProgress(fraction: number | undefined, rate = ''): void {
  if (fraction === undefined) progressEl.removeAttribute('value');
  else progressEl.value = fraction;
  rateEl.textContent = rate;
}

/** run a step of the page: buttons off while it runs, errors into the status line */
async function step<T>(busyText: string, fn: () => Promise<T>): Promise<T | undefined> {
  setBusy(true);
  status(busyText, 'busy');
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Cancelled) {
      status('cancelled');
      showProgress(0);
    } else {
      status((e as Error).message || String(e), 'error');
      showProgress(0);
    }
    return undefined;
  } finally {
    setBusy(false);
  }
}

function setBusy(busy: boolean): void {
  for (const id of ['quantize', 'plan', 'evaluate', 'generate', 'bundled', 'fmt-measure']) ($(id) as HTMLButtonElement).disabled = busy;
  ($('model-file') as HTMLInputElement).disabled = busy;
  ($('cancel') as HTMLButtonElement).disabled = !busy;
  document.body.toggleAttribute('aria-busy', busy);
}

// ---- formatting ---------------------------------------------------------------------------------

const mib = (b: number) => (b / 1048576).toFixed(b < 10 * 1048576 ? 3 : 1);
const sizeText = (b: number) => (b >= 1 << 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 1 << 20 ? `${(b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 2 : 1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const count = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} K` : String(n));

function facts(el: HTMLElement, rows: [string, string, string?][]): void {
  el.replaceChildren(
    ...rows.map(([k, v, testid]) => {
      const d = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      if (testid) dd.dataset.testid = testid;
      d.append(dt, dd);
      return d;
    }),
  );
  el.hidden = false;
}

function cells(tr: HTMLTableRowElement, values: (string | Node)[], numeric: boolean[] = []): void {
  values.forEach((v, i) => {
    const td = tr.insertCell();
    if (typeof v === 'string') td.textContent = v;
    else td.append(v);
    if (numeric[i]) td.className = 'num';
  });
}

function tag(text: string): HTMLElement {
  const s = document.createElement('span');
  s.className = 'tag';
  s.textContent = text;
  return s;
}

// ---- 1. open ------------------------------------------------------------------------------------

async function openFiles(list: File[], label?: string): Promise<void> {
  const s = await step(`opening ${label ?? list.map((f) => f.name).join(', ')}…`, () => job.call<ModelSummary>({ op: 'open', files: list, label }));
  if (!s) return;
  files = list;
  summary = s;
  showModel(s);
  status(`opened ${s.name}: ${s.format}, ${s.tensors.length} tensors, ${count(s.parameters)} parameters`, 'done');
  void refreshPlanPreview();
}

function showModel(s: ModelSummary): void {
  $('model-view').hidden = false;
  facts($('model-facts'), [
    ['model', s.name],
    ['format', s.format],
    ['size', sizeText(s.size)],
    ['parameters', count(s.parameters)],
    ['bits / weight', s.bitsPerWeight.toFixed(2)],
  ]);
  const meta = $<HTMLTableElement>('meta-table');
  meta.replaceChildren();
  for (const [k, v] of s.metadata) cells(meta.insertRow(), [k, v]);
  $('meta-count').textContent = `(${s.metadata.length})`;
  const body = $<HTMLTableElement>('tensor-table').tBodies[0];
  body.replaceChildren();
  for (const t of s.tensors) cells(body.insertRow(), [t.name, t.shape.join(' × '), tag(t.type), mib(t.bytes), ((t.bytes * 8) / t.elements).toFixed(2)], [false, false, false, true, true]);
  $('tensor-count').textContent = `(${s.tensors.length})`;
  const sel = $<HTMLSelectElement>('fmt-tensor');
  sel.replaceChildren(...s.tensors.filter((t) => t.shape.length >= 2).map((t) => new Option(`${t.name} (${t.shape.join('×')}, ${t.type})`, t.name)));
  ($('gen-which') as HTMLSelectElement).value = current ? 'quantized' : 'original';
}

async function openBundled(): Promise<void> {
  const file = await step('fetching the bundled stories260K…', async () => {
    const r = await fetch(new URL('../data/stories260K.gguf', import.meta.url));
    if (!r.ok) throw new Error(`the bundled model is missing (HTTP ${r.status})`);
    return new File([await r.blob()], 'stories260K.gguf');
  });
  if (file) await openFiles([file], 'stories260K.gguf (bundled)');
}

function setupOpen(): void {
  const input = $<HTMLInputElement>('model-file');
  input.addEventListener('change', () => {
    if (input.files?.length) void openFiles([...input.files]);
    input.value = '';
  });
  $('bundled').addEventListener('click', () => void openBundled());
  const drop = $('drop');
  drop.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target === drop) {
      e.preventDefault();
      input.click();
    }
  });
  for (const t of ['dragenter', 'dragover']) drop.addEventListener(t, (e) => (e.preventDefault(), drop.classList.add('over')));
  for (const t of ['dragleave', 'drop']) drop.addEventListener(t, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    const list = [...(e.dataTransfer?.files ?? [])];
    if (list.length) void openFiles(list);
  });
  // dropping anywhere else must not navigate away from the page
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
}

// ---- 2. the form --------------------------------------------------------------------------------

function setupForm(): void {
  // the scheme options' fields: help, range and choices from the scheme-options table
  for (const f of schemeFields()) {
    const el = $(f.id);
    if (!el) continue;
    el.title = f.spec.help;
    if (el instanceof HTMLInputElement && el.type === 'number') {
      if (f.spec.min !== undefined) el.min = String(f.spec.min);
      if (f.spec.max !== undefined) el.max = String(f.spec.max);
    }
    if (el instanceof HTMLSelectElement && f.choices) el.replaceChildren(...f.choices.map((c) => new Option(c.label, c.value)));
  }
  const type = $<HTMLSelectElement>('type');
  const groups = new Map<string, HTMLOptGroupElement>();
  for (const c of typeChoices()) {
    let g = groups.get(c.group);
    if (!g) {
      g = document.createElement('optgroup');
      g.label = c.group;
      groups.set(c.group, g);
      type.append(g);
    }
    g.append(new Option(c.label, c.value));
  }
  const preset = params.get('type');
  type.value = preset && [...type.options].some((o) => o.value === preset) ? preset : 'Q4_K_M';
  if (preset && type.value !== preset) {
    // a name the menu lists in another case (q4_k_m) or not at all
    const match = [...type.options].find((o) => o.value.toLowerCase() === preset.toLowerCase());
    if (match) type.value = match.value;
  }
  const container = params.get('container');
  if (container === 'gguf' || container === 'safetensors') ($('container') as HTMLSelectElement).value = container;
  const sink = params.get('sink');
  const sinkSel = $<HTMLSelectElement>('sink');
  const fsa = typeof (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker === 'function';
  if (!fsa) sinkSel.querySelector('option[value=fsa]')?.remove();
  if (!navigator.storage?.getDirectory) sinkSel.querySelector('option[value=opfs]')?.remove();
  if (sink && [...sinkSel.options].some((o) => o.value === sink)) sinkSel.value = sink;

  // the PTQ options, from the library's one table
  const ptq = $('ptq-fields');
  for (const o of PTQ_OPTIONS) {
    if (!['calibTokens', 'calibCtx', 'seed', 'rotate', 'actOrder', 'percDamp', 'smooth'].includes(o.key)) continue;
    const label = document.createElement('label');
    label.title = o.help;
    let input: HTMLInputElement | HTMLSelectElement;
    if (o.choices) {
      input = document.createElement('select');
      for (const c of o.choices) input.append(new Option(c, c));
      input.value = String(o.default);
    } else {
      input = document.createElement('input');
      if (o.type === 'boolean') {
        input.type = 'checkbox';
        input.checked = o.default as boolean;
        label.className = 'check';
      } else {
        input.type = 'number';
        input.step = o.type === 'int' ? '1' : 'any';
        if (o.min !== undefined) input.min = String(o.min);
        if (o.max !== undefined) input.max = String(o.max);
        input.placeholder = String(o.default);
      }
    }
    input.id = `ptq-${o.flag}`;
    input.dataset.key = o.key;
    label.append(`${o.flag.replace(/-/g, ' ')} `, input);
    ptq.append(label);
  }
  const form = $<HTMLFormElement>('recipe');
  form.addEventListener('input', () => void refreshPlanPreview());
  form.addEventListener('change', () => {
    updateFormState();
    void refreshPlanPreview();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void quantize();
  });
  $('plan').addEventListener('click', () => void showPlan());
  $('cancel').addEventListener('click', () => {
    job.cancel();
    void cleanPartials();
    if (summary && files.length) void job.call({ op: 'open', files, label: summary.name }).catch(() => undefined);
  });
  $('calib-source').addEventListener('change', () => {
    const v = ($('calib-source') as HTMLSelectElement).value;
    $('calib-text').hidden = v !== 'custom';
  });
  updateFormState();
}

function updateFormState(): void {
  const f = readForm();
  const gguf = containerOf(f) === 'gguf';
  const llama = gguf && isLlamaFtype(f.type);
  ($('llama-opts') as HTMLFieldSetElement).disabled = !llama;
  ($('scheme-opts') as HTMLFieldSetElement).disabled = llama || (gguf && isGgmlType(f.type));
  const algo = ($('algo') as HTMLSelectElement).value;
  $('ptq-fields').hidden = algo === 'rtn' && !($('calib-source') as HTMLSelectElement).value;
  const calib = ($('calib-source') as HTMLSelectElement).value;
  $('type-hint').textContent = llama && f.targetBpw
    ? `mixed precision: each tensor's type chosen from ${f.type}'s candidates for ${f.targetBpw} bits per weight, by costs measured on the calibration text${calib ? '' : ' (choose one below)'}.`
    : llama
    ? `llama.cpp's ${f.type} mixture: the same per-tensor types and bytes as llama-quantize.`
    : gguf
      ? `every quantizable tensor as GGML ${f.type.toUpperCase()}; a GGUF llama.cpp loads.`
      : `lowbit safetensors with the ${f.type} scheme; lowbit's runtime evaluates it.`;
}

function readForm(): QuantizeForm {
  const v = (id: string) => ($(id) as HTMLInputElement).value.trim();
  const b = (id: string) => ($(id) as HTMLInputElement).checked;
  const group = Number(v('group'));
  const ptq: QuantizeForm['ptq'] = {};
  for (const el of $('ptq-fields').querySelectorAll<HTMLInputElement | HTMLSelectElement>('[data-key]')) {
    const spec = PTQ_OPTIONS.find((o) => o.key === el.dataset.key)!;
    if (el instanceof HTMLInputElement && el.type === 'checkbox') {
      if (el.checked !== spec.default) ptq[spec.key] = el.checked;
    } else if (el.value !== '' && el.value !== String(spec.default)) ptq[spec.key] = spec.type === 'string' ? el.value : Number(el.value);
  }
  return {
    type: v('type'),
    container: v('container') as QuantizeForm['container'],
    group: group > 0 ? group : undefined,
    asym: b('asym') || undefined,
    zeroPoint: b('asym') && v('zero-point') === 'float' ? 'float' : undefined,
    keepEmbeddings: b('keep-embeddings') || undefined,
    pure: b('pure') || undefined,
    outputTensorType: v('output-tensor-type') || undefined,
    tokenEmbeddingType: v('token-embedding-type') || undefined,
    leaveOutputTensor: b('leave-output') || undefined,
    targetBpw: Number(v('target-bpw')) > 0 ? Number(v('target-bpw')) : undefined,
    algo: v('algo'),
    ptq: Object.keys(ptq).length ? ptq : undefined,
  };
}

function outputName(f: QuantizeForm): string {
  const base = (summary?.name ?? 'model').replace(/ \(bundled\)$/, '').replace(/(\.safetensors)?\.index\.json$/i, '').replace(/\.(gguf|safetensors|bin|json)$/i, '').replace(/\.index$/, '');
  const algo = f.algo && f.algo !== 'rtn' ? `-${f.algo.replace('+', '-')}` : '';
  const group = f.group ? `-g${f.group}` : '';
  return `${base}-${f.type}${group}${f.asym ? '-asym' : ''}${algo}.${containerOf(f)}`;
}

async function calibText(): Promise<string | undefined> {
  const src = ($('calib-source') as HTMLSelectElement).value;
  if (!src) return undefined;
  if (src === 'custom') return ($('calib-text') as HTMLTextAreaElement).value || undefined;
  const text = await bundledText(src);
  // TinyStories: the evaluation reads the head of the file; calibrate on its second half
  return src === 'tinystories' ? text.slice(Math.floor(text.length / 2)) : text;
}

async function bundledText(name: string): Promise<string> {
  const have = bundledTexts.get(name);
  if (have !== undefined) return have;
  const file = name === 'wikitext' ? 'wikitext-2-test.raw' : 'tinystories-valid-head.txt';
  const r = await fetch(new URL(`../data/${file}`, import.meta.url));
  if (!r.ok) throw new Error(`the shipped text ${file} is missing (${r.status})`);
  const text = await r.text();
  bundledTexts.set(name, text);
  return text;
}

let previewTimer = 0;
/** the CLI line and, when a model is open, the planned size (a dry run, nothing read) */
async function refreshPlanPreview(): Promise<void> {
  const f = readForm();
  const input = summary?.name.replace(/ \(bundled\)$/, '') ?? 'model.gguf';
  $('cli').textContent = cliCommand(f, input, outputName(f), { calib: ($('calib-source') as HTMLSelectElement).value ? 'calib.txt' : undefined, imatrix: ($('imatrix') as HTMLInputElement).files?.[0]?.name });
  clearTimeout(previewTimer);
  if (!summary || job.busy) return;
  previewTimer = window.setTimeout(async () => {
    try {
      const p = await job.call<PlanSummary>({ op: 'plan', form: f });
      $('type-hint').textContent = `${$('type-hint').textContent?.replace(/ Planned:.*$/, '')} Planned: ${sizeText(p.bytes)} of tensors, ${p.bitsPerWeight.toFixed(2)} bpw.`;
    } catch (e) {
      $('type-hint').textContent = `This choice does not work for this model: ${(e as Error).message}`;
    }
  }, 150);
}

async function showPlan(): Promise<void> {
  if (!summary) return status('open a model first', 'error');
  const f = readForm();
  const p = await step('planning…', () => job.call<PlanSummary>({ op: 'plan', form: f }));
  if (!p) return;
  renderPlan(p);
  status(`plan: ${p.tensors.length} tensors → ${sizeText(p.bytes)} (${p.bitsPerWeight.toFixed(3)} bpw)${p.converts ? ', converted to GGUF first' : ''}`, 'done');
}

function renderPlan(p: PlanSummary): void {
  $('plan-view').hidden = false;
  $('run-empty').hidden = true;
  facts($('plan-facts'), [
    ['recipe', p.recipe + (p.algorithm !== 'rtn' ? ` + ${p.algorithm}` : '')],
    ['file', p.output],
    ['planned size', sizeText(p.bytes)],
    ['bits / weight', p.bitsPerWeight.toFixed(3)],
    ['from', summary ? sizeText(summary.size) : ''],
  ]);
  $('sqnr-chart').innerHTML = '';
  $('plan-summary').textContent = `Per-tensor plan (dry run: ${p.tensors.length} tensors)`;
  const t = $<HTMLTableElement>('plan-table');
  t.replaceChildren();
  const head = t.createTHead().insertRow();
  for (const h of ['tensor', 'shape', 'from', 'to', 'MiB', 'bpw']) head.append(Object.assign(document.createElement('th'), { textContent: h, className: ['MiB', 'bpw'].includes(h) ? 'num' : '' }));
  const body = t.createTBody();
  for (const r of p.tensors) {
    const n = r.shape.reduce((a, b) => a * b, 1);
    cells(body.insertRow(), [r.name, r.shape.join(' × '), r.from, tag(r.to + (r.fallbackFrom ? ` (from ${r.fallbackFrom})` : '')), mib(r.bytes), ((8 * r.bytes) / n).toFixed(2)], [false, false, false, false, true, true]);
  }
  ($('plan-details') as HTMLDetailsElement).open = true;
}

// ---- 3. quantize --------------------------------------------------------------------------------

async function quantize(): Promise<void> {
  if (!summary) return status('open a model first (or use the bundled stories260K)', 'error');
  const form = readForm();
  const name = outputName(form);
  const sink = ($('sink') as HTMLSelectElement).value as SinkKind;
  let handle: FileSystemFileHandle | undefined;
  if (sink === 'fsa') {
    try {
      handle = await (window as unknown as { showSaveFilePicker(o: unknown): Promise<FileSystemFileHandle> }).showSaveFilePicker({ suggestedName: name });
    } catch {
      return status('no file chosen');
    }
  }
  $('downloads').replaceChildren();
  showProgress(0);
  const imatrix = ($('imatrix') as HTMLInputElement).files?.[0];
  const useImatrix = imatrix && containerOf(form) === 'gguf' && isLlamaFtype(form.type) ? imatrix : imatrix && containerOf(form) === 'gguf' ? imatrix : undefined;
  const r = await step(`quantizing ${summary.name} → ${form.type}…`, async () =>
    job.call<QuantizeResult>(
      { op: 'quantize', form, sink, handle, outputName: name, calibText: await calibText(), imatrix: useImatrix },
      { onProgress: (p) => (showProgress(p.message.startsWith('calibrat') || p.message.startsWith('layer') ? undefined : p.fraction, p.rate ?? ''), status(p.message, 'busy')) },
    ),
  );
  if (!r) return;
  showProgress(1, '');
  const v: Variant = { name: r.outputName, recipe: r.report.recipe, report: r.report, file: r.file, url: URL.createObjectURL(r.file) };
  const old = variants.findIndex((x) => x.name === v.name);
  if (old >= 0) variants.splice(old, 1);
  variants.push(v);
  current = v;
  lastRun = { seconds: r.seconds, threads: r.threads, ...r.timing };
  showResult(v, r);
  status(`${r.outputName}: ${sizeText(r.file.size)}, ${r.report.bitsPerWeight.toFixed(3)} bpw, ${r.seconds.toFixed(2)} s on ${r.threads} thread${r.threads > 1 ? 's' : ''} (${sizeText(summary.size / r.seconds)}/s)`, 'done');
  renderVariants();
  ($('gen-which') as HTMLSelectElement).value = 'quantized';
}

/** the last quantization's times, for scripts (the benchmark) */
let lastRun: { seconds: number; threads: number; read: number; quantize: number; write: number } | undefined;

function showResult(v: Variant, r: QuantizeResult): void {
  const dl = document.createElement('a');
  dl.href = v.url;
  dl.download = v.name;
  dl.className = 'btn primary';
  dl.dataset.testid = 'download';
  dl.textContent = `Download ${v.name} (${sizeText(r.file.size)})`;
  const rep = document.createElement('button');
  rep.type = 'button';
  rep.className = 'btn';
  rep.textContent = 'Download HTML report';
  rep.dataset.testid = 'report';
  rep.addEventListener('click', () => downloadReport(v));
  $('downloads').replaceChildren(dl, rep);
  $('plan-view').hidden = false;
  $('run-empty').hidden = true;
  facts($('plan-facts'), [
    ['output', v.name],
    ['size', sizeText(r.file.size)],
    ['bits / weight', r.report.bitsPerWeight.toFixed(3)],
    ['time', `${r.seconds.toFixed(2)} s`],
    ["of which", `quantizing ${r.timing.quantize.toFixed(1)} s (reads ${r.timing.read.toFixed(1)} s and writes ${r.timing.write.toFixed(1)} s overlap it)`],
    ['stored in', r.sink === 'opfs' ? 'browser storage' : r.sink === 'fsa' ? 'your file' : 'memory'],
  ]);
  $('sqnr-chart').innerHTML = sqnrPerLayerSvg(r.report.tensors);
  $('plan-summary').textContent = `Per-tensor result (${r.report.tensors.length} tensors)`;
  const t = $<HTMLTableElement>('plan-table');
  t.replaceChildren();
  const head = t.createTHead().insertRow();
  for (const h of ['tensor', 'shape', 'type', 'MiB', 'bpw', 'SQNR dB']) head.append(Object.assign(document.createElement('th'), { textContent: h, className: ['MiB', 'bpw', 'SQNR dB'].includes(h) ? 'num' : '' }));
  const body = t.createTBody();
  for (const x of r.report.tensors)
    cells(body.insertRow(), [x.name, [...x.shape].reverse().join(' × '), tag(x.type + (x.fallbackFrom ? ` (from ${x.fallbackFrom})` : '')), mib(x.bytes), x.bitsPerWeight.toFixed(2), Number.isFinite(x.sqnrDb) ? x.sqnrDb.toFixed(2) : 'exact'], [false, false, false, true, true, true]);
}

function downloadReport(v: Variant): void {
  const html = quantizeReportHtml({ report: v.report, input: summary?.name ?? 'model', output: v.name, evaluation: v.evaluation, generator: 'lowbit Quantization Lab' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([html], { type: 'text/html' }));
  a.download = v.name.replace(/\.\w+$/, '') + '-report.html';
  document.body.append(a);
  a.click();
  a.remove();
}

/**
 * Remove what cancelled runs left in the Origin Private File System. A terminated worker releases its
 * file's lock a moment later, so removal is retried for a few seconds.
 */
async function cleanPartials(): Promise<void> {
  let dir: FileSystemDirectoryHandle;
  try {
    dir = await navigator.storage.getDirectory();
  } catch {
    return; // no OPFS
  }
  for (let attempt = 0; attempt < 30; attempt++) {
    const names: string[] = [];
    for await (const [name] of (dir as unknown as { entries(): AsyncIterable<[string, unknown]> }).entries()) if (name.startsWith('.partial-') || name.startsWith('convert-')) names.push(name);
    let left = 0;
    for (const n of names) await dir.removeEntry(n).catch(() => left++);
    if (!left) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- 4. measure ---------------------------------------------------------------------------------

function setupEval(): void {
  const src = $<HTMLSelectElement>('eval-source');
  const text = $<HTMLTextAreaElement>('eval-text');
  const fill = async () => {
    if (src.value === 'custom') return;
    try {
      const t = await bundledText(src.value);
      text.value = t.slice(0, 65536);
    } catch (e) {
      status((e as Error).message, 'error');
    }
  };
  src.addEventListener('change', () => void fill());
  text.addEventListener('input', () => (src.value = 'custom'));
  void fill();
  $('evaluate').addEventListener('click', () => void evaluate());
}

async function evaluate(): Promise<void> {
  if (!current) return status('quantize a model first: the evaluation compares it with the original', 'error');
  const v = current;
  const text = ($('eval-text') as HTMLTextAreaElement).value;
  const src = ($('eval-source') as HTMLSelectElement).value;
  const ctx = Number(($('eval-ctx') as HTMLInputElement).value) || 128;
  const chunks = Number(($('eval-chunks') as HTMLInputElement).value) || undefined;
  showProgress(0);
  const r = await step(`evaluating ${v.name} against the original…`, () =>
    job.call<EvaluateResult>({ op: 'evaluate', text, textName: src === 'custom' ? 'your text' : src, ctx, chunks, quantized: v.file, quantizedName: v.name }, { onProgress: (p) => (showProgress(p.fraction), status(p.message, 'busy')) }),
  );
  if (!r) return;
  const ev = r.evaluation as QuantizeEvaluation;
  v.evaluation = ev;
  facts($('eval-facts'), [
    ['PPL', `${ev.pplBase.toFixed(3)} → ${ev.ppl.toFixed(3)}`],
    ['mean KLD', ev.kld.mean.toFixed(6), 'kld'],
    ['KLD p99', ev.kld.p99.toExponential(2)],
    ['same top-1', `${(100 * ev.top1).toFixed(2)} %`],
    ['RMS Δp', `${(100 * ev.dp.rms).toFixed(2)} %`],
    ['tokens', String(ev.tokens)],
  ]);
  $('kld-chart').innerHTML = kldHistogramSvg(ev.kldValues, ev.kld);
  showProgress(1);
  status(`${v.name}: KLD ${ev.kld.mean.toFixed(6)} ± ${ev.kld.stderr.toFixed(6)}, PPL ${ev.ppl.toFixed(4)} (original ${ev.pplBase.toFixed(4)}), top-1 ${(100 * ev.top1).toFixed(1)} %, ${ev.chunks} chunks of ${ev.ctx} in ${ev.seconds.toFixed(1)} s`, 'done');
  renderVariants();
}

function renderVariants(): void {
  const body = $<HTMLTableElement>('variants').tBodies[0];
  body.replaceChildren();
  for (const v of variants) {
    const a = document.createElement('a');
    a.href = v.url;
    a.download = v.name;
    a.textContent = 'download';
    const ev = v.evaluation;
    cells(body.insertRow(), [v.name, mib(v.file.size), v.report.bitsPerWeight.toFixed(3), ev ? ev.ppl.toFixed(3) : '–', ev ? ev.kld.mean.toExponential(2) : '–', ev ? `${(100 * ev.top1).toFixed(1)} %` : '–', a], [false, true, true, true, true, true, false]);
  }
  $('size-chart').innerHTML = sizeVsKldSvg(variants.filter((v) => v.evaluation).map((v) => ({ label: v.recipe, bitsPerWeight: v.report.bitsPerWeight, kld: v.evaluation!.kld.mean })));
}

// ---- 5. generate --------------------------------------------------------------------------------

async function generateSample(): Promise<void> {
  if (!summary) return status('open a model first', 'error');
  const which = ($('gen-which') as HTMLSelectElement).value as 'quantized' | 'original';
  if (which === 'quantized' && !current) return status('quantize a model first, or choose the original', 'error');
  const out = $('sample');
  const prompt = ($('prompt') as HTMLInputElement).value;
  out.textContent = prompt;
  const r = await step(`generating with the ${which} model…`, () =>
    job.call<{ text: string; tokensPerSecond: number }>(
      { op: 'generate', prompt, steps: Number(($('gen-steps') as HTMLInputElement).value) || 100, temperature: Number(($('gen-temp') as HTMLInputElement).value) || 0, seed: 1, which, quantized: current?.file, quantizedName: current?.name },
      { onText: (t) => out.append(t) },
    ),
  );
  if (!r) return;
  $('gen-stats').textContent = `${which === 'quantized' ? current!.name : summary.name}: ${r.tokensPerSecond.toFixed(1)} tokens/s`;
  status(`generated ${r.text.length} characters at ${r.tokensPerSecond.toFixed(1)} tokens/s`, 'done');
}

// ---- 6. number formats --------------------------------------------------------------------------

function setupFormats(): void {
  const sel = $<HTMLSelectElement>('fmt');
  const shown = formats.filter((f) => f.bits <= 16 || f.name === 'fp32');
  for (const f of shown) sel.append(new Option(`${f.name} (${f.bits} bit)`, f.name));
  sel.append(new Option('any ExMy…', 'custom'));
  sel.value = 'fp8_e4m3fn';
  const rounding = $<HTMLSelectElement>('fmt-rounding');
  for (const r of ROUNDING_MODES) rounding.append(new Option(r, r));
  for (const id of ['fmt', 'fmt-e', 'fmt-m', 'fmt-rounding', 'fmt-value']) $(id).addEventListener('input', renderFormat);
  $('fmt-measure').addEventListener('click', () => void measureTensor());
  renderFormat();
}

function chosenFormat(): Format {
  const v = ($('fmt') as HTMLSelectElement).value;
  $('fmt-custom').hidden = v !== 'custom';
  return v === 'custom' ? parseFormat(`e${($('fmt-e') as HTMLInputElement).value}m${($('fmt-m') as HTMLInputElement).value}`) : parseFormat(v);
}

function renderFormat(): void {
  let f: Format;
  try {
    f = chosenFormat();
  } catch (e) {
    $('fmt-round').textContent = (e as Error).message;
    return;
  }
  const rounding = ($('fmt-rounding') as HTMLSelectElement).value as RoundingMode;
  facts($('fmt-facts'), [
    ['bits', String(f.bits)],
    ['max', String(f.maxFinite)],
    ['min normal', f.minNormal.toExponential(3)],
    ['min subnormal', f.minSubnormal ? f.minSubnormal.toExponential(3) : '–'],
    ['finite values', String(f.finiteCount)],
    ['inf / NaN', `${f.hasInf ? 'inf' : 'no inf'} / ${f.hasNaN ? 'NaN' : 'no NaN'}`],
  ]);
  let values: number[] = [];
  if (f.bits <= 12) {
    const n = 1 << f.bits;
    const codes = f.bits <= 8 ? new Uint8Array(n) : new Uint16Array(n);
    for (let i = 0; i < n; i++) codes[i] = i;
    values = Array.from(decode(f, codes)).filter((v) => Number.isFinite(v));
  }
  const x = Number(($('fmt-value') as HTMLInputElement).value);
  let typed: { x: number; q: number } | undefined;
  if (Number.isFinite(x)) {
    try {
      const code = encode(f, new Float32Array([x]), { rounding, seed: 1, nanToZero: true })[0];
      const q = decode(f, f.bits <= 8 ? new Uint8Array([code]) : f.bits <= 16 ? new Uint16Array([code]) : new Uint32Array([code]))[0];
      const err = q - Math.fround(x);
      $('fmt-round').textContent =
        `${x} → code 0b${code.toString(2).padStart(f.bits, '0')} (0x${code.toString(16)}) → ${q}\n` +
        `error ${err.toExponential(3)}${x !== 0 ? ` (${((100 * err) / Math.abs(x)).toFixed(3)} % relative)` : ''}, rounding ${rounding}`;
      typed = { x, q };
    } catch (e) {
      $('fmt-round').textContent = (e as Error).message;
    }
  }
  $('fmt-grid').innerHTML = values.length ? formatGridSvg(values, typed) : `<p class="muted small">${f.name} has ${f.finiteCount.toLocaleString('en-US')} finite values: too many to draw; the rounding above is exact.</p>`;
}

async function measureTensor(): Promise<void> {
  const tensor = ($('fmt-tensor') as HTMLSelectElement).value;
  if (!summary || !tensor) return status('open a model first, then choose a tensor', 'error');
  let f: Format;
  try {
    f = chosenFormat();
  } catch (e) {
    return status((e as Error).message, 'error');
  }
  const rounding = ($('fmt-rounding') as HTMLSelectElement).value;
  const granularity = ($('fmt-gran') as HTMLSelectElement).value as 'tensor' | 'row' | 'block32';
  const r = await step(`measuring ${tensor} in ${f.name}…`, () => job.call<TensorSqnrResult>({ op: 'tensor-sqnr', tensor, format: f.name, rounding, granularity, seed: 1 }));
  if (!r) return;
  const box = $('fmt-tensor-result');
  const info = document.createElement('dl');
  info.className = 'facts';
  facts(info, [
    ['tensor', r.tensor],
    ['scheme', r.format],
    ['SQNR', `${r.sqnrDb.toFixed(2)} dB`],
    ['values', count(r.elements)],
    ['max |x|', r.scale.toExponential(3)],
  ]);
  const chart = document.createElement('div');
  chart.className = 'chart';
  chart.innerHTML = quantScatterSvg(r.sample, `${r.tensor} in ${r.format}`);
  box.replaceChildren(info, chart);
  status(`${r.tensor} in ${r.format}: SQNR ${r.sqnrDb.toFixed(2)} dB`, 'done');
}

// ---- start --------------------------------------------------------------------------------------

function describeEnvironment(): void {
  const isolated = crossOriginIsolated && typeof SharedArrayBuffer === 'function';
  const threads = isolated ? Number(params.get('threads')) || navigator.hardwareConcurrency || 1 : 1;
  const simd = hasRelaxedSimd() ? 'relaxed SIMD' : hasSimd() ? 'SIMD' : 'no SIMD (slow path)';
  const env = $('env');
  env.textContent = `${threads} thread${threads > 1 ? 's' : ''} · WebAssembly ${simd}${isolated ? '' : ' · not cross-origin isolated (one thread)'}`;
  env.className = `env ${isolated ? 'ok' : 'warn'}`;
}

/** for scripts driving the page: the last output file (a disk-backed Blob for OPFS / FSA) */
(globalThis as unknown as { lowbitLab: object }).lowbitLab = { output: () => current?.file, lastRun: () => lastRun, variants: () => variants.map((v) => ({ name: v.name, bytes: v.file.size, kld: v.evaluation?.kld.mean })) };

describeEnvironment();
setupOpen();
setupForm();
setupEval();
setupFormats();
$('generate').addEventListener('click', () => void generateSample());
setBusy(false);
void cleanPartials();
void refreshPlanPreview();
if (params.get('model') === 'bundled') void openBundled();
