/**
 * `npm run bench -- ggml-iq [millions]`: quantize / dequantize throughput of the ggmlb codecs
 * (IQ4_NL, IQ4_XS, TQ*, MXFP4, NVFP4, Q1_0, Q2_0) on N(0,1) float32 data (default 16M floats),
 * in MB/s of float32 input, by wall time and by this process's CPU time (steadier on a shared machine).
 * Anchor: a plain copy of the same buffer in the same run.
 */
import { ggmlbCodecs } from '../src/quant/ggml/ggmlb.js';
import { ggmlRowBytes } from '../src/quant/ggml/types.js';

export async function run(args: string[]): Promise<void> {
  const n = Math.round(Number(args[0] ?? 16) * 1048576);
  const rowLength = 4096;
  const rows = Math.floor(n / rowLength);
  const x = new Float32Array(rows * rowLength);
  let s = 1;
  for (let i = 0; i < x.length; i += 2) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const u1 = (s + 1) / 4294967297;
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const u2 = s / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    x[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < x.length) x[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  const mb = (x.length * 4) / 1e6;
  let t = performance.now();
  const copy = x.slice();
  const copyMs = performance.now() - t;
  console.log(`${x.length} floats (${mb.toFixed(1)} MB); copy ${(mb / (copyMs / 1000)).toFixed(0)} MB/s (anchor), checksum ${copy[7]}`);
  const only = args[1]?.split(',');
  for (const c of ggmlbCodecs) {
    if (!c.quantize || (only && !only.includes(c.type.name))) continue;
    const q = new Uint8Array(rows * ggmlRowBytes(c.type, rowLength));
    let cpu = process.cpuUsage();
    t = performance.now();
    c.quantize(x, rows, rowLength, q);
    const qMs = performance.now() - t;
    const qCpu = process.cpuUsage(cpu);
    const y = new Float32Array(x.length);
    cpu = process.cpuUsage();
    t = performance.now();
    c.dequantize(q, x.length, y);
    const dMs = performance.now() - t;
    const dCpu = process.cpuUsage(cpu);
    const rate = (ms: number): string => (mb / (ms / 1000)).toFixed(1).padStart(7);
    const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;
    console.log(
      `${c.type.name.padEnd(7)} quantize ${rate(qMs)} MB/s (cpu ${rate(cpuMs(qCpu))})  dequantize ${rate(dMs)} MB/s (cpu ${rate(cpuMs(dCpu))})`,
    );
  }
}
