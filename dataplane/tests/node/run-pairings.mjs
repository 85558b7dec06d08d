#!/usr/bin/env node
// Direct pairing baseline (issue 10): starts server-everything (legacy) and the Python mcp 2.x
// modern-only server on free loopback ports, runs every pairing client in every mode directly against
// both, and compares each check's outcome with baseline-pairings.json, exactly: a check that should
// pass must pass and a check recorded as failing (a pairing that needs a translating hub) must still
// fail, so the baseline cannot silently drift either way.
//
// Usage: node run-pairings.mjs [--baseline baseline-pairings.json] [--write-baseline FILE]
//                              [--timeout-ms 400000]
// Needs `npm ci` here and the Python venv (created with ../python/bootstrap.sh if missing).
// Prints `ok - <client>/<mode> -> <target>: <k> checks as recorded` or `not ok - ...: what differs`,
// then exactly `N passed, M failed`. Exit 1 on any difference, 2 on infrastructure errors.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from './lib/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const nodeBin = join(here, 'node_modules', 'node', 'bin', 'node');
const pyDir = join(here, '..', 'python');
const args = parseArgs(process.argv.slice(2));
const HARD_MS = Number(args['timeout-ms'] ?? 400000);
const baselinePath = args.baseline ?? join(here, 'baseline-pairings.json');
const children = [];
let passed = 0;
let failed = 0;

function done(code) {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code ?? (failed ? 1 : 0));
}
setTimeout(() => {
  console.log(`not ok - run-pairings exceeded ${HARD_MS} ms`);
  failed++;
  done(1);
}, HARD_MS).unref();

if (!existsSync(nodeBin)) {
  console.error(`missing ${nodeBin}: run npm ci in ${here}`);
  process.exit(2);
}
const boot = spawnSync('bash', [join(pyDir, 'bootstrap.sh')], { encoding: 'utf8', timeout: 300000 });
if (boot.status !== 0) {
  console.error(`python bootstrap failed: ${boot.stderr}`);
  process.exit(2);
}
const python = boot.stdout.trim().split('\n').pop();

function startServer(cmd, argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${argv.join(' ')}: no LISTENING line within 30 s`)), 30000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /^LISTENING (\S+)$/m.exec(buf);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    child.stderr.on('data', () => {});
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`${argv.join(' ')} exited early (${code})`)); });
  });
}

function runClient(cmd, argv, timeoutMs = 90000) {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', () => {});
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      const checks = {};
      for (const line of out.split('\n')) {
        const m = /^(ok|not ok) - ([a-z -]+?)(?::|$)/.exec(line);
        if (m) checks[m[2]] = m[1] === 'ok';
      }
      const summary = /^(\d+) passed, (\d+) failed$/m.exec(out);
      resolve({ code, checks, summary: summary ? summary[0] : null, out });
    });
  });
}

let urls;
try {
  const [ev, py] = await Promise.all([
    startServer(nodeBin, [join(here, 'run-everything.mjs'), '--port', '0']),
    startServer(python, [join(pyDir, 'modern_server.py'), '--port', '0']),
  ]);
  urls = { everything: ev, 'py-modern': py };
} catch (e) {
  console.error(`server start failed: ${e.message}`);
  done(2);
}

const CLIENTS = [
  { client: 'ts1', mode: 'legacy', cmd: nodeBin, argv: (u, t) => [join(here, 'pairing-client.mjs'), '--sdk', 'ts1', '--url', u, '--target', t] },
  { client: 'ts2', mode: 'pin', cmd: nodeBin, argv: (u, t) => [join(here, 'pairing-client.mjs'), '--sdk', 'ts2', '--mode', 'pin', '--url', u, '--target', t] },
  { client: 'ts2', mode: 'auto', cmd: nodeBin, argv: (u, t) => [join(here, 'pairing-client.mjs'), '--sdk', 'ts2', '--mode', 'auto', '--url', u, '--target', t] },
  { client: 'py', mode: 'legacy', cmd: python, argv: (u, t) => [join(pyDir, 'pairing_client.py'), '--mode', 'legacy', '--url', u, '--target', t] },
  { client: 'py', mode: '2026-07-28', cmd: python, argv: (u, t) => [join(pyDir, 'pairing_client.py'), '--mode', '2026-07-28', '--url', u, '--target', t] },
  { client: 'py', mode: 'auto', cmd: python, argv: (u, t) => [join(pyDir, 'pairing_client.py'), '--mode', 'auto', '--url', u, '--target', t] },
];

const baseline = args['write-baseline'] ? null : JSON.parse(readFileSync(baselinePath, 'utf8'));
const recorded = [];
for (const c of CLIENTS) {
  for (const target of ['everything', 'py-modern']) {
    const key = `${c.client}/${c.mode} -> ${target}`;
    const r = await runClient(c.cmd, c.argv(urls[target], target));
    const pass = Object.keys(r.checks).filter((k) => r.checks[k]);
    const fail = Object.keys(r.checks).filter((k) => !r.checks[k]);
    recorded.push({ client: c.client, mode: c.mode, target, pass, fail });
    if (!baseline) { console.log(`# ${key}: ${pass.length} pass, ${fail.length} fail`); continue; }
    const want = baseline.runs.find((x) => x.client === c.client && x.mode === c.mode && x.target === target);
    if (!want) { failed++; console.log(`not ok - ${key}: not in the baseline`); continue; }
    const diffs = [];
    for (const k of want.pass) if (r.checks[k] !== true) diffs.push(`${k} should pass`);
    for (const k of want.fail) if (r.checks[k] !== false) diffs.push(`${k} should fail (recorded as needing the hub)`);
    const expectedSummary = `${want.pass.length} passed, ${want.fail.length} failed`;
    if (r.summary !== expectedSummary) diffs.push(`summary ${JSON.stringify(r.summary)} != ${JSON.stringify(expectedSummary)}`);
    if (diffs.length === 0) {
      passed++;
      console.log(`ok - ${key}: ${want.pass.length} pass, ${want.fail.length} fail as recorded`);
    } else {
      failed++;
      console.log(`not ok - ${key}: ${diffs.join('; ')}`);
      for (const line of r.out.trimEnd().split('\n')) console.log(`#   ${line}`);
    }
  }
}
if (args['write-baseline']) {
  writeFileSync(args['write-baseline'], `${JSON.stringify({ runs: recorded }, null, 2)}\n`);
  console.error(`# wrote ${args['write-baseline']}`);
}
done();
