// Runs the compiled test files with node's built-in test runner.
// LOWBIT_TEST_FILTER=substring limits the run to matching files.
// First makes sure llama.cpp's CPU build for the comparisons is installed (scripts/setup-llama-cpp.mjs;
// LOWBIT_LLAMA_CPP=0 skips that, and the comparisons with it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const dir = path.join('dist', 'test');
const filter = process.env.LOWBIT_TEST_FILTER ?? '';
spawnSync(process.execPath, [path.join('scripts', 'setup-llama-cpp.mjs')], { stdio: 'inherit' });
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.test.js') && f.includes(filter)).sort().map((f) => path.join(dir, f));
const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', '--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
