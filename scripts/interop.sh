#!/usr/bin/env bash
# Interop suite: drives a real `keyward serve` with clients we did not write (the public
# `keyprotect` SDK from PyPI, PyJWT and `cryptography`). Installs them into a venv under the
# build directory, builds the binary, and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-$ROOT/target}
VENV=$BUILD_DIR/interop-venv
REQ=$ROOT/tests/interop/requirements.txt

if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "python3 venv is missing; installing it with apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$stamp"
fi

if [ -z "${KEYWARD_BIN:-}" ]; then
  cargo build --quiet --locked -p keyward
  export KEYWARD_BIN=$BUILD_DIR/debug/keyward
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/interop "$@"
