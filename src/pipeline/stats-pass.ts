/**
 * Stage "stream statistics": one forward pass of the *original* model over the calibration windows,
 * layer by layer, reading each layer's weights from the file (the next layer's, a group of tensors at a
 * time, as soon as this one is done with that group's buffers) and dropping them after, that hands every linear weight to a consumer together with the statistics
 * of its input (InputStats; per expert for the 3-D expert tensors) while the weight is in memory.
 * Memory: one layer's weights, X (tokens x dim) and one layer's statistics -- never the whole model.
 *
 * It is the calibration pipeline's own pass (LayerCalibration's stages: collectHessians,
 * collectExpertStats, addPendingResiduals, collectHeadHessian), driven over the float weights without
 * quantizing anything: the sensitivity measurement (pipeline/sensitivity.ts) computes each tensor's costs
 * in the callback, so its weights are read from the file once.
 */
import { fail } from '../errors.js';
import { MatmulEngine } from '../kernels/matmul.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import { toFloat32 } from '../io/tensor-data.js';
import { linearOf, type LinearRole, type ModelFamily } from '../model/family.js';
import { matmul } from '../model/matmul.js';
import type { LlamaConfig, StoredTensor } from '../model/types.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';
import type { ExpertStats, FloatTensor, InputStats } from './passes/input-stats.js';
import { modelShape } from './passes/load.js';
import { LayerCalibration } from './passes/stages.js';

/** one linear weight of the original model with the statistics of its input */
export interface StreamedLinear {
  /** tensor name (blk.L.attn_q.weight, output.weight, ...) */
  readonly name: string;
  /** its values as float32, row-major (nExperts stacked matrices for a 3-D expert tensor); valid during the callback only */
  readonly w: FloatTensor;
  /** statistics of its input over every calibration token (for an expert tensor: all experts pooled) */
  readonly stats: InputStats;
  /** an expert tensor: each expert's own input statistics (the tokens routed to it) */
  readonly experts?: ExpertStats;
  readonly layer: number;
}

export interface StreamOptions {
  /** calibration windows (token ids, each starting with BOS), all of one length */
  windows: readonly Int32Array[];
  threads?: number;
  /** 'auto': keep X itself instead of H = XᵀX where fewer tokens than channels (the costs are the same numbers); 'inputs': always X; 'hessian' (default): always H */
  statForm?: 'auto' | 'hessian' | 'inputs';
  /** called for every linear weight of the model (q/k/v/o, gate/up/down or their fused or expert forms, router, output) */
  onLinear: (x: StreamedLinear) => void | Promise<void>;
  /**
   * false: the classifier (output.weight) is not read, and onLinear is not called for it: the caller
   * gets its input statistics as `head` and reads what it needs of it (e.g. sampled rows); default true
   */
  headWeight?: boolean;
  onProgress?: (message: string, done: number, total: number) => void;
  /**
   * the pass started on this file before the windows were known (startStream: its worker threads
   * starting and the first layer's weights being read while the caller tokenizes the text)
   */
  started?: StreamStart;
}

const dimsOf = (t: ModelTensor): number[] => (t.ne ? [...t.ne] : [...t.shape].reverse());

/** is the tensor a weight the runtime multiplies with (its values come in layer by layer)? */
const isStreamed = (t: ModelTensor) => dimsOf(t).length >= 2 && t.name !== 'token_embd.weight';

/**
 * The token embedding as stored, with only the rows of the windows' tokens read (the pass looks up
 * nothing else, and computes no logits): the rest stays zero pages never touched -- a 32000 x 2048 F32
 * embedding read whole was 262 MB of fresh memory, a page fault per 4 KiB.
 */
async function embeddingRows(m: ModelFile, t: ModelTensor, windows: readonly Int32Array[]): Promise<Uint8Array> {
  const out = new Uint8Array(t.byteLength);
  const rows = t.nElements / dimsOf(t)[0];
  const rowBytes = t.byteLength / rows;
  const ids = [...new Set(windows.flatMap((w) => [...w]))].filter((id) => Number.isInteger(id) && id >= 0 && id < rows).sort((a, b) => a - b);
  // (all at once: on the file system's threads, not one round trip after another)
  await Promise.all(ids.map(async (id) => out.set(await m.read(t, id * rowBytes, rowBytes), id * rowBytes)));
  return out;
}

/**
 * The weights of a layer, a group of tensors at a time, read into buffers reused from layer to layer
 * (kernel memory when it is shared, so the matmuls take them in place); `weights` maps each tensor read
 * (and not let go yet) to its values.
 */
class LayerReader {
  readonly weights = new Map<string, FloatTensor>();
  private readonly buffers = new Map<string, Float32Array>();
  private readonly reads = new Map<string, Promise<[string, FloatTensor][]>>();
  private readonly owner = {};
  private readonly inFile: Set<string>;
  private readonly family: ModelFamily;
  private readonly roleGroup = new Map<LinearRole, number>();
  readonly nLayers: number;
  constructor(readonly m: ModelFile, private readonly engine: MatmulEngine | null) {
    const { config, family } = modelShape(m);
    this.family = family;
    this.nLayers = config.nLayers;
    this.inFile = new Set(m.tensors.map((t) => t.name));
    family.inputGroups.forEach((g, gi) => g.linears.forEach((r) => this.roleGroup.set(r, gi)));
  }
  /** read a tensor into its slot's buffer (not in `weights`: awaitRead puts a group's tensors there) */
  async load(name: string): Promise<FloatTensor> {
    const m = this.m;
    const t = m.tensor(name);
    const dims = dimsOf(t);
    const n = t.nElements;
    const slot = name.replace(/^blk\.\d+\./, '');
    let buf = this.buffers.get(slot);
    if (!buf || buf.length < n) {
      buf = this.engine?.allocF32(n, this.owner)?.array ?? new Float32Array(n);
      this.buffers.set(slot, buf);
    }
    const data = buf.subarray(0, n);
    if (t.type === 'F32' && m.readInto) await m.readInto(t, 0, new Uint8Array(data.buffer, data.byteOffset, n * 4));
    else toFloat32(t.type, await m.read(t, 0, t.byteLength), data);
    return { data, rows: n / dims[0], cols: dims[0] };
  }
  /** the tensors of layer l in input group gi (a linear in no input group -- none in the families so far -- is read with group 'other' and kept to the layer's end) */
  groupNames(l: number, gi: number | 'other'): string[] {
    return this.family.linears.filter((s) => (this.roleGroup.get(s.role) ?? 'other') === gi).map((s) => `blk.${l}.${s.gguf}.weight`).filter((n) => this.inFile.has(n));
  }
  /** start reading group gi of layer l (on the file system's threads) */
  startRead(l: number, gi: number | 'other'): void {
    if (l >= this.nLayers || this.reads.has(`${l}:${gi}`)) return;
    const p = Promise.all(this.groupNames(l, gi).map(async (n): Promise<[string, FloatTensor]> => [n, await this.load(n)]));
    p.catch(() => undefined); // awaited when the group is needed
    this.reads.set(`${l}:${gi}`, p);
  }
  /** wait for group gi of layer l to be read, its tensors then in `weights`; the seconds waited */
  async awaitRead(l: number, gi: number | 'other'): Promise<number> {
    const p = this.reads.get(`${l}:${gi}`);
    if (!p) return 0;
    const tw = performance.now();
    const got = await p;
    this.reads.delete(`${l}:${gi}`);
    for (const [n, t] of got) this.weights.set(n, t);
    return (performance.now() - tw) / 1000;
  }
  /** group gi of layer l is done with: its tensors let go, the same group of layer l + 1 read into its buffers */
  release(l: number, gi: number | 'other'): void {
    for (const n of this.groupNames(l, gi)) this.weights.delete(n);
    this.startRead(l + 1, gi);
  }
  /** start reading every group of layer 0 */
  startFirst(): void {
    for (let gi = 0; gi < this.family.inputGroups.length; gi++) this.startRead(0, gi);
    this.startRead(0, 'other');
  }
}

/** A statistics pass started before its windows are known (startStream). */
export interface StreamStart {
  readonly file: ModelFile;
  /** @internal */
  readonly reader: LayerReader;
}

/**
 * Start the pass over `m` before the calibration windows are known: the kernel threads start and the
 * first layer's weights are read (on other threads) while the caller tokenizes the text; give the
 * result to streamStatistics as `started`. Its weight buffers are the pass's own (nothing is read
 * twice). The same results as a pass not started early.
 */
export function startStream(m: ModelFile, o: { threads?: number } = {}): StreamStart {
  const engine = MatmulEngine.get();
  if (engine && o.threads !== undefined) engine.setThreads(o.threads);
  const reader = new LayerReader(m, engine);
  reader.startFirst();
  return { file: m, reader };
}

/**
 * Run the pass. Returns the token counts over the vocabulary (the token embedding's "input": one-hot)
 * and the number of calibration tokens. The embedding itself is the one tensor read whole up front.
 */
export async function streamStatistics(m: ModelFile, o: StreamOptions): Promise<{ tokenCounts: Float32Array; tokens: number; config: LlamaConfig; tiedHead?: InputStats; head: InputStats; seconds: { forward: number; statistics: number; read: number; consumer: number; setup: number } }> {
  const t0 = performance.now();
  const { config, family } = modelShape(m);
  if (o.windows.length === 0) fail('the calibration pass needs at least one window');
  const ctx = o.windows[0].length;
  if (o.windows.some((w) => w.length !== ctx)) fail('calibration windows must all have the same length');
  // the layers' weights: the first layer's read from here on, while the small tensors are (a pass
  // started early, by startStream, is reading them already)
  if (o.started && o.started.file !== m) fail('internal: the statistics pass was started on another file');
  const reader = o.started?.reader ?? startStream(m, { threads: o.threads }).reader;
  const f32 = ggmlTypeByName('F32')!;
  // the runtime gets the small tensors (norms, biases, the embedding) as stored and, for every weight it
  // multiplies with, a view of one zero buffer: its linears read the weights of the current layer from
  // `weights` through LayerCalibration's hook, never these
  const maxBytes = Math.max(0, ...m.tensors.filter(isStreamed).map((t) => t.nElements * 4));
  const placeholder = new Uint8Array(maxBytes);
  const stored: StoredTensor[] = [];
  for (const t of m.tensors) {
    const dims = dimsOf(t);
    if (isStreamed(t)) stored.push({ name: t.name, type: f32, dims, data: placeholder.subarray(0, t.nElements * 4) });
    else stored.push({ name: t.name, type: ggmlTypeByName(t.type) ?? fail(`${t.name}: unknown tensor type ${t.type}`), dims, data: t.name === 'token_embd.weight' ? await embeddingRows(m, t, o.windows) : await m.read(t, 0, t.byteLength) });
  }
  const weights = reader.weights;
  // the 1-D tensors (norm gains the stages read from `weights`, e.g. Gemma's post-norms) stay for the whole pass
  for (const t of m.tensors) if (!isStreamed(t) && dimsOf(t).length === 1) weights.set(t.name, { data: await m.readFloat32(t), rows: 1, cols: t.nElements });
  // (the pass only runs stages, a layer at a time: one layer's KV cache, not 46 MB of fresh memory for 22 of a 1.1B model)
  const lc = new LayerCalibration(config, family, weights, stored, o.windows, ctx, o.threads, false, { kvOneLayer: true });
  // a row view of a fused tensor (Phi-3's q/k/v of attn_qkv, gate/up of ffn_up) reads its rows of the fused weight
  const viaLayer = lc.model.hooks.linear!;
  lc.model.hooks.linear = (out, x, w, nTok, expert) => {
    const t = weights.get(w.name);
    if (expert === undefined && !(t && t.rows === w.rows && t.cols === w.cols) && w.data.buffer === placeholder.buffer) {
      const layer = /^blk\.(\d+)\./.exec(w.name)?.[1];
      const fused = family.linears.filter((s) => s.parts).map((s) => weights.get(`blk.${layer}.${s.gguf}.weight`)).find((f) => f && f.cols === w.cols && f.rows > w.rows);
      if (!fused) fail(`internal: the calibration pass has no weight for ${w.name}`);
      const r0 = (w.data.byteOffset - placeholder.byteOffset) / (4 * w.cols);
      return matmul(out, x, fused.data.subarray(r0 * w.cols, (r0 + w.rows) * w.cols), nTok, w.cols, w.rows);
    }
    viaLayer(out, x, w, nTok, expert);
  };
  const tokens = o.windows.length * ctx;
  if (o.statForm === 'auto' || o.statForm === 'inputs') lc.keepInputs = { tokens, always: o.statForm === 'inputs' };
  const tokenCounts = new Float32Array(config.vocabSize);
  for (const w of o.windows) for (const id of w) tokenCounts[id]++;

  const secs = { read: 0, consumer: 0 };
  const give = async (x: StreamedLinear) => {
    const t0 = performance.now();
    await o.onLinear(x);
    secs.consumer += (performance.now() - t0) / 1000;
  };

  const inFile = new Set(m.tensors.map((t) => t.name));
  const readHead = inFile.has('output.weight') && o.headWeight !== false;
  lc.embed();
  const setup = (performance.now() - t0) / 1000; // the small tensors and the embedding read, the runtime built, the windows embedded
  const nLayers = config.nLayers;
  const say = o.onProgress ?? (() => {});
  // One buffer per tensor of a layer, reused layer after layer: input group j's tensors of layer l + 1
  // are read (on the file system's threads) as soon as layer l is done with group j's -- when group
  // j + 2 starts (its pending residuals added: group j's inputs were read by group j + 1's stage, its
  // residual added), or at the end of the layer -- so the reads overlap the computation with one set of
  // buffers (two sets, a whole layer read ahead, were 0.2 GB more fresh memory on a 1.1B model: a page
  // fault per 4 KiB, ~10 µs each in a virtual machine).
  const groups = family.inputGroups;
  const awaitRead = async (l: number, gi: number | 'other') => {
    secs.read += await reader.awaitRead(l, gi); // the reads the computation did not hide
  };
  const release = (l: number, gi: number | 'other') => reader.release(l, gi);
  let head: Promise<FloatTensor> | undefined;
  for (let l = 0; l < nLayers; l++) {
    const name = (r: LinearRole) => `blk.${l}.${linearOf(family, r).gguf}.weight`;
    const perExpert = (r: LinearRole) => linearOf(family, r).perExpert === true;
    // (the classifier, read while the last layer computes)
    if (l === nLayers - 1 && readHead) (head = reader.load('output.weight')).catch(() => undefined);
    await awaitRead(l, 'other');
    let released = 0; // groups [0, released) of layer l are done with
    for (let gi = 0; gi < groups.length; gi++) {
      const g = groups[gi];
      await awaitRead(l, gi);
      // a mixture of experts' block (its stage) multiplies with every expert tensor of the layer
      if (g.linears.some(perExpert)) for (let gj = gi + 1; gj < groups.length; gj++) await awaitRead(l, gj);
      if (g.norm) lc.addPendingResiduals();
      for (; released <= gi - 2; released++) release(l, released);
      const expertRole = g.linears.find(perExpert);
      const experts = expertRole ? lc.collectExpertStats(l, name(expertRole)) : undefined;
      const stats = experts && !g.norm ? experts.pooled : lc.collectHessians(l, g.input);
      for (const r of g.linears) {
        const n = name(r);
        const w = weights.get(n);
        if (!w) fail(`model has no tensor ${n}`);
        // the 3-D tensors other than the one whose inputs were collected read the same rows per expert
        await give({ name: n, w, stats, ...(perExpert(r) ? { experts } : {}), layer: l });
      }
      if (!g.norm) lc.pendResidual(g.input, g.linears.map(name), g.linears.some(perExpert));
    }
    lc.addPendingResiduals();
    for (; released < groups.length; released++) release(l, released);
    release(l, 'other');
    say(`layer ${l + 1}/${nLayers}`, l + 1, nLayers);
  }
  const headStats = lc.collectHeadHessian();
  // a classifier tied to the embedding: the caller measures token_embd (whole rows) with these statistics
  if (readHead) {
    const tw = performance.now();
    const w = await (head ?? reader.load('output.weight'));
    weights.set('output.weight', w);
    secs.read += (performance.now() - tw) / 1000;
    await give({ name: 'output.weight', w, stats: headStats, layer: nLayers });
  }
  weights.clear();
  return { tokenCounts, tokens, config, head: headStats, ...(inFile.has('output.weight') ? {} : { tiedHead: headStats }), seconds: { forward: lc.phases.forward, statistics: lc.phases.statistics, ...secs, setup } };
}
