#!/usr/bin/env bash
# The README as a test (issue 22): every ```sh and ```python block of README.md runs, in the
# order it appears, in one bash session in a fresh directory, so the README cannot rot.
#
# The rule (README.md, "The README is tested"):
# - a block runs when its fence is exactly ```sh or ```python (```toml, ```json, ``` and
#   others are never run);
# - a block is skipped when the last non-blank line before its fence is an HTML comment
#   starting with `<!-- readme-test: skip` (say why in it: it installs packages system-wide,
#   runs for ever, needs an HSM, ...);
# - ```sh blocks run as they are, with `set -euo pipefail`; ```python blocks run with the
#   `python3` on PATH at that point (the README's own venv once it has activated it), their
#   text fed on stdin;
# - the directory is a fresh temporary one; `cargo build ... -p keyward` is answered by the
#   binary under test (KEYWARD_BIN, or target/debug/keyward), which also stands at
#   ./target/release/keyward and as `keyward` on PATH (`-p OTHER`: the binary OTHER beside it,
#   which `cargo test --workspace` builds); the README's ports 8200, 8443, 8300, 8301 are
#   replaced by free ones so that the test runs beside anything else on the machine;
# - whatever the blocks started in the background is stopped at the end, and everything they
#   made in the directory must be ignored by the repository's .gitignore;
# - then each ```toml block whose first line starts with `# keyward.toml` (a sample server
#   configuration) must start a server as shown: `keyward serve --config` with only the data
#   directory and the address replaced by throwaway ones.
#
# Usage: scripts/readme-test.sh [README]   (KEYWARD_BIN=path to the keyward binary)
#        scripts/readme-test.sh --print [README]   prints the script it would run
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
print_only=0
if [ "${1:-}" = "--print" ]; then print_only=1; shift; fi
README=$(realpath "${1:-$ROOT/README.md}")
BIN=${KEYWARD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/keyward}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) tls_port=$(free_port) svc_port=$(free_port) svc2_port=$(free_port)

extract() {
    python3 - "$README" "$port" "$tls_port" "$svc_port" "$svc2_port" <<'PY'
import re, sys
path, port, tls_port, svc_port, svc2_port = sys.argv[1:6]
lines = open(path, encoding="utf-8").read().split("\n")
out, i, n = [], 0, 0
prev = ""  # last non-blank line outside a block
while i < len(lines):
    line = lines[i]
    m = re.match(r"^(\s*)```(\S*)\s*$", line)
    if not m:
        if line.strip():
            prev = line.strip()
        i += 1
        continue
    indent, lang = m.group(1), m.group(2)
    body, j = [], i + 1
    while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
        body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
        j += 1
    start = i + 1
    i, skip = j + 1, prev.startswith("<!-- readme-test: skip")
    prev = ""
    if lang not in ("sh", "python") or skip:
        continue
    n += 1
    text = "\n".join(body).replace("8200", port).replace("8443", tls_port).replace("8300", svc_port).replace("8301", svc2_port)
    out.append(f'echo; echo "== README.md:{start} ({lang})" >&2')
    if lang == "sh":
        out.append(text)
    else:
        out.append("python3 - <<'README_PY'\n" + text + "\nREADME_PY")
if n == 0:
    sys.exit("readme-test: no runnable block found")
print("\n".join(out))
PY
}

script=$(extract)
if [ "$print_only" = 1 ]; then printf '%s\n' "$script"; exit 0; fi
[ -x "$BIN" ] || { echo "readme-test: $BIN is not an executable (set KEYWARD_BIN)" >&2; exit 1; }

work=$(mktemp -d -t keyward-readme.XXXXXX)
home=$(mktemp -d -t keyward-readme-home.XXXXXX)   # HOME apart: what lands there is not the repository's
mkdir -p "$work/target/release" "$work/.shim"
ln -s "$(realpath "$BIN")" "$work/target/release/keyward"
ln -s "$(realpath "$BIN")" "$work/.shim/keyward"
cat > "$work/.shim/cargo" <<'SH'
#!/bin/sh
# readme-test: stands in for building Keyward (the binary under test is already built).
# `cargo build --release -p NAME`: NAME's binary from beside the one under test.
if [ "$1" = build ]; then
    while [ $# -gt 0 ]; do
        if [ "$1" = -p ] && [ "$2" != keyward ]; then
            bin=$(dirname "$(readlink -f ./target/release/keyward)")/$2
            [ -x "$bin" ] || { echo "readme-test: no $bin (build it first)" >&2; exit 1; }
            ln -sf "$bin" "./target/release/$2"
        fi
        shift
    done
    echo "readme-test: cargo build: using the binaries under test" >&2
    exit 0
fi
echo "readme-test: unexpected cargo $*" >&2; exit 1
SH
chmod +x "$work/.shim/cargo"
printf '%s\n' "$script" > "$work/.readme.sh"

cleanup() {
    # Everything the blocks left running in the background belongs to this process group.
    [ -n "${session:-}" ] && kill -TERM -- "-$session" 2>/dev/null || true
    sleep 0.5
    rm -rf "$home"
    [ "${KEEP:-0}" = 1 ] && echo "readme-test: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

start=$(date +%s)
set +e
(
    cd "$work"
    export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
    export PATH="$work/.shim:$PATH" HOME="$home"
    unset KEYWARD_URL KEYWARD_API_KEY KEYWARD_INSTANCE KEYWARD_BOOTSTRAP KEYWARD_KEY_RING KEYWARD_PROFILE
    exec setsid bash -euo pipefail .readme.sh
) &
session=$!
wait "$session"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "readme-test: FAILED (exit $status) after $(( $(date +%s) - start )) s; the script was $work/.readme.sh" >&2
    KEEP=1
    exit "$status"
fi
echo "readme-test: every runnable README block passed in $(( $(date +%s) - start )) s"

# Everything the README made in its directory is ignored by git (run from a clone, a `git add -A`
# must never pick up a master key or an API key).
unignored=()
for entry in "$work"/* "$work"/.[!.]*; do
    [ -e "$entry" ] || continue
    name=$(basename "$entry")
    case "$name" in .shim|.readme.sh|target) continue ;; esac
    [ -d "$entry" ] && name="$name/"
    git -C "$ROOT" check-ignore -q --no-index "$name" || unignored+=("$name")
done
if [ "${#unignored[@]}" -gt 0 ]; then
    echo "readme-test: the README makes ${unignored[*]} in the repository, which .gitignore does not cover" >&2
    KEEP=1
    exit 1
fi
echo "readme-test: everything the README made is in .gitignore"

# Sample configurations start as shown.
mapfile -t samples < <(python3 - "$README" "$work" <<'PY'
import sys
lines, work, n = open(sys.argv[1], encoding="utf-8").read().split("\n"), sys.argv[2], 0
i = 0
while i < len(lines):
    if lines[i].strip() == "```toml" and i + 1 < len(lines) and lines[i + 1].startswith("# keyward.toml"):
        j = i + 1
        while not lines[j].strip().startswith("```"):
            j += 1
        n += 1
        path = f"{work}/sample-{n}.toml"
        open(path, "w").write("\n".join(lines[i + 1:j]) + "\n")
        print(f"{path} README.md:{i + 1}")
        i = j
    i += 1
PY
)
[ "${#samples[@]}" -gt 0 ] || { echo "readme-test: no '# keyward.toml' sample found" >&2; exit 1; }
for sample in "${samples[@]}"; do
    file=${sample%% *} where=${sample#* }
    data=$(mktemp -d -p "$work" sample.XXXXXX)
    log=$data.log
    "$BIN" serve --config "$file" --data-dir "$data" --listen 127.0.0.1:0 > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 150); do
        grep -q "listening on" "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if ! grep -q "listening on" "$log"; then
        kill "$pid" 2>/dev/null || true
        echo "readme-test: the sample configuration at $where does not start:" >&2
        cat "$log" >&2
        KEEP=1
        exit 1
    fi
    kill -TERM "$pid"; wait "$pid" || true
    echo "readme-test: the sample configuration at $where starts"
done
