#!/usr/bin/env bash
# Interop suite: a real `keyward serve` driven by clients Keyward did not write (the public
# `keyprotect` SDK from PyPI with its IAMAuthenticator, PyJWT and `cryptography`; PyKMIP 0.11 as
# the KMIP client of tests/interop/test_kmip_protocol.py; Playwright driving Debian's headless
# Chromium through the web console in tests/interop/test_console.py, its screenshots saved under
# $BUILD_DIR/console-screenshots; boto3 and moto's S3 server as the bucket of the S3 audit archive in
# tests/interop/test_audit_s3.py).
# Installs them (pinned) into a venv under the build directory, builds the binary unless
# KEYWARD_BIN names one, and runs pytest from the repository root. Extra arguments go to pytest.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=${BUILD_DIR:-$ROOT/target}
VENV=$BUILD_DIR/interop-venv

# Pinned: the versions this suite was written and last run against.
PACKAGES=(
  keyprotect==3.0.1
  ibm-cloud-sdk-core==3.28.0
  requests==2.34.2
  PyJWT==2.15.1
  cryptography==50.0.2
  pytest==9.2.0
  pykmip==0.11.0
  enum-compat==0.0.3
  six==1.17.0
  SQLAlchemy==2.1.9
  playwright==1.49.1
  greenlet==3.1.1
  pyee==12.0.0
  moto==5.2.6
  boto3==1.44.18
  Flask==3.1.3
  flask-cors==6.0.5
)

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$BUILD_DIR"
  if ! python3 -m venv "$VENV"; then
    # Debian and Ubuntu ship the venv module separately.
    rm -rf "$VENV"
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
  fi
fi
stamp=$VENV/.interop-packages
if [ "$(cat "$stamp" 2>/dev/null || true)" != "${PACKAGES[*]}" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" > "$stamp"
fi

if [ -z "${KEYWARD_BIN:-}" ]; then
  # --workspace: the same feature set as `cargo test --workspace`, so nothing is built twice.
  cargo build --locked --workspace --bins
  target_dir=$(cargo metadata --format-version 1 --no-deps \
    | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export KEYWARD_BIN=$target_dir/debug/keyward
fi
if [ ! -x "$KEYWARD_BIN" ]; then
  echo "interop: KEYWARD_BIN=$KEYWARD_BIN is not an executable" >&2
  exit 1
fi

export KEYWARD_CONSOLE_SCREENSHOTS=${KEYWARD_CONSOLE_SCREENSHOTS:-$BUILD_DIR/console-screenshots}
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/interop "$@"
