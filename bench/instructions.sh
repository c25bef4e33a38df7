#!/usr/bin/env bash
# Client-side instruction counts (callgrind) of our library and Debian's for the same
# fixed workload against the same test daemon: N device lists + N connect/disconnects.
#
# usage: bench/instructions.sh [N]      (after `make`; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
OURS=${OURS:-$PWD/build/libusbmuxd-2.0.so.6}
STOCK=${STOCK:-/usr/lib/$(gcc -print-multiarch)/libusbmuxd-2.0.so.6}
TESTD=${USBMUXD_TESTD:-$PWD/target/release/usbmuxd-testd}
work=$(mktemp -d)
trap 'exec 3>&-; wait 2>/dev/null || true; rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -o "$work/ops" bench/ops.c -ldl
mkfifo "$work/ctl"
"$TESTD" --socket "$work/usbmuxd" --usb 00008030001A2B3C4D5E6F70,3 <"$work/ctl" >"$work/out" &
exec 3>"$work/ctl"
for _ in $(seq 100); do grep -q READY "$work/out" 2>/dev/null && break; sleep 0.05; done
export USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd"
for lib in "$STOCK" "$OURS"; do
    valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$work/ops" "$lib" 3 7 "$N" 2>&1 |
        sed -n "s|.*Collected : \([0-9]*\)|$lib: \1 instructions ($N lists + $N connects)|p"
done
