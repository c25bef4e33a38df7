#!/usr/bin/env bash
# Shows the in-process USB backend at work on a machine with no iPhone and no usbmuxd
# daemon: starts the simulated USB bus (usbmux-simd) with one simulated iPhone, then runs
# Debian's prebuilt idevice_id, ideviceinfo and iproxy on OUR library with
# USBMUXD_BACKEND=usb, so the library itself finds the device on the (simulated) bus,
# opens it and speaks the usbmux protocol to it; no daemon socket is involved
# (/var/run/usbmuxd need not exist). Ends with a TCP round trip through iproxy to the
# device's echo service (port 7).
#
# usage: scripts/demo-usb.sh          (after `make`; `make demo-usb` does both)
#   BUILD_DIR   directory of our libusbmuxd-2.0.so.6 (default: build)
#   USBMUX_SIMD the simulator (default: target/release/usbmux-simd)
#   IPROXY      Debian's iproxy (default: the one of the libusbmuxd-tools package)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=$(cd "${BUILD_DIR:-build}" 2>/dev/null && pwd) || { echo "build the library first (make)" >&2; exit 2; }
SIMD=${USBMUX_SIMD:-$PWD/target/release/usbmux-simd}
UDID=00008030-001A2B3C4D5E6F70
[ -e "$BUILD_DIR/libusbmuxd-2.0.so.6" ] || { echo "$BUILD_DIR/libusbmuxd-2.0.so.6 missing: run make" >&2; exit 2; }
[ -x "$SIMD" ] || { echo "$SIMD missing: run make" >&2; exit 2; }
for tool in idevice_id ideviceinfo; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install libimobiledevice-utils" >&2; exit 2; }
done
# Debian's iproxy, not another one earlier in PATH (`make install` may put the Rust
# iproxy of tools/ into /usr/local/bin).
if [ -z "${IPROXY:-}" ]; then
    IPROXY=$(dpkg -L libusbmuxd-tools 2>/dev/null | grep -m1 '/bin/iproxy$' || true)
    : "${IPROXY:=/usr/bin/iproxy}"
fi
[ -x "$IPROXY" ] || { echo "iproxy not found: apt-get install libusbmuxd-tools" >&2; exit 2; }
command -v stdbuf >/dev/null || { echo "stdbuf (coreutils) not found" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/demo-usb.XXXXXX")
simd_pid=
iproxy_pid=
cleanup() {
    set +e
    [ -n "$iproxy_pid" ] && kill "$iproxy_pid" 2>/dev/null
    # EOF on its stdin makes the simulator unplug everything, remove its socket and exit.
    exec 3>&-
    if [ -n "$simd_pid" ]; then
        for _ in $(seq 50); do kill -0 "$simd_pid" 2>/dev/null || break; sleep 0.05; done
        kill "$simd_pid" 2>/dev/null
    fi
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # FILE PATTERN [PID]: until a line of FILE matches (5 s), or PID exits
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
        sleep 0.05
    done
    return 1
}

# 1. The simulated USB bus with one simulated iPhone (lockdownd 62078, echo 7, sink 9,
#    source 19). Control commands go to its stdin (fd 3), replies to $work/simd.out.
mkfifo "$work/ctl"
"$SIMD" --socket "$work/simbus.sock" --device "$UDID" <"$work/ctl" >"$work/simd.out" 2>"$work/simd.err" &
simd_pid=$!
exec 3>"$work/ctl"
wait_for "$work/simd.out" '^READY ' "$simd_pid" || { echo "usbmux-simd did not start:" >&2; cat "$work/simd.err" >&2; exit 1; }
echo "# simulated USB bus: $(head -n1 "$work/simd.out"), one device ($UDID)"

# 2. Our library, its USB backend, that bus; pair records in a temporary directory.
mkdir -m 0700 "$work/lockdown"
export LD_LIBRARY_PATH="$BUILD_DIR" USBMUXD_BACKEND=usb USBMUXD_SIMBUS="$work/simbus.sock" \
    USBMUXD_PAIR_RECORD_DIR="$work/lockdown"
unset USBMUXD_SOCKET_ADDRESS
echo "# USBMUXD_BACKEND=usb USBMUXD_SIMBUS=$USBMUXD_SIMBUS"
echo "# USBMUXD_PAIR_RECORD_DIR=$USBMUXD_PAIR_RECORD_DIR LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if [ -e /var/run/usbmuxd ]; then
    echo "# (a usbmuxd socket exists at /var/run/usbmuxd; USBMUXD_BACKEND=usb ignores it)"
else
    echo "# (no usbmuxd daemon: /var/run/usbmuxd does not exist)"
fi

echo "\$ ldd $(command -v idevice_id) | grep usbmuxd"
ldd "$(command -v idevice_id)" | grep usbmuxd
echo "\$ idevice_id -l"
idevice_id -l
echo "\$ ideviceinfo -s -k ProductType"
ideviceinfo -s -k ProductType

# 3. iproxy LOCAL:7 (2222 if free, else another port), then a round trip through it.
echo "\$ ldd $IPROXY | grep usbmuxd"
ldd "$IPROXY" | grep usbmuxd
port=
for candidate in 2222 $(shuf -i 20000-60999 -n 20 2>/dev/null || seq 42220 42239); do
    : >"$work/iproxy.out"
    # stdbuf: iproxy's stdout is a file here; line-buffer it so its lines can be waited for.
    stdbuf -oL "$IPROXY" "$candidate:7" >"$work/iproxy.out" 2>"$work/iproxy.err" </dev/null &
    iproxy_pid=$!
    if wait_for "$work/iproxy.out" '^waiting for connection' "$iproxy_pid"; then
        port=$candidate
        break
    fi
    kill "$iproxy_pid" 2>/dev/null || true
    wait "$iproxy_pid" 2>/dev/null || true
    iproxy_pid=
done
[ -n "$port" ] || { echo "iproxy could not listen on any port tried:" >&2; cat "$work/iproxy.err" >&2; exit 1; }
echo "\$ iproxy $port:7 &"
sed 's/^/  | /' "$work/iproxy.out"
real=$(readlink -f "$BUILD_DIR/libusbmuxd-2.0.so.6")
echo "# iproxy (pid $iproxy_pid) maps: $(grep -oF "$real" "/proc/$iproxy_pid/maps" | head -n1)"

sent="hello from demo-usb, $(date +%T)"
echo "# a TCP client on 127.0.0.1:$port sends one line to the device's echo service (port 7)"
exec 4<>"/dev/tcp/127.0.0.1/$port"
printf '%s\n' "$sent" >&4
received=
IFS= read -r -t 10 received <&4 || true
exec 4>&-
echo "sent:     $sent"
echo "received: $received"
sleep 0.2
sed -n '3,$s/^/  | /p' "$work/iproxy.out"

# What the simulated device saw of that connection.
echo "events $UDID" >&3
wait_for "$work/simd.out" '^OK [0-9]' "$simd_pid" || true
grep -E '^EVENT .*(Accepted|Established|Closed)' "$work/simd.out" | grep -E 'port: 7\b' | head -n 3 | sed 's/^/  simulated device: /' || true

if [ "$received" = "$sent" ]; then
    echo "OK: round trip through iproxy and the USB backend"
else
    echo "FAILED: the echo did not come back" >&2
    cat "$work/iproxy.err" >&2
    exit 1
fi
