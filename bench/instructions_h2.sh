#!/usr/bin/env bash
# User-space instructions per sticky tools/call request over HTTP/2 (h2c with prior knowledge),
# counted by callgrind: the HTTP/2 counterpart of bench/instructions.sh. h2load sends N POSTs in
# one session over 8 connections with 8 streams each; a run of 8 (start-up, the connections, the
# session's initialize) is subtracted, and the difference is given per request.
#
# Usage: bench/instructions_h2.sh [TETHER_BIN] [N=4008]    (needs valgrind, h2load and curl)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in valgrind h2load curl; do
  command -v $tool >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done
if [ $# -ge 1 ]; then T=$1; else (cd "$ROOT" && cargo build --release --quiet --bin tether); T=$TARGET_DIR/release/tether; fi
N=${2:-4008}
(cd "$ROOT" && cargo build --release --quiet -p mcp-tether-testkit --bin fast-replica)
R=$TARGET_DIR/release/fast-replica
W=$(mktemp -d)
RP=${REPLICA_PORT:-19311} TP=${TETHER_PORT:-19392}
"$R" --port $RP --tag s1 >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT
cat >"$W/tether.toml" <<EOF
listen = "127.0.0.1:$TP"
backends = ["http://127.0.0.1:$RP"]
[http2]
h2c = true
EOF
printf '%s' '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}' >"$W/call.json"
count() {
  TETHER_THREADS=1 TETHER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/out.$1" \
    "$T" --config "$W/tether.toml" >/dev/null 2>"$W/vg.$1" &
  local vp=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$TP) 2>/dev/null && break; sleep 0.2; done
  local sid
  sid=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cg","version":"0"}}}' \
    "http://127.0.0.1:$TP/mcp" | awk 'tolower($1)=="mcp-session-id:"{print $2}' | tr -d '\r')
  [ -n "$sid" ] || { echo "bench: no session id" >&2; exit 1; }
  h2load -c 8 -m 8 -n "$1" -d "$W/call.json" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    -H "mcp-session-id: $sid" "http://127.0.0.1:$TP/mcp" >"$W/h2load.$1" 2>&1
  grep -q "$1 succeeded" "$W/h2load.$1" || { echo "bench: h2load failed:" >&2; cat "$W/h2load.$1" >&2; exit 1; }
  kill -INT $vp
  wait $vp 2>/dev/null || true
  awk '/^(summary|totals):/{print $2; exit}' "$W/out.$1"
}
one=$(count 8)
many=$(count "$N")
echo "$(basename "$T"): $(( (many - one) / (N - 8) )) instructions per sticky request over h2c (user space); profile: $W/out.$N"
