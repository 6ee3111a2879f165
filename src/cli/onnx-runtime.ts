/**
 * onnxruntime-node as lowbit's ONNX client: run a model on inputs, capture intermediate activations
 * (by exposing them as extra graph outputs) for calibration, and check that a written model loads.
 * onnxruntime-node is loaded on first use; without it, commands that need a runtime say so.
 */
import { fail } from '../errors.js';
import { encodeOnnx } from '../io/onnx/model.js';
import { valueInfo } from '../io/onnx/build.js';
import type { ModelProto } from '../io/onnx/schema.js';
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

export async function ortSession(model: Uint8Array | string, threads = 1): Promise<OrtSession> {
  const ort = await loadOrt();
  let s: import('onnxruntime-node').InferenceSession;
  try {
    s = typeof model === 'string'
      ? await ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 })
      : await ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 });
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

/** The model with `names` added as float graph outputs (to read intermediate activations). */
export function withOutputs(proto: ModelProto, names: readonly string[]): Uint8Array {
  const have = new Set((proto.graph!.output ?? []).map((o) => o.name));
  const extra = names.filter((n) => !have.has(n)).map((n) => valueInfo(n, 1));
  const copy: ModelProto = { ...proto, graph: { ...proto.graph!, output: [...(proto.graph!.output ?? []), ...extra] } };
  return encodeOnnx(copy);
}

/**
 * Run the model on each feed set and hand every captured activation to `sink` (name, tensor), one
 * sample at a time (activations are not all kept in memory).
 */
export async function captureActivations(proto: ModelProto, names: readonly string[], samples: readonly Feeds[], sink: (name: string, t: OutTensor) => void, threads = 1): Promise<void> {
  const s = await ortSession(withOutputs(proto, names), threads);
  try {
    for (const feeds of samples) {
      const out = await s.run(feeds, names);
      for (const n of names) {
        const t = out.get(n);
        if (t) sink(n, t);
      }
    }
  } finally {
    await s.release();
  }
}
