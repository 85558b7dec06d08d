#!/usr/bin/env node
// Run the pinned @modelcontextprotocol/conformance CLI (under the pinned Node 22) against an MCP
// server URL and judge the result per scenario.
//
// Usage:
//   node conformance.mjs --url URL [--baseline FILE] [--out DIR] [--suite active|all|pending]
//                        [--scenario NAME] [--timeout-ms 240000] [--write-baseline FILE]
//   node conformance.mjs --modern --url URL [--requirements 2026-07-28 | --spec-version 2026-07-28
//                        [--suite S] | --scenario NAME] [--baseline FILE] ...
//
// Without --modern the stable line runs (`@modelcontextprotocol/conformance` 0.1.16, `server --suite
// active`). With --modern the 0.2.0-alpha line (npm alias `conformance-modern`) runs; by default with
// `--requirements 2026-07-28` (exactly the scenarios that revision requires, at its wire, plus the
// unscored extension/pending ones); `--spec-version V` instead filters the chosen --suite by version.
//
// Without --baseline every scenario must pass (no FAILURE check). With --baseline FILE (JSON, see
// baseline-everything.json) a scenario listed under "fail" may fail; a scenario listed under "pass" or
// not listed at all must pass. A "fail" scenario that passes is reported as XPASS (not an error).
// --write-baseline FILE records this run's pass/fail lists in that format.
//
// Prints one line per scenario:  `PASS name (p/f)`, `FAIL name (p/f): reason`, `XFAIL ...`, `XPASS ...`
// and finally `N passed, M failed` where M counts unexpected failures. Exit 0 iff M == 0
// (2 on usage or infrastructure errors, e.g. the CLI timed out or printed no summary).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from './lib/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
let args;
try {
  args = parseArgs(process.argv.slice(2), { flags: ['modern'] });
  if (!args.modern && args.requirements) throw new Error('--requirements needs --modern (0.1.16 has no requirement sets)');
  if (args.requirements && (args['spec-version'] || args.suite || args.scenario)) {
    throw new Error('--requirements replaces --suite/--spec-version/--scenario');
  }
  if (!args.url) throw new Error('--url is required');
  new URL(args.url); // eslint-disable-line no-new
} catch (e) {
  console.error(`usage error: ${e.message}`);
  process.exit(2);
}
const suite = args.suite ?? 'active';
const timeoutMs = Number(args['timeout-ms'] ?? 240000);
const outDir = resolve(args.out ?? mkdtempSync(join(tmpdir(), 'meshgate-conformance-')));

const nodeBin = join(here, 'node_modules', 'node', 'bin', 'node');
const cli = args.modern
  ? join(here, 'node_modules', 'conformance-modern', 'dist', 'index.js')
  : join(here, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const cliVersion = JSON.parse(readFileSync(join(dirname(dirname(cli)), 'package.json'), 'utf8')).version;
const requirements = args.modern && !args['spec-version'] && !args.suite && !args.scenario ? (args.requirements ?? '2026-07-28') : args.requirements;
for (const f of [nodeBin, cli]) {
  if (!existsSync(f)) {
    console.error(`missing ${f}: run \`npm ci\` in ${here}`);
    process.exit(2);
  }
}

const cliArgs = [cli, 'server', '--url', args.url, '-o', outDir];
if (requirements) cliArgs.push('--requirements', requirements);
else if (args.scenario) cliArgs.push('--scenario', args.scenario);
else cliArgs.push('--suite', suite);
if (args['spec-version'] && !requirements) cliArgs.push('--spec-version', args['spec-version']);

console.error(`# ${nodeBin} ${cliArgs.join(' ')}`);
const child = spawn(nodeBin, cliArgs, { cwd: outDir, stdio: ['ignore', 'pipe', 'pipe'] });
let stdout = '';
child.stdout.on('data', (d) => { stdout += d; });
child.stderr.on('data', (d) => process.stderr.write(d));
let timedOut = false;
const killer = setTimeout(() => {
  timedOut = true;
  child.kill('SIGKILL');
}, timeoutMs);
const cliCode = await new Promise((r) => child.on('close', (code) => r(code)));
clearTimeout(killer);
writeFileSync(join(outDir, 'conformance-stdout.txt'), stdout);
if (timedOut) {
  console.error(`conformance CLI timed out after ${timeoutMs} ms (output in ${outDir})`);
  console.log('0 passed, 1 failed');
  process.exit(2);
}

// Summary lines look like: "✓ tools-list: 1 passed, 0 failed" / "✗ ping: 0 passed, 1 failed".
const results = new Map();
for (const line of stdout.split('\n')) {
  const m = /^[✓✗]\s+([a-z0-9-]+):\s+(\d+) passed,\s+(\d+) failed/.exec(line.trim());
  if (m) results.set(m[1], { passed: Number(m[2]), failed: Number(m[3]) });
}
if (results.size === 0) {
  console.error(`conformance CLI (exit ${cliCode}) printed no scenario summary; see ${join(outDir, 'conformance-stdout.txt')}`);
  console.log('0 passed, 1 failed');
  process.exit(2);
}

// Failure reasons from results/<server-scenario-timestamp>/checks.json.
function reasonsFor(scenario) {
  const dirs = readdirSync(outDir).filter((d) => d.startsWith(`server-${scenario}-`) && /-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.test(d));
  const reasons = [];
  for (const d of dirs) {
    const f = join(outDir, d, 'checks.json');
    if (!existsSync(f)) continue;
    try {
      for (const c of JSON.parse(readFileSync(f, 'utf8'))) {
        if (c.status === 'FAILURE') reasons.push(`${c.id}: ${c.errorMessage ?? c.description}`);
      }
    } catch {
      /* ignore unreadable */
    }
  }
  return reasons.join('; ').replace(/\s+/g, ' ').slice(0, 400);
}

let baseline = null;
if (args.baseline) {
  baseline = JSON.parse(readFileSync(args.baseline, 'utf8'));
  baseline.fail = new Set(baseline.fail ?? []);
}

let ok = 0;
let bad = 0;
const passList = [];
const failList = [];
for (const [name, r] of results) {
  const passed = r.failed === 0;
  (passed ? passList : failList).push(name);
  const counts = `(${r.passed}/${r.failed})`;
  if (passed) {
    ok++;
    console.log(`${baseline?.fail.has(name) ? 'XPASS' : 'PASS'} ${name} ${counts}`);
  } else if (baseline?.fail.has(name)) {
    ok++;
    console.log(`XFAIL ${name} ${counts}: ${reasonsFor(name)}`);
  } else {
    bad++;
    console.log(`FAIL ${name} ${counts}: ${reasonsFor(name)}`);
  }
}
if (baseline) {
  for (const name of baseline.pass ?? []) {
    if (!results.has(name) && !args.scenario) {
      bad++;
      console.log(`FAIL ${name}: scenario did not run (expected to pass per baseline)`);
    }
  }
}
if (args['write-baseline']) {
  const doc = {
    description: `conformance ${cliVersion} ${requirements ? `--requirements ${requirements}` : `--suite ${suite}${args['spec-version'] ? ` --spec-version ${args['spec-version']}` : ''}`} results for ${args.url}`,
    generatedAt: new Date().toISOString(),
    pass: passList,
    fail: failList,
  };
  writeFileSync(args['write-baseline'], `${JSON.stringify(doc, null, 2)}\n`);
  console.error(`# wrote ${args['write-baseline']}`);
}
console.error(`# conformance CLI exit ${cliCode}; results in ${outDir}`);
console.log(`${ok} passed, ${bad} failed`);
process.exit(bad > 0 ? 1 : 0);
