#!/usr/bin/env bash
# A daemon that only speaks the binary protocol (version 0; plist requests get binary
# RESULT 6 = BADVERSION): our library must fall back to binary LISTEN / CONNECT and give
# the programs complete device records (conn_type USB, zeroed conn_data — 2.0.2 leaves
# them uninitialised, libusbmuxd-api.md §4.5, which makes Debian's idevice_id crash and
# its tools find no device; those results are printed as notes, not checked):
#   idevice_id -l / idevice_id, ideviceinfo -s -k, inetcat -u UDID, an iproxy round trip,
#   and an iproxy that is already running when the daemon switches to binary-only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init binary-only
e2e_require_programs idevice_id ideviceinfo iproxy inetcat

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60

testd_start --binary-only --usb "$USB1_SERIAL,3" --usb "$USB2,5"

t_idevice_id() {
	testd_cmd log-clear
	run_capture list ours idevice_id -l
	expect_status "idevice_id -l" "$(cat "$E2E_TMP/list.rc")" 0
	expect_eq "idevice_id -l" "$(cat "$E2E_TMP/list.out")" "$USB1
$USB2"
	# ListDevices refused with BADVERSION, then a binary LISTEN.
	expect_eq "requests" "$(testd_log | sed 's/ tag=[0-9]*//')" \
		'LOG version=1 type=ListDevices ProgName="idevice_id" kLibUSBMuxVersion=3
LOG version=0 type=LISTEN'
	run_capture all ours idevice_id
	expect_eq "idevice_id" "$(cat "$E2E_TMP/all.out")" "$USB1 (USB)
$USB2 (USB)"
}
check "idevice_id -l lists the devices of a binary-only daemon" t_idevice_id

t_ideviceinfo() {
	testd_cmd log-clear
	run_capture info ours ideviceinfo -s -k ProductVersion
	expect_eq "ideviceinfo -s -k ProductVersion" "$(cat "$E2E_TMP/info.out")" "15.8"
	testd_log | grep -q 'version=0 tag=[0-9]* type=CONNECT device=3 port=62078'
	run_capture info2 ours ideviceinfo -s -u "$USB2" -k UniqueDeviceID
	expect_eq "ideviceinfo -s -u $USB2 -k UniqueDeviceID" "$(cat "$E2E_TMP/info2.out")" "$USB2"
}
check "ideviceinfo -s reaches lockdownd with a binary CONNECT" t_ideviceinfo

t_inetcat() {
	printf 'binary protocol\n' >"$E2E_TMP/line"
	testd_cmd log-clear
	inetcat_feed "$BUILD_DIR" nc "$E2E_TMP/line" 16 -- -u "$USB2" 7
	expect_eq "inetcat -u $USB2 7" "$(cat "$E2E_TMP/nc.out")" "binary protocol"
	expect_status "inetcat" "$(cat "$E2E_TMP/nc.rc")" 0
	testd_log | grep -q 'version=0 tag=[0-9]* type=CONNECT device=5 port=7'
}
check "inetcat -u UDID 7 echoes through a binary CONNECT" t_inetcat

t_iproxy() {
	testd_cmd log-clear
	iproxy_start "$BUILD_DIR" iproxy PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 2097152
	iproxy_idle
	iproxy_alive
	expect_line "$E2E_TMP/iproxy.out" "Requesting connecion to USB device handle 3 (serial: $USB1), port 7"
	testd_log | grep -q 'version=0 tag=[0-9]* type=CONNECT device=3 port=7'
}
check "iproxy round trip (2 MiB) through a binary CONNECT" t_iproxy

# Debian's library against the same daemon, for the record.
debian_binary() {
	run_capture debian-list debian idevice_id -l
	local rc
	rc=$(cat "$E2E_TMP/debian-list.rc")
	echo "note: with Debian's library, idevice_id -l against a binary-only daemon exits $rc" \
		"and prints $(wc -l <"$E2E_TMP/debian-list.out") line(s)" \
		"$([ "$rc" != 139 ] || echo "(SIGSEGV: uninitialised conn_type, libusbmuxd-api.md §4.5)")"
}
! have_debian || informational debian_binary

# A running iproxy whose daemon switches from plist to binary-only between two clients.
testd_start --usb "$USB1_SERIAL,3" --usb "$USB2,5"
t_switch() {
	iproxy_start "$BUILD_DIR" switch PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 65536
	iproxy_idle
	testd_cmd "mode binary-only"
	testd_cmd log-clear
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 1048576
	iproxy_idle
	iproxy_alive
	expect_eq "requests after the switch" "$(testd_log | sed 's/ tag=[0-9]*//')" \
		'LOG version=1 type=ListDevices ProgName="iproxy" kLibUSBMuxVersion=3
LOG version=0 type=LISTEN
LOG version=0 type=CONNECT device=3 port=7'
}
check "a running iproxy keeps working when the daemon becomes binary-only" t_switch

e2e_finish
