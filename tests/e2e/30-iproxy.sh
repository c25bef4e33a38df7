#!/usr/bin/env bash
# iproxy (libusbmuxd-tools 2.0.2) with our libusbmuxd-2.0.so.6, forwarding local TCP
# ports to the test daemon's device services (7 echo, 19 source of 1 MiB, nothing on
# 1234):
#   * the running process maps our library; it listens on 127.0.0.1 and [::1] (2.0.2,
#     tools.md §1.4);
#   * several MiB of random data echoed byte-exact, over IPv4 and IPv6; 4 parallel
#     clients; a slow reader; 1 MiB from the device to the client, then EOF;
#   * -u UDID (also a UDID the library normalised) picks the device;
#   * -n reaches a network device directly at its NetworkAddress (conn_data);
#   * unknown UDID, refused device port, no daemon, no device: the client is closed,
#     iproxy prints its message and keeps running;
#   * device detached and its connections dropped mid-stream: the client sees the close,
#     iproxy keeps running and serves the next client with the remaining device.
# Every stdout/stderr transcript (lines sorted: iproxy's threads print concurrently) and
# the daemon's request log must equal those with Debian's library.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init iproxy
e2e_require_programs iproxy
command -v stdbuf >/dev/null || e2e_abort "stdbuf (coreutils) is required"

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60
NET=00008030-0000111122223333
MIB=1048576

testd_start --usb "$USB1_SERIAL,3" --usb "$USB2,5" --network "$NET,127.0.0.1,12"

# The transcript of the last iproxy with the port replaced by PORT and sorted (and the
# sed expression TRANSCRIPT_SED applied, if set).
TRANSCRIPT_SED=
transcript() {
	local f
	for f in out err; do
		echo "-- std$f"
		sed -e "s/\b$IPROXY_PORT\b/PORT/g" ${TRANSCRIPT_SED:+-e "$TRANSCRIPT_SED"} \
			"$E2E_TMP/$IPROXY_NAME.$f" | LC_ALL=C sort
	done
}

# run_both SCENARIO: runs the scenario function with our library, then (if available)
# with Debian's; their transcripts and daemon logs must be identical.
run_both() {
	local scenario=$1
	testd_cmd log-clear
	"$scenario" "$BUILD_DIR" "$scenario.ours"
	transcript >"$E2E_TMP/$scenario.ours.transcript"
	testd_log >"$E2E_TMP/$scenario.ours.log"
	have_debian || return 0
	testd_cmd log-clear
	"$scenario" "$DEBIAN_LIB_DIR" "$scenario.debian"
	transcript >"$E2E_TMP/$scenario.debian.transcript"
	testd_log >"$E2E_TMP/$scenario.debian.log"
	local what ok=0
	for what in transcript log; do
		same_files "$scenario: the $what" "$E2E_TMP/$scenario.debian.$what" "$E2E_TMP/$scenario.ours.$what" || ok=1
	done
	return $ok
}

# ---- forwarding ---------------------------------------------------------------------------

roundtrip() {
	local lib=$1 name=$2
	iproxy_start "$lib" "$name" PORT:7
	if [ "$lib" = "$BUILD_DIR" ]; then
		assert_process_uses_ours "$IPROXY_PID"
		# 2.0.2 listens on loopback only, IPv4 and IPv6.
		if [ "$HAVE_IPV6" = yes ] && command -v ss >/dev/null; then
			expect_eq "listening sockets" \
				"$(ss -Hltn "sport = :$IPROXY_PORT" | awk '{ print $4 }' | LC_ALL=C sort)" \
				"127.0.0.1:$IPROXY_PORT
[::1]:$IPROXY_PORT"
		fi
	fi
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" $((4 * MIB))
	iproxy_idle
	if [ "$HAVE_IPV6" = yes ]; then
		tcp_client echo ::1 "$IPROXY_PORT" $((1 * MIB))
		iproxy_idle
	fi
	iproxy_alive
}
t_roundtrip() {
	run_both roundtrip
	local t=$E2E_TMP/roundtrip.ours
	expect_line "$t.transcript" "Creating listening port PORT for device port 7"
	expect_line "$t.out" "Requesting connecion to USB device handle 3 (serial: $USB1), port 7"
	local want='LOG version=1 tag=1 type=ListDevices ProgName="iproxy" kLibUSBMuxVersion=3
LOG version=1 tag=2 type=Connect ProgName="iproxy" kLibUSBMuxVersion=3 DeviceID=3 PortNumber=1792 device=3 port=7'
	if [ "$HAVE_IPV6" = yes ]; then
		want+='
LOG version=1 tag=3 type=ListDevices ProgName="iproxy" kLibUSBMuxVersion=3
LOG version=1 tag=4 type=Connect ProgName="iproxy" kLibUSBMuxVersion=3 DeviceID=3 PortNumber=1792 device=3 port=7'
	fi
	expect_eq "connections" "$(grep -c '^New connection for' "$t.out")" "$(grep -c type=Connect <<<"$want")"
	expect_eq "daemon requests" "$(cat "$t.log")" "$want"
}
check "iproxy PORT:7: 4 MiB over 127.0.0.1 and 1 MiB over ::1 echoed byte-exact" t_roundtrip

parallel() {
	iproxy_start "$1" "$2" PORT:7
	tcp_client parallel 127.0.0.1 "$IPROXY_PORT" 4 $((2 * MIB))
	iproxy_idle
	iproxy_alive
}
t_parallel() {
	run_both parallel
	expect_eq "connections" "$(grep -c '^Requesting connecion to USB device handle 3' "$E2E_TMP/parallel.ours.out")" 4
}
check "4 parallel clients, 2 MiB each, echoed byte-exact" t_parallel

t_slow_reader() {
	iproxy_start "$BUILD_DIR" slow PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" $((4 * MIB)) slow
	iproxy_idle
	iproxy_alive
}
check "a slow reader (0.2 s stall per MiB) still gets every byte" t_slow_reader

source_service() {
	iproxy_start "$1" "$2" PORT:19
	tcp_client source 127.0.0.1 "$IPROXY_PORT" "$MIB"
	iproxy_idle
	iproxy_alive
}
t_source() {
	run_both source_service
	expect_line "$E2E_TMP/source_service.ours.out" "Requesting connecion to USB device handle 3 (serial: $USB1), port 19"
}
check "device-to-client: 1 MiB from the source service, then EOF" t_source

# ---- device selection -----------------------------------------------------------------------

select_udid() {
	iproxy_start "$1" "$2" -u "$USB2" PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	iproxy_idle
	bg_stop "$IPROXY_PID"
	# The UDID as listed (with the dash the library inserted), not as the daemon sent it.
	iproxy_start "$1" "$2.dashed" PORT:7 -u "$USB1"
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 1000
	iproxy_idle
}
t_select_udid() {
	run_both select_udid
	expect_line "$E2E_TMP/select_udid.ours.out" "Requesting connecion to USB device handle 5 (serial: $USB2), port 7"
	expect_line "$E2E_TMP/select_udid.ours.dashed.out" "Requesting connecion to USB device handle 3 (serial: $USB1), port 7"
	grep -q 'type=Connect .*DeviceID=5 PortNumber=1792 device=5 port=7' "$E2E_TMP/select_udid.ours.log"
	grep -q 'type=Connect .*DeviceID=3 PortNumber=1792 device=3 port=7' "$E2E_TMP/select_udid.ours.log"
}
check "iproxy -u UDID connects to that device" t_select_udid

network() {
	echo_server_start "$E2E_TMP/$2.echo-port"
	local port=$ECHO_PORT
	iproxy_start "$1" "$2" -n "PORT:$port"
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	iproxy_idle
	sed -i "s/\b$port\b/ECHOPORT/g" "$E2E_TMP/$2.out" "$E2E_TMP/$2.err"
}
t_network() {
	run_both network
	expect_line "$E2E_TMP/network.ours.out" "Requesting connecion to NETWORK device 127.0.0.1 (serial: $NET), port ECHOPORT"
	# The data went straight to 127.0.0.1: the daemon was only asked for the list.
	expect_eq "daemon requests" "$(cat "$E2E_TMP/network.ours.log")" \
		'LOG version=1 tag=1 type=ListDevices ProgName="iproxy" kLibUSBMuxVersion=3'
}
check "iproxy -n: direct TCP to the network device's NetworkAddress (127.0.0.1)" t_network

# ---- failures: the client is closed, iproxy keeps running ----------------------------------

unknown_udid() {
	iproxy_start "$1" "$2" -u 00008030-00000000DEADBEEF PORT:7
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	iproxy_idle
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	iproxy_idle
	iproxy_alive
}
t_unknown_udid() {
	run_both unknown_udid
	expect_eq "No connected/matching lines" \
		"$(grep -c '^No connected/matching device found, disconnecting client\.$' "$E2E_TMP/unknown_udid.ours.out")" 2
	if grep -q type=Connect "$E2E_TMP/unknown_udid.ours.log"; then
		echo "unexpected Connect request" >&2
		return 1
	fi
}
check "iproxy -u <unknown UDID>: client closed, 'No connected/matching device' message" t_unknown_udid

refused() {
	iproxy_start "$1" "$2" PORT:1234
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	iproxy_idle
	iproxy_alive
}
# iproxy 2.0.2 prints strerror(errno) after usbmuxd_connect failed (tools.md §1.6 step 5):
# whatever errno the library left behind. Debian's leaves 0 ("Success"); a library that
# sets errno to the error it returns gives "Connection refused" (what 2.1.1 prints). Any
# other text is a misleading leftover of the library's internal system calls.
t_refused() {
	TRANSCRIPT_SED='s/^\(Error connecting to device:\) .*/\1 <strerror(errno)>/'
	run_both refused
	local line
	line=$(grep '^Error connecting to device: ' "$E2E_TMP/refused.ours.err")
	case $line in
	"Error connecting to device: Success" | "Error connecting to device: Connection refused") ;;
	*)
		echo "iproxy with our library printed '$line'; expected what Debian's prints" \
			"('Error connecting to device: Success') or '...: Connection refused'" >&2
		return 1
		;;
	esac
	grep -q 'type=Connect .*DeviceID=3 PortNumber=53764 device=3 port=1234' "$E2E_TMP/refused.ours.log"
}
check "refused device port: client closed, 'Error connecting to device' message" t_refused

no_daemon() {
	USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/no-such-socket iproxy_start "$1" "$2" PORT:7
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	iproxy_idle
	iproxy_alive
}
t_no_daemon() {
	run_both no_daemon
	expect_line "$E2E_TMP/no_daemon.ours.out" "Connecting to usbmuxd failed, terminating."
}
check "no daemon: client closed, 'Connecting to usbmuxd failed', iproxy keeps running" t_no_daemon

# ---- the device goes away in the middle of a transfer ------------------------------------
# The test daemon keeps pipes open on `detach` (the real daemon closes them when the
# device is gone), so the detach is followed by `stop`/`start`, which drops every
# connection of the daemon the way a vanished device drops its pipes.

detach_midstream() {
	local lib=$1 name=$2 ready=$E2E_TMP/$2.streaming
	iproxy_start "$lib" "$name" PORT:7
	tcp_client_bg midstream 127.0.0.1 "$IPROXY_PORT" "$ready" >"$E2E_TMP/$name.client"
	local client=$BG_PID
	wait_for_line "$ready" STREAMING
	testd_cmd "detach 3"
	testd_cmd stop
	testd_cmd start
	local rc=0
	wait "$client" || rc=$?
	cat "$E2E_TMP/$name.client"
	expect_status "client" "$rc" 0
	iproxy_idle
	iproxy_alive
	# The next client is served by the remaining device 5.
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	iproxy_idle
	# Without devices: "No connected device found".
	testd_cmd "detach 5"
	testd_cmd "detach 12"
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	iproxy_idle
	iproxy_alive
	# Devices back for the next run.
	testd_cmd "attach $USB1_SERIAL,3"
	testd_cmd "attach $USB2,5"
	testd_cmd "attach-network $NET,127.0.0.1,12"
}
t_detach_midstream() {
	run_both detach_midstream
	local t=$E2E_TMP/detach_midstream.ours.out
	expect_line "$t" "Requesting connecion to USB device handle 3 (serial: $USB1), port 7"
	expect_line "$t" "Requesting connecion to USB device handle 5 (serial: $USB2), port 7"
	expect_line "$t" "No connected device found, terminating."
}
check "device detached mid-stream: client sees the close, iproxy serves the next one" t_detach_midstream

e2e_finish
