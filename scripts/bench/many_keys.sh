#!/usr/bin/env bash
# Many-keys mode of scripts/bench.sh (`KEYS="1000 100000" scripts/bench.sh`), issue 19: for each N,
# a fresh release `keyward serve` on its embedded defaults, N root keys created over HTTP (wrk,
# create.lua: the creation rate is measured too), then in ROUNDS interleaved rounds wrap and unwrap
# against one hot key and against a key chosen at random per request (unwrap among up to 20 000
# keys, each with a ciphertext made beforehand), with the server's CPU per request; then the
# median latency of list, last page, HEAD total, search and sort, and the server's RSS. One JSON
# line per N is appended to $RESULTS. Compare ratios within one run. BIN: the binary to run
# (else a release build); PERF=1: perf record of the server through the first random-wrap round.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
KEYS=${KEYS:-1000 100000}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
REPS=${REPS:-15}
LABEL=${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
RESULTS=${RESULTS:-$ROOT/target-many-keys.jsonl}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p keyward
  BIN=$TARGET/release/keyward
fi
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }

server_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# run NAME URL OP FILE: prints "rps p50_ms p99_ms failures server_us_per_request"
run() {
  local out s0 s1
  s0=$(server_ticks)
  out=$(BENCH_OP=$2 BENCH_REQUESTS=$3 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/random.lua" "$URL")
  s1=$(server_ticks)
  python3 - "$out" "$((s1 - s0))" "$(getconf CLK_TCK)" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(sys.argv[1])
server, tck = int(sys.argv[2]), int(sys.argv[3])
print(f"{w['rps']:.0f} {w['p50']:.3f} {w['p99']:.3f} {w['failures']} {server / tck * 1e6 / max(w['requests'], 1):.1f}")
PY
}

for N in $KEYS; do
  WORK=$(mktemp -d)
  printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n' > "$WORK/keyward.toml"
  KEYWARD_LOG=warn "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --config "$WORK/keyward.toml" > "$WORK/stdout" 2> "$WORK/stderr" &
  PID=$!
  trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  for _ in $(seq 100); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
  [ -n "$URL" ] || { cat "$WORK/stderr"; exit 1; }
  read -r API_KEY INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$WORK/data/bootstrap.json")
  TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$API_KEY" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  export BENCH_TOKEN=$TOKEN BENCH_INSTANCE=$INSTANCE BENCH_DEK
  BENCH_DEK=$(head -c 32 /dev/urandom | base64)

  # N keys (the hot key is one of them: the first created).
  T0=$(date +%s.%N)
  # wrk sleeps its whole duration even when its threads stop: watch the total and end it.
  BENCH_PER_THREAD=$(( (N + THREADS - 1) / THREADS )) wrk -t"$THREADS" -c32 -d3600s -s "$ROOT/scripts/bench/create.lua" "$URL" > "$WORK/create.txt" &
  WRK=$!
  until [ "$(curl -sfI -H "Authorization: Bearer $TOKEN" -H "bluemix-instance: $INSTANCE" "$URL/api/v2/keys" | tr -d '\r' | sed -n 's/^[Xx]-[Kk]ms-[Kk]ey-[Tt]otal: //p')" -ge "$N" ]; do
    kill -0 "$WRK" 2>/dev/null || break
    sleep 0.2
  done
  T1=$(date +%s.%N)
  kill -INT "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true
  CREATE_RATE=$(python3 -c "import sys; print(round(int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$N" "$T0" "$T1")
  TOTAL=$(python3 scripts/bench/many_keys.py ids "$URL" "$TOKEN" "$INSTANCE" "$WORK/ids")
  head -1 "$WORK/ids" > "$WORK/hot-wrap"
  python3 scripts/bench/many_keys.py sample "$URL" "$TOKEN" "$INSTANCE" "$WORK/hot-wrap" 1 "$WORK/hot-unwrap"
  python3 scripts/bench/many_keys.py sample "$URL" "$TOKEN" "$INSTANCE" "$WORK/ids" 20000 "$WORK/random-unwrap"
  echo "N=$N: $TOTAL keys, created at $CREATE_RATE keys/s"

  # Warm-up (WARMUP, 15 s: long enough to have used most keys once, as a server that has run
  # for a while has), then interleaved rounds.
  BENCH_OP=wrap BENCH_REQUESTS=$WORK/ids wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP:-15s}" -s "$ROOT/scripts/bench/random.lua" "$URL" > /dev/null
  declare -A R=()
  for round in $(seq "$ROUNDS"); do
    for case in hot-wrap:wrap:hot-wrap random-wrap:wrap:ids hot-unwrap:unwrap:hot-unwrap random-unwrap:unwrap:random-unwrap; do
      IFS=: read -r name op file <<< "$case"
      # PERF=1: profile the server through the first round on random keys (perf.data in $PERF_OUT).
      if [ "${PERF:-0}" = 1 ] && [ "$round" = 1 ] && [ "$name" = random-wrap ]; then
        perf record -g -o "${PERF_OUT:-$ROOT/perf.data}" -p "$PID" 2>/dev/null &
        PERF_PID=$!
      fi
      r=$(run "$name" "$op" "$WORK/$file")
      if [ -n "${PERF_PID:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=; fi
      echo "N=$N round $round $name: $r (req/s p50_ms p99_ms failures server_us/req)"
      R[$name]="${R[$name]:-}$r;"
    done
  done
  LAT=$(python3 scripts/bench/many_keys.py latency "$URL" "$TOKEN" "$INSTANCE" "$N" "$REPS")
  RSS=$(awk '/^VmRSS/{print $2}' "/proc/$PID/status")
  HWM=$(awk '/^VmHWM/{print $2}' "/proc/$PID/status")
  python3 - "$RESULTS" "$LABEL" "$N" "$CREATE_RATE" "$RSS" "$HWM" "$LAT" "${R[hot-wrap]}" "${R[random-wrap]}" "${R[hot-unwrap]}" "${R[random-unwrap]}" <<'PY'
import json, statistics, sys
out, label, n, create, rss, hwm, lat = sys.argv[1:8]
def med(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return {k: statistics.median(r[i] for r in rows) for i, k in enumerate(["rps", "p50", "p99", "failures", "cpu_us"])}
row = {"label": label, "keys": int(n), "create_per_s": int(create), "rss_kib": int(rss), "hwm_kib": int(hwm),
       "latency_ms": json.loads(lat)}
for name, s in zip(["hot_wrap", "random_wrap", "hot_unwrap", "random_unwrap"], sys.argv[8:12]):
    row[name] = med(s)
open(out, "a").write(json.dumps(row) + "\n")
print(json.dumps(row, indent=1))
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"; trap - EXIT
done
