#!/usr/bin/env node
// Start @modelcontextprotocol/server-everything (pinned) in Streamable HTTP mode on 127.0.0.1:PORT.
//
// Usage: node run-everything.mjs --port N [--timeout-ms 15000]
//   --port 0 picks a free port. Prints exactly one stdout line `LISTENING http://127.0.0.1:N/mcp` once
//   the port accepts connections (bounded wait); the server's own output goes to stderr.
//   Exits non-zero if the server does not come up in time or dies; forwards SIGINT/SIGTERM.
//
// How server-everything is run (read from its dist/index.js and dist/transports/streamableHttp.js):
//   CLI argument `streamableHttp` selects the transport, env var PORT picks the port (default 3001),
//   endpoint path /mcp. It calls app.listen(PORT) without a host, i.e. all interfaces; we preload
//   lib/bind-loopback.mjs so it binds 127.0.0.1 only.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, parseArgs, parsePort, waitForPort } from './lib/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = parseArgs(process.argv.slice(2));
let port = parsePort(args.port ?? '0');
const timeoutMs = Number(args['timeout-ms'] ?? 15000);
if (port === 0) port = await freePort();

const pinnedNode = join(here, 'node_modules', 'node', 'bin', 'node');
const nodeBin = existsSync(pinnedNode) ? pinnedNode : process.execPath;
const entry = join(here, 'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js');
const preload = join(here, 'lib', 'bind-loopback.mjs');

const child = spawn(nodeBin, ['--import', preload, entry, 'streamableHttp'], {
  env: { ...process.env, PORT: String(port) },
  stdio: ['ignore', 'pipe', 'pipe'],
});
child.stdout.pipe(process.stderr);
child.stderr.pipe(process.stderr);
let exited = false;
child.on('exit', (code, signal) => {
  exited = true;
  console.error(`[run-everything] server-everything exited (code ${code}, signal ${signal})`);
  process.exit(code === 0 || signal === 'SIGTERM' || signal === 'SIGINT' ? 0 : 1);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (!exited) child.kill(sig);
    setTimeout(() => { if (!exited) child.kill('SIGKILL'); process.exit(0); }, 3000).unref();
  });
}

try {
  await waitForPort(port, timeoutMs);
} catch (e) {
  console.error(`[run-everything] ${e.message}`);
  child.kill('SIGKILL');
  process.exit(1);
}
process.stdout.write(`LISTENING http://127.0.0.1:${port}/mcp\n`);
