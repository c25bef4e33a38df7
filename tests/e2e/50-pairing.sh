#!/usr/bin/env bash
# Pair records and the SystemBUID through real programs (libimobiledevice 1.3.0) with our
# libusbmuxd-2.0.so.6 — the paths that need no real device handshake:
#   * `idevicepair systembuid`: usbmuxd_read_buid -> the daemon's SystemBUID;
#   * `idevicepair -u UDID hostid`: usbmuxd_read_pair_record -> the record's HostID, for
#     an XML record and for a binary-plist record (bytes passed through verbatim), and
#     for the first device when no -u is given (the UDID the library normalised);
#   * `ideviceinfo` without -s for a device without pair record: ReadPairRecord answered
#     "not found", then libimobiledevice tries to pair (and fails with the test daemon's
#     lockdownd): the same messages and requests as with Debian's library;
#   * `idevicepair validate` with a record present: same result as Debian's library.
# Not covered: SavePairRecord / DeletePairRecord — `idevicepair pair` / `unpair` reach them
# only after a real lockdownd pairing, which the test daemon does not implement.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init pairing
e2e_require_programs idevicepair ideviceinfo

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60
USB3=00008110-000E0E0E0E0E0E0E # no pair record
BUID=7D3B2C1A-5F4E-4A3B-9C8D-0123456789AB
HOSTID1=AAAAAAAA-1111-2222-3333-444444444444
HOSTID2=BBBBBBBB-5555-6666-7777-888888888888

PAIRS=$E2E_TMP/pairs
mkdir -p "$PAIRS"
python3 - "$PAIRS" "$BUID" "$USB1" "$HOSTID1" "$USB2" "$HOSTID2" <<'EOF'
import plistlib, sys
d, buid, udid1, host1, udid2, host2 = sys.argv[1:]
def record(host):
    return {"HostID": host, "SystemBUID": buid, "WiFiMACAddress": "a4:d1:8c:00:00:02",
            "DeviceCertificate": b"-----BEGIN CERTIFICATE-----\nnot a real one\n",
            "EscrowBag": bytes(range(256))}
with open(f"{d}/SystemConfiguration.plist", "wb") as f:
    plistlib.dump({"SystemBUID": buid}, f)
# The first device's record (named with the dashed UDID, as the library lists it) in
# binary plist format, full of NUL bytes; the second one's as XML.
with open(f"{d}/{udid1}.plist", "wb") as f:
    plistlib.dump(record(host1), f, fmt=plistlib.FMT_BINARY)
with open(f"{d}/{udid2}.plist", "wb") as f:
    plistlib.dump(record(host2), f)
EOF

testd_start --pair-dir "$PAIRS" --usb "$USB1_SERIAL,3" --usb "$USB2,5" --usb "$USB3,7"

t_systembuid() {
	testd_cmd log-clear
	same_as_debian buid idevicepair systembuid
	expect_eq "idevicepair systembuid" "$(cat "$E2E_TMP/buid.ours.out")" "$BUID"
	expect_status "idevicepair systembuid" "$(cat "$E2E_TMP/buid.ours.rc")" 0
	testd_log | grep -q 'type=ReadBUID ProgName="idevicepair"'
}
check "idevicepair systembuid prints the daemon's SystemBUID" t_systembuid

t_hostid() {
	testd_cmd log-clear
	same_as_debian hostid2 idevicepair -u "$USB2" hostid
	expect_eq "idevicepair -u $USB2 hostid (XML record)" "$(cat "$E2E_TMP/hostid2.ours.out")" "$HOSTID2"
	testd_log | grep -q "type=ReadPairRecord ProgName=\"idevicepair\" kLibUSBMuxVersion=3 PairRecordID=\"$USB2\""
	same_as_debian hostid1 idevicepair -u "$USB1" hostid
	expect_eq "idevicepair -u $USB1 hostid (binary record)" "$(cat "$E2E_TMP/hostid1.ours.out")" "$HOSTID1"
	same_as_debian hostid idevicepair hostid
	expect_eq "idevicepair hostid (first device)" "$(cat "$E2E_TMP/hostid.ours.out")" "$HOSTID1"
	testd_log | grep -q "type=ReadPairRecord ProgName=\"idevicepair\" kLibUSBMuxVersion=3 PairRecordID=\"$USB1\""
}
check "idevicepair hostid reads the pair record through the daemon (XML and binary)" t_hostid

t_no_record() {
	testd_cmd log-clear
	same_as_debian norecord ideviceinfo -u "$USB3"
	expect_status "ideviceinfo -u $USB3 (no pair record)" "$(cat "$E2E_TMP/norecord.ours.rc")" 255
	expect_eq "stderr" "$(cat "$E2E_TMP/norecord.ours.err")" "ERROR: Could not connect to lockdownd: Missing value (-12)"
	local ours_log
	ours_log=$(testd_log)
	grep -q "type=ReadPairRecord ProgName=\"ideviceinfo\" kLibUSBMuxVersion=3 PairRecordID=\"$USB3\"" <<<"$ours_log"
	if have_debian; then
		# Each run's requests: ours first, then Debian's, identical.
		local n half
		n=$(wc -l <<<"$ours_log")
		half=$((n / 2))
		expect_eq "requests (ours vs Debian's)" "$(head -n "$half" <<<"$ours_log" | sed 's/tag=[0-9]*//')" \
			"$(tail -n "$half" <<<"$ours_log" | sed 's/tag=[0-9]*//')"
	fi
}
check "ideviceinfo for a device without pair record: same as with Debian's library" t_no_record

t_validate() {
	same_as_debian validate idevicepair -u "$USB2" validate
	# The test daemon's lockdownd cannot start a session: it fails, the same way.
	expect_status "idevicepair validate" "$(cat "$E2E_TMP/validate.ours.rc")" 1
}
check_debian "idevicepair validate with a pair record: same result as Debian's library" t_validate

e2e_finish
