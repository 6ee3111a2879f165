/**
 * onnxruntime-node as lowbit's ONNX client: run a model on inputs, capture intermediate activations
 * (by exposing them as extra graph outputs) for calibration, and check that a written model loads.
 * onnxruntime-node is loaded on first use; without it, commands that need a runtime say so.
 */
import { fail } from '../errors.js';
import { allGraphs, encodeOnnx, parseOnnx, subgraphs } from '../io/onnx/model.js';
import { floatTensor, node, valueInfo } from '../io/onnx/build.js';
import type { GraphProto, ModelProto } from '../io/onnx/schema.js';
import type { NpyArray } from '../io/npy.js';

type Ort = typeof import('onnxruntime-node');
let ortModule: Ort | undefined;
export async function loadOrt(): Promise<Ort> {
  if (ortModule) return ortModule;
  try {
    ortModule = await import('onnxruntime-node');
  } catch {
    fail('this needs onnxruntime-node (npm install onnxruntime-node) to run the model');
  }
  return ortModule;
}

export type Feeds = Record<string, NpyArray>;
export interface OutTensor {
  dims: number[];
  data: Float32Array;
}

function toOrtTensor(ort: Ort, a: NpyArray) {
  const buf = a.data.buffer.slice(a.data.byteOffset, a.data.byteOffset + a.data.byteLength);
  switch (a.type) {
    case 'float32':
      return new ort.Tensor('float32', new Float32Array(buf), a.shape);
    case 'int64':
      return new ort.Tensor('int64', new BigInt64Array(buf), a.shape);
    case 'int32':
      return new ort.Tensor('int32', new Int32Array(buf), a.shape);
    case 'uint8':
      return new ort.Tensor('uint8', new Uint8Array(buf), a.shape);
    case 'bool':
      return new ort.Tensor('bool', new Uint8Array(buf), a.shape);
    case 'float64':
      return new ort.Tensor('float32', Float32Array.from(new Float64Array(buf)), a.shape);
    default:
      fail(`calibration input of type ${a.type} is not supported`);
  }
}

export interface OrtSession {
  inputNames: readonly string[];
  outputNames: readonly string[];
  run(feeds: Feeds, outputs?: readonly string[]): Promise<Map<string, OutTensor>>;
  release(): Promise<void>;
}

/** `optimization` 'basic' keeps onnxruntime from fusing QDQ patterns (see runOnnxQuantize's FP8 note) */
export async function ortSession(model: Uint8Array | string, threads = 1, optimization: 'basic' | 'all' = 'all'): Promise<OrtSession> {
  const ort = await loadOrt();
  let s: import('onnxruntime-node').InferenceSession;
  const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 as const, graphOptimizationLevel: optimization };
  try {
    s = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  } catch (e) {
    fail(`onnxruntime could not load the model: ${(e as Error).message.split('\n')[0]}`);
  }
  return {
    inputNames: s.inputNames,
    outputNames: s.outputNames,
    async run(feeds, outputs) {
      const f: Record<string, import('onnxruntime-node').Tensor> = {};
      for (const name of s.inputNames) {
        if (!feeds[name]) fail(`calibration data has no input '${name}' (model inputs: ${s.inputNames.join(', ')})`);
        f[name] = toOrtTensor(ort, feeds[name]);
      }
      let r: import('onnxruntime-node').InferenceSession.OnnxValueMapType;
      try {
        r = outputs ? await s.run(f, [...outputs]) : await s.run(f);
      } catch (e) {
        fail(`onnxruntime failed to run the model: ${(e as Error).message.split('\n')[0]}`);
      }
      const out = new Map<string, OutTensor>();
      for (const [k, v] of Object.entries(r)) {
        const t = v as import('onnxruntime-node').Tensor;
        if (t.type === 'float32') out.set(k, { dims: [...t.dims], data: t.data as Float32Array });
        else if (t.type === 'int64') out.set(k, { dims: [...t.dims], data: Float32Array.from(t.data as BigInt64Array, Number) });
      }
      return out;
    },
    release: () => s.release(),
  };
}

/**
 * The model with `names` added as float graph outputs (to read intermediate activations), the graph
 * output that carries each name, and how many Loop/Scan levels stack it. A name inside an `If` branch
 * (at any depth) is passed out as an extra output of the branch and of its If node; the other branch
 * outputs an empty tensor there (skipped by captureActivations). A name inside a Loop or Scan body becomes
 * an extra scan output of the body (the runtime stacks it over the iterations: one leading axis per level).
 */
export function withOutputs(proto: ModelProto, names: readonly string[]): { bytes: Uint8Array; outputOf: Map<string, string>; stacked: Map<string, number> } {
  const have = new Set((proto.graph!.output ?? []).map((o) => o.name));
  const main = new Set<string>([...(proto.graph!.input ?? []).map((v) => v.name ?? ''), ...(proto.graph!.initializer ?? []).map((t) => t.name ?? '')]);
  for (const n of proto.graph!.node ?? []) for (const o of n.output ?? []) main.add(o);
  const outputOf = new Map<string, string>();
  const stacked = new Map<string, number>();
  const inner = names.filter((n) => !main.has(n));
  let m = proto;
  if (inner.length) {
    m = parseOnnx(encodeOnnx(proto)).proto; // a private copy to rewire
    const taken = new Set<string>();
    for (const { graph } of allGraphs(m)) for (const n of graph.node ?? []) for (const x of [...(n.input ?? []), ...(n.output ?? [])]) taken.add(x);
    const fresh = (base: string) => {
      let s = base;
      for (let i = 1; taken.has(s); i++) s = `${base}_${i}`;
      taken.add(s);
      return s;
    };
    /** pass `name` out of graph g (which produces it, maybe in a nested If/Loop/Scan); its name in g and the Loop/Scan levels crossed */
    const lift = (g: GraphProto, name: string): [string, number] | undefined => {
      for (const n of g.node ?? []) if ((n.output ?? []).includes(name)) return [name, 0];
      // a Loop/Scan body's own input (carried state, scan slice): through an Identity
      if (g !== m.graph && (g.input ?? []).some((v) => v.name === name)) {
        const id = fresh(`${name}_seen`);
        (g.node ??= []).unshift(node('Identity', [name], [id]));
        return [id, 0];
      }
      for (const n of g.node ?? []) {
        const op = n.op_type ?? '';
        if ((n.domain ?? '') !== '' || !['If', 'Loop', 'Scan'].includes(op)) continue;
        const branches = subgraphs(n).map((s) => s.graph);
        for (const b of branches) {
          const got = lift(b, name);
          if (!got) continue;
          if (op === 'If')
            for (const other of branches) {
              if (other === b) (other.output ??= []).push(valueInfo(got[0], 1));
              else {
                const empty = fresh(`${name}_empty`);
                (other.node ??= []).push(node('Constant', [], [empty], { value: floatTensor(empty, [0], []) }));
                (other.output ??= []).push(valueInfo(empty, 1));
              }
            }
          else {
            // a new scan output: last among the body's outputs and the node's outputs
            (b.output ??= []).push(valueInfo(got[0], 1));
            if (op === 'Scan')
              for (const a of n.attribute ?? []) if ((a.name === 'scan_output_axes' || a.name === 'scan_output_directions') && a.ints) a.ints = [...a.ints, 0];
          }
          const out = fresh(`${name}_lifted`);
          (n.output ??= []).push(out);
          return [out, got[1] + (op === 'If' ? 0 : 1)];
        }
      }
      return undefined;
    };
    for (const name of inner) {
      const out = lift(m.graph!, name);
      if (out) {
        outputOf.set(name, out[0]);
        if (out[1]) stacked.set(name, out[1]);
      }
    }
  }
  for (const n of names) if (main.has(n)) outputOf.set(n, n);
  const extra = [...outputOf.values()].filter((n) => !have.has(n)).map((n) => valueInfo(n, 1));
  const copy: ModelProto = { ...m, graph: { ...m.graph!, output: [...(m.graph!.output ?? []), ...extra] } };
  return { bytes: encodeOnnx(copy), outputOf, stacked };
}

/**
 * Run the model on each feed set and hand every captured activation to `sink` (name, tensor), one
 * sample at a time (activations are not all kept in memory). Empty tensors (the untaken branch of an
 * If, a Loop that ran no iteration) are skipped; a value captured inside Loop/Scan bodies comes with its
 * iterations merged into its first axis (so axis 1 and the last axis keep their meaning).
 */
export async function captureActivations(proto: ModelProto, names: readonly string[], samples: readonly Feeds[], sink: (name: string, t: OutTensor) => void, threads = 1): Promise<void> {
  if (!names.length) return;
  const { bytes, outputOf, stacked } = withOutputs(proto, names);
  if (!outputOf.size) return;
  const s = await ortSession(bytes, threads);
  try {
    for (const feeds of samples) {
      const out = await s.run(feeds, [...outputOf.values()]);
      for (const [n, o] of outputOf) {
        const t = out.get(o);
        if (!t || !t.data.length) continue;
        // from inside Loop/Scan: the iteration axes merged into the value's first axis
        // (a 1-D value keeps its axis apart: [iterations, C])
        const k = stacked.get(n);
        const lead = k ? (t.dims.length - k >= 2 ? k + 1 : k) : 0;
        sink(n, lead > 1 ? { data: t.data, dims: [t.dims.slice(0, lead).reduce((a, b) => a * b, 1), ...t.dims.slice(lead)] } : t);
      }
    }
  } finally {
    await s.release();
  }
}
