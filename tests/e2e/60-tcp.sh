#!/usr/bin/env bash
# USBMUXD_SOCKET_ADDRESS=127.0.0.1:PORT — the daemon reached over TCP instead of a UNIX
# socket (the test daemon listens on TCP only, so nothing else can answer):
#   idevice_id -l, idevice_id (all devices), ideviceinfo -s -k, idevicepair systembuid,
#   inetcat echo, and an iproxy round trip of 2 MiB, with our library; the outputs equal
#   those with Debian's library. Also the address given as a host name (localhost:PORT).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init tcp
e2e_require_programs idevice_id ideviceinfo idevicepair iproxy inetcat

USB1_SERIAL=001A2B3C4D5E6F7080901234
USB1=001A2B3C-4D5E6F7080901234
USB2=00008030-000A1B2C3D4E5F60
NET=00008030-0000111122223333

testd_start --tcp 127.0.0.1:0 --usb "$USB1_SERIAL,3" --usb "$USB2,5" --network "$NET,127.0.0.1,12"

t_address() {
	[[ $USBMUXD_SOCKET_ADDRESS =~ ^127\.0\.0\.1:[0-9]+$ ]] || {
		echo "daemon address '$USBMUXD_SOCKET_ADDRESS' is not 127.0.0.1:PORT" >&2
		return 1
	}
}
check "the test daemon listens on $TESTD_ADDR" t_address

t_idevice_id() {
	same_as_debian list idevice_id -l
	expect_eq "idevice_id -l" "$(cat "$E2E_TMP/list.ours.out")" "$USB1
$USB2"
	same_as_debian all idevice_id
	expect_eq "idevice_id" "$(cat "$E2E_TMP/all.ours.out")" "$USB1 (USB)
$USB2 (USB)
$NET (Network)"
}
check "idevice_id -l / idevice_id over TCP" t_idevice_id

t_hostname() {
	local port=${TESTD_ADDR##*:}
	USBMUXD_SOCKET_ADDRESS=localhost:$port same_as_debian byname idevice_id -l
	expect_eq "idevice_id -l (localhost:$port)" "$(cat "$E2E_TMP/byname.ours.out")" "$USB1
$USB2"
}
if getent ahosts localhost >/dev/null 2>&1; then
	check "USBMUXD_SOCKET_ADDRESS=localhost:PORT (a host name)" t_hostname
else
	record_skip "USBMUXD_SOCKET_ADDRESS=localhost:PORT (a host name)" "localhost does not resolve: no /etc/hosts?"
fi

t_ideviceinfo() {
	same_as_debian info ideviceinfo -s -u "$USB2" -k UniqueDeviceID
	expect_eq "ideviceinfo -s -u $USB2 -k UniqueDeviceID" "$(cat "$E2E_TMP/info.ours.out")" "$USB2"
}
check "ideviceinfo -s -k over TCP" t_ideviceinfo

t_buid() {
	same_as_debian buid idevicepair systembuid
	[[ $(cat "$E2E_TMP/buid.ours.out") =~ ^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$ ]] || {
		echo "idevicepair systembuid printed '$(cat "$E2E_TMP/buid.ours.out")'" >&2
		return 1
	}
}
check "idevicepair systembuid over TCP" t_buid

t_inetcat() {
	printf 'tcp daemon\n' >"$E2E_TMP/line"
	inetcat_feed "$BUILD_DIR" nc "$E2E_TMP/line" 11 -- 7
	expect_eq "inetcat 7" "$(cat "$E2E_TMP/nc.out")" "tcp daemon"
	expect_status "inetcat 7" "$(cat "$E2E_TMP/nc.rc")" 0
}
check "inetcat 7 over TCP" t_inetcat

t_iproxy() {
	iproxy_start "$BUILD_DIR" iproxy PORT:7
	tcp_client echo 127.0.0.1 "$IPROXY_PORT" 2097152
	iproxy_idle
	iproxy_alive
	expect_line "$E2E_TMP/iproxy.out" "Requesting connecion to USB device handle 3 (serial: $USB1), port 7"
}
check "iproxy round trip (2 MiB) over TCP" t_iproxy

e2e_finish
