// The official TypeScript SDK clients through Tether, against three replicas of
// the official `@modelcontextprotocol/server-everything`, for both transports:
// Streamable HTTP (`streamableHttp` mode, /mcp) and legacy HTTP+SSE (`sse`
// mode, GET /sse + POST /message?sessionId=...).
//
// Each session runs echo, get-sum, a long-running operation with progress
// notifications, a sampling and an elicitation round trip (the client's
// response is a new POST that must reach the replica waiting for it), and reads
// the replica's name (`get-env`, REPLICA_NAME) before and after: a session must
// never change replica. rr_proxy.py (no affinity) in front of the same replicas
// is the negative control and must break sessions.
//
// Run: node --test --test-force-exit clients.test.mjs (run.sh does it; needs TETHER_BIN or
// <repo>/target/debug/tether, and <repo>/.venv for rr_proxy.py).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

import { LOG_DIR, startEverythingReplica, startRoundRobin, startTether, startTetherTls, stopAll } from './lib/harness.mjs';

const SESSIONS = 8;
const MODES = {
  streamable: { serverMode: 'streamableHttp', path: '/mcp', transport: (url) => new StreamableHTTPClientTransport(url) },
  sse: { serverMode: 'sse', path: '/sse', transport: (url) => new SSEClientTransport(url) },
};

const targets = {}; // mode -> { direct, tether, tetherTls, rr }

before(async () => {
  for (const [mode, { serverMode }] of Object.entries(MODES)) {
    const replicas = [];
    for (let i = 1; i <= 3; i++) replicas.push(await startEverythingReplica(`everything-${mode}-${i}`, serverMode));
    targets[mode] = {
      direct: replicas[0],
      tether: await startTether(`tether-${mode}`, replicas),
      tetherTls: await startTetherTls(`tether-tls-${mode}`, replicas),
      rr: await startRoundRobin(`rr-${mode}`, replicas),
    };
  }
  console.error(`logs: ${LOG_DIR}`);
});

after(stopAll);

function makeClient(mode, id) {
  const client = new Client({ name: `tether-interop-${mode}-${id}`, version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
    role: 'assistant',
    content: { type: 'text', text: `sampled-by-client-${id}: ${request.params.messages[0]?.content?.text ?? ''}` },
    model: 'interop-test-model',
    stopReason: 'endTurn',
  }));
  client.setRequestHandler(ElicitRequestSchema, async () => ({
    action: 'accept',
    content: { name: `Session ${id}`, check: true, integer: 7 },
  }));
  // The TS SDK hands notifications to their handlers one microtask later than
  // responses (Protocol._onnotification vs _onresponse), so a progress
  // notification that arrives in the same read as the final response is
  // dropped with this error although it came first on the wire. Count those
  // too: the test checks what reached the client, not the SDK's ordering.
  client.lateProgress = [];
  client.onerror = (error) => {
    const m = /Received a progress notification for an unknown token: (\{.*\})$/s.exec(String(error?.message));
    if (m) client.lateProgress.push(JSON.parse(m[1]).params.progress);
  };
  return client;
}

const textOf = (result) => (result.content ?? []).map((c) => c.text ?? '').join('\n');

async function replicaOf(client, timeout) {
  const env = JSON.parse(textOf(await client.callTool({ name: 'get-env', arguments: {} }, undefined, { timeout })));
  return env.REPLICA_NAME;
}

async function workload(client, mode, base, id, timeout) {
  await client.connect(MODES[mode].transport(new URL(base + MODES[mode].path)), { timeout });
  const call = (name, args, options = {}) => client.callTool({ name, arguments: args }, undefined, { timeout, ...options });
  const owner = await replicaOf(client, timeout);
  assert.ok(owner, 'get-env names the replica');

  for (let k = 0; k < 3; k++) {
    assert.equal(textOf(await call('echo', { message: `hello ${id}.${k}` })), `Echo: hello ${id}.${k}`);
  }
  assert.match(textOf(await call('get-sum', { a: id, b: 40 })), new RegExp(`is ${id + 40}\\.`));

  const progress = [];
  const long = await call('trigger-long-running-operation', { duration: 0.6, steps: 3 }, { onprogress: (p) => progress.push(p.progress) });
  assert.match(textOf(long), /Long running operation completed/);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual([...progress, ...client.lateProgress], [1, 2, 3], 'three progress notifications, in order');

  assert.match(textOf(await call('trigger-sampling-request', { prompt: `prompt ${id}` })), new RegExp(`sampled-by-client-${id}: `));
  assert.match(textOf(await call('trigger-elicitation-request', {})), new RegExp(`Name: Session ${id}`));

  assert.equal(await replicaOf(client, timeout), owner, 'the session stayed on one replica');
  return { owner, lateProgress: client.lateProgress.length };
}

/**
 * One session's work; resolves to { owner, lateProgress }. `deadline` bounds
 * the whole session: legacy-SSE server-everything never answers a POST for a
 * session it does not hold, and a notification POST has no SDK timeout.
 */
async function session(mode, base, id, { timeout = 20000, deadline = 60000 } = {}) {
  const client = makeClient(mode, id);
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`session ${id}: no result within ${deadline} ms`)), deadline);
  });
  try {
    return await Promise.race([workload(client, mode, base, id, timeout), expired]);
  } finally {
    clearTimeout(timer);
    await client.close().catch(() => {});
  }
}

for (const mode of Object.keys(MODES)) {
  describe(`${mode}: TS SDK client -> server-everything x3`, () => {
    test('sanity: directly against one replica', async () => {
      const results = await Promise.all([0, 1].map((i) => session(mode, targets[mode].direct, 100 + i)));
      assert.deepEqual(new Set(results.map((r) => r.owner)), new Set([`everything-${mode}-1`]));
      const late = results.reduce((n, r) => n + r.lateProgress, 0);
      console.error(`[${mode} direct] progress notifications the SDK dropped as late: ${late}`);
    });

    test(`through Tether: ${SESSIONS} concurrent sessions, each on its own replica throughout`, async () => {
      const results = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => session(mode, targets[mode].tether, i + 1)));
      const used = new Set(results.map((r) => r.owner));
      const late = results.reduce((n, r) => n + r.lateProgress, 0);
      console.error(`[${mode} tether] replicas used: ${[...used].sort().join(', ')}; progress notifications the SDK dropped as late: ${late}`);
      assert.ok(used.size >= 2, `sessions spread over replicas (used: ${[...used].join(', ')})`);
    });

    test(`through Tether over HTTPS: ${SESSIONS} concurrent sessions, each on its own replica throughout`, async () => {
      assert.match(targets[mode].tetherTls, /^https:/);
      const results = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => session(mode, targets[mode].tetherTls, 300 + i)));
      const used = new Set(results.map((r) => r.owner));
      console.error(`[${mode} tether https] replicas used: ${[...used].sort().join(', ')}`);
      assert.ok(used.size >= 2, `sessions spread over replicas (used: ${[...used].join(', ')})`);
    });

    test(`control: round robin without affinity breaks the sessions`, async () => {
      const settled = await Promise.allSettled(
        Array.from({ length: SESSIONS }, (_, i) => session(mode, targets[mode].rr, 200 + i, { timeout: 4000, deadline: 8000 })),
      );
      const failed = settled.filter((s) => s.status === 'rejected');
      const reasons = [...new Set(failed.map((s) => String(s.reason?.message ?? s.reason).slice(0, 160)))];
      console.error(`[${mode} control] ${failed.length}/${SESSIONS} sessions failed: ${reasons.join(' | ')}`);
      assert.ok(failed.length >= SESSIONS / 2, `expected most sessions to fail without affinity, ${failed.length}/${SESSIONS} failed`);
    });
  });
}
