#!/usr/bin/env bash
# HTTP load test: starts a release `keyward serve` on its embedded defaults (SQLite, software
# custody, audit events on and durable), then measures GET /healthz, wrap and unwrap with wrk
# (keep-alive, 64 connections) in the same run, ROUNDS times each, interleaved, and writes the
# medians to BENCHMARKS.md. The load generator shares the machine's cores with the server, so
# compare the ratios, not the absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
# AUDIT_EXPORT=1: also export every audit event to a JSON Lines sink (the hash chain and
# /metrics are always on), and scrape /metrics once per round.
AUDIT_EXPORT=${AUDIT_EXPORT:-0}
# KEYS="1000 100000": the many-keys mode instead (scripts/bench/many_keys.sh, issue 19).
if [ -n "${KEYS:-}" ]; then exec "$ROOT/scripts/bench/many_keys.sh"; fi

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p keyward
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward

WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n' > "$WORK/keyward.toml"
if [ "$AUDIT_EXPORT" = 1 ]; then
  printf '[[audit.jsonl]]\nname = "bench"\npath = "%s/audit.jsonl"\n' "$WORK" >> "$WORK/keyward.toml"
fi
KEYWARD_LOG=warn "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --config "$WORK/keyward.toml" > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
[ -n "$URL" ] || { cat "$WORK/stderr"; exit 1; }

read -r API_KEY INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$WORK/data/bootstrap.json")
TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$API_KEY" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
H=(-H "Authorization: Bearer $TOKEN" -H "bluemix-instance: $INSTANCE" -H "Content-Type: application/json")
KEY=$(curl -sf "${H[@]}" -d '{"resources":[{"name":"bench-root"}]}' "$URL/api/v2/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])')
DEK=$(head -c 32 /dev/urandom | base64)
WRAP_BODY="{\"plaintext\":\"$DEK\",\"aad\":[\"tenant-a\"]}"
CT=$(curl -sf "${H[@]}" -d "$WRAP_BODY" "$URL/api/v2/keys/$KEY/actions/wrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')
UNWRAP_BODY="{\"ciphertext\":\"$CT\",\"aad\":[\"tenant-a\"]}"
export BENCH_TOKEN=$TOKEN BENCH_INSTANCE=$INSTANCE

# The server's CPU time so far (user + system, clock ticks), and the machine's idle ticks: with
# them each run also reports the server's CPU per request and how idle the cores were, which say
# where a ratio comes from (the host's speed drifts between runs; these drift less).
server_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
idle_ticks() { awk '/^cpu /{print $5 + $6; exit}' /proc/stat; }
all_ticks() { awk '/^cpu /{s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit}' /proc/stat; }

# run NAME URL [BODY]: prints "rps p50_ms p99_ms non2xx server_us_per_request idle_percent"
run() {
  local name=$1 url=$2 body=${3:-}
  local out s0 s1 i0 i1 a0 a1
  s0=$(server_ticks); i0=$(idle_ticks); a0=$(all_ticks)
  if [ -n "$body" ]; then
    out=$(BENCH_BODY=$body wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/post.lua" "$url")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  fi
  s1=$(server_ticks); i1=$(idle_ticks); a1=$(all_ticks)
  echo "$out" > "$WORK/$name.$RANDOM.txt"
  python3 - "$out" "$((s1 - s0))" "$((i1 - i0))" "$((a1 - a0))" "$(getconf CLK_TCK)" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(sys.argv[1])
server, idle, total, tck = map(int, sys.argv[2:6])
cpu_us = server / tck * 1e6 / max(w["requests"], 1)
print(f"{w['rps']:.0f} {w['p50']:.3f} {w['p99']:.3f} {w['failures']} {cpu_us:.1f} {100 * idle / max(total, 1):.1f}")
PY
}

# Warm up (page cache, WAL, allocator, key cache) so round 1 is not a cold outlier.
BENCH_BODY=$WRAP_BODY wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$ROOT/scripts/bench/post.lua" "$URL/api/v2/keys/$KEY/actions/wrap" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$URL/healthz" >/dev/null

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  for op in healthz wrap unwrap; do
    case $op in
      healthz) r=$(run healthz "$URL/healthz") ;;
      wrap) r=$(run wrap "$URL/api/v2/keys/$KEY/actions/wrap" "$WRAP_BODY") ;;
      unwrap) r=$(run unwrap "$URL/api/v2/keys/$KEY/actions/unwrap" "$UNWRAP_BODY") ;;
    esac
    echo "round $round $op: $r (req/s p50_ms p99_ms non2xx server_us/req idle%)"
    [ "$AUDIT_EXPORT" = 1 ] && curl -sf "$URL/metrics" > "$WORK/metrics.txt"
    RESULTS[$op]="${RESULTS[$op]:-}$r;"
  done
done

if [ "$AUDIT_EXPORT" = 1 ]; then
  sleep 2
  echo "exported lines: $(cat "$WORK"/audit.jsonl* | wc -l)"
  grep -E '^keyward_(audit_export_lag_events|audit_exported_total|audit_chain_head_seq)' "$WORK/metrics.txt" || true
fi
AUDIT_EVENTS=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from audit_events").fetchone()[0])' "$WORK/data/keyward.db")

python3 - "$OUT" "$DURATION" "$CONNECTIONS" "$THREADS" "$AUDIT_EVENTS" "${RESULTS[healthz]}" "${RESULTS[wrap]}" "${RESULTS[unwrap]}" <<'PY'
import statistics, sys, datetime, os, platform
out, duration, conns, threads, audit = sys.argv[1:6]
def parse(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return {"rps": statistics.median(r[0] for r in rows), "p50": statistics.median(r[1] for r in rows),
            "p99": statistics.median(r[2] for r in rows), "non2xx": sum(r[3] for r in rows), "n": len(rows),
            "cpu": statistics.median(r[4] for r in rows), "idle": statistics.median(r[5] for r in rows)}
h, w, u = (parse(x) for x in sys.argv[6:9])
cpus = os.cpu_count()
lines = [
    "# Benchmarks",
    "",
    "Written by `scripts/bench.sh`; numbers are medians of interleaved rounds in one run. Server and",
    "load generator (wrk) share the machine, so the ratios are what to compare, not absolute figures.",
    "",
    f"## HTTP: wrap and unwrap against `/healthz` ({datetime.date.today()}, {cpus} cores, {platform.machine()})",
    "",
    f"`keyward serve` release build on its embedded defaults (SQLite in WAL, software custody),",
    f"audit events on and durable before each 2xx (group commit, the log fdatasync'd). wrk -t{threads} -c{conns} -d{duration}, keep-alive, {h['n']} rounds each;",
    "32-byte DEK, one AAD string.",
    "",
    "| operation | requests/s (median) | ratio to /healthz | p50 ms | p99 ms | non-2xx | server CPU µs/request | cores idle |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for name, r in [("GET /healthz", h), ("POST .../actions/wrap", w), ("POST .../actions/unwrap", u)]:
    lines.append(f"| {name} | {r['rps']:.0f} | {r['rps']/h['rps']:.2f} | {r['p50']:.2f} | {r['p99']:.2f} | {int(r['non2xx'])} | {r['cpu']:.1f} | {r['idle']:.0f} % |")
ok = all(r["rps"] >= 0.5 * h["rps"] and r["p99"] <= 5.0 and r["non2xx"] == 0 for r in (w, u))
lines += ["", f"Target (issue #2): wrap and unwrap at >= 0.5x the requests/s of /healthz, p99 <= 5 ms: **{'met' if ok else 'NOT met'}**.",
          f"Audit events written during the run: {audit}.", ""]
text = "\n".join(lines)
# Keep any hand-written sections after the generated one.
if os.path.exists(out):
    old = open(out).read()
    marker = "\n## In-process"
    if marker in old:
        text += old[old.index(marker):]
open(out, "w").write(text)
print(text)
PY
