#!/usr/bin/env bash
# The 2026-07-28 routed tools/call figure alone: HAProxy (ACL), Tether (route + validation) and
# a BEFORE build alternate for 5 rounds of 5 s, 32 connections, proxies on core 1, wrk and the
# replicas on core 0. Usage: bench/modern_rounds.sh WORK_DIR_OF_A_RUN_SH_RUN [BEFORE_BINARY]
# (it reuses that run's haproxy.conf and tether.toml).
set -euo pipefail
W=$1; ROOT=$(cd "$(dirname "$0")/.." && pwd); T=$ROOT/target/release/tether; B=${2:?a before binary}; R=$ROOT/target/release/fast-replica
BASE=18000; R1=$((BASE+1)) R2=$((BASE+2)) R3=$((BASE+3)) HP=$((BASE+80)) TP=$((BASE+82)) BP=$((BASE+83))
pids=()
trap 'kill ${pids[@]} 2>/dev/null; wait 2>/dev/null' EXIT
for p in $R1 $R2 $R3; do taskset -c 0 $R --port $p --tag s$p >/dev/null 2>&1 & pids+=($!); done
taskset -c 1 haproxy -db -f $W/haproxy.conf >/dev/null 2>&1 & HPID=$!; pids+=($HPID)
TETHER_THREADS=1 TETHER_LOG=warn taskset -c 1 $T --listen 127.0.0.1:$TP --config $W/tether.toml --backend http://127.0.0.1:$R1 --backend http://127.0.0.1:$R2 >/dev/null 2>&1 & TPID=$!; pids+=($TPID)
TETHER_THREADS=1 TETHER_LOG=warn taskset -c 1 $B --listen 127.0.0.1:$BP --backend http://127.0.0.1:$R1 --backend http://127.0.0.1:$R2 >/dev/null 2>&1 & BPID=$!; pids+=($BPID)
sleep 1
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
for round in 1 2 3 4 5; do
  for t in haproxy:$HP:$HPID tether:$TP:$TPID before:$BP:$BPID; do
    IFS=: read name port pid <<<"$t"
    t0=$(ticks $pid)
    out=$(taskset -c 0 wrk -t1 -c32 -d5s -s $ROOT/bench/modern.lua http://127.0.0.1:$port/mcp)
    t1=$(ticks $pid)
    reqs=$(echo "$out" | awk '/requests in/{print $1}'); rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    bad=$(echo "$out" | awk '/Non-2xx/{print $NF}')
    echo "$round $name rps=$rps cpu_us=$(awk -v a=$t0 -v b=$t1 -v r=$reqs -v hz=$HZ 'BEGIN{printf "%.2f",(b-a)/hz*1e6/r}') non2xx=${bad:-0}"
  done
done
