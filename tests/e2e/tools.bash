# shellcheck shell=bash
# Helpers of the e2e scripts for OUR iproxy and inetcat (tools/), sourced after lib.sh.
# (Named .bash so that `make e2e`, which runs tests/e2e/*.sh, does not run it.)
#
# Every case runs with our program and, when Debian's libusbmuxd-tools is installed,
# with Debian's (2.0.2, on Debian's own libusbmuxd): the normalised transcripts are
# compared and the outcome is listed at the end, "same" or "differs". A case declared
# `same` fails if the transcripts differ; one declared `differs` is a documented
# difference (a bug of 2.0.2 that ours fixes, or a 2.1.1 behaviour) and only reported.
#
#   tools_init                      paths of both programs, summary table
#   tool_cmd WHO NAME               TOOL_CMD=(…) runs NAME (iproxy|inetcat) of WHO (ours|debian)
#   tools_iproxy_start WHO NAME ARGS...   like lib.sh's iproxy_start, for either program
#   normalise FILE                  the transcript made comparable (see below)
#   compare_tools CASE same|differs WHY   compare CASE.ours.* with CASE.debian.*
#   tool_arg_case NAME CASE same|differs WHY ARGS...   an argument-error case of both
#   tool_expect_run NAME CASE STATUS STDOUT STDERR     our result of such a case
#   run_tool WHO NAME CASE ARGS...  run one to completion: CASE.WHO.{out,err,rc}
#   tools_summary                   print the comparison table

OUR_IPROXY=
OUR_INETCAT=
TOOLS_HELPER=
DEBIAN_IPROXY=
DEBIAN_INETCAT=
TOOLS_SAME=()
TOOLS_DIFFERENT=()

tools_init() {
	local dir=${TARGET_DIR:-$E2E_ROOT/target/release}
	OUR_IPROXY=$dir/iproxy
	OUR_INETCAT=$dir/inetcat
	TOOLS_HELPER=$dir/usbmuxd-tools-test
	local f
	for f in "$OUR_IPROXY" "$OUR_INETCAT" "$TOOLS_HELPER"; do
		[ -x "$f" ] || e2e_abort "$f missing (run make)"
	done
	# Debian's packaged programs, as lib.sh's e2e_init found them.
	if [ -n "$E2E_DEBIAN_BIN" ]; then
		DEBIAN_IPROXY=$E2E_DEBIAN_BIN/iproxy
		DEBIAN_INETCAT=$E2E_DEBIAN_BIN/inetcat
	fi
	if ! have_debian_tools; then
		echo "note: Debian's libusbmuxd-tools (with its libusbmuxd) not found; only our tools run"
	fi
	command -v stdbuf >/dev/null || e2e_abort "stdbuf (coreutils) is required"
}

have_debian_tools() { [ -n "$DEBIAN_IPROXY" ] && [ -x "$DEBIAN_IPROXY" ] && have_debian; }

# TOOL_CMD=(...) for WHO (ours|debian) and NAME (iproxy|inetcat). Debian's programs run
# on Debian's library (lib.sh's private directory) or, when DEBIAN_TOOLS_LIB names one,
# on the library of that directory; stdout line-buffered with stdbuf.
DEBIAN_TOOLS_LIB=
tool_cmd() {
	local who=$1 name=$2
	if [ "$who" = ours ]; then
		if [ "$name" = iproxy ]; then TOOL_CMD=("$OUR_IPROXY"); else TOOL_CMD=("$OUR_INETCAT"); fi
	else
		local prog=$DEBIAN_IPROXY
		[ "$name" = inetcat ] && prog=$DEBIAN_INETCAT
		TOOL_CMD=(env LD_LIBRARY_PATH="${DEBIAN_TOOLS_LIB:-$DEBIAN_LIB_DIR}" stdbuf -oL "$prog")
	fi
}

# The line (an extended regex) WHO's tool prints for a refused device port: 2.0.2 prints
# errno's text, which its library may leave at 0 ("Success"); 2.1.1 and ours the cause.
refused_line_re() {
	if [ "$1" = debian ]; then
		echo 'Error connecting to device: (Success|Connection refused)'
	else
		echo 'Error connecting to device: Connection refused'
	fi
}

# The programs to run a case with.
tools_whos() {
	if have_debian_tools; then echo ours debian; else echo ours; fi
}

# tools_iproxy_start WHO NAME ARGS...: starts that iproxy (PORT in ARGS replaced by a
# free port), transcript in NAME.out / NAME.err, waits until it listens. Sets IPROXY_PID,
# IPROXY_PORT, IPROXY_NAME (so lib.sh's iproxy_idle / iproxy_alive work).
tools_iproxy_start() {
	local who=$1 name=$2
	shift 2
	tool_cmd "$who" iproxy
	# Without IPv6, 2.0.2 cannot listen on its default ::1: lib.sh's IPROXY_SOURCE
	# (-s 127.0.0.1) is given to both programs then (iproxy_spawn does).
	iproxy_spawn "$name" TOOL_CMD "$@"
	if [ "$who" = debian ]; then IPROXY_ECHO_WINDOW=$IPROXY_202_ECHO_WINDOW; fi
}

# Makes a transcript comparable: the program path as invoked becomes the program name,
# port numbers of this run become PORT/PORT2/ECHOPORT, descriptor numbers N, 2.0.2's
# "connecion" is spelled "connection", and lines are sorted (Debian's iproxy prints from
# one thread per client, so the order of its lines varies).
NORMALISE_SED=()
normalise() {
	local f=$1
	sed -e "s#$OUR_IPROXY#iproxy#g; s#$OUR_INETCAT#inetcat#g" \
		${DEBIAN_IPROXY:+-e "s#$DEBIAN_IPROXY#iproxy#g"} ${DEBIAN_INETCAT:+-e "s#$DEBIAN_INETCAT#inetcat#g"} \
		-e 's/fd = [0-9]*/fd = N/' -e 's/Requesting connecion/Requesting connection/' \
		"${NORMALISE_SED[@]}" "$f" | LC_ALL=C sort
}

# compare_tools CASE same|differs WHY: compares CASE.ours.{out,err,rc} with
# CASE.debian.* (files that exist for both). With `same`, a difference fails the
# calling check; with `differs`, the comparison is only reported.
compare_tools() {
	local name=$1 expect=$2 why=$3 what differ=0
	have_debian_tools || return 0
	for what in out err rc; do
		[ -f "$E2E_TMP/$name.ours.$what" ] && [ -f "$E2E_TMP/$name.debian.$what" ] || continue
		if ! cmp -s <(normalise "$E2E_TMP/$name.ours.$what") <(normalise "$E2E_TMP/$name.debian.$what"); then
			differ=1
			if [ "$expect" = same ]; then
				echo "$name: $what differs between ours (+) and Debian's (-):" >&2
				diff -u <(normalise "$E2E_TMP/$name.debian.$what") <(normalise "$E2E_TMP/$name.ours.$what") |
					sed '1,2d; s/^/    /' >&2 || true
			fi
		fi
	done
	if [ $differ = 0 ]; then
		echo "$name" >>"$E2E_TMP/summary.same"
		[ "$expect" = same ] || echo "note: $name: expected a difference ($why), but the transcripts are equal"
		return 0
	fi
	echo "$name — $why" >>"$E2E_TMP/summary.differs"
	[ "$expect" = differs ]
}

tools_summary() {
	have_debian_tools || return 0
	echo "== compared with Debian's $(basename "$DEBIAN_IPROXY")/$(basename "$DEBIAN_INETCAT") (libusbmuxd-tools $(dpkg-query -W -f '${Version}' libusbmuxd-tools 2>/dev/null))"
	echo "same transcript (stdout, stderr, exit status):"
	sed 's/^/    /' "$E2E_TMP/summary.same" 2>/dev/null || true
	echo "different (documented):"
	sed 's/^/    /' "$E2E_TMP/summary.differs" 2>/dev/null || true
}

# tool_arg_case NAME CASE same|differs WHY ARGS...: runs both programs NAME (iproxy|
# inetcat) with ARGS and no daemon (they exit before any connection) and compares the
# transcripts. The usage text is our own wording: only its first line is kept.
tool_arg_case() {
	local name=$1 case=$2 expect=$3 why=$4 who
	shift 4
	for who in $(tools_whos); do
		USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/none run_tool "$who" "$name" "$case" "$@"
		sed -i '/^Usage: /,$ { /^Usage: /!d }' "$E2E_TMP/$case.$who.out" "$E2E_TMP/$case.$who.err"
	done
	compare_tools "$case" "$expect" "$why"
}

# tool_expect_run NAME CASE STATUS STDOUT STDERR: our program NAME's result of CASE: the
# exit status, the first line of stdout and the first two of stderr (there with the
# program path as invoked replaced by NAME).
tool_expect_run() {
	local name=$1 case=$2 path=$OUR_IPROXY
	[ "$name" = inetcat ] && path=$OUR_INETCAT
	expect_status "$case" "$(cat "$E2E_TMP/$case.ours.rc")" "$3"
	expect_eq "$case stdout" "$(head -n1 "$E2E_TMP/$case.ours.out")" "$4"
	expect_eq "$case stderr" "$(sed "s#$path#$name#g" "$E2E_TMP/$case.ours.err" | head -n2)" "$5"
}

# run_tool WHO NAME CASE ARGS...: runs the program to completion (stdin from /dev/null,
# at most E2E_TIMEOUT seconds), CASE.WHO.{out,err,rc}.
run_tool() { run_tool_from /dev/null "$@"; }

# run_tool_from INFILE WHO NAME CASE ARGS...: run_tool with stdin from INFILE.
run_tool_from() {
	local in=$1 who=$2 name=$3 case=$4
	shift 4
	tool_cmd "$who" "$name"
	run_capture_from "$in" "$case.$who" timeout "$E2E_TIMEOUT" "${TOOL_CMD[@]}" "$@"
}

# digest_out CASE WHO: CASE.WHO.out moved to CASE.WHO.raw, its digest in its place.
digest_out() {
	mv "$E2E_TMP/$1.$2.out" "$E2E_TMP/$1.$2.raw"
	digest "$E2E_TMP/$1.$2.raw" >"$E2E_TMP/$1.$2.out"
}

# Lines of iproxy's transcript (NAME.out/err) into CASE.WHO.out/err for compare_tools,
# with the port of this run replaced by PORT.
keep_transcript() {
	local name=$1 case=$2 who=$3 f
	for f in out err; do
		sed -e "s/\b$IPROXY_PORT\b/PORT/g" "$E2E_TMP/$name.$f" >"$E2E_TMP/$case.$who.$f"
	done
}

# tools_idle [SECONDS]: lib.sh's iproxy_idle with a longer default limit (20 s: thousands
# of connections may be closing).
tools_idle() { wait_for_sockets "$IPROXY_PID" "$IPROXY_LISTENERS" "${1:-20}"; }

# tools_inetcat_feed WHO CASE INFILE NBYTES [WINDOW] -- ARGS...: runs that inetcat, its
# stdin fed from INFILE and kept open until NBYTES came out on stdout (client.py feed;
# WINDOW bounds the bytes in flight: 2.0.2 writes to the socket once and drops what does
# not fit). CASE.WHO.out holds the size and SHA-256 of the output, .err and .rc the rest.
tools_inetcat_feed() {
	local who=$1 case=$2 rc=0
	shift 2
	tool_cmd "$who" inetcat
	local cmd=(timeout "$E2E_TIMEOUT" "${TOOL_CMD[@]}")
	feed_run "$E2E_TMP/$case.$who.raw" "$E2E_TMP/$case.$who.err" cmd "$@" || rc=$?
	echo "$rc" >"$E2E_TMP/$case.$who.rc"
	digest "$E2E_TMP/$case.$who.raw" >"$E2E_TMP/$case.$who.out"
}

# "<size> <sha256>" of a file.
digest() { echo "$(stat -c %s "$1") $(sha256sum <"$1" | cut -d' ' -f1)"; }
