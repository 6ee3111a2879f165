/*
 * Cross-origin isolation on static hosts that cannot set headers (e.g. GitHub Pages): this file is
 * both a page script and a service worker. On the page, when the document is not cross-origin
 * isolated, it registers itself as a service worker and reloads once; the worker then serves every
 * same-origin response with Cross-Origin-Opener-Policy: same-origin and
 * Cross-Origin-Embedder-Policy: require-corp, which shared-memory threads need. Where service
 * workers are unavailable (or the reload did not help) the Lab runs on one thread.
 * Hosts that can set headers should (see _headers); then this script does nothing.
 */
if (typeof window === 'undefined') {
  self.addEventListener('install', () => self.skipWaiting());
  self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));
  self.addEventListener('fetch', (e) => {
    const r = e.request;
    if (r.cache === 'only-if-cached' && r.mode !== 'same-origin') return;
    e.respondWith(
      fetch(r).then((res) => {
        if (res.status === 0) return res;
        const headers = new Headers(res.headers);
        headers.set('Cross-Origin-Opener-Policy', 'same-origin');
        headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
        headers.set('Cross-Origin-Resource-Policy', 'same-origin');
        return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
      }),
    );
  });
} else if (!window.crossOriginIsolated && window.isSecureContext && 'serviceWorker' in navigator && !/[?&]coi=0\b/.test(location.search)) {
  const key = 'lowbit-lab-coi-reload';
  if (!sessionStorage.getItem(key)) {
    navigator.serviceWorker.register(document.currentScript.src).then(
      (reg) => {
        if (!reg) return; // a browser that refuses service workers silently: one thread
        sessionStorage.setItem(key, '1');
        if (reg.active && !navigator.serviceWorker.controller) location.reload();
        else reg.addEventListener('updatefound', () => reg.installing?.addEventListener('statechange', (ev) => ev.target.state === 'activated' && location.reload()));
      },
      () => undefined,
    );
  }
}
