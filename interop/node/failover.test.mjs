// Failover by re-initialize with the official TypeScript SDK client: a session
// through Tether over three replicas of `@modelcontextprotocol/server-everything`
// (streamableHttp; its echo and get-sum tools keep no per-session state), its
// owner killed mid-run. With `failover = "reinitialize"` the client's next calls
// succeed on another replica with no error surfaced, and the transport adopts
// the new session's token; without it, the next call fails with the spec's 404.
//
// Run: node --test --test-force-exit failover.test.mjs (run.sh does it).

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { killReplica, startEverythingReplica, startTether, stopAll } from './lib/harness.mjs';

after(stopAll);

const textOf = (result) => (result.content ?? []).map((c) => c.text ?? '').join('\n');
const timeout = 15000;

/** Three fresh replicas (one will be killed) and Tether with `toml` in front. */
async function stack(name, toml) {
  const replicas = [];
  for (let i = 1; i <= 3; i++) replicas.push(await startEverythingReplica(`${name}-${i}`, 'streamableHttp'));
  const tether = await startTether(`tether-${name}`, replicas, {}, toml);
  return { replicas, url: new URL(`${tether}/mcp`) };
}

/** A connected client; `errors` collects what the SDK reports through onerror. */
async function connect(url) {
  const client = new Client({ name: 'tether-failover-test', version: '1.0.0' }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(url);
  const errors = [];
  client.onerror = (error) => errors.push(String(error?.message ?? error));
  await client.connect(transport, { timeout });
  return { client, transport, errors };
}

async function replicaOf(client) {
  const env = JSON.parse(textOf(await client.callTool({ name: 'get-env', arguments: {} }, undefined, { timeout })));
  return env.REPLICA_NAME;
}

async function calls(client, k) {
  assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: `m${k}` } }, undefined, { timeout })), `Echo: m${k}`);
  assert.match(textOf(await client.callTool({ name: 'get-sum', arguments: { a: k, b: 40 } }, undefined, { timeout })), new RegExp(`is ${k + 40}\\.`));
}

/** The replica URL named `name` (REPLICA_NAME is `<stack>-<i>`). */
const urlOf = (replicas, name) => replicas[Number(name.split('-').pop()) - 1];

test('failover = "reinitialize": the TS client goes on on another replica when its owner dies', async () => {
  const { replicas, url } = await stack('failover', 'failover = "reinitialize"\n');
  const { client, transport, errors } = await connect(url);
  try {
    await calls(client, 1);
    const owner = await replicaOf(client);
    const before = transport.sessionId;
    await killReplica(urlOf(replicas, owner));
    for (let k = 2; k <= 4; k++) await calls(client, k);
    const now = await replicaOf(client);
    assert.notEqual(now, owner, 'answered by another replica');
    assert.notEqual(transport.sessionId, before, 'the client adopted the new session token');
    for (let k = 5; k <= 6; k++) await calls(client, k);
    assert.equal(await replicaOf(client), now, 'and stays there');
    // Its event stream broke with its owner; what it saw after is not a 404.
    assert.deepEqual(errors.filter((e) => /404|not found/i.test(e)), [], `errors: ${errors.join(' | ')}`);
  } finally {
    await client.close().catch(() => {});
  }
});

test('without failover the TS client sees the 404 when its owner dies', async () => {
  const { replicas, url } = await stack('nofailover', '');
  const { client } = await connect(url);
  try {
    await calls(client, 1);
    await killReplica(urlOf(replicas, await replicaOf(client)));
    await assert.rejects(
      client.callTool({ name: 'echo', arguments: { message: 'after' } }, undefined, { timeout }),
      (error) => /404|Session not found/i.test(String(error?.message) + String(error?.code)),
    );
  } finally {
    await client.close().catch(() => {});
  }
});
