#!/usr/bin/env bash
# ideviceinfo (libimobiledevice 1.3.0) with our libusbmuxd-2.0.so.6, against the test
# daemon's minimal lockdownd (port 62078, reached with usbmuxd_connect):
#   -s (all values of the first USB device), -s -u UDID (each device, also a UDID the
#   library normalised), -s -k KEY, -s -k <missing key>, -s -x (XML plist), -s -u
#   <unknown UDID>, no daemon. Outputs and exit statuses must equal those with Debian's
#   library, and the daemon and its lockdownd must receive the same requests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init ideviceinfo
e2e_require_programs ideviceinfo

USB1_SERIAL=001A2B3C4D5E6F7080901234 # the library lists it as 001A2B3C-4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60

# What the test daemon's lockdownd serves for a device (lib.sh's lockdownd_values):
# SerialNumber, UniqueChipID and UniqueDeviceID are derived from the serial.
USB1_VALUES=$(lockdownd_values F2L080901234 5575015917715198516 "$USB1_SERIAL")
USB2_VALUES=$(lockdownd_values F2LC3D4E5F60 2844626588163936 "$USB2")

testd_start --usb "$USB1_SERIAL,3" --usb "$USB2,5"

t_simple() {
	same_as_debian s ideviceinfo -s
	expect_status "ideviceinfo -s" "$(cat "$E2E_TMP/s.ours.rc")" 0
	expect_eq "ideviceinfo -s (first device)" "$(cat "$E2E_TMP/s.ours.out")" "$USB1_VALUES"
}
check "ideviceinfo -s prints every value of the first device" t_simple

t_udid() {
	same_as_debian u2 ideviceinfo -s -u "$USB2"
	expect_eq "ideviceinfo -s -u $USB2" "$(cat "$E2E_TMP/u2.ours.out")" "$USB2_VALUES"
	same_as_debian u1 ideviceinfo -s -u "$USB1"
	expect_eq "ideviceinfo -s -u $USB1" "$(cat "$E2E_TMP/u1.ours.out")" "$USB1_VALUES"
}
check "ideviceinfo -s -u UDID selects the device" t_udid

t_key() {
	same_as_debian k ideviceinfo -s -u "$USB2" -k ProductVersion
	expect_eq "ideviceinfo -s -k ProductVersion" "$(cat "$E2E_TMP/k.ours.out")" "15.8"
	same_as_debian k2 ideviceinfo -s -k DeviceName
	expect_eq "ideviceinfo -s -k DeviceName" "$(cat "$E2E_TMP/k2.ours.out")" "Test iPhone"
	same_as_debian nokey ideviceinfo -s -k NoSuchKey
	expect_eq "ideviceinfo -s -k NoSuchKey" "$(cat "$E2E_TMP/nokey.ours.out")" ""
	expect_status "ideviceinfo -s -k NoSuchKey" "$(cat "$E2E_TMP/nokey.ours.rc")" 0
}
check "ideviceinfo -s -k KEY prints one value" t_key

t_xml() {
	same_as_debian x ideviceinfo -s -u "$USB2" -x
	python3 - "$E2E_TMP/x.ours.out" "$USB2" <<'EOF'
import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
assert d["UniqueDeviceID"] == sys.argv[2], d
assert d["ProductType"] == "iPhone12,1" and d["HostAttached"] is True, d
assert len(d) == 20, sorted(d)
EOF
}
check "ideviceinfo -s -x prints the values as an XML plist" t_xml

# LD_NEW = the new lines of the (cumulative) lockdownd request log of device 5.
LOCKDOWN_SEEN=0
LD_NEW=
lockdown_new() {
	testd_cmd "lockdown-log 5"
	LD_NEW=$(printf '%s\n' "${TESTD_REPLY[@]}" | grep '^LOCKDOWN' | tail -n "+$((LOCKDOWN_SEEN + 1))")
	LOCKDOWN_SEEN=${TESTD_REPLY[-1]#OK }
}

t_requests() {
	have_debian || return 0
	local ours_log debian_log ours_ld debian_ld
	lockdown_new
	testd_cmd log-clear
	ours ideviceinfo -s -u "$USB2" -k ProductType >/dev/null
	ours_log=$(testd_log)
	lockdown_new
	ours_ld=$LD_NEW
	testd_cmd log-clear
	debian ideviceinfo -s -u "$USB2" -k ProductType >/dev/null
	debian_log=$(testd_log)
	lockdown_new
	debian_ld=$LD_NEW
	expect_eq "daemon requests (ours vs Debian's)" "$ours_log" "$debian_log"
	expect_eq "daemon requests" "$ours_log" 'LOG version=1 tag=1 type=ListDevices ProgName="ideviceinfo" kLibUSBMuxVersion=3
LOG version=1 tag=2 type=Connect ProgName="ideviceinfo" kLibUSBMuxVersion=3 DeviceID=5 PortNumber=32498 device=5 port=62078'
	expect_eq "lockdownd requests (ours vs Debian's)" "$ours_ld" "$debian_ld"
	expect_eq "lockdownd requests" "$ours_ld" 'LOCKDOWN Label="ideviceinfo" Key="ProductType" Request="GetValue"'
}
check "the daemon and lockdownd get the same requests as with Debian's library" t_requests

t_unknown() {
	same_as_debian unknown ideviceinfo -s -u 00008030-00000000DEADBEEF
	expect_eq "ideviceinfo -s -u <unknown>: stdout" "$(cat "$E2E_TMP/unknown.ours.out")" \
		"ERROR: Device 00008030-00000000DEADBEEF not found!"
	expect_status "ideviceinfo -s -u <unknown>" "$(cat "$E2E_TMP/unknown.ours.rc")" 255
}
check "ideviceinfo -s -u <unknown UDID>: error message, status 255" t_unknown

t_no_daemon() {
	USBMUXD_SOCKET_ADDRESS=UNIX:$E2E_TMP/no-such-socket same_as_debian nodaemon ideviceinfo -s
	expect_eq "ideviceinfo -s (no daemon): stdout" "$(cat "$E2E_TMP/nodaemon.ours.out")" "ERROR: No device found!"
	expect_status "ideviceinfo -s (no daemon)" "$(cat "$E2E_TMP/nodaemon.ours.rc")" 255
}
check "no daemon: error message, status 255" t_no_daemon

e2e_finish
