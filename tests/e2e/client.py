#!/usr/bin/env python3
"""Client side of the e2e scripts (tests/e2e/*.sh): TCP clients for iproxy, a stdin
feeder for inetcat, a stand-in network device service; and, for the USB-backend scripts
(tests/e2e/9*-usb-*.sh), clients checking that a stream cut short (device unplugged,
RST) delivers exactly a prefix of what the device sent -- nothing lost in the middle,
nothing duplicated -- and then ends, and slow readers of the source service (the modes
source-cut, echo-cut, source-head, source-slow; each prints one result line
`... N bytes ...` that the scripts read).

Usage: client.py MODE ARGS...; exit status 0 = the expectation of the mode held."""

import array, hashlib, os, socket, sys, threading, time

TIMEOUT = 20
CUT_TIMEOUT = 5  # the cut / slow modes: longest wait for data or for the end of the stream

def connect(host, port, timeout=TIMEOUT):
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((host, int(port)), timeout=timeout)
            s.settimeout(timeout)
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
                raise TimeoutError(f"no data and no end of stream for {self.s.gettimeout():g} s after {self.got} bytes")
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

def recv_exact(s, n):
    parts, got = [], 0
    while got < n:
        b = s.recv(min(1 << 20, n - got))
        if not b:
            raise EOFError(f"EOF after {got} of {n} bytes")
        parts.append(b)
        got += len(b)
    return b"".join(parts)

def echo_transfer(s, data, slow=False, window=None):
    """Writes data while reading the echo back; returns the echoed bytes. With a window,
    at most that many bytes are sent and not yet echoed back (see echo_window)."""
    err = []
    progress = threading.Condition()
    received = [0]
    def writer():
        try:
            # Windowed: smaller writes, so that the window never drains completely (a
            # stop-and-wait pattern would meet Nagle and delayed ACKs at every turn).
            step = 65536 if window is None else max(1, min(16384, window // 4))
            for off in range(0, len(data), step):
                end = min(off + step, len(data))
                if window is not None:
                    with progress:
                        while end - received[0] > window and not err:
                            progress.wait(1)
                s.sendall(data[off:end])
        except Exception as e:
            err.append(e)
    t = threading.Thread(target=writer)
    t.start()
    parts, got, n = [], 0, len(data)
    pause_at = 1 << 20
    try:
        while got < n:
            if slow and got >= pause_at:   # a slow reader: stall 0.2 s after every MiB
                time.sleep(0.2)
                pause_at += 1 << 20
            b = s.recv(min(65536, n - got))
            if not b:
                break
            parts.append(b)
            got += len(b)
            with progress:
                received[0] = got
                progress.notify()
    except Exception as e:
        with progress:
            err.append(e)
            progress.notify()
        t.join()
        raise
    t.join()
    if err:
        raise err[0]
    return b"".join(parts)

def echo_window():
    """The echo modes' window, from E2E_ECHO_WINDOW (lib.sh's tcp_client passes
    IPROXY_ECHO_WINDOW, set when the iproxy under test is 2.0.2); None: no bound.
    iproxy 2.0.2 serves both directions of a connection from one thread and gives up a
    32 KiB chunk it cannot send within 1 s (tools.md 1.6): with an echo client that writes
    without bound, the bytes in flight grow until every buffer between the client and the
    device is full, and 2.0.2 blocked in its send to the device no longer reads the echo,
    so a chunk is dropped. A window smaller than those buffers keeps 2.0.2 from ever
    blocking that long, the way a request/response client would."""
    w = os.environ.get("E2E_ECHO_WINDOW")
    return int(w) if w else None

def report(label, sent, back):
    hs, hb = hashlib.sha256(sent).hexdigest(), hashlib.sha256(back).hexdigest()
    if hs != hb:
        print(f"{label}: sent {len(sent)} bytes sha256 {hs}, got back {len(back)} bytes sha256 {hb}")
        return False
    return True

def main(mode, *args):
    if mode == "echo":            # HOST PORT NBYTES [slow]: random bytes echoed byte-exact
        host, port, n = args[0], args[1], int(args[2])
        s = connect(host, port)
        data = os.urandom(n)
        back = echo_transfer(s, data, slow=len(args) > 3, window=echo_window())
        s.close()
        ok = report("echo", data, back)
        print(f"echo {n} bytes: {'identical' if ok else 'DIFFERENT'}")
        return 0 if ok else 1
    if mode == "parallel":        # HOST PORT K NBYTES: K clients at once
        host, port, k, n = args[0], args[1], int(args[2]), int(args[3])
        window = echo_window()
        socks = []
        # Connect one after the other, each proven live by a round trip, so that every
        # forwarding thread of iproxy is set up before the next client arrives.
        for i in range(k):
            s = connect(host, port)
            msg = f"hello {i}\n".encode()
            s.sendall(msg)
            got = recv_exact(s, len(msg))
            if got != msg:
                print(f"client {i}: ping answered with {got!r}")
                return 1
            socks.append(s)
        results = [None] * k
        def run(i):
            data = os.urandom(n)
            try:
                results[i] = report(f"client {i}", data, echo_transfer(socks[i], data, window=window))
            except Exception as e:
                print(f"client {i}: {e!r}")
                results[i] = False
        threads = [threading.Thread(target=run, args=(i,)) for i in range(k)]
        for t in threads: t.start()
        for t in threads: t.join()
        for s in socks: s.close()
        print(f"{k} parallel clients x {n} bytes: {sum(bool(r) for r in results)} identical")
        return 0 if all(results) else 1
    if mode == "closed":          # HOST PORT: the peer closes the connection without data
        s = connect(args[0], args[1])
        try:
            s.sendall(b"anyone there?\n")
        except OSError:
            pass
        try:
            b = s.recv(4096)
        except ConnectionResetError:
            b = b""
        except socket.timeout:
            print("connection stayed open")
            return 1
        if b:
            print(f"unexpected data {b!r}")
            return 1
        print("closed")
        return 0
    if mode == "source":          # HOST PORT NBYTES: receive the source service's pattern
        s = connect(args[0], args[1])
        n = int(args[2])
        parts = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            parts.append(b)
        got = b"".join(parts)
        ok = got == source_pattern(0, n)
        print(f"source: {len(got)} bytes, {'expected pattern' if ok else 'WRONG'}")
        return 0 if ok else 1
    if mode == "midstream":       # HOST PORT READYFILE: stream until the peer goes away
        s = connect(args[0], args[1])
        data = os.urandom(65536)
        if not report("warm-up", data, echo_transfer(s, data)):
            return 1
        with open(args[2], "w") as f:
            f.write("STREAMING\n")
        s.settimeout(0.2)
        deadline = time.monotonic() + 15
        echoed = 0
        chunk = os.urandom(4096)
        while time.monotonic() < deadline:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                print(f"closed (send failed) after {echoed} more bytes")
                return 0
            except socket.timeout:
                pass
            try:
                b = s.recv(65536)
                if not b:
                    print(f"closed (EOF) after {echoed} more bytes")
                    return 0
                echoed += len(b)
            except ConnectionResetError:
                print(f"closed (reset) after {echoed} more bytes")
                return 0
            except socket.timeout:
                pass
        print("connection still open after 15 s")
        return 1
    if mode == "feed":            # INFILE OUTFILE NBYTES [WINDOW]: cat INFILE to stdout,
        # then keep stdout open until OUTFILE holds NBYTES (inetcat exits as soon as its
        # stdin ends). With WINDOW, at most WINDOW bytes are in flight (written but not
        # yet in OUTFILE): inetcat writes to the non-blocking device socket once and
        # drops what does not fit (tools.md §2.4), so an echo test must not outrun it.
        n = int(args[2])
        window = int(args[3]) if len(args) > 3 else None
        with open(args[0], "rb") as f:
            data = f.read()
        out = sys.stdout.buffer
        deadline = time.monotonic() + TIMEOUT
        def outsize():
            try:
                return os.path.getsize(args[1])
            except OSError:
                return 0
        for off in range(0, len(data), 4096):
            while window is not None and off - outsize() > window:
                if time.monotonic() > deadline:
                    return 1
                time.sleep(0.001)
            out.write(data[off:off + 4096])
            out.flush()
        while time.monotonic() < deadline and outsize() < n:
            time.sleep(0.01)
        return 0
    if mode == "echo-server":     # PORTFILE: TCP echo server on 127.0.0.1 (a network
        # device's service, reached directly at its NetworkAddress); runs until killed
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        def serve(c):
            with c:
                while True:
                    b = c.recv(65536)
                    if not b:
                        return
                    c.sendall(b)
        with open(args[0] + ".tmp", "w") as f:
            f.write(f"{srv.getsockname()[1]}\n")
        os.rename(args[0] + ".tmp", args[0])
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    if mode == "random":          # FILE NBYTES
        with open(args[0], "wb") as f:
            f.write(os.urandom(int(args[1])))
        return 0
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
        s = connect(host, port, CUT_TIMEOUT)
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
        s = connect(host, port, CUT_TIMEOUT)
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
        s = connect(host, port, CUT_TIMEOUT)
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
        s = connect(host, port, CUT_TIMEOUT)
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
