#!/usr/bin/env bash
# Listing latencies at N keys (issue 19), on a data directory kept between runs so that one
# set of a million keys serves several builds: `DATA=/path N=1000000 BIN=... scripts/bench/listings.sh`.
# Starts `BIN serve` on DATA, creates keys over HTTP (wrk, create.lua) until the instance has N,
# then prints one JSON line of median latencies (ms, REPS requests each) for every listing
# `many_keys.py listings` knows, and appends it to RESULTS with LABEL. A newer build migrates
# DATA on start (the time it took is in the line): run the older build first. Delete DATA after.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
: "${DATA:?DATA: the data directory to use (kept)}"
N=${N:-1000}
REPS=${REPS:-7}
LABEL=${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
RESULTS=${RESULTS:-$ROOT/target-listings.jsonl}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p keyward
  BIN=$TARGET/release/keyward
fi
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
mkdir -p "$DATA"
LOGS=$(mktemp -d)
printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n' > "$LOGS/keyward.toml"
T0=$(date +%s.%N)
KEYWARD_LOG=warn "$BIN" serve --data-dir "$DATA" --listen 127.0.0.1:0 --config "$LOGS/keyward.toml" > "$LOGS/stdout" 2> "$LOGS/stderr" &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$LOGS"' EXIT
# A migration of a million keys takes a while: wait up to 30 minutes.
for _ in $(seq 18000); do grep -q "listening on" "$LOGS/stdout" 2>/dev/null && break; kill -0 "$PID" || { cat "$LOGS/stderr"; exit 1; }; sleep 0.1; done
START_S=$(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$T0")
URL=$(sed -n 's/^keyward: listening on //p' "$LOGS/stdout")
[ -n "$URL" ] || { cat "$LOGS/stderr"; exit 1; }
read -r API_KEY INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$DATA/bootstrap.json")
TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$API_KEY" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
total() { curl -sfI -H "Authorization: Bearer $TOKEN" -H "bluemix-instance: $INSTANCE" "$URL/api/v2/keys" | tr -d '\r' | sed -n 's/^[Xx]-[Kk]ms-[Kk]ey-[Tt]otal: //p'; }
HAVE=$(total)
CREATE_RATE=null
if [ "$HAVE" -lt "$N" ]; then
  [ "$HAVE" -eq 0 ] || { echo "DATA has $HAVE keys, fewer than $N: start from an empty directory" >&2; exit 1; }
  export BENCH_TOKEN=$TOKEN BENCH_INSTANCE=$INSTANCE
  T1=$(date +%s.%N)
  BENCH_PER_THREAD=$(( (N + 1) / 2 )) wrk -t2 -c32 -d7200s -s "$ROOT/scripts/bench/create.lua" "$URL" > "$LOGS/create.txt" &
  WRK=$!
  until [ "$(total)" -ge "$N" ]; do kill -0 "$WRK" 2>/dev/null || break; sleep 0.5; done
  T2=$(date +%s.%N)
  kill -INT "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true
  CREATE_RATE=$(python3 -c "import sys; print(round(int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$(total)" "$T1" "$T2")
fi
LAT=$(python3 scripts/bench/many_keys.py listings "$URL" "$TOKEN" "$INSTANCE" "$(total)" "$REPS")
DB_MB=$(du -sm "$DATA" | cut -f1)
python3 - "$RESULTS" "$LABEL" "$(total)" "$CREATE_RATE" "$START_S" "$DB_MB" "$LAT" <<'PY'
import json, sys
out, label, n, create, start, db, lat = sys.argv[1:8]
row = {"label": label, "keys": int(n), "create_per_s": json.loads(create), "start_s": float(start),
       "data_mb": int(db), "latency_ms": json.loads(lat)}
open(out, "a").write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
