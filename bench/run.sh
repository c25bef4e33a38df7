#!/usr/bin/env bash
# Side-by-side benchmark: our libusbmuxd against Debian's libusbmuxd6, through the C API,
# both against the same test daemon, in one run.
#
# usage: bench/run.sh [MIB] [ITERATIONS]     (after `make`)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-512}
ITER=${2:-2000}
OURS=${OURS:-$PWD/build/libusbmuxd-2.0.so.6}
STOCK=${STOCK:-/usr/lib/$(gcc -print-multiarch)/libusbmuxd-2.0.so.6}
TESTD=${USBMUXD_TESTD:-$PWD/target/release/usbmuxd-testd}
[ -e "$OURS" ] || { echo "build the library first (make)"; exit 2; }
[ -e "$STOCK" ] || { echo "Debian's libusbmuxd6 is not installed ($STOCK)"; exit 2; }

work=$(mktemp -d)
trap 'kill $daemon_pid 2>/dev/null || true; rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -o "$work/bench" bench/bench.c -ldl

# Device 3 with an echo (7), a sink (9) and a source of MIB MiB (19).
mkfifo "$work/ctl"
"$TESTD" --socket "$work/usbmuxd" --usb 00008030001A2B3C4D5E6F70,3 \
    --service 19=source:$((MIB << 20)) <"$work/ctl" >"$work/out" &
daemon_pid=$!
exec 3>"$work/ctl"
for _ in $(seq 100); do grep -q READY "$work/out" 2>/dev/null && break; sleep 0.05; done
export USBMUXD_SOCKET_ADDRESS="UNIX:$work/usbmuxd"

# Alternate the two libraries ROUNDS times and report each figure's median, so that
# scheduling noise on a small machine does not decide the comparison.
ROUNDS=${ROUNDS:-5}
for round in $(seq "$ROUNDS"); do
    for lib in stock ours; do
        path=$STOCK; [ "$lib" = ours ] && path=$OURS
        "$work/bench" "$path" 3 9 19 7 "$MIB" "$ITER" | sed "s/^/$lib /" >>"$work/results"
    done
done

echo "# $ROUNDS rounds, medians; $MIB MiB per transfer, $ITER list/connect operations per round"
awk '
    { split($5, c, "="); key = $1 " " $2; v[key] = v[key] " " $3; cpu[key] = cpu[key] " " c[2]; unit[$2] = $4 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        printf "%-20s %16s %16s %7s   %s\n", "figure", "Debian 2.0.2", "ours", "ratio", "client CPU s (Debian / ours)"
        split("device_list connect_disconnect send recv", names, " ")
        for (i = 1; i <= 4; i++) {
            n = names[i]; s = median(v["stock " n]); o = median(v["ours " n])
            printf "%-20s %10.1f %-5s %10.1f %-5s %6.2fx   %.3f / %.3f\n", n, s, unit[n], o, unit[n], o / s, median(cpu["stock " n]), median(cpu["ours " n])
        }
    }' "$work/results"
