#!/usr/bin/env bash
# Device events (usbmuxd_events_subscribe and the library's listener thread) through a
# real program: `idevicesyslog -u UDID` (libimobiledevice 1.3.0) waits for the device with
# an event subscription and, on each ADD of that UDID, tries to start its service (which
# the test daemon's lockdownd cannot do: it prints "Could not start logger for udid …"
# and waits again). So each line = one ADD event delivered for that UDID:
#   * subscribing sends Listen (the daemon sees one listener);
#   * attaching the device -> ADD -> one attempt; another UDID -> nothing; detach + attach
#     -> one more attempt;
#   * the daemon drops the listen connection but stays up -> the library reconnects at
#     once, the device comes back as ADD -> one more attempt;
#   * the same transcript as with Debian's library;
#   * the daemon restarts (socket gone, back a moment later): our library must reconnect
#     (libusbmuxd-api.md §6.4: 2.0.2 only watches /var/run/usbmuxd and never comes back
#     for another path — printed as a note for Debian's library, not checked).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init events
e2e_require_programs idevicesyslog

UDID=00008030-000A1B2C3D4E5F60
OTHER=00008110-000E0E0E0E0E0E0E
ATTEMPT="Could not start logger for udid $UDID"

testd_start
NEXT_HANDLE=10

SYSLOG_PID=
SYSLOG_OUT=
syslog_start() {
	local dir=$1 name=$2
	SYSLOG_OUT=$E2E_TMP/$name.out
	bg_start env LD_LIBRARY_PATH="$dir" stdbuf -oL idevicesyslog --no-colors -u "$UDID" \
		>"$SYSLOG_OUT" 2>&1 </dev/null
	SYSLOG_PID=$BG_PID
	wait_for_line "$SYSLOG_OUT" "^Waiting for device with UDID $UDID to become available"
	testd_cmd "wait-listeners 1 5000"
}

attach() {
	NEXT_HANDLE=$((NEXT_HANDLE + 1))
	testd_cmd "attach $1,$NEXT_HANDLE"
	HANDLE=$NEXT_HANDLE
}

# The common scenario; leaves idevicesyslog running with the device attached.
scenario() {
	local dir=$1 name=$2 h_udid h_other
	syslog_start "$dir" "$name"
	attach "$UDID"
	h_udid=$HANDLE
	wait_for_count "$SYSLOG_OUT" "$ATTEMPT" 1
	attach "$OTHER"
	h_other=$HANDLE
	testd_cmd "detach $h_udid"
	attach "$UDID"
	h_udid=$HANDLE
	wait_for_count "$SYSLOG_OUT" "$ATTEMPT" 2
	# The daemon closes the listen connection and stays up.
	testd_cmd disconnect-listeners
	testd_cmd "wait-listeners 1 5000"
	wait_for_count "$SYSLOG_OUT" "$ATTEMPT" 3
	if grep -q "$OTHER" "$SYSLOG_OUT"; then
		echo "idevicesyslog reacted to $OTHER" >&2
		return 1
	fi
	testd_cmd "detach $h_udid"
	testd_cmd "detach $h_other"
}

t_events() {
	scenario "$BUILD_DIR" ours
	assert_process_uses_ours "$SYSLOG_PID"
	kill -0 "$SYSLOG_PID"
	bg_stop "$SYSLOG_PID"
	if have_debian; then
		scenario "$DEBIAN_LIB_DIR" debian
		bg_stop "$SYSLOG_PID"
		expect_eq "idevicesyslog transcript (ours vs Debian's)" "$(cat "$E2E_TMP/ours.out")" "$(cat "$E2E_TMP/debian.out")"
	fi
}
check "ADD events for the awaited UDID reach idevicesyslog, also after a dropped listen connection" t_events

t_restart() {
	syslog_start "$BUILD_DIR" restart
	testd_cmd stop
	attach "$UDID"
	testd_cmd start
	# Our listener must come back (it polls or watches the socket's directory) and get
	# the device as ADD.
	testd_cmd "wait-listeners 1 10000"
	wait_for_count "$SYSLOG_OUT" "$ATTEMPT" 1
	testd_cmd "detach $HANDLE"
}
check "our listener reconnects after a daemon restart on another socket path than /var/run/usbmuxd" t_restart

# How Debian's library fares in the same situation, for the record.
debian_restart() {
	syslog_start "$DEBIAN_LIB_DIR" restart-debian
	testd_cmd stop
	attach "$UDID"
	testd_cmd start
	if testd_cmd "wait-listeners 1 3000" 2>/dev/null; then
		echo "note: Debian's library reconnected after the daemon restart"
	else
		echo "note: Debian's library did not reconnect within 3 s after the daemon restart (libusbmuxd-api.md §6.4)"
	fi
	testd_cmd "detach $HANDLE"
}
! have_debian || informational debian_restart

e2e_finish
