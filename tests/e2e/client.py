#!/usr/bin/env python3
"""Client side of the e2e scripts (tests/e2e/*.sh): TCP clients for iproxy, a stdin
feeder for inetcat, a stand-in network device service. Usage: client.py MODE ARGS...;
exit status 0 = the expectation of the mode held."""

import hashlib, os, socket, sys, threading, time

TIMEOUT = 20

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

def recv_exact(s, n):
    parts, got = [], 0
    while got < n:
        b = s.recv(min(1 << 20, n - got))
        if not b:
            raise EOFError(f"EOF after {got} of {n} bytes")
        parts.append(b)
        got += len(b)
    return b"".join(parts)

def echo_transfer(s, data, slow=False):
    """Writes data while reading the echo back; returns the echoed bytes."""
    err = []
    def writer():
        try:
            for off in range(0, len(data), 65536):
                s.sendall(data[off:off + 65536])
        except Exception as e:
            err.append(e)
    t = threading.Thread(target=writer)
    t.start()
    parts, got, n = [], 0, len(data)
    pause_at = 1 << 20
    while got < n:
        if slow and got >= pause_at:   # a slow reader: stall 0.2 s after every MiB
            time.sleep(0.2)
            pause_at += 1 << 20
        b = s.recv(min(65536, n - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
    t.join()
    if err:
        raise err[0]
    return b"".join(parts)

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
        back = echo_transfer(s, data, slow=len(args) > 3)
        s.close()
        ok = report("echo", data, back)
        print(f"echo {n} bytes: {'identical' if ok else 'DIFFERENT'}")
        return 0 if ok else 1
    if mode == "parallel":        # HOST PORT K NBYTES: K clients at once
        host, port, k, n = args[0], args[1], int(args[2]), int(args[3])
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
                results[i] = report(f"client {i}", data, echo_transfer(socks[i], data))
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
        want = bytes(i % 251 for i in range(n))
        ok = got == want
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
    print(f"unknown mode {mode}")
    return 2

sys.exit(main(*sys.argv[1:]))
