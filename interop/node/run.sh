#!/usr/bin/env bash
# Tether against the official TypeScript MCP peers, in one command:
#   1. the MCP conformance suite (server scenarios) against one replica of
#      conformance-server.mjs, against Tether over three replicas, and against
#      rr_proxy.py (no affinity) over the same three: the negative control;
#   2. TS SDK clients (Streamable HTTP and legacy SSE) through Tether against
#      three replicas of server-everything per transport, with the same control;
#      and failover.test.mjs: a client whose session's owner is killed, with and
#      without `failover = "reinitialize"`.
#
# Exits non-zero if any scenario differs between direct and Tether, if a
# scenario fails directly, if the negative control did not fail, or if a client
# test fails. Builds no Rust: it expects TETHER_BIN (default
# <repo>/target/debug/tether) and <repo>/.venv (scripts/test creates it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export TETHER_BIN="${TETHER_BIN:-$REPO/target/debug/tether}"
export PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
SECONDS=0

if [[ ! -x "$TETHER_BIN" ]]; then
  echo "run.sh: no Tether binary at $TETHER_BIN (cargo build --bin tether, or set TETHER_BIN)" >&2
  exit 2
fi
if [[ ! -x "$PYTHON" ]]; then
  echo "run.sh: no Python at $PYTHON for rr_proxy.py (scripts/test creates <repo>/.venv, or set PYTHON)" >&2
  exit 2
fi

# npm ci when node_modules is missing or package-lock.json changed since the last install.
cd "$HERE"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.package-lock.sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_sum" >"$stamp"
fi

# The conformance CLI needs Node >= 22; the pinned npm package `node` provides it.
NODE="$HERE/node_modules/.bin/node"
node_major="$("$NODE" -p 'process.versions.node.split(".")[0]')"
if ((node_major < 22)); then
  echo "run.sh: $NODE is Node $node_major, need >= 22" >&2
  exit 2
fi

INTEROP_LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tether-node-interop.XXXXXX")"
export INTEROP_LOG_DIR
echo "== logs (replicas, Tether with TETHER_LOG=debug, suite output): $INTEROP_LOG_DIR"
echo "== $("$NODE" --version), tether $("$TETHER_BIN" --version | awk '{print $NF}'), $(cd "$HERE" && "$NODE" -p "['sdk','conformance','server-everything'].map(p => p + ' ' + require('./node_modules/@modelcontextprotocol/' + p + '/package.json').version).join(', ')")"

# HTTPS: a test CA and certificate (made with trustme, from the venv); Node trusts the CA
# through NODE_EXTRA_CA_CERTS, read at start by every node process below.
TETHER_TLS_DIR="$INTEROP_LOG_DIR/pki"
"$PYTHON" "$REPO/interop/python/make_pki.py" "$TETHER_TLS_DIR"
export TETHER_TLS_DIR NODE_EXTRA_CA_CERTS="$TETHER_TLS_DIR/ca.pem"

status=0

echo "== conformance suite: direct vs Tether (3 replicas) vs round robin (3 replicas)"
conformance_rc=0
"$NODE" conformance-compare.mjs | tee "$INTEROP_LOG_DIR/conformance-table.md" || conformance_rc=$?
((conformance_rc == 0)) || status=1

echo "== TS SDK clients through Tether (server-everything, streamableHttp and sse)"
clients_rc=0
"$NODE" --test --test-force-exit --test-timeout=120000 --test-reporter=spec clients.test.mjs failover.test.mjs 2>&1 | tee "$INTEROP_LOG_DIR/clients.log" || clients_rc=$?
((clients_rc == 0)) || status=1

echo
echo "== summary"
grep -E '^\|' "$INTEROP_LOG_DIR/conformance-table.md" || echo "(no conformance table: see $INTEROP_LOG_DIR)"
echo
printf 'conformance comparison: %s\n' "$([[ $conformance_rc == 0 ]] && echo ok || echo "FAILED (rc $conformance_rc)")"
printf 'TS SDK client tests:    %s\n' "$([[ $clients_rc == 0 ]] && echo ok || echo "FAILED (rc $clients_rc)")"
echo "took ${SECONDS}s; logs: $INTEROP_LOG_DIR"
exit "$status"
