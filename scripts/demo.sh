#!/usr/bin/env bash
# Shows the library at work without an iPhone: starts the test daemon with one simulated
# device and runs Debian's prebuilt idevice_id and ideviceinfo against OUR library.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-$PWD/build}
TESTD=${USBMUXD_TESTD:-$PWD/target/release/usbmuxd-testd}
for tool in idevice_id ideviceinfo; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install libimobiledevice-utils"; exit 2; }
done
work=$(mktemp -d)
trap 'exec 3>&-; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/ctl"
"$TESTD" --socket "$work/usbmuxd" --usb 00008030001A2B3C4D5E6F70,3 <"$work/ctl" >"$work/out" &
exec 3>"$work/ctl"
for _ in $(seq 100); do grep -q READY "$work/out" 2>/dev/null && break; sleep 0.05; done
export USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd" LD_LIBRARY_PATH="$BUILD_DIR"
echo "\$ ldd \$(command -v idevice_id) | grep usbmuxd"
ldd "$(command -v idevice_id)" | grep usbmuxd
echo "\$ idevice_id -l"
idevice_id -l
echo "\$ ideviceinfo -s -k ProductType"
ideviceinfo -s -k ProductType
