#!/usr/bin/env bash
# PostgreSQL server binaries for the PostgreSQL store tests: installs them if missing (Debian
# `postgresql`; the package's default cluster is not used: every test process makes its own
# throwaway cluster, see crates/keyward-test/src/postgres.rs). Exit status 3 means PostgreSQL is
# not installed and cannot be (no root, no sudo, no apt-get).
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "postgres.sh: PostgreSQL is not installed and installing it needs root" >&2; exit 3
        fi
    fi
    command -v apt-get >/dev/null || { echo "postgres.sh: no apt-get to install postgresql" >&2; exit 3; }
    echo "postgres.sh: installing postgresql" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
        || { $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2; }
fi
ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
