#!/usr/bin/env node
// One official-SDK session held across hub replica failures: connects (Streamable HTTP) to URL,
// calls TOOL about ten times a second for SECONDS, and checks that the session survived: the
// same session id throughout, no 404 (session lost), and the last call succeeded. Calls that
// fail while a replica dies are counted, not fatal.
//
//   node cluster-client.mjs --url http://127.0.0.1:8080/mcp --tool mock__tool_1 --seconds 9
//
// Prints one `ok - NAME` (or `not ok - NAME: why`) line per check, `session kept <id> ok=N failed=M`
// (or `session lost: <reason>`), then `N passed, M failed`; exits 0 iff every check passed.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { parseArgs, sleep } from './lib/common.mjs';

const args = parseArgs(process.argv.slice(2));
if (!args.url || !args.tool) {
  console.error('usage: cluster-client.mjs --url URL --tool NAME [--seconds S]');
  process.exit(2);
}
const seconds = Number(args.seconds ?? 9);
const hard = setTimeout(() => {
  console.log('session lost: hard timeout');
  process.exit(1);
}, (seconds + 30) * 1000);

const transport = new StreamableHTTPClientTransport(new URL(args.url));
const client = new Client({ name: 'meshgate-cluster-client', version: '1.0.0' });
await client.connect(transport);
const sid = transport.sessionId;
let ok = 0;
let failed = 0;
let lost = null;
let lastOk = false;
const end = Date.now() + seconds * 1000;
while (Date.now() < end) {
  try {
    const r = await client.callTool({ name: args.tool, arguments: {} }, undefined, { timeout: 5000 });
    lastOk = !r.isError;
    if (lastOk) ok++;
    else failed++;
  } catch (e) {
    lastOk = false;
    failed++;
    const msg = String(e?.message ?? e);
    if (e?.code === 404 || /404|session not found|unknown or expired session/i.test(msg)) {
      lost = msg;
      break;
    }
  }
  if (transport.sessionId !== sid) {
    lost = `session id changed from ${sid} to ${transport.sessionId}`;
    break;
  }
  await sleep(100);
}
// One more call after the run: the session must still be there.
if (!lost) {
  try {
    const r = await client.callTool({ name: args.tool, arguments: {} }, undefined, { timeout: 5000 });
    lastOk = !r.isError;
  } catch (e) {
    lastOk = false;
    lost = `final call failed: ${e?.message ?? e}`;
  }
}
clearTimeout(hard);
await client.close().catch(() => {});
// One `ok - NAME` / `not ok - NAME: why` line per check, then `N passed, M failed`, so the Rust
// wrapper can assert the exact list of checks that passed (support::assert_checks).
const checks = [
  ['session id unchanged throughout', !(lost ?? '').startsWith('session id changed'), lost],
  ['no call answered 404 (session never lost)', !lost, lost],
  ['calls succeeded during the failovers', ok > 0, `ok=${ok} failed=${failed}`],
  ['final call after the run succeeded', !lost && lastOk, lost ?? 'last call failed'],
];
let passedChecks = 0;
for (const [name, good, why] of checks) {
  if (good) passedChecks++;
  console.log(good ? `ok - ${name}` : `not ok - ${name}: ${why}`);
}
console.log(`# calls ok=${ok} failed=${failed}`);
const bad = checks.length - passedChecks;
if (bad > 0) {
  console.log(`session lost: ${lost ?? 'last call failed'} ok=${ok} failed=${failed}`);
} else {
  console.log(`session kept ${sid} ok=${ok} failed=${failed}`);
}
console.log(`${passedChecks} passed, ${bad} failed`);
process.exit(bad > 0 ? 1 : 0);
