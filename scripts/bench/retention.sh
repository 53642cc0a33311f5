#!/usr/bin/env bash
# Issue 20: bytes written per wrap and wraps/s with the audit trail as before (`[audit] archive =
# false`: never archived, never pruned) and with archiving and retention on, in one run,
# interleaved ROUNDS times. One release binary (the request path is the same in both; what
# differs is the archiver and the pruner in the background). Per wrap: the server's storage
# writes (/proc/PID/io write_bytes: the database, its log, the archive) and its write() bytes
# (wchar), over the wrk run plus SETTLE seconds after it (so the archiver's and checkpointer's
# catch-up is counted). Prints a Markdown table; also the database size and audit rows at the end
# of each run, and the archive's size.
#   scripts/bench/retention.sh            (BIN=path/to/keyward to skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${DURATION:-15s}
SETTLE=${SETTLE:-5}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p keyward
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward
fi
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

conf() {  # conf NAME: the config of a mode
  printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n[audit]\n'
  case $1 in
    before) printf 'archive = false\n' ;;
    after) printf 'segment_events = 20000\nretain_events = 50000\n' ;;
  esac
}

# run MODE ROUND: prints "rps requests write_bytes wchar db_bytes audit_rows archive_bytes"
run() {
  local mode=$1 dir="$WORK/$1-$2"
  conf "$mode" > "$WORK/$mode.toml"
  KEYWARD_LOG=warn "$BIN" serve --data-dir "$dir" --listen 127.0.0.1:0 --config "$WORK/$mode.toml" \
    > "$WORK/stdout" 2> "$WORK/stderr" &
  PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
  local url api_key instance token key
  url=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
  [ -n "$url" ] || { cat "$WORK/stderr" >&2; exit 1; }
  read -r api_key instance < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$dir/bootstrap.json")
  token=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$api_key" "$url/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  local h=(-H "Authorization: Bearer $token" -H "bluemix-instance: $instance" -H "Content-Type: application/json")
  key=$(curl -sf "${h[@]}" -d '{"resources":[{"name":"bench-root"}]}' "$url/api/v2/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])')
  local body="{\"plaintext\":\"$(head -c 32 /dev/urandom | base64)\",\"aad\":[\"tenant-a\"]}"
  export BENCH_BODY=$body BENCH_TOKEN=$token BENCH_INSTANCE=$instance
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$ROOT/scripts/bench/post.lua" "$url/api/v2/keys/$key/actions/wrap" > /dev/null
  local w0 c0 w1 c1
  read -r w0 c0 < <(awk '/^write_bytes/{w=$2} /^wchar/{c=$2} END{print w, c}' "/proc/$PID/io")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/post.lua" \
    "$url/api/v2/keys/$key/actions/wrap" > "$WORK/wrk.txt"
  sleep "$SETTLE"
  read -r w1 c1 < <(awk '/^write_bytes/{w=$2} /^wchar/{c=$2} END{print w, c}' "/proc/$PID/io")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  python3 - "$WORK/wrk.txt" "$dir" $((w1 - w0)) $((c1 - c0)) <<'PY'
import os, sqlite3, sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(open(sys.argv[1]).read())
d = sys.argv[2]
db = os.path.join(d, "keyward.db")
rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM audit_events").fetchone()[0]
arch = os.path.join(d, "audit-archive")
ab = sum(os.path.getsize(os.path.join(arch, f)) for f in os.listdir(arch)) if os.path.isdir(arch) else 0
print(f"{w['rps']:.0f} {w['requests']} {sys.argv[3]} {sys.argv[4]} {os.path.getsize(db)} {rows} {ab} {w['failures']}")
PY
}

declare -A R
for round in $(seq "$ROUNDS"); do
  order="before after"; [ $((round % 2)) = 0 ] && order="after before"
  for mode in $order; do
    r=$(run "$mode" "$round")
    echo "round $round $mode: $r (rps requests write_bytes wchar db_bytes audit_rows archive_bytes failures)" >&2
    R[$mode]="${R[$mode]:-}$r;"
  done
done

python3 - "${R[before]}" "${R[after]}" <<'PY'
import statistics, sys
def runs(s): return [list(map(float, r.split())) for r in s.strip(";").split(";")]
print("| audit trail | wraps/s | storage bytes written per wrap | write() bytes per wrap | database at the end | audit rows at the end | archive | failures |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, s in [("as before (`archive = false`)", sys.argv[1]), ("archive + `retain_events = 50000`", sys.argv[2])]:
    r = runs(s)
    med = lambda i: statistics.median(x[i] for x in r)
    per = lambda i: statistics.median(x[i] / x[1] for x in r)
    print(f"| {name} | {med(0):.0f} | {per(2):.0f} | {per(3):.0f} | {med(4)/1e6:.1f} MB | {med(5):.0f} | {med(6)/1e6:.1f} MB | {sum(x[7] for x in r):.0f} |")
PY
