#!/usr/bin/env node
// Installs llama.cpp for comparisons (node-llama-cpp 3.22.1, pinned) into .cache/node-llama-cpp, with the
// CPU prebuilt binary of this platform only. It is not a dependency of lowbit: `npm install` would
// otherwise pull node-llama-cpp's optional GPU builds (~600 MB of CUDA/Vulkan binaries on linux-x64 and
// Windows), and a library user needs none of it. Tests, benchmarks and the golden generators load it
// through scripts/llama-tools.ts (importNodeLlamaCpp, llamaCppBundle), which also accept a
// node-llama-cpp installed in node_modules; when neither is there, the comparisons skip.
//
//   node scripts/setup-llama-cpp.mjs [--quiet] [--check]
//
// --check: exit 0 when installed, 1 when not (installs nothing). Set LOWBIT_LLAMA_CPP=0 to never install
// (npm test then skips the llama.cpp comparisons). Idempotent; only npm's registry is contacted.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const NODE_LLAMA_CPP_VERSION = '3.22.1';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const installDir = join(root, '.cache', 'node-llama-cpp');

/** node-llama-cpp's CPU prebuilt package for a platform/arch, or undefined when it ships none. */
export function prebuiltPackage(platform = process.platform, arch = process.arch) {
  const table = {
    'linux-x64': 'linux-x64',
    'linux-arm64': 'linux-arm64',
    'linux-arm': 'linux-armv7l',
    'darwin-arm64': 'mac-arm64-metal', // the only macOS arm64 build; loaded with gpu: false
    'darwin-x64': 'mac-x64',
    'win32-x64': 'win-x64',
    'win32-arm64': 'win-arm64',
  };
  const name = table[`${platform}-${arch}`];
  return name ? `@node-llama-cpp/${name}` : undefined;
}

function installed() {
  const pkg = join(installDir, 'node_modules', 'node-llama-cpp', 'package.json');
  if (!existsSync(pkg)) return false;
  try {
    return JSON.parse(readFileSync(pkg, 'utf8')).version === NODE_LLAMA_CPP_VERSION && existsSync(join(installDir, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle'));
  } catch {
    return false;
  }
}

/**
 * llama.cpp's source bundle inside node-llama-cpp (private install, else node_modules), installing
 * node-llama-cpp first when it is missing. Throws when it cannot be found.
 */
export function findLlamaCppBundle() {
  const candidates = () => [join(installDir, 'node_modules'), join(root, 'node_modules')].map((d) => join(d, 'node-llama-cpp', 'llama', 'gitRelease.bundle'));
  let found = candidates().find(existsSync);
  if (!found) {
    main([]);
    found = candidates().find(existsSync);
  }
  if (!found) throw new Error('cannot find llama.cpp\'s source bundle (node-llama-cpp/llama/gitRelease.bundle): run node scripts/setup-llama-cpp.mjs');
  return found;
}

function main(args) {
  const quiet = args.includes('--quiet');
  const say = (s) => quiet || console.error(`[llama.cpp] ${s}`);
  if (installed()) return 0;
  if (args.includes('--check')) return 1;
  if (process.env.LOWBIT_LLAMA_CPP === '0') {
    say('LOWBIT_LLAMA_CPP=0: not installing node-llama-cpp; llama.cpp comparisons will skip');
    return 0;
  }
  const plat = prebuiltPackage();
  if (!plat) say(`no node-llama-cpp prebuilt for ${process.platform}-${process.arch}: installing its source bundle only (llama.cpp tools can still be built)`);
  // a staging folder renamed into place: an interrupted install leaves no half-installed copy
  const stage = `${installDir}.tmp-${process.pid}`;
  const attempt = (deps) => {
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(stage, { recursive: true });
    writeFileSync(join(stage, 'package.json'), JSON.stringify({ name: 'lowbit-llama-cpp', private: true, dependencies: deps }, null, 2) + '\n');
    // omit=optional keeps node-llama-cpp's GPU builds out; the CPU build is named explicitly
    writeFileSync(join(stage, '.npmrc'), 'omit=optional\nfund=false\naudit=false\n');
    say(`installing ${Object.keys(deps).map((d) => `${d}@${deps[d]}`).join(' + ')} into ${installDir} (once)`);
    const npm = process.env.npm_execpath && /npm-cli\.js$/.test(process.env.npm_execpath) ? [process.execPath, [process.env.npm_execpath]] : [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];
    const r = spawnSync(npm[0], [...npm[1], 'install', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: stage,
      stdio: quiet ? 'ignore' : ['ignore', 'inherit', 'inherit'],
      shell: process.platform === 'win32' && npm[1].length === 0,
    });
    if (r.status === 0) return true;
    say(`npm install failed (${r.error?.message ?? `exit ${r.status}`})`);
    return false;
  };
  const base = { 'node-llama-cpp': NODE_LLAMA_CPP_VERSION };
  // without the prebuilt (none published for this platform, or unreachable) the source bundle still lets
  // scripts/build-llama-cpp.mjs build llama-quantize & co; only the node-llama-cpp loading tests skip
  const ok = (plat && attempt({ ...base, [plat]: NODE_LLAMA_CPP_VERSION })) || (plat && say('retrying without the prebuilt binary'), attempt(base));
  if (!ok) {
    rmSync(stage, { recursive: true, force: true });
    say('llama.cpp comparisons will skip');
    return 0;
  }
  rmSync(installDir, { recursive: true, force: true });
  mkdirSync(dirname(installDir), { recursive: true });
  renameSync(stage, installDir);
  say('done');
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
