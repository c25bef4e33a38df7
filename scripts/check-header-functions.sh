#!/usr/bin/env bash
# usage: scripts/check-header-functions.sh usbmuxd.h VERSION_SCRIPT.map
# Fails unless the header declares (USBMUXD_API ...) exactly the functions the
# version script exports.
set -euo pipefail
header=$1 map=$2
expected=$(sed -n '/global:/,/local:/p' "$map" | sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p' | LC_ALL=C sort)
declared=$(grep -E '^USBMUXD_API ' "$header" | sed -E 's/^([^(]*[^A-Za-z0-9_(])([A-Za-z_][A-Za-z0-9_]*)\(.*/\2/' | LC_ALL=C sort)
if [ "$declared" != "$expected" ]; then
    echo "check-header-functions: $header declares other functions than $map exports (< map, > header):" >&2
    diff <(printf '%s\n' "$expected") <(printf '%s\n' "$declared") >&2 || true
    exit 1
fi
echo "$header: declares exactly the $(printf '%s\n' "$expected" | wc -l) functions of $map"
