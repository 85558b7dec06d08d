#!/usr/bin/env node
// meshgate modern-era test fixture: an MCP 2026-07-28 server (TS SDK 2.x `@modelcontextprotocol/server`,
// `createMcpHandler`, stateless per-request serving) implementing every fixture the
// @modelcontextprotocol/conformance 0.2.0-alpha server scenarios call at `--spec-version 2026-07-28`:
// the tools/resources/prompts/completion fixtures of the legacy suite, the SEP-2575 diagnostic tools
// (test_missing_capability, test_streaming_elicitation, test_logging_tool, test_trigger_tool_change,
// test_trigger_prompt_change), the SEP-2322 MRTR fixtures (test_input_required_result_*, prompt
// test_input_required_result_prompt), caching hints (SEP-2549) and subscriptions/listen updates for
// test://watched-resource. The conformance npm package ships no fixture server, hence this one.
//
// Usage: node modern-fixture-server.mjs --port N [--legacy stateless|reject]
//   --port 0 picks a free port. Binds 127.0.0.1 only. Prints `LISTENING http://127.0.0.1:N/mcp` on
//   stdout once ready; diagnostics go to stderr. Exits on SIGTERM/SIGINT.
//   --legacy reject (default): modern-only — 2025-era requests get the SDK's -32022 naming
//     2026-07-28 (GET/DELETE 405). --legacy stateless: also serve 2025-era requests statelessly.
import { randomBytes } from 'node:crypto';
import { deflateSync, crc32 } from 'node:zlib';
import {
  Server,
  createMcpHandler,
  createRequestStateCodec,
  inputRequired,
  inputResponse,
  acceptedContent,
  MissingRequiredClientCapabilityError,
  ProtocolError,
  ProtocolErrorCode,
} from '@modelcontextprotocol/server';
import { parseArgs, parsePort } from './lib/common.mjs';
import { exitOnSignals, serveFetchHandler } from './lib/web-adapter.mjs';

const args = parseArgs(process.argv.slice(2));
const PORT = parsePort(args.port ?? '0');
const LEGACY = args.legacy ?? 'reject';
if (LEGACY !== 'reject' && LEGACY !== 'stateless') {
  console.error('usage error: --legacy must be reject or stateless');
  process.exit(2);
}
const log = (...a) => console.error('[modern-fixture]', ...a);

// ---------------------------------------------------------------------------------------------
// Binary fixtures, built at start-up (no external files).
function pngChunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td) >>> 0);
  return Buffer.concat([len, td, crc]);
}
function redPixelPng() {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.from([0, 255, 0, 0]))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]).toString('base64');
}
function tinyWav() {
  const samples = 800;
  const b = Buffer.alloc(44 + samples, 128);
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(8000, 24);
  b.writeUInt32LE(8000, 28);
  b.writeUInt16LE(1, 32);
  b.writeUInt16LE(8, 34);
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples, 40);
  return b.toString('base64');
}
const PNG = redPixelPng();
const WAV = tinyWav();
const text = (t) => ({ type: 'text', text: t });
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason ?? new Error('aborted')); }, { once: true });
  });

// ---------------------------------------------------------------------------------------------
// Process-wide state (every request gets a fresh Server instance from the factory).
const state = { dynamicTool: false, promptVariant: false };
// requestState integrity (SEP-2322: MUST integrity-protect state that matters): HMAC codec, per-process key.
const codec = createRequestStateCodec({ key: randomBytes(32), ttlSeconds: 600 });

// ---------------------------------------------------------------------------------------------
// Definitions.
const noArgs = { type: 'object', properties: {}, additionalProperties: false };
const TOOLS = [
  { name: 'test_simple_text', description: 'Returns a simple text response', inputSchema: noArgs },
  { name: 'test_image_content', description: 'Returns a 1x1 red PNG image', inputSchema: noArgs },
  { name: 'test_audio_content', description: 'Returns a tiny WAV audio clip', inputSchema: noArgs },
  { name: 'test_embedded_resource', description: 'Returns an embedded text resource', inputSchema: noArgs },
  { name: 'test_multiple_content_types', description: 'Returns text, image and resource content', inputSchema: noArgs },
  { name: 'test_tool_with_logging', description: 'Sends three info log notifications (only if the request set a logLevel)', inputSchema: noArgs },
  { name: 'test_logging_tool', description: 'Logs at info level (only delivered when the request _meta names a logLevel)', inputSchema: noArgs },
  { name: 'test_tool_with_progress', description: 'Reports progress 0, 50, 100 of 100', inputSchema: noArgs },
  { name: 'test_error_handling', description: 'Always fails with isError: true', inputSchema: noArgs },
  {
    name: 'test_sampling',
    description: 'Asks the client for LLM sampling (MRTR input_required)',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] },
  },
  {
    name: 'test_elicitation',
    description: 'Asks the client for user input (MRTR input_required)',
    inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
  },
  { name: 'test_missing_capability', description: 'Needs the sampling client capability; without it answers -32021', inputSchema: noArgs },
  { name: 'test_streaming_elicitation', description: 'Streams a progress notification, then returns an elicitation input_required', inputSchema: noArgs },
  { name: 'test_trigger_tool_change', description: 'Toggles test_dynamic_tool and notifies tools/list_changed', inputSchema: noArgs },
  { name: 'test_trigger_prompt_change', description: 'Toggles a prompt and notifies prompts/list_changed', inputSchema: noArgs },
  { name: 'test_trigger_resource_update', description: 'Publishes notifications/resources/updated for test://watched-resource', inputSchema: noArgs },
  { name: 'test_input_required_result_elicitation', description: 'MRTR: one elicitation (user_name)', inputSchema: noArgs },
  { name: 'test_input_required_result_sampling', description: 'MRTR: one sampling request (capital_question)', inputSchema: noArgs },
  { name: 'test_input_required_result_list_roots', description: 'MRTR: one roots/list request (client_roots)', inputSchema: noArgs },
  { name: 'test_input_required_result_request_state', description: 'MRTR: elicitation plus sealed requestState', inputSchema: noArgs },
  { name: 'test_input_required_result_multiple_inputs', description: 'MRTR: elicitation, sampling and roots at once', inputSchema: noArgs },
  { name: 'test_input_required_result_multi_round', description: 'MRTR: two elicitation rounds with evolving requestState', inputSchema: noArgs },
  { name: 'test_input_required_result_tampered_state', description: 'MRTR: HMAC-sealed requestState; tampered state is refused', inputSchema: noArgs },
  { name: 'test_input_required_result_capabilities', description: 'MRTR: asks only for what the client declared', inputSchema: noArgs },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features (SEP-1613, SEP-2106 vocabulary)',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: { address: { $anchor: 'addressDef', type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: {
        name: { type: 'string' },
        address: { $ref: '#/$defs/address' },
        contactMethod: { type: 'string', enum: ['phone', 'email'] },
        phone: { type: 'string' },
        email: { type: 'string' },
      },
      allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
      if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
      then: { required: ['phone'] },
      else: { required: ['email'] },
      additionalProperties: false,
    },
  },
  {
    name: 'test_custom_headers',
    description: 'Arguments mirrored into Mcp-Param-* headers (x-mcp-header, SEP-2243)',
    inputSchema: {
      type: 'object',
      properties: {
        region: { type: 'string', 'x-mcp-header': 'Region' },
        priority: { type: 'integer', 'x-mcp-header': 'Priority' },
        verbose: { type: 'boolean', 'x-mcp-header': 'Verbose' },
        query: { type: 'string' },
      },
      required: ['region'],
    },
  },
];
const DYNAMIC_TOOL = { name: 'test_dynamic_tool', description: 'Appears after test_trigger_tool_change', inputSchema: noArgs };

const RESOURCES = [
  { uri: 'test://static-text', name: 'static-text', description: 'A static text resource', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', description: 'A static binary resource (1x1 PNG)', mimeType: 'image/png' },
  { uri: 'test://watched-resource', name: 'watched-resource', description: 'Updated every second (subscriptions/listen resourceSubscriptions)', mimeType: 'text/plain' },
];
const TEMPLATES = [{ uriTemplate: 'test://template/{id}/data', name: 'template-data', description: 'Template resource; substitutes {id}', mimeType: 'application/json' }];
const PROMPTS = [
  { name: 'test_simple_prompt', description: 'A simple prompt without arguments' },
  {
    name: 'test_prompt_with_arguments',
    description: 'A prompt with two required arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ],
  },
  { name: 'test_prompt_with_embedded_resource', description: 'A prompt embedding a resource', arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }] },
  { name: 'test_prompt_with_image', description: 'A prompt with image content' },
  { name: 'test_input_required_result_prompt', description: 'MRTR on prompts/get: asks for context first' },
];
const VARIANT_PROMPT = { name: 'test_dynamic_prompt', description: 'Appears after test_trigger_prompt_change' };

const nameSchema = (prop) => ({ type: 'object', properties: { [prop]: { type: 'string' } }, required: [prop] });
const elicit = (message, schema) => ({ method: 'elicitation/create', params: { mode: 'form', message, requestedSchema: schema } });
const sampling = (prompt, maxTokens) => ({
  method: 'sampling/createMessage',
  params: { messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens },
});
const rootsList = () => ({ method: 'roots/list', params: {} });
const samplingText = (v) => {
  if (v.kind !== 'sampling') return undefined;
  const c = v.result.content;
  const block = Array.isArray(c) ? c.find((b) => b.type === 'text') : c;
  return block?.type === 'text' ? block.text : undefined;
};

// ---------------------------------------------------------------------------------------------
// One Server per request (the factory).
function createServer(handlerRef) {
  const server = new Server(
    { name: 'meshgate-modern-fixture', title: 'meshgate modern conformance fixture', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
      instructions: 'meshgate modern (2026-07-28) test fixture server.',
      cacheHints: {
        'server/discover': { ttlMs: 60000, cacheScope: 'public' },
        'tools/list': { ttlMs: 30000, cacheScope: 'public' },
        'prompts/list': { ttlMs: 30000, cacheScope: 'public' },
        'resources/list': { ttlMs: 30000, cacheScope: 'public' },
        'resources/templates/list': { ttlMs: 30000, cacheScope: 'public' },
        'resources/read': { ttlMs: 5000, cacheScope: 'private' },
      },
      requestState: { verify: (s, ctx) => codec.verify(s, ctx) },
    },
  );
  // ctx.mcpReq.envelope is keyed by the full wire keys (`io.modelcontextprotocol/...`).
  const caps = (ctx) => ctx.mcpReq.envelope?.['io.modelcontextprotocol/clientCapabilities'] ?? {};
  const stateOf = (ctx) => ctx.mcpReq.requestState() ?? undefined;
  const responses = (ctx) => ctx.mcpReq.inputResponses;

  server.setRequestHandler('tools/list', async () => ({ tools: state.dynamicTool ? [...TOOLS, DYNAMIC_TOOL] : TOOLS }));

  server.setRequestHandler('tools/call', async (req, ctx) => {
    const { name } = req.params;
    const a = req.params.arguments ?? {};
    switch (name) {
      case 'test_simple_text':
        return { content: [text('This is a simple text response for testing.')] };
      case 'test_image_content':
        return { content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] };
      case 'test_audio_content':
        return { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] };
      case 'test_embedded_resource':
        return { content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }] };
      case 'test_multiple_content_types':
        return {
          content: [
            text('Multiple content types test:'),
            { type: 'image', data: PNG, mimeType: 'image/png' },
            { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: JSON.stringify({ test: 'data', value: 123 }) } },
          ],
        };
      case 'test_tool_with_logging':
      case 'test_logging_tool': {
        const steps = name === 'test_logging_tool' ? ['logging tool ran'] : ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
        for (const s of steps) {
          await ctx.mcpReq.log('info', s, 'modern-fixture');
          await sleep(20, ctx.mcpReq.signal);
        }
        return { content: [text(`${name} executed successfully`)] };
      }
      case 'test_tool_with_progress': {
        const token = ctx.mcpReq._meta?.progressToken;
        for (const p of [0, 50, 100]) {
          if (token !== undefined) {
            await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: p, total: 100, message: `Completed step ${p} of 100` } });
          }
          await sleep(30, ctx.mcpReq.signal);
        }
        return { content: [text(String(token ?? 'no-progress-token'))] };
      }
      case 'test_error_handling':
        return { isError: true, content: [text('This tool intentionally returns an error for testing')] };
      case 'test_sampling': {
        const got = samplingText(inputResponse(responses(ctx), 'sample'));
        if (got !== undefined) return { content: [text(`LLM response: ${got}`)] };
        if (!caps(ctx).sampling) throw new MissingRequiredClientCapabilityError({ requiredCapabilities: { sampling: {} } });
        return inputRequired({ inputRequests: { sample: sampling(String(a.prompt ?? ''), 100) } });
      }
      case 'test_elicitation': {
        const v = inputResponse(responses(ctx), 'answer');
        if (v.kind === 'elicit') return { content: [text(`User response: action=${v.action}, content=${JSON.stringify(v.content ?? {})}`)] };
        if (!caps(ctx).elicitation) throw new MissingRequiredClientCapabilityError({ requiredCapabilities: { elicitation: {} } });
        return inputRequired({ inputRequests: { answer: elicit(String(a.message ?? 'Please respond'), nameSchema('response')) } });
      }
      case 'test_missing_capability':
        if (!caps(ctx).sampling) throw new MissingRequiredClientCapabilityError({ requiredCapabilities: { sampling: {} } });
        return { content: [text('client declared sampling')] };
      case 'test_streaming_elicitation': {
        const token = ctx.mcpReq._meta?.progressToken ?? 'streaming-elicitation';
        await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: 1, total: 2, message: 'about to ask' } });
        const v = inputResponse(responses(ctx), 'stream_answer');
        if (v.kind === 'elicit') return { content: [text(`streamed answer: ${JSON.stringify(v.content ?? {})}`)] };
        return inputRequired({ inputRequests: { stream_answer: elicit('Streaming elicitation: your name?', nameSchema('name')) } });
      }
      case 'test_trigger_tool_change':
        state.dynamicTool = !state.dynamicTool;
        setTimeout(() => handlerRef.handler?.notify.toolsChanged(), 10);
        return { content: [text(`test_dynamic_tool ${state.dynamicTool ? 'added' : 'removed'}`)] };
      case 'test_trigger_prompt_change':
        state.promptVariant = !state.promptVariant;
        setTimeout(() => handlerRef.handler?.notify.promptsChanged(), 10);
        return { content: [text(`test_dynamic_prompt ${state.promptVariant ? 'added' : 'removed'}`)] };
      case 'test_trigger_resource_update':
        setTimeout(() => handlerRef.handler?.notify.resourceUpdated('test://watched-resource'), 10);
        return { content: [text('resource update published')] };
      case 'test_dynamic_tool':
        if (!state.dynamicTool) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown tool: ${name}`);
        return { content: [text('dynamic tool ran')] };
      case 'test_input_required_result_elicitation': {
        const got = acceptedContent(responses(ctx), 'user_name');
        if (typeof got?.name === 'string') return { content: [text(`Hello, ${got.name}!`)] };
        return inputRequired({ inputRequests: { user_name: elicit('What is your name?', nameSchema('name')) } });
      }
      case 'test_input_required_result_sampling': {
        const got = samplingText(inputResponse(responses(ctx), 'capital_question'));
        if (got !== undefined) return { content: [text(`The model said: ${got}`)] };
        return inputRequired({ inputRequests: { capital_question: sampling('What is the capital of France?', 100) } });
      }
      case 'test_input_required_result_list_roots': {
        const v = inputResponse(responses(ctx), 'client_roots');
        if (v.kind === 'roots') return { content: [text(`Client roots: ${v.roots.map((r) => r.uri).join(', ') || '(none)'}`)] };
        return inputRequired({ inputRequests: { client_roots: rootsList() } });
      }
      case 'test_input_required_result_request_state': {
        const st = stateOf(ctx);
        const v = inputResponse(responses(ctx), 'confirm');
        if (st?.tool === name && v.kind === 'elicit') return { content: [text(`state-ok: confirm=${JSON.stringify(v.content ?? {})}`)] };
        return inputRequired({
          inputRequests: { confirm: elicit('Please confirm', { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] }) },
          requestState: await codec.mint({ tool: name, round: 1 }),
        });
      }
      case 'test_input_required_result_multiple_inputs': {
        const r = responses(ctx);
        const user = acceptedContent(r, 'user_name');
        const greet = samplingText(inputResponse(r, 'greeting'));
        const roots = inputResponse(r, 'client_roots');
        if (stateOf(ctx)?.tool === name && typeof user?.name === 'string' && greet !== undefined && roots.kind === 'roots') {
          return { content: [text(`name=${user.name}; greeting=${greet}; roots=${roots.roots.length}`)] };
        }
        return inputRequired({
          inputRequests: {
            user_name: elicit('What is your name?', nameSchema('name')),
            greeting: sampling('Generate a greeting', 50),
            client_roots: rootsList(),
          },
          requestState: await codec.mint({ tool: name }),
        });
      }
      case 'test_input_required_result_multi_round': {
        const st = stateOf(ctx);
        const r = responses(ctx);
        if (st?.tool === name && st.round === 2) {
          const color = acceptedContent(r, 'step2');
          if (typeof color?.color === 'string') return { content: [text(`name=${st.name}; color=${color.color}; rounds complete`)] };
        }
        const step1 = acceptedContent(r, 'step1');
        if (st?.tool === name && st.round === 1 && typeof step1?.name === 'string') {
          return inputRequired({
            inputRequests: { step2: elicit('Step 2: What is your favorite color?', nameSchema('color')) },
            requestState: await codec.mint({ tool: name, round: 2, name: step1.name }),
          });
        }
        return inputRequired({
          inputRequests: { step1: elicit('Step 1: What is your name?', nameSchema('name')) },
          requestState: await codec.mint({ tool: name, round: 1 }),
        });
      }
      case 'test_input_required_result_tampered_state': {
        // A tampered state never reaches here: the requestState.verify hook refuses it with -32602.
        const st = stateOf(ctx);
        const got = acceptedContent(responses(ctx), 'confirm');
        if (st?.tool === name && got) return { content: [text('state verified')] };
        return inputRequired({
          inputRequests: { confirm: elicit('Confirm to continue', nameSchema('value')) },
          requestState: await codec.mint({ tool: name }),
        });
      }
      case 'test_input_required_result_capabilities': {
        const c = caps(ctx);
        const r = responses(ctx);
        if (r && Object.keys(r).length > 0) return { content: [text(`received: ${Object.keys(r).sort().join(',')}`)] };
        const reqs = {};
        if (c.elicitation) reqs.user_name = elicit('What is your name?', nameSchema('name'));
        if (c.sampling) reqs.greeting = sampling('Generate a greeting', 50);
        if (c.roots) reqs.client_roots = rootsList();
        if (Object.keys(reqs).length === 0) return { content: [text('client declared no input capabilities; nothing to ask')] };
        return inputRequired({ inputRequests: reqs });
      }
      case 'test_custom_headers':
        return { content: [text(`region=${a.region}; priority=${a.priority ?? ''}; verbose=${a.verbose ?? ''}; query=${a.query ?? ''}`)] };
      case 'json_schema_2020_12_tool':
        return { content: [text(`name=${a.name ?? ''}`)] };
      default:
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown tool: ${name}`);
    }
  });

  server.setRequestHandler('resources/list', async () => ({ resources: RESOURCES }));
  server.setRequestHandler('resources/templates/list', async () => ({ resourceTemplates: TEMPLATES }));
  server.setRequestHandler('resources/read', async (req) => {
    const { uri } = req.params;
    if (uri === 'test://static-text') return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
    if (uri === 'test://static-binary') return { contents: [{ uri, mimeType: 'image/png', blob: PNG }] };
    if (uri === 'test://watched-resource') return { contents: [{ uri, mimeType: 'text/plain', text: `Watched resource content at ${new Date().toISOString()}` }] };
    const m = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
    if (m) {
      const id = decodeURIComponent(m[1]);
      return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
    }
    throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Resource not found: ${uri}`, { uri });
  });
  // Legacy-era subscribe (only reachable with --legacy stateless; modern uses subscriptions/listen).
  server.setRequestHandler('resources/subscribe', async () => ({}));
  server.setRequestHandler('resources/unsubscribe', async () => ({}));

  server.setRequestHandler('prompts/list', async () => ({ prompts: state.promptVariant ? [...PROMPTS, VARIANT_PROMPT] : PROMPTS }));
  server.setRequestHandler('prompts/get', async (req, ctx) => {
    const { name } = req.params;
    const pa = req.params.arguments ?? {};
    const need = (k) => {
      if (typeof pa[k] !== 'string') throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Missing required argument: ${k}`);
      return pa[k];
    };
    switch (name) {
      case 'test_simple_prompt':
        return { messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }] };
      case 'test_prompt_with_arguments':
        return { messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${need('arg1')}', arg2='${need('arg2')}'`) }] };
      case 'test_prompt_with_embedded_resource':
        return {
          messages: [
            { role: 'user', content: { type: 'resource', resource: { uri: need('resourceUri'), mimeType: 'text/plain', text: 'Embedded resource content for testing.' } } },
            { role: 'user', content: text('Please process the embedded resource above.') },
          ],
        };
      case 'test_prompt_with_image':
        return {
          messages: [
            { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
            { role: 'user', content: text('Please analyze the image above.') },
          ],
        };
      case 'test_input_required_result_prompt': {
        const got = acceptedContent(responses(ctx), 'user_context');
        if (typeof got?.context === 'string') return { description: 'context-aware prompt', messages: [{ role: 'user', content: text(`Use this context: ${got.context}`) }] };
        return inputRequired({ inputRequests: { user_context: elicit('What context should the prompt use?', nameSchema('context')) } });
      }
      case 'test_dynamic_prompt':
        if (state.promptVariant) return { messages: [{ role: 'user', content: text('dynamic prompt') }] };
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown prompt: ${name}`);
      default:
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Unknown prompt: ${name}`);
    }
  });

  server.setRequestHandler('completion/complete', async (req) => {
    const { ref, argument } = req.params;
    let pool;
    if (ref.type === 'ref/prompt' && ref.name === 'test_prompt_with_arguments') {
      pool = argument.name === 'arg1' ? ['paris', 'park', 'party', 'test', 'testing'] : ['hello', 'help', 'world', 'wonder'];
    } else if (ref.type === 'ref/prompt' && ref.name === 'test_prompt_with_embedded_resource') {
      pool = RESOURCES.map((r) => r.uri);
    } else if (ref.type === 'ref/resource' && ref.uri === 'test://template/{id}/data') {
      pool = ['1', '2', '3', '123', '456'];
    } else {
      throw new ProtocolError(ProtocolErrorCode.InvalidParams, `No completions for ${JSON.stringify(ref)}`);
    }
    const values = pool.filter((v) => v.startsWith(argument.value ?? ''));
    return { completion: { values, total: values.length, hasMore: false } };
  });

  server.onerror = (e) => log('server error:', e?.message ?? e);
  return server;
}

// ---------------------------------------------------------------------------------------------
const handlerRef = { handler: null };
const handler = createMcpHandler(() => createServer(handlerRef), {
  legacy: LEGACY,
  onerror: (e) => log('handler:', e?.message ?? e),
  keepAliveMs: 5000,
});
handlerRef.handler = handler;
// test://watched-resource changes every second; only listen streams that asked for it get the update.
const watchTimer = setInterval(() => handler.notify.resourceUpdated('test://watched-resource'), 1000);
watchTimer.unref();

let httpServer;
try {
  httpServer = await serveFetchHandler(handler, { port: PORT, log });
} catch (e) {
  log('listen failed:', e.message);
  process.exit(1);
}
exitOnSignals(httpServer, () => handler.close());
const { port } = httpServer.address();
process.stdout.write(`LISTENING http://127.0.0.1:${port}/mcp\n`);
log(`listening on 127.0.0.1:${port} (legacy: ${LEGACY})`);
