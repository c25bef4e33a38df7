#!/usr/bin/env bash
# Side-by-side benchmark of iproxy: ours (target/release/iproxy) against Debian's
# (libusbmuxd-tools, on Debian's own libusbmuxd), in one run, through the same daemon.
#
# usage: bench/tools.sh [MIB] [ROUNDS]        (after `make`; `make bench-tools`)
#
# The daemon is `usbmuxd-tools-test daemon`, an event-driven stand-in for usbmuxd (one
# USB device; port 19 a source, 9 a sink, 7 an echo), so that neither iproxy waits for
# it; the load clients are the same program (`download`, `upload`, `setup`, `hold`).
# Figures, each the median over ROUNDS rounds in which the two programs alternate:
#   throughput  MB/s of payload, MIB MiB per case, from the device (download: source →
#               iproxy → client) and to it (upload: client → iproxy → sink), with 1 and
#               with 64 connections sharing the MIB;
#   CPU s/GiB   user + system CPU time of the iproxy process (all its threads, from
#               /proc/PID/stat) per GiB moved;
#   setup       connections per second, HOLD_N connections opened one after the other
#               (connect, one-byte echo round trip, kept open; each costs iproxy a
#               device lookup and a Connect request to the daemon), CPU ms per
#               connection; ours also with 8 clients at a time, closing each connection
#               after its round trip (SETUP_N connections);
#   reference   the same transfers through `usbmuxd-tools-test relay`, the simplest proxy
#               (blocking read/write, a thread per direction, no splice): what a relay in
#               user space costs at the least on this machine, against which neither
#               iproxy can do much better per byte (REF=0: skipped).
#   memory      VmRSS of iproxy while those HOLD_N connections are open, and its threads.
#   at RATE     downloads again, RATE_MIB MiB, through a second daemon whose source is paced
#               to RATE MB/s in 16 KiB writes (RATE=40: a device on USB 2.0), so that CPU
#               per GiB is that of a proxy waiting for a real device (RATE=0: skipped).
# With two CPUs or more (and taskset), each iproxy runs on CPU 1 and the daemon and the
# load clients on CPU 0 (PIN=0 turns that off): unpinned, the figures of a 2-CPU machine
# depend on which processes the scheduler happens to put together.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
ROUNDS=${2:-5}
SETUP_N=${SETUP_N:-2000}
HOLD_N=${HOLD_N:-1000}
# 2.0.2 aborts beyond descriptor 1023 (select's FD_SETSIZE): about 500 connections.
CMP_N=${CMP_N:-500}
RATE=${RATE:-40}
RATE_MIB=${RATE_MIB:-128}
REF=${REF:-1}
RELEASE=${TARGET_DIR:-$PWD/target/release}
OURS=$RELEASE/iproxy
HELPER=$RELEASE/usbmuxd-tools-test
DEBIAN=${DEBIAN_IPROXY:-$(dpkg-query -L libusbmuxd-tools 2>/dev/null | grep '/bin/iproxy$' | head -n1 || true)}
DEBIAN_LIB=$(dpkg-query -L libusbmuxd6 2>/dev/null | grep '/libusbmuxd-2\.0\.so\.6\.[0-9.]*$' | head -n1 || true)
[ -x "$OURS" ] && [ -x "$HELPER" ] || { echo "build first (make)"; exit 2; }
[ -n "$DEBIAN" ] && [ -x "$DEBIAN" ] || { echo "Debian's iproxy (libusbmuxd-tools) is not installed"; exit 2; }
[ -n "$DEBIAN_LIB" ] || { echo "Debian's libusbmuxd6 is not installed"; exit 2; }
HZ=$(getconf CLK_TCK)
PIN=${PIN:-1}
LOAD=() PROXY=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    LOAD=(taskset -c 0) PROXY=(taskset -c 1)
else
    PIN=0
fi

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_WORK:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# Debian's iproxy on Debian's library, whatever is installed under /usr/local.
mkdir "$work/debian-lib"
ln -s "$DEBIAN_LIB" "$work/debian-lib/libusbmuxd-2.0.so.6"

"${LOAD[@]}" "$HELPER" daemon --socket "$work/usbmuxd" >"$work/daemon.out" 2>"$work/daemon.err" &
pids+=($!)
if [ "$RATE" != 0 ]; then
    "${LOAD[@]}" "$HELPER" daemon --socket "$work/usbmuxd-paced" --rate "$RATE" >"$work/daemon-paced.out" 2>"$work/daemon-paced.err" &
    pids+=($!)
fi
for _ in $(seq 200); do grep -q READY "$work/daemon.out" 2>/dev/null && break; sleep 0.02; done
for _ in $(seq 200); do [ "$RATE" = 0 ] || grep -q READY "$work/daemon-paced.out" 2>/dev/null && break; sleep 0.02; done
export USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CMD...: an iproxy listening on 127.0.0.1 for ports 19, 9 and 7.
declare -A PID PORT_SRC PORT_SINK PORT_ECHO
start() {
    local name=$1
    shift
    local a b c
    a=$(free_port) b=$(free_port) c=$(free_port)
    "$@" -s 127.0.0.1 "$a:19" "$b:9" "$c:7" >/dev/null 2>"$work/$name.err" </dev/null &
    PID[$name]=$!
    pids+=($!)
    PORT_SRC[$name]=$a PORT_SINK[$name]=$b PORT_ECHO[$name]=$c
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $c)).close()" 2>/dev/null && return 0
        sleep 0.02
    done
    echo "$name did not start: $(cat "$work/$name.err")" >&2
    exit 1
}
start ours "${PROXY[@]}" "$OURS"
start debian "${PROXY[@]}" env LD_LIBRARY_PATH="$work/debian-lib" "$DEBIAN"
if [ "$REF" != 0 ]; then
    a=$(free_port) b=$(free_port)
    "${PROXY[@]}" "$HELPER" relay "$a" 19 >"$work/relay_src.out" 2>&1 </dev/null &
    PID[relay_src]=$! && pids+=($!)
    "${PROXY[@]}" "$HELPER" relay "$b" 9 >"$work/relay_sink.out" 2>&1 </dev/null &
    PID[relay_sink]=$! && pids+=($!)
    PORT_SRC[relay]=$a PORT_SINK[relay]=$b
    for _ in $(seq 200); do
        grep -q READY "$work/relay_src.out" && grep -q READY "$work/relay_sink.out" && break
        sleep 0.02
    done
fi
if [ "$RATE" != 0 ]; then
    paced=USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd-paced"
    start ours_paced "${PROXY[@]}" env "$paced" "$OURS"
    start debian_paced "${PROXY[@]}" env "$paced" LD_LIBRARY_PATH="$work/debian-lib" "$DEBIAN"
fi

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure NAME CASE CMD...: runs a load client, records "CASE value cpu_seconds".
measure() {
    local name=$1 case=$2
    shift 2
    local c0 c1 out
    c0=$(cpu_ticks "${PID[$name]}")
    if ! out=$("${LOAD[@]}" "$@"); then
        echo "$name $case: the load client failed: $out" >&2
        cat "$work/daemon.err" >&2
        exit 1
    fi
    c1=$(cpu_ticks "${PID[$name]}")
    echo "$name $case $out cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz }')" >>"$work/results"
}

# hold NAME N CASE: N connections one by one, kept open: setup rate, CPU per setup, RSS
# and threads of the iproxy while they are open. Returns 1 if the iproxy died.
hold() {
    local name=$1 n=$2 case=$3 holder c0 c1 rss threads held secs
    rm -f "$work/release"
    c0=$(cpu_ticks "${PID[$name]}")
    "${LOAD[@]}" "$HELPER" hold 127.0.0.1 "${PORT_ECHO[$name]}" "$n" --hold-until-file "$work/release" --timeout 10 --one-by-one \
        >"$work/hold.out" 2>/dev/null &
    holder=$!
    for _ in $(seq 6000); do
        grep -q '^HELD' "$work/hold.out" 2>/dev/null && break
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.01
    done
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
        touch "$work/release"
        wait "$holder" || true
        return 1
    fi
    c1=$(cpu_ticks "${PID[$name]}")
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/${PID[$name]}/status")
    threads=$(ls "/proc/${PID[$name]}/task" | wc -l)
    held=$(awk '/^HELD/ { print $2 }' "$work/hold.out")
    secs=$(sed -n 's/^HELD.*connect_seconds=\([0-9.]*\).*/\1/p' "$work/hold.out")
    touch "$work/release"
    wait "$holder" || true
    echo "$name $case rss_kb=$rss threads=$threads held=$held per_second=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.1f", n / s }') cpu_ms=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.4f", (b - a) * 1000 / hz / n }')" >>"$work/results"
    # Let the connections close before the next figure.
    sleep 1
}

bytes=$((MIB << 20))
for round in $(seq "$ROUNDS"); do
    order="ours debian"
    [ $((round % 2)) = 0 ] && order="debian ours"
    if [ "$REF" != 0 ]; then
        for conns in 1 64; do
            measure relay_src "download_$conns" "$HELPER" download 127.0.0.1 "${PORT_SRC[relay]}" "$conns" $((bytes / conns))
            measure relay_sink "upload_$conns" "$HELPER" upload 127.0.0.1 "${PORT_SINK[relay]}" "$conns" $((bytes / conns))
        done
    fi
    for name in $order; do
        for conns in 1 64; do
            measure "$name" "download_$conns" "$HELPER" download 127.0.0.1 "${PORT_SRC[$name]}" "$conns" $((bytes / conns))
            measure "$name" "upload_$conns" "$HELPER" upload 127.0.0.1 "${PORT_SINK[$name]}" "$conns" $((bytes / conns))
            if [ "$RATE" != 0 ]; then
                measure "${name}_paced" "paced_$conns" "$HELPER" download 127.0.0.1 "${PORT_SRC[${name}_paced]}" "$conns" $(((RATE_MIB << 20) / conns))
            fi
        done
        # Setup rate and memory: connections opened one after the other, each proven
        # by a round trip before the next, and kept open. (Closing them between setups
        # would let iproxy 2.0.2 lose clients: its per-connection select() gets nfds =
        # device fd + 1 and misses a client socket numbered higher once descriptors are
        # reused, tools.md §1.6.) 2.0.2 cannot hold HOLD_N = 1000 (below): both are
        # compared at CMP_N.
        hold "$name" "$CMP_N" hold_cmp
        [ "$name" = ours ] && hold ours "$HOLD_N" hold
        if [ "$name" = ours ]; then
            # Ours also with churn: 8 clients at a time, each connection closed after its
            # round trip (2.0.2 loses clients that way, see above).
            sleep 1
            measure "$name" setup8 "$HELPER" setup 127.0.0.1 "${PORT_ECHO[$name]}" "$SETUP_N" 8
        fi
        # Let the connections close before the next figure.
        sleep 1
    done
done

# Debian's at HOLD_N, once, last (it does not survive it).
debian_at_hold="held"
if ! hold debian "$HOLD_N" hold; then
    debian_at_hold="died: $(tail -n1 "$work/debian.err")"
fi

echo "# iproxy: ours vs Debian's $(dpkg-query -W -f '${Version}' libusbmuxd-tools 2>/dev/null), $ROUNDS rounds, medians;" \
    "$MIB MiB per transfer case, $HOLD_N connections held, $SETUP_N setups with churn"
echo "# $(nproc) CPUs, Linux $(uname -r); $([ "$PIN" = 1 ] && echo "iproxy on CPU 1, daemon and clients on CPU 0" || echo "not pinned")"
awk -v mib="$MIB" -v held_n="$HOLD_N" -v cmp_n="$CMP_N" -v paced_rate="$RATE" '
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function field(name,   i, kv) {
        for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
        return ""
    }
    { sub(/_paced$/, "", $1); sub(/^relay_(src|sink)$/, "relay", $1) }
    $2 ~ /^(download|upload|paced)_/ { k = $1 " " $2; mbps[k] = mbps[k] " " field("MBps"); cpu[k] = cpu[k] " " field("cpu") / (field("bytes") / 1073741824) }
    $2 == "setup8" { rate8 = rate8 " " field("per_second"); scpu8 = scpu8 " " field("cpu") * 1000 / field("connections") }
    $2 == "hold_cmp" {
        k = $1; rss[k] = rss[k] " " field("rss_kb"); thr[k] = thr[k] " " field("threads"); held[k] = held[k] " " field("held")
        rate[k] = rate[k] " " field("per_second"); scpu[k] = scpu[k] " " field("cpu_ms")
    }
    $2 == "hold" { k = $1; rss_n[k] = rss_n[k] " " field("rss_kb"); thr_n[k] = thr_n[k] " " field("threads"); held_n_[k] = held_n_[k] " " field("held") }
    END {
        printf "%-22s %14s %14s %14s %14s %9s %s\n", "case", "Debian MB/s", "ours MB/s", "Debian CPU s/GiB", "ours CPU s/GiB", "GiB/CPU-s", "  relay CPU s/GiB"
        n = split("download_1 download_64 upload_1 upload_64 paced_1 paced_64", cases, " ")
        for (i = 1; i <= n; i++) {
            c = cases[i]; split(c, p, "_")
            if (!(("ours " c) in cpu)) continue
            dm = median(mbps["debian " c]); om = median(mbps["ours " c])
            dc = median(cpu["debian " c]); oc = median(cpu["ours " c])
            label = p[1] == "paced" ? "download@" paced_rate "MB/s x" p[2] : p[1] " x" p[2] " conn"
            ref = (("relay " c) in cpu) ? sprintf("%17.3f", median(cpu["relay " c])) : ""
            printf "%-22s %14.0f %14.0f %16.3f %14.3f %8.2fx%s\n", label, dm, om, dc, oc, dc / oc, ref
        }
        printf "%-22s %14.0f %14.0f %13.3f ms %11.3f ms %8.2fx\n", "setup, one by one", median(rate["debian"]), median(rate["ours"]), median(scpu["debian"]), median(scpu["ours"]), median(scpu["debian"]) / (median(scpu["ours"]) > 0 ? median(scpu["ours"]) : 0.001)
        printf "%-22s %14s %14.0f %16s %11.3f ms\n", "setup, 8 at a time", "-", median(rate8), "-", median(scpu8)
        printf "%-22s %11.1f MB %11.1f MB %16s %14s\n", "RSS, " cmp_n " connections", median(rss["debian"]) / 1024, median(rss["ours"]) / 1024, median(thr["debian"]) " threads", median(thr["ours"]) " threads"
        printf "%-22s %14s %14s\n", "  connections held", median(held["debian"]), median(held["ours"])
        printf "%-22s %14s %11.1f MB %16s %14s\n", "RSS, " held_n " connections", "(see below)", median(rss_n["ours"]) / 1024, "", median(thr_n["ours"]) " threads"
        printf "%-22s %14s %14s\n", "  connections held", "-", median(held_n_["ours"])
        print "(GiB/CPU-s: payload per CPU second of the iproxy process, ours relative to Debian'"'"'s;"
        print " for setup, Debian'"'"'s CPU per connection over ours; setup columns are connections/s;"
        print " relay: usbmuxd-tools-test relay, blocking read/write on a thread per direction, the reference)"
    }' "$work/results"
echo "Debian's iproxy with $HOLD_N connections: $debian_at_hold"
if [ -n "${KEEP_RESULTS:-}" ]; then cp "$work/results" "$KEEP_RESULTS"; fi
