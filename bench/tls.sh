#!/usr/bin/env bash
# TLS termination side by side: HAProxy 2.6 (OpenSSL), nginx 1.22 (OpenSSL) and Tether (rustls,
# aws-lc-rs), each terminating TLS on core 1 in front of the same fast replicas, same certificate
# (ECDSA P-256, self-signed for 127.0.0.1), same load from core 0. Not part of CI; see
# docs/benchmarks.md.
#
# Usage: bench/tls.sh [seconds] [conns]     (defaults: 5 s per measurement, 32 connections)
# Figures per round, each proxy's CPU read from /proc around the measurement:
#   handshake_full    `openssl s_time -new`: a full TLS 1.3 handshake per connection
#   handshake_resumed `openssl s_time -reuse -tls1_2`: resumed handshakes (TLS 1.2 session
#                     tickets: s_time does not wait for the tickets a TLS 1.3 server sends after
#                     its handshake, so a TLS 1.3 "reuse" run measures full handshakes)
#   sticky_tls        wrk over kept-alive HTTPS connections: tools/call POSTs in one session
#   sticky_h2         h2load over HTTP/2 (ALPN h2), the same POSTs, 8 streams in flight per connection
#   sse_mem_tls       RSS per held legacy SSE stream over TLS (STREAMS of them)
# Environment: RUNS=3, STREAMS=2000, BASE_PORT=18100, OUT=dir.
set -euo pipefail
D=${1:-5}
C=${2:-32}
RUNS=${RUNS:-3}
STREAMS=${STREAMS:-2000}
BASE=${BASE_PORT:-18100}
R1=$((BASE + 1)) R2=$((BASE + 2)) R3=$((BASE + 3)) HP=$((BASE + 80)) NP=$((BASE + 81)) TP=$((BASE + 82))
PROXIES=(haproxy nginx tether)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in haproxy nginx wrk taskset curl python3 openssl h2load; do
  command -v $tool >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done
(cd "$ROOT" && cargo build --release --quiet --bin tether && cargo build --release --quiet -p mcp-tether-testkit --bin fast-replica)
TETHER=$TARGET_DIR/release/tether
REPLICA=$TARGET_DIR/release/fast-replica
ulimit -n "$(ulimit -Hn)"
WORK=${OUT:-$(mktemp -d /tmp/tether-tls-bench.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"

fill() {
  sed -e "s|@PROXY_PORT@|$2|g" -e "s|@R1@|$R1|g" -e "s|@R2@|$R2|g" -e "s|@R3@|$R3|g" \
      -e "s|@PIDFILE@|$WORK/$3.pid|g" -e "s|@ERRLOG@|$WORK/$3.err|g" "$HERE/$1" >"$WORK/$3.conf"
}
fill haproxy.cfg $HP haproxy
fill nginx-proxy.conf $NP nginx
# The same configs, listening with TLS: HAProxy's defaults keep a session cache and tickets;
# nginx's keep tickets (its cache is off by default): each resumes TLS 1.3 by ticket.
sed -i "s|bind 127.0.0.1:$HP|bind 127.0.0.1:$HP ssl crt $WORK/combined.pem alpn h2,http/1.1|" "$WORK/haproxy.conf"
# keepalive_requests: nginx closes an HTTP/2 connection after 1,000 requests by default, which
# h2load does not survive (the others have no such limit).
sed -i "s|listen 127.0.0.1:$NP backlog=4096;|listen 127.0.0.1:$NP ssl http2 backlog=4096; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; keepalive_requests 100000000;|" "$WORK/nginx.conf"

wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done
  echo "bench: nothing listening on $1" >&2; return 1
}
for r in $R1 $R2 $R3; do
  taskset -c 0 "$REPLICA" --port $r --tag s$((r - BASE)) >"$WORK/r$r.log" 2>&1 &
  PIDS+=($!)
  wait_port $r
done
start_proxies() {
  taskset -c 1 haproxy -db -f "$WORK/haproxy.conf" >"$WORK/haproxy.log" 2>&1 &
  HPID=$!
  taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
  NPID=$!
  TETHER_THREADS=1 TETHER_LOG=warn taskset -c 1 "$TETHER" --listen 127.0.0.1:$TP \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" \
    --backend http://127.0.0.1:$R1 --backend http://127.0.0.1:$R2 >"$WORK/tether.log" 2>&1 &
  TPID=$!
  PIDS+=($HPID $NPID $TPID)
  wait_port $HP && wait_port $NP && wait_port $TP
  NWORKER=$(pgrep -P $NPID | head -1)
}
stop_proxies() { kill $HPID $NPID $TPID 2>/dev/null || true; wait $HPID $NPID $TPID 2>/dev/null || true; }
port_of() { case $1 in haproxy) echo $HP ;; nginx) echo $NP ;; tether) echo $TP ;; esac; }
cpu_pid() { case $1 in haproxy) echo $HPID ;; nginx) echo $NWORKER ;; tether) echo $TPID ;; esac; }
mem_pid() { case $1 in haproxy) echo $HPID ;; nginx) echo $NPID ;; tether) echo $TPID ;; esac; }
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
utime() { awk '{print $14}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1e6; else print "-" }'; }
record() { # run figure target conns rate p50 p99 cpu
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t0\n" "$@" >>"$RESULTS"
  printf "  %-18s %-8s c=%-4s rate=%-10s p50=%-8s p99=%-8s cpu_us=%s\n" "$2" "$3" "$4" "$5" "$6" "$7" "$8" >&2
}

handshakes() { # run figure target mode(-new|-reuse)
  local port pid t0 t1 out n
  port=$(port_of $3); pid=$(cpu_pid $3)
  t0=$(ticks $pid)
  out=$(taskset -c 0 openssl s_time -connect 127.0.0.1:$port $4 -time "$D" 2>&1 || true)
  t1=$(ticks $pid)
  n=$(echo "$out" | awk '/connections in [0-9.]+ real seconds/{print $1; exit}')
  n=${n:-0}
  record $1 $2 $3 1 "$(awk -v n=$n -v d=$D 'BEGIN{printf "%.0f", n/d}')" - - \
    "$(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$HZ 'BEGIN{ if (n>0) printf "%.2f", (b-a)/hz*1e6/n; else print "-" }')"
}

new_session() { # port -> a session id, over HTTPS
  curl -sk --http1.1 -D - -o /dev/null -X POST "https://127.0.0.1:$1/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}' |
    tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}'
}

sticky() { # run target
  local port pid sid t0 t1 out reqs
  port=$(port_of $2); pid=$(cpu_pid $2)
  sid=$(new_session $port)
  [ -z "$sid" ] && { echo "bench: $2 gave no session id" >&2; return 1; }
  t0=$(ticks $pid)
  out=$(SID=$sid taskset -c 0 wrk -t1 -c"$C" -d"${D}s" --latency -s "$HERE/post.lua" "https://127.0.0.1:$port/mcp" 2>&1)
  t1=$(ticks $pid)
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  record $1 sticky_tls $2 $C "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
    "$(to_us "$(echo "$out" | awk '$1=="50%"{print $2}')")" "$(to_us "$(echo "$out" | awk '$1=="99%"{print $2}')")" \
    "$(awk -v a=$t0 -v b=$t1 -v r="${reqs:-0}" -v hz=$HZ 'BEGIN{ if (r>0) printf "%.2f", (b-a)/hz*1e6/r; else print "-" }')"
}

printf '%s' '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello, load balancer"}}}' >"$WORK/call.json"
sticky_h2() { # run target
  local port pid sid t0 t1 out done_
  port=$(port_of $2); pid=$(cpu_pid $2)
  sid=$(new_session $port)
  [ -z "$sid" ] && { echo "bench: $2 gave no session id" >&2; return 1; }
  t0=$(ticks $pid) u0=$(utime $pid)
  out=$(taskset -c 0 h2load -c "$C" -m 8 -D "$D" -d "$WORK/call.json" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    -H "mcp-session-id: $sid" "https://127.0.0.1:$port/mcp" 2>&1)
  t1=$(ticks $pid) u1=$(utime $pid)
  done_=$(echo "$out" | awk '/^requests:/{for (i=1;i<=NF;i++) if ($(i+1) ~ /succeeded/) {print $i; exit}}')
  record $1 sticky_h2 $2 $C "$(echo "$out" | awk '/^finished in/{print $4}')" - - \
    "$(awk -v a=$t0 -v b=$t1 -v r="${done_:-0}" -v hz=$HZ 'BEGIN{ if (r>0) printf "%.2f", (b-a)/hz*1e6/r; else print "-" }')"
  echo "$out" | grep -E "^(requests|status codes|Application protocol)" >&2
  # Where the time goes: user space against kernel, per request.
  awk -v a=$t0 -v b=$t1 -v u=$u0 -v v=$u1 -v r="${done_:-0}" -v hz=$HZ -v t=$2 \
    'BEGIN{ if (r>0) printf "  sticky_h2 %s split: user_us=%.2f sys_us=%.2f\n", t, (v-u)/hz*1e6/r, ((b-a)-(v-u))/hz*1e6/r }' >&2
}

echo "bench: results in $WORK; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for run in $(seq "$RUNS"); do
  echo "bench: round $run/$RUNS" >&2
  start_proxies
  for target in "${PROXIES[@]}"; do
    line=$(taskset -c 0 python3 "$HERE/sse_hold.py" "$(mem_pid $target)" "https://127.0.0.1:$(port_of $target)/sse" "$STREAMS")
    kib=$(echo "$line" | sed -n 's/.*kib_per_stream=\([0-9.]*\).*/\1/p')
    record $run sse_mem_tls $target "$STREAMS" - - - "${kib:--}"
  done
  stop_proxies
  start_proxies
  for target in "${PROXIES[@]}"; do handshakes $run handshake_full $target -new; done
  for target in "${PROXIES[@]}"; do handshakes $run handshake_resumed $target "-reuse -tls1_2"; done
  for target in "${PROXIES[@]}"; do sticky $run $target; done
  for target in "${PROXIES[@]}"; do sticky_h2 $run $target; done
  stop_proxies
done
echo "bench: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
by = {}
for run, fig, target, c, rate, p50, p99, cpu, _ in rows:
    by.setdefault((fig, target), []).append((run, rate, p99, cpu))
def med(xs):
    xs = [float(x) for x in xs if x not in ("-", "")]
    return statistics.median(xs) if xs else float("nan")
print("| figure | target | rate/s | p99 us | CPU us (per handshake, request; KiB per stream) | CPU / HAProxy | CPU / nginx |")
print("|---|---|---|---|---|---|---|")
for fig in ("handshake_full", "handshake_resumed", "sticky_tls", "sticky_h2", "sse_mem_tls"):
    for target in ("haproxy", "nginx", "tether"):
        got = by.get((fig, target), [])
        if not got:
            continue
        ratio = {}
        for other in ("haproxy", "nginx"):
            mine = {r: float(c) for r, _, _, c in got if c not in ("-", "")}
            theirs = {r: float(c) for r, _, _, c in by.get((fig, other), []) if c not in ("-", "")}
            rs = [mine[r] / theirs[r] for r in mine if r in theirs and theirs[r] > 0]
            ratio[other] = f"{statistics.median(rs):.2f}" if rs and other != target else "-"
        print(f"| {fig} | {target} | {med([g[1] for g in got]):.0f} | {med([g[2] for g in got]):.0f} | "
              f"{med([g[3] for g in got]):.2f} | {ratio['haproxy']} | {ratio['nginx']} |")
PY
