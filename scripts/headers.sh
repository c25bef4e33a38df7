#!/usr/bin/env bash
# Header generation helper (see build.rs, which does the actual cbindgen run).
#
#   scripts/headers.sh check    drift check: snapshots include/*.h as they are now,
#                               builds the library (build.rs regenerates the headers
#                               into its OUT_DIR) and fails if the snapshot differs
#   scripts/headers.sh update   copies the freshly generated headers into include/
#
# Run `check` before anything else builds in the tree (make check does): build.rs
# also refreshes include/ itself, after which a stale committed copy can no longer
# be seen.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
HEADERS=(usbmuxd.h usbmuxd-proto.h)
mode=${1:-}
case "$mode" in check|update) ;; *) echo "usage: $0 check|update" >&2; exit 2;; esac

snap=$(mktemp -d)
trap 'rm -rf "$snap"' EXIT
for h in "${HEADERS[@]}"; do
    if [ -f "include/$h" ]; then cp "include/$h" "$snap/$h"; fi
done

# Build the library; cargo reports the build script's OUT_DIR in its JSON messages
# (also when the build script is fresh and did not run again).
json=$("$CARGO" build --release -p usbmuxd --lib --message-format=json-render-diagnostics)
out_dir=$(printf '%s\n' "$json" \
    | grep '"reason":"build-script-executed"' \
    | grep -o '"out_dir":"[^"]*/build/usbmuxd-[0-9a-f]*/out"' \
    | sed 's/^"out_dir":"//; s/"$//' | tail -n1)
if [ -z "$out_dir" ] || [ ! -d "$out_dir/include" ]; then
    echo "headers.sh: could not find the generated headers (build script OUT_DIR)" >&2
    exit 1
fi
gen="$out_dir/include"

status=0
for h in "${HEADERS[@]}"; do
    if [ "$mode" = update ]; then
        if ! cmp -s "$gen/$h" "include/$h"; then
            mkdir -p include
            cp "$gen/$h" "include/$h"
            echo "updated include/$h"
        else
            echo "include/$h is up to date"
        fi
    elif [ ! -f "$snap/$h" ]; then
        echo "HEADER DRIFT: include/$h is missing (it must be committed)." >&2
        status=1
    elif ! cmp -s "$gen/$h" "$snap/$h"; then
        echo "HEADER DRIFT: include/$h differs from what src/ffi + cbindgen generate:" >&2
        diff -u "$snap/$h" "$gen/$h" | sed 's/^/    /' >&2 || true
        status=1
    else
        echo "include/$h matches the generated header"
    fi
done
if [ $status -ne 0 ]; then
    cat >&2 <<'MSG'
The committed headers are out of date with respect to the Rust sources (src/ffi/*.rs,
cbindgen*.toml, build.rs). The build has now written the regenerated versions into
include/ (or run `make headers`); review `git diff include/` and commit them.
MSG
fi
exit $status
