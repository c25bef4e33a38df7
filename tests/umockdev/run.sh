#!/usr/bin/env bash
# The libusb transport (src/usb/rusb.rs) against a simulated iPhone on a umockdev USB bus:
# enumeration, configuration, claiming, the bulk IN ring and a VERSION exchange with the
# simulator's SimDevice (usbmux-simd). Skips (exit 0) when umockdev is not installed:
#   apt-get install umockdev gir1.2-umockdev-1.0 python3-gi
# Uses CARGO_TARGET_DIR if set; builds debug binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=/usr/bin/python3
if ! command -v umockdev-wrapper >/dev/null 2>&1 \
    || ! "$PY" -c 'import gi; gi.require_version("UMockdev", "1.0"); from gi.repository import UMockdev' 2>/dev/null; then
    echo "SKIP: umockdev not installed (apt-get install umockdev gir1.2-umockdev-1.0 python3-gi)"
    exit 0
fi

CARGO=${CARGO:-cargo}
"$CARGO" build -q -p usbmux-sim --bin usbmux-simd
target_dir=$("$CARGO" metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
simd="$target_dir/debug/usbmux-simd"
test_bin=$("$CARGO" test -q --features usb --test usb_rusb --no-run --message-format=json \
    | "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "usb_rusb" and m.get("executable"):
        print(m["executable"])')

exec timeout 300 umockdev-wrapper "$PY" tests/umockdev/iphone.py --simd "$simd" -- \
    "$test_bin" --ignored --exact umockdev_iphone_engine_session --nocapture
