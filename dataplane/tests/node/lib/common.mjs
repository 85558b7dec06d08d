// Shared helpers for the meshgate Node test kit (plain ESM, no build step).
import net from 'node:net';

/** Parse `--key value` / `--flag` style arguments into an object. */
export function parseArgs(argv, { flags = [] } = {}) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      out._.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (flags.includes(a.slice(2))) {
      out[a.slice(2)] = true;
    } else {
      const v = argv[i + 1];
      if (v === undefined) throw new Error(`missing value for ${a}`);
      out[a.slice(2)] = v;
      i++;
    }
  }
  return out;
}

/** Parse a TCP port argument; 0 is allowed (pick a free port). */
export function parsePort(v, name = '--port') {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be an integer 0..65535, got ${v}`);
  return n;
}

/** Resolve once 127.0.0.1:port accepts a TCP connection; reject after timeoutMs. */
export async function waitForPort(port, timeoutMs, host = '127.0.0.1') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect({ port, host });
      const t = setTimeout(() => { s.destroy(); resolve(false); }, 500);
      s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
      s.once('error', () => { clearTimeout(t); resolve(false); });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${host}:${port} not accepting connections after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Ask the kernel for a free loopback port (small race window, fine for tests). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Race a promise against a timeout; the error names what timed out. */
export function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
