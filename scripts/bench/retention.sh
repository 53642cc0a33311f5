#!/usr/bin/env bash
# Issue 20: bytes written per wrap and wraps/s under several audit settings, in one run,
# interleaved ROUNDS times (the order reversed every other round). Per wrap: the server's storage
# writes (/proc/PID/io write_bytes: the database, its log, the archive), of which the store's
# writer thread (the write-ahead log) and its checkpointer (the database file), and its write()
# bytes (wchar), over the wrk run plus SETTLE seconds after it (so the archiver's, the
# checkpointer's and the aggregation flusher's catch-up is counted). Prints a Markdown table;
# also the database size and audit rows at the end of each run, and the archive's size.
#
# MODES (default "off archive") names the runs, each `SETTINGS[@BINVAR]`: SETTINGS is one of
#   off        `[audit] archive = false` (never archived, never pruned: the trail as before
#              issue 20)
#   archive    `segment_events = 20000`, `retain_events = 50000`
#   aggregate  `archive = false`, `aggregate_crypto = true`
#   aggregate+archive  both
# and BINVAR, when given, names an environment variable holding another keyward binary for that
# mode (e.g. a build of main: BEFORE=/tmp/keyward-main MODES="off@BEFORE off aggregate").
#   scripts/bench/retention.sh            (BIN=path/to/keyward to skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${DURATION:-15s}
SETTLE=${SETTLE:-5}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
MODES=${MODES:-off archive}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p keyward
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward
fi
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

conf() {  # conf SETTINGS: the config of a mode
  printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n[audit]\n'
  case $1 in
    off) printf 'archive = false\n' ;;
    archive) printf 'segment_events = 20000\nretain_events = 50000\n' ;;
    aggregate) printf 'archive = false\naggregate_crypto = true\n' ;;
    aggregate+archive) printf 'segment_events = 20000\nretain_events = 50000\naggregate_crypto = true\n' ;;
    *) echo "unknown mode settings $1" >&2; exit 2 ;;
  esac
}

# io: "write_bytes wchar writer_thread_write_bytes checkpointer_thread_write_bytes" of $PID
io() {
  local w c t ww=0 cw=0 name b
  read -r w c < <(awk '/^write_bytes/{w=$2} /^wchar/{c=$2} END{print w, c}' "/proc/$PID/io")
  for t in /proc/"$PID"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null) || continue
    b=$(awk '/^write_bytes/{print $2}' "$t/io" 2>/dev/null) || continue
    case $name in
      keyward-store-w*) ww=$((ww + b)) ;;
      keyward-store-c*) cw=$((cw + b)) ;;
    esac
  done
  echo "$w $c $ww $cw"
}

# run MODE ROUND: prints "rps requests write_bytes wchar db_bytes audit_rows archive_bytes
# failures log_bytes db_file_bytes"
run() {
  local mode=$1 settings=${1%@*} bin=$BIN dir="$WORK/$1-$2"
  if [ "$settings" != "$mode" ]; then local binvar=${mode#*@}; bin=${!binvar}; fi
  conf "$settings" > "$WORK/mode.toml"
  KEYWARD_LOG=warn "$bin" serve --data-dir "$dir" --listen 127.0.0.1:0 --config "$WORK/mode.toml" \
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
  local w0 c0 l0 d0 w1 c1 l1 d1
  read -r w0 c0 l0 d0 < <(io)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/post.lua" \
    "$url/api/v2/keys/$key/actions/wrap" > "$WORK/wrk.txt"
  sleep "$SETTLE"
  read -r w1 c1 l1 d1 < <(io)
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  python3 - "$WORK/wrk.txt" "$dir" $((w1 - w0)) $((c1 - c0)) $((l1 - l0)) $((d1 - d0)) <<'PY'
import os, sqlite3, sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(open(sys.argv[1]).read())
d = sys.argv[2]
db = os.path.join(d, "keyward.db")
rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM audit_events").fetchone()[0]
arch = os.path.join(d, "audit-archive")
ab = sum(os.path.getsize(os.path.join(arch, f)) for f in os.listdir(arch)) if os.path.isdir(arch) else 0
print(f"{w['rps']:.0f} {w['requests']} {sys.argv[3]} {sys.argv[4]} {os.path.getsize(db)} {rows} {ab} {w['failures']} {sys.argv[5]} {sys.argv[6]}")
PY
}

declare -A R
read -r -a modes <<< "$MODES"
for round in $(seq "$ROUNDS"); do
  order=("${modes[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=(); for ((i=${#modes[@]}-1; i>=0; i--)); do order+=("${modes[$i]}"); done
  fi
  for mode in "${order[@]}"; do
    r=$(run "$mode" "$round")
    echo "round $round $mode: $r (rps requests write_bytes wchar db_bytes audit_rows archive_bytes failures log_bytes db_file_bytes)" >&2
    R[$mode]="${R[$mode]:-}$r;"
  done
done

args=()
for mode in "${modes[@]}"; do args+=("$mode" "${R[$mode]}"); done
python3 - "${args[@]}" <<'PY'
import statistics, sys
names = {
    "off": "`archive = false` (the trail as before)",
    "archive": "archive + `retain_events = 50000`",
    "aggregate": "`archive = false`, `aggregate_crypto = true`",
    "aggregate+archive": "archive + retention, `aggregate_crypto = true`",
}
def runs(s): return [list(map(float, r.split())) for r in s.strip(";").split(";")]
print("| build | audit trail | wraps/s | storage bytes written per wrap | of which the log | of which the database file | write() bytes per wrap | database at the end | audit rows at the end | archive | failures |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
a = sys.argv[1:]
for mode, s in zip(a[::2], a[1::2]):
    settings, _, binvar = mode.partition("@")
    r = runs(s)
    med = lambda i: statistics.median(x[i] for x in r)
    per = lambda i: statistics.median(x[i] / x[1] for x in r)
    print(f"| {binvar or 'this'} | {names.get(settings, settings)} | {med(0):.0f} | {per(2):.0f} | {per(8):.0f} | {per(9):.0f} | {per(3):.0f} | {med(4)/1e6:.1f} MB | {med(5):.0f} | {med(6)/1e6:.1f} MB | {sum(x[7] for x in r):.0f} |")
PY
