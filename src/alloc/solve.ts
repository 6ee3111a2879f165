/**
 * Bit allocation under a size budget: the multiple-choice knapsack problem.
 *
 * Every quantizable tensor i has candidate encodings j with a size b_ij (bytes, as written in the file)
 * and a measured cost c_ij (e.g. tr(ΔW H ΔWᵀ) or a KL divergence). Choose one candidate per tensor to
 *
 *     minimize Σ_i c_i,j(i)   subject to   Σ_i b_i,j(i) ≤ B.
 *
 * Under the additive model (costs of different tensors add up) this is what HAWQ-V3 solves as an integer
 * program and BAQ in closed form for a convex loss-vs-bits curve. Two solvers:
 *
 * - `allocateLagrangian`: the LP relaxation of the problem is solved exactly by walking the lower convex
 *   hull of every tensor's (bytes, cost) points in order of decreasing slope (cost saved per byte), the
 *   classic greedy for the multiple-choice knapsack (Sinha & Zoltners 1979); the walk stops at the first
 *   step that does not fit, which is the Lagrangian solution for the multiplier λ = that step's slope.
 *   A repair pass then spends the slack left over (single upgrades, then one-down-one-up swaps).
 * - `allocateExact`: branch and bound with the LP relaxation as the bound; optimal when it finishes within
 *   its node limit (reported as `optimal: true`), otherwise the best solution found with the proven gap.
 */
import { fail } from '../errors.js';

export interface Candidate {
  /** what this candidate is, e.g. 'Q4_K' */
  readonly label: string;
  /** bytes this tensor takes in the output with this candidate */
  readonly bytes: number;
  /** the measured cost (lower is better) */
  readonly cost: number;
}

export interface AllocItem {
  readonly name: string;
  readonly candidates: readonly Candidate[];
}

export interface Allocation {
  /** index into each item's candidates */
  readonly picks: readonly number[];
  readonly bytes: number;
  readonly cost: number;
  /** true when the solution is proven optimal for the additive model */
  readonly optimal: boolean;
  /** a lower bound on the optimal cost (the LP relaxation's value, or the optimum itself) */
  readonly lowerBound: number;
}

function checkItems(items: readonly AllocItem[], budget: number): void {
  if (!Number.isFinite(budget) || budget < 0) fail(`allocation budget must be a finite number of bytes ≥ 0, got ${budget}`);
  for (const it of items) {
    if (it.candidates.length === 0) fail(`tensor '${it.name}' has no candidate types`);
    for (const c of it.candidates) {
      if (!(Number.isFinite(c.bytes) && c.bytes >= 0)) fail(`tensor '${it.name}' candidate ${c.label}: size ${c.bytes} is not a byte count`);
      if (!Number.isFinite(c.cost)) fail(`tensor '${it.name}' candidate ${c.label}: cost ${c.cost} is not finite`);
    }
  }
}

/** The smallest and largest total sizes any choice can reach. */
export function sizeRange(items: readonly AllocItem[]): { min: number; max: number } {
  let min = 0;
  let max = 0;
  for (const it of items) {
    min += Math.min(...it.candidates.map((c) => c.bytes));
    max += Math.max(...it.candidates.map((c) => c.bytes));
  }
  return { min, max };
}

/**
 * Indices of an item's lower convex hull in (bytes, cost), by increasing bytes: the first is the
 * cheapest-in-bytes candidate (lowest cost among equal sizes), every later one strictly smaller in cost
 * and on the hull (no candidate below the segment joining its neighbours).
 */
export function convexHull(cands: readonly Candidate[]): number[] {
  const order = cands.map((_, i) => i).sort((a, b) => cands[a].bytes - cands[b].bytes || cands[a].cost - cands[b].cost || a - b);
  const hull: number[] = [];
  for (const i of order) {
    const c = cands[i];
    if (hull.length > 0) {
      const last = cands[hull[hull.length - 1]];
      if (c.cost >= last.cost) continue; // dominated: no smaller cost for more bytes
      if (c.bytes === last.bytes) continue; // unreachable after the sort (equal bytes sort by cost)
    }
    // pop while the last point lies on or above the segment from the one before it to c
    while (hull.length >= 2) {
      const a = cands[hull[hull.length - 2]];
      const b = cands[hull[hull.length - 1]];
      // slope(a->b) must be strictly steeper (more negative) than slope(b->c) for b to stay
      const lhs = (b.cost - a.cost) * (c.bytes - b.bytes);
      const rhs = (c.cost - b.cost) * (b.bytes - a.bytes);
      if (lhs < rhs) break;
      hull.pop();
    }
    hull.push(i);
  }
  return hull;
}

export interface Step {
  item: number;
  from: number;
  to: number;
  dBytes: number;
  dCost: number; // negative
}

export function hullSteps(items: readonly AllocItem[], hulls: number[][], first: number): Step[] {
  const steps: Step[] = [];
  for (let i = first; i < items.length; i++) {
    const h = hulls[i];
    for (let k = 1; k < h.length; k++) {
      const a = items[i].candidates[h[k - 1]];
      const b = items[i].candidates[h[k]];
      steps.push({ item: i, from: h[k - 1], to: h[k], dBytes: b.bytes - a.bytes, dCost: b.cost - a.cost });
    }
  }
  // most cost saved per byte first; on a hull the steps of one item come out in their own order
  steps.sort((s, t) => s.dCost / s.dBytes - t.dCost / t.dBytes || s.item - t.item || s.from - t.from);
  return steps;
}

/** Value of the LP relaxation of items[first..] with `budget` bytes (−Infinity-free: the base picks must fit). */
export function lpBound(items: readonly AllocItem[], hulls: number[][], steps: readonly Step[], first: number, budget: number): number {
  let cost = 0;
  let left = budget;
  for (let i = first; i < items.length; i++) {
    const c = items[i].candidates[hulls[i][0]];
    cost += c.cost;
    left -= c.bytes;
  }
  if (left < 0) return Infinity;
  for (const s of steps) {
    if (s.item < first) continue;
    if (s.dBytes <= left) {
      cost += s.dCost;
      left -= s.dBytes;
    } else {
      cost += s.dCost * (left / s.dBytes);
      break;
    }
  }
  return cost;
}

/**
 * lpBound(items, hulls, steps, first, budget) for every `first`, as a function of (first, budget): the
 * same value bit for bit (the same additions in the same order), without the per-call work that does
 * not depend on the budget -- the sums over the items' first hull points (done once per `first`, in
 * lpBound's order) and the walk past the steps of items before `first` (each `first` keeps the indices
 * of its steps). The branch and bound calls it at every node.
 */
export function suffixBounds(items: readonly AllocItem[], hulls: number[][], steps: readonly Step[], maxIndices = 1 << 24): (first: number, budget: number) => number {
  const n = items.length;
  const baseCost = new Float64Array(n + 1);
  const baseBytes = new Float64Array(n + 1);
  // byte counts that are safe integers subtract exactly in any grouping: budget - Σ bytes then equals
  // lpBound's budget - b_first - b_first+1 - ...; otherwise that sequence is replayed per call
  let integral = true;
  for (let first = 0; first <= n; first++) {
    let cost = 0;
    let bytes = 0;
    for (let i = first; i < n; i++) {
      const c = items[i].candidates[hulls[i][0]];
      cost += c.cost;
      bytes += c.bytes;
      if (!Number.isSafeInteger(c.bytes) || !Number.isSafeInteger(bytes)) integral = false;
    }
    baseCost[first] = cost;
    baseBytes[first] = bytes;
  }
  // (n + 1) index lists: quadratic in the tensors, so beyond `maxIndices` (2^24: 64 MB) one list of every
  // step, those of items before `first` skipped as lpBound does
  const perFirst = (n + 1) * steps.length <= maxIndices;
  const all = Int32Array.from(steps, (_, k) => k);
  const from: Int32Array[] = [];
  for (let first = 0; first <= n; first++) {
    if (!perFirst) {
      from.push(all);
      continue;
    }
    let m = 0;
    for (const s of steps) if (s.item >= first) m++;
    const ks = new Int32Array(m);
    m = 0;
    steps.forEach((s, k) => void (s.item >= first && (ks[m++] = k)));
    from.push(ks);
  }
  const item = Int32Array.from(steps, (s) => s.item);
  const dBytes = Float64Array.from(steps, (s) => s.dBytes);
  const dCost = Float64Array.from(steps, (s) => s.dCost);
  return (first, budget) => {
    let left = budget;
    if (integral && Number.isSafeInteger(budget)) left = budget - baseBytes[first];
    else for (let i = first; i < n; i++) left -= items[i].candidates[hulls[i][0]].bytes;
    if (left < 0) return Infinity;
    let cost = baseCost[first];
    const ks = from[first];
    for (let t = 0; t < ks.length; t++) {
      const k = ks[t];
      if (item[k] < first) continue;
      if (dBytes[k] <= left) {
        cost += dCost[k];
        left -= dBytes[k];
      } else {
        cost += dCost[k] * (left / dBytes[k]);
        break;
      }
    }
    return cost;
  };
}

function totals(items: readonly AllocItem[], picks: readonly number[]): { bytes: number; cost: number } {
  let bytes = 0;
  let cost = 0;
  for (let i = 0; i < items.length; i++) {
    bytes += items[i].candidates[picks[i]].bytes;
    cost += items[i].candidates[picks[i]].cost;
  }
  return { bytes, cost };
}

function unreachable(items: readonly AllocItem[], budget: number): never {
  const { min } = sizeRange(items);
  fail(`size budget of ${budget} bytes is unreachable: the smallest candidate mix takes ${min} bytes`);
}

/** Spend leftover bytes: best single upgrades, then one-down-one-up swaps, until nothing improves. */
function repair(items: readonly AllocItem[], picks: number[], budget: number): void {
  let { bytes } = totals(items, picks);
  for (let round = 0; round < 1000; round++) {
    let best = 0;
    let move: [number, number, number, number] | undefined; // item a -> ca, item b -> cb (b = -1 for single)
    for (let a = 0; a < items.length; a++) {
      const cur = items[a].candidates[picks[a]];
      items[a].candidates.forEach((c, j) => {
        const db = c.bytes - cur.bytes;
        const dc = c.cost - cur.cost;
        if (bytes + db <= budget && dc < best) {
          best = dc;
          move = [a, j, -1, -1];
        }
      });
    }
    if (!move) {
      // swaps: downgrade a (frees bytes, costs dcA ≥ 0) and upgrade b into the freed room
      for (let a = 0; a < items.length; a++) {
        const curA = items[a].candidates[picks[a]];
        items[a].candidates.forEach((ca, ja) => {
          const dbA = ca.bytes - curA.bytes;
          if (dbA >= 0) return;
          const dcA = ca.cost - curA.cost;
          for (let b = 0; b < items.length; b++) {
            if (b === a) continue;
            const curB = items[b].candidates[picks[b]];
            items[b].candidates.forEach((cb, jb) => {
              const db = dbA + cb.bytes - curB.bytes;
              const dc = dcA + cb.cost - curB.cost;
              if (bytes + db <= budget && dc < best - 1e-15 * Math.abs(curB.cost + curA.cost)) {
                best = dc;
                move = [a, ja, b, jb];
              }
            });
          }
        });
      }
    }
    if (!move) return;
    const [a, ja, b, jb] = move;
    bytes += items[a].candidates[ja].bytes - items[a].candidates[picks[a]].bytes;
    picks[a] = ja;
    if (b >= 0) {
      bytes += items[b].candidates[jb].bytes - items[b].candidates[picks[b]].bytes;
      picks[b] = jb;
    }
  }
}

/** Lagrangian (LP-relaxation greedy) allocation with a repair pass. Fast: O(n·k log(n·k)) plus the repair. */
export function allocateLagrangian(items: readonly AllocItem[], budget: number): Allocation {
  checkItems(items, budget);
  const hulls = items.map((it) => convexHull(it.candidates));
  const picks = hulls.map((h) => h[0]);
  let { bytes } = totals(items, picks);
  if (bytes > budget) unreachable(items, budget);
  const steps = hullSteps(items, hulls, 0);
  const lowerBound = lpBound(items, hulls, steps, 0, budget);
  const blocked = new Set<number>();
  for (const s of steps) {
    if (blocked.has(s.item)) continue;
    if (picks[s.item] !== s.from) continue;
    if (bytes + s.dBytes <= budget) {
      picks[s.item] = s.to;
      bytes += s.dBytes;
    } else blocked.add(s.item); // its later steps need this one first
  }
  repair(items, picks, budget);
  const t = totals(items, picks);
  return { picks, bytes: t.bytes, cost: t.cost, optimal: t.cost <= lowerBound + 1e-12 * Math.max(1, Math.abs(lowerBound)), lowerBound };
}

/**
 * Exact branch and bound. Items are branched in order of the largest cost spread first; each node's bound
 * is the LP relaxation of the undecided items. Starts from the Lagrangian solution as the incumbent.
 * `lpPerNode` recomputes that bound with lpBound at every node instead of suffixBounds' prepared form
 * (the same numbers, slower: the reference the tests compare the search with).
 */
export function allocateExact(items: readonly AllocItem[], budget: number, opts: { maxNodes?: number; lpPerNode?: boolean } = {}): Allocation {
  const start = allocateLagrangian(items, budget);
  // (the 1.1B bench model's 155 tensors: 250 000 nodes take ~0.5 s; 2 000 000 took 4.6 s and improved
  // nothing on the Lagrangian start, 0.15 % above the LP bound)
  const maxNodes = opts.maxNodes ?? 250_000;
  // branch on the items whose choice matters most first
  const order = items
    .map((it, i) => ({ i, spread: Math.max(...it.candidates.map((c) => c.cost)) - Math.min(...it.candidates.map((c) => c.cost)) }))
    .sort((a, b) => b.spread - a.spread || a.i - b.i)
    .map((o) => o.i);
  const sorted = order.map((i) => items[i]);
  const hulls = sorted.map((it) => convexHull(it.candidates));
  const steps = hullSteps(sorted, hulls, 0);
  // suffix step lists (only steps of items ≥ first) are filtered on the fly in lpBound
  let bestCost = start.cost;
  let bestPicks = order.map((i) => start.picks[i]);
  const picks = new Array<number>(sorted.length).fill(0);
  let nodes = 0;
  let aborted = false;
  const minBytesSuffix = new Float64Array(sorted.length + 1);
  for (let i = sorted.length - 1; i >= 0; i--) minBytesSuffix[i] = minBytesSuffix[i + 1] + Math.min(...sorted[i].candidates.map((c) => c.bytes));
  const eps = 1e-12 * Math.max(1, Math.abs(bestCost));
  const bound = opts.lpPerNode ? (first: number, b: number) => lpBound(sorted, hulls, steps, first, b) : suffixBounds(sorted, hulls, steps);
  // each item's candidates cheapest in cost first (good incumbents early): the same stable sort the
  // search did at every node, done once
  const candOrder = sorted.map((it) => it.candidates.map((_, j) => j).sort((a, b) => it.candidates[a].cost - it.candidates[b].cost));

  const visit = (depth: number, bytes: number, cost: number): void => {
    if (aborted) return;
    if (++nodes > maxNodes) {
      aborted = true;
      return;
    }
    if (depth === sorted.length) {
      if (cost < bestCost - eps) {
        bestCost = cost;
        bestPicks = picks.slice();
      }
      return;
    }
    if (bytes + minBytesSuffix[depth] > budget) return;
    if (cost + bound(depth, budget - bytes) >= bestCost - eps) return;
    const cands = sorted[depth].candidates;
    for (const j of candOrder[depth]) {
      const c = cands[j];
      if (bytes + c.bytes + minBytesSuffix[depth + 1] > budget) continue;
      picks[depth] = j;
      visit(depth + 1, bytes + c.bytes, cost + c.cost);
      if (aborted) return;
    }
  };
  visit(0, 0, 0);
  const out = new Array<number>(items.length);
  order.forEach((i, k) => (out[i] = bestPicks[k]));
  const t = totals(items, out);
  return { picks: out, bytes: t.bytes, cost: t.cost, optimal: !aborted, lowerBound: aborted ? start.lowerBound : t.cost };
}

/** Every combination (for tests on toy cases). */
export function allocateBruteForce(items: readonly AllocItem[], budget: number): Allocation | undefined {
  checkItems(items, budget);
  let best: number[] | undefined;
  let bestCost = Infinity;
  const picks = new Array<number>(items.length).fill(0);
  const rec = (i: number, bytes: number, cost: number): void => {
    if (bytes > budget) return;
    if (i === items.length) {
      if (cost < bestCost) {
        bestCost = cost;
        best = picks.slice();
      }
      return;
    }
    items[i].candidates.forEach((c, j) => {
      picks[i] = j;
      rec(i + 1, bytes + c.bytes, cost + c.cost);
    });
  };
  rec(0, 0, 0);
  if (!best) return undefined;
  const t = totals(items, best);
  return { picks: best, bytes: t.bytes, cost: t.cost, optimal: true, lowerBound: t.cost };
}
