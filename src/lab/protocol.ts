/**
 * Messages between the Lab's page (app.ts) and its job worker (worker.ts). Every request carries an
 * id; the worker answers with `result` or `error` for that id, and may send `progress` / `text`
 * messages for it before. Files (File, FileSystemFileHandle) travel by structured clone: the worker
 * reads them lazily with File.slice and never holds a whole model.
 */
import type { QuantizeReport } from '../pipeline/quantize.js';
import type { QuantizeEvaluation } from '../pipeline/evaluate.js';
import type { QuantizeForm } from './recipe-form.js';

export interface TensorRow {
  name: string;
  shape: number[];
  type: string;
  bytes: number;
  elements: number;
}

export interface ModelSummary {
  name: string;
  format: string;
  size: number;
  parameters: number;
  bitsPerWeight: number;
  /** metadata as display strings (long arrays summarized) */
  metadata: [string, string][];
  tensors: TensorRow[];
  /** can the runtime evaluate / generate with this model? */
  runnable: boolean;
}

export interface PlanRow {
  name: string;
  shape: number[];
  from: string;
  to: string;
  bytes: number;
  fallbackFrom?: string;
}

export interface PlanSummary {
  output: 'gguf' | 'safetensors';
  recipe: string;
  algorithm: string;
  tensors: PlanRow[];
  bytes: number;
  bitsPerWeight: number;
  parameters: number;
  /** the model is converted to GGUF first (llama2.c / safetensors input, GGML output) */
  converts: boolean;
}

/** where the output goes */
export type SinkKind = 'opfs' | 'fsa' | 'memory';

export type Request =
  | { op: 'open'; files: File[]; label?: string }
  | { op: 'plan'; form: QuantizeForm }
  | { op: 'quantize'; form: QuantizeForm; sink: SinkKind; handle?: FileSystemFileHandle; outputName: string; calibText?: string; imatrix?: File }
  | { op: 'evaluate'; text: string; textName: string; ctx: number; chunks?: number; quantized: Blob; quantizedName: string }
  | { op: 'generate'; prompt: string; steps: number; temperature: number; seed: number; which: 'quantized' | 'original'; quantized?: Blob; quantizedName?: string }
  | { op: 'tensor-sqnr'; tensor: string; format: string; rounding: string; granularity: 'tensor' | 'row' | 'block32'; seed: number };

export interface QuantizeResult {
  report: QuantizeReport;
  outputName: string;
  /** the finished file (OPFS / FSA file, or a Blob for the memory sink) */
  file: Blob;
  sink: SinkKind;
  seconds: number;
  threads: number;
  /** where the job worker's time went (seconds): reading the model (async, overlaps the rest), quantizing, writing the output */
  timing: { read: number; quantize: number; write: number };
}

export interface EvaluateResult {
  evaluation: QuantizeEvaluation;
}

export interface TensorSqnrResult {
  tensor: string;
  format: string;
  sqnrDb: number;
  elements: number;
  /** a sample of (x, q(x)) pairs for the scatter */
  sample: [number, number][];
  scale: number;
  seconds: number;
}

export type Reply =
  | { id: number; kind: 'result'; value: unknown }
  | { id: number; kind: 'error'; message: string }
  | { id: number; kind: 'progress'; fraction: number; message: string; rate?: string }
  | { id: number; kind: 'text'; text: string };
