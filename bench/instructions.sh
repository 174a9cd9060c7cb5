#!/usr/bin/env bash
# User-space instructions per sticky tools/call request, counted by callgrind: repeatable whatever
# else the machine is doing (wall-clock CPU on a shared machine is not). Counts a run of N requests
# and a run of 1 (start-up, the session's initialize), and prints the difference per request.
#
# Usage: bench/instructions.sh [TETHER_BIN] [N=2001]    (needs valgrind and python3)
# The kernel's share (the syscalls) is not counted: `strace -c -p PID` under load gives those.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ $# -ge 1 ]; then T=$1; else (cd "$ROOT" && cargo build --release --quiet --bin tether); T=$TARGET_DIR/release/tether; fi
N=${2:-2001}
(cd "$ROOT" && cargo build --release --quiet -p mcp-tether-testkit --bin fast-replica)
R=$TARGET_DIR/release/fast-replica
W=$(mktemp -d)
RP=${REPLICA_PORT:-19301} TP=${TETHER_PORT:-19382}
"$R" --port $RP --tag s1 >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT
count() {
  TETHER_THREADS=1 TETHER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/out.$1" \
    "$T" --listen 127.0.0.1:$TP --backend http://127.0.0.1:$RP >/dev/null 2>"$W/vg.$1" &
  local vp=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$TP) 2>/dev/null && break; sleep 0.2; done
  python3 "$HERE/sticky_client.py" $TP "$1" 8 >/dev/null
  kill -INT $vp
  wait $vp 2>/dev/null || true
  awk '/^(summary|totals):/{print $2; exit}' "$W/out.$1"
}
one=$(count 1)
many=$(count "$N")
echo "$(basename "$T"): $(( (many - one) / (N - 1) )) instructions per sticky request (user space); profile: $W/out.$N"
