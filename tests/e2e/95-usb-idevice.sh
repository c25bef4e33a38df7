#!/usr/bin/env bash
# Debian's idevice_id and ideviceinfo, unchanged, on OUR library's in-process USB backend
# (USBMUXD_BACKEND=usb) against simulated iPhones on usbmux-simd's simulated USB bus: no
# usbmuxd daemon anywhere (USBMUXD_SOCKET_ADDRESS names a socket that does not exist).
#   * ldd: the programs load our libusbmuxd-2.0.so.6;
#   * idevice_id -l: the UDID rebuilt from the USB serial (dash after the 8th character
#     of a 24-character serial; a 40-character UDID as is); with USBMUXD_BACKEND=daemon
#     the same command does not see the devices (they come from the USB backend);
#   * idevice_id UDID and ideviceinfo -s / -s -k / -s -x / -s -u: the values of the
#     simulator's lockdownd (sim/src/services/lockdownd.rs), reached over usbmux;
#   * plugging and unplugging at run time, seen by each new idevice_id -l; no device:
#     the tools' messages; the simulator gone: no hang, "Unable to retrieve device list";
#   * auto mode (USBMUXD_BACKEND and USBMUXD_SOCKET_ADDRESS unset, no daemon socket at
#     /var/run/usbmuxd): the USB backend is used. If a daemon socket exists there, the
#     check runs in a private mount namespace where /run is empty (unshare -m), or is
#     skipped with a note if that is not possible.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$E2E_DIR/usb/simd.sh"
e2e_init usb-idevice
e2e_require_programs idevice_id ideviceinfo

UDID1=00008030-001A2B3C4D5E6F70 # USB serial 00008030001A2B3C4D5E6F70
UDID2=00008101-000A1B2C3D4E5F60
LEGACY=0123456789abcdef0123456789abcdef01234567 # 40 characters: serial = UDID

# What the simulator's lockdownd answers for a UDID (lib.sh's lockdownd_values):
# SerialNumber "F2L" + the last nine alphanumeric characters in upper case, UniqueChipID
# the ECID (hex after the dash) of a 24-character UDID, else 0.
values() {
	local udid=$1 compact tail chip=0
	compact=$(tr -cd '[:alnum:]' <<<"$udid")
	tail=${compact: -9}
	[ ${#compact} -eq 24 ] && chip=$((16#${compact:8}))
	lockdownd_values "F2L${tail^^}" "$chip" "$udid"
}

simd_start --device "$UDID1"

t_list() {
	run_lines list idevice_id -l
	expect_eq "idevice_id -l" "$(cat "$E2E_TMP/list.out")" "$UDID1"
	expect_eq "stderr" "$(cat "$E2E_TMP/list.err")" ""
	# The list really comes from the USB backend: the daemon backend sees nothing.
	local rc=0
	USBMUXD_BACKEND=daemon ours idevice_id -l >"$E2E_TMP/daemon.out" 2>&1 || rc=$?
	if grep -qF "$UDID1" "$E2E_TMP/daemon.out"; then
		echo "USBMUXD_BACKEND=daemon lists the simulated device" >&2
		return 1
	fi
	expect_status "idevice_id -l with USBMUXD_BACKEND=daemon and no daemon" "$rc" 255
	# USBMUXD_BACKEND=usb wins whatever the daemon address says (also unset, i.e.
	# /var/run/usbmuxd, whether a daemon listens there or not).
	expect_eq "idevice_id -l (USBMUXD_SOCKET_ADDRESS unset)" \
		"$(env -u USBMUXD_SOCKET_ADDRESS LD_LIBRARY_PATH="$BUILD_DIR" timeout "$E2E_TIMEOUT" idevice_id -l)" "$UDID1"
}
check "idevice_id -l lists the simulated device with its dashed UDID, no daemon involved" t_list

t_info() {
	run_lines info ideviceinfo -s
	expect_eq "ideviceinfo -s" "$(cat "$E2E_TMP/info.out")" "$(values "$UDID1")"
	run_lines key ideviceinfo -s -k ProductType
	expect_eq "ideviceinfo -s -k ProductType" "$(cat "$E2E_TMP/key.out")" "iPhone12,1"
	run_lines udid ideviceinfo -s -u "$UDID1" -k UniqueDeviceID
	expect_eq "ideviceinfo -s -u UDID -k UniqueDeviceID" "$(cat "$E2E_TMP/udid.out")" "$UDID1"
	run_lines nokey ideviceinfo -s -k NoSuchKey
	expect_eq "ideviceinfo -s -k NoSuchKey" "$(cat "$E2E_TMP/nokey.out")" ""
	run_lines xml ideviceinfo -s -x
	python3 - "$E2E_TMP/xml.out" "$UDID1" <<'EOF'
import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
assert d["UniqueDeviceID"] == sys.argv[2], d
assert d["ProductType"] == "iPhone12,1" and d["HostAttached"] is True, d
assert d["UniqueChipID"] == 0x001A2B3C4D5E6F70, d
assert len(d) == 20, sorted(d)
EOF
	run_lines name idevice_id "$UDID1"
	expect_eq "idevice_id UDID (device name)" "$(cat "$E2E_TMP/name.out")" "Test iPhone"
}
check "ideviceinfo -s, -k, -u, -x and idevice_id UDID: the simulated lockdownd's values" t_info

t_hotplug() {
	simd_cmd "plug $UDID2"
	simd_cmd "plug $LEGACY,0x12ab"
	wait_listed "$LEGACY"
	run_lines list3 idevice_id -l
	expect_same_lines "idevice_id -l after two plugs" "$(cat "$E2E_TMP/list3.out")" "$UDID1
$UDID2
$LEGACY"
	run_lines info2 ideviceinfo -s -u "$UDID2"
	expect_eq "ideviceinfo -s -u $UDID2" "$(cat "$E2E_TMP/info2.out")" "$(values "$UDID2")"
	run_lines info3 ideviceinfo -s -u "$LEGACY"
	expect_eq "ideviceinfo -s -u $LEGACY" "$(cat "$E2E_TMP/info3.out")" "$(values "$LEGACY")"

	simd_cmd "unplug $UDID1"
	wait_listed "$UDID1" 0
	run_lines list2 idevice_id -l
	expect_same_lines "idevice_id -l after unplugging $UDID1" "$(cat "$E2E_TMP/list2.out")" "$UDID2
$LEGACY"
	local rc=0
	ours ideviceinfo -s -u "$UDID1" >"$E2E_TMP/gone.out" 2>&1 || rc=$?
	expect_eq "ideviceinfo -s -u <unplugged>" "$(cat "$E2E_TMP/gone.out")" "ERROR: Device $UDID1 not found!"
	expect_status "ideviceinfo -s -u <unplugged>" "$rc" 255

	# Plugged in again (a new USB address): listed again, answers again.
	simd_cmd "plug $UDID1"
	wait_listed "$UDID1"
	run_lines again ideviceinfo -s -u "$UDID1" -k UniqueDeviceID
	expect_eq "ideviceinfo after re-plug" "$(cat "$E2E_TMP/again.out")" "$UDID1"

	simd_cmd "unplug $UDID1"
	simd_cmd "unplug $UDID2"
	simd_cmd "unplug $LEGACY"
	wait_listed "$LEGACY" 0
	run_lines none idevice_id -l
	expect_eq "idevice_id -l without devices" "$(cat "$E2E_TMP/none.out")" ""
	rc=0
	ours ideviceinfo -s >"$E2E_TMP/nodev.out" 2>&1 || rc=$?
	expect_eq "ideviceinfo -s without devices" "$(cat "$E2E_TMP/nodev.out")" "ERROR: No device found!"
	expect_status "ideviceinfo -s without devices" "$rc" 255
	simd_cmd "plug $UDID1"
	wait_listed "$UDID1"
}
check "devices plugged and unplugged at run time: idevice_id -l and ideviceinfo follow" t_hotplug

# Auto mode needs a host without a daemon socket at /var/run/usbmuxd, or a private mount
# namespace (unshare -m, as root) in which an empty tmpfs hides the directory holding it.
AUTO_SOCK=/var/run/usbmuxd
AUTO_HIDE=
if [ -e "$AUTO_SOCK" ]; then
	AUTO_HIDE=$(dirname "$(readlink -f "$AUTO_SOCK")")
	if ! unshare -m --propagation private sh -c "mount -t tmpfs tmpfs '$AUTO_HIDE' && test ! -e '$AUTO_SOCK'" 2>/dev/null; then
		AUTO_HIDE=unavailable
	fi
fi

# Runs a command in auto mode (no USBMUXD_BACKEND, no USBMUXD_SOCKET_ADDRESS), with
# /var/run/usbmuxd hidden if it exists.
auto_run() {
	local env=(env -u USBMUXD_BACKEND -u USBMUXD_SOCKET_ADDRESS LD_LIBRARY_PATH="$BUILD_DIR" timeout "$E2E_TIMEOUT")
	if [ -z "$AUTO_HIDE" ]; then
		"${env[@]}" "$@"
	else
		unshare -m --propagation private sh -c \
			"mount -t tmpfs tmpfs '$AUTO_HIDE' && test ! -e '$AUTO_SOCK' && exec \"\$@\"" sh "${env[@]}" "$@"
	fi
}

t_auto() {
	expect_eq "idevice_id -l in auto mode" "$(auto_run idevice_id -l)" "$UDID1"
	expect_eq "ideviceinfo -s -k UniqueDeviceID in auto mode" "$(auto_run ideviceinfo -s -k UniqueDeviceID)" "$UDID1"
	if [ -n "$AUTO_HIDE" ]; then
		echo "note: $AUTO_SOCK exists on this host; auto mode checked in a private mount namespace without it"
	fi
}
if [ "$AUTO_HIDE" = unavailable ]; then
	record_skip "auto mode" "a daemon socket exists at $AUTO_SOCK and no private mount namespace (unshare -m) is available to hide it"
else
	check "auto mode (no USBMUXD_BACKEND, no daemon socket): the USB backend finds the device" t_auto
fi

simd_kill
t_sim_gone() {
	local rc=0 start=$SECONDS
	ours idevice_id -l >"$E2E_TMP/gone.out" 2>&1 || rc=$?
	expect_eq "idevice_id -l, simulator gone" "$(cat "$E2E_TMP/gone.out")" "ERROR: Unable to retrieve device list!"
	expect_status "idevice_id -l, simulator gone" "$rc" 255
	((SECONDS - start <= 5))
}
check "the simulated bus gone: idevice_id -l fails at once" t_sim_gone

e2e_finish
