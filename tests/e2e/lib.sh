# shellcheck shell=bash
# Shared helpers of the end-to-end scripts tests/e2e/*.sh.
#
# Every script runs Debian's prebuilt programs (libimobiledevice-utils 1.3.0,
# libusbmuxd-tools 2.0.2) against the test daemon usbmuxd-testd, once with OUR
# libusbmuxd-2.0.so.6 (LD_LIBRARY_PATH=$BUILD_DIR) and, where it makes sense, once
# with Debian's own library, and compares.
#
# Environment (set by `make check` / `make e2e`; defaults for running a script by hand
# from the repository root after `make`):
#   BUILD_DIR      directory holding our libusbmuxd-2.0.so.6        (default: build)
#   USBMUXD_TESTD  the test daemon binary (default: target/release/usbmuxd-testd)
#   DEBIAN_LIBUSBMUXD  Debian's libusbmuxd-2.0.so.6 (default: found with dpkg / ldconfig)
#   E2E_KEEP=1     keep the temporary directory (logs of daemon and tools) for debugging
#
# Usage in a script:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   e2e_init NAME                        # temp dir, cleanup trap, locate libraries
#   e2e_require_programs idevice_id ...  # SKIP if missing; FAIL unless ldd resolves
#                                        # libusbmuxd-2.0.so.6 to ours (and Debian's)
#   testd_start --usb UDID,3 ...         # (top level only) start the daemon, wait for
#                                        # READY, export USBMUXD_SOCKET_ADDRESS
#   testd_cmd "detach 3"                 # control command; reply in TESTD_REPLY (array)
#   testd_log                            # the daemon's request log, normalised
#   check "description" function args... # runs the function in a subshell with set -e:
#                                        # PASS/FAIL line; continues with the next check
#   ours CMD... / debian CMD...          # run CMD with our / Debian's library
#   same_as_debian NAME CMD...           # run with both; stdout, stderr, status equal
#   iproxy_start / inetcat_feed / tcp_client  # drive iproxy and inetcat (see below)
#   e2e_finish                           # summary, exit status
#
# Programs are run with `timeout`; waits poll for a condition (no fixed sleeps).
#
# Result lines: `PASS <script>: <check>`, `FAIL <script>: <check>`, `SKIP …`, and a final
# `PASS <script>` / `FAIL <script>` line.

set -euo pipefail

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	# Run directly (e.g. by a `tests/e2e/*.sh` loop): nothing to test here.
	echo "lib.sh: shared helpers of the e2e scripts, nothing to run"
	exit 0
fi

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_DIR/../.." && pwd)
E2E_NAME=
E2E_TMP=
E2E_PASSED=0
E2E_FAILED=0
E2E_SKIPPED=0
E2E_FAILED_NAMES=()
# Background processes started by this shell or its check subshells (file of pids).
E2E_PIDS_FILE=
# Per-command timeout for the programs under test (seconds).
E2E_TIMEOUT=${E2E_TIMEOUT:-20}

TESTD_PID=
TESTD_IN=
TESTD_OUT=
TESTD_ADDR=
TESTD_LOGDIR=
TESTD_REPLY=()
TESTD_SEQ=0

BG_PID=
BG_PIDS=()

# ---- set-up and tear-down ------------------------------------------------------------------

e2e_init() {
	E2E_NAME=$1
	: "${BUILD_DIR:=$E2E_ROOT/build}"
	: "${USBMUXD_TESTD:=$E2E_ROOT/target/release/usbmuxd-testd}"
	BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || e2e_abort "BUILD_DIR does not exist (run make)"
	export BUILD_DIR USBMUXD_TESTD
	[ -f "$BUILD_DIR/libusbmuxd-2.0.so.6" ] || e2e_abort "$BUILD_DIR/libusbmuxd-2.0.so.6 missing (run make)"
	[ -x "$USBMUXD_TESTD" ] || e2e_abort "test daemon $USBMUXD_TESTD missing (run make)"
	command -v python3 >/dev/null || e2e_abort "python3 is required"
	E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-$E2E_NAME.XXXXXX")
	E2E_PIDS_FILE=$E2E_TMP/pids
	: >"$E2E_PIDS_FILE"
	trap e2e_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	# Make sure no stray setting of the caller picks another daemon or library.
	unset USBMUXD_SOCKET_ADDRESS
	e2e_find_debian_lib
	e2e_debian_programs_first
}

# Puts Debian's packaged programs (libusbmuxd-tools, libimobiledevice-utils) first in
# PATH, through links in a private directory: after `make install`, /usr/local/bin holds
# our iproxy and inetcat under the same names, and they come before /usr/bin.
e2e_debian_programs_first() {
	command -v dpkg-query >/dev/null || return 0
	local dir=$E2E_TMP/debian-bin f
	mkdir -p "$dir"
	while read -r f; do
		case $f in
		*/bin/*) if [ -f "$f" ] && [ -x "$f" ]; then ln -sf "$f" "$dir/"; fi ;;
		esac
	done < <(dpkg-query -L libusbmuxd-tools libimobiledevice-utils 2>/dev/null || true)
	PATH=$dir:$PATH
}

# Prints a message and fails the whole script (set-up problems, not test failures).
e2e_abort() {
	echo "FAIL ${E2E_NAME:-e2e}: $*" >&2
	exit 1
}

e2e_cleanup() {
	local rc=$?
	set +e
	testd_kill
	local pid
	while read -r pid; do
		[ -n "$pid" ] && kill "$pid" 2>/dev/null
	done <"$E2E_PIDS_FILE" 2>/dev/null
	if [ -n "$E2E_TMP" ] && [ -d "$E2E_TMP" ]; then
		if [ "${E2E_KEEP:-0}" = 1 ]; then
			echo "(kept $E2E_TMP)"
		else
			rm -rf "$E2E_TMP"
		fi
	fi
	exit "$rc"
}

# Debian's library for the side-by-side runs: a private directory holding only a link
# named libusbmuxd-2.0.so.6 to Debian's file, used as LD_LIBRARY_PATH. Sets DEBIAN_LIB_DIR
# (empty when Debian's library is not available: the comparisons are then skipped).
DEBIAN_LIB_DIR=
e2e_find_debian_lib() {
	local lib=${DEBIAN_LIBUSBMUXD:-}
	if [ -z "$lib" ] && command -v dpkg-query >/dev/null; then
		lib=$(dpkg-query -L libusbmuxd6 2>/dev/null | grep '/libusbmuxd-2\.0\.so\.6\.[0-9.]*$' | head -n1) || true
	fi
	if [ -z "$lib" ]; then
		lib=$(env -u LD_LIBRARY_PATH /sbin/ldconfig -p 2>/dev/null |
			awk '$1 == "libusbmuxd-2.0.so.6" { print $NF; exit }') || true
	fi
	[ -n "$lib" ] && lib=$(readlink -f "$lib")
	if [ -z "$lib" ] || [ ! -f "$lib" ]; then
		echo "note: Debian's libusbmuxd-2.0.so.6 not found; comparisons with it are skipped"
		return 0
	fi
	if cmp -s "$lib" "$(readlink -f "$BUILD_DIR/libusbmuxd-2.0.so.6")"; then
		echo "note: $lib is our own library (installed?); comparisons with Debian's are skipped"
		return 0
	fi
	DEBIAN_LIB_DIR=$E2E_TMP/debian-lib
	mkdir -p "$DEBIAN_LIB_DIR"
	ln -s "$lib" "$DEBIAN_LIB_DIR/libusbmuxd-2.0.so.6"
}

have_debian() { [ -n "$DEBIAN_LIB_DIR" ]; }

# ---- programs and libraries -------------------------------------------------------------------

# Runs a command with the given library directory first in the search path.
with_lib() {
	local dir=$1
	shift
	LD_LIBRARY_PATH=$dir timeout "$E2E_TIMEOUT" "$@"
}
ours() { with_lib "$BUILD_DIR" "$@"; }
debian() { with_lib "$DEBIAN_LIB_DIR" "$@"; }

# The file libusbmuxd-2.0.so.6 resolves to for PROGRAM with LD_LIBRARY_PATH=DIR.
resolved_lib() {
	local dir=$1 prog=$2
	{ LD_LIBRARY_PATH=$dir ldd "$(command -v "$prog")" 2>&1 || true; } |
		awk '$1 == "libusbmuxd-2.0.so.6" { print $3; exit }'
}

# For every program: SKIP the whole script if it is not installed; otherwise assert that
# with LD_LIBRARY_PATH=$BUILD_DIR it loads OUR libusbmuxd-2.0.so.6 (and with the Debian
# directory, Debian's). A wrong resolution fails the script: nothing else would be
# meaningful.
e2e_require_programs() {
	local prog got want
	for prog in "$@"; do
		if ! command -v "$prog" >/dev/null; then
			echo "SKIP $E2E_NAME: $prog is not installed (Debian packages libimobiledevice-utils, libusbmuxd-tools)"
			exit 0
		fi
	done
	for prog in "$@"; do
		got=$(resolved_lib "$BUILD_DIR" "$prog")
		want=$BUILD_DIR/libusbmuxd-2.0.so.6
		if [ "$got" != "$want" ] || [ "$(readlink -f "$got")" != "$(readlink -f "$want")" ]; then
			record_fail "ldd: $prog loads our library" "with LD_LIBRARY_PATH=$BUILD_DIR, libusbmuxd-2.0.so.6 => '${got:-not found}', expected $want"
			e2e_finish
		fi
		record_pass "ldd: $prog loads our library ($want)"
		if have_debian; then
			got=$(resolved_lib "$DEBIAN_LIB_DIR" "$prog")
			if [ "$got" != "$DEBIAN_LIB_DIR/libusbmuxd-2.0.so.6" ]; then
				record_fail "ldd: $prog loads Debian's library" "libusbmuxd-2.0.so.6 => '${got:-not found}'"
				e2e_finish
			fi
		fi
	done
}

# Asserts that a running process has our library mapped (the dynamic loader really
# picked it, not only ldd).
assert_process_uses_ours() {
	local pid=$1 real
	real=$(readlink -f "$BUILD_DIR/libusbmuxd-2.0.so.6")
	if ! grep -qF "$real" "/proc/$pid/maps"; then
		echo "process $pid does not map $real; its libusbmuxd mappings:" >&2
		grep libusbmuxd "/proc/$pid/maps" >&2 || true
		return 1
	fi
	if grep libusbmuxd "/proc/$pid/maps" | grep -vqF "$real"; then
		echo "process $pid maps another libusbmuxd too:" >&2
		grep libusbmuxd "/proc/$pid/maps" >&2
		return 1
	fi
}

# ---- background processes -------------------------------------------------------------------

# Starts "$@" in the background (redirect the call to capture its output); the pid is
# in BG_PID, and the process is killed at the end of the current check (or script).
# "$@" must be a program (bash then execs it in the forked child, so BG_PID is its pid),
# not a shell function.
bg_start() {
	"$@" &
	BG_PID=$!
	BG_PIDS+=("$BG_PID")
	echo "$BG_PID" >>"$E2E_PIDS_FILE"
}

# Kills a background process started with bg_start, reaps it and forgets its pid (so
# that the final clean-up cannot hit a recycled pid).
bg_stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget_pid "$1"
}

forget_pid() {
	sed -i "/^$1\$/d" "$E2E_PIDS_FILE" 2>/dev/null || true
}

bg_stop_all() {
	local pid
	for pid in "${BG_PIDS[@]}"; do
		bg_stop "$pid"
	done
	BG_PIDS=()
}

# Waits until FILE has a line matching the extended regex PATTERN (default 10 s).
wait_for_line() {
	local file=$1 pattern=$2 limit=${3:-10} start=$SECONDS
	until grep -Eq -- "$pattern" "$file" 2>/dev/null; do
		if ((SECONDS - start >= limit)); then
			echo "timed out after ${limit}s waiting for /$pattern/ in $file; it has:" >&2
			sed 's/^/    /' "$file" >&2 || true
			return 1
		fi
		sleep 0.02
	done
}

# Waits until FILE has exactly N lines equal to LINE (default 10 s).
wait_for_count() {
	local file=$1 line=$2 n=$3 limit=${4:-10} start=$SECONDS count
	while :; do
		count=$(grep -cFx -- "$line" "$file" 2>/dev/null) || true
		[ "${count:-0}" -eq "$n" ] && return 0
		if ((SECONDS - start >= limit)); then
			echo "timed out after ${limit}s waiting for $n line(s) '$line' in $file ($count); it has:" >&2
			sed 's/^/    /' "$file" >&2 || true
			return 1
		fi
		sleep 0.02
	done
}

# Waits until process PID has exactly N open sockets (e.g. iproxy back to only its
# listening sockets once every forwarded connection has been torn down).
wait_for_sockets() {
	local pid=$1 n=$2 limit=${3:-10} start=$SECONDS count
	while :; do
		# find fails once the process is gone: the count is then 0, not an abort.
		count=$( (find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null || true) | wc -l)
		[ "$count" -eq "$n" ] && return 0
		if ((SECONDS - start >= limit)); then
			echo "process $pid has $count sockets open, expected $n" >&2
			return 1
		fi
		sleep 0.02
	done
}

# A TCP port that is free on 127.0.0.1 and ::1 right now.
free_port() {
	python3 - <<'EOF'
import socket
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        t.bind(("::1", port))
        t.close()
    except OSError as e:
        if e.errno == 98:  # in use on ::1
            s.close()
            continue
    s.close()
    print(port)
    break
EOF
}

# ---- the test daemon ---------------------------------------------------------------------

# Starts usbmuxd-testd with the given arguments (default: a UNIX socket in the temp dir;
# pass --tcp/--socket to override), waits for READY and exports USBMUXD_SOCKET_ADDRESS.
# One daemon at a time; stops a running one first.
testd_start() {
	if ((BASH_SUBSHELL > 0)); then
		echo "testd_start: call it at the top level of the script, not inside a check" >&2
		return 1
	fi
	testd_kill
	TESTD_SEQ=$((TESTD_SEQ + 1))
	TESTD_LOGDIR=$E2E_TMP/testd.$TESTD_SEQ
	mkdir -p "$TESTD_LOGDIR"
	mkfifo "$TESTD_LOGDIR/in" "$TESTD_LOGDIR/out"
	local args=("$@") listen=no a
	for a in "${args[@]}"; do
		case $a in --socket | --tcp) listen=yes ;; esac
	done
	[ $listen = yes ] || args=(--socket "$TESTD_LOGDIR/usbmuxd.sock" "${args[@]}")
	"$USBMUXD_TESTD" "${args[@]}" <"$TESTD_LOGDIR/in" >"$TESTD_LOGDIR/out" 2>"$TESTD_LOGDIR/stderr" &
	TESTD_PID=$!
	echo "$TESTD_PID" >>"$E2E_PIDS_FILE"
	# Read-write opens of the FIFOs never block.
	exec {TESTD_IN}<>"$TESTD_LOGDIR/in" {TESTD_OUT}<>"$TESTD_LOGDIR/out"
	local line
	if ! IFS= read -r -t 10 -u "$TESTD_OUT" line || [[ $line != "READY "* ]]; then
		echo "usbmuxd-testd did not start (got '${line:-}'):" >&2
		cat "$TESTD_LOGDIR/stderr" >&2
		e2e_abort "test daemon failed to start"
	fi
	TESTD_ADDR=${line#READY }
	export USBMUXD_SOCKET_ADDRESS=$TESTD_ADDR
}

# Sends one control command; the reply lines go to TESTD_REPLY (last: OK…/ERR…).
# Returns 1 on ERR or no reply.
testd_cmd() {
	local line
	TESTD_REPLY=()
	printf '%s\n' "$*" >&"$TESTD_IN"
	while IFS= read -r -t 10 -u "$TESTD_OUT" line; do
		TESTD_REPLY+=("$line")
		case $line in
		OK | "OK "*) return 0 ;;
		ERR*)
			echo "testd: '$*' -> $line" >&2
			return 1
			;;
		esac
	done
	echo "testd: no reply to '$*'" >&2
	return 1
}

# The request log of the daemon (LOG lines), with ClientVersionString removed (ours
# says 2.1.1, Debian's 2.0.2) and client numbers dropped.
testd_log() {
	testd_cmd log
	printf '%s\n' "${TESTD_REPLY[@]}" |
		sed -n -e '/^LOG /!d' -e 's/ ClientVersionString="[^"]*"//' -e 's/^LOG client=[0-9]* /LOG /' -e p
}

testd_kill() {
	if [ -n "$TESTD_PID" ]; then
		printf 'quit\n' >&"$TESTD_IN" 2>/dev/null || true
		local i
		for i in $(seq 50); do
			kill -0 "$TESTD_PID" 2>/dev/null || break
			sleep 0.02
		done
		kill "$TESTD_PID" 2>/dev/null || true
		wait "$TESTD_PID" 2>/dev/null || true
		forget_pid "$TESTD_PID"
		exec {TESTD_IN}>&- {TESTD_OUT}<&-
		TESTD_PID=
	fi
}

# ---- checks -----------------------------------------------------------------------------------

record_pass() {
	E2E_PASSED=$((E2E_PASSED + 1))
	echo "PASS $E2E_NAME: $1"
}

record_fail() {
	E2E_FAILED=$((E2E_FAILED + 1))
	E2E_FAILED_NAMES+=("$1")
	echo "FAIL $E2E_NAME: $1"
	[ -z "${2:-}" ] || echo "     $2"
}

record_skip() {
	E2E_SKIPPED=$((E2E_SKIPPED + 1))
	echo "SKIP $E2E_NAME: $1${2:+ ($2)}"
}

# check DESCRIPTION FUNCTION [ARGS...]: runs the function in a background subshell with
# errexit in force (a function called from `if` would run with errexit disabled), kills
# what it started in the background, and records PASS/FAIL.
check() {
	local desc=$1 start=$EPOCHREALTIME
	shift
	(
		set -e
		BG_PIDS=()
		trap bg_stop_all EXIT
		"$@"
	) &
	local rc=0
	wait $! || rc=$?
	local took
	took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }')
	if [ $rc -eq 0 ]; then
		record_pass "$desc ($took)"
	else
		record_fail "$desc ($took)"
	fi
}

# informational FUNCTION [ARGS...]: runs the function like check, for output that is
# reported but not checked (e.g. how Debian's library fares where it is known to fail);
# its failure only prints a note.
informational() {
	(
		set -e
		BG_PIDS=()
		trap bg_stop_all EXIT
		"$@"
	) &
	wait $! || echo "note: $1 did not complete (not checked)"
}

# Like check, but only when Debian's library is available.
check_debian() {
	if have_debian; then
		check "$@"
	else
		record_skip "$1" "no Debian library"
	fi
}

e2e_finish() {
	echo "$E2E_NAME: $E2E_PASSED passed, $E2E_FAILED failed, $E2E_SKIPPED skipped"
	if [ "$E2E_FAILED" -ne 0 ]; then
		local n
		for n in "${E2E_FAILED_NAMES[@]}"; do echo "  failed: $n"; done
		echo "FAIL $E2E_NAME"
		exit 1
	fi
	echo "PASS $E2E_NAME"
	exit 0
}

# ---- assertions ---------------------------------------------------------------------------------

# expect_eq WHAT GOT WANT: exact comparison, a diff on mismatch.
expect_eq() {
	if [ "$2" != "$3" ]; then
		echo "$1: mismatch" >&2
		diff -u <(printf '%s\n' "$3") <(printf '%s\n' "$2") | sed '1,2d; s/^/    /' >&2 || true
		echo "    (- expected, + got)" >&2
		return 1
	fi
}

# expect_status WHAT GOT WANT
expect_status() {
	if [ "$2" -ne "$3" ]; then
		echo "$1: exit status $2, expected $3" >&2
		return 1
	fi
}

# expect_line FILE LINE: FILE has exactly this line.
expect_line() {
	if ! grep -qFx -- "$2" "$1"; then
		echo "missing line '$2' in $1, which has:" >&2
		sed 's/^/    /' "$1" >&2
		return 1
	fi
}

# run_capture NAME CMD...: runs CMD, stdout to $E2E_TMP/NAME.out, stderr to NAME.err,
# status in NAME.rc; never fails itself.
run_capture() {
	local name=$1
	shift
	local rc=0
	"$@" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" </dev/null || rc=$?
	echo "$rc" >"$E2E_TMP/$name.rc"
	return 0
}

# same_as_debian NAME CMD...: runs CMD with our library and with Debian's; stdout,
# stderr and exit status must be identical. The results stay in NAME.ours.* and
# NAME.debian.*. Without Debian's library only ours runs.
same_as_debian() {
	local name=$1
	shift
	run_capture "$name.ours" ours "$@"
	have_debian || return 0
	run_capture "$name.debian" debian "$@"
	local what ok=0
	for what in out err rc; do
		if ! cmp -s "$E2E_TMP/$name.ours.$what" "$E2E_TMP/$name.debian.$what"; then
			echo "'$*': $what differs between our library (+) and Debian's (-):" >&2
			diff -u "$E2E_TMP/$name.debian.$what" "$E2E_TMP/$name.ours.$what" | sed '1,2d; s/^/    /' >&2 || true
			ok=1
		fi
	done
	return $ok
}

# ---- iproxy and inetcat ------------------------------------------------------------------------

# Whether ::1 is usable. iproxy 2.0.2 without -s listens on 127.0.0.1 AND [::1] and
# cannot start if either fails (tools.md §1.4); without IPv6 the scripts pass
# `-s 127.0.0.1` and iproxy has one listening socket instead of two.
# (E2E_IPV6=no forces that mode.)
HAVE_IPV6=${E2E_IPV6:-}
if [ -z "$HAVE_IPV6" ]; then
	HAVE_IPV6=$(python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0)); print("yes")' 2>/dev/null) || HAVE_IPV6=no
fi
if [ "$HAVE_IPV6" = yes ]; then
	IPROXY_LISTENERS=2
	IPROXY_SOURCE=()
else
	IPROXY_LISTENERS=1
	IPROXY_SOURCE=(-s 127.0.0.1)
fi

IPROXY_PID=
IPROXY_PORT=
IPROXY_NAME=
# iproxy_start LIBDIR NAME ARGS...: starts iproxy with the library of LIBDIR (stdout made
# line-buffered with stdbuf), transcript in NAME.out / NAME.err, and waits until it
# listens. Sets IPROXY_PID. The port is replaced by PORT in the arguments.
iproxy_start() {
	local dir=$1 name=$2
	shift 2
	IPROXY_PORT=$(free_port)
	IPROXY_NAME=$name
	local args=("${IPROXY_SOURCE[@]}" "${@//PORT/$IPROXY_PORT}")
	bg_start env LD_LIBRARY_PATH="$dir" stdbuf -oL iproxy "${args[@]}" \
		>"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" </dev/null
	IPROXY_PID=$BG_PID
	wait_for_line "$E2E_TMP/$name.out" '^waiting for connection$'
}

# Waits until iproxy has torn down every forwarded connection (only its listening
# sockets left): needed between clients because iproxy 2.0.2's forwarding loop passes
# device_fd + 1 as nfds to select() and would never see a client socket numbered higher
# than the device socket (tools.md §1.6) — with either library.
iproxy_idle() { wait_for_sockets "$IPROXY_PID" "$IPROXY_LISTENERS"; }

iproxy_alive() {
	if ! kill -0 "$IPROXY_PID" 2>/dev/null; then
		echo "iproxy exited; its output:" >&2
		cat "$E2E_TMP/$IPROXY_NAME.out" "$E2E_TMP/$IPROXY_NAME.err" >&2
		return 1
	fi
}

# inetcat_feed LIBDIR NAME INFILE NBYTES [WINDOW] -- INETCAT_ARGS...: runs inetcat with the
# library of LIBDIR, stdin fed from INFILE and kept open until NBYTES arrived on stdout
# (NAME.out; stderr NAME.err, status NAME.rc).
inetcat_feed() {
	local dir=$1 name=$2 in=$3 n=$4 window=
	shift 4
	if [ "$1" != -- ]; then
		window=$1
		shift
	fi
	shift
	local rc=0
	: >"$E2E_TMP/$name.out"
	tcp_client feed "$in" "$E2E_TMP/$name.out" "$n" $window |
		with_lib "$dir" inetcat "$@" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" || rc=$?
	echo "$rc" >"$E2E_TMP/$name.rc"
}

# ---- the TCP client and helper (python3, client.py) ----------------------------------------------


# tcp_client MODE ARGS...: see the modes in client.py.
tcp_client() { timeout 60 python3 "$E2E_DIR/client.py" "$@"; }
# The same in the background (bg_start; pid in BG_PID). Not `bg_start tcp_client`: a
# function would run in a subshell, whose pid is not the one of the program.
tcp_client_bg() { bg_start timeout 60 python3 "$E2E_DIR/client.py" "$@"; }
