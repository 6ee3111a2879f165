/**
 * Embedding tables: Gather(data, indices) with a constant float [V, D] table gathered along axis 0
 * becomes onnxruntime's com.microsoft GatherBlockQuantized(data, indices, scales[, zero_points]) with
 * gather_axis = 0, quantize_axis = 1, block_size, bits.
 *
 * Layout (uint8 data, MatMulNBits' conventions: the bytes of one table row are those of one
 * MatMulNBits output row with K = D):
 *   data        uint8 [V, D * bits / 8], codes packed low bits first
 *   scales      float [V, D / block_size]
 *   zero_points uint8 [V, ceil(D / block_size * bits / 8)] packed the same way (absent: 2^(bits-1))
 *   row v, element d: (code - zero) * scale of block d / block_size
 * The grids are MatMulNBits' (RTN, symmetric or with integer zero points); D must be a multiple of the
 * block size (a padded row would change the gathered shape), other tables stay in float with a warning.
 */
import { fail } from '../../errors.js';
import { node as mkNode } from './build.js';
import { addInitializer, ensureOpset, indexGraph, nodeLabel, removeIfUnused, replaceNode, useCounts } from './graph-edit.js';
import { allGraphs, attrInt, isFloatType, makeTensor, tensorFloat32, tensorShape, type OnnxModel, type WeightRef } from './model.js';
import { checkNBitsOptions, quantizeRows, sqnrDb, type NBitsOptions, type NodeReport } from './nbits.js';
import { DataType, type GraphProto, type NodeProto } from './schema.js';

export interface GatherTarget {
  readonly node: NodeProto;
  readonly graph: GraphProto;
  readonly graphPath: string;
  readonly table: WeightRef;
  /** rows (vocabulary) and row width */
  readonly V: number;
  readonly D: number;
}

/** Gather nodes on axis 0 of a constant 2-D float table (every graph). */
export function gatherTargets(m: OnnxModel): GatherTarget[] {
  const idx = indexGraph(m.proto);
  const out: GatherTarget[] = [];
  for (const { graph, path } of allGraphs(m.proto))
    for (const n of graph.node ?? []) {
      if ((n.domain ?? '') !== '' || n.op_type !== 'Gather' || attrInt(n, 'axis', 0) !== 0) continue;
      const t = idx.constants.get(n.input?.[0] ?? '');
      if (!t || !isFloatType(t.tensor.data_type)) continue;
      const shape = tensorShape(t.tensor);
      if (shape.length !== 2) continue;
      out.push({ node: n, graph, graphPath: path, table: t, V: shape[0], D: shape[1] });
    }
  return out;
}

/** Rewrite every eligible Gather into GatherBlockQuantized (in place); RTN on MatMulNBits' grid. */
export async function quantizeGatherBlocks(m: OnnxModel, opts: NBitsOptions, warn: (msg: string) => void = () => {}): Promise<NodeReport[]> {
  const o: NBitsOptions = { ...opts, algorithm: 'rtn' };
  checkNBitsOptions(o);
  const bs = o.blockSize;
  const idx = indexGraph(m.proto);
  const reports: NodeReport[] = [];
  const targets = gatherTargets(m);
  const done = new Map<string, { data: string; scales: string; zp?: string; sqnr: number }>();
  for (const t of targets) {
    const label = nodeLabel(t.node);
    const base = { node: label, op: 'Gather', K: t.D, N: t.V };
    if (o.keep?.has(label) || o.keep?.has(t.node.name ?? '')) {
      reports.push({ ...base, action: 'kept', reason: '--keep' });
      continue;
    }
    if (t.D % bs) {
      warn(`${label}: embedding width ${t.D} is not a multiple of --group ${bs}; left in float`);
      reports.push({ ...base, action: 'kept', reason: `width ${t.D} not a multiple of ${bs}` });
      continue;
    }
    const key = `${t.table.name}|${t.graphPath}`;
    let q = done.get(key);
    if (!q) {
      const w = await tensorFloat32(m, t.table.tensor);
      const enc = quantizeRows(w, t.V, t.D, o);
      const nBlocks = t.D / bs;
      const data = idx.fresh(`${t.table.name}_Q${o.bits}`);
      const scales = idx.fresh(`${t.table.name}_scales`);
      addInitializer(m.proto, t.graph, makeTensor(data, DataType.UINT8, [t.V, (t.D * o.bits) / 8], enc.b));
      addInitializer(m.proto, t.graph, makeTensor(scales, DataType.FLOAT, [t.V, nBlocks], enc.scales));
      let zp: string | undefined;
      if (enc.zeroPoints) {
        if (!(enc.zeroPoints instanceof Uint8Array)) fail('internal error: GatherBlockQuantized takes integer zero points');
        zp = idx.fresh(`${t.table.name}_zero_points`);
        addInitializer(m.proto, t.graph, makeTensor(zp, DataType.UINT8, [t.V, enc.zeroPoints.length / t.V], enc.zeroPoints));
      }
      q = { data, scales, zp, sqnr: sqnrDb(w, enc.q) };
      done.set(key, q);
    }
    const attrs = { gather_axis: 0, quantize_axis: 1, block_size: bs, bits: o.bits };
    replaceNode(t.graph, t.node, [mkNode('GatherBlockQuantized', [q.data, t.node.input![1], q.scales, ...(q.zp ? [q.zp] : [])], [t.node.output![0]], attrs, `${t.node.name || t.node.output![0]}_Q${o.bits}`, 'com.microsoft')]);
    reports.push({ ...base, action: `GatherBlockQuantized int${o.bits} g${bs}${q.zp ? ' +zp' : ''}`, sqnrDb: q.sqnr });
  }
  if (reports.some((r) => r.action.startsWith('GatherBlockQuantized'))) ensureOpset(m.proto, 'com.microsoft', 1);
  const uses = useCounts(m.proto);
  for (const t of targets) removeIfUnused(m.proto, t.table, uses);
  return reports;
}
