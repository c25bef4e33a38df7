# shellcheck shell=bash
# Helpers of the e2e scripts that run Debian's programs on the library's in-process USB
# backend (tests/e2e/9*-usb-*.sh), sourced after tests/e2e/lib.sh. (This directory is
# not matched by the Makefile's tests/e2e/*.sh, so nothing here runs on its own.)
#
# The "USB" is a simulated bus served by usbmux-simd (sim/): every program run with
#   USBMUXD_BACKEND=usb USBMUXD_SIMBUS=<socket> USBMUXD_PAIR_RECORD_DIR=<dir>
# starts the library's in-process daemon, which opens the simulated devices itself and
# speaks the usbmux protocol to them; no usbmuxd daemon is involved.
#
# Environment: USBMUX_SIMD (the simulator binary; default: usbmux-simd next to the test
# daemon, i.e. $TARGET_DIR/usbmux-simd, $TARGET_DIR/release/usbmux-simd or
# target/release/usbmux-simd).
#
#   simd_start ARGS...        (top level only) start usbmux-simd on a socket in the temp
#                             dir with ARGS (--device, --service, ...), wait for READY and
#                             export the variables above; USBMUXD_SOCKET_ADDRESS points at a
#                             socket that does not exist, so any use of a daemon would fail
#                             (SIMD_SOCKET=PATH simd_start …: on that socket, e.g. to
#                             restart the simulator where the programs expect it)
#   simd_cmd "plug UDID"      a control command; reply lines in SIMD_REPLY (last OK…/ERR…)
#   simd_bus_id UDID          the bus id of a plugged-in device (from `list`)
#   simd_wait_open UDID       wait until a host (a program's USB backend) has opened it
#   simd_wait_state UDID yes|no   ... until it is / is not open
#   simd_ensure_plugged UDID  plug it in unless it is
#   simd_unplug_all           unplug every device
#   simd_wait_stalled UDID PORT   wait until the device's connection to PORT is stopped
#                             by flow control (all the host's window in flight, nothing
#                             sent for 100 ms); prints its bytes_sent
#   simd_kill                 quit the simulator
#   run_lines NAME CMD...     run CMD (our library), stdout in NAME.out; must exit 0
#   wait_listed UDID [N]      poll `idevice_id -l` until UDID is listed N times (default 1;
#                             0: until it is gone)
#   expect_same_lines WHAT GOT WANT   like expect_eq, after sorting both
#   usb_iproxy_idle           iproxy_idle for an iproxy on the USB backend (see there)

SIMD_PID=
SIMD_IN=
SIMD_OUT=
SIMD_DIR=
SIMD_SOCK=
SIMD_SEQ=0
SIMD_REPLY=()

simd_find() {
	local c
	for c in "${USBMUX_SIMD:-}" "${TARGET_DIR:+$TARGET_DIR/usbmux-simd}" "${TARGET_DIR:+$TARGET_DIR/release/usbmux-simd}" \
		"$(dirname "$USBMUXD_TESTD")/usbmux-simd" "$E2E_ROOT/target/release/usbmux-simd"; do
		if [ -n "$c" ] && [ -x "$c" ]; then
			USBMUX_SIMD=$c
			return 0
		fi
	done
	e2e_abort "usbmux-simd not found (run make; or set USBMUX_SIMD)"
}

simd_start() {
	if ((BASH_SUBSHELL > 0)); then
		echo "simd_start: call it at the top level of the script, not inside a check" >&2
		return 1
	fi
	simd_kill
	[ -n "${USBMUX_SIMD:-}" ] && [ -x "$USBMUX_SIMD" ] || simd_find
	SIMD_SEQ=$((SIMD_SEQ + 1))
	SIMD_DIR=$E2E_TMP/simd.$SIMD_SEQ
	SIMD_SOCK=${SIMD_SOCKET:-$SIMD_DIR/simbus.sock}
	local rc=0
	ctl_start usbmux-simd "$SIMD_DIR" "$USBMUX_SIMD" --socket "$SIMD_SOCK" "$@" || rc=$?
	SIMD_PID=$CTL_PID SIMD_IN=$CTL_IN SIMD_OUT=$CTL_OUT
	[ $rc -eq 0 ] || e2e_abort "simulator failed to start"
	export USBMUXD_BACKEND=usb
	export USBMUXD_SIMBUS=$CTL_READY
	export USBMUXD_PAIR_RECORD_DIR=$E2E_TMP/lockdown
	# Nothing may reach a daemon: the forced USB backend ignores this address.
	export USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/no-daemon-here.sock
}

simd_cmd() { ctl_cmd usbmux-simd "$SIMD_IN" "$SIMD_OUT" SIMD_REPLY "$@"; }

simd_bus_id() {
	simd_cmd list
	printf '%s\n' "${SIMD_REPLY[@]}" | sed -n "s/^DEVICE bus_id=\([0-9]*\) udid=$1 .*/\1/p"
}

simd_wait_open() { simd_wait_state "$1" yes; }

# simd_wait_state UDID yes|no: wait until the device is (not) open by a host. A device is
# open by at most one host (like a claimed USB interface): one program's USB backend at
# a time, so a script stops one program before the next may see the device.
simd_wait_state() {
	poll_until 10 simd_state_is "$1" "$2" && return 0
	echo "device $1 not open=$2 within 10 s" >&2
	return 1
}
simd_state_is() {
	simd_cmd list || return 1
	printf '%s\n' "${SIMD_REPLY[@]}" | grep -q "^DEVICE .* udid=$1 .* open=$2"
}

# Plugs the device in unless it is (e.g. after a failed check that unplugged it).
simd_ensure_plugged() {
	simd_cmd list
	printf '%s\n' "${SIMD_REPLY[@]}" | grep -q "^DEVICE .* udid=$1 " || simd_cmd "plug $1"
}

simd_unplug_all() {
	local id
	simd_cmd list
	for id in $(printf '%s\n' "${SIMD_REPLY[@]}" | sed -n 's/^DEVICE bus_id=\([0-9]*\) .*/\1/p'); do
		simd_cmd "unplug $id"
	done
}

simd_wait_stalled() {
	local udid=$1 port=$2 start=$SECONDS line sent unacked window last= same=0
	while :; do
		simd_cmd "connections $udid"
		line=$(printf '%s\n' "${SIMD_REPLY[@]}" | grep "^CONNECTION .* device_port=$port " | tail -n1)
		sent=$(sed -n 's/.* bytes_sent=\([0-9]*\) .*/\1/p' <<<"$line")
		unacked=$(sed -n 's/.* unacked=\([0-9]*\) .*/\1/p' <<<"$line")
		window=$(sed -n 's/.* host_window=\([0-9]*\) .*/\1/p' <<<"$line")
		if [ -n "$sent" ] && ((window > 0 && unacked >= window)) && [ "$sent" = "$last" ]; then
			same=$((same + 1))
		else
			same=0
		fi
		# Blocked by the window and nothing sent for 100 ms.
		if ((same >= 10)); then
			echo "$sent"
			return 0
		fi
		last=$sent
		if ((SECONDS - start >= 10)); then
			echo "the connection to port $port of $udid never stalled: ${line:-no such connection}" >&2
			return 1
		fi
		sleep 0.01
	done
}

simd_kill() {
	if [ -n "$SIMD_PID" ]; then
		ctl_stop "$SIMD_PID" "$SIMD_IN" "$SIMD_OUT" 100
		SIMD_PID=
	fi
}

run_lines() {
	local name=$1 rc=0
	shift
	ours "$@" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" </dev/null || rc=$?
	if [ $rc -ne 0 ]; then
		echo "'$*' exited with status $rc; stderr:" >&2
		sed 's/^/    /' "$E2E_TMP/$name.err" >&2
		return 1
	fi
}

wait_listed() {
	local udid=$1 n=${2:-1}
	poll_until 10 listed_times_is "$udid" "$n" && return 0
	echo "idevice_id -l lists $udid $POLL_GOT time(s), expected $n" >&2
	return 1
}
# Whether `idevice_id -l` lists UDID N times (POLL_GOT: how many).
listed_times_is() {
	POLL_GOT=$(ours idevice_id -l 2>/dev/null | grep -cFx -- "$1") || true
	[ "${POLL_GOT:-0}" -eq "$2" ]
}

expect_same_lines() {
	expect_eq "$1" "$(printf '%s\n' "$2" | LC_ALL=C sort)" "$(printf '%s\n' "$3" | LC_ALL=C sort)"
}

# "TCP UNIX": the numbers of distinct TCP and other (UNIX) sockets process PID has open.
socket_counts() {
	find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | sed 's/[^0-9]//g' | sort -u |
		awk 'FILENAME != "-" { if (FNR > 1) tcp[$10] = 1; next }
			{ if ($1 in tcp) t++; else u++ }
			END { print t + 0, u + 0 }' /proc/net/tcp /proc/net/tcp6 -
}

# iproxy_idle (lib.sh) counts every socket, but on the USB backend iproxy also holds the
# simulated bus's control and device connections. Waits until iproxy has only its
# listening TCP sockets and at most those two UNIX sockets (a forwarded connection's
# socket pair left open would be a third and fourth).
usb_iproxy_idle() {
	poll_until 10 usb_iproxy_idle_now && return 0
	local tcp unix
	read -r tcp unix <<<"$POLL_GOT"
	echo "iproxy has $tcp TCP sockets (expected $IPROXY_LISTENERS) and $unix UNIX sockets (expected <= 2)" >&2
	return 1
}
usb_iproxy_idle_now() {
	local tcp unix
	read -r tcp unix < <(socket_counts "$IPROXY_PID")
	POLL_GOT="$tcp $unix"
	((tcp == IPROXY_LISTENERS && unix <= 2))
}

