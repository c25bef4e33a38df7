#!/usr/bin/env bash
# Throughput of OUR library through the C API on its two paths, in one run:
#   daemon  USBMUXD_BACKEND=daemon: the daemon protocol to the test daemon usbmuxd-testd
#           (device 3: sink on port 9, source of MIB MiB on port 19);
#   usb     USBMUXD_BACKEND=usb: the in-process USB backend (an I/O thread inside the
#           benchmark process: usbmux engine, USB framing) talking to a simulated device on
#           the simulated USB bus of usbmux-simd (same services).
# bench/bench.c sends MIB MiB to the sink (usbmuxd_send, 64 KiB calls) and receives MIB MiB
# from the source (usbmuxd_recv_timeout, 64 KiB buffer). Reported per figure (medians of
# ROUNDS rounds, the two paths alternating): MB/s and CPU seconds per GiB of payload of
#   client  the benchmark process, all threads (on the usb path: including the library's
#           I/O thread, i.e. the whole USB backend);
#   lib     of which the library's own threads (client minus the thread calling the API);
#   server  usbmuxd-testd / usbmux-simd (all threads, /proc/PID/stat);
#   total   client + server.
# Then the same CPU per GiB split by thread (names without their numeric suffix; threads
# that ended during a transfer are missing).
#
# usage: bench/usb.sh [MIB]      (after `make`; `make bench-usb` = bench/usb.sh 1024)
#   ROUNDS (default 5); RAW=1 also prints every round's lines; PATHS (default "daemon usb")
#   to run only one of them; USBMUXD_TESTD, USBMUX_SIMD, OURS: other binaries / library.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
ROUNDS=${ROUNDS:-5}
OURS=${OURS:-$PWD/build/libusbmuxd-2.0.so.6}
TESTD=${USBMUXD_TESTD:-$PWD/target/release/usbmuxd-testd}
SIMD=${USBMUX_SIMD:-$PWD/target/release/usbmux-simd}
UDID=00008030-001A2B3C4D5E6F70
for f in "$OURS" "$TESTD" "$SIMD"; do
    [ -e "$f" ] || { echo "$f missing: run make" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-usb.XXXXXX")
testd_pid=
simd_pid=
cleanup() {
    set +e
    exec 3>&- 4>&-
    for p in $testd_pid $simd_pid; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
gcc -O2 -Wall -Wextra -o "$work/bench" bench/bench.c -ldl

wait_ready() { # FILE PID NAME
    for _ in $(seq 200); do
        grep -q '^READY ' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "$3 did not start" >&2
    exit 1
}

bytes=$((MIB << 20))
mkfifo "$work/testd.ctl" "$work/simd.ctl"
"$TESTD" --socket "$work/usbmuxd" --usb "${UDID/-/},3" --service "19=source:$bytes" \
    <"$work/testd.ctl" >"$work/testd.out" &
testd_pid=$!
exec 3>"$work/testd.ctl"
"$SIMD" --socket "$work/simbus.sock" --device "$UDID" --service "19=source:$bytes" \
    <"$work/simd.ctl" >"$work/simd.out" &
simd_pid=$!
exec 4>"$work/simd.ctl"
wait_ready "$work/testd.out" "$testd_pid" usbmuxd-testd
wait_ready "$work/simd.out" "$simd_pid" usbmux-simd
mkdir -m 0700 "$work/lockdown"

run() { # PATH_NAME
    case $1 in
    daemon)
        env -u USBMUXD_SIMBUS USBMUXD_BACKEND=daemon USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd" \
            BENCH_FIGURES=send,recv BENCH_SERVER_PID=$testd_pid BENCH_THREADS=1 \
            "$work/bench" "$OURS" 3 9 19 7 "$MIB" 1
        ;;
    usb)
        env -u USBMUXD_SOCKET_ADDRESS USBMUXD_BACKEND=usb USBMUXD_SIMBUS="$work/simbus.sock" \
            USBMUXD_PAIR_RECORD_DIR="$work/lockdown" BENCH_FIGURES=send,recv BENCH_SERVER_PID=$simd_pid BENCH_THREADS=1 \
            "$work/bench" "$OURS" first 9 19 7 "$MIB" 1
        ;;
    esac
}

for round in $(seq "$ROUNDS"); do
    for path in ${PATHS:-daemon usb}; do
        run "$path" | sed "s/^/$path /" | tee -a "$work/results" | { [ "${RAW:-}" = 1 ] && sed "s/^/# round $round: /" || cat >/dev/null; }
    done
done

echo "# our library, C API, $MIB MiB per transfer, $ROUNDS rounds (medians); CPU s per GiB of payload"
echo "# client = benchmark process (all threads; on usb it includes the library's I/O thread),"
echo "# lib = the library's threads within it, server = usbmuxd-testd / usbmux-simd, total = client + server"
awk -v gib="$(awk -v m="$MIB" 'BEGIN { print m / 1024 }')" '
    function field(name,   i, kv) {
        for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
        return -1
    }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    # "PATH thread FIGURE client|server NAME cpu_s=X", after the line of its figure.
    $2 == "thread" {
        name = $5; sub(/-[0-9]*$/, "-N", name)   # simbus-conn-7, usbmuxd-simbus-258 (cut to 15 characters)
        key = $1 " " $3 " " $4 " " name
        if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key }
        th[key, nrun[$1 " " $3]] += field("cpu_s") / gib   # same-named threads add up
        next
    }
    {
        key = $1 " " $2
        nrun[key]++
        mbs[key] = mbs[key] " " $3
        c = field("cpu_s"); t = field("thread_cpu_s"); s = field("server_cpu_s")
        cl[key] = cl[key] " " c / gib
        lib[key] = lib[key] " " (c - t) / gib
        sv[key] = sv[key] " " s / gib
        tot[key] = tot[key] " " (c + s) / gib
    }
    END {
        printf "%-7s %-5s %9s %9s %9s %9s %9s\n", "path", "dir", "MB/s", "client", "(lib)", "server", "total"
        split("daemon usb", paths, " "); split("send recv", dirs, " ")
        for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
            k = paths[i] " " dirs[j]
            if (!(k in mbs)) continue
            printf "%-7s %-5s %9.1f %9.3f %9.3f %9.3f %9.3f\n", paths[i], dirs[j], median(mbs[k]), median(cl[k]), median(lib[k]), median(sv[k]), median(tot[k])
        }
        print ""
        print "# CPU s per GiB by thread (medians)"
        printf "%-7s %-5s %-7s %-22s %9s\n", "path", "dir", "process", "thread", "CPU s/GiB"
        for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) for (w = 1; w <= 2; w++) for (n = 1; n <= nkeys; n++) {
            split(order[n], f, " ")
            if (f[1] != paths[i] || f[2] != dirs[j] || f[3] != (w == 1 ? "client" : "server")) continue
            list = ""
            for (r = 1; r <= nrun[f[1] " " f[2]]; r++) list = list " " (th[order[n], r] + 0)
            printf "%-7s %-5s %-7s %-22s %9.3f\n", f[1], f[2], f[3], f[4], median(list)
        }
    }' "$work/results"
