#!/usr/bin/env node
// A Streamable HTTP MCP server, written with the official TypeScript SDK, that
// implements what every active server scenario of @modelcontextprotocol/conformance
// 0.1.16 asks for (tools, resources, prompts, logging, completion, progress,
// sampling, elicitation, SSE polling with resumption, DNS-rebinding protection).
//
// It is built to run as N replicas behind Tether: each process keeps its
// sessions in memory only, so a request that reaches the wrong replica gets the
// spec's 404 "Session not found". Every tool result is plain SDK output; the extra
// tool `whoami` names the replica so tests can see where a session lives.
//
// Usage: node conformance-server.mjs [--port 0] [--name replica-a]
// Binds 127.0.0.1 (port 0 by default) and prints exactly `PORT <n>` on stdout
// once it listens. Logs go to stderr.

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ErrorCode,
  ReadResourceRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest,
} from '@modelcontextprotocol/sdk/types.js';

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '0' },
    name: { type: 'string', default: process.env.REPLICA_NAME ?? `replica-${process.pid}` },
  },
});
const REPLICA = opts.name;
const log = (...args) => console.error(`[${REPLICA}]`, ...args);

// 1x1 PNG and a minimal WAV, base64.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (t) => ({ type: 'text', text: t });
const noArgs = { type: 'object', properties: {} };

// === Event store (SEP-1699 resumability) ===
//
// One per session. Event ids are `<streamId>_<seq>` with a zero-padded
// sequence, so the ids of one stream sort in the order they were written.
class MemoryEventStore {
  #events = []; // { id, streamId, message }
  #seq = 0;

  async storeEvent(streamId, message) {
    const id = `${streamId}_${String(++this.#seq).padStart(10, '0')}`;
    this.#events.push({ id, streamId, message });
    return id;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.find((e) => e.id === eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const at = this.#events.findIndex((e) => e.id === lastEventId);
    if (at < 0) throw new Error(`unknown event id ${lastEventId}`);
    const { streamId } = this.#events[at];
    for (const e of this.#events.slice(at + 1)) {
      // The priming event stores `{}`: it is not a message to replay.
      if (e.streamId === streamId && Object.keys(e.message).length > 0) {
        await send(e.id, e.message);
      }
    }
    return streamId;
  }
}

// === Tools ===

async function elicit(extra, message, requestedSchema) {
  const result = await extra.sendRequest(
    { method: 'elicitation/create', params: { mode: 'form', message, requestedSchema } },
    ElicitResultSchema,
  );
  return {
    content: [text(`Elicitation result: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)],
  };
}

const TOOLS = [
  {
    name: 'whoami',
    description: 'Names the replica that serves this session',
    inputSchema: noArgs,
    run: async () => ({ content: [text(REPLICA)] }),
  },
  {
    name: 'test_simple_text',
    description: 'Returns one text content item',
    inputSchema: noArgs,
    run: async () => ({ content: [text('This is a simple text response for testing.')] }),
  },
  {
    name: 'test_image_content',
    description: 'Returns one image content item',
    inputSchema: noArgs,
    run: async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] }),
  },
  {
    name: 'test_audio_content',
    description: 'Returns one audio content item',
    inputSchema: noArgs,
    run: async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] }),
  },
  {
    name: 'test_embedded_resource',
    description: 'Returns an embedded resource',
    inputSchema: noArgs,
    run: async () => ({
      content: [
        {
          type: 'resource',
          resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
        },
      ],
    }),
  },
  {
    name: 'test_multiple_content_types',
    description: 'Returns text, image and resource content',
    inputSchema: noArgs,
    run: async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: PNG, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' },
        },
      ],
    }),
  },
  {
    name: 'test_tool_with_logging',
    description: 'Sends three log notifications while it runs',
    inputSchema: noArgs,
    run: async (_args, extra) => {
      for (const step of ['Tool execution started', 'Tool processing data', 'Tool execution completed']) {
        await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', logger: REPLICA, data: step } });
        await sleep(20);
      }
      return { content: [text('Tool with logging executed successfully')] };
    },
  },
  {
    name: 'test_tool_with_progress',
    description: 'Sends three progress notifications while it runs',
    inputSchema: noArgs,
    run: async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100, message: `step ${progress}/100` },
          });
        }
        await sleep(20);
      }
      return { content: [text(String(progressToken))] };
    },
  },
  {
    name: 'test_error_handling',
    description: 'Always fails with a tool error',
    inputSchema: noArgs,
    run: async () => {
      // A thrown error becomes a CallToolResult with isError: true (below).
      throw new Error('This tool intentionally returns an error for testing');
    },
  },
  {
    name: 'test_reconnection',
    description: 'Closes its SSE response stream mid-call; the result arrives after the client resumes (SEP-1699)',
    inputSchema: noArgs,
    run: async (_args, extra) => {
      extra.closeSSEStream?.();
      await sleep(100);
      return { content: [text('Reconnection test completed successfully.')] };
    },
  },
  {
    name: 'test_sampling',
    description: 'Asks the client for an LLM completion',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] },
    run: async (args, extra) => {
      const result = await extra.sendRequest(
        {
          method: 'sampling/createMessage',
          params: { messages: [{ role: 'user', content: text(String(args.prompt)) }], maxTokens: 100 },
        },
        CreateMessageResultSchema,
      );
      return { content: [text(`LLM response: ${result.content?.text ?? JSON.stringify(result.content)}`)] };
    },
  },
  {
    name: 'test_elicitation',
    description: 'Asks the user for input through the client',
    inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
    run: (args, extra) =>
      elicit(extra, String(args.message), {
        type: 'object',
        properties: { response: { type: 'string', description: "User's response" } },
        required: ['response'],
      }),
  },
  {
    name: 'test_elicitation_sep1034_defaults',
    description: 'Elicitation whose fields carry default values (SEP-1034)',
    inputSchema: noArgs,
    run: (_args, extra) =>
      elicit(extra, 'Review the fields (defaults filled in)', {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
          verified: { type: 'boolean', description: 'Verified', default: true },
        },
        required: [],
      }),
  },
  {
    name: 'test_elicitation_sep1330_enums',
    description: 'Elicitation with the five enum schema forms (SEP-1330)',
    inputSchema: noArgs,
    run: (_args, extra) => {
      const titled = (prefix, label) => [1, 2, 3].map((i) => ({ const: `${prefix}${i}`, title: `${label} ${i}` }));
      return elicit(extra, 'Pick options', {
        type: 'object',
        properties: {
          untitledSingle: { type: 'string', description: 'One option', enum: ['option1', 'option2', 'option3'] },
          titledSingle: { type: 'string', description: 'One titled option', oneOf: titled('value', 'Option') },
          legacyEnum: {
            type: 'string',
            description: 'One option (legacy enumNames)',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array',
            description: 'Several options',
            minItems: 1,
            maxItems: 3,
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array',
            description: 'Several titled options',
            minItems: 1,
            maxItems: 3,
            items: { anyOf: titled('value', 'Choice') },
          },
        },
        required: [],
      });
    },
  },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Input schema uses JSON Schema 2020-12 features (SEP-1613)',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
    run: async (args) => ({ content: [text(`called with ${JSON.stringify(args)}`)] }),
  },
];

// === Resources and prompts ===

const RESOURCES = [
  {
    uri: 'test://static-text',
    name: 'static-text',
    description: 'A static text resource',
    mimeType: 'text/plain',
    read: () => ({ text: 'This is the content of the static text resource.' }),
  },
  {
    uri: 'test://static-binary',
    name: 'static-binary',
    description: 'A static binary resource (PNG)',
    mimeType: 'image/png',
    read: () => ({ blob: PNG }),
  },
  {
    uri: 'test://watched-resource',
    name: 'watched-resource',
    description: 'A resource clients may subscribe to',
    mimeType: 'text/plain',
    read: () => ({ text: 'Watched resource content' }),
  },
];
const TEMPLATE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS = [
  {
    name: 'test_simple_prompt',
    description: 'A prompt without arguments',
    arguments: [],
    get: () => [{ role: 'user', content: text('This is a simple prompt for testing.') }],
  },
  {
    name: 'test_prompt_with_arguments',
    description: 'A prompt with two required arguments',
    arguments: [
      { name: 'arg1', description: 'First argument', required: true },
      { name: 'arg2', description: 'Second argument', required: true },
    ],
    get: (a) => [{ role: 'user', content: text(`Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'`) }],
  },
  {
    name: 'test_prompt_with_embedded_resource',
    description: 'A prompt that embeds a resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    get: (a) => [
      { role: 'user', content: { type: 'resource', resource: { uri: a.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content.' } } },
      { role: 'user', content: text('Please process the embedded resource above.') },
    ],
  },
  {
    name: 'test_prompt_with_image',
    description: 'A prompt that carries an image',
    arguments: [],
    get: () => [
      { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
      { role: 'user', content: text('Please analyze the image above.') },
    ],
  },
];

// === One MCP server per session ===

function createMcpServer() {
  const server = new Server(
    { name: 'tether-conformance-server', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const subscriptions = new Set();

  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: TOOLS.map(({ name, description, inputSchema }) => ({ name, description, inputSchema })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = TOOLS.find((t) => t.name === request.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    try {
      return await tool.run(request.params.arguments ?? {}, { ...extra, _meta: request.params._meta });
    } catch (error) {
      return { isError: true, content: [text(error instanceof Error ? error.message : String(error))] };
    }
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({
    resources: RESOURCES.map(({ uri, name, description, mimeType }) => ({ uri, name, description, mimeType })),
  }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [
      { uriTemplate: 'test://template/{id}/data', name: 'template', description: 'Data for one id', mimeType: 'application/json' },
    ],
  }));
  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    const { uri } = request.params;
    const resource = RESOURCES.find((r) => r.uri === uri);
    if (resource) return { contents: [{ uri, mimeType: resource.mimeType, ...resource.read() }] };
    const m = TEMPLATE.exec(uri);
    if (m) {
      const body = JSON.stringify({ id: m[1], templateTest: true, data: `Data for ID: ${m[1]}` });
      return { contents: [{ uri, mimeType: 'application/json', text: body }] };
    }
    throw new McpError(-32002, `Resource not found: ${uri}`);
  });
  server.setRequestHandler(SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({
    prompts: PROMPTS.map(({ name, description, arguments: args }) => ({ name, description, arguments: args })),
  }));
  server.setRequestHandler(GetPromptRequestSchema, async (request) => {
    const prompt = PROMPTS.find((p) => p.name === request.params.name);
    if (!prompt) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${request.params.name}`);
    return { messages: prompt.get(request.params.arguments ?? {}) };
  });
  server.setRequestHandler(CompleteRequestSchema, async () => ({ completion: { values: [], total: 0, hasMore: false } }));
  // logging/setLevel: the SDK's Server installs its own handler for the `logging` capability.
  return server;
}

// === HTTP ===

const sessions = new Map(); // session id -> transport

// Host-header validation for a 127.0.0.1 bind (localhost names, any port):
// the DNS-rebinding defence the suite checks. A proxy in front must forward the
// client's Host (or another loopback Host).
const app = createMcpExpressApp({ host: '127.0.0.1' });

// The SDK's Express app checks Host only. Spec 2025-11-25 (transports,
// "Security Warning"): servers MUST validate Origin and answer 403 when it is
// present and invalid. Loopback origins are the valid ones here.
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);
app.use((req, res, next) => {
  const origin = req.headers.origin;
  if (origin === undefined) return next();
  let hostname = '';
  try {
    hostname = new URL(origin).hostname;
  } catch {
    // An Origin that is not a URL is invalid.
  }
  if (LOOPBACK.has(hostname)) return next();
  res.status(403).json({ jsonrpc: '2.0', error: { code: -32000, message: `Invalid Origin: ${origin}` }, id: null });
});

const jsonRpcError = (res, status, code, message) =>
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });

app.post('/mcp', async (req, res) => {
  const sid = req.headers['mcp-session-id'];
  try {
    if (sid) {
      const transport = sessions.get(sid);
      if (!transport) return jsonRpcError(res, 404, -32001, 'Session not found');
      return await transport.handleRequest(req, res, req.body);
    }
    if (!isInitializeRequest(req.body)) {
      return jsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: new MemoryEventStore(),
      retryInterval: 500,
      onsessioninitialized: (id) => {
        sessions.set(id, transport);
        log('session', id);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await createMcpServer().connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    log('POST failed:', error);
    if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error');
  }
});

const bySession = async (req, res) => {
  const sid = req.headers['mcp-session-id'];
  if (!sid) return jsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
  const transport = sessions.get(sid);
  if (!transport) return jsonRpcError(res, 404, -32001, 'Session not found');
  try {
    await transport.handleRequest(req, res);
  } catch (error) {
    log(`${req.method} failed:`, error);
    if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error');
  }
};
app.get('/mcp', bySession);
app.delete('/mcp', bySession);

const httpServer = app.listen(Number(opts.port), '127.0.0.1', () => {
  const { port } = httpServer.address();
  process.stdout.write(`PORT ${port}\n`);
  log(`listening on http://127.0.0.1:${port}/mcp`);
});
httpServer.on('error', (error) => {
  log('listen failed:', error);
  process.exit(1);
});

function shutdown() {
  for (const transport of sessions.values()) transport.close().catch(() => {});
  httpServer.close();
  httpServer.closeAllConnections?.();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
