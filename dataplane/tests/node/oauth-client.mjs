#!/usr/bin/env node
// OAuth end-to-end check with the official MCP TypeScript SDK client (its `client/auth` support
// and an `OAuthClientProvider`), completing the authorization-code + PKCE flow headlessly.
//
//   node oauth-client.mjs --url MCP_URL [--tool NAME] [--expect TEXT] [--timeout-ms 60000]
//
// Steps, each printed as `ok - <check>` or `not ok - <check>: why`:
//   1. an unauthenticated POST gets 401 with `WWW-Authenticate: Bearer resource_metadata="…"`;
//   2. the protected-resource metadata (RFC 9728) names an authorization server;
//   3. the SDK transport hits the 401, discovers the AS metadata, registers a client (RFC 7591)
//      and asks to redirect the user: this script follows the authorize URL itself (the test
//      issuer auto-approves) and takes the `code` from the redirect's Location;
//   4. `finishAuth(code)` exchanges the code (PKCE verifier) for a token whose `aud` is the
//      resource (RFC 8707);
//   5. with the token, the client connects, lists tools and calls one (`--tool`, default the
//      first listed), optionally checking the result text contains `--expect`.
// Ends with `N passed, M failed`; exit 1 on any failure, 2 on usage errors. Every wait is
// bounded (fetches by AbortSignal timeouts, the whole run by --timeout-ms).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { parseArgs, withTimeout } from './lib/common.mjs';

let args;
try {
  args = parseArgs(process.argv.slice(2), { flags: ['verbose'] });
  if (!args.url) throw new Error('--url is required');
  new URL(args.url); // eslint-disable-line no-new
} catch (e) {
  console.error(`usage error: ${e.message}`);
  console.error('usage: oauth-client.mjs --url MCP_URL [--tool NAME] [--expect TEXT] [--timeout-ms N]');
  process.exit(2);
}
const TOTAL_MS = Number(args['timeout-ms'] ?? 60000);
const STEP_MS = Math.min(15000, TOTAL_MS);
const url = new URL(args.url);
let passed = 0;
let failed = 0;

function ok(name) {
  passed++;
  console.log(`ok - ${name}`);
}
function notOk(name, why) {
  failed++;
  console.log(`not ok - ${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 400)}`);
}
async function check(name, fn) {
  try {
    const r = await withTimeout(Promise.resolve().then(fn), STEP_MS, name);
    ok(name);
    return r;
  } catch (e) {
    notOk(name, e?.message ?? e);
    return undefined;
  }
}
const boundedFetch = (u, init = {}) => fetch(u, { ...init, signal: AbortSignal.timeout(STEP_MS) });

/** A headless OAuthClientProvider: in-memory storage; the "browser redirect" is recorded. */
class HeadlessProvider {
  constructor() {
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.authorizationUrl = undefined;
  }
  get redirectUrl() {
    return 'http://127.0.0.1:1/oauth/callback';
  }
  get clientMetadata() {
    return {
      client_name: 'meshgate oauth-client.mjs',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  redirectToAuthorization(u) {
    this.authorizationUrl = new URL(u);
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }
}

function jwtPayload(token) {
  const part = token.split('.')[1];
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function main() {
  // 1. Unauthenticated → 401 + WWW-Authenticate.
  const challenge = await check('unauthenticated request gets 401 with resource_metadata', async () => {
    const r = await boundedFetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'probe', version: '0' } } }),
    });
    await r.arrayBuffer();
    if (r.status !== 401) throw new Error(`status ${r.status}`);
    const h = r.headers.get('www-authenticate') ?? '';
    const m = /resource_metadata="([^"]+)"/.exec(h);
    if (!h.startsWith('Bearer ') || !m) throw new Error(`WWW-Authenticate: ${h}`);
    return m[1];
  });
  const prm = await check('protected-resource metadata names an authorization server', async () => {
    if (!challenge) throw new Error('no metadata URL from step 1');
    const r = await boundedFetch(challenge);
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    const md = await r.json();
    if (!Array.isArray(md.authorization_servers) || md.authorization_servers.length === 0) throw new Error(JSON.stringify(md));
    if (!md.resource) throw new Error('no resource');
    return md;
  });

  // 3. SDK: 401 → discovery → registration → authorization redirect.
  const provider = new HeadlessProvider();
  await check('SDK discovers, registers a client and asks for authorization', async () => {
    const client = new Client({ name: 'meshgate-oauth-client', version: '0.1.0' });
    const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
    try {
      await client.connect(transport);
      throw new Error('connected without authorization');
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
    } finally {
      await transport.close().catch(() => {});
    }
    if (!provider.clientInformation()?.client_id) throw new Error('no dynamic client registration');
    if (!provider.authorizationUrl) throw new Error('no authorization redirect requested');
    const au = provider.authorizationUrl;
    if (au.searchParams.get('code_challenge_method') !== 'S256') throw new Error('no PKCE S256');
    if (prm && au.searchParams.get('resource') !== prm.resource) throw new Error(`resource=${au.searchParams.get('resource')}, want ${prm.resource}`);
  });

  // 4. Follow the authorize URL headlessly, take the code, finish the flow.
  const code = await check('authorize redirect carries a code', async () => {
    if (!provider.authorizationUrl) throw new Error('no authorization URL');
    const r = await boundedFetch(provider.authorizationUrl, { redirect: 'manual' });
    await r.arrayBuffer();
    if (r.status !== 302 && r.status !== 303) throw new Error(`status ${r.status}`);
    const loc = new URL(r.headers.get('location'));
    if (`${loc.origin}${loc.pathname}` !== provider.redirectUrl) throw new Error(`redirected to ${loc}`);
    const c = loc.searchParams.get('code');
    if (!c) throw new Error(`no code in ${loc}`);
    const state = provider.authorizationUrl.searchParams.get('state');
    if (state && loc.searchParams.get('state') !== state) throw new Error('state mismatch');
    return c;
  });
  await check('finishAuth exchanges the code for a token bound to the resource', async () => {
    if (!code) throw new Error('no code');
    const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
    await transport.finishAuth(code);
    const t = provider.tokens()?.access_token;
    if (!t) throw new Error('no access token saved');
    const p = jwtPayload(t);
    const aud = Array.isArray(p.aud) ? p.aud : [p.aud];
    if (prm && !aud.includes(prm.resource)) throw new Error(`aud ${JSON.stringify(p.aud)} is not ${prm.resource}`);
  });

  // 5. Authorized session: list tools, call one.
  const client = new Client({ name: 'meshgate-oauth-client', version: '0.1.0' });
  const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  try {
    const connected = await check('connects with the token', () => client.connect(transport).then(() => true));
    const tools = connected && await check('lists tools', async () => {
      const r = await client.listTools();
      if (!r.tools?.length) throw new Error('no tools');
      return r.tools;
    });
    if (tools) {
      const name = args.tool ?? tools[0].name;
      await check(`calls ${name}`, async () => {
        const r = await client.callTool({ name, arguments: {} });
        if (r.isError) throw new Error(`isError: ${JSON.stringify(r.content)}`);
        const text = (r.content ?? []).map((c) => c.text ?? '').join('\n');
        if (args.expect && !text.includes(args.expect)) throw new Error(`result ${JSON.stringify(text)} lacks ${JSON.stringify(args.expect)}`);
      });
    } else {
      notOk('calls a tool', 'no tools listed');
    }
  } finally {
    await withTimeout(transport.close(), 5000, 'close').catch(() => {});
  }
}

try {
  await withTimeout(main(), TOTAL_MS, 'the whole run');
} catch (e) {
  notOk('run finished in time', e?.message ?? e);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
