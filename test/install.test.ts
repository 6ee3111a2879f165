/**
 * Install anywhere (issue 12 part 5):
 *  - the lockfile selects esbuild's and TypeScript's binaries for each of macOS arm64/x64, Windows x64,
 *    Linux x64/arm64 (npm's own --os/--cpu selection, dry run on a temp copy), nothing in it is pinned
 *    to one platform, and llama.cpp (node-llama-cpp with its GPU builds) is not a dependency;
 *  - a library user: `npm pack`, `npm install lowbit.tgz` in an empty project installs lowbit alone
 *    (no compiler, bundler, llama.cpp or browser driver) and `import { quantize } from 'lowbit'` works.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../scripts/llama-tools.js';

const npm = (args: string[], cwd: string) =>
  spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20, shell: process.platform === 'win32' });

interface LockEntry {
  version?: string;
  os?: string[];
  cpu?: string[];
  optional?: boolean;
  dev?: boolean;
}
const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string>; dependencies?: Record<string, string>; files?: string[] };

const TARGETS: [os: string, cpu: string][] = [
  ['darwin', 'arm64'],
  ['darwin', 'x64'],
  ['win32', 'x64'],
  ['linux', 'arm64'],
  ['linux', 'x64'],
];
const fits = (list: string[] | undefined, v: string) => !list || (list.some((x) => !x.startsWith('!')) ? list.includes(v) : !list.includes(`!${v}`));

test('install: no package pinned to a platform we support, no optional dependencies switched off, no llama.cpp dependency', () => {
  const npmrc = fs.existsSync(path.join(ROOT, '.npmrc')) ? fs.readFileSync(path.join(ROOT, '.npmrc'), 'utf8') : '';
  assert.doesNotMatch(npmrc.replace(/#.*$/gm, ''), /omit\s*=\s*optional/, '.npmrc omits optional dependencies: esbuild/TypeScript get no binary');
  const deps = { ...pkg.dependencies, ...pkg.devDependencies };
  for (const name of Object.keys(deps)) assert.doesNotMatch(name, /^(@esbuild|@typescript\/typescript-|@node-llama-cpp)\/?|^node-llama-cpp$/, `package.json pins ${name}`);
  for (const [key, e] of Object.entries(lock.packages)) {
    if (!key) continue;
    assert.ok(!/node-llama-cpp/.test(key), `${key} in the lockfile: llama.cpp must not be installed by npm install`);
    if (!e.optional) for (const [o, c] of TARGETS) assert.ok(fits(e.os, o) && fits(e.cpu, c), `${key} is restricted to ${e.os ?? '*'}/${e.cpu ?? '*'} but not optional: npm install fails on ${o}/${c}`);
  }
  // each target finds exactly one binary package of esbuild and of TypeScript in the lockfile
  for (const [o, c] of TARGETS) {
    for (const prefix of ['node_modules/@esbuild/', 'node_modules/@typescript/typescript-']) {
      const hits = Object.entries(lock.packages).filter(([k, e]) => k.startsWith(prefix) && fits(e.os, o) && fits(e.cpu, c));
      assert.equal(hits.length, 1, `${o}/${c}: ${prefix}* candidates ${hits.map(([k]) => k).join(', ') || 'none'}`);
    }
  }
});

test('install: code reaches node-llama-cpp only through scripts/llama-tools (it is not a dependency)', () => {
  const offenders: string[] = [];
  for (const dir of ['src', 'test', 'bench', 'scripts', 'tools']) {
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.(ts|mjs|js)$/.test(e.name) && !p.endsWith(path.join('test', 'install.test.ts'))) {
          if (/import\(\s*['"]node-llama-cpp['"]\s*\)|from\s+['"]node-llama-cpp['"]|require\(\s*['"]node-llama-cpp['"]/.test(fs.readFileSync(p, 'utf8'))) offenders.push(path.relative(ROOT, p));
        }
      }
    };
    if (fs.existsSync(path.join(ROOT, dir))) walk(path.join(ROOT, dir));
  }
  assert.deepEqual(offenders, [], 'import node-llama-cpp with loadLlamaCpp()/importNodeLlamaCpp() from scripts/llama-tools.ts');
});

test('install: npm selects the platform packages of macOS arm64/x64, Windows x64, Linux arm64/x64', { timeout: 300_000 }, (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-install-'));
  try {
    for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (fs.existsSync(path.join(ROOT, f))) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
    for (const [o, c] of TARGETS) {
      const r = npm(['install', '--dry-run', `--os=${o}`, `--cpu=${c}`, '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], dir);
      if (r.status !== 0 && /ENOTCACHED|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT/.test(r.stderr)) {
        t.skip(`npm registry unreachable: ${r.stderr.split('\n').find((l) => /E[A-Z]+/.test(l))}`);
        return;
      }
      assert.equal(r.status, 0, `npm install --os=${o} --cpu=${c}: ${r.stderr}`);
      const added = [...r.stdout.matchAll(/^add (\S+) /gm)].map((m) => m[1]);
      const platform = added.filter((n) => /^@esbuild\/|^@typescript\/typescript-|^@node-llama-cpp\//.test(n)).sort();
      const esOs = o === 'win32' ? 'win32' : o;
      assert.deepEqual(platform, [`@esbuild/${esOs}-${c}`, `@typescript/typescript-${o}-${c}`], `${o}/${c} selects ${platform.join(', ')}`);
      assert.ok(!added.some((n) => /llama|cuda|vulkan/.test(n)), `${o}/${c} installs ${added.filter((n) => /llama|cuda|vulkan/.test(n))}`);
      t.diagnostic(`${o}/${c}: ${added.length} packages, ${platform.join(' + ')}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('install: a library user gets lowbit alone from npm pack, and import { quantize } from "lowbit" works', { timeout: 300_000 }, () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'src', 'index.js')), 'build first (npm run build)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-pack-'));
  try {
    // dist/ is already built by `npm test`; --ignore-scripts skips prepack's rebuild under running tests
    const p = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT);
    assert.equal(p.status, 0, p.stderr);
    const info = JSON.parse(p.stdout) as { filename: string; files: { path: string }[] }[];
    const files = info[0].files.map((f) => f.path);
    assert.ok(files.includes('dist/src/index.js') && files.includes('bin/lowbit.js'), 'the package holds the compiled library and the CLI');
    for (const f of files) assert.doesNotMatch(f, /^(test|bench|scripts|tools|wasm|src)\/|^dist\/(test|bench|scripts)\//, `${f} is shipped`);
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
    const i = npm(['install', '--offline', '--no-audit', '--no-fund', path.join(dir, info[0].filename)], app);
    assert.equal(i.status, 0, i.stderr);
    const installed = fs.readdirSync(path.join(app, 'node_modules')).filter((n) => !n.startsWith('.'));
    assert.deepEqual(installed, ['lowbit'], `a library install brings ${installed.join(', ')}`);
    const script = [
      "import { quantize, llamaRecipe, openModelFile, bytesSource, memorySink, readGguf } from 'lowbit';",
      "import { readFileSync } from 'node:fs';",
      "import { createRequire } from 'node:module';",
      "const dataDir = new URL('./node_modules/lowbit/data/', import.meta.url);",
      "const m = await openModelFile(bytesSource(new Uint8Array(readFileSync(new URL('stories260K.gguf', dataDir))), 'm.gguf'));",
      'const sink = memorySink();',
      "const r = await quantize(m, llamaRecipe('Q8_0'), sink);",
      "const g = await readGguf(bytesSource(sink.bytes(), 'q.gguf'));",
      "for (const n of ['esbuild', 'typescript', 'node-llama-cpp', 'playwright-core', 'assemblyscript']) { try { createRequire(import.meta.url).resolve(n); console.log('FOUND ' + n); } catch {} }",
      "console.log(JSON.stringify({ bpw: r.bitsPerWeight, tensors: g.tensors.length, q: g.tensors.find((t) => t.name === 'blk.0.attn_q.weight').type.name }));",
    ].join('\n');
    fs.writeFileSync(path.join(app, 'main.mjs'), script);
    const run = spawnSync(process.execPath, ['main.mjs'], { cwd: app, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.doesNotMatch(run.stdout, /FOUND/, 'a development tool is resolvable from the library install');
    const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { bpw: number; tensors: number; q: string };
    assert.ok(out.bpw > 8 && out.bpw < 16 && out.tensors === 48, JSON.stringify(out));
    assert.equal(out.q, 'Q8_0');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
