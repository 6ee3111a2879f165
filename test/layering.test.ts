/**
 * The core (formats, quant, kernels, algos, model, io, eval) must run in browsers: no node: imports,
 * no `process`, and layers import downward only (STYLE.md).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');
const ORDER = ['formats', 'quant', 'kernels', 'algos', 'alloc', 'model', 'train', 'io', 'eval', 'pipeline', 'audit'];
const CORE = new Set(ORDER);
/** what the calibration passes (src/pipeline/passes/) may import from the rest of pipeline/ */
const PASS_DEPS = ['algorithms', 'plan', 'gptq-parts', 'block-round', 'embedding-fisher', 'model-round', 'omniquant', 'spinquant'];

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

test('core modules never import node: modules or use process, and import downward only', () => {
  const problems: string[] = [];
  for (const file of walk(src)) {
    const rel = path.relative(src, file);
    const layer = rel.split(path.sep)[0];
    if (!CORE.has(layer)) continue;
    const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    if (/from\s+['"](node:|fs['"]|path['"])/.test(text) || /import\(\s*['"]node:/.test(text)) problems.push(`${rel}: imports a node: module`);
    if (/\bprocess\.(env|argv|stdout|stderr|exit|cwd)/.test(text)) problems.push(`${rel}: uses process`);
    for (const m of text.matchAll(/from\s+['"](\.\.?\/[^'"]+)['"]/g)) {
      const target = path.relative(src, path.resolve(path.dirname(file), m[1]));
      const tLayer = target.split(path.sep)[0];
      if (CORE.has(tLayer) && ORDER.indexOf(tLayer) > ORDER.indexOf(layer)) problems.push(`${rel}: imports ${target} from a higher layer`);
      if (tLayer === 'cli' || tLayer === 'lab') problems.push(`${rel}: imports ${target}`);
      // model/kv (the packed KV cache) sits under the forward pass: the runtime plugs it in, never the reverse
      if (rel.startsWith(`model${path.sep}kv${path.sep}`) && tLayer === 'model' && !target.startsWith(`model${path.sep}kv${path.sep}`) && /^model.(llama|family|sampler|tokenizer|bpe)/.test(target)) problems.push(`${rel}: imports ${target} (model/kv is below the forward pass)`);
      // pipeline/passes (the calibration passes runPtq runs) sit below the driver and the verb: from the rest of
      // pipeline they import only the algorithm table, the plan and the algorithms' own modules
      if (rel.startsWith(`pipeline${path.sep}passes${path.sep}`) && tLayer === 'pipeline' && !target.startsWith(`pipeline${path.sep}passes${path.sep}`) && !PASS_DEPS.includes(path.basename(target, '.js')))
        problems.push(`${rel}: imports ${target} (pipeline/passes is below the driver and the writers)`);
      // io/onnx (ONNX files and their quantizers) sits on top of io: the rest of io never imports it
      if (rel.startsWith(`io${path.sep}`) && !rel.startsWith(`io${path.sep}onnx${path.sep}`) && target.startsWith(`io${path.sep}onnx${path.sep}`)) problems.push(`${rel}: imports ${target} (io/onnx is above the other readers)`);
    }
    // runtimes (onnxruntime-node/-web) are Node or browser packages: the core takes them as callbacks
    if (/from\s+['"]onnxruntime-/.test(text)) problems.push(`${rel}: imports an onnxruntime package`);
  }
  assert.deepEqual(problems, []);
});

test('the browser Lab (src/lab, the top layer beside cli) imports the core only, never node: or the CLI', () => {
  const problems: string[] = [];
  for (const file of walk(path.join(src, 'lab'))) {
    const rel = path.relative(src, file);
    const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    if (/from\s+['"](node:|fs['"]|path['"])/.test(text) || /import\(\s*['"]node:/.test(text)) problems.push(`${rel}: imports a node: module`);
    if (/\bprocess\./.test(text)) problems.push(`${rel}: uses process`);
    for (const m of text.matchAll(/from\s+['"](\.\.?\/[^'"]+)['"]/g)) {
      const target = path.relative(src, path.resolve(path.dirname(file), m[1]));
      const tLayer = target.split(path.sep)[0];
      if (tLayer === 'cli' || tLayer === 'node.ts' || tLayer === 'node.js') problems.push(`${rel}: imports ${target}`);
    }
  }
  assert.ok(walk(path.join(src, 'lab')).length >= 3, 'src/lab exists');
  assert.deepEqual(problems, []);
});

test('no import circles anywhere in src (type imports and re-exports included)', () => {
  const files = walk(src).map((f) => path.relative(src, f));
  const edges = new Map<string, string[]>();
  for (const rel of files) {
    const text = fs.readFileSync(path.join(src, rel), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    const targets = [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.\.?\/[^'"]+)\.js['"]/g)].map((m) => path.relative(src, path.resolve(path.dirname(path.join(src, rel)), m[1] + '.ts')));
    edges.set(rel, targets.filter((t) => files.includes(t)));
  }
  // Tarjan's strongly connected components: every component of more than one file is a circle
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const circles: string[] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (edges.get(v) ?? []).includes(v)) circles.push(scc.sort().join(' <-> '));
    }
  };
  for (const f of files) if (!idx.has(f)) visit(f);
  assert.deepEqual(circles, []);
});

// Registration is explicit (installWasmQuantizers(), the entry points call it): no module of src fills a
// table because it was imported. Statically: no import for side effects. At run time: a fresh process
// imports every module except the entry points (the library's index, the CLI's main and workers, the
// browser Lab) and finds no fast path in the GGML type-traits table or the scheme registry; after
// installWasmQuantizers() it finds them (so the check can fail).
const ENTRY = /^(index\.ts|cli[\\/]main\.ts|cli[\\/][\w-]*worker\.ts|lab[\\/].*)$/;

test('no module imports another for its side effects (registration is an explicit call)', () => {
  const problems: string[] = [];
  for (const file of walk(src)) {
    const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    for (const m of text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)) problems.push(`${path.relative(src, file)}: import '${m[1]}' (for its side effects)`);
  }
  assert.deepEqual(problems, []);
});

test('importing every module registers no fast path; installWasmQuantizers() installs them', () => {
  const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');
  const modules = walk(src)
    .map((f) => path.relative(src, f))
    .filter((rel) => !ENTRY.test(rel) && !rel.endsWith('.d.ts'))
    .map((rel) => pathToFileURL(path.join(dist, rel.replace(/\.ts$/, '.js'))).href);
  assert.ok(modules.length > 100, `${modules.length} modules`);
  const url = (rel: string) => JSON.stringify(pathToFileURL(path.join(dist, rel)).href);
  const script = `
    for (const m of ${JSON.stringify(modules)}) await import(m);
    const { ggmlTypeTraitsTable } = await import(${url('quant/ggml/registry.js')});
    const { schemes, fastPath } = await import(${url('quant/registry.js')});
    const { installWasmQuantizers } = await import(${url('kernels/ggml-quant.js')});
    const state = () => ({
      ggml: ggmlTypeTraitsTable().filter((r) => r.fast.quantize || r.fast.dequantize).map((r) => r.type.name),
      schemes: schemes().filter((s) => fastPath(s.id)).map((s) => s.id),
      codecs: ggmlTypeTraitsTable().filter((r) => r.fromFloat && !r.float).length,
    });
    const before = state();
    installWasmQuantizers();
    console.log(JSON.stringify({ before, after: state() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const { before, after } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { before: { ggml: string[]; schemes: string[]; codecs: number }; after: { ggml: string[]; schemes: string[] } };
  assert.deepEqual({ ggml: before.ggml, schemes: before.schemes }, { ggml: [], schemes: [] }, 'a module installed fast paths when imported');
  assert.ok(before.codecs >= 20, `the type-traits table holds its reference codecs without any registration call (${before.codecs})`);
  for (const t of ['Q4_0', 'Q8_0', 'Q4_K', 'Q6_K']) assert.ok(after.ggml.includes(t), `installWasmQuantizers() installs ${t}`);
  for (const s of ['mxfp4', 'mxfp8_e4m3', 'nvfp4']) assert.ok(after.schemes.includes(s), `installWasmQuantizers() installs ${s}`);
});
