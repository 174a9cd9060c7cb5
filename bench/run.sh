#!/usr/bin/env bash
# Side-by-side benchmark: direct to the fast replicas, HAProxy 2.6, nginx 1.22 and Tether, same
# replicas, same load, one run of this script. Not part of CI. See docs/benchmarks.md.
#
# Usage: bench/run.sh [seconds] [conns...]        (defaults: 5 s per measurement; 1 32 256)
# Environment:
#   RUNS=3            rounds; the summary gives the median of each figure and of each ratio
#   STREAMS=4000      held SSE streams for the memory-per-stream figure
#   TETHER_THREADS=1  Tether's threads (1: one current-thread runtime, like HAProxy nbthread 1 and
#                     one nginx worker); the proxies' core is pinned either way
#   BASE_PORT=18000   replicas on BASE+1/BASE+2 (BASE+3: the routed "reports" pool), HAProxy BASE+80, nginx BASE+81, Tether BASE+82
#   TOKEN=1           also run the token micro-benchmark (criterion; builds the dev-dependencies)
#   OUT=path          where the raw results go (default: a fresh directory under /tmp)
#   BEFORE=path       another tether binary (e.g. an older build) measured too, as "before",
#                     to show an optimisation's effect within the same run
# Needs haproxy, nginx (nginx-light), wrk, taskset, curl, python3. Proxies run on core 1; wrk,
# the replicas and the SSE clients on core 0.
set -euo pipefail

D=${1:-5}
shift || true
CONNS=("$@")
[ ${#CONNS[@]} -eq 0 ] && CONNS=(1 32 256)
RUNS=${RUNS:-3}
STREAMS=${STREAMS:-4000}
TETHER_THREADS=${TETHER_THREADS:-1}
BASE=${BASE_PORT:-18000}
R1=$((BASE + 1)) R2=$((BASE + 2)) R3=$((BASE + 3)) HP=$((BASE + 80)) NP=$((BASE + 81)) TP=$((BASE + 82)) BP=$((BASE + 83))
TARGETS=(direct haproxy nginx tether)
PROXIES=(haproxy nginx tether)
if [ -n "${BEFORE:-}" ]; then TARGETS+=(before); PROXIES+=(before); fi
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in haproxy nginx wrk taskset curl python3; do
  command -v $tool >/dev/null || { echo "bench: needs $tool (apt-get install -y haproxy nginx-light wrk)" >&2; exit 2; }
done

echo "bench: building release binaries into $TARGET_DIR" >&2
(cd "$ROOT" && cargo build --release --quiet --bin tether && cargo build --release --quiet -p mcp-tether-testkit --bin fast-replica)
TETHER=$TARGET_DIR/release/tether
REPLICA=$TARGET_DIR/release/fast-replica

# Every held stream costs a proxy two descriptors.
ulimit -n "$(ulimit -Hn)"
WORK=${OUT:-$(mktemp -d /tmp/tether-bench.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

fill() { # template -> $WORK/name with ports filled in
  sed -e "s|@PROXY_PORT@|$2|g" -e "s|@R1@|$R1|g" -e "s|@R2@|$R2|g" -e "s|@R3@|$R3|g" \
      -e "s|@PIDFILE@|$WORK/$3.pid|g" -e "s|@ERRLOG@|$WORK/$3.err|g" "$HERE/$1" >"$WORK/$3.conf"
}
fill haproxy.cfg $HP haproxy
fill nginx-proxy.conf $NP nginx
# Tether's routes: tools/call of report_* to their own pool (a third replica), as HAProxy's ACL.
cat >"$WORK/tether.toml" <<EOF
[pools.reports]
backends = ["http://127.0.0.1:$R3"]
[[routes]]
method = "tools/call"
name = "report_*"
pool = "reports"
[[routes]]
pool = "default"
EOF

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listening on $1" >&2
  return 1
}

start_replicas() {
  taskset -c 0 "$REPLICA" --port $R1 --tag s1 >"$WORK/r1.log" 2>&1 &
  PIDS+=($!)
  taskset -c 0 "$REPLICA" --port $R2 --tag s2 >"$WORK/r2.log" 2>&1 &
  PIDS+=($!)
  taskset -c 0 "$REPLICA" --port $R3 --tag s3 >"$WORK/r3.log" 2>&1 &
  PIDS+=($!)
  wait_port $R1 && wait_port $R2 && wait_port $R3
}

# Fresh proxies each round, so the SSE memory figure starts from a clean process.
start_proxies() {
  taskset -c 1 haproxy -db -f "$WORK/haproxy.conf" >"$WORK/haproxy.log" 2>&1 &
  HPID=$!
  taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
  NPID=$!
  TETHER_THREADS=$TETHER_THREADS TETHER_LOG=warn taskset -c 1 "$TETHER" --listen 127.0.0.1:$TP \
    --config "$WORK/tether.toml" --backend http://127.0.0.1:$R1 --backend http://127.0.0.1:$R2 >"$WORK/tether.log" 2>&1 &
  TPID=$!
  PIDS+=($HPID $NPID $TPID)
  BPID=
  if [ -n "${BEFORE:-}" ]; then
    TETHER_THREADS=$TETHER_THREADS TETHER_LOG=warn taskset -c 1 "$BEFORE" --listen 127.0.0.1:$BP \
      --backend http://127.0.0.1:$R1 --backend http://127.0.0.1:$R2 >"$WORK/before.log" 2>&1 &
    BPID=$!
    PIDS+=($BPID)
    wait_port $BP
  fi
  wait_port $HP && wait_port $NP && wait_port $TP
  NWORKER=$(pgrep -P $NPID | head -1)
}

stop_proxies() {
  kill $HPID $NPID $TPID $BPID 2>/dev/null || true
  wait $HPID $NPID $TPID $BPID 2>/dev/null || true
}

port_of() { case $1 in direct) echo $R1 ;; haproxy) echo $HP ;; nginx) echo $NP ;; tether) echo $TP ;; before) echo $BP ;; esac; }
# The process whose CPU is the proxy's work (nginx: its one worker).
cpu_pid() { case $1 in haproxy) echo $HPID ;; nginx) echo $NWORKER ;; tether) echo $TPID ;; before) echo $BPID ;; *) echo "" ;; esac; }
# The process tree whose memory is the proxy's (nginx: master + worker).
mem_pid() { case $1 in haproxy) echo $HPID ;; nginx) echo $NPID ;; tether) echo $TPID ;; before) echo $BPID ;; esac; }
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)

to_us() { # wrk latency ("412.00us", "1.20ms", "2.00s") -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1e6; else print "-" }'
}

new_session() {
  curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$1/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}' |
    tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}'
}

# load RUN FIGURE TARGET CONNS SCRIPT: one wrk measurement, one line in results.tsv.
load() {
  local run=$1 figure=$2 target=$3 c=$4 script=$5 port sid=none pid t0=0 t1=0 out
  port=$(port_of $target)
  if [ "$figure" != modern ]; then
    sid=$(new_session $port)
    [ -z "$sid" ] && { echo "bench: $target gave no session id" >&2; return 1; }
  fi
  pid=$(cpu_pid $target)
  [ -n "$pid" ] && t0=$(ticks $pid)
  out=$(SID=$sid taskset -c 0 wrk -t1 -c"$c" -d"${D}s" --latency -s "$HERE/$script" "http://127.0.0.1:$port/mcp" 2>&1)
  [ -n "$pid" ] && t1=$(ticks $pid)
  local reqs rps p50 p99 bad cpu
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(to_us "$(echo "$out" | awk '$1=="50%"{print $2}')")
  p99=$(to_us "$(echo "$out" | awk '$1=="99%"{print $2}')")
  bad=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  cpu=$(awk -v a=$t0 -v b=$t1 -v r="${reqs:-0}" -v hz=$HZ -v p="$pid" \
    'BEGIN { if (p != "" && r > 0) printf "%.2f", (b - a) / hz * 1e6 / r; else print "-" }')
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" $run $figure $target $c "${rps:-0}" "$p50" "$p99" "$cpu" "${bad:-0}" >>"$RESULTS"
  printf "  %-14s %-8s c=%-4s rps=%-10s p50=%-8s p99=%-8s cpu_us/req=%-6s non2xx=%s\n" $figure $target $c "${rps:-0}" "$p50" "$p99" "$cpu" "${bad:-0}" >&2
}

echo "bench: results in $WORK; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo -e "#\tload_before\t$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
start_replicas
for run in $(seq "$RUNS"); do
  echo "bench: round $run/$RUNS" >&2
  start_proxies
  echo -e "#\ttether_threads\t$(ls /proc/$TPID/task | wc -l)" >>"$RESULTS"
  # (3a) memory per held legacy SSE stream, on fresh processes.
  for target in "${PROXIES[@]}"; do
    line=$(taskset -c 0 python3 "$HERE/sse_hold.py" "$(mem_pid $target)" "http://127.0.0.1:$(port_of $target)/sse" "$STREAMS")
    kib=$(echo "$line" | sed -n 's/.*kib_per_stream=\([0-9.]*\).*/\1/p')
    printf "%s\tsse_mem\t%s\t%s\t-\t-\t-\t%s\t0\n" $run $target "$STREAMS" "${kib:--}" >>"$RESULTS"
    echo "  sse_mem        $target $line" >&2
    sleep 1
  done
  # HAProxy keeps a held stream open after its client left until the server writes, and a
  # few thousand such streams triple its cost per request: fresh proxies for what follows.
  stop_proxies
  start_proxies
  # (1, 5) sticky tools/call POSTs inside one session, at each connection count.
  for c in "${CONNS[@]}"; do
    for target in "${TARGETS[@]}"; do load $run sticky $target $c post.lua; done
  done
  # (6) 2026-07-28 tools/call POSTs routed by Mcp-Name (Tether validating the headers), 32
  # connections; nginx has no such route here, so it sits this one out.
  for target in "${TARGETS[@]}"; do
    [ $target = nginx ] && continue
    load $run modern $target 32 modern.lua
  done
  # (2) new sessions per second: initialize through the proxy, 32 connections.
  for target in "${TARGETS[@]}"; do load $run initialize $target 32 init.lua; done
  # (3b) per-event latency on held streams (20 streams, an event every 20 ms each).
  for target in "${TARGETS[@]}"; do
    line=$(taskset -c 0 python3 "$HERE/sse_latency.py" "http://127.0.0.1:$(port_of $target)/sse" 20 20 "$D")
    p50=$(echo "$line" | sed -n 's/.*p50_us=\([0-9.-]*\).*/\1/p')
    p99=$(echo "$line" | sed -n 's/.*p99_us=\([0-9.-]*\).*/\1/p')
    printf "%s\tsse_lat\t%s\t20\t-\t%s\t%s\t-\t0\n" $run $target "${p50:--}" "${p99:--}" >>"$RESULTS"
    echo "  sse_lat        $target $line" >&2
  done
  stop_proxies
done
echo -e "#\tload_after\t$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"

if [ "${TOKEN:-0}" = 1 ]; then
  (cd "$ROOT" && cargo bench --bench token 2>&1 | grep -E '^(seal|open)|time:' | tee "$WORK/token.txt") >&2
fi

python3 "$HERE/summarize.py" "$RESULTS"
