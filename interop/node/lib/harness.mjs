// Process harness for the Node interop tests: start replicas, Tether and the
// round-robin control on 127.0.0.1, wait for the line that names their port,
// and stop every child (also on failure or Ctrl-C).

import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(HERE, '..', '..');
export const TETHER_BIN = process.env.TETHER_BIN || join(REPO, 'target', 'debug', 'tether');
export const PYTHON = process.env.PYTHON || join(REPO, '.venv', 'bin', 'python');
export const RR_PROXY = join(REPO, 'interop', 'python', 'rr_proxy.py');
export const EVERYTHING = join(HERE, 'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js');
export const LOG_DIR = process.env.INTEROP_LOG_DIR || mkdtempSync(join(tmpdir(), 'tether-node-interop-'));

const children = new Set();

/** Stops every child this process started (SIGTERM, then SIGKILL after 2 s). */
export async function stopAll() {
  const live = [...children];
  children.clear();
  await Promise.all(live.map(stop));
}

export function stop(child) {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
    child.once('exit', () => {
      clearTimeout(kill);
      done();
    });
    child.kill('SIGTERM');
  });
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    stopAll().finally(() => process.exit(130));
  });
}
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/**
 * Starts a process and resolves once a line of its stdout (or stderr, with
 * `stream: 'stderr'`) matches `ready`; resolves to { child, match }.
 * Both streams are copied to `<LOG_DIR>/<name>.log`.
 */
export function startProcess(name, cmd, args, { env = {}, inheritEnv = true, ready, stream = 'stdout', timeoutMs = 20000 } = {}) {
  const logFile = join(LOG_DIR, `${name}.log`);
  const logStream = createWriteStream(logFile);
  const child = spawn(cmd, args, { env: inheritEnv ? { ...process.env, ...env } : env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.stdout.pipe(logStream, { end: false });
  child.stderr.pipe(logStream, { end: false });
  child.once('exit', () => children.delete(child));
  return new Promise((resolvePromise, reject) => {
    let buffered = '';
    const timer = setTimeout(() => fail(new Error(`${name}: no ready line within ${timeoutMs} ms (log: ${logFile})`)), timeoutMs);
    const onData = (chunk) => {
      buffered += chunk.toString();
      for (const line of buffered.split('\n')) {
        const match = ready.exec(line);
        if (match) {
          clearTimeout(timer);
          child[stream].off('data', onData);
          child.off('exit', onExit);
          resolvePromise({ child, match, logFile });
          return;
        }
      }
    };
    const onExit = (code, signal) => fail(new Error(`${name} exited (${code ?? signal}) before it was ready (log: ${logFile})`));
    function fail(error) {
      clearTimeout(timer);
      stop(child).finally(() => reject(error));
    }
    child[stream].on('data', onData);
    child.once('exit', onExit);
  });
}

/** A port that was free a moment ago (for servers that cannot bind port 0 and report it). */
export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePromise(port));
    });
  });
}

/** The conformance test server of this folder, as replica `name`. */
export async function startConformanceReplica(name) {
  const { match } = await startProcess(name, process.execPath, [join(HERE, 'conformance-server.mjs'), '--port', '0', '--name', name], {
    ready: /^PORT (\d+)$/,
  });
  return `http://127.0.0.1:${match[1]}`;
}

/**
 * `@modelcontextprotocol/server-everything` in `streamableHttp` or `sse` mode.
 * It reads env PORT and calls `app.listen(PORT)` without a host, so
 * `bind-loopback.mjs` is preloaded: it pins the bind to 127.0.0.1 and prints
 * the real port, which lets us pass PORT=0.
 */
export async function startEverythingReplica(name, mode) {
  const { match, child } = await startProcess(
    name,
    process.execPath,
    ['--import', join(HERE, 'lib', 'bind-loopback.mjs'), EVERYTHING, mode],
    // A minimal environment: its `get-env` tool returns the whole of it.
    { env: { PATH: process.env.PATH ?? '', PORT: '0', REPLICA_NAME: name }, inheritEnv: false, ready: /^BOUND (\d+)$/ },
  );
  const url = `http://127.0.0.1:${match[1]}`;
  replicaProcesses.set(url, child);
  return url;
}

const replicaProcesses = new Map();

/** Kills the replica started at `url` (SIGKILL: it dies as a crashed server does). */
export function killReplica(url) {
  const child = replicaProcesses.get(url);
  if (!child) throw new Error(`no replica at ${url}`);
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once('exit', () => done());
    child.kill('SIGKILL');
  });
}

export function requireTether() {
  if (!existsSync(TETHER_BIN)) {
    throw new Error(`Tether binary not found at ${TETHER_BIN}: run \`cargo build --bin tether\` or set TETHER_BIN`);
  }
}

/** Tether in front of `backends`, with `toml` as its config file; resolves to its base URL. */
export async function startTether(name, backends, env = {}, toml = '') {
  requireTether();
  const args = ['--listen', '127.0.0.1:0', ...backends.flatMap((b) => ['--backend', b])];
  if (toml) {
    const file = join(LOG_DIR, `${name}.toml`);
    writeFileSync(file, toml);
    args.push('--config', file);
  }
  const { match } = await startProcess(name, TETHER_BIN, args, {
    env: { TETHER_LOG: process.env.TETHER_LOG || 'debug', ...env },
    ready: /proxy listening on (127\.0\.0\.1:\d+)/,
  });
  return `http://${match[1]}`;
}

/**
 * Tether terminating TLS in front of `backends`, with the test certificate
 * run.sh made (TETHER_TLS_DIR; clients trust its CA through NODE_EXTRA_CA_CERTS);
 * resolves to its https:// base URL.
 */
export async function startTetherTls(name, backends, env = {}) {
  requireTether();
  const dir = process.env.TETHER_TLS_DIR;
  if (!dir) throw new Error('TETHER_TLS_DIR is not set (run.sh makes the test certificates)');
  const args = ['--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'server.pem'), '--tls-key', join(dir, 'server.key'),
    ...backends.flatMap((b) => ['--backend', b])];
  const { match } = await startProcess(name, TETHER_BIN, args, {
    env: { TETHER_LOG: process.env.TETHER_LOG || 'debug', ...env },
    ready: /proxy listening on (127\.0\.0\.1:\d+)/,
  });
  return `https://${match[1]}`;
}

/** A fresh session key from `tether keygen`, for several Tether instances. */
export function tetherKey() {
  requireTether();
  return execFileSync(TETHER_BIN, ['keygen'], { encoding: 'utf8' }).trim();
}

/** The plain round-robin proxy (negative control); resolves to its base URL. */
export async function startRoundRobin(name, backends) {
  const args = [RR_PROXY, ...backends.flatMap((b) => ['--backend', b])];
  const { match } = await startProcess(name, PYTHON, args, { ready: /^PORT (\d+)$/ });
  return `http://127.0.0.1:${match[1]}`;
}
