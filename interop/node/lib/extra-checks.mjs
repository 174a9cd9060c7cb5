// Checks the conformance suite 0.1.16 does not make, run against the
// conformance server the same way as the suite (direct, Tether, round robin).
//
// - sse-resume-2025-11-25 (raw HTTP): the suite's `server-sse-polling` sends
//   `MCP-Protocol-Version: 2025-03-26` on a 2025-11-25 session, so the TS SDK
//   (rightly) sends no priming event and never closes the stream: the resume
//   path is never exercised (see docs/conformance.md). This check sends the
//   negotiated version: priming event (id, empty data, retry), the server
//   closes the stream mid-call, the client GETs with Last-Event-ID and must
//   receive the tool result. Behind a balancer the GET must reach the owner.
// - sse-resume-sdk-client: the same through the TS SDK client, which resumes
//   on its own.
// - origin-403: spec 2025-11-25 says a present, invalid Origin gets 403; the
//   suite's DNS-rebinding scenario sends a bad Host too, so it never isolates
//   Origin. A balancer must pass Origin through for the server to check it.
// - sticky-whoami: 6 concurrent SDK sessions x 8 `whoami` calls; each session
//   must stay on one replica (and, behind a balancer, 3 replicas are used).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const VERSION = '2025-11-25';
const ACCEPT = 'application/json, text/event-stream';

/** Parses an SSE body into events ({ id, event, data, retry }) as they arrive. */
async function* sseEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', onAbort);
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { data: [] };
        for (const line of block.split('\n')) {
          if (!line || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') event.data.push(val);
          else event[field] = val;
        }
        if (event.id === undefined && event.data.length === 0 && event.retry === undefined) continue;
        yield { ...event, data: event.data.join('\n') };
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

async function rawInitialize(url) {
  const init = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: VERSION, capabilities: {}, clientInfo: { name: 'tether-sse-resume', version: '1.0.0' } },
    }),
  });
  await init.text();
  const sid = init.headers.get('mcp-session-id');
  if (init.status !== 200 || !sid) throw new Error(`initialize: HTTP ${init.status}, session id ${sid}`);
  const headers = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': sid, 'mcp-protocol-version': VERSION };
  const note = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
  await note.text();
  if (note.status !== 202) throw new Error(`notifications/initialized: HTTP ${note.status}`);
  return headers;
}

export async function sseResumeRaw(url) {
  const headers = await rawInitialize(url);
  const call = await fetch(url, {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'test_reconnection', arguments: {} } }),
  });
  if (call.status !== 200) throw new Error(`tools/call: HTTP ${call.status} ${await call.text()}`);
  const first = [];
  for await (const event of sseEvents(call.body, AbortSignal.timeout(5000))) first.push(event);
  const priming = first[0];
  if (!priming?.id || priming.data.trim() !== '' || priming.retry === undefined) {
    throw new Error(`no priming event (id, empty data, retry) first: ${JSON.stringify(first)}`);
  }
  if (first.some((e) => e.data.includes('"id":7'))) throw new Error('result arrived before the server closed the stream');
  const lastEventId = first.at(-1).id;
  const resume = await fetch(url, { method: 'GET', headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } });
  if (resume.status !== 200) throw new Error(`GET with Last-Event-ID: HTTP ${resume.status} ${await resume.text()}`);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000);
  try {
    for await (const event of sseEvents(resume.body, abort.signal)) {
      if (!event.data) continue;
      const message = JSON.parse(event.data);
      if (message.id === 7 && message.result) return `priming id ${priming.id.slice(0, 12)}..., retry ${priming.retry}, result replayed after GET`;
    }
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  throw new Error('GET with Last-Event-ID ended without the tool result');
}

async function sdkClient(url, name) {
  const client = new Client({ name, version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 3 },
  });
  try {
    await client.connect(transport);
  } catch (error) {
    await client.close().catch(() => {});
    throw error;
  }
  return client;
}

export async function sseResumeSdkClient(url) {
  const client = await sdkClient(url, 'tether-sse-resume-sdk');
  try {
    const result = await client.callTool({ name: 'test_reconnection', arguments: {} }, undefined, { timeout: 10000 });
    const out = result.content?.[0]?.text ?? '';
    if (!out.includes('Reconnection test completed')) throw new Error(`unexpected result ${JSON.stringify(result)}`);
    return 'SDK client resumed and received the result';
  } finally {
    await client.close().catch(() => {});
  }
}

export async function stickyWhoami(url, { sessions = 6, calls = 8, expectReplicas = 1 } = {}) {
  const owners = await Promise.all(
    Array.from({ length: sessions }, async (_, i) => {
      const client = await sdkClient(url, `tether-sticky-${i}`);
      try {
        const seen = new Set();
        for (let c = 0; c < calls; c++) {
          const result = await client.callTool({ name: 'whoami', arguments: {} }, undefined, { timeout: 10000 });
          seen.add(result.content[0].text);
        }
        if (seen.size !== 1) throw new Error(`session ${i} moved between replicas: ${[...seen].join(', ')}`);
        return [...seen][0];
      } finally {
        await client.close().catch(() => {});
      }
    }),
  );
  const replicas = new Set(owners);
  if (replicas.size < expectReplicas) throw new Error(`only ${replicas.size} replica(s) used: ${[...replicas].join(', ')}`);
  return `${sessions} sessions x ${calls} calls, each on one replica; replicas used: ${[...replicas].sort().join(', ')}`;
}

export async function origin403(url) {
  const post = (origin) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, ...(origin && { origin }) },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: VERSION, capabilities: {}, clientInfo: { name: 'tether-origin', version: '1.0.0' } },
      }),
    }).then(async (r) => (await r.text(), r.status));
  const evil = await post('http://evil.example.com');
  const good = await post(new URL(url).origin);
  if (evil !== 403 || good !== 200) throw new Error(`Origin evil.example.com -> ${evil} (want 403), own origin -> ${good} (want 200)`);
  return 'evil Origin 403, loopback Origin 200';
}

export const EXTRA_CHECKS = [
  { name: 'x-origin-403', sessionless: true, run: (url) => origin403(url) },
  { name: 'x-sse-resume-2025-11-25', run: (url) => sseResumeRaw(url) },
  { name: 'x-sse-resume-sdk-client', run: (url) => sseResumeSdkClient(url) },
  { name: 'x-sticky-whoami', run: (url, target) => stickyWhoami(url, { expectReplicas: target === 'direct' ? 1 : 2 }) },
];
