/**
 * `npm run bench -- train [--steps N] [--batch B] [--ctx C] [--threads T] [--precisions]`: tokens per second of
 * `lowbit train --precision fp32` on a ~3.4M-parameter llama (dim 256, hidden 768, 4 layers, 8 heads,
 * 4 kv heads, vocab 512) against PyTorch on CPU (Debian's python3-torch, installed when missing;
 * scripts/train_llama_torch.py, the same model, batch, sequence length, optimizer and thread count, default 1), in the
 * same run. Whole commands as a user runs them: wall time from start to exit, start-up included; the
 * ratio is lowbit / PyTorch (higher is better for lowbit). --precisions adds the low-precision modes'
 * time against fp32.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function python(): string | undefined {
  const py = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const ok = () => spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  if (ok()) return py;
  console.log('python3-torch missing: apt-get install -y python3-torch');
  spawnSync('apt-get', ['install', '-y', 'python3-torch'], { stdio: 'inherit' });
  return ok() ? py : undefined;
}

function timed(cmd: string, args: string[]): { seconds: number; stdout: string; stderr: string; status: number | null } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  return { seconds: (performance.now() - t0) / 1000, stdout: r.stdout, stderr: r.stderr, status: r.status };
}

export async function run(args: string[]): Promise<void> {
  const arg = (k: string, d: number) => (args.includes(k) ? Number(args[args.indexOf(k) + 1]) : d);
  const steps = arg('--steps', 6);
  const batch = arg('--batch', 4);
  const ctx = arg('--ctx', 128);
  const threads = arg('--threads', 1);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bench-train-'));
  const text = path.join(tmp, 'text.txt');
  fs.writeFileSync(text, fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 300000));
  const shape = ['--dim', '256', '--hidden', '768', '--layers', '4', '--heads', '8', '--kv-heads', '4'];
  const tokens = steps * batch * ctx;
  const lowbit = (precision: string) => {
    const r = timed(process.execPath, ['--experimental-wasm-relaxed-simd', path.join(ROOT, 'bin', 'lowbit.js'), 'train', ...shape, '--vocab-from', path.join(ROOT, 'data', 'tok512.model'), '--text', text, '--steps', String(steps), '--batch', String(batch), '--ctx', String(ctx), '--precision', precision, '--threads', String(threads), '--json', path.join(tmp, 'm.gguf')]);
    if (r.status !== 0) throw new Error(`lowbit train failed: ${r.stderr}`);
    return { ...r, tps: tokens / r.seconds, inner: JSON.parse(r.stdout).tokensPerSecond as number };
  };
  console.log(`model: dim 256, hidden 768, 4 layers, 8/4 heads, vocab 512 (3.41M parameters); ${steps} steps of ${batch} x ${ctx} tokens; ${threads} thread${threads > 1 ? 's' : ''} each`);
  const ours = lowbit('fp32');
  console.log(`lowbit train fp32: ${ours.seconds.toFixed(1)} s whole command, ${ours.tps.toFixed(0)} tokens/s (${ours.inner.toFixed(0)} tokens/s in the loop)`);
  const py = python();
  if (py) {
    // tokens for the PyTorch script: the same tokenizer output as lowbit's (little-endian u16)
    const { readVocab } = await import('../src/io/vocab.js');
    const { fileSource } = await import('../src/cli/node-source.js');
    const { Tokenizer } = await import('../src/model/tokenizer.js');
    const tok = new Tokenizer(await readVocab(fileSource(path.join(ROOT, 'data', 'tok512.model'))));
    const ids = path.join(tmp, 'train.u16');
    fs.writeFileSync(ids, Uint16Array.from(tok.encode(fs.readFileSync(text, 'utf8'))));
    const r = timed(py, [path.join(ROOT, 'scripts', 'train_llama_torch.py'), '--tokens', ids, '--dim', '256', '--hidden', '768', '--layers', '4', '--heads', '8', '--kv-heads', '4', '--vocab', '512', '--ctx', String(ctx), '--batch', String(batch), '--threads', String(threads), '--bench', String(steps), '--bench-warmup', '0']);
    if (r.status !== 0) console.log(`PyTorch failed: ${r.stderr.split('\n').slice(-3).join(' ')}`);
    else {
      const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
      const tps = tokens / r.seconds;
      console.log(`PyTorch ${j.torch} CPU: ${r.seconds.toFixed(1)} s whole command, ${tps.toFixed(0)} tokens/s (${j.tokens_per_s.toFixed(0)} tokens/s in the loop)`);
      console.log(`ratio lowbit / PyTorch: ${(ours.tps / tps).toFixed(2)}x whole command, ${(ours.inner / j.tokens_per_s).toFixed(2)}x in the loop (goal >= 0.5x)`);
    }
  } else console.log('PyTorch: not available (apt-get install python3-torch failed)');
  if (args.includes('--precisions')) {
    for (const p of ['bf16', 'int8-block', 'switchback', 'fp8', 'fp4', 'quartet']) {
      const r = lowbit(p);
      console.log(`lowbit train ${p}: ${r.inner.toFixed(0)} tokens/s in the loop, ${(ours.inner / r.inner).toFixed(2)}x the time of fp32`);
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}
