#!/usr/bin/env bash
# SoftHSM2 for the PKCS#11 custody tests: installs it if missing (Debian `softhsm2`), then, unless
# --install-only, creates a throwaway token store and prints the SOFTHSM2_CONF to use.
#
#   scripts/softhsm.sh --install-only
#   scripts/softhsm.sh [DIR] [TOKEN_LABEL...]     # defaults: a new temp dir; keyward-a keyward-b
#
# Tokens get user PIN $KEYWARD_TEST_HSM_PIN (default 1234) and SO PIN 5678. Exit status 3 means
# SoftHSM2 is not installed and cannot be (no root, no sudo, no apt-get).
set -euo pipefail

module=/usr/lib/softhsm/libsofthsm2.so

if ! command -v softhsm2-util >/dev/null || [ ! -e "$module" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "softhsm.sh: SoftHSM2 is not installed and installing it needs root" >&2; exit 3
        fi
    fi
    command -v apt-get >/dev/null || { echo "softhsm.sh: no apt-get to install softhsm2" >&2; exit 3; }
    echo "softhsm.sh: installing softhsm2" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >&2 \
        || { $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >&2; }
fi

[ "${1:-}" = "--install-only" ] && exit 0

dir=${1:-$(mktemp -d -t keyward-softhsm.XXXXXX)}
shift || true
labels=("$@")
[ ${#labels[@]} -eq 0 ] && labels=(keyward-a keyward-b)

mkdir -p "$dir/tokens"
printf 'directories.tokendir = %s/tokens/\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" > "$dir/softhsm2.conf"
export SOFTHSM2_CONF=$dir/softhsm2.conf
for label in "${labels[@]}"; do
    softhsm2-util --init-token --free --label "$label" --so-pin 5678 --pin "${KEYWARD_TEST_HSM_PIN:-1234}" >/dev/null
done
echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
