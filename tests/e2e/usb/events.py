#!/usr/bin/env python3
"""An event subscriber for the USB-backend e2e scripts: loads libusbmuxd-2.0.so.6 (the one
LD_LIBRARY_PATH selects), subscribes with usbmuxd_events_subscribe and prints one line per
event, flushed at once:

    ADD udid=<udid> handle=<n> product_id=0x<hex> conn_type=<n>
    REMOVE handle=<n>
    PAIRED handle=<n>

Usage: events.py STOPFILE. When STOPFILE appears it unsubscribes (the REMOVE replay is
printed too), prints `UNSUBSCRIBED <ms>` (how long usbmuxd_events_unsubscribe took) and
exits 0."""

import ctypes, os, sys, time


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("product_id", ctypes.c_uint32),
        ("udid", ctypes.c_char * 44),
        ("conn_type", ctypes.c_int),
        ("conn_data", ctypes.c_uint8 * 200),
    ]


class Event(ctypes.Structure):
    _fields_ = [("event", ctypes.c_int), ("device", DeviceInfo)]


CALLBACK = ctypes.CFUNCTYPE(None, ctypes.POINTER(Event), ctypes.c_void_p)


def on_event(event, _user_data):
    e = event.contents
    d = e.device
    if e.event == 1:
        line = (f"ADD udid={d.udid.decode()} handle={d.handle} product_id=0x{d.product_id:04x} "
                f"conn_type={d.conn_type}")
    elif e.event == 2:
        line = f"REMOVE handle={d.handle}"
    elif e.event == 3:
        line = f"PAIRED handle={d.handle}"
    else:
        line = f"EVENT{e.event} handle={d.handle}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(stopfile):
    lib = ctypes.CDLL("libusbmuxd-2.0.so.6")
    lib.usbmuxd_events_subscribe.argtypes = [ctypes.POINTER(ctypes.c_void_p), CALLBACK, ctypes.c_void_p]
    lib.usbmuxd_events_unsubscribe.argtypes = [ctypes.c_void_p]
    cb = CALLBACK(on_event)
    ctx = ctypes.c_void_p()
    r = lib.usbmuxd_events_subscribe(ctypes.byref(ctx), cb, None)
    if r != 0:
        print(f"SUBSCRIBE FAILED {r}", flush=True)
        return 1
    print("SUBSCRIBED", flush=True)
    while not os.path.exists(stopfile):
        time.sleep(0.02)
    t = time.monotonic()
    r = lib.usbmuxd_events_unsubscribe(ctx)
    ms = (time.monotonic() - t) * 1000
    print(f"UNSUBSCRIBED {ms:.0f} result={r}", flush=True)
    return 0 if r == 0 else 1


sys.exit(main(sys.argv[1]))
