#!/usr/bin/env bash
# KMIP load test: starts a release `keyward serve` on its embedded defaults with a `[kmip]`
# listener (a throwaway CA, server and client certificate made with openssl), registers the client
# certificate on an adapter, creates an AES-256 KMIP key, then measures in the same run, ROUNDS
# times each, interleaved: KMIP Get and KMIP Encrypt (AES-GCM, 32 bytes) over 1 TLS connection
# and over 32, and REST wrap (wrk, 32 connections) for comparison. Writes the medians into
# BENCHMARKS.md (section "KMIP"). Load generator and server share the machine: compare ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$ROOT/BENCHMARKS.md}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p keyward
cargo build --release -q -p keyward-kmip --example kmip_load
BIN=$ROOT/target/release/keyward
LOAD=$ROOT/target/release/examples/kmip_load

WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > server.ext
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-client -keyout client.key -out client.pem 2>/dev/null
cd "$ROOT"

cat > "$WORK/keyward.toml" <<EOF
[lifecycle]
min_rotation_interval_secs = 0
enable_after_disable_secs = 0
[kmip]
listen = "127.0.0.1:0"
tls_cert = "$WORK/server.pem"
tls_key = "$WORK/server.key"
EOF
KEYWARD_LOG=warn "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --config "$WORK/keyward.toml" > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 100); do grep -q "KMIP listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^keyward: listening on //p' "$WORK/stdout")
KMIP=$(sed -n 's/^keyward: KMIP listening on //p' "$WORK/stdout")
[ -n "$KMIP" ] || { cat "$WORK/stderr"; exit 1; }

read -r API_KEY INSTANCE < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["api_key"], b["instance_id"])' "$WORK/data/bootstrap.json")
TOKEN=$(curl -sf -d grant_type=urn:ibm:params:oauth:grant-type:apikey --data-urlencode "apikey=$API_KEY" "$URL/identity/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
H=(-H "Authorization: Bearer $TOKEN" -H "bluemix-instance: $INSTANCE" -H "Content-Type: application/json")
json_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["id"])'; }
KEY=$(curl -sf "${H[@]}" -d '{"resources":[{"name":"bench-root"}]}' "$URL/api/v2/keys" | json_id)
ADAPTER=$(curl -sf "${H[@]}" -d "{\"resources\":[{\"name\":\"bench\",\"profile\":\"native_1.0\",\"profile_data\":{\"crk_id\":\"$KEY\"}}]}" "$URL/api/v2/kmip_adapters" | json_id)
CERT_JSON=$(python3 -c 'import json,sys; print(json.dumps({"resources":[{"certificate":open(sys.argv[1]).read()}]}))' "$WORK/client.pem")
curl -sf "${H[@]}" -d "$CERT_JSON" "$URL/api/v2/kmip_adapters/$ADAPTER/certificates" > /dev/null
KMIP_ARGS=("$KMIP" "$WORK/ca.pem" "$WORK/client.pem" "$WORK/client.key")
UID_=$("$LOAD" "${KMIP_ARGS[@]}" - create 1 0)
DEK=$(head -c 32 /dev/urandom | base64)
WRAP_BODY="{\"plaintext\":\"$DEK\"}"
export BENCH_TOKEN=$TOKEN BENCH_INSTANCE=$INSTANCE

server_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# kmip OP CONNECTIONS: prints "ops/s p50_ms p99_ms errors server_us_per_op"
kmip() {
  local s0 s1 out
  s0=$(server_ticks)
  out=$("$LOAD" "${KMIP_ARGS[@]}" "$UID_" "$1" "$2" "$SECONDS_PER_RUN")
  s1=$(server_ticks)
  python3 -c 'import sys; r=sys.argv[1].split(); t=int(sys.argv[2]); tck=int(sys.argv[3]); s=int(sys.argv[4]); n=float(r[0])*s; print(" ".join(r), f"{t/tck*1e6/max(n,1):.1f}")' "$out" "$((s1 - s0))" "$(getconf CLK_TCK)" "$SECONDS_PER_RUN"
}

wrap() {
  local s0 s1 out
  s0=$(server_ticks)
  out=$(BENCH_BODY=$WRAP_BODY wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$ROOT/scripts/bench/post.lua" "$URL/api/v2/keys/$KEY/actions/wrap")
  s1=$(server_ticks)
  python3 - "$out" "$((s1 - s0))" "$(getconf CLK_TCK)" <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
from wrkstats import parse
w = parse(sys.argv[1])
t, tck = int(sys.argv[2]), int(sys.argv[3])
print(f"{w['rps']:.0f} {w['p50']:.3f} {w['p99']:.3f} {w['failures']} {t / tck * 1e6 / max(w['requests'], 1):.1f}")
PY
}

# Warm-up.
"$LOAD" "${KMIP_ARGS[@]}" "$UID_" get 8 2 > /dev/null
declare -A R
for round in $(seq "$ROUNDS"); do
  for case in get1 get32 enc1 enc32 wrap32; do
    case $case in
      get1) r=$(kmip get 1) ;;
      get32) r=$(kmip get 32) ;;
      enc1) r=$(kmip encrypt 1) ;;
      enc32) r=$(kmip encrypt 32) ;;
      wrap32) r=$(wrap) ;;
    esac
    echo "round $round $case: $r (ops/s p50_ms p99_ms errors server_us/op)"
    R[$case]="${R[$case]:-}$r;"
  done
done

python3 - "$OUT" "$SECONDS_PER_RUN" "${R[get1]}" "${R[get32]}" "${R[enc1]}" "${R[enc32]}" "${R[wrap32]}" <<'PY'
import datetime, os, statistics, sys
out, secs = sys.argv[1:3]
def med(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return [statistics.median(r[i] for r in rows) for i in range(5)] + [len(rows)]
names = ["KMIP Get, 1 connection", "KMIP Get, 32 connections", "KMIP Encrypt (AES-GCM), 1 connection",
         "KMIP Encrypt (AES-GCM), 32 connections", "REST wrap, 32 connections (wrk)"]
rows = [med(s) for s in sys.argv[3:8]]
wrap = rows[4][0]
lines = ["## KMIP", "",
         f"Written by `scripts/bench-kmip.sh` ({datetime.date.today()}, {os.cpu_count()} cores): release build on",
         "the embedded defaults with a `[kmip]` listener, TLS 1.3 with an EC P-256 client certificate, one",
         f"operation per request, {secs} s per run, medians of {rows[0][5]} interleaved rounds; every KMIP",
         "operation opens the object through the adapter's root key and writes a durable audit event.", "",
         "| operation | ops/s | ratio to REST wrap (32) | p50 ms | p99 ms | errors | server CPU µs/op |",
         "|---|---:|---:|---:|---:|---:|---:|"]
for n, r in zip(names, rows):
    lines.append(f"| {n} | {r[0]:.0f} | {r[0] / wrap:.2f} | {r[1]:.2f} | {r[2]:.2f} | {int(r[3])} | {r[4]:.1f} |")
section = "\n".join(lines) + "\n"
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
start = text.find("\n## KMIP\n")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start + 1] + section + (text[end:] if end >= 0 else "")
else:
    text = text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
print(section)
PY
