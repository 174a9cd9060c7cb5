#!/usr/bin/env bash
# User-space instructions per sticky tools/call request, HAProxy 2.6 and Tether side by side, with
# the same client for both (h2load: over HTTP/1.1, 8 connections; over h2c, 8 connections x 8
# streams), the same replica (fast-replica) and one thread each, counted by callgrind. A run of 8
# requests (start-up, connections, the session's initialize) is subtracted; figures per request.
#
# Usage: bench/instructions_haproxy.sh [TETHER_BIN] [N=4008]   (needs valgrind, haproxy, h2load, curl)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in valgrind haproxy h2load curl; do
  command -v $tool >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done
if [ $# -ge 1 ]; then T=$1; else (cd "$ROOT" && cargo build --release --quiet --bin tether); T=$TARGET_DIR/release/tether; fi
N=${2:-4008}
(cd "$ROOT" && cargo build --release --quiet -p mcp-tether-testkit --bin fast-replica)
R=$TARGET_DIR/release/fast-replica
W=$(mktemp -d)
RP=${REPLICA_PORT:-19711} HP=${HAPROXY_PORT:-19720} TP=${TETHER_PORT:-19721}
"$R" --port $RP --tag s1 >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT
sed -e "s|@PROXY_PORT@|$HP|g" -e "s|@R1@|$RP|g" -e "s|@R2@|$RP|g" -e "s|@R3@|$RP|g" \
  -e "s|@PIDFILE@|$W/haproxy.pid|g" "$HERE/haproxy.cfg" >"$W/h1.cfg"
sed -e "s|bind 127.0.0.1:$HP|bind 127.0.0.1:$HP proto h2|" "$W/h1.cfg" >"$W/h2.cfg"
printf 'listen = "127.0.0.1:%s"\nbackends = ["http://127.0.0.1:%s"]\n[http2]\nh2c = true\n' $TP $RP >"$W/tether.toml"
printf '%s' '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}' >"$W/call.json"
count() { # proxy protocol n -> total instructions
  local port out=$W/out.$1.$2.$3
  if [ "$1" = haproxy ]; then
    port=$HP
    valgrind --tool=callgrind --callgrind-out-file="$out" haproxy -db -f "$W/$2.cfg" >/dev/null 2>"$W/vg.log" &
  else
    port=$TP
    TETHER_THREADS=1 TETHER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$T" --config "$W/tether.toml" >/dev/null 2>"$W/vg.log" &
  fi
  local vp=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
  local curl_flag=--http1.1 load_flags=(--h1 -m 1)
  [ "$2" = h2 ] && curl_flag=--http2-prior-knowledge load_flags=(-m 8)
  local sid
  sid=$(curl -s -D - -o /dev/null $curl_flag -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cg","version":"0"}}}' \
    "http://127.0.0.1:$port/mcp" | awk 'tolower($1)=="mcp-session-id:"{print $2}' | tr -d '\r')
  [ -n "$sid" ] || { echo "bench: $1 gave no session id" >&2; exit 1; }
  h2load "${load_flags[@]}" -c 8 -n "$3" -d "$W/call.json" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    -H "mcp-session-id: $sid" "http://127.0.0.1:$port/mcp" >"$W/h2load.log" 2>&1
  grep -q "$3 succeeded" "$W/h2load.log" || { echo "bench: h2load failed:" >&2; cat "$W/h2load.log" >&2; exit 1; }
  kill -INT $vp
  # HAProxy under valgrind may take SIGINT as a soft stop and wait: SIGUSR1 ends it then.
  [ "$1" = haproxy ] && { sleep 0.5; kill -USR1 $vp 2>/dev/null || true; }
  wait $vp 2>/dev/null || true
  awk '/^(summary|totals):/{print $2; exit}' "$out"
}
for proxy in haproxy tether; do
  for proto in h1 h2; do
    one=$(count $proxy $proto 8)
    many=$(count $proxy $proto "$N")
    echo "$proxy $proto: $(( (many - one) / (N - 8) )) instructions per sticky request (user space)"
  done
done
echo "profiles: $W"
