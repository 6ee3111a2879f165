/**
 * `npm run bench -- <suite> [args]`: runs bench/<suite>.js (each suite exports `run(args)`), or every
 * suite when none is named. Benchmarks print the anchor measured side by side in the same run and the
 * ratio, because absolute times on shared machines mean little.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const here = path.dirname(fileURLToPath(import.meta.url));
const suites = fs.readdirSync(here).filter((f) => f.endsWith('.js') && f !== 'run.js' && !f.startsWith('_')).map((f) => f.slice(0, -3)).sort();
const [name, ...rest] = process.argv.slice(2);
const chosen = name ? [name] : suites;
for (const s of chosen) {
  if (!suites.includes(s)) {
    console.error(`unknown benchmark '${s}' (suites: ${suites.join(', ')})`);
    process.exit(2);
  }
  const mod = (await import(path.join(here, `${s}.js`))) as { run(args: string[]): Promise<void> };
  console.log(`== bench ${s}`);
  await mod.run(rest);
}
