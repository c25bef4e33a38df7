#!/usr/bin/env python3
"""TCP clients of the USB-backend e2e scripts (tests/e2e/9*-usb-*.sh), for what
tests/e2e/client.py does not check: that a stream cut short (device unplugged, RST)
delivers exactly a prefix of what the device sent -- nothing lost in the middle, nothing
duplicated -- and then ends, and slow readers of the source service.

Usage: client.py MODE ARGS...; exit status 0 = the expectation of the mode held. Each
mode prints one result line (`... N bytes ...`) that the scripts read."""

import array, os, socket, sys, threading, time

TIMEOUT = 5  # longest wait for data or for the end of the stream


def connect(host, port):
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            s.settimeout(TIMEOUT)
            return s
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def source_pattern(offset, n):
    """Bytes offset..offset+n of the simulator's source service: byte i is i % 251."""
    period = bytes(range(251))
    start = offset % 251
    reps = (start + n) // 251 + 1
    return (period * reps)[start:start + n]


def counter_stream(offset, n):
    """Bytes offset..offset+n of a stream of 32-bit big-endian counters (0, 1, 2, ...):
    any lost, repeated or reordered piece shows up as a mismatch at its position."""
    first = offset // 4
    last = (offset + n + 3) // 4
    a = array.array("I", range(first, last))
    if sys.byteorder == "little":
        a.byteswap()
    b = a.tobytes()
    skip = offset - first * 4
    return b[skip:skip + n]


def first_mismatch(got, want):
    n = min(len(got), len(want))
    lo = 0
    step = 1 << 16
    while lo < n:
        hi = min(n, lo + step)
        if got[lo:hi] != want[lo:hi]:
            for i in range(lo, hi):
                if got[i] != want[i]:
                    return i
        lo = hi
    return None if len(got) <= len(want) else len(want)


class Reader:
    """Reads a socket to the end (EOF or reset), optionally in small pieces with pauses."""

    def __init__(self, s):
        self.s = s
        self.parts = []
        self.got = 0
        self.end = None  # "EOF" / "reset"

    def read(self, limit=None, piece=65536, pause_every=0, pause=0.0):
        next_pause = pause_every
        while self.end is None and (limit is None or self.got < limit):
            want = piece if limit is None else min(piece, limit - self.got)
            try:
                b = self.s.recv(want)
            except ConnectionResetError:
                self.end = "reset"
                break
            except socket.timeout:
                raise TimeoutError(f"no data and no end of stream for {TIMEOUT} s after {self.got} bytes")
            if not b:
                self.end = "EOF"
                break
            self.parts.append(b)
            self.got += len(b)
            if pause_every and self.got >= next_pause:
                time.sleep(pause)
                next_pause += pause_every

    def data(self):
        return b"".join(self.parts)


def check_prefix(label, got, want):
    i = first_mismatch(got, want)
    if i is not None:
        print(f"{label}: {len(got)} bytes, WRONG from offset {i} "
              f"(got {got[i:i + 8].hex()}, expected {want[i:i + 8].hex()})")
        return False
    return True


def main(mode, *args):
    if mode == "source-cut":
        # HOST PORT READYFILE AFTER [STALL [GOFILE]]: read the source service; after AFTER
        # bytes write READYFILE (the script then unplugs the device or resets the
        # stream), optionally stop reading for STALL seconds or until GOFILE exists (a
        # reader that is behind when the stream is cut), then read on until the end.
        # Everything received must be the source's pattern from offset 0, then EOF or
        # reset.
        host, port, ready, after = args[0], args[1], args[2], int(args[3])
        stall = float(args[4]) if len(args) > 4 else 0.0
        go = args[5] if len(args) > 5 else None
        s = connect(host, port)
        r = Reader(s)
        r.read(limit=after)
        with open(ready, "w") as f:
            f.write("STREAMING\n")
        deadline = time.monotonic() + stall
        while time.monotonic() < deadline and not (go and os.path.exists(go)):
            time.sleep(0.005)
        try:
            r.read()
        except TimeoutError as e:
            got = r.data()
            ok = check_prefix("source-cut", got, source_pattern(0, len(got)))
            print(f"source-cut: {len(got)} bytes ({'pattern intact' if ok else 'pattern WRONG'}), then {e}")
            return 1
        got = r.data()
        if not check_prefix("source-cut", got, source_pattern(0, len(got))):
            return 1
        print(f"source-cut: {len(got)} bytes, pattern intact, then {r.end}")
        return 0 if r.end else 1

    if mode == "echo-cut":
        # HOST PORT READYFILE AFTER: send a counter stream to an echo service while
        # reading the echo; after AFTER bytes echoed write READYFILE and go on until the
        # connection ends. The echo must be a prefix of what was sent.
        host, port, ready, after = args[0], args[1], args[2], int(args[3])
        s = connect(host, port)
        sent = [0]
        stop = threading.Event()

        def writer():
            chunk = 65536
            try:
                while not stop.is_set():
                    s.sendall(counter_stream(sent[0], chunk))
                    sent[0] += chunk
            except OSError:
                pass

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        r = Reader(s)
        try:
            r.read(limit=after)
            with open(ready, "w") as f:
                f.write("STREAMING\n")
            r.read()
        except TimeoutError as e:
            stop.set()
            s.shutdown(socket.SHUT_RDWR)
            t.join(5)
            got = r.data()
            ok = check_prefix("echo-cut", got, counter_stream(0, len(got)))
            print(f"echo-cut: {len(got)} bytes echoed ({'prefix intact' if ok else 'prefix WRONG'}), then {e}")
            return 1
        stop.set()
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(5)
        got = r.data()
        if not check_prefix("echo-cut", got, counter_stream(0, len(got))):
            return 1
        print(f"echo-cut: {len(got)} bytes echoed (of at least {sent[0]} sent), prefix intact, then {r.end}")
        return 0 if r.end and len(got) >= after else 1

    if mode == "source-head":
        # HOST PORT NBYTES: the first NBYTES of the source are its pattern; then close.
        host, port, n = args[0], args[1], int(args[2])
        s = connect(host, port)
        r = Reader(s)
        try:
            r.read(limit=n)
        except TimeoutError as e:
            print(f"source-head: {r.got} bytes, then {e}")
            return 1
        got = r.data()
        s.close()
        if not check_prefix("source-head", got, source_pattern(0, n)):
            return 1
        print(f"source-head: {len(got)} bytes, pattern intact")
        return 0 if len(got) == n else 1

    if mode == "source-slow":
        # HOST PORT NBYTES PIECE PAUSE_EVERY PAUSE: read the whole source in PIECE-byte
        # reads, sleeping PAUSE seconds after every PAUSE_EVERY bytes; then EOF.
        host, port, n = args[0], args[1], int(args[2])
        piece, every, pause = int(args[3]), int(args[4]), float(args[5])
        s = connect(host, port)
        r = Reader(s)
        try:
            r.read(piece=piece, pause_every=every, pause=pause)
        except TimeoutError as e:
            print(f"source-slow: {r.got} bytes, then {e}")
            return 1
        got = r.data()
        if not check_prefix("source-slow", got, source_pattern(0, n)):
            return 1
        print(f"source-slow: {len(got)} bytes in pieces of {piece}, then {r.end}")
        return 0 if len(got) == n else 1

    print(f"unknown mode {mode}")
    return 2


sys.exit(main(*sys.argv[1:]))
