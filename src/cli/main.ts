/**
 * The `lowbit` command line. Bad input ends with one line on stderr and exit code 2.
 */
import { fail, LowbitError } from '../errors.js';
import { hasRelaxedSimd } from '../env.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import { installWasmQuantizers } from '../kernels/ggml-quant.js';
import { helpText, parseArgs, type Command } from './args.js';
import { commandNames, loadCommand, loadCommands } from './commands/index.js';
import { abortRun, beginRun, commitRun } from './files.js';

export async function main(argv: readonly string[]): Promise<number> {
  installWasmQuantizers(); // the WebAssembly quantizers into the GGML type-traits table (every command)
  const [name, ...rest] = argv;
  if (name === undefined) {
    // no command is a usage error: the usage goes to stderr, stdout stays empty
    process.stderr.write((await usage()) + '\n');
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write((await usage()) + '\n');
    return 0;
  }
  if (name === '--version') {
    process.stdout.write('lowbit 0.1.0\n');
    return 0;
  }
  try {
    const cmd = await loadCommand(name);
    if (!cmd) throw new LowbitError(`unknown command '${name}' (commands: ${commandNames.join(', ')})`);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(helpText(cmd) + '\n');
      return 0;
    }
    applyWasmEnv();
    const args = parseArgs(cmd, rest);
    beginRun();
    const rc = (await cmd.run(args)) ?? 0;
    // outputs appear only when the whole command succeeded (validate everything, then write)
    if (rc === 0) commitRun();
    else abortRun();
    return rc;
  } catch (e) {
    abortRun();
    if (e instanceof LowbitError) {
      process.stderr.write(`lowbit: ${oneLine(e.message)}\n`);
      return 2;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string' && typeof err.message === 'string' && /^E[A-Z]+$/.test(err.code)) {
      // file-system errors (ENOENT, EACCES, EISDIR, ...) are bad input too
      process.stderr.write(`lowbit: ${oneLine(err.message)}\n`);
      return 2;
    }
    if (process.env.LOWBIT_DEBUG) throw e;
    process.stderr.write(`lowbit: internal error: ${(e as Error)?.message ?? String(e)} (set LOWBIT_DEBUG=1 for a trace)\n`);
    return 1;
  }
}

/** An error as one line (messages may quote file contents with newlines); at most 2000 characters. */
function oneLine(message: string): string {
  const s = message.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return s.length > 2000 ? `${s.slice(0, 2000)}...` : s;
}

/** LOWBIT_WASM=off|simd|relaxed forces the scalar references or one WebAssembly build (default: auto). */
function applyWasmEnv(): void {
  const v = process.env.LOWBIT_WASM;
  if (v === undefined || v === '' || v === 'auto') return;
  if (v !== 'off' && v !== 'simd' && v !== 'relaxed') fail(`LOWBIT_WASM=${v}: expected off, simd, relaxed or auto`);
  if (v === 'relaxed' && !hasRelaxedSimd()) fail('LOWBIT_WASM=relaxed: this engine has no relaxed SIMD');
  setWasmVariant(v as WasmVariant);
}

async function usage(): Promise<string> {
  const commands = await loadCommands();
  const w = Math.max(...commands.map((c: Command) => c.name.length));
  return ['usage: lowbit <command> [options]   (lowbit <command> --help for its options)', '', 'commands:', ...commands.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`)].join('\n');
}
