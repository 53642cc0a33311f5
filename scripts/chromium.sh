#!/usr/bin/env bash
# Headless Chromium for the web console's browser test (tests/interop/test_console.py): installs
# Debian's `chromium` when /usr/bin/chromium is missing (Playwright drives it; Playwright's own
# browser download is never used). Prints the executable's path. Exit status 3 means Chromium is
# not installed and cannot be (no root, no sudo, no apt-get).
set -euo pipefail

exe=${KEYWARD_CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$exe" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "chromium.sh: Chromium is not installed and installing it needs root" >&2; exit 3
        fi
    fi
    command -v apt-get >/dev/null || { echo "chromium.sh: no apt-get to install chromium" >&2; exit 3; }
    echo "chromium.sh: installing chromium" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 \
        || { $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; }
    [ -x "$exe" ] || { echo "chromium.sh: chromium installed, but $exe is missing" >&2; exit 3; }
fi
echo "$exe"
