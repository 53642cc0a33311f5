#!/usr/bin/env bash
# Keyward on PostgreSQL beside SQLite, in one run: wrap and unwrap req/s, p99 and server CPU per
# request for (1) one node on SQLite, (2) one node on PostgreSQL, (3) two nodes on one
# PostgreSQL (wrk against both at once, half the connections each). Rounds are interleaved.
# PostgreSQL runs with its durable defaults (fsync, synchronous_commit on) in a throwaway cluster
# on a Unix socket, with pg_stat_statements, so the run also reports per-request database round
# trips and commits, and samples lock waits (ungranted pg_locks) during the two-node runs: the
# hot path must take no cluster-wide lock. Appends a section to BENCHMARKS.md (OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
OUT=${OUT:-$ROOT/BENCHMARKS.md}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
PGBIN=$(scripts/postgres.sh)
cargo build --release -q -p keyward
BIN=${BIN:-$ROOT/target/release/keyward}

WORK=$(mktemp -d -t keyward-bench-cluster.XXXXXX)
chmod 755 "$WORK"  # PostgreSQL (the postgres user, as root) reaches its directory through it
PIDS=()
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The database: durable defaults, stats on.
mkdir -p "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -o "-c listen_addresses='' -k $WORK/pg \
  -c shared_preload_libraries=pg_stat_statements -c max_connections=200" start >/dev/null
psql_() { "$PGBIN/psql" -X -q -A -t -h "$WORK/pg" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE keyward" >/dev/null
psql_ -d keyward -c "CREATE EXTENSION pg_stat_statements" >/dev/null
PGURL="host=$WORK/pg port=5432 user=postgres dbname=keyward"

LIFECYCLE='[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n'
# start NAME DIR CONFIG: starts a node, sets URL_<NAME> and PID_<NAME>.
start() {
  local name=$1 dir=$2
  mkdir -p "$dir"
  printf "$3" > "$dir/keyward.toml"
  KEYWARD_LOG=warn "$BIN" serve --data-dir "$dir" --listen 127.0.0.1:0 --config "$dir/keyward.toml" \
    > "$dir/stdout" 2> "$dir/stderr" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do grep -q "listening on" "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
  local url
  url=$(sed -n 's/^keyward: listening on //p' "$dir/stdout")
  [ -n "$url" ] || { cat "$dir/stderr"; exit 1; }
  printf -v "URL_$name" '%s' "$url"
  printf -v "PID_$name" '%s' "$pid"
}
PGCONF="$LIFECYCLE[store]\nbackend = \"postgres\"\nurl = \"$PGURL\"\npool_size = 32\n"
start sqlite "$WORK/sqlite" "$LIFECYCLE"
start pga "$WORK/pga" "$PGCONF"
mkdir -p "$WORK/pgb" && cp "$WORK/pga/keystore.json" "$WORK/pgb/"
start pgb "$WORK/pgb" "$PGCONF"

# setup URL BOOTDIR: a token, the instance, a root key and a ciphertext; prints the wrk env.
setup() {
  local url=$1 boot=$2 api_key instance token key ct
  read -r api_key instance < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$boot/bootstrap.json")
  token=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$api_key" "$url/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  local h=(-H "Authorization: Bearer $token" -H "bluemix-instance: $instance" -H "Content-Type: application/json")
  key=$(curl -sf "${h[@]}" -d '{"resources":[{"name":"bench-root"}]}' "$url/api/v2/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])')
  ct=$(curl -sf "${h[@]}" -d "{\"plaintext\":\"$DEK\",\"aad\":[\"tenant-a\"]}" "$url/api/v2/keys/$key/actions/wrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')
  echo "$token $instance $key $ct"
}
DEK=$(head -c 32 /dev/urandom | base64)
read -r TOK_S INST_S KEY_S CT_S < <(setup "$URL_sqlite" "$WORK/sqlite")
read -r TOK_P INST_P KEY_P CT_P < <(setup "$URL_pga" "$WORK/pga")

ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# bench SETUP OP URL...: one wrk per URL at once (connections split), prints
# "rps p50 p99 failures server_us_per_request".
bench() {
  local setup=$1 op=$2; shift 2
  local tok inst key ct body pids=() outs=() n=$# i=0
  case $setup in sqlite) tok=$TOK_S inst=$INST_S key=$KEY_S ct=$CT_S ;; *) tok=$TOK_P inst=$INST_P key=$KEY_P ct=$CT_P ;; esac
  if [ "$op" = wrap ]; then body="{\"plaintext\":\"$DEK\",\"aad\":[\"tenant-a\"]}"; else body="{\"ciphertext\":\"$ct\",\"aad\":[\"tenant-a\"]}"; fi
  local servers=()
  case $setup in sqlite) servers=("$PID_sqlite") ;; pg1) servers=("$PID_pga") ;; pg2) servers=("$PID_pga" "$PID_pgb") ;; esac
  local s0; s0=$(ticks "${servers[@]}")
  for url in "$@"; do
    i=$((i + 1))
    BENCH_TOKEN=$tok BENCH_INSTANCE=$inst BENCH_BODY=$body wrk -t1 -c$((CONNECTIONS / n)) -d"$DURATION" --latency \
      -s "$ROOT/scripts/bench/post.lua" "$url/api/v2/keys/$key/actions/$op" > "$WORK/wrk.$i" &
    pids+=($!)
    outs+=("$WORK/wrk.$i")
  done
  for p in "${pids[@]}"; do wait "$p"; done
  local s1; s1=$(ticks "${servers[@]}")
  python3 - "$((s1 - s0))" "$(getconf CLK_TCK)" "${outs[@]}" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
ticks, tck = int(sys.argv[1]), int(sys.argv[2])
ws = [parse(open(f).read()) for f in sys.argv[3:]]
rps = sum(w["rps"] for w in ws); reqs = sum(w["requests"] for w in ws)
print(f"{rps:.0f} {max(w['p50'] for w in ws):.3f} {max(w['p99'] for w in ws):.3f} {sum(w['failures'] for w in ws)} {ticks / tck * 1e6 / max(reqs, 1):.1f}")
PY
}

# Lock waits: samples ungranted locks every 50 ms while a command runs (its output passes
# through); writes "samples waits" to $WORK/locks.result.
sample_locks() {
  local f=$WORK/locks
  : > "$f"
  ( while :; do psql_ -d keyward -c "SELECT count(*) FROM pg_locks WHERE NOT granted" >> "$f" 2>/dev/null; sleep 0.05; done ) &
  local sampler=$!
  "$@"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  echo "$(wc -l < "$f") $(awk '{s += $1} END {print s + 0}' "$f")" > "$WORK/locks.result"
}

# Warm up every node.
for s in sqlite pg1; do bench "$s" wrap "$([ $s = sqlite ] && echo "$URL_sqlite" || echo "$URL_pga")" >/dev/null; done
bench pg2 wrap "$URL_pga" "$URL_pgb" >/dev/null

declare -A R
psql_ -d keyward -c "SELECT pg_stat_statements_reset()" >/dev/null
COMMITS0=$(psql_ -d keyward -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'keyward'")
PGREQS=0
LOCKS="0 0"
for round in $(seq "$ROUNDS"); do
  for op in wrap unwrap; do
    r=$(bench sqlite "$op" "$URL_sqlite"); echo "round $round sqlite $op: $r"; R[sqlite_$op]+="$r;"
    r=$(bench pg1 "$op" "$URL_pga"); echo "round $round pg1 $op: $r"; R[pg1_$op]+="$r;"
    PGREQS=$((PGREQS + $(python3 -c "import sys; print(int(float(sys.argv[1]) * float(sys.argv[2].rstrip('s'))))" "${r%% *}" "$DURATION")))
    r=$(sample_locks bench pg2 "$op" "$URL_pga" "$URL_pgb")
    LOCKS=$(cat "$WORK/locks.result")
    echo "round $round pg2 $op: $r"; R[pg2_$op]+="$r;"
    PGREQS=$((PGREQS + $(python3 -c "import sys; print(int(float(sys.argv[1]) * float(sys.argv[2].rstrip('s'))))" "${r%% *}" "$DURATION")))
    echo "  lock samples / ungranted locks seen: $LOCKS"
    R[locks]+="$LOCKS;"
  done
done
COMMITS1=$(psql_ -d keyward -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'keyward'")
psql_ -d keyward -F $'\t' -c "SELECT calls, rows, round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\s+', ' ', 'g'), 90)
  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'keyward')
  ORDER BY calls DESC LIMIT 8" > "$WORK/statements.tsv"
cat "$WORK/statements.tsv"

python3 - "$OUT" "$DURATION" "$CONNECTIONS" "$PGREQS" "$COMMITS0" "$COMMITS1" "$WORK/statements.tsv" \
  "${R[sqlite_wrap]}" "${R[sqlite_unwrap]}" "${R[pg1_wrap]}" "${R[pg1_unwrap]}" "${R[pg2_wrap]}" "${R[pg2_unwrap]}" "${R[locks]}" <<'PY'
import statistics, sys, datetime, os
out, duration, conns, reqs, c0, c1, stmts = sys.argv[1:8]
def med(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return {k: statistics.median(r[i] for r in rows) for i, k in enumerate(["rps", "p50", "p99", "fail", "cpu"])} | {"fail": sum(r[3] for r in rows), "n": len(rows)}
sw, su, p1w, p1u, p2w, p2u = (med(x) for x in sys.argv[8:14])
locks = [tuple(map(int, l.split())) for l in sys.argv[14].strip(";").split(";")]
reqs = max(int(reqs), 1)
commits = int(c1) - int(c0)
lines = ["", f"## PostgreSQL: one and two nodes beside SQLite ({datetime.date.today()}, {os.cpu_count()} cores)", "",
  "`scripts/bench-cluster.sh`: release builds; PostgreSQL 15 with its durable defaults (fsync and",
  "synchronous_commit on) on a Unix socket of the same machine; wrk keep-alive, "
  f"{conns} connections in all (split over the nodes), {duration} per run, {sw['n']} interleaved rounds; medians.",
  "Two nodes on 2 cores share the cores with each other, PostgreSQL and wrk: they cannot show scale-out,",
  "only that adding a node costs nothing per request and takes no cluster-wide lock.", "",
  "| setup | wrap req/s | wrap p99 ms | unwrap req/s | unwrap p99 ms | server CPU µs/wrap | server CPU µs/unwrap | non-2xx |",
  "|---|---:|---:|---:|---:|---:|---:|---:|"]
for name, w, u in [("1 node, SQLite", sw, su), ("1 node, PostgreSQL", p1w, p1u), ("2 nodes, one PostgreSQL", p2w, p2u)]:
    lines.append(f"| {name} | {w['rps']:.0f} | {w['p99']:.2f} | {u['rps']:.0f} | {u['p99']:.2f} | {w['cpu']:.1f} | {u['cpu']:.1f} | {int(w['fail'] + u['fail'])} |")
lines += ["", f"Per request on PostgreSQL (all PostgreSQL runs): {commits / reqs:.2f} commits. Lock waits during the",
  f"two-node runs: {sum(l[1] for l in locks)} ungranted locks in {sum(l[0] for l in locks)} samples (every 50 ms).",
  "Most frequent statements (pg_stat_statements: calls, rows, mean ms, statement):", "", "```"]
lines += [l.rstrip() for l in open(stmts) if l.strip()]
lines += ["```", ""]
text = "\n".join(lines)
open(out, "a").write(text)
print(text)
PY
