/**
 * Where `bench gptq`'s seconds go: the same run (bench/gptq.ts: synthetic 112M-shaped llama, int4 g128,
 * n x 512 calibration tokens) with the calibration's kernel entry points wrapped by timers (wall and
 * process CPU, exclusive of nested wrapped calls), GFLOP/s of each, and the machine's measured
 * WebAssembly SIMD peak on 1 and 2 threads (12 independent f32x4 fused multiply-add chains, warmed up
 * so that the optimizing tier runs).
 *
 *   npm run bench -- gptq-profile [sequences=16] [layers=1] [threads=2]
 *
 * With one layer the first layer's fresh-memory page faults (every window's stage outputs) land in
 * "runStage ... (rest)"; later layers reuse that memory.
 */
import { Worker } from 'node:worker_threads';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import { InputStats } from '../src/pipeline/passes/input-stats.js';
import { LayerCalibration } from '../src/pipeline/passes/stages.js';
import { run as gptqRun } from './gptq.js';

/*
 * The peak probe, AssemblyScript (asc -O3 --runtime stub --enable simd --enable relaxed-simd):
 *   export function peak(iters: i32): f32 {
 *     let a0..a11 = f32x4.splat(..); const b = f32x4.splat(0.999), c = f32x4.splat(0.001);
 *     for (let i = 0; i < iters; i++) { a0 = f32x4.relaxed_madd(a0, b, c); ... a11 = ...; }
 *     return lane 0 of the sum of a0..a11;
 *   }
 * (and peakMulAdd, the same with f32x4.mul + f32x4.add, 8 chains)
 */
const PEAK_WASM = 'AGFzbQEAAAABBgFgAX8BfQMDAgAABQMBAAAHHgMEcGVhawABCnBlYWtNdWxBZGQAAAZtZW1vcnkCAAq9CgKqBAIIewF//QzNzMw9zczMPc3MzD3NzMw9IQL9DM3MTD7NzEw+zcxMPs3MTD4hA/0MmpmZPpqZmT6amZk+mpmZPiEE/QzNzMw9zczMPc3MzD3NzMw9IQb9DM3MTD7NzEw+zcxMPs3MTD4hB/0MmpmZPpqZmT6amZk+mpmZPiEIA0AgACAJSgRAIAH9DHe+fz93vn8/d75/P3e+fz/95gH9DG8SgzpvEoM6bxKDOm8Sgzr95AEhASAC/Qx3vn8/d75/P3e+fz93vn8//eYB/QxvEoM6bxKDOm8SgzpvEoM6/eQBIQIgA/0Md75/P3e+fz93vn8/d75/P/3mAf0MbxKDOm8SgzpvEoM6bxKDOv3kASEDIAT9DHe+fz93vn8/d75/P3e+fz/95gH9DG8SgzpvEoM6bxKDOm8Sgzr95AEhBCAF/Qx3vn8/d75/P3e+fz93vn8//eYB/QxvEoM6bxKDOm8SgzpvEoM6/eQBIQUgBv0Md75/P3e+fz93vn8/d75/P/3mAf0MbxKDOm8SgzpvEoM6bxKDOv3kASEGIAf9DHe+fz93vn8/d75/P3e+fz/95gH9DG8SgzpvEoM6bxKDOm8Sgzr95AEhByAI/Qx3vn8/d75/P3e+fz93vn8//eYB/QxvEoM6bxKDOm8SgzpvEoM6/eQBIQggCUEBaiEJDAELCyABIAL95AEgAyAE/eQB/eQBIAUgBv3kASAHIAj95AH95AH95AH9HwALjgYCDHsBf/0MzczMPc3MzD3NzMw9zczMPSEC/QzNzEw+zcxMPs3MTD7NzEw+IQP9DJqZmT6amZk+mpmZPpqZmT4hBP0MzczMPc3MzD3NzMw9zczMPSEG/QzNzEw+zcxMPs3MTD7NzEw+IQf9DJqZmT6amZk+mpmZPpqZmT4hCP0MzczMPc3MzD3NzMw9zczMPSEK/QzNzEw+zcxMPs3MTD7NzEw+IQv9DJqZmT6amZk+mpmZPpqZmT4hDANAIAAgDUoEQCAB/Qx3vn8/d75/P3e+fz93vn8//QxvEoM6bxKDOm8SgzpvEoM6/YUCIQEgAv0Md75/P3e+fz93vn8/d75/P/0MbxKDOm8SgzpvEoM6bxKDOv2FAiECIAP9DHe+fz93vn8/d75/P3e+fz/9DG8SgzpvEoM6bxKDOm8Sgzr9hQIhAyAE/Qx3vn8/d75/P3e+fz93vn8//QxvEoM6bxKDOm8SgzpvEoM6/YUCIQQgBf0Md75/P3e+fz93vn8/d75/P/0MbxKDOm8SgzpvEoM6bxKDOv2FAiEFIAb9DHe+fz93vn8/d75/P3e+fz/9DG8SgzpvEoM6bxKDOm8Sgzr9hQIhBiAH/Qx3vn8/d75/P3e+fz93vn8//QxvEoM6bxKDOm8SgzpvEoM6/YUCIQcgCP0Md75/P3e+fz93vn8/d75/P/0MbxKDOm8SgzpvEoM6bxKDOv2FAiEIIAn9DHe+fz93vn8/d75/P3e+fz/9DG8SgzpvEoM6bxKDOm8Sgzr9hQIhCSAK/Qx3vn8/d75/P3e+fz93vn8//QxvEoM6bxKDOm8SgzpvEoM6/YUCIQogC/0Md75/P3e+fz93vn8/d75/P/0MbxKDOm8SgzpvEoM6bxKDOv2FAiELIAz9DHe+fz93vn8/d75/P3e+fz/9DG8SgzpvEoM6bxKDOm8Sgzr9hQIhDCANQQFqIQ0MAQsLIAEgAv3kASADIAT95AH95AEgBSAG/eQBIAcgCP3kAf3kASAJIAr95AEgCyAM/eQB/eQB/eQB/eQB/R8ACw==';

const PEAK_SOURCE = `
const m = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(require('worker_threads').workerData, 'base64')), {});
for (let i = 0; i < 200; i++) m.exports.peak(10000);
const it = 1e6, reps = 150, t0 = performance.now();
for (let r = 0; r < reps; r++) m.exports.peak(it);
require('worker_threads').parentPort.postMessage((it * reps * 96) / ((performance.now() - t0) / 1000) / 1e9);
`;

/** GFLOP/s of the peak probe on each of n threads at once */
async function peak(n: number): Promise<number[]> {
  const one = () => new Promise<number>((resolve, reject) => new Worker(PEAK_SOURCE, { eval: true, workerData: PEAK_WASM}).on('message', resolve).on('error', reject));
  return Promise.all(Array.from({ length: n }, one));
}

interface Stat {
  cpu: number;
  wall: number;
  calls: number;
  flops: number;
}

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

export async function run(args: string[]): Promise<void> {
  const [nSeq = '16', layers = '1', threads = '2'] = args;
  const p1 = await peak(1);
  const p2 = await peak(2);
  console.log(`WebAssembly SIMD f32x4 FMA peak: ${p1[0].toFixed(1)} GFLOP/s on 1 thread, ${p2.map((x) => x.toFixed(1)).join(' + ')} GFLOP/s on 2 at once`);
  const stats = new Map<string, Stat>();
  const stack: { c0: number; w0: number; cc: number; wc: number }[] = [];
  let on = false;
  type Fn = (...a: any[]) => any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const wrap = (proto: object, method: string, label: Fn, flops: Fn = () => 0) => {
    const o = proto as Record<string, Fn>;
    const orig = o[method];
    o[method] = function (this: unknown, ...a: unknown[]) {
      if (!on) return orig.apply(this, a);
      const f = { c0: cpuMs(), w0: performance.now(), cc: 0, wc: 0 };
      stack.push(f);
      try {
        return orig.apply(this, a);
      } finally {
        stack.pop();
        const c = cpuMs() - f.c0;
        const w = performance.now() - f.w0;
        const name = label(...a) as string;
        const s = stats.get(name) ?? { cpu: 0, wall: 0, calls: 0, flops: 0 };
        s.cpu += c - f.cc;
        s.wall += w - f.wc;
        s.calls++;
        s.flops += flops(...a) as number;
        stats.set(name, s);
        const p = stack.at(-1);
        if (p) {
          p.cc += c;
          p.wc += w;
        }
      }
    };
    return () => void (o[method] = orig);
  };
  const E = MatmulEngine.prototype;
  const undo = [
    wrap(E, 'matmulF32', (_o, _x, _w, _t, k, n) => `matmul k${k} n${n}`, (_o, _x, _w, t, k, n) => 2 * t * k * n),
    wrap(E, 'gramUpper', (_x, _t, k) => `X^T X k${k}`, (_x, t, k) => t * k * (k + 1)),
    wrap(E, 'attention', () => 'attention', (_q, t, p0, h, _kvh, hd) => 4 * h * hd * (t * p0 + (t * (t + 1)) / 2)),
    wrap(E, 'siluMul', () => 'siluMul'),
    wrap(InputStats.prototype, 'add', () => 'InputStats.add (rest: gather, f64 sums)'),
    wrap(InputStats.prototype, 'finish', () => 'InputStats.finish (rest)'),
    wrap(Llama.prototype, 'runStage', (st) => `runStage ${st} (rest)`),
    wrap(LayerCalibration.prototype, 'addResidual', () => 'residual adds'),
  ];
  // start at the first statistics (after the bench's anchor forward pass)
  const add = InputStats.prototype.add;
  let t0 = { c: 0, w: 0 };
  InputStats.prototype.add = function (this: InputStats, x: Float32Array, n: number) {
    if (!on) {
      on = true;
      t0 = { c: cpuMs(), w: performance.now() };
    }
    return add.call(this, x, n);
  };
  try {
    await gptqRun([nSeq, layers, threads]);
  } finally {
    on = false;
    InputStats.prototype.add = add;
    undo.forEach((u) => u());
  }
  const peak2 = p2.reduce((a, b) => a + b, 0);
  console.log(`from the first statistics on: ${((cpuMs() - t0.c) / 1000).toFixed(1)} s CPU, ${((performance.now() - t0.w) / 1000).toFixed(1)} s wall (the rest: GPTQ's own quantization)`);
  for (const [k, s] of [...stats].sort((a, b) => b[1].wall - a[1].wall))
    console.log(
      `  ${k.padEnd(40)} ${String(s.calls).padStart(6)} calls  wall ${(s.wall / 1000).toFixed(2).padStart(7)} s  CPU ${(s.cpu / 1000).toFixed(2).padStart(7)} s` +
        (s.flops ? `  ${(s.flops / 1e9).toFixed(1).padStart(6)} GFLOP: ${(s.flops / s.wall / 1e6).toFixed(1)} GFLOP/s wall (${((100 * s.flops) / s.wall / 1e6 / peak2).toFixed(0)}% of the 2-thread peak), ${(s.flops / s.cpu / 1e6).toFixed(1)} per CPU-second` : ''),
    );
}
