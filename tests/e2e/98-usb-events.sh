#!/usr/bin/env bash
# Device events on OUR library's in-process USB backend, plugging and unplugging
# simulated iPhones on usbmux-simd's bus at run time (no daemon):
#   * Debian's idevicesyslog -u UDID (libimobiledevice 1.3.0) waits for the device with an
#     event subscription; on each ADD of that UDID it tries to start its service (which
#     the simulator's lockdownd cannot do: "Could not start logger for udid …") and waits
#     again. So each such line = one ADD delivered for that UDID: plug -> 1, another UDID
#     -> nothing, unplug + plug -> 2;
#   * a subscriber through the C API (tests/e2e/usb/events.py, ctypes): ADD for the
#     device present at subscribe time and on plug (udid, product id, conn_type USB),
#     REMOVE on unplug, ADD with a new handle on re-plug; the simulator restarting on
#     the same socket -> REMOVE for every device, then ADD again; unsubscribe replays
#     REMOVE and returns in < 100 ms.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$E2E_DIR/usb/simd.sh"
e2e_init usb-events
e2e_require_programs idevicesyslog
command -v stdbuf >/dev/null || e2e_abort "stdbuf (coreutils) is required"

UDID=00008030-000A1B2C3D4E5F60
OTHER=00008110-000E0E0E0E0E0E0E
ATTEMPT="Could not start logger for udid $UDID"

simd_start

t_syslog() {
	local out=$E2E_TMP/syslog.out
	bg_start env LD_LIBRARY_PATH="$BUILD_DIR" stdbuf -oL idevicesyslog --no-colors -u "$UDID" \
		>"$out" 2>&1 </dev/null
	local pid=$BG_PID
	wait_for_line "$out" "^Waiting for device with UDID $UDID to become available"
	assert_process_uses_ours "$pid"
	simd_cmd "plug $UDID"
	wait_for_count "$out" "$ATTEMPT" 1
	simd_cmd "plug $OTHER"
	simd_wait_open "$OTHER" # idevicesyslog's backend has it: its ADD was delivered
	simd_cmd "unplug $UDID"
	simd_cmd "plug $UDID"
	wait_for_count "$out" "$ATTEMPT" 2
	simd_cmd "unplug $OTHER"
	simd_cmd "plug $OTHER"
	simd_wait_open "$OTHER"
	if grep -q "$OTHER" "$out"; then
		echo "idevicesyslog reacted to $OTHER" >&2
		return 1
	fi
	wait_for_count "$out" "$ATTEMPT" 2
	kill -0 "$pid"
	bg_stop "$pid"
	simd_unplug_all
}
check "ADD events for the awaited UDID reach idevicesyslog on plug and re-plug, not for another UDID" t_syslog

WATCH_OUT=$E2E_TMP/watch.out
WATCH_STOP=$E2E_TMP/watch.stop
WATCH_PID=
watch_start() {
	rm -f "$WATCH_STOP"
	bg_start env LD_LIBRARY_PATH="$BUILD_DIR" timeout 60 python3 "$E2E_DIR/usb/events.py" "$WATCH_STOP" \
		>"$WATCH_OUT" 2>&1 </dev/null
	WATCH_PID=$BG_PID
	wait_for_line "$WATCH_OUT" '^SUBSCRIBED$'
}

# The handle in the last ADD line of UDID.
handle_of() {
	sed -n "s/^ADD udid=$1 handle=\([0-9]*\) .*/\1/p" "$WATCH_OUT" | tail -n1
}

# Waits until the subscriber printed N ADD lines for UDID.
wait_adds() {
	poll_until 10 adds_are "$1" "$2" && return 0
	echo "expected $2 ADD events for $1; the subscriber printed:" >&2
	sed 's/^/    /' "$WATCH_OUT" >&2
	return 1
}
adds_are() { [ "$(grep -c "^ADD udid=$1 " "$WATCH_OUT")" -eq "$2" ]; }

t_watch() {
	simd_cmd "plug $UDID"
	watch_start
	wait_for_line "$WATCH_OUT" "^ADD udid=$UDID handle=[0-9]+ product_id=0x12a8 conn_type=1$"
	local h1 h2 h3
	h1=$(handle_of "$UDID")
	simd_cmd "plug $OTHER,0x12ab"
	wait_for_line "$WATCH_OUT" "^ADD udid=$OTHER handle=[0-9]+ product_id=0x12ab conn_type=1$"
	h2=$(handle_of "$OTHER")
	simd_cmd "unplug $UDID"
	wait_for_line "$WATCH_OUT" "^REMOVE handle=$h1$"
	simd_cmd "plug $UDID"
	wait_adds "$UDID" 2
	h3=$(handle_of "$UDID")
	if [ "$h3" = "$h1" ]; then
		echo "the re-plugged device got the old handle $h1 again" >&2
		return 1
	fi
	touch "$WATCH_STOP"
	wait_for_line "$WATCH_OUT" '^UNSUBSCRIBED '
	local rc=0
	wait "$WATCH_PID" || rc=$?
	cat "$WATCH_OUT"
	expect_status "events.py" "$rc" 0
	# The unsubscribe replayed REMOVE for the devices still there, and was quick.
	expect_line "$WATCH_OUT" "REMOVE handle=$h2"
	expect_line "$WATCH_OUT" "REMOVE handle=$h3"
	local ms
	ms=$(sed -n 's/^UNSUBSCRIBED \([0-9]*\) result=0$/\1/p' "$WATCH_OUT")
	[ -n "$ms" ] && ((ms < 100)) || { echo "unsubscribe took ${ms:-?} ms" >&2; return 1; }
	# Nothing after the unsubscribe.
	expect_eq "last line" "$(tail -n1 "$WATCH_OUT")" "$(grep '^UNSUBSCRIBED ' "$WATCH_OUT")"
}
check "a C-API subscriber: ADD on subscribe and plug, REMOVE on unplug, a new handle on re-plug, REMOVE replay on unsubscribe (< 100 ms)" t_watch

# The simulator goes away and comes back on the same socket: the backend reports every
# device gone, reconnects (every 500 ms) and reports what the new bus has.
simd_unplug_all
simd_cmd "plug $UDID"
simd_cmd "plug $OTHER"
watch_start
t_restart_before() {
	wait_for_line "$WATCH_OUT" "^ADD udid=$UDID "
	wait_for_line "$WATCH_OUT" "^ADD udid=$OTHER "
}
check "subscriber started with two devices plugged: ADD for both" t_restart_before
RESTART_SOCK=$SIMD_SOCK
simd_kill
SIMD_SOCKET=$RESTART_SOCK simd_start --device "$UDID"
t_restart() {
	local h_udid h_other
	h_udid=$(handle_of "$UDID")
	h_other=$(handle_of "$OTHER")
	wait_for_line "$WATCH_OUT" "^REMOVE handle=$h_udid$"
	wait_for_line "$WATCH_OUT" "^REMOVE handle=$h_other$"
	wait_adds "$UDID" 2
	touch "$WATCH_STOP"
	wait_for_line "$WATCH_OUT" '^UNSUBSCRIBED [0-9]+ result=0$'
}
check "the simulator restarts: REMOVE for every device, then ADD for the device of the new bus" t_restart

e2e_finish
