/**
 * Pass "layers": the layer-by-layer driver (GPTQ's sequential scheme). For each layer, for each input
 * group of the model's family (model/family.ts: q/k/v share attn_norm's output, gate/up share
 * ffn_norm's, ...): collect the group input's statistics (stages.ts), fold the scales the algorithms ask
 * for (fold.ts: SmoothQuant / OS+ / AWQ on the norm, AWQ across the family's fold pairs), round the
 * group's linears with their algorithms from the algorithm table (round.ts); the quantized layer's
 * outputs become the next layer's input; the output head last. Methods learned on a layer's output
 * (AutoRound's block objective, OmniQuant) run on the layer as a whole.
 * Memory: the float weights, X and one layer's statistics.
 */
import { fail } from '../../errors.js';
import { awqSearchHessian, smoothQuantScales } from '../../algos/awq.js';
import type { PtqOptions } from '../../algos/ptq-options.js';
import type { Recipe } from '../../algos/recipe.js';
import { sqnrDb } from '../../eval/metrics.js';
import { linearOf, storageOf, type FoldPair, type InputGroup, type LayerInput, type LinearRole } from '../../model/family.js';
import { rmsnorm } from '../../model/llama.js';
import type { LlamaConfig } from '../../model/types.js';
import { algorithmsOf, learnsLayer, scalesInputs, type AlgorithmSpec } from '../algorithms.js';
import { autoroundSchedule, BLOCK_MOVE, BLOCK_TENSORS, BlockRunner, blockObjectiveRefusal, blockWindowsUsed, evalWindows, refineBlock, refineHead, type BlockJudge, type BlockLinear } from '../block-round.js';
import { blockFisherMetrics, embeddingFisher } from '../embedding-fisher.js';
import { modelRoundRefusal, refineModel, type ModelTensor } from '../model-round.js';
import { omniquantLayer } from '../omniquant.js';
import type { QuantizePlan } from '../plan.js';
import { awqFoldPair, awqLinears, expertAwqLinears, foldScales, shiftGroup } from './fold.js';
import { expertView, type ExpertStats, type FloatTensor, type InputStats } from './input-stats.js';
import { codecOf, isQuantized, type LoadedModel } from './load.js';
import { fusedTensorOf } from './rotate.js';
import type { WeightRounder } from './round.js';
import { LayerCalibration } from './stages.js';
import type { Phase } from './timing.js';

/** AutoRound's block objective: the float each AutoRound weight was rounded from, and the runner of whole layers */
export interface BlockState {
  before: Map<string, Float32Array>;
  runner?: BlockRunner;
}

let targetsOnEveryWindow = false;

/** Compute the block objective's float targets on every calibration window, not only on those the block stages read (tests compare the two). */
export function setBlockTargetsOnEveryWindow(on: boolean): void {
  targetsOnEveryWindow = on;
}

export interface LayerPassInput {
  plan: QuantizePlan;
  model: LoadedModel;
  /** the options as the pass runs them (AutoRound's objective 'linear' where the block objective cannot run) */
  options: PtqOptions;
  windows: readonly Int32Array[];
  ctx: number;
  threads?: number;
  rounder: WeightRounder;
  block?: BlockState;
  notes: string[];
  say: (message: string) => void;
}

export async function layerPass(input: LayerPassInput): Promise<{ added: Map<string, Float32Array>; phases: Record<Phase, number> }> {
  const { plan, model, options: o, windows, ctx, threads, rounder, block, notes, say } = input;
  const { config, family, weights, stored, arch: archName } = model;
  const { planOf, quantized } = rounder;
  const algorithmsFor = (name: string) => rounder.algorithmsFor(name);
  const nLayers = config.nLayers;
  if (o.shift && (config.nExperts || fusedTensorOf(family))) fail(`--shift: ${archName}'s ${config.nExperts ? 'experts' : 'fused tensors'} are not covered by the Outlier Suppression+ fold (not function-preserving here)`);
  const added = new Map<string, Float32Array>();
  const lc = new LayerCalibration(config, family, weights, stored(), windows, ctx, threads, o.smooth > 0 || o.shift || plan.tensors.some((p) => scalesInputs(algorithmsFor(p.name))));
  lc.notLoaded = new Set(model.lazy);
  lc.reuseHessians = true; // a layer's statistics are read within the layer only (statsOfGroup)
  say(`calibration: ${windows.length} sequences of ${ctx} tokens`);
  // token embeddings: no calibration (a lookup, not a product); quantized first so layer 0 sees them
  const embFp = block ? Float32Array.from(weights.get('token_embd.weight')!.data) : undefined;
  // --embedding-fisher / --autoround-block-fisher: the float model on the training engine (layers read one at a time are read here)
  const fisherNeeded = (o.embeddingFisher > 0 && weights.has('token_embd.weight') && planOf.has('token_embd.weight') && !!codecOf(planOf.get('token_embd.weight')!)) || (!!block && o.autoroundBlockFisher > 0);
  const floats = new Map<string, Float32Array>();
  // --autoround-e2e-iters: the float model, kept for the end-to-end stage after the head
  const e2e = o.autoroundE2eIters > 0;
  if (e2e) {
    if (!block) fail('--autoround-e2e-iters: AutoRound\'s block objective does not run on this model (see the notes), so neither does its end-to-end stage');
    const why = modelRoundRefusal(config, [...weights.keys(), ...model.lazy]);
    if (why) fail(`--autoround-e2e-iters needs plain LLaMA layers (${why})`);
    if (model.lazy.size) fail('internal: --autoround-e2e-iters with layers read one at a time');
  }
  const e2eFloats = new Map<string, Float32Array>(e2e ? [...weights].map(([n, t]) => [n, Float32Array.from(t.data)]) : []);
  if (fisherNeeded) {
    for (const [n, t] of weights) floats.set(n, n === 'token_embd.weight' ? Float32Array.from(t.data) : t.data);
    for (const n of model.lazy) floats.set(n, (await model.readWeight(n)).data);
  }
  // --embedding-fisher: the float model's Fisher at the embedding rows as their H (algorithms that use one)
  const embStats = fisherNeeded && o.embeddingFisher > 0 && codecOf(planOf.get('token_embd.weight')!)
    ? lc.timed('statistics', () => embeddingFisher(config, (n) => floats.get(n), windows, ctx, o.embeddingFisher, o.seed, threads))
    : undefined;
  if (embStats) notes.push(`token_embd rounded on the float model's Fisher at its rows (${o.embeddingFisher} sampled tokens per position)`);
  await rounder.quantizeWeight('token_embd.weight', embStats);
  // --autoround-block-fisher: the metric of each layer's output error (point l + 1 of the float stream), before any weight is rounded
  const blockMetric = block && o.autoroundBlockFisher > 0
    ? lc.timed('statistics', () => blockFisherMetrics(config, (n) => floats.get(n), windows, ctx, o.autoroundBlockFisher, o.seed, threads))
    : undefined;
  floats.clear();
  if (blockMetric) notes.push(`AutoRound block objective measured in the float model's Fisher at each layer output (${o.autoroundBlockFisher} sampled tokens per position)`);
  lc.embed();
  let xFp: Float32Array | undefined;
  // the block objective's per-layer arrays (nSeq x ctx x dim each), kept from layer to layer: the layer's input
  // and the float stream's two sides (new ones every layer took their pages from the system at the first touch)
  let blockInKept: Float32Array | undefined;
  let targetKept: Float32Array | undefined;
  if (block) {
    xFp = new Float32Array(lc.X.length);
    windows.forEach((w, s) => w.forEach((tok, i) => xFp!.set(embFp!.subarray(tok * config.dim, (tok + 1) * config.dim), (s * ctx + i) * config.dim)));
    block.runner = new BlockRunner(config, ctx, threads);
  }
  const nExp = config.nExperts ?? 0;
  const expertNotes: string[] = [];
  /**
   * The block objective's errors measured on the runtime (lc): the start's from X and the pending
   * residuals (the layer as rounded per linear), an iterate's by running the layer; the last iterate's
   * run covers every window and leaves X = the next layer's input (`xIsLast`).
   */
  const runtimeJudge = (l: number, xIn: Float32Array, target: Float32Array): BlockJudge & { xIsLast: boolean } => {
    const n = ctx * config.dim;
    const windowsJudged = evalWindows(lc.nSeq);
    const out = new Float32Array(n);
    const error = (y: Float32Array, w: number) => {
      let s = 0;
      for (let i = 0; i < n; i++) {
        const d = y[i] - target[w * n + i];
        s += d * d;
      }
      return s;
    };
    const mean = (f: (w: number) => number) => windowsJudged.reduce((a, w) => a + f(w), 0) / (windowsJudged.length * ctx);
    const j = {
      xIsLast: false,
      start: () => mean((w) => error(lc.peekPendingResiduals(w, out), w)),
      loss: (values: ReadonlyMap<string, Float32Array>, last: boolean) => {
        for (const [name, v] of values) weights.get(`blk.${l}.${name}.weight`)!.data.set(v);
        if (!last) return mean((w) => error(lc.layerOutput(l, xIn, w, out), w)); // X stays
        lc.rerunLayer(l, xIn);
        j.xIsLast = true;
        return mean((w) => error(lc.seq(w), w));
      },
    };
    return j;
  };
  /** AutoRound on layer l's output: relearn the rounding of its AutoRound linears; false when none, else whether X holds the layer's output already */
  const refineLayer = (l: number, xIn: Float32Array, target: Float32Array): false | { xReady: boolean } => {
    const runner = block!.runner!;
    const full = (n: string) => `blk.${l}.${n}.weight`;
    const specs: BlockLinear[] = [];
    for (const n of BLOCK_TENSORS) {
      const list = algorithmsFor(full(n));
      const q = quantized.get(full(n));
      if (!q || list[list.length - 1]?.name !== 'autoround') continue;
      const t = weights.get(full(n))!;
      // the start's values are the weight's own (no copy): refineBlock reads them before it judges any iterate (the judge rewrites the weight)
      specs.push({ name: n, codec: codecOf(planOf.get(full(n))!)!, w: block!.before.get(full(n))!, start: { bytes: q.bytes, q: t.data } });
    }
    if (!specs.length) return false;
    runner.unlearn();
    runner.load((n) => weights.get(full(n))!.data);
    // layer 0: the token embedding (its rows are the layer's input) learns with it, when asked and untied
    const emb = weights.get('token_embd.weight');
    const embQ = quantized.get('token_embd.weight');
    const embCodec = planOf.get('token_embd.weight') && codecOf(planOf.get('token_embd.weight')!);
    const input = l === 0 && o.autoroundEmbedding && emb && embQ && embCodec && embFp && weights.has('output.weight') ? { codec: embCodec, w: embFp, start: { bytes: embQ.bytes, q: Float32Array.from(emb.data) }, tokens: windows } : undefined;
    // the runtime judges the start and the last / best iterate; not the checkpoints' mid-run iterates
    // (--autoround-block-eval) nor an input the embedding learner rewrites: there the runner's own loss
    const judge = !o.autoroundBlockEval && !input ? runtimeJudge(l, xIn, target) : undefined;
    runner.metric = blockMetric?.get(l + 1) ?? null;
    const r = refineBlock(runner, specs, xIn, target, { ...autoroundSchedule(o, 'block'), batch: o.autoroundBatch, seed: o.seed + l, evalEvery: o.autoroundBlockEval, input, judge });
    runner.metric = null;
    if (r.input && emb && embQ && embFp) {
      quantized.set('token_embd.weight', { ...embQ, bytes: r.input.bytes, sqnrDb: sqnrDb(embFp, r.input.q), algorithm: `${embQ.algorithm} (block)` });
      emb.data.set(r.input.q);
      notes.push('layer 0 AutoRound: the token embedding learned as its input');
    }
    for (const sp of specs) {
      const x = r.linears.get(sp.name)!;
      const q = quantized.get(full(sp.name))!;
      quantized.set(full(sp.name), { ...q, bytes: x.bytes, sqnrDb: sqnrDb(sp.w, x.q), algorithm: `${q.algorithm} (block)` });
      weights.get(full(sp.name))!.data.set(x.q);
      block!.before.delete(full(sp.name));
    }
    notes.push(`layer ${l} AutoRound block output error ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}, ${specs.length} linears, ${r.seconds.toFixed(1)} s)`);
    return { xReady: r.pick === 'last' && !!judge?.xIsLast };
  };

  /**
   * OmniQuant on layer l (its linears' algorithms learn whole layers): the equivalent transforms and
   * clip ratios learned on the layer's output and folded (pipeline/omniquant.ts); with '+autoround'
   * the rounding is then learned on the same objective from that start. False when layer l's linears
   * do not use OmniQuant.
   */
  const omniLayer = async (l: number, xIn: Float32Array, target: Float32Array): Promise<boolean> => {
    const full = (n: string) => `blk.${l}.${n}.weight`;
    const lins = BLOCK_TENSORS.filter((n) => !n.endsWith('_norm'));
    const uses = lins.filter((n) => learnsLayer(algorithmsFor(full(n))));
    if (!uses.length) return false;
    const quantizedLins = lins.filter((n) => codecOf(planOf.get(full(n))!));
    const other = quantizedLins.find((n) => !uses.includes(n));
    if (other) fail(`OmniQuant learns whole layers: ${full(other)} has another algorithm (${algorithmsFor(full(other)).map((a) => a.name).join('+')}) than the rest of layer ${l}`);
    const runner = block!.runner!;
    const codecs = new Map(quantizedLins.map((n) => [n, codecOf(planOf.get(full(n))!)!] as const));
    const r = await lc.timed('quantization', async () => omniquantLayer(runner, (n) => weights.get(full(n))!.data, codecs, xIn, target, { iters: o.omniquantIters, lr: o.omniquantLr, batch: o.omniquantBatch, seed: o.seed + l, let: o.omniquantLet, clip: true }));
    for (const [n, v] of r.floats) weights.get(full(n))!.data.set(v); // the transforms folded: the float layer is unchanged
    notes.push(`layer ${l} OmniQuant block output error ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}; scales ${r.scaleRange[0].toFixed(3)}..${r.scaleRange[1].toFixed(3)}, mean clip ratio ${r.alphaMean.toFixed(3)}; ${r.seconds.toFixed(1)} s)`);
    let linears = r.linears;
    let label = 'omniquant';
    const list = algorithmsFor(full(quantizedLins[0] ?? lins[0])).map((a) => a.name);
    const last = list.at(-1);
    if (list.includes('gptq')) {
      // omniquant+gptq: the learned transforms stay folded, GPTQ (and what follows it) rounds the layer as usual
      for (const g of family.inputGroups) if (g.norm) lc.runtimeNorm(l, g.input).set(weights.get(`blk.${l}.${g.norm}.weight`)!.data);
      return false;
    }
    if (last === 'autoround' && linears.size) {
      const specs: BlockLinear[] = [...linears].map(([n, x]) => ({ name: n, codec: codecs.get(n)!, w: r.floats.get(n)!, start: x }));
      const rb = await lc.timed('quantization', async () => refineBlock(runner, specs, xIn, target, { ...autoroundSchedule(o, 'block'), batch: o.autoroundBatch, seed: o.seed + l, evalEvery: o.autoroundBlockEval }));
      notes.push(`layer ${l} AutoRound (from OmniQuant) block output error ${rb.lossStart.toExponential(3)} -> ${rb.loss.toExponential(3)} (${rb.pick}, ${rb.seconds.toFixed(1)} s)`);
      linears = rb.linears as typeof linears;
      label = 'omniquant+autoround';
    }
    for (const n of lins) {
      const x = linears.get(n);
      if (!x) {
        rounder.roundFloat(full(n));
        continue;
      }
      quantized.set(full(n), { bytes: x.bytes, sqnrDb: sqnrDb(r.floats.get(n)!, x.q), algorithm: `${label} (block)` });
      weights.get(full(n))!.data.set(x.q);
    }
    for (const g of family.inputGroups)
      if (g.norm) {
        rounder.roundFloat(`blk.${l}.${g.norm}.weight`);
        lc.runtimeNorm(l, g.input).set(weights.get(`blk.${l}.${g.norm}.weight`)!.data);
      }
    return true;
  };

  try {
    for (let l = 0; l < nLayers; l++) {
      const tl = performance.now();
      const P = `blk.${l}.`;
      const layerLazy = [...model.lazy].filter((n) => n.startsWith(P));
      for (const n of layerLazy) {
        const t = await model.readWeight(n);
        weights.set(n, t);
        rounder.floats.set(n, t.data);
        lc.notLoaded.delete(n);
      }
      // block objective: this layer's quantized-model input and the float layer's output on the float input
      let blockIn: Float32Array | undefined;
      let blockTarget: Float32Array | undefined;
      if (block?.runner && xFp) {
        blockIn = blockInKept ??= new Float32Array(lc.X.length);
        blockIn.set(lc.X);
        const runner = block.runner;
        lc.timed('forward', () => {
          runner.load((n) => weights.get(`${P}${n}.weight`)!.data);
          runner.unlearn();
          // a window of the float stream is computed through the last layer whose block objective reads it (the
          // windows are independent sequences): past the last layer none is read, so layer l computes only the
          // windows that layers l, l + 1, ... read. Not with the session-30 options: the head learner
          // (--autoround-head-iters) reads the float stream past the last layer on every window; checkpoints and
          // the embedding learner: kept simple, all windows; nor where this or a later layer learns with OmniQuant
          const q3kOptions = o.autoroundHeadIters > 0 || !!o.autoroundBlockEval || o.autoroundEmbedding;
          const omniFrom = Array.from({ length: nLayers - l }, (_, i) => l + i).some((m) => BLOCK_TENSORS.some((n) => learnsLayer(algorithmsFor(`blk.${m}.${n}.weight`))));
          let only: number[] | undefined;
          if (!omniFrom && !q3kOptions && !targetsOnEveryWindow) {
            const used = new Set<number>();
            for (let m = l; m < nLayers; m++) for (const w of blockWindowsUsed(lc.nSeq, { ...autoroundSchedule(o, 'block'), batch: o.autoroundBatch, seed: o.seed + m })) used.add(w);
            only = used.size < lc.nSeq ? [...used].sort((a, b) => a - b) : undefined;
          }
          const into = (targetKept ??= new Float32Array(xFp!.length));
          blockTarget = runner.keepTransposes(() => runner.outputs(xFp!, only, into));
        });
        targetKept = xFp; // this layer's input side: the next layer's output side
        xFp = blockTarget;
      }
      if (block?.runner && blockIn && blockTarget && (await omniLayer(l, blockIn, blockTarget))) {
        lc.rerunLayer(l, blockIn);
        say(`layer ${l + 1}/${nLayers} (${((performance.now() - tl) / 1000).toFixed(1)} s)`);
        continue;
      }
      const name = (r: LinearRole) => `${P}${linearOf(family, r).gguf}.weight`;
      const perExpert = (r: LinearRole) => linearOf(family, r).perExpert === true;
      const lists = new Map(family.linears.map((s) => [s.role, algorithmsFor(name(s.role))] as [LinearRole, readonly AlgorithmSpec[]]));
      const quantizable = (roles: readonly LinearRole[]) => roles.every((r) => codecOf(planOf.get(name(r))!));
      // the router stays float in llama.cpp's recipes: it takes a group's scales exactly and joins AWQ's search only when quantized
      const searched = (roles: readonly LinearRole[]) => roles.filter((r) => r !== 'router' || quantizable([r]));
      const usesAwq = (roles: readonly LinearRole[]) => searched(roles).some((r) => scalesInputs(lists.get(r)!)) && quantizable(searched(roles));
      /** a fold pair's producer: its storage tensor (Phi-3: the fused one) and its rows there */
      const producerOf = (fp: FoldPair) => storageOf(family, fp.producer, config);
      const experts = new Map<LayerInput, ExpertStats>();
      const quantizeGroup = (roles: readonly LinearRole[], st: InputStats, input: LayerInput) =>
        lc.timed('quantization', () => (async () => { for (const r of roles) await (perExpert(r) ? rounder.quantizeExperts(name(r), experts.get(input)!, nExp) : rounder.quantizeWeight(name(r), st)); })());
      const alphas: string[] = [];
      const statsOfGroup = new Map<InputGroup, InputStats>();
      // a producer whose rows take the AWQ scales of its consumer's input is rounded after that fold
      const deferred = new Set(family.foldPairs.filter((fp) => usesAwq([fp.consumer]) && quantizable([producerOf(fp).spec.role])).map((fp) => producerOf(fp).spec.role));
      /** statistics of a group's input: all tokens, and for a group of experts each expert's own rows */
      const collect = (g: InputGroup): InputStats => {
        const expertRole = g.linears.find(perExpert);
        if (!expertRole) return lc.collectHessians(l, g.input);
        const ex = lc.collectExpertStats(l, name(expertRole));
        experts.set(g.input, ex);
        return g.norm ? lc.collectHessians(l, g.input) : ex.pooled;
      };

      for (const g of family.inputGroups) {
        // the residual writers of the previous groups have written: the input of a norm group is ready
        if (g.norm) lc.addPendingResiduals();
        let st = collect(g);
        statsOfGroup.set(g, st);
        const normName = g.norm;
        if (normName) {
          const runtimeNorm = lc.runtimeNorm(l, g.input);
          const norm = `${P}${normName}.weight`;
          const ex = experts.get(g.input);
          const fold = (sc: Float32Array) => {
            foldScales(lc, sc, st, g.linears.map(name), { norm: weights.get(norm)!.data, runtimeNorm });
            ex?.divideInput(sc);
          };
          if (o.shift) {
            lc.timed('quantization', () => shiftGroup(lc, l, g, st, name, norm, runtimeNorm, o.smooth > 0 ? o.smooth : 0.5, weights, added));
            st = collect(g); // the statistics of the shifted, scaled input
            statsOfGroup.set(g, st);
          }
          lc.timed('quantization', () => {
            if (o.smooth > 0 && !o.shift) fold(smoothQuantScales(st.absMax, g.linears.map((r) => ({ w: lc.linear(name(r)).data, n: lc.linear(name(r)).rows })), o.smooth));
            if (usesAwq(g.linears)) {
              // experts: each matrix's error weighted by its own Hessian and its share of the tokens
              const lins = searched(g.linears).flatMap((r) => (perExpert(r) ? expertAwqLinears(lc, name(r), planOf, ex!) : awqLinears(lc, [name(r)], planOf)));
              const r = awqSearchHessian(st.meanAbs(), st.h, st.k, lins, o.awqGrid);
              fold(r.scales);
              alphas.push(`${normName.split('_')[0]} ${r.alpha.toFixed(2)}`);
            }
          });
        }
        // fold pairs ending in this group (v -> o, up -> down, per expert): AWQ's scales of the consumer's
        // input move into the producer's rows (a row range of a fused tensor, with its bias); the
        // producer is rounded then, and the stage rerun with it
        for (const fp of family.foldPairs.filter((x) => g.linears.includes(x.consumer) && deferred.has(producerOf(x).spec.role))) {
          const prod = producerOf(fp);
          const producerGroup = family.inputGroups.find((x) => x.linears.includes(prod.spec.role))!;
          lc.timed('quantization', () => {
            const consumer = lc.linear(name(fp.consumer));
            const producer = lc.linear(name(prod.spec.role));
            const rowsOf = (t: FloatTensor) => (prod.rows === undefined ? t : { data: t.data.subarray(prod.r0 * t.cols, (prod.r0 + prod.rows) * t.cols), rows: prod.rows, cols: t.cols });
            if (perExpert(fp.consumer)) {
              const ex = experts.get(g.input)!;
              const a: number[] = [];
              for (let e = 0; e < nExp; e++) {
                if (ex.perExpert[e].count === 0) continue; // no token reached it: nothing to weigh the scales by
                a.push(awqFoldPair(lc, fp.channels, ex.perExpert[e], expertView(consumer, e, nExp), rowsOf(expertView(producer, e, nExp)), planOf.get(name(fp.consumer))!, o.awqGrid).alpha);
              }
              alphas.push(`${fp.producer}>${fp.consumer} mean ${(a.reduce((x, y) => x + y, 0) / Math.max(1, a.length)).toFixed(2)} (${a.length} experts)`);
            } else {
              const bias = prod.rows === undefined ? lc.biasOf(l, prod.spec.gguf) : [];
              alphas.push(`${fp.producer}>${fp.consumer} ${awqFoldPair(lc, fp.channels, st, consumer, rowsOf(producer), planOf.get(name(fp.consumer))!, o.awqGrid, bias).alpha.toFixed(2)}`);
            }
          });
          await quantizeGroup([prod.spec.role], statsOfGroup.get(producerGroup)!, producerGroup.input);
          st = collect(g); // again, with the quantized producer
        }
        await quantizeGroup(g.linears.filter((r) => !deferred.has(r)), st, g.input);
        if (!g.norm) lc.pendResidual(g.input, g.linears.map(name), g.linears.some(perExpert));
      }
      for (const ex of experts.values()) if (ex.fallbacks.length) expertNotes.push(`layer ${l} ${ex.tensor.split('.')[2]}: experts [${ex.fallbacks.join(', ')}] saw fewer than ${ex.minTokens} tokens: calibrated with all experts' inputs pooled`);
      if (alphas.length) notes.push(`layer ${l} AWQ alpha: ${alphas.join(', ')}`);
      for (const g of family.inputGroups)
        if (g.norm) {
          rounder.roundFloat(`${P}${g.norm}.weight`);
          lc.runtimeNorm(l, g.input).set(weights.get(`${P}${g.norm}.weight`)!.data);
        }
      const learned = block && blockIn && blockTarget ? await lc.timed('quantization', async () => refineLayer(l, blockIn!, blockTarget!)) : false;
      // X += the last writers' outputs: the next layer's input (or the whole layer again, its weights relearned)
      if (learned) {
        if (!learned.xReady) lc.rerunLayer(l, blockIn!);
      } else lc.addPendingResiduals();
      // the layer's matrices are rounded (their bytes are kept) and applied: let their f32 go
      for (const n of layerLazy)
        if (quantized.has(n)) {
          weights.delete(n);
          rounder.floats.delete(n);
          lc.notLoaded.add(n);
        }
      say(`layer ${l + 1}/${nLayers} (${((performance.now() - tl) / 1000).toFixed(1)} s)`);
    }
  } finally {
    block?.runner?.close(); // the block runner's worker threads
  }
  notes.push(...expertNotes);


  // output head: input = final RMSNorm of X
  if (weights.has('output.weight')) {
    const head = weights.get('output.weight')!;
    const learnHead = block && xFp && o.autoroundHeadIters > 0 && algorithmsFor('output.weight').at(-1)?.name === 'autoround' && codecOf(planOf.get('output.weight')!);
    const wHead = learnHead ? Float32Array.from(head.data) : undefined;
    await rounder.quantizeWeight('output.weight', lc.collectHeadHessian());
    if (learnHead && wHead && xFp) {
      // AutoRound on the logits: the head's rounding learned on the KL divergence from the float model
      const norm = weights.get('output_norm.weight')!.data;
      const hQ = new Float32Array(lc.X.length);
      const hF = new Float32Array(xFp.length);
      const nTok = lc.X.length / config.dim;
      rmsnorm(hQ, lc.X, norm, nTok, config.dim, config.normEps);
      rmsnorm(hF, xFp, norm, nTok, config.dim, config.normEps);
      const q = quantized.get('output.weight')!;
      const iters = o.autoroundHeadIters;
      const r = await lc.timed('quantization', async () => refineHead({ codec: codecOf(planOf.get('output.weight')!)!, w: wHead, start: { bytes: q.bytes, q: Float32Array.from(head.data) } }, hQ, hF, config.dim, ctx, { iters, lr: o.autoroundHeadLr || (2 * BLOCK_MOVE) / iters, batch: o.autoroundBatch, seed: o.seed + nLayers, evalEvery: Math.ceil(iters / 10) }));
      quantized.set('output.weight', { ...q, bytes: r.bytes, sqnrDb: sqnrDb(wHead, r.q), algorithm: `${q.algorithm} (head)` });
      head.data.set(r.q);
      notes.push(`output head AutoRound logits KL ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}, ${r.seconds.toFixed(1)} s)`);
    }
  }
  if (e2e) {
    // AutoRound end to end: every AutoRound tensor's rounding on the whole model's KL divergence from the float model
    const learned: ModelTensor[] = [];
    for (const [name, q] of quantized) {
      const codec = codecOf(planOf.get(name)!);
      const f = e2eFloats.get(name);
      if (!codec || !f || algorithmsFor(name).at(-1)?.name !== 'autoround') continue;
      learned.push({ name, codec, w: f, start: { bytes: q.bytes, q: Float32Array.from(weights.get(name)!.data) } });
    }
    if (!learned.length) fail('--autoround-e2e-iters: no tensor is rounded by AutoRound');
    const r = await lc.timed('quantization', async () => refineModel(config, (n) => e2eFloats.get(n), (n) => weights.get(n)?.data, learned, windows, ctx, { iters: o.autoroundE2eIters, lr: o.autoroundE2eLr, batch: o.autoroundE2eBatch, flips: o.autoroundE2eFlips, seed: o.seed + nLayers + 1, threads }));
    for (const [name, t] of r.tensors) {
      const q = quantized.get(name)!;
      quantized.set(name, { ...q, bytes: t.bytes, sqnrDb: sqnrDb(e2eFloats.get(name)!, t.q), algorithm: `${q.algorithm} (e2e)` });
      weights.get(name)!.data.set(t.q);
    }
    notes.push(`AutoRound end to end (${learned.length} tensors): KL ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}; checkpoints ${r.trace.map((x) => x.toExponential(3)).join(' ')}; ${r.seconds.toFixed(1)} s)`);
  }
  e2eFloats.clear();
  return { added, phases: lc.phases };
}

/**
 * The block objective's state when AutoRound's objective is 'block' and some tensor's algorithms end
 * with autoround; undefined (with a note) where the training engine cannot run the model's layers.
 */
export function blockObjective(plan: QuantizePlan, recipe: Recipe, o: PtqOptions, config: LlamaConfig, names: string[], notes: string[]): BlockState | undefined {
  const quantized = plan.tensors.filter(isQuantized).map((p) => algorithmsOf(recipe, p.name));
  const autoround = o.autoroundObjective === 'block' && quantized.some((list) => list.at(-1)?.name === 'autoround');
  const omni = quantized.some(learnsLayer);
  if (!autoround && !omni) return undefined;
  // LoRC's factors would be fitted to each linear alone after the layer was learned as a whole: refused (quantize.ts checkExtras), never silently per-linear
  if (o.lorc > 0) fail('internal: --lorc with a method learned on whole layers');
  const why = o.shift ? '--shift adds biases' : Array.from({ length: config.nLayers }, (_, l) => blockObjectiveRefusal(config, names, l)).find((x) => x);
  if (why) {
    if (autoround) notes.push(`AutoRound: the block objective needs plain LLaMA layers (${why}); each linear's own output error was used`);
    if (omni) notes.push(`OmniQuant: learning on the layer output needs plain LLaMA layers (${why}); each linear's clip ratios were searched on its own output error, without equivalent transforms`);
    return undefined;
  }
  return { before: new Map() };
}
