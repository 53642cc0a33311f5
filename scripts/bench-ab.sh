#!/usr/bin/env bash
# A/B of two `keyward` builds in one run: starts BIN_A and BIN_B (release binaries, each on its own
# data dir, embedded defaults: SQLite, software custody, durable audit), then measures wrap and
# unwrap against each with wrk, ROUNDS times, interleaved (A B, then B A, ...), and prints the
# medians and the ratio B/A. Use it to show a change is not slower: build the old commit in a
# worktree (`git worktree add /tmp/base OLD && cargo build --release -p keyward` there).
#   BIN_A=/tmp/base/target/release/keyward BIN_B=target/release/keyward scripts/bench-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
: "${BIN_A:?the A build (a keyward binary)}" "${BIN_B:?the B build (a keyward binary)}"
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }

WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
printf '[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n' > "$WORK/keyward.toml"

# start NAME BIN: starts a server and sets URL_NAME, KEY_NAME, TOKEN_NAME, INSTANCE_NAME, CT_NAME.
start() {
  local name=$1 bin=$2 url api_key instance token key ct
  KEYWARD_LOG=warn "$bin" serve --data-dir "$WORK/$name" --listen 127.0.0.1:0 --config "$WORK/keyward.toml" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^keyward: listening on //p' "$WORK/$name.out")
  [ -n "$url" ] || { cat "$WORK/$name.err"; exit 1; }
  read -r api_key instance < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$WORK/$name/bootstrap.json")
  token=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$api_key" "$url/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  local h=(-H "Authorization: Bearer $token" -H "bluemix-instance: $instance" -H "Content-Type: application/json")
  key=$(curl -sf "${h[@]}" -d '{"resources":[{"name":"bench-root"}]}' "$url/api/v2/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])')
  ct=$(curl -sf "${h[@]}" -d "$WRAP_BODY" "$url/api/v2/keys/$key/actions/wrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')
  printf -v "URL_$name" %s "$url"; printf -v "KEY_$name" %s "$key"; printf -v "TOKEN_$name" %s "$token"
  printf -v "INSTANCE_$name" %s "$instance"; printf -v "CT_$name" %s "$ct"
}

WRAP_BODY="{\"plaintext\":\"$(head -c 32 /dev/urandom | base64)\",\"aad\":[\"tenant-a\"]}"
start A "$BIN_A"
start B "$BIN_B"

# run NAME OP: prints "rps p50_ms p99_ms failures"
run() {
  local name=$1 op=$2 url key body
  url=URL_$name; key=KEY_$name
  if [ "$op" = wrap ]; then body=$WRAP_BODY; else
    local ct=CT_$name; body="{\"ciphertext\":\"${!ct}\",\"aad\":[\"tenant-a\"]}"; fi
  local token=TOKEN_$name instance=INSTANCE_$name
  BENCH_BODY=$body BENCH_TOKEN=${!token} BENCH_INSTANCE=${!instance} \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/post.lua" \
    "${!url}/api/v2/keys/${!key}/actions/$op" > "$WORK/wrk.txt"
  python3 - "$WORK/wrk.txt" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(open(sys.argv[1]).read())
print(f"{w['rps']:.0f} {w['p50']:.3f} {w['p99']:.3f} {w['failures']}")
PY
}

for name in A B; do run "$name" wrap >/dev/null; done  # warm up
declare -A R
for round in $(seq "$ROUNDS"); do
  order="A B"; [ $((round % 2)) = 0 ] && order="B A"
  for op in wrap unwrap; do
    for name in $order; do
      r=$(run "$name" "$op")
      echo "round $round $op $name: $r (req/s p50_ms p99_ms failures)"
      R[$op$name]="${R[$op$name]:-}$r;"
    done
  done
done

python3 - "${R[wrapA]}" "${R[wrapB]}" "${R[unwrapA]}" "${R[unwrapB]}" <<'PY'
import statistics, sys
def med(s, i):
    return statistics.median(float(r.split()[i]) for r in s.strip(";").split(";"))
wa, wb, ua, ub = sys.argv[1:5]
print("| operation | A req/s | B req/s | B/A | A p99 ms | B p99 ms | failures A/B |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, a, b in [("wrap", wa, wb), ("unwrap", ua, ub)]:
    fa = sum(float(r.split()[3]) for r in a.strip(";").split(";"))
    fb = sum(float(r.split()[3]) for r in b.strip(";").split(";"))
    print(f"| {name} | {med(a,0):.0f} | {med(b,0):.0f} | {med(b,0)/med(a,0):.3f} | {med(a,2):.2f} | {med(b,2):.2f} | {fa:.0f}/{fb:.0f} |")
PY
