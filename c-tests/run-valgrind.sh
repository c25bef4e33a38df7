#!/bin/bash
# Runs C test programs under valgrind (memcheck, full leak check); any error or
# definite/possible leak makes it fail with status 99. Skipped (status 0) if valgrind
# is not installed.
#
#   c-tests/run-valgrind.sh [PROGRAM...]      default: build/c-tests/test_device_list
#
# The environment is the one `make c-tests` gives the tests (LD_LIBRARY_PATH pointing
# at build/, USBMUXD_TESTD = the test daemon). The test daemon, a child process, is not
# traced. A Makefile can call it after building the C tests, e.g.
#   $(TEST_ENV) c-tests/run-valgrind.sh $(BUILD)/c-tests/test_device_list
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if ! command -v valgrind >/dev/null 2>&1; then
    echo "run-valgrind: valgrind not found; skipped"
    exit 0
fi
if [ $# -eq 0 ]; then
    set -- "$root/build/c-tests/test_device_list"
fi
: "${USBMUXD_TESTD:=$root/target/release/usbmuxd-testd}"
export USBMUXD_TESTD
export LD_LIBRARY_PATH="$root/build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

status=0
for prog in "$@"; do
    if [ ! -x "$prog" ]; then
        echo "run-valgrind: $prog not built" >&2
        status=1
        continue
    fi
    echo "-- valgrind $prog"
    valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,possible \
        --suppressions="$here/valgrind.supp" --track-fds=no -q "$prog"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "run-valgrind: FAILED ($rc): $prog"
        status=$rc
    else
        echo "run-valgrind: ok: $prog"
    fi
done
exit $status
