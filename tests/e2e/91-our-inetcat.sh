#!/usr/bin/env bash
# OUR inetcat (tools/, target/release/inetcat) end to end against the test daemon, and
# the same cases with Debian's inetcat (libusbmuxd-tools 2.0.2 on Debian's libusbmuxd),
# compared (tools.bash, summary at the end):
#   * argument forms, messages and exit codes;
#   * stdin to the device and back byte-exact while stdin stays open (both), and after
#     stdin's EOF (ours: the echo still arrives; 2.0.2 exits at once);
#   * 8 MiB at full speed: nothing dropped (2.0.2 writes once and drops the rest);
#   * a device service that sends and closes, with stdin at EOF from the start
#     (/dev/null: 2.0.2 fails on FIONREAD);
#   * network device reached directly; refused port; no daemon; no device; unknown UDID;
#   * the device unplugged while stdin is open: exit 0.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/tools.bash"
e2e_init our-inetcat
tools_init

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
MIB=1048576

testd_start --usb "$USB1_SERIAL,3" --network "00008030-0000111122223333,127.0.0.1,12"
tcp_client random "$E2E_TMP/1mib" "$MIB"
tcp_client random "$E2E_TMP/8mib" $((8 * MIB))

# ---- argument forms -------------------------------------------------------------------------
# arg_case CASE same|differs WHY ARGS... / expect_run CASE STATUS STDOUT STDERR (tools.bash)
arg_case() { tool_arg_case inetcat "$@"; }
expect_run() { tool_expect_run inetcat "$@"; }
t_args() {
	arg_case no-port same ""
	expect_run no-port 2 "" "Usage: inetcat [OPTIONS] DEVICE_PORT"
	arg_case port-abc same "" abc
	expect_run port-abc 234 "" "Invalid device_port specified!"
	arg_case port-0 same "" 0
	expect_run port-0 234 "" "Invalid device_port specified!"
	arg_case empty-udid same "" -u '' 22
	expect_run empty-udid 2 "" "ERROR: UDID must not be empty!
Usage: inetcat [OPTIONS] DEVICE_PORT"
	arg_case no-source-option same "" -s x 22
	expect_run no-source-option 2 "" "inetcat: invalid option -- 's'
Usage: inetcat [OPTIONS] DEVICE_PORT"
	arg_case help same "" --help
	expect_run help 0 "Usage: inetcat [OPTIONS] DEVICE_PORT" ""
	arg_case version differs "the version: 2.1.1 vs 2.0.2" -v
	expect_run version 0 "inetcat 2.1.1" ""
}
check "argument forms: messages and exit codes (7 cases)" t_args

# ---- data ------------------------------------------------------------------------------------
t_echo_open() {
	local who
	for who in $(tools_whos); do
		tools_inetcat_feed "$who" echo-open "$E2E_TMP/1mib" "$MIB" 65536 -- 7
	done
	expect_eq "echo" "$(cat "$E2E_TMP/echo-open.ours.out")" "$(digest "$E2E_TMP/1mib")"
	expect_status "exit" "$(cat "$E2E_TMP/echo-open.ours.rc")" 0
	compare_tools echo-open same ""
}
check "1 MiB through the echo while stdin stays open, byte-exact" t_echo_open

t_echo_eof() {
	local who
	for who in $(tools_whos); do
		run_tool_from <(printf 'hello') "$who" inetcat echo-eof 7
	done
	expect_eq "echo" "$(cat "$E2E_TMP/echo-eof.ours.out")" "hello"
	expect_status "exit" "$(cat "$E2E_TMP/echo-eof.ours.rc")" 0
	compare_tools echo-eof differs "2.0.2 exits at stdin's EOF, before the answer"
}
check "printf hello | inetcat 7: the echo arrives after stdin's EOF" t_echo_eof

t_full_speed() {
	local who
	for who in $(tools_whos); do
		run_tool_from "$E2E_TMP/8mib" "$who" inetcat speed 7
		digest_out speed "$who"
	done
	expect_eq "echo" "$(cat "$E2E_TMP/speed.ours.out")" "$(digest "$E2E_TMP/8mib")"
	compare_tools speed differs "2.0.2 writes each chunk once to the non-blocking socket and drops the rest; it also exits at stdin's EOF"
}
check "8 MiB from a file at full speed: every byte echoed" t_full_speed

t_source() {
	local who
	for who in $(tools_whos); do
		run_tool "$who" inetcat source 19
		digest_out source "$who"
	done
	python3 -c 'import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(1 << 20)))' >"$E2E_TMP/pattern"
	expect_eq "source" "$(cat "$E2E_TMP/source.ours.out")" "$(digest "$E2E_TMP/pattern")"
	expect_status "exit" "$(cat "$E2E_TMP/source.ours.rc")" 0
	compare_tools source differs "2.0.2: 'ioctl FIONREAD failed: Inappropriate ioctl for device' with stdin /dev/null, exit 1"
}
check "inetcat 19 < /dev/null: the source's 1 MiB, then exit 0" t_source

t_network() {
	local who
	echo_server_start "$E2E_TMP/echo-port"
	for who in $(tools_whos); do
		tools_inetcat_feed "$who" network "$E2E_TMP/1mib" "$MIB" 65536 -- -n "$ECHO_PORT"
	done
	expect_eq "echo" "$(cat "$E2E_TMP/network.ours.out")" "$(digest "$E2E_TMP/1mib")"
	compare_tools network same ""
}
check "-n: the network device's service directly, byte-exact" t_network

# ---- failures -------------------------------------------------------------------------------------
t_failures() {
	local who
	for who in $(tools_whos); do
		run_tool "$who" inetcat refused 1234
		run_tool "$who" inetcat unknown-udid -u nosuch 7
		USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/no-such-socket run_tool "$who" inetcat no-daemon 7
	done
	expect_run refused 1 "" "Error connecting to device: Connection refused"
	expect_run unknown-udid 1 "" "No connected/matching device found, disconnecting client."
	expect_run no-daemon 1 "Connecting to usbmuxd failed, terminating." \
		"cannot reach usbmuxd at $E2E_TMP/no-such-socket: No such file or directory"
	compare_tools refused differs "2.0.2 prints strerror(errno) after the library returned: 'Success'"
	compare_tools unknown-udid same ""
	# Ours adds the cause on stderr; stdout and status are the same.
	rm -f "$E2E_TMP/no-daemon.ours.err" "$E2E_TMP/no-daemon.debian.err"
	compare_tools no-daemon same ""
}
check "refused port, unknown UDID, no daemon: messages, exit 1" t_failures

t_unplug() {
	local who
	for who in $(tools_whos); do
		tool_cmd "$who" inetcat
		mkfifo "$E2E_TMP/unplug.$who.in"
		# Not bg_start: an asynchronous command without its own stdin redirection reads
		# /dev/null. The FIFO opened read-write never reports EOF.
		"${TOOL_CMD[@]}" 7 <>"$E2E_TMP/unplug.$who.in" >"$E2E_TMP/unplug.$who.raw" 2>"$E2E_TMP/unplug.$who.err" &
		local pid=$! rc=0
		BG_PIDS+=("$pid")
		echo "$pid" >>"$E2E_PIDS_FILE"
		printf 'ping' >"$E2E_TMP/unplug.$who.in"
		wait_for_line "$E2E_TMP/unplug.$who.raw" ping
		testd_cmd "detach 3"
		testd_cmd stop
		testd_cmd start
		wait "$pid" || rc=$?
		forget_pid "$pid"
		echo "$rc" >"$E2E_TMP/unplug.$who.rc"
		testd_cmd "attach $USB1_SERIAL,3"
	done
	expect_status "exit" "$(cat "$E2E_TMP/unplug.ours.rc")" 0
	compare_tools unplug same ""
}
check "device unplugged while stdin is open: exit 0" t_unplug

t_no_device() {
	testd_cmd "detach 3"
	testd_cmd "detach 12"
	local who
	for who in $(tools_whos); do run_tool "$who" inetcat no-device 7; done
	testd_cmd "attach $USB1_SERIAL,3"
	testd_cmd "attach-network 00008030-0000111122223333,127.0.0.1,12"
	expect_run no-device 1 "" "No connected device found, terminating."
	compare_tools no-device same ""
}
check "no device: 'No connected device found, terminating.', exit 1" t_no_device

tools_summary
e2e_finish
