#!/usr/bin/env bash
# idevice_id (libimobiledevice 1.3.0) with our libusbmuxd-2.0.so.6:
#   -l (USB devices), -n (network devices), no option (all, with their type), UDID
#   normalisation by the library (dash after 8 characters of a 24-character serial,
#   40 x 'f' serial -> handle), `idevice_id UDID` (device name read from lockdownd through
#   usbmuxd_connect), devices attached / detached while the daemon runs, a daemon that
#   refuses ListDevices (Listen fallback), an empty daemon and no daemon at all.
# Every output, stderr and exit status must equal the one with Debian's library, and the
# requests the daemon receives must be the same (except ClientVersionString).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init idevice_id
e2e_require_programs idevice_id

USB1_SERIAL=001A2B3C4D5E6F7080901234 # 24 characters: listed as 001A2B3C-4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60
FFFF=ffffffffffffffffffffffffffffffffffffffff # listed with the handle: …ffff00000009
FFFF_LISTED=ffffffffffffffffffffffffffffffff00000009
NET=00008030-0000111122223333

testd_start --usb "$USB1_SERIAL,3" --usb "$USB2,5" --usb "$FFFF,9" --network "$NET,127.0.0.1,12"

t_list_usb() {
	same_as_debian list-l idevice_id -l
	expect_eq "idevice_id -l" "$(cat "$E2E_TMP/list-l.ours.out")" "$USB1
$USB2
$FFFF_LISTED"
	expect_status "idevice_id -l" "$(cat "$E2E_TMP/list-l.ours.rc")" 0
}
check "idevice_id -l lists the USB devices, UDIDs normalised" t_list_usb

t_list_network() {
	same_as_debian list-n idevice_id -n
	expect_eq "idevice_id -n" "$(cat "$E2E_TMP/list-n.ours.out")" "$NET"
}
check "idevice_id -n lists the network device" t_list_network

t_list_all() {
	local want="$USB1 (USB)
$USB2 (USB)
$FFFF_LISTED (USB)
$NET (Network)"
	same_as_debian list-all idevice_id
	expect_eq "idevice_id" "$(cat "$E2E_TMP/list-all.ours.out")" "$want"
	same_as_debian list-ln idevice_id -l -n
	expect_eq "idevice_id -l -n" "$(cat "$E2E_TMP/list-ln.ours.out")" "$want"
}
check "idevice_id / idevice_id -l -n list every device with its type" t_list_all

# The daemon sees the same requests from both libraries.
t_same_requests() {
	have_debian || return 0
	testd_cmd log-clear
	ours idevice_id -l >/dev/null
	local log_ours log_debian
	log_ours=$(testd_log)
	testd_cmd log-clear
	debian idevice_id -l >/dev/null
	log_debian=$(testd_log)
	expect_eq "requests (ours vs Debian's)" "$log_ours" "$log_debian"
	expect_eq "requests" "$log_ours" 'LOG version=1 tag=1 type=ListDevices ProgName="idevice_id" kLibUSBMuxVersion=3'
}
check "idevice_id -l sends the same ListDevices request as Debian's library" t_same_requests

t_device_name() {
	same_as_debian name idevice_id "$USB2"
	expect_eq "idevice_id $USB2" "$(cat "$E2E_TMP/name.ours.out")" "Test iPhone"
	expect_status "idevice_id $USB2" "$(cat "$E2E_TMP/name.ours.rc")" 0
	# The lockdownd connection went to device 5, port 62078 (PortNumber 32498 = swapped).
	testd_log | grep -q 'type=Connect ProgName="idevice_id" kLibUSBMuxVersion=3 DeviceID=5 PortNumber=32498 device=5 port=62078'
	same_as_debian name-dashed idevice_id "$USB1"
	expect_eq "idevice_id $USB1" "$(cat "$E2E_TMP/name-dashed.ours.out")" "Test iPhone"
	same_as_debian name-unknown idevice_id 00008030-00000000DEADBEEF
	expect_status "idevice_id <unknown UDID>" "$(cat "$E2E_TMP/name-unknown.ours.rc")" 254
	grep -q 'No device with UDID 00008030-00000000DEADBEEF attached' "$E2E_TMP/name-unknown.ours.err"
}
check "idevice_id UDID reads the device name from lockdownd" t_device_name

t_hotplug() {
	testd_cmd "attach 00008101-000C0FFEE0C0FFEE,20"
	same_as_debian hot1 idevice_id -l
	expect_eq "after attach" "$(cat "$E2E_TMP/hot1.ours.out")" "$USB1
$USB2
$FFFF_LISTED
00008101-000C0FFEE0C0FFEE"
	testd_cmd "detach 3"
	testd_cmd "detach 20"
	same_as_debian hot2 idevice_id -l
	expect_eq "after detach" "$(cat "$E2E_TMP/hot2.ours.out")" "$USB2
$FFFF_LISTED"
}
check "devices attached/detached at run time appear/disappear" t_hotplug

t_listen_fallback() {
	testd_cmd "list-devices off"
	same_as_debian fallback idevice_id
	testd_cmd "list-devices on"
	expect_eq "idevice_id (Listen fallback)" "$(cat "$E2E_TMP/fallback.ours.out")" "$USB2 (USB)
$FFFF_LISTED (USB)
$NET (Network)"
}
check "daemon refusing ListDevices: the list comes from Listen" t_listen_fallback

testd_start # no devices
t_empty() {
	same_as_debian empty idevice_id -l
	expect_eq "idevice_id -l (no devices)" "$(cat "$E2E_TMP/empty.ours.out")" ""
	expect_status "idevice_id -l (no devices)" "$(cat "$E2E_TMP/empty.ours.rc")" 0
}
check "a daemon without devices: empty list" t_empty

t_no_daemon() {
	USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/no-such-socket same_as_debian nodaemon idevice_id -l
	expect_eq "idevice_id -l (no daemon): stderr" "$(cat "$E2E_TMP/nodaemon.ours.err")" "ERROR: Unable to retrieve device list!"
	expect_status "idevice_id -l (no daemon)" "$(cat "$E2E_TMP/nodaemon.ours.rc")" 255
}
check "no daemon: the tool's error message and status" t_no_daemon

e2e_finish
