#!/usr/bin/env bash
# The whole test suite (the README's test command, and what CI runs): formatting, lints, docs,
# unit and integration tests, then the interop suite that drives a real `keyward serve` with the
# public `keyprotect` SDK (installed into a venv under the build directory by scripts/interop.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-$PWD/target}

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "cargo test"
scripts/softhsm.sh --install-only  # SoftHSM2 for keyward-custody-pkcs11 (its tests make their own tokens)
scripts/postgres.sh >/dev/null     # PostgreSQL binaries (each test process makes its own cluster)
cargo test --workspace --locked

# What that build made (no rebuild): later steps reuse it rather than build with other features.
artifacts=$(mktemp -t keyward-artifacts.XXXXXX)
cargo test --workspace --locked --no-run --message-format=json > "$artifacts"
# built test|bin PACKAGE: the executables of PACKAGE's tests, or its binaries, from that build.
built() {
    python3 - "$artifacts" "$1" "$2" <<'PY'
import json, sys
path, kind, package = sys.argv[1:]
for line in open(path):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if f"/crates/{package}#" not in m["package_id"] or not m["package_id"].startswith("path+"):
        continue
    if m["profile"]["test"] if kind == "test" else "bin" in m["target"]["kind"] and not m["profile"]["test"]:
        print(m["executable"])
PY
}

# The test binaries `cargo test --workspace` built, run again: `cargo test -p keyward-server`
# would resolve features for that crate alone and build a second copy of its dependencies.
mapfile -t server_tests < <(built test keyward-server)
[ "${#server_tests[@]}" -gt 0 ] || { echo "no keyward-server test binaries found" >&2; exit 1; }
# run_server_suite LOG ENV...: every keyward-server test binary with ENV set, output to LOG.
run_server_suite() {
    local log=$1; shift
    for exe in "${server_tests[@]}"; do
        (cd crates/keyward-server && env "$@" "$exe") || return 1
    done > "$log" 2>&1
}

step "keyward-server's tests again, on the PKCS#11 custody backend (two SoftHSM2 tokens) and on the PostgreSQL store, side by side"
hsm_dir=$(mktemp -d -t keyward-test-hsm.XXXXXX)
hsm_log=$hsm_dir/pkcs11.log pg_log=$hsm_dir/postgres.log
hsm_pid=""
if KEYWARD_TEST_HSM_PIN=1234 scripts/softhsm.sh "$hsm_dir" keyward-a keyward-b >/dev/null; then
    run_server_suite "$hsm_log" SOFTHSM2_CONF="$hsm_dir/softhsm2.conf" KEYWARD_TEST_HSM_PIN=1234 \
        KEYWARD_TEST_CUSTODY=pkcs11 &
    hsm_pid=$!
else
    echo "SKIPPED: SoftHSM2 cannot be installed here"
fi
pg_status=0
run_server_suite "$pg_log" KEYWARD_TEST_STORE=postgres || pg_status=$?
hsm_status=0
[ -z "$hsm_pid" ] || wait "$hsm_pid" || hsm_status=$?
summary() { grep -E "^test result|FAILED|panicked|not run on PostgreSQL" "$1" || true; }
echo "-- on PKCS#11:"; [ -z "$hsm_pid" ] || summary "$hsm_log"
echo "-- on PostgreSQL:"; summary "$pg_log"
[ "$hsm_status" -eq 0 ] || { echo "keyward-server tests failed on PKCS#11:" >&2; tail -100 "$hsm_log" >&2; exit 1; }
[ "$pg_status" -eq 0 ] || { echo "keyward-server tests failed on PostgreSQL:" >&2; tail -100 "$pg_log" >&2; exit 1; }
rm -rf "$hsm_dir"

step "the README runs as pasted (scripts/readme-test.sh), and the systemd unit verifies"
KEYWARD_BIN=$(built bin keyward) scripts/readme-test.sh
scripts/check-systemd.sh

step "fuzz targets compile (running them needs nightly: see fuzz/)"
cargo check --quiet --manifest-path fuzz/Cargo.toml --locked

step "interop: the keyprotect SDK against keyward serve, and the web console in headless Chromium"
# Debian's chromium for tests/interop/test_console.py (Playwright drives it; no browser download).
if ! scripts/chromium.sh >/dev/null; then
    if [ -n "${KEYWARD_REQUIRE_BROWSER:-}" ]; then
        echo "Chromium is required (KEYWARD_REQUIRE_BROWSER is set) but cannot be installed" >&2; exit 1
    fi
    echo "!!! SKIPPED: the web console's browser test: Chromium cannot be installed here !!!"
fi
KEYWARD_BIN=$(built bin keyward) scripts/interop.sh

step "interop again: against the second node of a two-node cluster on PostgreSQL"
KEYWARD_BIN=$(built bin keyward) KEYWARD_INTEROP_STORE=postgres scripts/interop.sh
rm -f "$artifacts"
