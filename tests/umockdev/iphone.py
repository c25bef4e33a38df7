#!/usr/bin/python3
"""A simulated iPhone on a umockdev USB bus, for the libusb transport (src/usb/rusb.rs).

Run by tests/umockdev/run.sh, under umockdev's preload library (umockdev-wrapper):

    iphone.py --simd PATH/usbmux-simd -- PROGRAM [ARGS...]

Builds a testbed with a root hub and an iPhone (05ac:12a8, four configurations, the mux
interface in configurations 3 and 4), plays the device by answering the usbdevfs ioctls
libusb issues (descriptors, configuration, claiming, bulk URBs), and carries the bulk
endpoints of the mux interface to a SimDevice served by `usbmux-simd` (the simbus
protocol of src/usb/simbus.rs: bulk OUT transfers as frames, the device's 16 KiB reads as
frames which are joined into the program's larger IN URBs the way a host controller
would: a URB completes when it is full or at a short read). Then runs PROGRAM with the
testbed visible (UMOCKDEV_DIR, USBMUXD_UMOCKDEV_SERIAL) and checks what the USB side saw.
Prints a summary; exits with PROGRAM's status, or 1 if a check failed.

Written for umockdev 0.17 (Debian 12); see /work/shared/notes/usb-without-hardware.md
for the pitfalls this works around (FIFO device node, bConfigurationValue in sysfs,
timer slack).
"""

import argparse
import ctypes
import errno
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import GLib, UMockdev  # noqa: E402

UDID = "00008030-001A2B3C4D5E6F70"
SERIAL = UDID.replace("-", "")
BUS, DEVNUM = 1, 2
MUX_IFACE, EP_OUT, EP_IN, MPS = 1, 0x04, 0x85, 512
SIM_READ = 16384
DEBUG = bool(os.environ.get("UMOCKDEV_IPHONE_DEBUG"))


def trace(*what):
    if DEBUG:
        print(f"[iphone {GLib.get_monotonic_time() // 1000 % 100000:5d}]", *what, file=sys.stderr, flush=True)

# ---- descriptors -------------------------------------------------------------------


def endpoint(addr, attrs, mps, interval=0):
    return struct.pack("<BBBBHB", 7, 5, addr, attrs, mps, interval)


def interface(number, triplet, endpoints):
    return struct.pack("<BBBBBBBBB", 9, 4, number, 0, len(endpoints), *triplet, 0) + b"".join(endpoints)


def configuration(value, interfaces):
    body = b"".join(interfaces)
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), len(interfaces), value, 0, 0xC0, 250) + body


PTP = interface(0, (6, 1, 1), [endpoint(0x81, 2, MPS), endpoint(0x02, 2, MPS), endpoint(0x83, 3, 64, 10)])
MUX = interface(MUX_IFACE, (0xFF, 0xFE, 2), [endpoint(EP_OUT, 2, MPS), endpoint(EP_IN, 2, MPS)])
TETHER = interface(2, (0xFF, 0xFD, 1), [endpoint(0x86, 2, MPS), endpoint(0x07, 2, MPS)])
CONFIGS = [
    configuration(1, [PTP]),
    configuration(2, [interface(0, (1, 1, 0), [])]),
    configuration(3, [PTP, MUX]),
    configuration(4, [PTP, MUX, TETHER]),
]
DEVICE = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, 0x05AC, 0x12A8, 0x1101, 1, 2, 3, len(CONFIGS))
HUB_DEVICE = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 9, 0, 1, 64, 0x1D6B, 0x0002, 0x0601, 3, 2, 1, 1)
HUB_CONFIG = configuration(1, [interface(0, (9, 0, 0), [endpoint(0x81, 3, 4, 12)])])


def string_descriptor(text):
    data = text.encode("utf-16-le")
    return bytes([2 + len(data), 3]) + data


STRINGS = {0: bytes([4, 3, 0x09, 0x04]), 1: string_descriptor("Apple Inc."), 2: string_descriptor("iPhone"),
           3: string_descriptor(SERIAL)}

# ---- usbdevfs ------------------------------------------------------------------------


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (ord("U") << 8) | nr


_IO, _IOW, _IOR, _IOWR = 0, 1, 2, 3
USBDEVFS_SETINTERFACE = ioc(_IOR, 4, 8)
USBDEVFS_SETCONFIGURATION = ioc(_IOR, 5, 4)
USBDEVFS_GETDRIVER = ioc(_IOW, 8, 260)
USBDEVFS_SUBMITURB = ioc(_IOR, 10, 56)
USBDEVFS_DISCARDURB = ioc(_IO, 11, 0)
USBDEVFS_REAPURB = ioc(_IOW, 12, 8)
USBDEVFS_REAPURBNDELAY = ioc(_IOW, 13, 8)
USBDEVFS_CLAIMINTERFACE = ioc(_IOR, 15, 4)
USBDEVFS_RELEASEINTERFACE = ioc(_IOR, 16, 4)
USBDEVFS_CONNECTINFO = ioc(_IOW, 17, 8)
USBDEVFS_IOCTL = ioc(_IOWR, 18, 16)
USBDEVFS_RESET = ioc(_IO, 20, 0)
USBDEVFS_CLEAR_HALT = ioc(_IOR, 21, 4)
USBDEVFS_GET_CAPABILITIES = ioc(_IOR, 26, 4)
USBDEVFS_DISCONNECT_CLAIM = ioc(_IOR, 27, 264)
USBDEVFS_GET_SPEED = ioc(_IO, 31, 0)
CAPS = 0x01 | 0x02 | 0x04 | 0x08 | 0x10  # zero packet, bulk continuation, no size limit, reap after disconnect, SG
URB_CONTROL, URB_BULK = 2, 3
URB_SIZE = 56
USB_SPEED_HIGH = 3


class Urb:
    """A submitted URB: the client's struct and buffer (umockdev IoctlData), and progress."""

    def __init__(self, data, buffer, kind, ep, length):
        self.data, self.buffer, self.kind, self.ep, self.length = data, buffer, kind, ep, length
        self.filled = bytearray()

    def finish(self, status, payload=None, offset=0):
        if payload is not None and len(payload) > 0:
            self.buffer.update(offset, list(payload))
        actual = len(self.filled) if payload is None else len(payload)
        self.data.update(4, list(struct.pack("<i", status)))
        self.data.update(28, list(struct.pack("<i", actual)))


class Stats:
    def __init__(self):
        self.set_configuration = []
        self.claimed = []
        self.released = []
        self.control = []
        self.in_urb_sizes = set()
        self.max_in_pending = 0
        self.out_transfers = 0
        self.out_zlps = 0
        self.in_completions = 0
        self.discarded = 0
        self.unplugged = False
        self.ioctls = 0


class Iphone(UMockdev.IoctlBase):
    def __init__(self, testbed, syspath, fifo, simd_socket, bus_id):
        super().__init__()
        self.testbed, self.syspath, self.fifo = testbed, syspath, fifo
        self.simd_socket, self.bus_id = simd_socket, bus_id
        self.stats = Stats()
        self.pending_in = []  # IN URBs waiting for data, in submission order
        self.reapable = []  # completed URBs, in completion order
        self.frames = []  # device reads that arrived with no IN URB queued
        self.sim = None
        self.unplugged = False
        self.rx = bytearray()
        self.signalled = False
        # umockdev calls the ioctl handler on its own thread, the simulator socket is
        # served by the main loop: one lock for all the state.
        self.lock = threading.RLock()
        self.update_poll()

    # The device node is a FIFO kept full, so libusb's poll(POLLOUT) only wakes it when
    # a URB is reapable (the FIFO is drained by a page then).
    def update_poll(self):
        want = bool(self.reapable)
        if want and not self.signalled:
            try:
                os.read(self.fifo, 65536)
            except BlockingIOError:
                pass
            self.signalled = True
        elif not want and self.signalled or not hasattr(self, "_filled"):
            self._filled = True
            try:
                while True:
                    os.write(self.fifo, b"\0" * 4096)
            except BlockingIOError:
                pass
            self.signalled = False

    def complete_urb(self, urb):
        trace("complete", hex(urb.ep), id(urb) % 10000, "len", len(urb.filled), "reapable", len(self.reapable) + 1)
        self.reapable.append(urb)
        self.update_poll()

    def connect_sim(self):
        # After a release the simulator may not have seen the previous connection close
        # yet ("busy"): try again for a while.
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.simd_socket)
            s.sendall(f"USBSIMBUS 1 OPEN {self.bus_id}\n".encode())
            line = b""
            while not line.endswith(b"\n"):
                line += s.recv(1)
            if b" OK" in line:
                break
            s.close()
            if b" busy " not in line:
                raise RuntimeError(f"simd refused: {line!r}")
            time.sleep(0.01)
        else:
            raise RuntimeError("simd kept the device busy")
        s.setblocking(False)
        self.sim = s
        self.watch = GLib.io_add_watch(s.fileno(), GLib.IO_IN | GLib.IO_HUP, self.on_sim)

    def on_sim(self, fd, cond):
        with self.lock:
            return self.on_sim_locked()

    def on_sim_locked(self):
        try:
            chunk = self.sim.recv(1 << 20)
        except BlockingIOError:
            return True
        trace("sim read", len(chunk), "pending IN", len(self.pending_in))
        if not chunk:
            # The simulator unplugged the device: what a disconnect does to URBs.
            self.unplugged = True
            for urb in self.pending_in:
                urb.finish(-errno.ENODEV)
                self.complete_urb(urb)
            self.pending_in = []
            self.watch = None
            return False
        self.rx += chunk
        while len(self.rx) >= 4:
            n = struct.unpack(">I", self.rx[:4])[0]
            if len(self.rx) < 4 + n:
                break
            self.frames.append(bytes(self.rx[4:4 + n]))
            trace("frame", n, bytes(self.rx[4:4 + 8]).hex() if n >= 8 else "")
            del self.rx[:4 + n]
        self.feed_in()
        return True

    def feed_in(self):
        """Moves device reads into IN URBs like a host controller: a URB completes when
        full or when a read ends short (a short packet or ZLP ended the transfer)."""
        while self.frames and self.pending_in:
            frame = self.frames.pop(0)
            urb = self.pending_in[0]
            room = urb.length - len(urb.filled)
            urb.filled += frame[:room]
            if len(frame) > room:
                self.frames.insert(0, frame[room:])
            if len(urb.filled) == urb.length or len(frame) < SIM_READ:
                self.pending_in.pop(0)
                urb.finish(0, bytes(urb.filled))
                self.stats.in_completions += 1
                self.complete_urb(urb)

    def send_out(self, payload):
        """False if the simulator has already unplugged the device."""
        try:
            self.sim.setblocking(True)
            self.sim.sendall(struct.pack(">I", len(payload)) + payload)
            self.sim.setblocking(False)
            return True
        except OSError:
            self.unplugged = True
            return False

    def control(self, setup, buffer):
        rtype, req, value, index, length = struct.unpack("<BBHHH", setup)
        self.stats.control.append((rtype, req, value, index, length))
        if rtype == 0x80 and req == 6:
            kind, idx = value >> 8, value & 0xFF
            data = None
            if kind == 1:
                data = DEVICE
            elif kind == 2 and idx < len(CONFIGS):
                data = CONFIGS[idx]
            elif kind == 3 and idx in STRINGS and (idx == 0 or index == 0x0409):
                data = STRINGS[idx]
            if data is not None:
                return 0, data[:length]
        if rtype == 0x80 and req == 0:  # GET_STATUS
            return 0, b"\x01\x00"[:length]
        return -errno.EPIPE, b""  # stall (incl. Apple's mode requests)

    def set_config(self, value):
        self.stats.set_configuration.append(value)
        self.testbed.set_attribute(self.syspath, "bConfigurationValue", str(value))

    def do_handle_ioctl(self, client):
        with self.lock:
            return self.handle_ioctl_locked(client)

    def handle_ioctl_locked(self, client):
        self.stats.ioctls += 1
        req = client.get_request()
        trace("ioctl", hex(req))
        arg = client.get_arg()
        size = (req >> 16) & 0x3FFF

        def ok(result=0):
            client.complete(result, 0)
            return True

        def fail(err):
            client.complete(-1, err)
            return True

        if req == USBDEVFS_GET_CAPABILITIES:
            data = arg.resolve(0, size)
            data.update(0, list(struct.pack("<I", CAPS)))
            return ok()
        if req == USBDEVFS_GET_SPEED:
            return ok(USB_SPEED_HIGH)
        if req == USBDEVFS_CONNECTINFO:
            data = arg.resolve(0, size)
            data.update(0, list(struct.pack("<IB3x", DEVNUM, 0)))
            return ok()
        if req in (USBDEVFS_GETDRIVER, USBDEVFS_IOCTL):
            return fail(errno.ENODATA)  # no kernel driver bound
        if req == USBDEVFS_SETCONFIGURATION:
            value = struct.unpack("<i", bytes(arg.resolve(0, 4).retrieve()))[0]
            self.set_config(value)
            return ok()
        if req in (USBDEVFS_CLAIMINTERFACE, USBDEVFS_RELEASEINTERFACE, USBDEVFS_DISCONNECT_CLAIM):
            number = struct.unpack("<I", bytes(arg.resolve(0, 4).retrieve())[:4])[0]
            if req == USBDEVFS_RELEASEINTERFACE:
                self.stats.released.append(number)
                if number == MUX_IFACE and self.sim:
                    if self.watch is not None:
                        GLib.source_remove(self.watch)
                    self.sim.close()
                    self.sim = None
            else:
                self.stats.claimed.append(number)
                if number == MUX_IFACE and self.sim is None:
                    self.connect_sim()
            return ok()
        if req in (USBDEVFS_SETINTERFACE, USBDEVFS_CLEAR_HALT, USBDEVFS_RESET):
            return ok()
        if req == USBDEVFS_SUBMITURB:
            data = arg.resolve(0, URB_SIZE)
            raw = bytes(data.retrieve())
            kind, ep = raw[0], raw[1]
            length = struct.unpack_from("<i", raw, 24)[0]
            buffer = data.resolve(16, length) if length > 0 else None
            content = bytes(buffer.retrieve()) if buffer is not None else b""
            urb = Urb(data, buffer, kind, ep, length)
            if kind == URB_CONTROL:
                status, reply = self.control(content[:8], buffer)
                urb.finish(status, reply, offset=8)
                self.complete_urb(urb)
            elif kind == URB_BULK and ep == EP_OUT and self.sim:
                self.stats.out_transfers += 1
                if length == 0:
                    self.stats.out_zlps += 1
                if not self.send_out(content):
                    return fail(errno.ENODEV)
                urb.finish(0, b"")
                urb.data.update(28, list(struct.pack("<i", length)))
                self.complete_urb(urb)
            elif kind == URB_BULK and self.unplugged:
                return fail(errno.ENODEV)
            elif kind == URB_BULK and ep == EP_IN and self.sim:
                trace("IN URB", id(urb) % 10000)
                self.stats.in_urb_sizes.add(length)
                self.pending_in.append(urb)
                self.stats.max_in_pending = max(self.stats.max_in_pending, len(self.pending_in))
                self.feed_in()
            else:
                return fail(errno.EINVAL)
            return ok()
        if req == USBDEVFS_DISCARDURB:
            addr = struct.unpack("<Q", bytes(arg.retrieve())[:8])[0]
            for urb in self.pending_in:
                if urb.data.client_addr == addr:
                    self.pending_in.remove(urb)
                    urb.finish(-errno.ENOENT, bytes(urb.filled))
                    self.stats.discarded += 1
                    self.complete_urb(urb)
                    return ok()
            return fail(errno.EINVAL)
        if req in (USBDEVFS_REAPURB, USBDEVFS_REAPURBNDELAY):
            if not self.reapable:
                return fail(errno.EAGAIN)
            urb = self.reapable.pop(0)
            slot = arg.resolve(0, 8)
            slot.set_ptr(0, urb.data)
            self.update_poll()
            return ok()
        return fail(errno.ENOTTY)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--simd", required=True)
    ap.add_argument("program", nargs="+")
    args = ap.parse_args()

    # Pitfall 4 of the notes: the preload sleeps after every emulated ioctl.
    ctypes.CDLL(None).prctl(29, 1)  # PR_SET_TIMERSLACK, 1 ns

    testbed = UMockdev.Testbed.new()
    root = testbed.get_root_dir()
    sock_path = os.path.join(root, "simd.sock")
    env_no_preload = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UMOCKDEV_DIR")}
    simd = subprocess.Popen([args.simd, "--socket", sock_path, "--device", UDID], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env_no_preload)
    ready = simd.stdout.readline()
    if not ready.startswith("READY"):
        sys.exit(f"usbmux-simd did not start: {ready!r}")
    simd.stdin.write("list\n")
    simd.stdin.flush()
    bus_id = None
    while True:
        line = simd.stdout.readline().strip()
        if line.startswith("DEVICE"):
            fields = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
            bus_id = int(fields.get("bus_id", "0"), 0)
        if line.startswith("OK") or line.startswith("ERR") or not line:
            break
    if bus_id is None:
        sys.exit("usbmux-simd listed no device")

    hub = testbed.add_device("usb", "usb1", None,
                             ["busnum", "1", "devnum", "1", "speed", "480", "bConfigurationValue", "1",
                              "idVendor", "1d6b", "idProduct", "0002", "dev", "189:0"],
                             ["DEVNAME", "/dev/bus/usb/001/001", "DEVTYPE", "usb_device", "BUSNUM", "001", "DEVNUM", "001"])
    testbed.set_attribute_binary(hub, "descriptors", list(HUB_DEVICE + HUB_CONFIG))
    dev = testbed.add_device("usb", "1-1", hub,
                             ["busnum", str(BUS), "devnum", str(DEVNUM), "speed", "480", "bConfigurationValue", "",
                              "idVendor", "05ac", "idProduct", "12a8", "serial", SERIAL, "bNumConfigurations", "4",
                              "dev", "189:1"],
                             ["DEVNAME", "/dev/bus/usb/001/002", "DEVTYPE", "usb_device", "BUSNUM", "001", "DEVNUM", "002",
                              "PRODUCT", "5ac/12a8/1101"])
    testbed.set_attribute_binary(dev, "descriptors", list(DEVICE + b"".join(CONFIGS)))
    node_dir = os.path.join(root, "dev", "bus", "usb", "001")
    os.makedirs(node_dir, exist_ok=True)
    open(os.path.join(node_dir, "001"), "w").close()
    node = os.path.join(node_dir, "002")
    os.mkfifo(node)
    fifo = os.open(node, os.O_RDWR | os.O_NONBLOCK)

    iphone = Iphone(testbed, dev, fifo, sock_path, bus_id)
    assert testbed.attach_ioctl("/dev/bus/usb/001/002", iphone)

    unplug_request = os.path.join(root, "unplug-request")
    env = dict(os.environ, UMOCKDEV_DIR=root, USBMUXD_UMOCKDEV_SERIAL=SERIAL,
               USBMUXD_UMOCKDEV_LOCATION=str((BUS << 16) | DEVNUM), USBMUXD_UMOCKDEV_UNPLUG=unplug_request)
    child = subprocess.Popen(args.program, env=env)
    loop = GLib.MainLoop()
    status = {}

    def reap():
        rc = child.poll()
        if rc is None:
            return True
        status["rc"] = rc
        loop.quit()
        return False

    GLib.timeout_add(20, reap)

    def unplug():
        # The program asks for the device to be pulled by creating this file.
        if not os.path.exists(unplug_request):
            return True
        simd.stdin.write(f"unplug {UDID}\n")
        simd.stdin.flush()
        iphone.stats.unplugged = True
        return False

    GLib.timeout_add(20, unplug)
    GLib.timeout_add_seconds(120, lambda: (child.kill(), False)[1])
    loop.run()
    simd.stdin.write("quit\n")
    simd.stdin.flush()
    simd.wait(timeout=10)

    s = iphone.stats
    print(f"umockdev iphone: {s.ioctls} ioctls; SETCONFIGURATION {s.set_configuration}; claimed {s.claimed}; "
          f"released {s.released}; {len(s.control)} control transfers; IN URB sizes {sorted(s.in_urb_sizes)}, "
          f"at most {s.max_in_pending} queued, {s.in_completions} completed with data, {s.discarded} discarded; "
          f"{s.out_transfers} OUT transfers ({s.out_zlps} zero-length){'; unplugged' if s.unplugged else ''}")
    checks = [
        (s.set_configuration == [4], "configuration 4 set exactly once"),
        (s.claimed == [MUX_IFACE, MUX_IFACE], "only the mux interface claimed, once per open"),
        (s.released == [MUX_IFACE, MUX_IFACE], "the mux interface released on every close"),
        (s.in_urb_sizes == {65536}, "bulk IN URBs of 64 KiB"),
        (s.max_in_pending == 3, "three bulk IN URBs queued"),
        (s.discarded == 3, "the three IN URBs of the first open cancelled on close"),
        (s.unplugged, "the device unplugged at the program's request"),
        (s.in_completions >= 4 and s.out_transfers >= 4, "a session went over the bulk endpoints"),
        (s.out_zlps >= 1, "zero-length OUT transfers after packets of a multiple of 512 bytes"),
    ]
    failed = [what for good, what in checks if not good]
    for what in failed:
        print(f"umockdev iphone: CHECK FAILED: {what}")
    rc = status.get("rc", 1)
    if rc != 0:
        print(f"umockdev iphone: the program exited with {rc}")
    sys.exit(rc if rc != 0 else (1 if failed else 0))


if __name__ == "__main__":
    main()
