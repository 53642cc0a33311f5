#!/usr/bin/env bash
# The ceiling of scripts/bench.sh's ratio on this machine and stack: starts the example server in
# crates/keyward-server/examples/http_ceiling.rs (axum and hyper, a wrap with nothing of Keyward
# but token hash, JSON, base64 and AES-GCM) three ways and measures its POST /wrap against its own
# GET /healthz with the same load as bench.sh (wrk -t2 -c64, keep-alive, interleaved rounds):
#   memory      no durable write
#   append      each answer waits for a group-committed write + fdatasync to a growing file
#   overwrite   the same into a file of zeros written beforehand (a sync moves no file size)
# Prints medians: requests/s, ratio to healthz, p99, server CPU per request. Not part of Keyward.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p keyward-server --example http_ceiling
BIN=$ROOT/target/release/examples/http_ceiling
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# A token and body of the sizes bench.sh sends (an 846-byte JWT, a 32-byte DEK, one AAD string).
export BENCH_TOKEN=$(head -c 700 /dev/urandom | base64 -w0 | tr -d '+/=' | head -c 846)
export BENCH_INSTANCE=$(python3 -c 'import uuid; print(uuid.uuid4())')
export BENCH_BODY="{\"plaintext\":\"$(head -c 32 /dev/urandom | base64)\",\"aad\":[\"tenant-a\"]}"

# run URL [lua]: prints "rps p99_ms server_us_per_request"
run() {
  local s0 s1 out
  s0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  if [ -n "${2:-}" ]; then
    out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$2" "$1")
  else
    out=$(wrk -t2 -c64 -d"$DURATION" --latency "$1")
  fi
  s1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  python3 - "$out" "$((s1 - s0))" "$(getconf CLK_TCK)" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(sys.argv[1])
if w["failures"]:
    sys.exit("the ceiling server answered errors:\n" + sys.argv[1])
ticks, tck = int(sys.argv[2]), int(sys.argv[3])
print(f"{w['rps']:.0f} {w['p99']:.2f} {ticks / tck * 1e6 / w['requests']:.1f}")
PY
}

echo "| variant | healthz req/s | wrap req/s | ratio | wrap p99 ms | server CPU µs/request (healthz / wrap) |"
echo "|---|---:|---:|---:|---:|---:|"
for variant in memory append overwrite; do
  case $variant in
    memory) envs=(CEILING_DURABLE=0) ;;
    append) envs=(CEILING_DURABLE=1) ;;
    overwrite) envs=(CEILING_DURABLE=1 CEILING_PREALLOCATE=1) ;;
  esac
  env "${envs[@]}" TMPDIR="$WORK" "$BIN" > "$WORK/out" &
  PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^listening on //p' "$WORK/out")
  wrk -t2 -c64 -d2s -s "$ROOT/scripts/bench/post.lua" "$URL/wrap" >/dev/null
  h=() w=()
  for _ in $(seq "$ROUNDS"); do
    h+=("$(run "$URL/healthz")")
    w+=("$(run "$URL/wrap" "$ROOT/scripts/bench/post.lua")")
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  python3 - "$variant" "$(IFS=';'; echo "${h[*]}")" "$(IFS=';'; echo "${w[*]}")" <<'PY'
import statistics, sys
name, h, w = sys.argv[1], *[[list(map(float, r.split())) for r in a.split(";")] for a in sys.argv[2:4]]
med = lambda rows, i: statistics.median(r[i] for r in rows)
print(f"| {name} | {med(h,0):.0f} | {med(w,0):.0f} | {med(w,0)/med(h,0):.2f} | {med(w,1):.2f} | {med(h,2):.1f} / {med(w,2):.1f} |")
PY
done
