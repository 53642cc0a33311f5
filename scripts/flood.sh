#!/usr/bin/env bash
# The flood criterion of issue 18: DURATION (60 s) of bad API keys at full speed leaves wrap for a
# legitimate client within 2x its unloaded p99, and grows the database by less than 1 MB.
#
# A release `keyward serve` on its defaults ([ip_limits] on). Three phases, each DURATION long:
#   1. unloaded: the legitimate client alone (wrk -t1 -c$CLIENT_CONNECTIONS, wrap, --latency);
#   2. flood alone: wrk -t1 -c$FLOOD_CONNECTIONS posting a new bad API key per request to
#      /identity/token; the database's logical size (pages in use) before and after;
#   3. both at once: the client's p99 under the flood.
# Everything comes from 127.0.0.1 (wrk cannot bind other source addresses): the flood is one
# source, throttled to 429 after its burst, as a single attacking host would be; the behavioural
# test with 16 addresses is keyward-server's tests/flood.rs. The load generators share the
# machine's cores with the server: quote the ratio, and run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-60s}
CLIENT_CONNECTIONS=${CLIENT_CONNECTIONS:-4}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-64}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p keyward
BIN=$TARGET/release/keyward

WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
# CONFIG: lines for a keyward.toml (e.g. CONFIG=$'[audit]\narchive = false'); empty: the defaults.
printf '%s\n' "${CONFIG:-}" > "$WORK/keyward.toml"
KEYWARD_LOG=warn "$BIN" serve --config "$WORK/keyward.toml" --data-dir "$WORK/data" --listen 127.0.0.1:0 > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
[ -n "$URL" ] || { cat "$WORK/stderr"; exit 1; }

read -r API_KEY INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$WORK/data/bootstrap.json")
TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$API_KEY" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
H=(-H "Authorization: Bearer $TOKEN" -H "bluemix-instance: $INSTANCE" -H "Content-Type: application/json")
KEY=$(curl -sf "${H[@]}" -d '{"resources":[{"name":"flood-root"}]}' "$URL/api/v2/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])')
DEK=$(head -c 32 /dev/urandom | base64)
export BENCH_TOKEN=$TOKEN BENCH_INSTANCE=$INSTANCE BENCH_BODY="{\"plaintext\":\"$DEK\"}"
WRAP_URL="$URL/api/v2/keys/$KEY/actions/wrap"

db_bytes() {
  python3 -c 'import sqlite3,sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(c.execute("select (page_count - freelist_count) * page_size from pragma_page_count, pragma_freelist_count, pragma_page_size").fetchone()[0])' "$WORK/data/keyward.db"
}
audit_rows() {
  python3 -c 'import sqlite3,sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(c.execute("select count(*) from audit_events").fetchone()[0])' "$WORK/data/keyward.db"
}
client() { wrk -t1 -c"$CLIENT_CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/post.lua" "$WRAP_URL"; }
flood() { wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/badkeys.lua" "$URL"; }
stats() { python3 -c 'import sys; sys.path.insert(0, "scripts/bench"); from wrkstats import parse; w = parse(sys.stdin.read()); print(w["rps"], w["p99"], w["requests"], w["failures"])'; }

# Warm up (page cache, WAL, key cache).
DURATION=3s client >/dev/null

echo "phase 1: the client alone ($DURATION)"
read -r RPS0 P99_0 _ FAIL0 < <(client | stats)
echo "  wrap: $RPS0 req/s, p99 $P99_0 ms, $FAIL0 non-2xx"

echo "phase 2: the flood alone ($DURATION)"
BYTES0=$(db_bytes); ROWS0=$(audit_rows)
read -r FRPS _ FREQ FNON2XX < <(flood | stats)
sleep 12 # the sampler sums the last interval's refusals (audit_interval_secs = 10)
BYTES1=$(db_bytes); ROWS1=$(audit_rows)
echo "  flood: $FREQ requests ($FRPS/s), $FNON2XX non-2xx (400 and 429 expected)"
echo "  database grew $((BYTES1 - BYTES0)) bytes, $((ROWS1 - ROWS0)) audit rows"

echo "phase 3: the client under the flood ($DURATION)"
flood > "$WORK/flood3.txt" &
FLOOD_PID=$!
read -r RPS1 P99_1 _ FAIL1 < <(client | stats)
wait "$FLOOD_PID"
echo "  wrap: $RPS1 req/s, p99 $P99_1 ms, $FAIL1 non-2xx"

python3 - "$P99_0" "$P99_1" "$((BYTES1 - BYTES0))" "$FAIL1" <<'PY'
import sys
p0, p1, grew, fail = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok_latency = p1 <= 2 * p0
ok_db = grew < 1 << 20
print(f"wrap p99 {p0:.2f} ms unloaded, {p1:.2f} ms under the flood: {p1 / p0:.2f}x "
      f"({'within' if ok_latency else 'NOT within'} 2x); database +{grew} bytes "
      f"({'under' if ok_db else 'NOT under'} 1 MB); client non-2xx under flood: {fail}")
sys.exit(0 if ok_latency and ok_db and fail == 0 else 1)
PY
