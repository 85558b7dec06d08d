#!/usr/bin/env node
// meshgate test fixture: an MCP server (legacy era, Streamable HTTP, stateful sessions) that
// implements every fixture the @modelcontextprotocol/conformance 0.1.16 server scenarios call,
// plus a few tools for meshgate's own gateway tests (slow_echo, last_cancelled, add).
//
// Usage: node fixture-server.mjs --port N [--page-size K] [--retry-ms MS]
//   --port 0 picks a free port. Binds 127.0.0.1 only. Prints `LISTENING http://127.0.0.1:N/mcp`
//   on stdout once ready; everything else goes to stderr.
//   --page-size K  paginate tools/resources/templates/prompts lists K items per page (default: off,
//                  because the conformance scenarios only read the first page).
import { randomUUID } from 'node:crypto';
import { deflateSync, crc32 } from 'node:zlib';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  isInitializeRequest,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { parseArgs, parsePort } from './lib/common.mjs';

const args = parseArgs(process.argv.slice(2));
const PORT = parsePort(args.port ?? '0');
const PAGE_SIZE = args['page-size'] ? Number(args['page-size']) : 0;
const RETRY_MS = args['retry-ms'] ? Number(args['retry-ms']) : 500;
const HOST = '127.0.0.1';
const log = (...a) => console.error('[fixture]', ...a);

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
  ihdr.writeUInt32BE(1, 0); // width
  ihdr.writeUInt32BE(1, 4); // height
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const raw = Buffer.from([0, 255, 0, 0]); // filter byte + one red pixel
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]).toString('base64');
}
function tinyWav() {
  const sampleRate = 8000;
  const samples = 800; // 0.1 s of silence, 8-bit mono
  const b = Buffer.alloc(44 + samples, 128);
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(sampleRate, 24);
  b.writeUInt32LE(sampleRate, 28); // byte rate
  b.writeUInt16LE(1, 32); // block align
  b.writeUInt16LE(8, 34); // bits per sample
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples, 40);
  return b.toString('base64');
}
const PNG = redPixelPng();
const WAV = tinyWav();

// ---------------------------------------------------------------------------------------------
// Cancellation record (global: the gateway may talk to us over any upstream session).
const cancelled = []; // most recent last: {requestId, reason, text, sessionId, at}
function recordCancel(entry) {
  cancelled.push(entry);
  if (cancelled.length > 100) cancelled.shift();
  log('cancelled', JSON.stringify(entry));
}

// ---------------------------------------------------------------------------------------------
// Definitions.
const noArgs = { type: 'object', properties: {}, additionalProperties: false };
const text = (t) => ({ type: 'text', text: t });

const TOOLS = [
  { name: 'test_simple_text', description: 'Returns a simple text response', inputSchema: noArgs },
  { name: 'test_image_content', description: 'Returns a 1x1 red PNG image', inputSchema: noArgs },
  { name: 'test_audio_content', description: 'Returns a tiny WAV audio clip', inputSchema: noArgs },
  { name: 'test_embedded_resource', description: 'Returns an embedded text resource', inputSchema: noArgs },
  { name: 'test_multiple_content_types', description: 'Returns text, image and resource content', inputSchema: noArgs },
  { name: 'test_tool_with_logging', description: 'Sends three info log notifications while running', inputSchema: noArgs },
  { name: 'test_tool_with_progress', description: 'Reports progress 0, 50, 100 of 100', inputSchema: noArgs },
  { name: 'test_error_handling', description: 'Always fails with isError: true', inputSchema: noArgs },
  {
    name: 'test_sampling',
    description: 'Requests LLM sampling from the client',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } }, required: ['prompt'] },
  },
  {
    name: 'test_elicitation',
    description: 'Requests user input (elicitation) from the client',
    inputSchema: { type: 'object', properties: { message: { type: 'string', description: 'The message to show the user' } }, required: ['message'] },
  },
  { name: 'test_elicitation_sep1034_defaults', description: 'Elicitation with default values for all primitive types (SEP-1034)', inputSchema: noArgs },
  { name: 'test_elicitation_sep1330_enums', description: 'Elicitation with all five enum schema variants (SEP-1330)', inputSchema: noArgs },
  { name: 'test_reconnection', description: 'Closes the SSE stream mid-call so the client must reconnect (SEP-1699)', inputSchema: noArgs },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
  },
  // --- meshgate's own tools ---
  {
    name: 'slow_echo',
    description: 'Waits `ms` milliseconds then echoes `text`; honours cancellation and records it (see last_cancelled)',
    inputSchema: {
      type: 'object',
      properties: { text: { type: 'string' }, ms: { type: 'integer', minimum: 0, maximum: 600000 } },
      required: ['text', 'ms'],
    },
  },
  {
    name: 'last_cancelled',
    description: 'JSON text of the last cancelled request {requestId, reason, text} or null; optional `text` filters by the slow_echo text',
    inputSchema: { type: 'object', properties: { text: { type: 'string' } } },
  },
  {
    name: 'add',
    description: 'Adds two integers',
    inputSchema: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] },
  },
];

const RESOURCES = [
  { uri: 'test://static-text', name: 'static-text', description: 'A static text resource', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', description: 'A static binary resource (1x1 PNG)', mimeType: 'image/png' },
  { uri: 'test://watched-resource', name: 'watched-resource', description: 'A resource that can be subscribed to; updates every second while subscribed', mimeType: 'text/plain' },
];
const TEMPLATES = [
  { uriTemplate: 'test://template/{id}/data', name: 'template-data', description: 'Template resource; substitutes {id}', mimeType: 'application/json' },
];
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
  {
    name: 'test_prompt_with_embedded_resource',
    description: 'A prompt embedding a resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
  },
  { name: 'test_prompt_with_image', description: 'A prompt with image content' },
];

function paginate(items, cursor, key) {
  if (!PAGE_SIZE) {
    if (cursor) throw new McpError(ErrorCode.InvalidParams, 'Invalid cursor');
    return { [key]: items };
  }
  let start = 0;
  if (cursor !== undefined) {
    const m = /^p([0-9]+)$/.exec(cursor);
    if (!m || Number(m[1]) >= items.length) throw new McpError(ErrorCode.InvalidParams, `Invalid cursor: ${cursor}`);
    start = Number(m[1]);
  }
  const page = items.slice(start, start + PAGE_SIZE);
  const next = start + PAGE_SIZE;
  return next < items.length ? { [key]: page, nextCursor: `p${next}` } : { [key]: page };
}

const sleepAbortable = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(t); reject(signal.reason ?? new Error('aborted')); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

// ---------------------------------------------------------------------------------------------
// One Server instance per session.
function createSessionServer(getSessionId) {
  const server = new Server(
    { name: 'meshgate-fixture', title: 'meshgate conformance fixture', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
      instructions: 'meshgate test fixture server (conformance fixtures + slow_echo/last_cancelled/add).',
    },
  );
  const subscriptions = new Set();
  let watchTimer = null;

  const logAt = async (extra, level, data) => {
    if (server.isMessageIgnored(level, getSessionId())) return;
    await extra.sendNotification({ method: 'notifications/message', params: { level, logger: 'fixture', data } });
  };

  const clientCan = (cap) => server.getClientCapabilities()?.[cap] !== undefined;

  server.setRequestHandler(ListToolsRequestSchema, async (req) => paginate(TOOLS, req.params?.cursor, 'tools'));

  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
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
        return {
          content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }],
        };
      case 'test_multiple_content_types':
        return {
          content: [
            text('Multiple content types test:'),
            { type: 'image', data: PNG, mimeType: 'image/png' },
            { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: JSON.stringify({ test: 'data', value: 123 }) } },
          ],
        };
      case 'test_tool_with_logging':
        await logAt(extra, 'info', 'Tool execution started');
        await sleepAbortable(50, extra.signal);
        await logAt(extra, 'info', 'Tool processing data');
        await sleepAbortable(50, extra.signal);
        await logAt(extra, 'info', 'Tool execution completed');
        return { content: [text('Tool with logging executed successfully')] };
      case 'test_tool_with_progress': {
        const token = req.params._meta?.progressToken;
        for (const [i, p] of [0, 50, 100].entries()) {
          if (i > 0) await sleepAbortable(50, extra.signal);
          if (token !== undefined) {
            await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: p, total: 100 } });
          }
        }
        return { content: [text('Tool with progress executed successfully')] };
      }
      case 'test_error_handling':
        return { isError: true, content: [text('This tool intentionally returns an error for testing')] };
      case 'test_sampling': {
        if (!clientCan('sampling')) return { isError: true, content: [text('Client does not support sampling')] };
        const r = await extra.sendRequest(
          { method: 'sampling/createMessage', params: { messages: [{ role: 'user', content: text(String(a.prompt ?? '')) }], maxTokens: 100 } },
          CreateMessageResultSchema,
          { timeout: 30000 },
        );
        const c = Array.isArray(r.content) ? r.content.find((x) => x.type === 'text') : r.content;
        return { content: [text(`LLM response: ${c?.type === 'text' ? c.text : JSON.stringify(r.content)}`)] };
      }
      case 'test_elicitation': {
        if (!clientCan('elicitation')) return { isError: true, content: [text('Client does not support elicitation')] };
        const r = await extra.sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message: String(a.message ?? ''),
              requestedSchema: {
                type: 'object',
                properties: {
                  username: { type: 'string', description: "User's response" },
                  email: { type: 'string', description: "User's email address" },
                },
                required: ['username', 'email'],
              },
            },
          },
          ElicitResultSchema,
          { timeout: 30000 },
        );
        return { content: [text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
      }
      case 'test_elicitation_sep1034_defaults': {
        if (!clientCan('elicitation')) return { isError: true, content: [text('Client does not support elicitation')] };
        const r = await extra.sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message: 'Please review and update the form fields with defaults',
              requestedSchema: {
                type: 'object',
                properties: {
                  name: { type: 'string', description: 'User name', default: 'John Doe' },
                  age: { type: 'integer', description: 'User age', default: 30 },
                  score: { type: 'number', description: 'User score', default: 95.5 },
                  status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
                  verified: { type: 'boolean', description: 'Verification status', default: true },
                },
                required: [],
              },
            },
          },
          ElicitResultSchema,
          { timeout: 30000 },
        );
        return { content: [text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
      }
      case 'test_elicitation_sep1330_enums': {
        if (!clientCan('elicitation')) return { isError: true, content: [text('Client does not support elicitation')] };
        const r = await extra.sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message: 'Please select options from the enum fields',
              requestedSchema: {
                type: 'object',
                properties: {
                  untitledSingle: { type: 'string', description: 'Untitled single-select', enum: ['option1', 'option2', 'option3'] },
                  titledSingle: {
                    type: 'string',
                    description: 'Titled single-select',
                    oneOf: [
                      { const: 'value1', title: 'First Option' },
                      { const: 'value2', title: 'Second Option' },
                      { const: 'value3', title: 'Third Option' },
                    ],
                  },
                  legacyEnum: {
                    type: 'string',
                    description: 'Legacy titled enum (deprecated enumNames)',
                    enum: ['opt1', 'opt2', 'opt3'],
                    enumNames: ['Option One', 'Option Two', 'Option Three'],
                  },
                  untitledMulti: {
                    type: 'array',
                    description: 'Untitled multi-select',
                    items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
                  },
                  titledMulti: {
                    type: 'array',
                    description: 'Titled multi-select',
                    items: {
                      anyOf: [
                        { const: 'value1', title: 'First Choice' },
                        { const: 'value2', title: 'Second Choice' },
                        { const: 'value3', title: 'Third Choice' },
                      ],
                    },
                  },
                },
                required: [],
              },
            },
          },
          ElicitResultSchema,
          { timeout: 30000 },
        );
        return { content: [text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
      }
      case 'test_reconnection':
        // Give the priming event a moment to flush, then drop the POST stream (SEP-1699 polling);
        // the client reconnects with GET + Last-Event-ID and receives the result from the event store.
        // Older protocol-version headers get no priming event from the SDK, so first send one
        // request-related notification: its SSE event id is what the client resumes from.
        await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', logger: 'fixture', data: 'test_reconnection: closing stream' } });
        await sleepAbortable(100, extra.signal);
        if (extra.closeSSEStream) extra.closeSSEStream();
        else server.transport?.closeSSEStream?.(extra.requestId);
        await sleepAbortable(200, extra.signal);
        return { content: [text('Reconnection test completed successfully')] };
      case 'json_schema_2020_12_tool':
        return { content: [text(`json_schema_2020_12_tool called with ${JSON.stringify(a)}`)] };
      case 'slow_echo': {
        const ms = Number(a.ms);
        if (typeof a.text !== 'string' || !Number.isInteger(ms) || ms < 0) {
          return { isError: true, content: [text('slow_echo needs {text: string, ms: integer >= 0}')] };
        }
        try {
          await sleepAbortable(ms, extra.signal);
        } catch {
          const reason = extra.signal.reason;
          recordCancel({
            requestId: extra.requestId,
            reason: reason instanceof Error ? reason.message : reason === undefined ? null : String(reason),
            text: a.text,
            sessionId: getSessionId() ?? null,
          });
          throw new McpError(ErrorCode.RequestTimeout, 'cancelled'); // never sent: SDK drops replies to cancelled requests
        }
        return { content: [text(a.text)] };
      }
      case 'last_cancelled': {
        const hit = [...cancelled].reverse().find((c) => a.text === undefined || c.text === a.text);
        return { content: [text(JSON.stringify(hit ? { requestId: hit.requestId, reason: hit.reason, text: hit.text } : null))] };
      }
      case 'add': {
        if (!Number.isInteger(a.a) || !Number.isInteger(a.b)) return { isError: true, content: [text('add needs integer a and b')] };
        const sum = a.a + a.b;
        return { content: [text(String(sum))] };
      }
      default:
        throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${name}`);
    }
  });

  server.setRequestHandler(ListResourcesRequestSchema, async (req) => paginate(RESOURCES, req.params?.cursor, 'resources'));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async (req) => paginate(TEMPLATES, req.params?.cursor, 'resourceTemplates'));
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const { uri } = req.params;
    if (uri === 'test://static-text') return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
    if (uri === 'test://static-binary') return { contents: [{ uri, mimeType: 'image/png', blob: PNG }] };
    if (uri === 'test://watched-resource') return { contents: [{ uri, mimeType: 'text/plain', text: `Watched resource content at ${new Date().toISOString()}` }] };
    const m = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
    if (m) {
      const id = decodeURIComponent(m[1]);
      return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
    }
    throw new McpError(-32002, `Resource not found: ${uri}`, { uri });
  });

  const stopWatch = () => {
    if (watchTimer) clearInterval(watchTimer);
    watchTimer = null;
  };
  const sendUpdates = () => {
    for (const uri of subscriptions) server.sendResourceUpdated({ uri }).catch(() => {});
  };
  server.setRequestHandler(SubscribeRequestSchema, async (req) => {
    const { uri } = req.params;
    subscriptions.add(uri);
    if (uri === 'test://watched-resource' && !watchTimer) {
      setTimeout(sendUpdates, 200);
      watchTimer = setInterval(sendUpdates, 1000);
      watchTimer.unref();
    }
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
    subscriptions.delete(req.params.uri);
    if (!subscriptions.has('test://watched-resource')) stopWatch();
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, async (req) => paginate(PROMPTS, req.params?.cursor, 'prompts'));
  server.setRequestHandler(GetPromptRequestSchema, async (req) => {
    const { name } = req.params;
    const pa = req.params.arguments ?? {};
    const need = (k) => {
      if (typeof pa[k] !== 'string') throw new McpError(ErrorCode.InvalidParams, `Missing required argument: ${k}`);
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
      default:
        throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
    }
  });

  server.setRequestHandler(CompleteRequestSchema, async (req) => {
    const { ref, argument } = req.params;
    let pool = [];
    if (ref.type === 'ref/prompt' && ref.name === 'test_prompt_with_arguments') {
      pool = argument.name === 'arg1' ? ['paris', 'park', 'party', 'test', 'testing'] : ['hello', 'help', 'world', 'wonder'];
    } else if (ref.type === 'ref/prompt' && ref.name === 'test_prompt_with_embedded_resource') {
      pool = RESOURCES.map((r) => r.uri);
    } else if (ref.type === 'ref/resource' && ref.uri === 'test://template/{id}/data') {
      pool = ['1', '2', '3', '123', '456'];
    } else {
      throw new McpError(ErrorCode.InvalidParams, `No completions for ${JSON.stringify(ref)}`);
    }
    const values = pool.filter((v) => v.startsWith(argument.value ?? ''));
    return { completion: { values, total: values.length, hasMore: false } };
  });

  return { server, cleanup: stopWatch };
}

// ---------------------------------------------------------------------------------------------
// Event store for resumability: ids are `<streamId>_<seq>`; replay only the same stream.
class StreamEventStore {
  constructor() {
    this.events = []; // {eventId, streamId, message}
    this.seq = 0;
  }
  async storeEvent(streamId, message) {
    const eventId = `${streamId}_${++this.seq}`;
    this.events.push({ eventId, streamId, message });
    if (this.events.length > 1000) this.events.shift();
    return eventId;
  }
  async getStreamIdForEventId(eventId) {
    return this.events.find((e) => e.eventId === eventId)?.streamId;
  }
  async replayEventsAfter(lastEventId, { send }) {
    const idx = this.events.findIndex((e) => e.eventId === lastEventId);
    if (idx < 0) throw new Error(`unknown event id ${lastEventId}`);
    const { streamId } = this.events[idx];
    for (const e of this.events.slice(idx + 1)) {
      if (e.streamId !== streamId) continue;
      if (e.message && Object.keys(e.message).length === 0) continue; // priming events carry no message
      await send(e.eventId, e.message);
    }
    return streamId;
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP: Host validation via createMcpExpressApp (localhost, 127.0.0.1, [::1]) plus Origin validation.
const sessions = new Map(); // sessionId -> {transport, server, cleanup}
const app = createMcpExpressApp({ host: HOST });
const LOCAL_HOSTNAMES = new Set(['localhost', '127.0.0.1', '[::1]']);
app.use((req, res, next) => {
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let ok = false;
    try {
      ok = LOCAL_HOSTNAMES.has(new URL(origin).hostname);
    } catch {
      ok = false;
    }
    if (!ok) {
      res.status(403).json({ jsonrpc: '2.0', error: { code: -32000, message: `Forbidden Origin: ${origin}` }, id: null });
      return;
    }
  }
  next();
});

const rpcError = (res, status, message) => res.status(status).json({ jsonrpc: '2.0', error: { code: -32000, message }, id: null });

app.all('/mcp', async (req, res) => {
  try {
    const sid = req.headers['mcp-session-id'];
    if (sid !== undefined) {
      const s = sessions.get(sid);
      if (!s) return rpcError(res, 404, 'Session not found');
      await s.transport.handleRequest(req, res, req.body);
      return;
    }
    if (req.method === 'POST' && isInitializeRequest(req.body)) {
      let sessionId;
      const { server, cleanup } = createSessionServer(() => sessionId);
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: new StreamEventStore(),
        retryInterval: RETRY_MS,
        onsessioninitialized: (id) => {
          sessionId = id;
          sessions.set(id, { transport, server, cleanup });
          log('session initialized', id);
        },
        onsessionclosed: (id) => log('session closed', id),
      });
      transport.onclose = () => {
        cleanup();
        if (sessionId) sessions.delete(sessionId);
      };
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
      return;
    }
    if (req.method === 'GET' || req.method === 'DELETE' || req.method === 'POST') {
      return rpcError(res, 400, 'Bad Request: missing Mcp-Session-Id (or not an initialize request)');
    }
    res.set('Allow', 'GET, POST, DELETE').status(405).end();
  } catch (e) {
    log('error handling request', e);
    if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
  }
});

const httpServer = app.listen(PORT, HOST, () => {
  const { port } = httpServer.address();
  process.stdout.write(`LISTENING http://${HOST}:${port}/mcp\n`);
  log(`listening on ${HOST}:${port} (page size ${PAGE_SIZE || 'off'})`);
});
httpServer.on('error', (e) => {
  log('listen failed:', e.message);
  process.exit(1);
});

async function shutdown() {
  for (const { transport } of sessions.values()) await transport.close().catch(() => {});
  httpServer.close();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
