#!/usr/bin/env node
// A scripted stdio MCP server for the agent's routing tests (tests/routing.rs).
//
// It speaks newline-delimited JSON-RPC on stdin/stdout with no SDK, so a test decides exactly
// when each server message leaves it: a log sent outside any request, a server→client request
// while another session's call is in flight, a task's status after the call returned. (The
// real-world behaviour of an SDK server is covered by the server-everything tests; this one
// exists to make the routing cases deterministic.)
//
// Tools (arguments in braces):
//   log_later {ms, text}   answers at once; `ms` later sends notifications/message {data: text}
//   sleep {ms}             answers after `ms`
//   progress {steps}       sends `steps` notifications/progress for the call's token, then answers
//   sample {}              sends sampling/createMessage, answers with the text the client returned
//   flood {count, size}    answers, then sends `count` notifications/message of `size` bytes
//   task_later {ms}        answers with a CreateTaskResult; `ms` later sends the task's
//                          notifications/tasks/status (completed) and a log naming the task
//   elicit_url {}          sends a URL-mode elicitation/create; on the answer sends
//                          notifications/elicitation/complete for it, then answers
import readline from 'node:readline';

const send = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const result = (id, text, extra = {}) => send({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }], ...extra } });
const log = (data, meta) => send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data, ...(meta ? { _meta: meta } : {}) } });

let seq = 0;
const waiting = new Map(); // id of our request -> resolve
function ask(method, params) {
  const id = `srv-${++seq}`;
  send({ jsonrpc: '2.0', id, method, params });
  return new Promise((resolve) => waiting.set(id, resolve));
}

const tools = {
  log_later: (id, a) => {
    result(id, 'scheduled');
    setTimeout(() => log(String(a.text ?? 'later')), Number(a.ms ?? 0));
  },
  sleep: (id, a) => setTimeout(() => result(id, 'slept'), Number(a.ms ?? 0)),
  progress: (id, a, meta) => {
    const token = meta?.progressToken;
    const steps = Number(a.steps ?? 3);
    for (let i = 1; i <= steps; i++) {
      if (token !== undefined) send({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: i, total: steps } });
    }
    result(id, `progress ${steps}`);
  },
  sample: async (id) => {
    const r = await ask('sampling/createMessage', { messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }], maxTokens: 5 });
    result(id, `sampled: ${r.result?.content?.text ?? JSON.stringify(r.error)}`);
  },
  flood: (id, a) => {
    result(id, 'flooding');
    const pad = 'x'.repeat(Number(a.size ?? 100));
    setTimeout(() => {
      for (let i = 0; i < Number(a.count ?? 1); i++) log(`flood-${i}-${pad}`);
    }, 0);
  },
  task_later: (id, a) => {
    const taskId = `task-${++seq}`;
    const now = new Date().toISOString();
    send({ jsonrpc: '2.0', id, result: { task: { taskId, status: 'working', createdAt: now, lastUpdatedAt: now, ttl: 60000 } } });
    setTimeout(() => {
      log(`log of ${taskId}`, { 'io.modelcontextprotocol/related-task': { taskId } });
      send({ jsonrpc: '2.0', method: 'notifications/tasks/status', params: { taskId, status: 'completed', createdAt: now, lastUpdatedAt: new Date().toISOString(), ttl: 60000 } });
    }, Number(a.ms ?? 0));
  },
  elicit_url: async (id) => {
    const elicitationId = `elicit-${++seq}`;
    const r = await ask('elicitation/create', { mode: 'url', elicitationId, url: 'https://example.com/e2e', message: 'open it' });
    send({ jsonrpc: '2.0', method: 'notifications/elicitation/complete', params: { elicitationId } });
    result(id, `elicited: ${r.result?.action ?? 'error'} ${elicitationId}`);
  },
};

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    return;
  }
  if (m.method === undefined && m.id !== undefined) {
    const w = waiting.get(m.id);
    if (w) {
      waiting.delete(m.id);
      w(m);
    }
    return;
  }
  if (m.id === undefined) return; // notifications
  switch (m.method) {
    case 'initialize':
      send({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: m.params?.protocolVersion ?? '2025-11-25', capabilities: { tools: {}, logging: {} }, serverInfo: { name: 'script-server', version: '1.0.0' } } });
      break;
    case 'ping':
      send({ jsonrpc: '2.0', id: m.id, result: {} });
      break;
    case 'tools/list':
      send({ jsonrpc: '2.0', id: m.id, result: { tools: Object.keys(tools).map((name) => ({ name, inputSchema: { type: 'object' } })) } });
      break;
    case 'tools/call': {
      const t = tools[m.params?.name];
      if (!t) send({ jsonrpc: '2.0', id: m.id, error: { code: -32602, message: `unknown tool ${m.params?.name}` } });
      else t(m.id, m.params?.arguments ?? {}, m.params?._meta);
      break;
    }
    default:
      send({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: `method not found: ${m.method}` } });
  }
});
rl.on('close', () => process.exit(0));
