//! Test and benchmark helper of the tools (not installed). The test daemon `usbmuxd-testd`
//! runs two threads and two descriptors per echo connection, which cannot hold 10 000
//! connections under a 20 000 descriptor limit, and a Python client cannot saturate a
//! proxy; this helper provides both sides, event-driven:
//!
//! ```text
//! usbmuxd-tools-test daemon --socket PATH [--udid UDID] [--handle N] [--tcp-echo FILE] [--rate MBPS [--write-size BYTES]]
//!     a minimal usbmuxd (plist protocol): ListDevices lists one USB device; Connect to
//!     port 1234 is refused (Result 3), port 9 is a sink, port 19 a source, any other
//!     port an echo. Sink and source first read a byte count (u64, little-endian) and
//!     answer `k`; the source then waits for one byte and sends that many bytes, then
//!     EOF; the sink discards everything until EOF. --tcp-echo also serves an echo on 127.0.0.1 (a network
//!     device's service), its port written to FILE. --rate paces the sources to MBPS
//!     MB/s (10^6 bytes) in all, in writes of BYTES (default 16384), as a device on a
//!     real USB bus delivers them. Prints `READY UNIX:PATH`; runs until killed.
//! usbmuxd-tools-test hold HOST PORT N [--hold-until-stdin-eof | --hold-until-file F] [--timeout S] [--one-by-one]
//!     opens N connections to an echo, proves each with a round trip, prints `HELD N`,
//!     waits (for stdin's EOF, until file F exists, or not at all), does a second round trip on every
//!     connection, prints `VERIFIED N` and closes them. Exit 0 when all N held.
//! usbmuxd-tools-test download HOST PORT CONNS BYTES     (from the source service, port 19)
//! usbmuxd-tools-test upload HOST PORT CONNS BYTES       (to the sink service)
//!     CONNS connections (opened one after the other, each ready before the next) move
//!     BYTES each, all at once; prints `bytes=… seconds=…`.
//! usbmuxd-tools-test setup HOST PORT N PARALLEL
//!     N times: connect, one-byte echo round trip, close; PARALLEL at a time. Prints
//!     `connections=… seconds=…`.
//! usbmuxd-tools-test relay LOCAL_PORT DEVICE_PORT [BUFFER]
//!     the simplest proxy, a reference for the benchmark: accepts on 127.0.0.1:LOCAL_PORT
//!     and, per client, connects to DEVICE_PORT of the first device and copies each way
//!     with blocking read/write calls of BUFFER bytes (default 32768) on a thread of
//!     its own. No polling, no splice: what a user-space relay costs at the least.
//! usbmuxd-tools-test halfclose HOST PORT BYTES
//!     sends BYTES, half-closes, reads the echo to EOF; exit 0 if it is byte-exact.
//! ```

#![forbid(unsafe_code)]

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{accept_with, recv, send, RecvFlags, SendFlags, SocketFlags};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown as StdShutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::exit;
use std::time::{Duration, Instant};
use usbmuxd::proto::{attached_dict, decode_request, encode_plist_message, encode_result, FrameDecoder, Request};
use usbmuxd::{ConnectionType, DeviceRecord};

fn die(msg: &str) -> ! {
    eprintln!("usbmuxd-tools-test: {msg}");
    exit(2)
}

fn main() {
    usbmuxd_tools::sys::raise_nofile_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else { die("usage: see the source") };
    let rest = &args[1..];
    let code = match mode.as_str() {
        "daemon" => daemon(rest),
        "hold" => hold(rest),
        "download" => bulk(rest, false),
        "upload" => bulk(rest, true),
        "setup" => setup(rest),
        "halfclose" => halfclose(rest),
        "relay" => relay(rest),
        other => die(&format!("unknown mode {other}")),
    };
    exit(code)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| die(&format!("missing or bad {what}")))
}

fn addr(host: &str, port: u16) -> SocketAddr {
    (host, port).to_socket_addrs().ok().and_then(|mut a| a.next()).unwrap_or_else(|| die("bad address"))
}

/// Connects, retrying while the listener is not up yet or its backlog is full.
fn connect(a: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(a) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => die(&format!("connect {a}: {e}")),
        }
    }
}

// ---- the daemon ------------------------------------------------------------------------

const CHUNK: usize = 256 * 1024;

enum Service {
    Echo,
    /// Reads an 8-byte header and answers `k`; then discards everything until EOF.
    Sink {
        header: Vec<u8>,
    },
    /// Reads a byte count (u64, little-endian) and answers `k`; after one more byte
    /// (`g`) sends that many bytes, then half-closes.
    Source {
        header: Vec<u8>,
        left: Option<u64>,
        started: bool,
        shut: bool,
    },
}

enum State {
    Handshake(FrameDecoder),
    Serving(Service),
}

struct DConn {
    fd: OwnedFd,
    state: State,
    /// Echo bytes not yet written back.
    pending: Vec<u8>,
    eof: bool,
}

/// Paces the sources to a byte rate (`--rate`), in writes of `write_size`: a token
/// bucket holding 4 ms of the rate (at least one write), enough to catch up with the
/// millisecond granularity of the poll timeout, too little for a burst after a pause.
struct Pacer {
    bytes_per_second: f64,
    write_size: usize,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// How many bytes a source may write now (0: wait).
    fn allowance(&mut self) -> usize {
        let due = (self.start.elapsed().as_secs_f64() * self.bytes_per_second) as u64;
        let capacity = (self.bytes_per_second * 0.004).max(self.write_size as f64) as u64;
        self.sent = self.sent.max(due.saturating_sub(capacity));
        if due >= self.sent + self.write_size as u64 {
            self.write_size
        } else {
            0
        }
    }

    /// Time until the next write is due.
    fn wait(&self) -> Duration {
        let next = (self.sent + self.write_size as u64) as f64 / self.bytes_per_second;
        Duration::from_secs_f64(next).saturating_sub(self.start.elapsed())
    }
}

fn device_list_reply(tag: u32, device: &DeviceRecord) -> Vec<u8> {
    let mut d = plist::Dictionary::new();
    let entry = attached_dict(device, Some(0x1400_0000));
    d.insert("DeviceList".into(), plist::Value::Array(vec![plist::Value::Dictionary(entry)]));
    encode_plist_message(tag, &d)
}

fn daemon(args: &[String]) -> i32 {
    let mut socket = None;
    let mut udid = "00008030-001A2B3C4D5E6F70".to_string();
    let mut handle = 3u32;
    let mut tcp_echo_file = None;
    let mut rate_mbps: Option<f64> = None;
    let mut write_size = 16384usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().unwrap_or_else(|| die(&format!("{a} needs a value")));
        match a.as_str() {
            "--socket" => socket = Some(v()),
            "--udid" => udid = v(),
            "--handle" => handle = v().parse().unwrap_or_else(|_| die("bad handle")),
            "--tcp-echo" => tcp_echo_file = Some(v()),
            "--rate" => {
                rate_mbps = Some(v().parse().ok().filter(|r: &f64| *r > 0.0).unwrap_or_else(|| die("bad rate")))
            }
            "--write-size" => {
                write_size =
                    v().parse().ok().filter(|n| (1..=CHUNK).contains(n)).unwrap_or_else(|| die("bad write size"))
            }
            other => die(&format!("unknown daemon option {other}")),
        }
    }
    let path = socket.unwrap_or_else(|| die("--socket PATH is required"));
    let _ = std::fs::remove_file(&path);
    let unix = UnixListener::bind(&path).unwrap_or_else(|e| die(&format!("bind {path}: {e}")));
    unix.set_nonblocking(true).expect("non-blocking listener");
    let unix = OwnedFd::from(unix);
    let tcp = tcp_echo_file.map(|file| {
        let l = TcpListener::bind("127.0.0.1:0").expect("TCP echo listener");
        l.set_nonblocking(true).expect("non-blocking listener");
        std::fs::write(format!("{file}.tmp"), format!("{}\n", l.local_addr().unwrap().port())).expect("port file");
        std::fs::rename(format!("{file}.tmp"), &file).expect("port file");
        OwnedFd::from(l)
    });
    let device =
        DeviceRecord { handle, product_id: 0x12a8, udid, connection: ConnectionType::Usb, network_address: Vec::new() };
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    const UNIX_LISTENER: u64 = u64::MAX;
    const TCP_LISTENER: u64 = u64::MAX - 1;
    epoll::add(&ep, &unix, epoll::EventData::new_u64(UNIX_LISTENER), epoll::EventFlags::IN).expect("epoll add");
    if let Some(t) = &tcp {
        epoll::add(&ep, t, epoll::EventData::new_u64(TCP_LISTENER), epoll::EventFlags::IN).expect("epoll add");
    }
    println!("READY UNIX:{path}");
    let _ = std::io::stdout().flush();

    let mut conns: HashMap<u64, DConn> = HashMap::new();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let source = vec![0x5au8; CHUNK];
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut again: Vec<u64> = Vec::new();
    let mut pacer = rate_mbps.map(|r| Pacer { bytes_per_second: r * 1e6, write_size, start: Instant::now(), sent: 0 });
    let mut paced: Vec<u64> = Vec::new();
    let mut turn: Vec<u64> = Vec::new();
    loop {
        events.clear();
        let pause = if !again.is_empty() {
            Some(Duration::ZERO)
        } else if paced.is_empty() {
            None
        } else {
            pacer.as_ref().map(Pacer::wait)
        };
        let pause =
            pause.map(|d| rustix::event::Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 });
        let timeout = pause.as_ref();
        match epoll::wait(&ep, spare_capacity(&mut events), timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => die(&format!("epoll_wait: {e}")),
        }
        for ev in &events {
            let token = ev.data.u64();
            if token == UNIX_LISTENER || token == TCP_LISTENER {
                let l = if token == UNIX_LISTENER { &unix } else { tcp.as_ref().unwrap() };
                for _ in 0..256 {
                    match accept_with(l, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                        Ok(fd) => {
                            next_id += 1;
                            let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::ET;
                            epoll::add(&ep, &fd, epoll::EventData::new_u64(next_id), flags).expect("epoll add");
                            let state = if token == UNIX_LISTENER {
                                State::Handshake(FrameDecoder::new(1 << 20))
                            } else {
                                State::Serving(Service::Echo)
                            };
                            conns.insert(next_id, DConn { fd, state, pending: Vec::new(), eof: false });
                        }
                        Err(Errno::AGAIN) => break,
                        Err(Errno::INTR | Errno::CONNABORTED) => {}
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            turn.push(token);
        }
        // This turn: the connections with events, those that used up their last turn
        // with work left, and the paced ones when the pacer allows.
        turn.append(&mut again);
        if pacer.as_mut().is_some_and(|p| p.allowance() > 0) {
            turn.append(&mut paced);
        }
        turn.sort_unstable();
        turn.dedup();
        for token in turn.drain(..) {
            let Some(c) = conns.get_mut(&token) else { continue };
            match serve(c, &device, &mut buf, &source, pacer.as_mut()) {
                Served::Wait => {}
                Served::Paced => paced.push(token),
                Served::Again => again.push(token),
                Served::Close => {
                    conns.remove(&token);
                }
            }
        }
    }
}

enum Served {
    /// Waits for readiness.
    Wait,
    /// Waits for the pacer (`--rate`).
    Paced,
    /// Used its turn with work left.
    Again,
    Close,
}

/// Advances one daemon connection for one turn.
fn serve(c: &mut DConn, device: &DeviceRecord, buf: &mut [u8], source: &[u8], mut pacer: Option<&mut Pacer>) -> Served {
    for _ in 0..8 {
        // Replies and echoed bytes first; while they are pending, read nothing more.
        while !c.pending.is_empty() {
            match send(&c.fd, &c.pending, SendFlags::NOSIGNAL) {
                Ok(n) => {
                    c.pending.drain(..n);
                }
                Err(Errno::AGAIN) => return Served::Wait,
                Err(Errno::INTR) => {}
                Err(_) => return Served::Close,
            }
        }
        if c.eof {
            return Served::Close;
        }
        let mut sending = false;
        if let State::Serving(Service::Source { left: Some(left), started: true, shut, .. }) = &mut c.state {
            if *left > 0 {
                let allowed = pacer.as_deref_mut().map_or(source.len(), Pacer::allowance);
                if allowed == 0 {
                    return Served::Paced;
                }
                match send(&c.fd, &source[..(*left).min(allowed as u64) as usize], SendFlags::NOSIGNAL) {
                    Ok(n) => {
                        *left -= n as u64;
                        if let Some(p) = pacer.as_deref_mut() {
                            p.sent += n as u64;
                        }
                        sending = true;
                    }
                    Err(Errno::INTR) => sending = true,
                    Err(Errno::AGAIN) => {}
                    Err(_) => return Served::Close,
                }
            } else if !*shut {
                // All sent: EOF to the client, then wait for its close.
                let _ = rustix::net::shutdown(&c.fd, rustix::net::Shutdown::Write);
                *shut = true;
            }
        }
        let n = match recv(&c.fd, &mut *buf, RecvFlags::empty()) {
            Ok((0, _)) => {
                c.eof = true;
                continue;
            }
            Ok((n, _)) => n,
            Err(Errno::AGAIN) if sending => continue,
            Err(Errno::AGAIN) => return Served::Wait,
            Err(Errno::INTR) => continue,
            Err(_) => return Served::Close,
        };
        match &mut c.state {
            State::Serving(Service::Echo) => c.pending.extend_from_slice(&buf[..n]),
            State::Serving(Service::Sink { header }) => {
                if header.len() < 8 {
                    let take = (8 - header.len()).min(n);
                    header.extend_from_slice(&buf[..take]);
                    if header.len() == 8 {
                        c.pending.push(b'k');
                    }
                }
            }
            State::Serving(Service::Source { header, left, started, .. }) => {
                let mut rest = &buf[..n];
                if left.is_none() {
                    let take = (8 - header.len()).min(rest.len());
                    header.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if header.len() == 8 {
                        *left = Some(u64::from_le_bytes(header[..].try_into().expect("8 bytes")));
                        c.pending.push(b'k');
                    }
                }
                if left.is_some() && !rest.is_empty() {
                    *started = true;
                }
            }
            State::Handshake(dec) => {
                dec.push(&buf[..n]);
                loop {
                    let (header, payload) = match dec.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => return Served::Close,
                    };
                    let Ok(req) = decode_request(&header, &payload) else { return Served::Close };
                    let (reply, next) = match req.request {
                        Some(Request::ListDevices) => (device_list_reply(header.tag, device), None),
                        Some(Request::Connect { device_id, port }) => {
                            if device_id != device.handle {
                                (encode_result(header.version, header.tag, 2), None)
                            } else if port == 1234 {
                                (encode_result(header.version, header.tag, 3), None)
                            } else {
                                let service = match port {
                                    9 => Service::Sink { header: Vec::new() },
                                    19 => {
                                        Service::Source { header: Vec::new(), left: None, started: false, shut: false }
                                    }
                                    _ => Service::Echo,
                                };
                                (encode_result(header.version, header.tag, 0), Some(service))
                            }
                        }
                        _ => (encode_result(header.version, header.tag, 1), None),
                    };
                    c.pending.extend_from_slice(&reply);
                    if let Some(s) = next {
                        c.state = State::Serving(s);
                        break;
                    }
                }
            }
        }
    }
    Served::Again
}

// ---- hold ------------------------------------------------------------------------------

struct Held {
    stream: Option<TcpStream>,
    /// Bytes of the current round trip still to come back.
    want: Vec<u8>,
    got: usize,
}

fn message(i: usize, round: u8) -> Vec<u8> {
    format!("round {round} connection {i:06}\n").into_bytes()
}

/// One round trip on every connection, event-driven. Returns how many completed.
fn round_trip(ep: &OwnedFd, held: &mut [Held], round: u8, timeout: Duration) -> usize {
    let mut waiting = 0;
    for (i, h) in held.iter_mut().enumerate() {
        let Some(s) = h.stream.as_mut() else { continue };
        h.want = message(i, round);
        h.got = 0;
        if s.write_all(&h.want).is_err() {
            h.stream = None;
            continue;
        }
        waiting += 1;
    }
    let mut done = 0;
    let deadline = Instant::now() + timeout;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut buf = [0u8; 256];
    while waiting > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        events.clear();
        let t = rustix::event::Timespec::try_from(left).unwrap();
        match epoll::wait(ep, spare_capacity(&mut events), Some(&t)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => die(&format!("epoll_wait: {e}")),
        }
        for ev in &events {
            let i = ev.data.u64() as usize;
            let h = &mut held[i];
            let Some(s) = h.stream.as_mut() else { continue };
            if h.got == h.want.len() {
                continue;
            }
            loop {
                match recv(&*s, &mut buf, RecvFlags::empty()) {
                    Ok((0, _)) | Err(Errno::CONNRESET) => {
                        eprintln!("connection {i}: closed after {} of {} bytes", h.got, h.want.len());
                        h.stream = None;
                        waiting -= 1;
                        break;
                    }
                    Ok((n, _)) => {
                        if h.got + n > h.want.len() || buf[..n] != h.want[h.got..h.got + n] {
                            eprintln!("connection {i}: wrong bytes");
                            h.stream = None;
                            waiting -= 1;
                            break;
                        }
                        h.got += n;
                        if h.got == h.want.len() {
                            done += 1;
                            waiting -= 1;
                            break;
                        }
                    }
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR) => {}
                    Err(e) => {
                        eprintln!("connection {i}: {e}");
                        h.stream = None;
                        waiting -= 1;
                        break;
                    }
                }
            }
        }
    }
    done
}

fn hold(args: &[String]) -> i32 {
    let a = addr(&args.first().cloned().unwrap_or_else(|| die("HOST")), arg(args, 1, "PORT"));
    let n: usize = arg(args, 2, "N");
    let wait_stdin = args.iter().any(|x| x == "--hold-until-stdin-eof");
    let wait_file = args.iter().position(|x| x == "--hold-until-file").and_then(|i| args.get(i + 1)).cloned();
    let timeout = args
        .iter()
        .position(|x| x == "--timeout")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120));
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    let start = Instant::now();
    let one_by_one = args.iter().any(|x| x == "--one-by-one");
    let mut held: Vec<Held> = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(a);
        if one_by_one {
            // Proven by a round trip before the next connection is opened.
            let mut b = [0u8; 1];
            s.set_read_timeout(Some(timeout)).expect("timeout");
            if s.write_all(b"x").and_then(|_| s.read_exact(&mut b)).is_err() {
                eprintln!("connection {i}: no echo");
            }
        }
        s.set_nonblocking(true).expect("non-blocking");
        epoll::add(&ep, &s, epoll::EventData::new_u64(i as u64), epoll::EventFlags::IN | epoll::EventFlags::ET)
            .expect("epoll add");
        held.push(Held { stream: Some(s), want: Vec::new(), got: 0 });
    }
    let connected = start.elapsed();
    let first = round_trip(&ep, &mut held, 1, timeout);
    println!(
        "HELD {first} of {n} (connected in {:.2} s, all echoed after {:.2} s) connect_seconds={:.4}",
        connected.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        connected.as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    if wait_stdin {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    }
    if let Some(f) = wait_file {
        while !std::path::Path::new(&f).exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let second = round_trip(&ep, &mut held, 2, timeout);
    println!("VERIFIED {second} of {n}");
    drop(held);
    if first == n && second == n {
        0
    } else {
        1
    }
}

// ---- reference relay -------------------------------------------------------------------------

fn relay(args: &[String]) -> i32 {
    let local: u16 = arg(args, 0, "LOCAL_PORT");
    let device_port: u16 = arg(args, 1, "DEVICE_PORT");
    let size: usize = args.get(2).map_or(32 * 1024, |_| arg(args, 2, "BUFFER"));
    let listener = TcpListener::bind(("127.0.0.1", local)).unwrap_or_else(|e| die(&format!("bind: {e}")));
    println!("READY {local}");
    let _ = std::io::stdout().flush();
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let device = usbmuxd::list_devices()
            .ok()
            .and_then(|l| l.first().map(|d| d.handle))
            .and_then(|h| usbmuxd::connect(h, device_port).ok())
            .and_then(|c| c.as_fd().try_clone_to_owned().ok())
            .map(UnixStream::from);
        let Some(device) = device else { continue };
        if device.set_nonblocking(false).is_err() {
            continue;
        }
        let (Ok(device2), Ok(client2)) = (device.try_clone(), client.try_clone()) else { continue };
        std::thread::spawn(move || copy_blocking(client2, device2, size));
        std::thread::spawn(move || copy_blocking(device, client, size));
    }
    0
}

/// read/write until EOF or an error, then half-closes the destination. Not
/// `std::io::copy`: on Linux it splices between sockets, and the reference is the plain copy.
fn copy_blocking<R: Read, W: Write + AsFd>(mut from: R, mut to: W, size: usize) {
    let mut buf = vec![0u8; size];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = rustix::net::shutdown(&to, rustix::net::Shutdown::Write);
}

// ---- bulk transfers and setup rate -----------------------------------------------------------

fn bulk(args: &[String], upload: bool) -> i32 {
    let a = addr(&args.first().cloned().unwrap_or_else(|| die("HOST")), arg(args, 1, "PORT"));
    let conns: usize = arg(args, 2, "CONNS");
    let bytes: u64 = arg(args, 3, "BYTES");
    // One connection after the other, each ready (its `k` received) before the next is
    // opened: iproxy 2.0.2 loses clients whose connections are set up concurrently.
    let streams: Vec<TcpStream> = (0..conns)
        .map(|_| {
            let mut s = connect(a);
            let mut k = [0u8; 1];
            s.write_all(&bytes.to_le_bytes())
                .and_then(|_| s.read_exact(&mut k))
                .unwrap_or_else(|e| die(&format!("handshake: {e}")));
            s
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || -> Result<u64, String> {
                let mut buf = vec![0x33u8; CHUNK];
                let mut moved = 0u64;
                if upload {
                    while moved < bytes {
                        let n = (bytes - moved).min(CHUNK as u64) as usize;
                        s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                        moved += n as u64;
                    }
                    s.shutdown(StdShutdown::Write).map_err(|e| e.to_string())?;
                    // The sink closes after our EOF: wait for that, so all bytes arrived.
                    let _ = s.read(&mut buf);
                } else {
                    s.write_all(b"g").map_err(|e| e.to_string())?;
                    while moved < bytes {
                        let want = (bytes - moved).min(CHUNK as u64) as usize;
                        match s.read(&mut buf[..want]) {
                            Ok(0) => return Err(format!("EOF after {moved} bytes")),
                            Ok(n) => moved += n as u64,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
                Ok(moved)
            })
        })
        .collect();
    let mut total = 0u64;
    let mut failed = 0;
    for t in threads {
        match t.join().expect("transfer thread") {
            Ok(n) => total += n,
            Err(e) => {
                eprintln!("transfer: {e}");
                failed += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("bytes={total} seconds={secs:.4} MBps={:.1}", total as f64 / secs / 1e6);
    i32::from(failed > 0)
}

fn setup(args: &[String]) -> i32 {
    let a = addr(&args.first().cloned().unwrap_or_else(|| die("HOST")), arg(args, 1, "PORT"));
    let n: usize = arg(args, 2, "N");
    let parallel: usize = arg(args, 3, "PARALLEL");
    let start = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|t| {
            let count = n / parallel + usize::from(t < n % parallel);
            std::thread::spawn(move || -> usize {
                let mut ok = 0;
                for _ in 0..count {
                    let mut s = connect(a);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut b = [0u8; 1];
                    if s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"x" {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().expect("setup thread")).sum();
    let secs = start.elapsed().as_secs_f64();
    println!("connections={ok} seconds={secs:.4} per_second={:.1}", ok as f64 / secs);
    i32::from(ok != n)
}

fn halfclose(args: &[String]) -> i32 {
    let a = addr(&args.first().cloned().unwrap_or_else(|| die("HOST")), arg(args, 1, "PORT"));
    let n: usize = arg(args, 2, "BYTES");
    let data: Vec<u8> = (0..n).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut s = connect(a);
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut w = s.try_clone().expect("clone");
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent)?;
        w.shutdown(StdShutdown::Write)
    });
    let mut back = Vec::new();
    let r = s.read_to_end(&mut back);
    let w = writer.join().expect("writer");
    if let Err(e) = w {
        eprintln!("halfclose: send: {e}");
        return 1;
    }
    if let Err(e) = r {
        eprintln!("halfclose: receive: {e} after {} bytes", back.len());
        return 1;
    }
    if back == data {
        println!("echoed {n} bytes after the half-close, then EOF");
        0
    } else {
        println!("got {} of {n} bytes back after the half-close", back.len());
        1
    }
}
