/**
 * Editing ONNX graphs in place: find the constant behind a node input (in its graph or an enclosing
 * one), count uses, add initializers with fresh names, drop weights nobody reads any more, declare
 * operator sets. The quantizers build on these.
 */
import { fail } from '../../errors.js';
import { allGraphs, onnxWeights, type WeightRef } from './model.js';
import type { GraphProto, ModelProto, NodeProto, TensorProto } from './schema.js';

export interface GraphIndex {
  /** constant tensors by name (initializers and Constant outputs, every graph) */
  readonly constants: Map<string, WeightRef>;
  /** every name in use (node inputs/outputs, graph inputs/outputs, initializers) */
  readonly names: Set<string>;
  fresh(base: string): string;
}

export function indexGraph(m: ModelProto): GraphIndex {
  const constants = new Map<string, WeightRef>();
  for (const w of onnxWeights(m)) if (!constants.has(w.name)) constants.set(w.name, w);
  const names = new Set<string>();
  for (const { graph } of allGraphs(m)) {
    for (const n of graph.node ?? []) for (const x of [...(n.input ?? []), ...(n.output ?? [])]) names.add(x);
    for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.value_info ?? [])]) names.add(v.name ?? '');
    for (const t of graph.initializer ?? []) names.add(t.name ?? '');
  }
  return {
    constants,
    names,
    fresh(base) {
      let name = base;
      for (let i = 1; names.has(name); i++) name = `${base}_${i}`;
      names.add(name);
      return name;
    },
  };
}

/** how many node inputs and graph outputs read each name (every graph) */
export function useCounts(m: ModelProto): Map<string, number> {
  const uses = new Map<string, number>();
  const add = (x: string) => x && uses.set(x, (uses.get(x) ?? 0) + 1);
  for (const { graph } of allGraphs(m)) {
    for (const n of graph.node ?? []) for (const x of n.input ?? []) add(x);
    for (const v of graph.output ?? []) add(v.name ?? '');
  }
  return uses;
}

/** Add `t` to graph's initializers (IR < 4 models also list initializers as graph inputs). */
export function addInitializer(m: ModelProto, graph: GraphProto, t: TensorProto): void {
  (graph.initializer ??= []).push(t);
  if (Number(m.ir_version) < 4 && graph === m.graph)
    (graph.input ??= []).push({ name: t.name, type: { tensor_type: { elem_type: t.data_type, shape: { dim: (t.dims ?? []).map((d) => ({ dim_value: d })) } } } });
}

/** Remove a weight (initializer or Constant node) once nothing reads it. Returns whether it was removed. */
export function removeIfUnused(m: ModelProto, w: WeightRef, uses = useCounts(m)): boolean {
  if ((uses.get(w.name) ?? 0) > 0) return false;
  if (w.kind === 'initializer') {
    w.graph.initializer = (w.graph.initializer ?? []).filter((t) => t !== w.tensor);
    if (w.graph.input) w.graph.input = w.graph.input.filter((v) => v.name !== w.name);
  } else w.graph.node = (w.graph.node ?? []).filter((n) => n !== w.node);
  return true;
}

/** Declare operator set `domain` at least at `version` (adds the import when missing). */
export function ensureOpset(m: ModelProto, domain: string, version: number): void {
  const o = (m.opset_import ??= []).find((x) => (x.domain ?? '') === domain);
  if (!o) m.opset_import.push({ domain, version });
  else if (Number(o.version) < version) fail(`the model imports ${domain || 'ai.onnx'} opset ${o.version}; this rewrite needs ${version}`);
}

/** Replace `node` in `graph` by `nodes` (same position: topological order is kept). */
export function replaceNode(graph: GraphProto, node: NodeProto, nodes: NodeProto[]): void {
  const list = graph.node ?? [];
  const i = list.indexOf(node);
  if (i < 0) fail('internal error: node not in its graph');
  list.splice(i, 1, ...nodes);
}

/** Insert `nodes` before `node` in `graph`. */
export function insertBefore(graph: GraphProto, node: NodeProto, nodes: NodeProto[]): void {
  const list = graph.node ?? [];
  const i = list.indexOf(node);
  if (i < 0) fail('internal error: node not in its graph');
  list.splice(i, 0, ...nodes);
}

/** A label for a node in messages: its name, or op type and first output. */
export const nodeLabel = (n: NodeProto): string => n.name || `${n.op_type}(${n.output?.[0] ?? ''})`;
