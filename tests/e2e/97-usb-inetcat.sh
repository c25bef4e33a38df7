#!/usr/bin/env bash
# inetcat on OUR library's in-process USB backend against a simulated iPhone on
# usbmux-simd's bus (no daemon). Every case runs twice: with Debian's inetcat
# (libusbmuxd-tools 2.0.2, unchanged) on our libusbmuxd-2.0.so.6, and with our own
# inetcat (tools/, on the library's Rust API):
#   * `inetcat 7` (echo): a line comes back; 3 MiB of random data come back byte-exact
#     (fed at most 64 KiB ahead of the echo: inetcat drops what the non-blocking device
#     socket does not take, tools.md §2.4 -- with any library);
#   * `inetcat 19`: the 1 MiB of the source service (byte % 251), then exit 0;
#   * -u UDID picks that device among two;
#   * RST in mid-stream (`misbehave … reset-after N`): exactly N bytes of the pattern, exit 0;
#   * refused port, unknown UDID, no device: the tool's message and status 1.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$E2E_DIR/usb/simd.sh"
source "$E2E_DIR/tools.bash"
e2e_init usb-inetcat
e2e_require_programs inetcat
tools_init
# Debian's inetcat runs on our library here.
DEBIAN_TOOLS_LIB=$BUILD_DIR

# usb_inetcat_feed WHO NAME INFILE NBYTES [WINDOW] -- ARGS...: inetcat_feed with Debian's
# inetcat on our library (WHO=debian) or ours; output in $E2E_TMP/NAME.WHO.{out,err,rc}.
usb_inetcat_feed() {
	local who=$1 name=$2.$1 rc=0
	shift 2
	tool_cmd "$who" inetcat
	local cmd=(timeout "$E2E_TIMEOUT" "${TOOL_CMD[@]}")
	feed_run "$E2E_TMP/$name.out" "$E2E_TMP/$name.err" cmd "$@" || rc=$?
	echo "$rc" >"$E2E_TMP/$name.rc"
}

UDID=00008030-001A2B3C4D5E6F70
UDID2=00008101-000A1B2C3D4E5F60
MIB=1048576

simd_start --device "$UDID"

EMPTY=$E2E_TMP/empty
: >"$EMPTY"

# The source service's pattern: NBYTES bytes of (offset % 251).
pattern_ok() {
	python3 - "$1" "$2" <<'PY'
import sys
got = open(sys.argv[1], "rb").read()
n = int(sys.argv[2])
want = (bytes(range(251)) * (n // 251 + 1))[:n]
assert got == want, f"{len(got)} bytes, not the {n} bytes of the pattern"
PY
}

t_hello() {
	printf 'hello through inetcat over USB\n' >"$E2E_TMP/hello"
	usb_inetcat_feed "$1" hello "$E2E_TMP/hello" 31 -- 7
	expect_eq "echo" "$(cat "$E2E_TMP/hello.$1.out")" "hello through inetcat over USB"
	expect_status "inetcat 7" "$(cat "$E2E_TMP/hello.$1.rc")" 0
	expect_eq "stderr" "$(cat "$E2E_TMP/hello.$1.err")" ""
}

t_large() {
	tcp_client random "$E2E_TMP/large" $((3 * MIB))
	usb_inetcat_feed "$1" large "$E2E_TMP/large" $((3 * MIB)) 65536 -- 7
	cmp "$E2E_TMP/large" "$E2E_TMP/large.$1.out"
	expect_status "inetcat 7" "$(cat "$E2E_TMP/large.$1.rc")" 0
}

t_source() {
	usb_inetcat_feed "$1" source "$EMPTY" "$MIB" -- 19
	pattern_ok "$E2E_TMP/source.$1.out" "$MIB"
	expect_status "inetcat 19" "$(cat "$E2E_TMP/source.$1.rc")" 0
}

t_udid() {
	simd_cmd "plug $UDID2"
	wait_listed "$UDID2"
	simd_cmd "events $UDID" # forget the connections of the checks before
	printf 'to the second device\n' >"$E2E_TMP/second"
	usb_inetcat_feed "$1" udid "$E2E_TMP/second" 21 -- -u "$UDID2" 7
	expect_eq "echo" "$(cat "$E2E_TMP/udid.$1.out")" "to the second device"
	# The simulator saw the connection on that device, not on the first one.
	simd_cmd "events $UDID2"
	printf '%s\n' "${SIMD_REPLY[@]}" | grep -q "^EVENT Accepted { .*device_port: 7 }"
	simd_cmd "events $UDID"
	if printf '%s\n' "${SIMD_REPLY[@]}" | grep -q "device_port: 7 }"; then
		echo "the connection went to $UDID" >&2
		return 1
	fi
	simd_cmd "unplug $UDID2"
	wait_listed "$UDID2" 0
}

t_reset() {
	local n=300000
	simd_cmd "misbehave $UDID reset-after $n port=19 simulated failure"
	usb_inetcat_feed "$1" reset "$EMPTY" "$n" -- 19
	simd_cmd "misbehave $UDID clear"
	pattern_ok "$E2E_TMP/reset.$1.out" "$n"
	expect_status "inetcat 19 (reset after $n bytes)" "$(cat "$E2E_TMP/reset.$1.rc")" 0
	simd_cmd "events $UDID"
	printf '%s\n' "${SIMD_REPLY[@]}" | grep -q 'cause: DeviceReset(Injected("simulated failure"))'
}

t_refused() {
	usb_inetcat_feed "$1" refused "$EMPTY" 0 -- 1234
	expect_status "inetcat 1234" "$(cat "$E2E_TMP/refused.$1.rc")" 1
	expect_eq "stdout" "$(cat "$E2E_TMP/refused.$1.out")" ""
	grep -Eqx "$(refused_line_re "$1")" "$E2E_TMP/refused.$1.err"
}

t_unknown() {
	usb_inetcat_feed "$1" unknown "$EMPTY" 0 -- -u 00008030-00000000DEADBEEF 7
	expect_eq "stderr" "$(cat "$E2E_TMP/unknown.$1.err")" "No connected/matching device found, disconnecting client."
	expect_status "inetcat -u <unknown>" "$(cat "$E2E_TMP/unknown.$1.rc")" 1
}

t_no_device() {
	simd_unplug_all
	wait_listed "$UDID" 0
	usb_inetcat_feed "$1" nodevice "$EMPTY" 0 -- 7
	expect_eq "stderr" "$(cat "$E2E_TMP/nodevice.$1.err")" "No connected device found, terminating."
	expect_status "inetcat 7 (no device)" "$(cat "$E2E_TMP/nodevice.$1.rc")" 1
}

for who in debian ours; do
	# The last case unplugs every device.
	simd_ensure_plugged "$UDID"
	wait_listed "$UDID"
	check "$who inetcat 7: a line is echoed, exit 0" t_hello "$who"
	check "$who inetcat 7: 3 MiB of random data echoed byte-exact" t_large "$who"
	check "$who inetcat 19: 1 MiB of the pattern byte % 251 from the device, then exit 0" t_source "$who"
	check "$who inetcat -u UDID 7 talks to that device" t_udid "$who"
	check "$who inetcat 19 with an RST after 300000 bytes: exactly those bytes, exit 0" t_reset "$who"
	check "$who inetcat 1234 (nothing listens): 'Error connecting to device', exit 1" t_refused "$who"
	check "$who inetcat -u <unknown UDID>: message, exit 1" t_unknown "$who"
	check "$who no device: 'No connected device found, terminating.', exit 1" t_no_device "$who"
done

e2e_finish
