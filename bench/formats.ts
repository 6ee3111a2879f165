/**
 * `npm run bench -- formats [--mib N] [--file-mib N] [--no-cli]`
 *
 * 1. Fake-quant throughput (float32 -> format -> float32, round-to-nearest-even, saturating) on a
 *    64 MiB array, in GB/s of input, beside a plain Float32Array.prototype.set copy of the same size
 *    measured in the same run; the ratio is kernel / copy (target >= 0.5).
 * 2. The CLI stream case: `lowbit cast --in F --out G --to fp8_e4m3fn` on a ~256 MB file, beside a
 *    Node stream copy (fs.createReadStream piped to fs.createWriteStream) of the same file, both run
 *    as a fresh `node` process; the ratio is copy time / cast time.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { allocCastArray, fakeQuant } from '../src/kernels/cast.js';
import { wasmVariant } from '../src/kernels/wasm.js';
import { parseFormat } from '../src/formats/registry.js';

function best(reps: number, fn: () => void): number {
  let t = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

function randomData(n: number): Float32Array {
  const x = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    x[i] = ((s / 2 ** 32) * 2 - 1) * 3; // |x| < 3, a weight-like range
  }
  return x;
}

export async function run(args: string[]): Promise<void> {
  const mib = arg(args, '--mib', 64);
  const n = (mib * 2 ** 20) / 4;
  const src = randomData(n);
  const dst = new Float32Array(n);
  const gb = (n * 4) / 1e9;
  console.log(`fake-quant of ${mib} MiB float32 (${n} values), WebAssembly build: ${wasmVariant()}`);
  // copy and kernel measured alternately, best of each, so that load from other processes hits both alike
  const names = ['fp8_e4m3fn', 'fp4_e2m1fn', 'int8', 'bf16', 'fp8_e5m2', 'fp16'];
  const formats = names.map((name) => parseFormat(name));
  for (const f of formats) fakeQuant(f, src.subarray(0, 4096), {}, dst.subarray(0, 4096)); // warm up
  let copy = Infinity;
  const times = formats.map(() => Infinity);
  for (let rep = 0; rep < 5; rep++) {
    copy = Math.min(copy, best(1, () => dst.set(src)));
    formats.forEach((f, i) => (times[i] = Math.min(times[i], best(1, () => fakeQuant(f, src, {}, dst)))));
  }
  console.log(`  ${'copy (Float32Array.set)'.padEnd(26)} ${(gb / copy).toFixed(2).padStart(7)} GB/s`);
  console.log('  fakeQuant(f, src, opts, dst), plain Float32Arrays (chunked through the kernel memory):');
  formats.forEach((f, i) => console.log(`  ${f.name.padEnd(26)} ${(gb / times[i]).toFixed(2).padStart(7)} GB/s   ratio to copy ${(copy / times[i]).toFixed(2)}x`));
  // zero copy: the array lives in kernel memory (allocCastArray) and is cast in place; each run
  // first restores the input with a copy, so the time is copy + cast, and the cast alone is the difference
  const arena = allocCastArray(n);
  const inPlace = formats.map(() => Infinity);
  let copy2 = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    copy2 = Math.min(copy2, best(1, () => arena.set(src)));
    formats.forEach((f, i) => {
      arena.set(src);
      inPlace[i] = Math.min(inPlace[i], best(1, () => fakeQuant(f, arena, {}, arena)));
    });
  }
  console.log(`  fakeQuant(f, x, opts, x) in place, x = allocCastArray(n) (zero copy); copy into it: ${(gb / copy2).toFixed(2)} GB/s`);
  formats.forEach((f, i) => console.log(`  ${f.name.padEnd(26)} ${(gb / inPlace[i]).toFixed(2).padStart(7)} GB/s   ratio to copy ${(copy / inPlace[i]).toFixed(2)}x`));
  if (args.includes('--no-cli')) return;

  const fileMib = arg(args, '--file-mib', 256);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const bin = path.join(root, 'bin', 'lowbit.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bench-'));
  try {
    const input = path.join(dir, 'in.f32');
    const chunk = randomData(2 ** 22);
    const fd = fs.openSync(input, 'w');
    for (let w = 0; w < fileMib / 16; w++) fs.writeSync(fd, new Uint8Array(chunk.buffer));
    fs.closeSync(fd);
    const copyScript = `const fs=require('fs');fs.createReadStream(process.argv[1]).pipe(fs.createWriteStream(process.argv[2])).on('finish',()=>{})`;
    const time = (argv: string[]): number => {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
      if (r.status !== 0) throw new Error(`${argv.join(' ')} exited with ${r.status}`);
      return (performance.now() - t0) / 1000;
    };
    const out = path.join(dir, 'out.f32');
    let tCopy = Infinity;
    let tCast = Infinity;
    for (let rep = 0; rep < 3; rep++) {
      tCopy = Math.min(tCopy, time(['-e', copyScript, input, out]));
      fs.rmSync(out);
      tCast = Math.min(tCast, time([bin, 'cast', '--in', input, '--out', out, '--to', 'fp8_e4m3fn']));
      fs.rmSync(out);
    }
    const mb = (fileMib * 2 ** 20) / 1e6;
    console.log(`CLI stream of a ${fileMib} MiB file (each a fresh node process, best of 3)`);
    console.log(`  ${'stream copy (pipe)'.padEnd(26)} ${tCopy.toFixed(3)} s  ${(mb / tCopy).toFixed(0)} MB/s`);
    console.log(`  ${'lowbit cast fp8_e4m3fn'.padEnd(26)} ${tCast.toFixed(3)} s  ${(mb / tCast).toFixed(0)} MB/s   ratio to copy ${(tCopy / tCast).toFixed(2)}x`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
