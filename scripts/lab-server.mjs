// `npm run lab [-- --port P] [--host H]`: serves the Quantization Lab (lab/) on 127.0.0.1 with the
// cross-origin-isolation headers that shared-memory threads need, and prints the URL.
// Also used by the tests and `npm run bench -- lab` (startLabServer).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'lab');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.txt': 'text/plain; charset=utf-8',
  '.raw': 'text/plain; charset=utf-8',
  '.gguf': 'application/octet-stream',
};

/** Start the server; resolves with { url, close() }. isolate: false leaves out COOP/COEP (a plain static host). */
export function startLabServer({ port = 0, host = '127.0.0.1', isolate = true } = {}) {
  if (!fs.existsSync(path.join(root, 'build', 'app.js'))) throw new Error('the Lab is not built: run npm run build');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let rel = decodeURIComponent(url.pathname);
    if (rel.endsWith('/')) rel += 'index.html';
    const file = path.join(root, path.normalize(rel));
    const headers = {
      ...(isolate ? { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } : {}),
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
    };
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Content-Length': fs.statSync(file).size });
    if (req.method === 'HEAD') return res.end();
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve({ url: `http://${host}:${a.port}/`, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const port = Number(opt('--port') ?? 8260);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port ${opt('--port')}: not a port number`);
    process.exit(2);
  }
  try {
    const s = await startLabServer({ port, host: opt('--host') ?? '127.0.0.1' });
    console.log(`lowbit Quantization Lab: ${s.url}`);
    console.log('(Ctrl-C to stop)');
  } catch (e) {
    console.error(e.code === 'EADDRINUSE' ? `port ${port} is in use: choose another with --port P` : e.message);
    process.exit(2);
  }
}
