#!/usr/bin/env node
// Official-SDK client checks against a meshgate-edge surface (serve-local).
//
//   node edge-client.mjs --kit dataplane/tests/node --base http://127.0.0.1:PORT
//
// Checks /mcp/everything (server-everything over stdio, shared mode): tools/list, echo, progress of
// a long-running operation, a sampling request answered by this client, two concurrent sessions
// getting their own results; and /mcp/device: the device tools and a bad-argument tool error.
// Output: `ok - name` / `not ok - name: reason`, then exactly `N passed, M failed`. Exit 1 on any
// failure. The whole run is bounded by --timeout-ms (default 90000); every request by 20 s.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
if (!args.kit || !args.base) {
  console.error('usage: edge-client.mjs --kit DIR --base URL');
  process.exit(2);
}
const sdk = (p) => import(pathToFileURL(path.resolve(args.kit, 'node_modules/@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { CreateMessageRequestSchema } = await sdk('types.js');

const HARD_MS = Number(args['timeout-ms'] ?? 90000);
const REQ = { timeout: 20000 };
let passed = 0;
let failed = 0;
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}
setTimeout(() => {
  console.log(`not ok - hard timeout: run exceeded ${HARD_MS} ms`);
  failed++;
  finish();
}, HARD_MS).unref();

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
    passed++;
  } catch (e) {
    console.log(`not ok - ${name}: ${e?.stack ?? e}`);
    failed++;
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function connect(server, { sampling = false } = {}) {
  const client = new Client(
    { name: 'edge-test', version: '1.0.0' },
    { capabilities: sampling ? { sampling: {} } : {} },
  );
  if (sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
      role: 'assistant',
      content: { type: 'text', text: `canned reply to ${req.params.messages.length} message(s)` },
      model: 'edge-test-model',
      stopReason: 'endTurn',
    }));
  }
  const transport = new StreamableHTTPClientTransport(new URL(`${args.base}/mcp/${server}`));
  await client.connect(transport, REQ);
  return { client, transport };
}
const text = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

// --- everything (shared stdio) ---
const ev = await connect('everything', { sampling: true });
await check('everything: session id minted by the agent (>= 128 bits hex)', async () => {
  assert(/^[0-9a-f]{32,}$/.test(ev.transport.sessionId ?? ''), `session id ${ev.transport.sessionId}`);
});
await check('everything: tools/list', async () => {
  const { tools } = await ev.client.listTools(undefined, REQ);
  const names = tools.map((t) => t.name);
  for (const n of ['echo', 'trigger-long-running-operation', 'trigger-sampling-request']) {
    assert(names.includes(n), `missing ${n} in ${names.join(',')}`);
  }
});
await check('everything: echo', async () => {
  const r = await ev.client.callTool({ name: 'echo', arguments: { message: 'hello edge' } }, undefined, REQ);
  assert(text(r).includes('hello edge'), `echo said ${text(r)}`);
});
await check('everything: progress notifications reach the caller', async () => {
  const seen = [];
  const r = await ev.client.callTool(
    { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } },
    undefined,
    { ...REQ, onprogress: (p) => seen.push(p.progress) },
  );
  assert(text(r).includes('completed'), `result ${text(r)}`);
  assert(seen.length === 3, `progress seen: ${JSON.stringify(seen)}`);
});
await check('everything: sampling request answered by this client', async () => {
  const r = await ev.client.callTool(
    { name: 'trigger-sampling-request', arguments: { prompt: 'hi', maxTokens: 10 } },
    undefined,
    REQ,
  );
  assert(text(r).includes('canned reply'), `result ${text(r)}`);
});
await check('everything: two concurrent sessions get their own results', async () => {
  const other = await connect('everything');
  try {
    const jobs = [];
    for (let i = 0; i < 10; i++) {
      for (const [who, c] of [['A', ev.client], ['B', other.client]]) {
        jobs.push(
          c.callTool({ name: 'echo', arguments: { message: `${who}-${i}` } }, undefined, REQ).then((r) => {
            assert(text(r) === `Echo: ${who}-${i}`, `${who}-${i} got ${text(r)}`);
          }),
        );
      }
    }
    const progA = [];
    const progB = [];
    jobs.push(
      ev.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 2 } }, undefined, {
        ...REQ,
        onprogress: (p) => progA.push(p.progress),
      }),
    );
    jobs.push(
      other.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 4 } }, undefined, {
        ...REQ,
        onprogress: (p) => progB.push(p.progress),
      }),
    );
    await Promise.all(jobs);
    assert(progA.length === 2 && progB.length === 4, `progress A=${progA} B=${progB}`);
  } finally {
    await other.transport.terminateSession().catch(() => {});
    await other.client.close();
  }
});
await check('everything: DELETE ends the session', async () => {
  await ev.transport.terminateSession();
  await ev.client.close();
});

// --- device (built-in) ---
const dev = await connect('device');
await check('device: tools/list has annotated read-only tools with strict schemas', async () => {
  const { tools } = await dev.client.listTools(undefined, REQ);
  const names = tools.map((t) => t.name).sort();
  assert(
    JSON.stringify(names) === JSON.stringify(['cpu', 'disk', 'load', 'memory', 'network_interfaces', 'temperatures']),
    `tools ${names}`,
  );
  for (const t of tools) {
    assert(t.description && t.description.length > 20, `${t.name} description`);
    assert(t.inputSchema.type === 'object' && t.inputSchema.additionalProperties === false, `${t.name} schema`);
    assert(t.annotations?.readOnlyHint === true && t.annotations?.idempotentHint === true, `${t.name} annotations`);
  }
});
await check('device: cpu', async () => {
  const r = await dev.client.callTool({ name: 'cpu', arguments: { sample_ms: 100 } }, undefined, REQ);
  const s = r.structuredContent;
  assert(s.cores >= 1 && s.usage_percent >= 0 && s.usage_percent <= 100 && typeof s.model === 'string', JSON.stringify(s));
});
await check('device: memory', async () => {
  const s = (await dev.client.callTool({ name: 'memory', arguments: {} }, undefined, REQ)).structuredContent;
  assert(s.total > 0 && s.available <= s.total, JSON.stringify(s));
});
await check('device: disk with path', async () => {
  const s = (await dev.client.callTool({ name: 'disk', arguments: { path: '/' } }, undefined, REQ)).structuredContent;
  assert(s.filesystems.length === 1 && s.filesystems[0].total_bytes > 0, JSON.stringify(s));
});
await check('device: load', async () => {
  const s = (await dev.client.callTool({ name: 'load', arguments: {} }, undefined, REQ)).structuredContent;
  assert(s.load1 >= 0 && s.uptime_seconds > 0, JSON.stringify(s));
});
await check('device: network_interfaces', async () => {
  const s = (await dev.client.callTool({ name: 'network_interfaces', arguments: {} }, undefined, REQ)).structuredContent;
  assert(s.interfaces.some((i) => i.name === 'lo'), JSON.stringify(s));
});
await check('device: temperatures (possibly empty)', async () => {
  const s = (await dev.client.callTool({ name: 'temperatures', arguments: {} }, undefined, REQ)).structuredContent;
  assert(Array.isArray(s.sensors), JSON.stringify(s));
});
await check('device: bad argument is a tool error', async () => {
  const r = await dev.client.callTool({ name: 'cpu', arguments: { sample_ms: 'fast' } }, undefined, REQ);
  assert(r.isError === true && text(r).includes('sample_ms'), JSON.stringify(r));
});
await dev.transport.terminateSession().catch(() => {});
await dev.client.close();
finish();
