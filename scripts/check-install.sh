#!/usr/bin/env bash
# Install check (run by `make check-install`, with the Makefile's install variables in
# the environment): `make install` into a temporary DESTDIR, then build
# c-tests/install/pkgconfig_consumer.c using only `pkg-config libusbmuxd-2.0` pointed
# into the staged tree, run it against the staged library, and finally `make
# uninstall` the same DESTDIR and verify it removed every installed file.
set -euo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make} CC=${CC:-cc} PKG_CONFIG=${PKG_CONFIG:-pkg-config}
: "${libdir:?}" "${PKGCONFIGDIR:?}" "${VERSION:?}"
fail() { echo "check-install: $*" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

$MAKE --no-print-directory install DESTDIR="$stage"
echo "staged files:"
(cd "$stage" && find . \( -type f -o -type l \) | LC_ALL=C sort | sed 's/^\./    /')

# Only the staged .pc file is visible (PKG_CONFIG_LIBDIR hides the system's own
# libusbmuxd-2.0.pc); the sysroot prefix maps its paths into the stage.
pcdir="$stage$PKGCONFIGDIR"
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_LIBDIR="$pcdir" PKG_CONFIG_SYSROOT_DIR="$stage"
export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
$PKG_CONFIG --exists libusbmuxd-2.0 || fail "pkg-config does not find libusbmuxd-2.0 in $pcdir"
$PKG_CONFIG --atleast-version=2.0.2 libusbmuxd-2.0 || fail "pkg-config --atleast-version=2.0.2 failed"
modversion=$($PKG_CONFIG --modversion libusbmuxd-2.0)
[ "$modversion" = "$VERSION" ] || fail "pkg-config version is $modversion, expected $VERSION"
cflags=$($PKG_CONFIG --cflags libusbmuxd-2.0)
libs=$($PKG_CONFIG --libs libusbmuxd-2.0)
echo "pkg-config: version $modversion, cflags '$cflags', libs '$libs'"

# The consumer calls libusbmuxd_version(), which the Debian 2.0.2 header and library
# lack: compiling and linking it proves the staged header and library were used.
$CC -Wall -Wextra -Werror -o "$stage/consumer" c-tests/install/pkgconfig_consumer.c $cflags $libs
needed=$(readelf -d "$stage/consumer" | sed -n 's/.*(NEEDED).*\[\(libusbmuxd[^]]*\)\].*/\1/p')
[ "$needed" = "libusbmuxd-2.0.so.7" ] || fail "consumer needs '$needed', expected libusbmuxd-2.0.so.7"
out=$(LD_LIBRARY_PATH="$stage$libdir" "$stage/consumer")
echo "consumer: $out"
[ "$out" = "libusbmuxd_version: $VERSION" ] || fail "unexpected consumer output"
rm -f "$stage/consumer"

$MAKE --no-print-directory uninstall DESTDIR="$stage"
left=$(cd "$stage" && find . \( -type f -o -type l \))
[ -z "$left" ] || fail "uninstall left files behind: $left"
echo "install check: passed (install, pkg-config build, run, uninstall)"
