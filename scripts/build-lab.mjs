// Builds the browser Quantization Lab into lab/: bundles the compiled page and worker
// (dist/src/lab/app.js, worker.js) with esbuild into lab/build/, and copies the shipped model and
// texts into lab/data/. Run by `npm run build` after tsc; `npm run lab` serves the folder.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lab = path.join(root, 'lab');
const out = path.join(lab, 'build');
fs.mkdirSync(out, { recursive: true });
const result = await esbuild.build({
  entryPoints: { app: path.join(root, 'dist/src/lab/app.js'), worker: path.join(root, 'dist/src/lab/worker.js') },
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome113',
  minify: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
});
for (const [file, o] of Object.entries(result.metafile.outputs)) {
  for (const i of o.imports) if (i.path.startsWith('node:') || i.external) throw new Error(`${file}: the browser bundle imports ${i.path}`);
}
const data = path.join(lab, 'data');
fs.mkdirSync(data, { recursive: true });
for (const f of ['stories260K.gguf', 'tinystories-valid-head.txt', 'wikitext-2-test.raw']) {
  const src = path.join(root, 'data', f);
  const dst = path.join(data, f);
  if (!fs.existsSync(dst) || fs.statSync(dst).size !== fs.statSync(src).size) fs.copyFileSync(src, dst);
}
const kb = (f) => (fs.statSync(path.join(out, f)).size / 1024).toFixed(0);
console.log(`lab: build/app.js ${kb('app.js')} KiB, build/worker.js ${kb('worker.js')} KiB`);
