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
#   ctl_start / ctl_cmd / ctl_stop       # the same for any helper program controlled on
#                                        # stdin/stdout (usb/simd.sh: usbmux-simd)
#   check "description" function args... # runs the function in a subshell with set -e:
#                                        # PASS/FAIL line; continues with the next check
#   ours CMD... / debian CMD...          # run CMD with our / Debian's library
#   same_as_debian NAME CMD...           # run with both; stdout, stderr, status equal
#   iproxy_start / inetcat_feed / tcp_client  # drive iproxy and inetcat (see below)
#   poll_until SECONDS CMD...            # wait until CMD succeeds (wait_for_line, ... use it)
#   lockdownd_values SERIAL CHIP UDID    # what the stand-in lockdownds answer (ideviceinfo -s)
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
# PATH, through links in a private directory, E2E_DEBIAN_BIN: after `make install`,
# /usr/local/bin holds our iproxy and inetcat under the same names, and they come before
# /usr/bin.
E2E_DEBIAN_BIN=
e2e_debian_programs_first() {
	command -v dpkg-query >/dev/null || return 0
	local dir=$E2E_TMP/debian-bin f
	E2E_DEBIAN_BIN=$dir
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

# poll_until SECONDS CMD...: runs CMD (a program or a function of this shell) every
# 20 ms until it succeeds (returns 0) or SECONDS have passed (returns 1). A condition
# function can leave what it saw in POLL_GOT for the caller's message.
POLL_GOT=
poll_until() {
	local poll_limit_=$1 poll_start_=$SECONDS
	shift
	until "$@"; do
		((SECONDS - poll_start_ >= poll_limit_)) && return 1
		sleep 0.02
	done
}

# Waits until FILE has a line matching the extended regex PATTERN (default 10 s).
wait_for_line() {
	local file=$1 pattern=$2 limit=${3:-10}
	poll_until "$limit" grep -Eq -- "$pattern" "$file" 2>/dev/null && return 0
	echo "timed out after ${limit}s waiting for /$pattern/ in $file; it has:" >&2
	sed 's/^/    /' "$file" >&2 || true
	return 1
}

# Whether FILE has exactly N lines equal to LINE (POLL_GOT: how many).
line_count_is() {
	POLL_GOT=$(grep -cFx -- "$2" "$1" 2>/dev/null) || true
	[ "${POLL_GOT:-0}" -eq "$3" ]
}

# Waits until FILE has exactly N lines equal to LINE (default 10 s).
wait_for_count() {
	local file=$1 line=$2 n=$3 limit=${4:-10}
	poll_until "$limit" line_count_is "$file" "$line" "$n" && return 0
	echo "timed out after ${limit}s waiting for $n line(s) '$line' in $file ($POLL_GOT); it has:" >&2
	sed 's/^/    /' "$file" >&2 || true
	return 1
}

# Whether process PID has exactly N open sockets (POLL_GOT: how many).
socket_count_is() {
	# find fails once the process is gone: the count is then 0, not an abort.
	POLL_GOT=$( (find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null || true) | wc -l)
	[ "$POLL_GOT" -eq "$2" ]
}

# Waits until process PID has exactly N open sockets (default 10 s; e.g. iproxy back to
# only its listening sockets once every forwarded connection has been torn down).
wait_for_sockets() {
	local pid=$1 n=$2 limit=${3:-10}
	poll_until "$limit" socket_count_is "$pid" "$n" && return 0
	echo "process $pid has $POLL_GOT sockets open, expected $n" >&2
	return 1
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

# ---- helper programs controlled on stdin / stdout ----------------------------------------------
# The test daemon and usbmux-simd print "READY <address>" once they serve, then read one
# control command a line on stdin and answer on stdout: data lines, then "OK …" or "ERR …".

CTL_PID=
CTL_IN=
CTL_OUT=
CTL_READY=
# ctl_start WHAT DIR CMD...: (top level only) runs the program CMD with stdin and stdout
# on FIFOs in DIR (stderr in DIR/stderr) and waits for its READY line. Sets CTL_PID,
# CTL_IN / CTL_OUT (descriptors for commands and replies) and CTL_READY (the text after
# READY). Returns 1, after printing its stderr, if it does not become ready in 10 s.
ctl_start() {
	local what=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	mkfifo "$dir/in" "$dir/out"
	"$@" <"$dir/in" >"$dir/out" 2>"$dir/stderr" &
	CTL_PID=$!
	echo "$CTL_PID" >>"$E2E_PIDS_FILE"
	# Read-write opens of the FIFOs never block.
	exec {CTL_IN}<>"$dir/in" {CTL_OUT}<>"$dir/out"
	local line
	if ! IFS= read -r -t 10 -u "$CTL_OUT" line || [[ $line != "READY "* ]]; then
		echo "$what did not start (got '${line:-}'):" >&2
		cat "$dir/stderr" >&2
		return 1
	fi
	CTL_READY=${line#READY }
}

# ctl_cmd WHAT IN OUT REPLY COMMAND...: sends one control command on descriptor IN and
# reads the reply lines from OUT into the array named REPLY (last: OK…/ERR…). Returns 1
# on ERR or no reply within 10 s (WHAT names the program in the message).
ctl_cmd() {
	local what=$1 in=$2 out=$3 line
	local -n ctl_reply_=$4
	shift 4
	ctl_reply_=()
	printf '%s\n' "$*" >&"$in"
	while IFS= read -r -t 10 -u "$out" line; do
		ctl_reply_+=("$line")
		case $line in
		OK | "OK "*) return 0 ;;
		ERR*)
			echo "$what: '$*' -> $line" >&2
			return 1
			;;
		esac
	done
	echo "$what: no reply to '$*'" >&2
	return 1
}

# ctl_stop PID IN OUT TRIES: sends quit, gives the program TRIES x 20 ms to exit, then
# kills it; reaps it, forgets its pid and closes both descriptors.
ctl_stop() {
	local pid=$1 in=$2 out=$3 tries=$4 i
	printf 'quit\n' >&"$in" 2>/dev/null || true
	for i in $(seq "$tries"); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.02
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
	exec {in}>&- {out}<&-
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
	local args=("$@") listen=no a rc=0
	for a in "${args[@]}"; do
		case $a in --socket | --tcp) listen=yes ;; esac
	done
	[ $listen = yes ] || args=(--socket "$TESTD_LOGDIR/usbmuxd.sock" "${args[@]}")
	ctl_start usbmuxd-testd "$TESTD_LOGDIR" "$USBMUXD_TESTD" "${args[@]}" || rc=$?
	TESTD_PID=$CTL_PID TESTD_IN=$CTL_IN TESTD_OUT=$CTL_OUT
	[ $rc -eq 0 ] || e2e_abort "test daemon failed to start"
	TESTD_ADDR=$CTL_READY
	export USBMUXD_SOCKET_ADDRESS=$TESTD_ADDR
}

# Sends one control command; the reply lines go to TESTD_REPLY (last: OK…/ERR…).
# Returns 1 on ERR or no reply.
testd_cmd() { ctl_cmd testd "$TESTD_IN" "$TESTD_OUT" TESTD_REPLY "$@"; }

# The request log of the daemon (LOG lines), with ClientVersionString removed (ours
# says 2.1.1, Debian's 2.0.2) and client numbers dropped.
testd_log() {
	testd_cmd log
	printf '%s\n' "${TESTD_REPLY[@]}" |
		sed -n -e '/^LOG /!d' -e 's/ ClientVersionString="[^"]*"//' -e 's/^LOG client=[0-9]* /LOG /' -e p
}

testd_kill() {
	if [ -n "$TESTD_PID" ]; then
		ctl_stop "$TESTD_PID" "$TESTD_IN" "$TESTD_OUT" 50
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
run_capture() { run_capture_from /dev/null "$@"; }

# run_capture_from INFILE NAME CMD...: run_capture with stdin from INFILE.
run_capture_from() {
	local in=$1 name=$2
	shift 2
	local rc=0
	"$@" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" <"$in" || rc=$?
	echo "$rc" >"$E2E_TMP/$name.rc"
	return 0
}

# same_files WHAT DEBIAN_FILE OUR_FILE: whether the two results are identical; if not,
# prints "WHAT differs between our library (+) and Debian's (-):" and the diff.
same_files() {
	cmp -s "$3" "$2" && return 0
	echo "$1 differs between our library (+) and Debian's (-):" >&2
	diff -u "$2" "$3" | sed '1,2d; s/^/    /' >&2 || true
	return 1
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
		same_files "'$*': $what" "$E2E_TMP/$name.debian.$what" "$E2E_TMP/$name.ours.$what" || ok=1
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
# The echo window (bytes) that tcp_client's echo modes keep to when the iproxy under test
# is 2.0.2, empty for ours: see echo_window in client.py.
IPROXY_ECHO_WINDOW=
IPROXY_202_ECHO_WINDOW=131072
# iproxy_spawn NAME CMD ARGS...: starts the iproxy command in the array named CMD (the
# program and what runs it) with IPROXY_SOURCE and ARGS, a free port in place of PORT in
# ARGS, transcript in NAME.out / NAME.err, and waits until it listens. Sets IPROXY_PID,
# IPROXY_PORT and IPROXY_NAME (for iproxy_idle, iproxy_alive); IPROXY_ECHO_WINDOW is
# reset (the caller sets it for 2.0.2).
iproxy_spawn() {
	local name=$1
	local -n iproxy_cmd_=$2
	shift 2
	IPROXY_PORT=$(free_port)
	IPROXY_NAME=$name
	IPROXY_ECHO_WINDOW=
	local args=("${IPROXY_SOURCE[@]}" "${@//PORT/$IPROXY_PORT}")
	bg_start "${iproxy_cmd_[@]}" "${args[@]}" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err" </dev/null
	IPROXY_PID=$BG_PID
	wait_for_line "$E2E_TMP/$name.out" '^waiting for connection$'
}

# iproxy_start LIBDIR NAME ARGS...: iproxy_spawn of the installed iproxy (Debian's 2.0.2)
# with the library of LIBDIR (stdout made line-buffered with stdbuf).
iproxy_start() {
	local dir=$1 name=$2
	shift 2
	local cmd=(env LD_LIBRARY_PATH="$dir" stdbuf -oL iproxy)
	iproxy_spawn "$name" cmd "$@"
	IPROXY_ECHO_WINDOW=$IPROXY_202_ECHO_WINDOW
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

# feed_run OUT ERR CMD INFILE NBYTES [WINDOW] -- ARGS...: runs the command in the array
# named CMD with ARGS, stdout to OUT, stderr to ERR, stdin fed from INFILE and kept open
# until NBYTES arrived in OUT (client.py feed; WINDOW bounds the bytes in flight: 2.0.2
# writes to the socket once and drops what does not fit). Returns the pipeline's status.
feed_run() {
	local out=$1 err=$2 in=$4 n=$5 window=
	local -n feed_cmd_=$3
	shift 5
	if [ "$1" != -- ]; then
		window=$1
		shift
	fi
	shift
	: >"$out"
	tcp_client feed "$in" "$out" "$n" $window | "${feed_cmd_[@]}" "$@" >"$out" 2>"$err"
}

# inetcat_feed LIBDIR NAME INFILE NBYTES [WINDOW] -- INETCAT_ARGS...: feed_run of inetcat
# with the library of LIBDIR (NAME.out; stderr NAME.err, status NAME.rc).
inetcat_feed() {
	local dir=$1 name=$2 rc=0
	shift 2
	local cmd=(with_lib "$dir" inetcat)
	feed_run "$E2E_TMP/$name.out" "$E2E_TMP/$name.err" cmd "$@" || rc=$?
	echo "$rc" >"$E2E_TMP/$name.rc"
}

# ---- the TCP client and helper (python3, client.py) ----------------------------------------------


# tcp_client MODE ARGS...: see the modes in client.py (the echo modes keep to
# IPROXY_ECHO_WINDOW, passed as E2E_ECHO_WINDOW).
tcp_client() { E2E_ECHO_WINDOW=$IPROXY_ECHO_WINDOW timeout 60 python3 "$E2E_DIR/client.py" "$@"; }
# The same in the background (bg_start; pid in BG_PID). Not `bg_start tcp_client`: a
# function would run in a subshell, whose pid is not the one of the program.
tcp_client_bg() { E2E_ECHO_WINDOW=$IPROXY_ECHO_WINDOW bg_start timeout 60 python3 "$E2E_DIR/client.py" "$@"; }

# echo_server_start PORTFILE: starts client.py's TCP echo server on 127.0.0.1 (a network
# device's service) in the background; its port in ECHO_PORT (and PORTFILE).
ECHO_PORT=
echo_server_start() {
	tcp_client_bg echo-server "$1"
	if ! poll_until 10 test -s "$1"; then
		echo "the echo server did not write its port to $1" >&2
		return 1
	fi
	ECHO_PORT=$(cat "$1")
}

# ---- the stand-in devices ------------------------------------------------------------------------

# lockdownd_values SERIAL CHIPID UDID: what the stand-in lockdownd that the test daemon
# and usbmux-simd serve (sim/src/services/lockdownd.rs) answers to `ideviceinfo -s` for
# a device with that SerialNumber, UniqueChipID and UniqueDeviceID.
lockdownd_values() {
	cat <<EOF
ActivationState: Activated
BluetoothAddress: a4:d1:8c:00:00:01
BuildVersion: 19H370
CPUArchitecture: arm64e
DeviceClass: iPhone
DeviceColor: 1
DeviceName: Test iPhone
HardwareModel: N104AP
HardwarePlatform: t8030
HostAttached: true
PasswordProtected: false
ProductName: iPhone OS
ProductType: iPhone12,1
ProductVersion: 15.8
ProtocolVersion: 2
SerialNumber: $1
TimeZone: Europe/Berlin
UniqueChipID: $2
UniqueDeviceID: $3
WiFiAddress: a4:d1:8c:00:00:02
EOF
}
