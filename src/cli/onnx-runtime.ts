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
 * The model with `names` added as float graph outputs (to read intermediate activations), and the
 * graph output that carries each name. A name inside an `If` branch (at any depth) is passed out as an
 * extra output of the branch and of its If node; the other branch outputs an empty tensor there (skipped
 * by captureActivations). Names inside Loop/Scan bodies are not reachable and are left out.
 */
export function withOutputs(proto: ModelProto, names: readonly string[]): { bytes: Uint8Array; outputOf: Map<string, string> } {
  const have = new Set((proto.graph!.output ?? []).map((o) => o.name));
  const main = new Set<string>([...(proto.graph!.input ?? []).map((v) => v.name ?? ''), ...(proto.graph!.initializer ?? []).map((t) => t.name ?? '')]);
  for (const n of proto.graph!.node ?? []) for (const o of n.output ?? []) main.add(o);
  const outputOf = new Map<string, string>();
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
    /** pass `name` out of graph g (which produces it, maybe in a nested If); returns the name it has in g */
    const lift = (g: GraphProto, name: string): string | undefined => {
      for (const n of g.node ?? []) if ((n.output ?? []).includes(name)) return name;
      for (const n of g.node ?? []) {
        if (n.op_type !== 'If') continue;
        const branches = subgraphs(n).map((s) => s.graph);
        for (const b of branches) {
          const got = lift(b, name);
          if (!got) continue;
          for (const other of branches) {
            if (other === b) (other.output ??= []).push(valueInfo(got, 1));
            else {
              const empty = fresh(`${name}_empty`);
              (other.node ??= []).push(node('Constant', [], [empty], { value: floatTensor(empty, [0], []) }));
              (other.output ??= []).push(valueInfo(empty, 1));
            }
          }
          const out = fresh(`${name}_lifted`);
          (n.output ??= []).push(out);
          return out;
        }
      }
      return undefined;
    };
    for (const name of inner) {
      const out = lift(m.graph!, name);
      if (out) outputOf.set(name, out);
    }
  }
  for (const n of names) if (main.has(n)) outputOf.set(n, n);
  const extra = [...outputOf.values()].filter((n) => !have.has(n)).map((n) => valueInfo(n, 1));
  const copy: ModelProto = { ...m, graph: { ...m.graph!, output: [...(m.graph!.output ?? []), ...extra] } };
  return { bytes: encodeOnnx(copy), outputOf };
}

/**
 * Run the model on each feed set and hand every captured activation to `sink` (name, tensor), one
 * sample at a time (activations are not all kept in memory). Empty tensors (the untaken branch of an
 * If) are skipped.
 */
export async function captureActivations(proto: ModelProto, names: readonly string[], samples: readonly Feeds[], sink: (name: string, t: OutTensor) => void, threads = 1): Promise<void> {
  const { bytes, outputOf } = withOutputs(proto, names);
  const s = await ortSession(bytes, threads);
  try {
    for (const feeds of samples) {
      const out = await s.run(feeds, [...outputOf.values()]);
      for (const [n, o] of outputOf) {
        const t = out.get(o);
        if (t && t.data.length) sink(n, t);
      }
    }
  } finally {
    await s.release();
  }
}
