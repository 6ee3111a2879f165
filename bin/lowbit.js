#!/usr/bin/env node
// The lowbit command. V8 flags are set here, before any WebAssembly is compiled, so that
// `node bin/lowbit.js` works the same as the installed `lowbit` bin.
import v8 from 'node:v8';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
