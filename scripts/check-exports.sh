#!/usr/bin/env bash
# usage: scripts/check-exports.sh LIB.so EXPECTED_SONAME VERSION_SCRIPT.map
#
# Fails unless the shared library
#  * has SONAME EXPECTED_SONAME,
#  * exports (nm -D --defined-only) exactly the functions listed in the `global:`
#    section of VERSION_SCRIPT.map, all as text symbols (T), without version nodes,
#  * is linked with BIND_NOW.
set -euo pipefail
lib=$1 soname=$2 map=$3
fail() { echo "check-exports: $lib: $*" >&2; exit 1; }

[ -f "$lib" ] || fail "missing"

actual_soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$actual_soname" = "$soname" ] || fail "SONAME is '$actual_soname', expected '$soname'"

expected=$(sed -n '/global:/,/local:/p' "$map" | sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p' | LC_ALL=C sort)
[ -n "$expected" ] || fail "no symbols found in $map"

defined=$(nm -D --defined-only "$lib")
actual=$(printf '%s\n' "$defined" | awk '{print $NF}' | LC_ALL=C sort)
if [ "$actual" != "$expected" ]; then
    echo "check-exports: $lib: exported symbols differ from $map (< expected, > actual):" >&2
    diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") >&2 || true
    exit 1
fi
nontext=$(printf '%s\n' "$defined" | awk '$(NF-1) != "T" {print}')
[ -z "$nontext" ] || fail "non-function exports: $nontext"
if grep -q '@' <<<"$actual"; then fail "exports carry version nodes"; fi
dynamic=$(readelf -d "$lib")
grep -Eq '\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*NOW' <<<"$dynamic" || fail "not linked with -z now"

echo "$lib: SONAME $soname, exactly the $(printf '%s\n' "$expected" | wc -l) functions of $map"
