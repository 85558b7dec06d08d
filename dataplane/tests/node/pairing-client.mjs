#!/usr/bin/env node
// Pairing client for issue 10 ("both eras of official SDK clients against both eras of official
// servers"), Node side: the TS SDK 1.x client (`@modelcontextprotocol/sdk` 1.32.2, legacy era) or the
// TS SDK 2.x client (`@modelcontextprotocol/client` 2.4.0, modern era by default).
//
// Usage:
//   node pairing-client.mjs --sdk ts1|ts2 --url URL --target everything|py-modern
//                           [--mode legacy|auto|pin] [--timeout-ms 60000] [--wire]
//   --sdk ts1: always legacy (initialize + session). --sdk ts2: --mode pin (default: modern era pinned
//     to 2026-07-28, no fallback), auto (server/discover probe, legacy fallback) or legacy.
//   --target names the upstream behind URL (directly, or through the hub with prefixing off), which
//     fixes the check list (below). --wire logs every POST's method/headers/_meta to stderr.
//
// Check lists (each a named `ok - ` / `not ok - ` line; the final line is exactly `N passed, M failed`):
//   everything (server-everything, legacy):  connect, lists, call, server-to-client request
//     (trigger-sampling-request -> our sampling handler), subscription update (resources/subscribe +
//     toggle-subscriber-updates -> notifications/resources/updated), cancellation
//     (trigger-long-running-operation aborted; the call rejects and the session keeps working).
//   py-modern (dataplane/tests/python/modern_server.py): connect, lists, call (add), MRTR round
//     (confirm_delete -> our elicitation handler -> retried call completes), subscription update
//     (legacy era: resources/subscribe; modern era: subscriptions/listen) after touch_counter,
//     cancellation (slow_echo aborted; last_cancelled shows the server saw it).
// Exit 1 if any check failed (2 on usage errors). Every wait is bounded; the whole run by --timeout-ms.
import { parseArgs, sleep, withTimeout } from './lib/common.mjs';

let args;
try {
  args = parseArgs(process.argv.slice(2), { flags: ['wire'] });
  if (!['ts1', 'ts2'].includes(args.sdk)) throw new Error('--sdk must be ts1 or ts2');
  if (!args.url) throw new Error('--url is required');
  new URL(args.url); // eslint-disable-line no-new
  if (!['everything', 'py-modern'].includes(args.target)) throw new Error('--target must be everything or py-modern');
  args.mode ??= args.sdk === 'ts1' ? 'legacy' : 'pin';
  if (args.sdk === 'ts1' && args.mode !== 'legacy') throw new Error('--sdk ts1 is legacy-only');
  if (!['legacy', 'auto', 'pin'].includes(args.mode)) throw new Error('--mode must be legacy, auto or pin');
} catch (e) {
  console.error(`usage error: ${e.message}`);
  process.exit(2);
}
const HARD_MS = Number(args['timeout-ms'] ?? 60000);
const REQ_MS = 10000;

let passed = 0;
let failed = 0;
let client;
function finish(code) {
  console.log(`${passed} passed, ${failed} failed`);
  client?.close().catch(() => {});
  process.exit(code ?? (failed > 0 ? 1 : 0));
}
setTimeout(() => {
  console.log(`not ok - hard timeout: whole run exceeded ${HARD_MS} ms`);
  failed++;
  finish(1);
}, HARD_MS).unref();
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
let connected = false;
async function check(name, fn, ms = 15000) {
  try {
    if (!connected && name !== 'connect') throw new Error('not connected');
    await withTimeout(Promise.resolve().then(fn), ms, name);
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${String(e?.message ?? e).replace(/\s+/g, ' ').slice(0, 400)}`);
  }
}
const textOf = (r) => (r?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Records what the client puts on the wire (and optionally prints it).
const wire = [];
const tapFetch = async (input, init) => {
  if ((init?.method ?? 'GET') === 'POST' && typeof init.body === 'string') {
    const h = new Headers(init.headers);
    let msg;
    try { msg = JSON.parse(init.body); } catch { msg = null; }
    const entry = {
      method: msg?.method ?? (msg && 'result' in msg ? '(response)' : '?'),
      headers: Object.fromEntries([...h].filter(([k]) => /^mcp-|^accept$|^content-type$/i.test(k))),
      meta: msg?.params?._meta,
    };
    wire.push(entry);
    if (args.wire) console.error(`[wire] ${JSON.stringify(entry)}`);
  }
  return fetch(input, init);
};

// ---------------------------------------------------------------------------------------------
// SDK adapter: the same operations over TS SDK 1.x and 2.x.
const CANNED = `canned-sampling-${process.pid}`;
const calls = { sampling: 0, elicitation: 0 };
const updates = [];
const sdk = {};
if (args.sdk === 'ts1') {
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
  const t = await import('@modelcontextprotocol/sdk/types.js');
  client = new Client({ name: 'meshgate-pairing-ts1', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: { form: {} } } });
  client.setRequestHandler(t.CreateMessageRequestSchema, async () => {
    calls.sampling++;
    return { role: 'assistant', content: { type: 'text', text: CANNED }, model: 'canned', stopReason: 'endTurn' };
  });
  client.setRequestHandler(t.ElicitRequestSchema, async () => {
    calls.elicitation++;
    return { action: 'accept', content: { confirm: true } };
  });
  client.setNotificationHandler(t.ResourceUpdatedNotificationSchema, (n) => { updates.push(n.params.uri); });
  const transport = new StreamableHTTPClientTransport(new URL(args.url), { fetch: tapFetch });
  sdk.connect = () => client.connect(transport, { timeout: REQ_MS });
  sdk.era = () => 'legacy';
  sdk.version = () => transport.protocolVersion;
  sdk.call = (name, a, opts = {}) => client.callTool({ name, arguments: a }, undefined, { timeout: REQ_MS, ...opts });
  sdk.subscribe = async (uri) => { await client.subscribeResource({ uri }, { timeout: REQ_MS }); return async () => {}; };
} else {
  const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
  const mode = args.mode === 'pin' ? { pin: '2026-07-28' } : args.mode;
  client = new Client(
    { name: 'meshgate-pairing-ts2', version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: { form: {} } }, versionNegotiation: { mode, probe: { timeoutMs: REQ_MS } } },
  );
  client.setRequestHandler('sampling/createMessage', async () => {
    calls.sampling++;
    return { role: 'assistant', content: { type: 'text', text: CANNED }, model: 'canned', stopReason: 'endTurn' };
  });
  client.setRequestHandler('elicitation/create', async () => {
    calls.elicitation++;
    return { action: 'accept', content: { confirm: true } };
  });
  client.setNotificationHandler('notifications/resources/updated', (n) => { updates.push(n.params.uri); });
  const transport = new StreamableHTTPClientTransport(new URL(args.url), { fetch: tapFetch });
  sdk.connect = () => client.connect(transport, { timeout: REQ_MS });
  sdk.era = () => client.getProtocolEra();
  sdk.version = () => client.getNegotiatedProtocolVersion();
  sdk.call = (name, a, opts = {}) => client.callTool({ name, arguments: a }, { timeout: REQ_MS, ...opts });
  sdk.subscribe = async (uri) => {
    if (client.getProtocolEra() === 'legacy') {
      await client.subscribeResource({ uri }, { timeout: REQ_MS });
      return async () => {};
    }
    const sub = await client.listen({ resourceSubscriptions: [uri] }, { timeout: REQ_MS });
    assert((sub.honoredFilter.resourceSubscriptions ?? []).includes(uri), `listen ack did not honour ${uri}: ${JSON.stringify(sub.honoredFilter)}`);
    return () => sub.close();
  };
}
sdk.listTools = () => client.listTools(undefined, { timeout: REQ_MS });
sdk.listResources = () => client.listResources(undefined, { timeout: REQ_MS });
sdk.listPrompts = () => client.listPrompts(undefined, { timeout: REQ_MS });

// ---------------------------------------------------------------------------------------------
const wantEra = args.mode === 'legacy' ? 'legacy' : args.mode === 'pin' ? 'modern' : args.target === 'py-modern' ? 'modern' : 'legacy';

await check('connect', async () => {
  await sdk.connect();
  connected = true;
  assert(sdk.era() === wantEra, `era ${sdk.era()}, expected ${wantEra}`);
  const v = sdk.version();
  assert(wantEra === 'modern' ? v === '2026-07-28' : /^2025-/.test(v ?? ''), `negotiated version ${v}`);
  const info = client.getServerVersion();
  assert(typeof info?.name === 'string', `no serverInfo (${JSON.stringify(info)})`);
});

if (args.target === 'everything') {
  await check('lists', async () => {
    const tools = (await sdk.listTools()).tools.map((t) => t.name);
    for (const n of ['echo', 'trigger-long-running-operation', 'toggle-subscriber-updates']) assert(tools.includes(n), `tools/list lacks ${n}: ${tools.join(',')}`);
    const res = (await sdk.listResources()).resources;
    assert(res.length > 0, 'resources/list is empty');
    const prompts = (await sdk.listPrompts()).prompts.map((p) => p.name);
    assert(prompts.includes('simple-prompt'), `prompts/list lacks simple-prompt: ${prompts.join(',')}`);
  });
  await check('call', async () => {
    const r = await sdk.call('echo', { message: 'pairing' });
    assert(textOf(r) === 'Echo: pairing', `echo returned ${JSON.stringify(textOf(r))}`);
  });
  await check('server-to-client request', async () => {
    // trigger-sampling-request is registered once the server saw notifications/initialized.
    await waitFor(() => true, 0, '');
    let tools = [];
    const deadline = Date.now() + 5000;
    while (!tools.includes('trigger-sampling-request') && Date.now() < deadline) {
      tools = (await sdk.listTools()).tools.map((t) => t.name);
      if (!tools.includes('trigger-sampling-request')) await sleep(100);
    }
    assert(tools.includes('trigger-sampling-request'), 'trigger-sampling-request never appeared in tools/list');
    const before = calls.sampling;
    const r = await sdk.call('trigger-sampling-request', { prompt: 'hello', maxTokens: 10 });
    assert(calls.sampling === before + 1, `sampling handler ran ${calls.sampling - before} times`);
    assert(textOf(r).includes(CANNED), `tool result does not carry the sampled text: ${textOf(r).slice(0, 200)}`);
  });
  await check('subscription update', async () => {
    const uri = 'demo://resource/static/document/architecture.md';
    const stop = await sdk.subscribe(uri);
    const n0 = updates.length;
    await sdk.call('toggle-subscriber-updates', {});
    try {
      await waitFor(() => updates.slice(n0).includes(uri), 8000, `notifications/resources/updated for ${uri}`);
    } finally {
      await sdk.call('toggle-subscriber-updates', {}).catch(() => {});
      await stop();
    }
  }, 20000);
  await check('cancellation', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const p = sdk.call('trigger-long-running-operation', { duration: 30, steps: 30 }, { signal: ac.signal, timeout: 40000 });
    setTimeout(() => ac.abort('pairing cancel'), 500);
    let rejected = false;
    try { await p; } catch { rejected = true; }
    assert(rejected, 'aborted call resolved instead of rejecting');
    assert(Date.now() - started < 10000, 'aborted call took more than 10 s to settle');
    const r = await sdk.call('echo', { message: 'after-cancel' });
    assert(textOf(r) === 'Echo: after-cancel', 'follow-up call after the cancel failed');
  });
} else {
  await check('lists', async () => {
    const tools = (await sdk.listTools()).tools.map((t) => t.name);
    for (const n of ['add', 'echo', 'confirm_delete', 'touch_counter', 'slow_echo', 'last_cancelled']) assert(tools.includes(n), `tools/list lacks ${n}: ${tools.join(',')}`);
    const res = (await sdk.listResources()).resources.map((r) => r.uri);
    assert(res.includes('demo://counter'), `resources/list lacks demo://counter: ${res.join(',')}`);
    const prompts = (await sdk.listPrompts()).prompts.map((p) => p.name);
    assert(prompts.includes('greeting'), `prompts/list lacks greeting: ${prompts.join(',')}`);
  });
  await check('call', async () => {
    const r = await sdk.call('add', { a: 2, b: 3 });
    assert(textOf(r) === '5', `add returned ${JSON.stringify(textOf(r))}`);
  });
  await check('server-to-client request', async () => {
    const before = calls.elicitation;
    const r = await sdk.call('confirm_delete', { path: '/tmp/pairing' });
    assert(calls.elicitation === before + 1, `elicitation handler ran ${calls.elicitation - before} times`);
    assert(textOf(r) === 'deleted /tmp/pairing', `confirm_delete returned ${JSON.stringify(textOf(r))}`);
  });
  await check('subscription update', async () => {
    const uri = 'demo://counter';
    const stop = await sdk.subscribe(uri);
    const n0 = updates.length;
    try {
      await sdk.call('touch_counter', {});
      await waitFor(() => updates.slice(n0).includes(uri), 5000, `notifications/resources/updated for ${uri}`);
    } finally {
      await stop();
    }
  });
  await check('cancellation', async () => {
    const tag = `cancel-${process.pid}-${Date.now()}`;
    const ac = new AbortController();
    const p = sdk.call('slow_echo', { text: tag, ms: 30000 }, { signal: ac.signal, timeout: 40000 });
    setTimeout(() => ac.abort('pairing cancel'), 400);
    let rejected = false;
    try { await p; } catch { rejected = true; }
    assert(rejected, 'aborted call resolved instead of rejecting');
    let seen = null;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      seen = JSON.parse(textOf(await sdk.call('last_cancelled', { text: tag })) || 'null');
      if (seen) break;
      await sleep(100);
    }
    assert(seen?.text === tag, 'server never recorded the cancellation (last_cancelled stayed null)');
  });
}

if (args.wire) console.error(`[wire] ${wire.length} POSTs`);
finish();
