#!/usr/bin/env bash
# iproxy on OUR library's in-process USB backend against a simulated iPhone on
# usbmux-simd's bus (no daemon). Every case runs twice: with Debian's iproxy
# (libusbmuxd-tools 2.0.2, unchanged) on our libusbmuxd-2.0.so.6, and with our own
# iproxy (tools/, on the library's Rust API):
#   * the running Debian iproxy maps our library;
#   * PORT:7 (echo): 8 MiB echoed byte-exact; 4 parallel clients of 2 MiB; a slow reader
#     (0.2 s stall per MiB: below iproxy 2.0.2's 1 s send limit, past which iproxy itself
#     drops data, tools.md §1.6; for the same reason the clients of 2.0.2 keep at most
#     128 KiB in flight, see echo_window in client.py);
#   * PORT:19 (source): 1 MiB of the pattern byte % 251, then EOF; a slow reader of 4 MiB
#     in 1000-byte reads;
#   * refused device port: iproxy's message, the client is closed, iproxy keeps running;
#   * the device unplugged in mid-transfer (echo, source): the client gets a prefix of
#     the stream -- no byte lost in the middle or repeated -- then EOF; at least every
#     byte the device saw acknowledged and at most what it sent (the simulator's
#     counters, `usbmux-simd --verbose`); iproxy keeps running, says "No connected
#     device found" while the device is away and serves the next client once it is back;
#   * the same while the reader is behind (the device stopped by flow control, data
#     pending in the backend when it goes): every byte the device sent still arrives,
#     then EOF;
#   * RST in mid-stream (simulator command `misbehave … reset-after N`): the client gets
#     exactly N bytes of the pattern, then EOF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$E2E_DIR/usb/simd.sh"
source "$E2E_DIR/tools.bash"
e2e_init usb-iproxy
e2e_require_programs iproxy
tools_init
# Debian's iproxy runs on our library here.
DEBIAN_TOOLS_LIB=$BUILD_DIR

# usb_iproxy_start WHO NAME ARGS...: Debian's iproxy on our library (WHO=debian) or ours,
# its output in $E2E_TMP/NAME.WHO.{out,err} ($IPROXY_NAME).
usb_iproxy_start() {
	local who=$1 name=$2
	shift 2
	tools_iproxy_start "$who" "$name.$who" "$@"
	if [ "$who" = debian ]; then assert_process_uses_ours "$IPROXY_PID"; fi
}

UDID=00008030-001A2B3C4D5E6F70
MIB=1048576
ENDLESS=$((1 << 40)) # a source that does not end during the test

simd_start --verbose --device "$UDID" --service 5019=source:$ENDLESS --service 5020=source:$((4 * MIB))

# The simulator's last "Closed" event of a connection to PORT, as "SENT ACKED CAUSE".
closed_stats() {
	local port=$1
	sed -n "s/.*Closed { .*device_port: $port, cause: \([A-Za-z]*\).*bytes_sent: \([0-9]*\), bytes_acked: \([0-9]*\).*/\2 \3 \1/p" \
		"$SIMD_DIR/stderr" | tail -n1
}

t_roundtrip() {
	usb_iproxy_start "$1" roundtrip PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" $((8 * MIB))
	usb_iproxy_idle
	tcp_client parallel 127.0.0.1 "$IPROXY_PORT" 4 $((2 * MIB))
	usb_iproxy_idle
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" $((4 * MIB)) slow
	usb_iproxy_idle
	iproxy_alive
	# (2.0.2 spells it "connecion".)
	grep -Eqx "Requesting connect?ion to USB device handle 1 \(serial: $UDID\), port 7" "$E2E_TMP/$IPROXY_NAME.out"
}

t_source() {
	usb_iproxy_start "$1" source PORT:19
	tcp_client source 127.0.0.1 "$IPROXY_PORT" "$MIB"
	usb_iproxy_idle
	iproxy_alive
	# One program's USB backend at a time holds the device: stop this iproxy first.
	bg_stop "$IPROXY_PID"
	simd_wait_state "$UDID" no
	usb_iproxy_start "$1" source-slow PORT:5020
	tcp_client source-slow 127.0.0.1 "$IPROXY_PORT" $((4 * MIB)) 1000 $((512 * 1024)) 0.1
	usb_iproxy_idle
	iproxy_alive
}

t_refused() {
	usb_iproxy_start "$1" refused PORT:1234
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	usb_iproxy_idle
	iproxy_alive
	grep -Eqx "$(refused_line_re "$1")" "$E2E_TMP/$IPROXY_NAME.err"
}

# cut_test WHO NAME PORT MODE AFTER [STALL]: the client streams through iproxy; after AFTER
# bytes the device is unplugged (with STALL: once the client has stopped reading and the
# device is stopped by flow control; the client reads on at most STALL s later); checks
# the client's result against the simulator's counters, then that iproxy copes without
# the device and with it back.
cut_test() {
	local who=$1 name=$2.$1 port=$3 mode=$4 after=$5 stall=${6:-}
	local ready=$E2E_TMP/$name.streaming go=$E2E_TMP/$name.go
	simd_ensure_plugged "$UDID"
	usb_iproxy_start "$who" "$2" "PORT:$port"
	tcp_client_bg "$mode" 127.0.0.1 "$IPROXY_PORT" "$ready" "$after" ${stall:+"$stall" "$go"} >"$E2E_TMP/$name.client"
	local client=$BG_PID rc=0 stalled=
	wait_for_line "$ready" STREAMING
	if [ -n "$stall" ]; then
		stalled=$(simd_wait_stalled "$UDID" "$port")
	fi
	simd_cmd "unplug $UDID"
	touch "$go"
	wait "$client" || rc=$?
	forget_pid "$client"
	cat "$E2E_TMP/$name.client"
	local got stats sent acked cause
	got=$(sed -n 's/^[a-z-]*: \([0-9]*\) bytes.*/\1/p' "$E2E_TMP/$name.client")
	stats=$(closed_stats "$port")
	read -r sent acked cause <<<"$stats"
	echo "device: sent $sent, acknowledged $acked ($cause)${stalled:+, stalled at $stalled}; client: $got"
	expect_status "client" "$rc" 0
	expect_eq "close cause" "$cause" Unplugged
	# Lower bound only when the client does not write: with echo, iproxy 2.0.2's
	# client->device thread sees its write fail when the device goes and tears the whole
	# connection down, dropping what was still on its way to the client (its own race;
	# the C test test_usb_backend checks the library's side of this exactly).
	local lower=$acked
	if [ "$port" = 7 ] && [ "$who" = debian ]; then lower=0; fi
	if ((got < lower)) || ((got > sent)); then
		echo "the client got $got bytes; the device had $acked of its $sent bytes acknowledged" >&2
		return 1
	fi
	# The device stopped by flow control before the unplug: nothing was on the wire, so
	# every byte it sent is in the backend or beyond and must reach the client. (While
	# data flows, a transfer cut by the unplug is lost, as on real USB: there only the
	# bounds above hold.)
	if [ -n "$stall" ] && ((got != sent || sent != stalled)); then
		echo "the device sent $sent bytes (stalled at $stalled) before the unplug, the client got $got: $((sent - got)) lost" >&2
		return 1
	fi
	usb_iproxy_idle
	iproxy_alive
	# Without the device: the next client is turned away, iproxy keeps running.
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	usb_iproxy_idle
	iproxy_alive
	# Back: served again.
	simd_cmd "plug $UDID"
	simd_wait_open "$UDID"
	if [ "$port" = 7 ]; then
		tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	else
		tcp_client source-head 127.0.0.1 "$IPROXY_PORT" "$MIB"
	fi
	usb_iproxy_idle
	iproxy_alive
	expect_line "$E2E_TMP/$IPROXY_NAME.out" "No connected device found, terminating."
}

t_unplug_echo() { cut_test "$1" unplug-echo 7 echo-cut $((2 * MIB)); }
t_unplug_source() { cut_test "$1" unplug-source 5019 source-cut $((2 * MIB)); }
t_unplug_behind() { cut_test "$1" unplug-behind 5019 source-cut $((2 * MIB)) 0.8; }

t_reset() {
	local n=300000 ready=$E2E_TMP/reset.$1.streaming
	simd_ensure_plugged "$UDID"
	simd_cmd "misbehave $UDID reset-after $n port=5019 simulated failure"
	usb_iproxy_start "$1" reset PORT:5019
	tcp_client source-cut 127.0.0.1 "$IPROXY_PORT" "$ready" 1000 >"$E2E_TMP/$IPROXY_NAME.client"
	cat "$E2E_TMP/$IPROXY_NAME.client"
	grep -q "^source-cut: $n bytes, pattern intact" "$E2E_TMP/$IPROXY_NAME.client"
	# Slow reader: behind by far more than N when the RST comes.
	tcp_client source-cut 127.0.0.1 "$IPROXY_PORT" "$ready.slow" 1000 0.5 >"$E2E_TMP/$IPROXY_NAME.slow"
	cat "$E2E_TMP/$IPROXY_NAME.slow"
	grep -q "^source-cut: $n bytes, pattern intact" "$E2E_TMP/$IPROXY_NAME.slow"
	simd_cmd "misbehave $UDID clear"
	usb_iproxy_idle
	iproxy_alive
	grep -q "cause: DeviceReset(Injected(\"simulated failure\"))" "$SIMD_DIR/stderr"
}

for who in debian ours; do
	check "$who iproxy PORT:7: 8 MiB echoed byte-exact, 4 parallel clients, a slow reader" t_roundtrip "$who"
	check "$who iproxy PORT:19: 1 MiB of the source pattern then EOF; 4 MiB read slowly in 1000-byte pieces" t_source "$who"
	check "$who iproxy, refused device port: client closed, 'Error connecting to device', iproxy keeps running" t_refused "$who"
	check "$who iproxy, device unplugged mid-transfer (echo): the client gets a prefix of its stream, then EOF" t_unplug_echo "$who"
	check "$who iproxy, device unplugged mid-transfer (source): a prefix of the pattern, >= what the device saw acknowledged, then EOF" t_unplug_source "$who"
	check "$who iproxy, device unplugged while the reader is behind: every byte the device sent still arrives, then EOF" t_unplug_behind "$who"
	check "$who iproxy, RST in mid-stream after N bytes: the client gets exactly N bytes of the pattern, then EOF" t_reset "$who"
done

e2e_finish
