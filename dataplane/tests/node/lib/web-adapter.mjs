// Serve a web-standard `fetch(Request) => Response` handler (the shape the TS SDK 2.x
// `createMcpHandler` returns) on node:http, bound to 127.0.0.1, with Host/Origin validation.
//
// - Host must name a loopback host (127.0.0.1, localhost, [::1]); Origin, when present, too.
//   Anything else gets 403 with an id-less JSON-RPC error (DNS-rebinding protection, spec
//   2025-11-25 "403 on bad Origin"; the conformance `dns-rebinding-protection` scenario).
// - The Request carries an AbortSignal that fires when the client goes away before the
//   response finished: for the 2026-07-28 era closing the response stream *is* cancellation.
// - Request bodies are capped (default 4 MiB) and read with a bounded wait.
import http from 'node:http';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

function hostnameOf(hostHeader) {
  if (!hostHeader) return null;
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return null;
  }
}

function originOk(origin) {
  try {
    return LOOPBACK.has(new URL(origin).hostname);
  } catch {
    return false;
  }
}

function readBody(req, limit, timeoutMs) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    const t = setTimeout(() => reject(new Error(`request body not complete after ${timeoutMs} ms`)), timeoutMs);
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        clearTimeout(t);
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => { clearTimeout(t); resolve(Buffer.concat(chunks)); });
    req.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

function jsonError(res, status, message) {
  if (res.headersSent) return res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

/**
 * Start serving `handler` on 127.0.0.1:port at `path`. Resolves with the node http.Server once
 * listening. `log` receives one-line diagnostics.
 */
export function serveFetchHandler(handler, { port, path = '/mcp', log = () => {}, bodyLimit = 4 * 1024 * 1024 }) {
  const server = http.createServer(async (req, res) => {
    const ac = new AbortController();
    res.on('close', () => { if (!res.writableFinished) ac.abort(new Error('client closed the response stream')); });
    try {
      const host = hostnameOf(req.headers.host);
      if (!host || !LOOPBACK.has(host)) return jsonError(res, 403, `Forbidden Host: ${req.headers.host}`);
      if (req.headers.origin !== undefined && !originOk(req.headers.origin)) {
        return jsonError(res, 403, `Forbidden Origin: ${req.headers.origin}`);
      }
      const url = new URL(req.url, `http://${req.headers.host}`);
      if (url.pathname !== path) return jsonError(res, 404, `Not Found: ${url.pathname}`);
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) {
        if (Array.isArray(v)) for (const x of v) headers.append(k, x);
        else if (v !== undefined) headers.set(k, v);
      }
      const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'DELETE';
      const body = hasBody ? await readBody(req, bodyLimit, 30000) : undefined;
      const request = new Request(url, { method: req.method, headers, body, signal: ac.signal });
      const response = await handler.fetch(request);
      const outHeaders = {};
      response.headers.forEach((v, k) => { outHeaders[k] = v; });
      res.writeHead(response.status, outHeaders);
      if (!response.body) return res.end();
      const reader = response.body.getReader();
      ac.signal.addEventListener('abort', () => { reader.cancel().catch(() => {}); }, { once: true });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (!res.write(value)) await new Promise((r) => { res.once('drain', r); res.once('close', r); });
        if (ac.signal.aborted) break;
      }
      res.end();
    } catch (e) {
      if (ac.signal.aborted) return;
      log(`request failed: ${e?.message ?? e}`);
      jsonError(res, e?.status ?? 500, e?.status === 413 ? 'Request body too large' : 'Internal server error');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** Exit cleanly on SIGINT/SIGTERM: close the listener, force-exit after 2 s. */
export function exitOnSignals(server, onClose = async () => {}) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      setTimeout(() => process.exit(0), 2000).unref();
      Promise.resolve(onClose()).catch(() => {}).finally(() => {
        server.closeAllConnections?.();
        server.close(() => process.exit(0));
      });
    });
  }
}
