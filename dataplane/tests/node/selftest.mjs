#!/usr/bin/env node
// Self-test of the kit without the hub: starts fixture-server and server-everything on free loopback
// ports, then runs
//   1. conformance.mjs against fixture-server (every active scenario must pass),
//   2. conformance.mjs against server-everything with baseline-everything.json,
//   3. e2e-client.mjs --direct against each server.
// Prints `ok - step` / `not ok - step` and a final `N passed, M failed`; exit 1 on any failure.
// Bounded: each step has its own timeout, the whole run at most --timeout-ms (default 300000).
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from './lib/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const nodeBin = join(here, 'node_modules', 'node', 'bin', 'node');
const args = parseArgs(process.argv.slice(2));
const HARD_MS = Number(args['timeout-ms'] ?? 300000);
const children = [];
let passed = 0;
let failed = 0;

function done(code) {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code ?? (failed ? 1 : 0));
}
setTimeout(() => {
  console.log(`not ok - selftest exceeded ${HARD_MS} ms`);
  failed++;
  done(1);
}, HARD_MS);

/** Start a server script and resolve with the URL from its `LISTENING <url>` line. */
function startServer(script, extra = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(nodeBin, [join(here, script), '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${script}: no LISTENING line within 20 s`)), 20000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /^LISTENING (\S+)$/m.exec(buf);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    child.stderr.on('data', () => {}); // keep the pipe drained
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${script} exited early (code ${code})`));
    });
  });
}

/** Run a kit script; pass iff exit code 0. Its stdout is echoed with a `#` prefix. */
function step(name, script, scriptArgs, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(nodeBin, [join(here, script), ...scriptArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', () => {});
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      for (const line of out.trimEnd().split('\n')) console.log(`#   ${line}`);
      if (code === 0) {
        passed++;
        console.log(`ok - ${name}`);
      } else {
        failed++;
        console.log(`not ok - ${name}: exit ${code}${signal ? ` (${signal})` : ''}`);
      }
      resolve();
    });
  });
}

let fx;
let ev;
try {
  [fx, ev] = await Promise.all([startServer('fixture-server.mjs'), startServer('run-everything.mjs')]);
} catch (e) {
  console.log(`not ok - start servers: ${e.message}`);
  failed++;
  done(1);
}
console.log(`# fixture-server ${fx}, server-everything ${ev}`);
await step('conformance: fixture-server passes every active scenario', 'conformance.mjs', ['--url', fx], 120000);
await step('conformance: server-everything matches baseline-everything.json', 'conformance.mjs', ['--url', ev, '--baseline', join(here, 'baseline-everything.json')], 120000);
await step('e2e-client --direct against fixture-server', 'e2e-client.mjs', ['--url', fx, '--direct', '--fixture', ''], 70000);
await step('e2e-client --direct against server-everything', 'e2e-client.mjs', ['--url', ev, '--direct', '--everything', ''], 70000);
done();
