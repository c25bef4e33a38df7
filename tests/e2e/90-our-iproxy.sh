#!/usr/bin/env bash
# OUR iproxy (tools/, target/release/iproxy) end to end against the test daemon, and the
# same cases with Debian's iproxy (libusbmuxd-tools 2.0.2 on Debian's libusbmuxd) to
# show where the two behave alike (tools.bash, summary at the end):
#   * every argument form: errors, messages, exit codes; -h, -v; 17 pairs;
#   * forwarding byte-exact (4 MiB; 16 parallel clients; a source) over 127.0.0.1 and
#     ::1, the legacy two-argument form, two pairs at once, -u/--udid, -n, -n -l, -s, -d;
#   * listening addresses (127.0.0.1 and ::1) and a busy local port;
#   * refused device port, unknown UDID, no device, no daemon: the client is closed and
#     iproxy keeps running;
#   * a device unplugged mid-stream: the client sees the close, the next is served;
#   * half-close passed through (ours only: 2.0.2 closes both sides at the client's EOF);
#   * 10 000 concurrent connections held (ours only; fewer if the hard descriptor limit
#     cannot give two per connection), through an event-driven stand-in daemon.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/tools.bash"
e2e_init our-iproxy
tools_init

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60
NET=00008030-0000111122223333
MIB=1048576

testd_start --usb "$USB1_SERIAL,3" --usb "$USB2,5" --network "$NET,127.0.0.1,12"

# ---- argument forms -------------------------------------------------------------------------
# arg_case CASE same|differs WHY ARGS... / expect_run CASE STATUS STDOUT STDERR (tools.bash)
arg_case() { tool_arg_case iproxy "$@"; }
expect_run() { tool_expect_run iproxy "$@"; }

t_args() {
	arg_case no-ports same ""
	expect_run no-ports 2 "" "ERROR: Not enough parameters. Need at least one pair of ports.
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case one-number differs "2.1.1 exit status 22; 2.0.2: 234" 2222
	expect_run one-number 22 "" "Invalid listen port specified in argument '2222'!"
	arg_case bad-device-port differs "2.0.2 names the next argument, '(null)'; exit 234" 2222:abc
	expect_run bad-device-port 22 "" "Invalid device port specified in argument '2222:abc'!"
	arg_case zero-port differs "exit status 22 (2.1.1) vs 234" 0:22
	expect_run zero-port 22 "" "Invalid listen port specified in argument '0:22'!"
	arg_case port-65536 differs "exit status 22 (2.1.1) vs 234" 65536:22
	expect_run port-65536 22 "" "Invalid listen port specified in argument '65536:22'!"
	arg_case legacy-bad differs "exit status 22 (2.1.1) vs 234" 2222 22x
	expect_run legacy-bad 22 "" "Invalid device port specified in argument '22x'!"
	arg_case empty-udid same "" -u '' 1:2
	expect_run empty-udid 2 "" "ERROR: UDID must not be empty!
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case empty-source same "" -s '' 1:2
	expect_run empty-source 2 "" "ERROR: source address must not be empty!
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case bad-option same "" -x 1:2
	expect_run bad-option 2 "" "iproxy: invalid option -- 'x'
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case bad-long-option same "" --bogus 1:2
	expect_run bad-long-option 2 "" "iproxy: unrecognized option '--bogus'
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case missing-udid same "" 1:2 -u
	expect_run missing-udid 2 "" "iproxy: option requires an argument -- 'u'
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case missing-long-udid same "" 1:2 --udid
	expect_run missing-long-udid 2 "" "iproxy: option '--udid' requires an argument
Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]"
	arg_case help same "" -h -x
	expect_run help 0 "Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]" ""
	arg_case long-help same "" --help
	arg_case version differs "the version: 2.1.1 vs 2.0.2" -v
	expect_run version 0 "iproxy 2.1.1" ""
	arg_case long-version differs "the version" --version
}
check "argument forms: messages and exit codes (16 cases)" t_args

# 17 pairs: checked before anything is opened. Debian's 2.0.2 never reaches its check
# (tools.md §1.3) and starts listening, so it only runs ours.
t_17_pairs() {
	local args=() i
	for i in $(seq 17); do args+=("$((40000 + i)):$i"); done
	run_tool ours iproxy pairs17 "${args[@]}"
	expect_run pairs17 1 "" "ERROR: Too many LOCAL:DEVICE port pairs. Maximum is 16."
}
check "17 pairs: 'Too many LOCAL:DEVICE port pairs', exit 1, no port opened" t_17_pairs

# ---- forwarding ---------------------------------------------------------------------------

sc_roundtrip() {
	local who=$1 run=roundtrip.$1.run
	tools_iproxy_start "$who" "$run" PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" $((4 * MIB))
	tools_idle
	if [ "$HAVE_IPV6" = yes ]; then
		tcp_client echo ::1 "$IPROXY_PORT" "$MIB"
		tools_idle
	fi
	tcp_client parallel 127.0.0.1 "$IPROXY_PORT" 16 $((256 * 1024))
	tools_idle
	iproxy_alive
	keep_transcript "$run" roundtrip "$who"
	bg_stop "$IPROXY_PID"
}
t_roundtrip() {
	local who
	for who in $(tools_whos); do sc_roundtrip "$who"; done
	expect_line "$E2E_TMP/roundtrip.ours.out" "Creating listening port PORT for device port 7"
	expect_line "$E2E_TMP/roundtrip.ours.out" "Requesting connection to USB device handle 3 (serial: $USB1), port 7"
	compare_tools roundtrip same ""
}
check "PORT:7: 4 MiB (127.0.0.1), 1 MiB (::1), 16 parallel clients, byte-exact" t_roundtrip

sc_forms() {
	local who=$1 port2
	port2=$(free_port)
	tools_iproxy_start "$who" "forms.$who.legacy" PORT 7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 100000
	tools_idle
	keep_transcript "forms.$who.legacy" legacy "$who"
	bg_stop "$IPROXY_PID"
	tools_iproxy_start "$who" "forms.$who.pairs" PORT:7 "$port2:19"
	# Two pairs: twice the listening sockets.
	local IPROXY_LISTENERS=$((2 * IPROXY_LISTENERS))
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 100000
	tools_idle
	tcp_client source 127.0.0.1 "$port2" "$MIB"
	tools_idle
	IPROXY_LISTENERS=$((IPROXY_LISTENERS / 2))
	keep_transcript "forms.$who.pairs" pairs "$who"
	sed -i "s/\b$port2\b/PORT2/g" "$E2E_TMP/pairs.$who.out"
	bg_stop "$IPROXY_PID"
	tools_iproxy_start "$who" "forms.$who.udid" -u "$USB2" PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 1000
	tools_idle
	bg_stop "$IPROXY_PID"
	tools_iproxy_start "$who" "forms.$who.udid2" PORT:7 --udid="$USB1" -l
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 1000
	tools_idle
	cat "$E2E_TMP/forms.$who.udid.out" "$E2E_TMP/forms.$who.udid2.out" >"$E2E_TMP/udid.$who.out"
	bg_stop "$IPROXY_PID"
}
t_forms() {
	local who
	for who in $(tools_whos); do sc_forms "$who"; done
	expect_line "$E2E_TMP/legacy.ours.out" "Creating listening port PORT for device port 7"
	expect_line "$E2E_TMP/pairs.ours.out" "Creating listening port PORT2 for device port 19"
	expect_line "$E2E_TMP/pairs.ours.out" "Requesting connection to USB device handle 3 (serial: $USB1), port 19"
	expect_line "$E2E_TMP/udid.ours.out" "Requesting connection to USB device handle 5 (serial: $USB2), port 7"
	expect_line "$E2E_TMP/udid.ours.out" "Requesting connection to USB device handle 3 (serial: $USB1), port 7"
	NORMALISE_SED=(-e "s/\b[0-9]\{4,5\}\b/PORT/g")
	compare_tools legacy same ""
	compare_tools pairs same ""
	compare_tools udid same ""
}
check "the legacy form, two pairs at once, -u UDID, --udid=UDID -l" t_forms

sc_network() {
	local who=$1 port
	echo_server_start "$E2E_TMP/echo-port.$1"
	port=$ECHO_PORT
	tools_iproxy_start "$who" "network.$who.run" -n "PORT:$port"
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	tools_idle
	keep_transcript "network.$who.run" network "$who"
	sed -i "s/\b$port\b/ECHOPORT/g" "$E2E_TMP/network.$who.out"
	bg_stop "$IPROXY_PID"
	# -n -l: both kinds, the first in the daemon's list (a USB device).
	tools_iproxy_start "$who" "network.$who.both" -n -l PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 1000
	tools_idle
	keep_transcript "network.$who.both" network-both "$who"
	bg_stop "$IPROXY_PID"
}
t_network() {
	local who
	for who in $(tools_whos); do sc_network "$who"; done
	expect_line "$E2E_TMP/network.ours.out" "Requesting connection to NETWORK device 127.0.0.1 (serial: $NET), port ECHOPORT"
	expect_line "$E2E_TMP/network-both.ours.out" "Requesting connection to USB device handle 3 (serial: $USB1), port 7"
	compare_tools network same ""
	compare_tools network-both same ""
}
check "-n: direct TCP to the network device's address; -n -l: USB and network" t_network

t_listen() {
	command -v ss >/dev/null || { echo "ss not installed: skipped"; return 0; }
	local who busy
	for who in $(tools_whos); do
		tools_iproxy_start "$who" "listen.$who.run" PORT:7
		ss -Hltn "sport = :$IPROXY_PORT" | awk '{ print $4 }' | sed "s/$IPROXY_PORT/PORT/" |
			LC_ALL=C sort >"$E2E_TMP/listen.$who.out"
		bg_stop "$IPROXY_PID"
		tools_iproxy_start "$who" "listen.$who.s" -s 127.0.0.1 PORT:7
		ss -Hltn "sport = :$IPROXY_PORT" | awk '{ print "-s: " $4 }' | sed "s/$IPROXY_PORT/PORT/" >>"$E2E_TMP/listen.$who.out"
		# The same port again: it is in use.
		tool_cmd "$who" iproxy
		run_capture "busy.$who" "${TOOL_CMD[@]}" -s 127.0.0.1 "$IPROXY_PORT:7"
		sed -i "s/\b$IPROXY_PORT\b/PORT/g" "$E2E_TMP/busy.$who.out" "$E2E_TMP/busy.$who.err"
		bg_stop "$IPROXY_PID"
	done
	if [ "$HAVE_IPV6" = yes ]; then
		expect_eq "listening sockets" "$(cat "$E2E_TMP/listen.ours.out")" "127.0.0.1:PORT
[::1]:PORT
-s: 127.0.0.1:PORT"
	fi
	expect_status busy "$(cat "$E2E_TMP/busy.ours.rc")" 1
	expect_eq "busy port" "$(cat "$E2E_TMP/busy.ours.err")" "Error creating socket for listen port PORT: Address already in use"
	compare_tools listen same ""
	compare_tools busy differs "2.0.2 perrors 'bind(): …', then names a stale errno ('Invalid argument') and exits 247; ours names the cause, exits 1 as 2.1.1"
}
check "listening on 127.0.0.1 and ::1 (-s: one address); a port in use" t_listen

# ---- failures: the client is closed, iproxy keeps running --------------------------------------

# sc_closed CASE WHO ENV ARGS...: one client that must be closed, twice.
sc_closed() {
	local case=$1 who=$2 env=$3
	shift 3
	[ -n "$env" ] && export USBMUXD_SOCKET_ADDRESS=$env
	tools_iproxy_start "$who" "$case.$who.run" "$@"
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	tools_idle
	tcp_client closed 127.0.0.1 "$IPROXY_PORT"
	tools_idle
	iproxy_alive
	keep_transcript "$case.$who.run" "$case" "$who"
	bg_stop "$IPROXY_PID"
}
t_refused() {
	local who
	for who in $(tools_whos); do sc_closed refused "$who" "" PORT:1234; done
	expect_eq "stderr" "$(cat "$E2E_TMP/refused.ours.err")" "Error connecting to device: Connection refused
Error connecting to device: Connection refused"
	compare_tools refused differs "2.0.2 prints strerror(errno) after the library returned: 'Success'"
}
check "refused device port: 'Error connecting to device: Connection refused'" t_refused

t_unknown_udid() {
	local who
	for who in $(tools_whos); do sc_closed unknown-udid "$who" "" -u 00008030-00000000DEADBEEF PORT:7; done
	expect_eq "lines" "$(grep -c '^No connected/matching device found, disconnecting client\.$' "$E2E_TMP/unknown-udid.ours.out")" 2
	compare_tools unknown-udid same ""
}
check "-u <unknown UDID>: 'No connected/matching device found'" t_unknown_udid

t_no_daemon() {
	local who
	for who in $(tools_whos); do sc_closed no-daemon "$who" "UNIX:$E2E_TMP/no-such-socket" PORT:7; done
	expect_eq "lines" "$(grep -c '^Connecting to usbmuxd failed, terminating\.$' "$E2E_TMP/no-daemon.ours.out")" 2
	expect_line "$E2E_TMP/no-daemon.ours.err" "cannot reach usbmuxd at $E2E_TMP/no-such-socket: No such file or directory"
	# stdout is the same; ours adds the cause on stderr.
	rm -f "$E2E_TMP/no-daemon.ours.err" "$E2E_TMP/no-daemon.debian.err"
	compare_tools no-daemon same ""
}
check "no daemon: 'Connecting to usbmuxd failed' (and the cause on stderr)" t_no_daemon

t_debug() {
	local who
	for who in $(tools_whos); do sc_closed debug "$who" "UNIX:$E2E_TMP/no-such-socket" -d PORT:7; done
	grep -q '^\[libusbmuxd\] ' "$E2E_TMP/debug.ours.err"
	if have_debian_tools; then grep -q '^\[libusbmuxd\] ' "$E2E_TMP/debug.debian.err"; fi
}
check "-d: the library's [libusbmuxd] debug lines on stderr" t_debug

# ---- the device goes away mid-stream ------------------------------------------------------------
# The test daemon keeps pipes open on `detach`; `stop`/`start` drops them the way a
# vanished device's pipes are dropped.
sc_unplug() {
	local who=$1 ready=$E2E_TMP/unplug.$1.streaming
	tools_iproxy_start "$who" "unplug.$who.run" PORT:7
	tcp_client_bg midstream 127.0.0.1 "$IPROXY_PORT" "$ready" >"$E2E_TMP/unplug.$who.client"
	local client=$BG_PID rc=0
	wait_for_line "$ready" STREAMING
	testd_cmd "detach 3"
	testd_cmd stop
	testd_cmd start
	wait "$client" || rc=$?
	forget_pid "$client"
	cat "$E2E_TMP/unplug.$who.client"
	expect_status "client" "$rc" 0
	tools_idle
	# The next client: the remaining device 5.
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" "$MIB"
	tools_idle
	iproxy_alive
	testd_cmd "attach $USB1_SERIAL,3"
	keep_transcript "unplug.$who.run" unplug "$who"
	bg_stop "$IPROXY_PID"
}
t_unplug() {
	local who
	for who in $(tools_whos); do sc_unplug "$who"; done
	grep -q '^closed (EOF)' "$E2E_TMP/unplug.ours.client" || {
		echo "our client did not see a clean EOF: $(cat "$E2E_TMP/unplug.ours.client")" >&2
		return 1
	}
	expect_line "$E2E_TMP/unplug.ours.out" "Requesting connection to USB device handle 5 (serial: $USB2), port 7"
	compare_tools unplug same ""
}
check "device unplugged mid-stream: the client sees EOF, the next one is served" t_unplug

# ---- half-close -----------------------------------------------------------------------------------
t_halfclose() {
	local who
	for who in $(tools_whos); do
		tools_iproxy_start "$who" "halfclose.$who.run" PORT:7
		local rc=0
		"$TOOLS_HELPER" halfclose 127.0.0.1 "$IPROXY_PORT" $((3 * MIB)) >"$E2E_TMP/halfclose.$who.out" 2>&1 || rc=$?
		echo "$rc" >"$E2E_TMP/halfclose.$who.rc"
		bg_stop "$IPROXY_PID"
	done
	cat "$E2E_TMP/halfclose.ours.out"
	expect_status "ours" "$(cat "$E2E_TMP/halfclose.ours.rc")" 0
	compare_tools halfclose differs "2.0.2 closes both sides at the client's EOF: the echo is lost"
}
check "half-close: 3 MiB sent, write side shut, the whole echo arrives, then EOF" t_halfclose

# ---- 10 000 connections -------------------------------------------------------------------------
t_many() {
	local hard n=10000 sock=$E2E_TMP/fast.sock
	hard=$(ulimit -Hn)
	# Two descriptors per connection in iproxy, plus its own few (listeners, epoll,
	# spare splice pipes, setup threads' daemon connections).
	if [ "$hard" != unlimited ] && ((hard < 2 * n + 64)); then
		n=$(((hard - 64) / 2))
		echo "note: hard limit on open files is $hard: $n connections instead of 10000"
	fi
	ulimit -Sn "$hard"
	bg_start "$TOOLS_HELPER" daemon --socket "$sock" >"$E2E_TMP/fast.out" 2>"$E2E_TMP/fast.err"
	wait_for_line "$E2E_TMP/fast.out" '^READY'
	USBMUXD_SOCKET_ADDRESS=UNIX:$sock tools_iproxy_start ours many PORT:7
	bg_start "$TOOLS_HELPER" hold 127.0.0.1 "$IPROXY_PORT" "$n" --hold-until-file "$E2E_TMP/release" \
		</dev/null >"$E2E_TMP/hold.out" 2>"$E2E_TMP/hold.err"
	local holder=$BG_PID
	wait_for_line "$E2E_TMP/hold.out" '^HELD' 120
	cat "$E2E_TMP/hold.out"
	local sockets threads rss
	sockets=$( (find "/proc/$IPROXY_PID/fd" -lname "socket:*" 2>/dev/null || true) | wc -l)
	threads=$(ls "/proc/$IPROXY_PID/task" | wc -l)
	rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$IPROXY_PID/status")
	echo "iproxy: $sockets sockets, $threads threads, RSS $rss kB while holding $n connections"
	: >"$E2E_TMP/release"
	local rc=0
	wait "$holder" || rc=$?
	forget_pid "$holder"
	cat "$E2E_TMP/hold.out" | tail -n1
	expect_status "hold" "$rc" 0
	grep -q "^HELD $n of $n" "$E2E_TMP/hold.out"
	grep -q "^VERIFIED $n of $n" "$E2E_TMP/hold.out"
	expect_eq "sockets while holding" "$sockets" "$((2 * n + IPROXY_LISTENERS))"
	((threads <= 9)) || { echo "$threads threads" >&2; return 1; }
	tools_idle
	iproxy_alive
}
check "10 000 concurrent connections held, echoed twice, then all closed" t_many

tools_summary
e2e_finish
