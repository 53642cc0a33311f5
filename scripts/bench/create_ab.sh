#!/usr/bin/env bash
# Key creation, A/B of two `keyward` builds in one run (issue 19: "key creation at >= 10 k/s with
# the audit event of each"). For each N in KEYS, each build fills its own data dir (embedded
# defaults: SQLite, software custody) with N root keys over HTTP, as many_keys.sh does; then ROUNDS
# interleaved rounds (A B, then B A, ...), each on a fresh copy of that build's filled dir (so every
# round starts at N keys), create keys for DURATION with wrk (create.lua, CONNECTIONS connections,
# the same Lua callback as the many-keys mode). Prints per round and as medians: created keys/s
# (2xx answers), p50/p99, failures, the server's CPU per created key (utime + stime of the server
# process over the run, /proc/PID/stat), how idle the machine's cores were and the load
# generator's CPU per created key (the host is shared:
# compare the builds within one run). FILL=A: B starts from a copy of A's filled dir (keys made
# by A, as after an upgrade; B migrates it at its first start) instead of filling its own.
# CONFIG_A / CONFIG_B: top-level config lines for that build only (one binary, two settings).
#   BIN_A=/tmp/base/keyward BIN_B=$CARGO_TARGET_DIR/release/keyward scripts/bench/create_ab.sh
#   BIN_A=$B BIN_B=$B CONFIG_A='key_ids = "random"' scripts/bench/create_ab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
KEYS=${KEYS:-1000 100000}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-4}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
: "${BIN_A:?the A build (a keyward binary)}" "${BIN_B:?the B build (a keyward binary)}"
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }

WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }; rm -rf "$WORK"' EXIT
for b in A B; do
  extra=CONFIG_$b
  printf '%s\n[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n' "${!extra:-}" > "$WORK/$b.toml"
done

# start BUILD DIR: a server of BUILD (A or B) on DIR; sets PID, URL and exports BENCH_TOKEN,
# BENCH_INSTANCE.
start() {
  local build=$1 dir=$2 api_key bin
  bin=BIN_$build
  : > "$WORK/stdout"
  KEYWARD_LOG=warn "${!bin}" serve --data-dir "$dir" --listen 127.0.0.1:0 --config "$WORK/$build.toml" \
    > "$WORK/stdout" 2> "$WORK/stderr" &
  PID=$!
  for _ in $(seq 600); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
  [ -n "$URL" ] || { cat "$WORK/stderr"; exit 1; }
  read -r api_key BENCH_INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$dir/bootstrap.json")
  BENCH_TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$api_key" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  export BENCH_TOKEN BENCH_INSTANCE
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
total() {
  curl -sfI -H "Authorization: Bearer $BENCH_TOKEN" -H "bluemix-instance: $BENCH_INSTANCE" "$URL/api/v2/keys" \
    | tr -d '\r' | sed -n 's/^[Xx]-[Kk]ms-[Kk]ey-[Tt]otal: //p'
}
server_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
idle_ticks() { awk '/^cpu /{print $5 + $6; exit}' /proc/stat; }
all_ticks() { awk '/^cpu /{s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit}' /proc/stat; }

# fill BUILD DIR N: N keys in DIR, made through the API by BUILD.
fill() {
  local build=$1 dir=$2 n=$3 wrk_pid
  start "$build" "$dir"
  BENCH_PER_THREAD=$(( (n + THREADS - 1) / THREADS )) wrk -t"$THREADS" -c32 -d3600s -s "$ROOT/scripts/bench/create.lua" "$URL" > /dev/null &
  wrk_pid=$!
  until [ "$(total)" -ge "$n" ]; do kill -0 "$wrk_pid" 2>/dev/null || break; sleep 0.2; done
  kill -INT "$wrk_pid" 2>/dev/null || true; wait "$wrk_pid" 2>/dev/null || true
  echo "filled $dir: $(total) keys"
  stop
}

# round BUILD TEMPLATE: prints "keys_per_s p50_ms p99_ms failures server_us_per_key idle_percent
# wrk_us_per_key"
round() {
  local build=$1 template=$2 out s0 s1 i0 i1 a0 a1
  rm -rf "$WORK/run"; cp -a "$template" "$WORK/run"
  start "$build" "$WORK/run"
  s0=$(server_ticks); i0=$(idle_ticks); a0=$(all_ticks)
  # wrk in a subshell that then reports its children's CPU time (`times`, second line): wrk's.
  out=$(BENCH_PER_THREAD=1000000000 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/scripts/bench/create.lua" "$URL"; times)
  s1=$(server_ticks); i1=$(idle_ticks); a1=$(all_ticks)
  stop; rm -rf "$WORK/run"
  python3 - "$out" "$((s1 - s0))" "$(getconf CLK_TCK)" "$((i1 - i0))" "$((a1 - a0))" <<'PY'
import re, sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(sys.argv[1])
server, tck, idle, all_ = map(int, sys.argv[2:6])
secs = float(re.search(r"requests in ([\d.]+)s", sys.argv[1]).group(1))
ok = w["requests"] - w["failures"]
child = re.findall(r"(\d+)m([\d.]+)s", sys.argv[1].strip().splitlines()[-1])
wrk_s = sum(int(m) * 60 + float(s) for m, s in child)
print(f"{ok / secs:.0f} {w['p50']:.3f} {w['p99']:.3f} {w['failures']} {server / tck * 1e6 / max(ok, 1):.1f} {100 * idle / max(all_, 1):.0f} {wrk_s * 1e6 / max(ok, 1):.1f}")
PY
}

for N in $KEYS; do
  fill A "$WORK/A-$N" "$N"
  if [ "${FILL:-}" = A ]; then cp -a "$WORK/A-$N" "$WORK/B-$N"; else fill B "$WORK/B-$N" "$N"; fi
  RA=; RB=
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for b in $order; do
      res=$(round "$b" "$WORK/$b-$N")
      echo "N=$N round $r $b: $res (keys/s p50_ms p99_ms failures server_us/key idle% wrk_us/key)"
      if [ "$b" = A ]; then RA="$RA$res;"; else RB="$RB$res;"; fi
    done
  done
  rm -rf "$WORK/A-$N" "$WORK/B-$N"
  python3 - "$N" "$RA" "$RB" <<'PY'
import statistics, sys
n, a, b = sys.argv[1:4]
def med(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return [statistics.median(r[i] for r in rows) for i in range(7)]
ma, mb = med(a), med(b)
names = ["keys/s", "p50 ms", "p99 ms", "failures", "server us/key", "idle %", "wrk us/key"]
print(f"N={n} medians: " + ", ".join(f"{k} A {x:g} B {y:g}" for k, x, y in zip(names, ma, mb)))
print(f"N={n} B/A: keys/s {mb[0] / ma[0]:.2f}x, server CPU per key {mb[4] / ma[4]:.2f}x")
PY
done
