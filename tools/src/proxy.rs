//! iproxy's engine. One thread runs an epoll loop over the listening sockets and every
//! forwarded connection; no thread per connection. Setting a connection up is the only
//! blocking part (device lookup and the daemon's `Connect` handshake, up to 5 s each, or
//! the direct TCP connect to a network device): a small fixed pool of setup threads does
//! it with the library's own blocking API and hands the connected socket back to the
//! loop through a queue and an eventfd.
//!
//! Forwarding: edge-triggered readiness per socket; each direction moves data through a
//! buffer taken from a pool only while bytes are in flight (an idle connection holds no
//! buffer), reads stop while the other side cannot take more (back-pressure), a
//! direction that keeps having data yields after a few reads so no connection starves
//! the others. EOF is passed on as a half-close (`shutdown(SHUT_WR)`) once everything
//! before it is delivered; the connection is closed when both directions are finished or
//! either side fails.

use crate::cli::IproxyConfig;
use crate::device::{describe_list_failure, lookup, DeviceSocket, Lookup, Route};
use crate::ports::PortPair;
use crate::sys;
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::net::{
    accept_with, bind, ipproto, listen, recv, send, shutdown, socket_with, sockopt, AddressFamily, RecvFlags,
    SendFlags, Shutdown, SocketFlags, SocketType,
};
use rustix::pipe::{splice, SpliceFlags};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Size of a forwarding buffer (one direction of one busy connection, when copying).
/// Small enough to stay in the L1 cache between the copy in and the copy out: on the
/// benchmark machine 32 KiB cost 30–40 % less CPU per GiB than 64–256 KiB.
pub const BUFFER_SIZE: usize = 32 * 1024;
/// Spare buffers kept for reuse.
const SPARE_BUFFERS: usize = 16;
/// Bytes a direction moves before a busy connection yields to the others.
const BYTES_PER_TURN: usize = 1 << 20;
/// Connections accepted per readiness event of a listener (it is level-triggered).
const ACCEPTS_PER_EVENT: usize = 64;
/// Backlog of the listening sockets (the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 4096;
/// Most setup threads (started as needed).
pub const MAX_SETUP_THREADS: usize = 8;
/// Pause of accepting after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a connection whose device side is gone waits for the client's EOF once all
/// the device's bytes and the EOF are handed to the client's socket: closing earlier
/// while the client still writes would answer its bytes with a reset, which can discard
/// what it has not read yet.
const LINGER: Duration = Duration::from_secs(5);

const WAKER_TOKEN: u64 = u64::MAX;
const LISTENER_BIT: u64 = 1 << 62;

fn conn_token(slot: usize, side: usize) -> u64 {
    ((slot as u64) << 1) | side as u64
}

// ---- listening sockets ---------------------------------------------------------------

fn listen_on(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = socket_with(family, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, Some(ipproto::TCP))?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    bind(&fd, &addr)?;
    listen(&fd, LISTEN_BACKLOG)?;
    Ok(fd)
}

/// The listening sockets for local `port`: without `source`, 127.0.0.1 and ::1 (the
/// latter skipped when the host has no IPv6 loopback); with it, the first address
/// `source` resolves to that can be bound (host names allowed, IPv6 sockets IPv6-only).
pub fn listen_sockets(port: u16, source: Option<&str>) -> io::Result<Vec<OwnedFd>> {
    match source {
        None => {
            let v4 = listen_on(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))?;
            match listen_on(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)) {
                Ok(v6) => Ok(vec![v4, v6]),
                Err(e)
                    if e.raw_os_error() == Some(Errno::ADDRNOTAVAIL.raw_os_error())
                        || e.raw_os_error() == Some(Errno::AFNOSUPPORT.raw_os_error()) =>
                {
                    Ok(vec![v4])
                }
                Err(e) => Err(e),
            }
        }
        Some(host) => {
            let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "address resolves to nothing");
            for addr in (host, port).to_socket_addrs()? {
                match listen_on(addr) {
                    Ok(fd) => return Ok(vec![fd]),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

// ---- buffers and pipes ---------------------------------------------------------------

/// Capacity asked for the splice pipes.
const PIPE_SIZE: usize = 256 * 1024;
/// Spare pipes kept for reuse (two descriptors each).
const SPARE_PIPES: usize = 16;

/// A pipe that carries one direction's bytes from socket to socket with `splice`, so
/// they are never copied through user space.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

/// Forwarding buffers and splice pipes, reused. Fresh buffers come zeroed from the
/// allocator (untouched pages cost no memory until written). Splicing is given up for
/// good the first time the kernel refuses it for these sockets, and a direction falls
/// back to a buffer whenever no pipe can be had (e.g. out of descriptors).
struct Pools {
    spare_bufs: Vec<Box<[u8]>>,
    spare_pipes: Vec<Pipe>,
    splice: bool,
}

impl Pools {
    fn new(splice: bool) -> Pools {
        Pools { spare_bufs: Vec::new(), spare_pipes: Vec::new(), splice }
    }

    fn get_buf(&mut self) -> Box<[u8]> {
        self.spare_bufs.pop().unwrap_or_else(|| vec![0u8; BUFFER_SIZE].into_boxed_slice())
    }

    fn put_buf(&mut self, buf: Option<Box<[u8]>>) {
        if let Some(b) = buf {
            if self.spare_bufs.len() < SPARE_BUFFERS {
                self.spare_bufs.push(b);
            }
        }
    }

    fn get_pipe(&mut self) -> Option<Pipe> {
        if !self.splice {
            return None;
        }
        if let Some(p) = self.spare_pipes.pop() {
            return Some(p);
        }
        let (r, w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK).ok()?;
        let size = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&w))
            .unwrap_or(65536);
        Some(Pipe { r, w, size })
    }

    /// Takes back an empty pipe.
    fn put_pipe(&mut self, pipe: Option<Pipe>) {
        if let Some(p) = pipe {
            if self.splice && self.spare_pipes.len() < SPARE_PIPES {
                self.spare_pipes.push(p);
            }
        }
    }
}

// ---- connections ---------------------------------------------------------------------

#[derive(Default, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
}

/// One direction: bytes read from one side and not yet written to the other, in a
/// pipe (spliced) or a buffer (copied).
#[derive(Default)]
struct Dir {
    pipe: Option<Pipe>,
    in_pipe: usize,
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The source side reached EOF.
    eof: bool,
    /// The EOF has been passed on (`shutdown(SHUT_WR)` of the destination).
    shut: bool,
    /// The destination failed (client → device: the device is gone): what the source
    /// still sends is read and dropped, so the other direction can finish.
    broken: bool,
}

impl Dir {
    fn finished(&self) -> bool {
        self.shut && self.start == self.end && self.in_pipe == 0 && (!self.broken || self.eof)
    }

    /// The destination failed: drops the bytes in flight; from now on the source is
    /// drained into the buffer.
    fn break_off(&mut self, pools: &mut Pools) {
        self.broken = true;
        self.shut = true;
        self.start = 0;
        self.end = 0;
        // A pipe with bytes in it is closed, not reused.
        self.in_pipe = 0;
        self.pipe = None;
        pools.put_buf(self.buf.take());
    }

    /// Gives the pipe and buffer back (the pipe only if empty).
    fn release(&mut self, pools: &mut Pools) {
        pools.put_buf(self.buf.take());
        let pipe = self.pipe.take();
        if self.in_pipe == 0 {
            pools.put_pipe(pipe);
        }
    }
}

/// How a direction left off.
enum Flow {
    /// Waits for readiness (or is finished).
    Idle,
    /// Still has data: run it again after the others had their turn.
    More,
}

/// Socket index 0 is the client, 1 the device; direction 0 is client → device, 1 the
/// reverse.
struct Conn {
    client: OwnedFd,
    device: Option<DeviceSocket>,
    ready: [Ready; 2],
    dirs: [Dir; 2],
    /// Per direction: whether to splice (the source is a TCP socket).
    splice: [bool; 2],
    queued: bool,
    /// Set once the device side is gone and everything from it is handed to the client:
    /// the connection closes at the client's EOF or at this time.
    linger_until: Option<Instant>,
}

const SPLICE_FLAGS: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

/// Moves data in direction `d` until it has to wait. `Err` = a socket failed.
fn pump_dir(conn: &mut Conn, d: usize, pools: &mut Pools) -> Result<Flow, ()> {
    let (src, dst) = if d == 0 { (0, 1) } else { (1, 0) };
    let Some(device) = conn.device.as_ref() else { return Ok(Flow::Idle) };
    let fds = [conn.client.as_fd(), device.as_fd()];
    let dir = &mut conn.dirs[d];
    let ready = &mut conn.ready;
    let mut moved = 0;
    loop {
        // Deliver what is in flight first.
        if dir.in_pipe > 0 {
            if !ready[dst].writable {
                return Ok(Flow::Idle);
            }
            let pipe = dir.pipe.as_ref().expect("bytes in the pipe have a pipe");
            match splice(&pipe.r, None, fds[dst], None, dir.in_pipe, SPLICE_FLAGS) {
                Ok(n) => dir.in_pipe -= n,
                Err(Errno::AGAIN) => {
                    ready[dst].writable = false;
                    return Ok(Flow::Idle);
                }
                Err(Errno::INTR) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    // The kernel cannot splice into this socket: copy from now on.
                    pools.splice = false;
                    let buf = dir.buf.get_or_insert_with(|| pools.get_buf());
                    let n = rustix::io::read(&pipe.r, &mut buf[..]).map_err(|_| ())?;
                    dir.start = 0;
                    dir.end = n;
                    dir.in_pipe -= n;
                    if dir.in_pipe > 0 {
                        return Err(());
                    }
                }
                Err(_) if d == 0 => dir.break_off(pools),
                Err(_) => return Err(()),
            }
            continue;
        }
        if dir.start < dir.end {
            if !ready[dst].writable {
                return Ok(Flow::Idle);
            }
            let buf = dir.buf.as_ref().expect("bytes in flight have a buffer");
            match send(fds[dst], &buf[dir.start..dir.end], SendFlags::NOSIGNAL) {
                Ok(n) => {
                    dir.start += n;
                    if dir.start == dir.end {
                        dir.start = 0;
                        dir.end = 0;
                    }
                }
                Err(Errno::AGAIN) => {
                    ready[dst].writable = false;
                    return Ok(Flow::Idle);
                }
                Err(Errno::INTR) => {}
                Err(_) if d == 0 => dir.break_off(pools),
                Err(_) => return Err(()),
            }
            continue;
        }
        // Nothing in flight.
        if dir.eof {
            dir.release(pools);
            if !dir.shut {
                // ENOTCONN when the peer is already gone: nothing left to tell it.
                let _ = shutdown(fds[dst], Shutdown::Write);
                dir.shut = true;
            }
            return Ok(Flow::Idle);
        }
        if !ready[src].readable {
            dir.release(pools);
            return Ok(Flow::Idle);
        }
        if moved >= BYTES_PER_TURN {
            return Ok(Flow::More);
        }
        if dir.broken {
            let buf = dir.buf.get_or_insert_with(|| pools.get_buf());
            match recv(fds[src], &mut buf[..], RecvFlags::empty()) {
                Ok((0, _)) => dir.eof = true,
                // Dropped: its destination is gone.
                Ok((n, _)) => moved += n,
                Err(Errno::AGAIN) => ready[src].readable = false,
                Err(Errno::INTR) => {}
                Err(_) => return Err(()),
            }
            continue;
        }
        if dir.pipe.is_none() && dir.buf.is_none() && conn.splice[d] {
            dir.pipe = pools.get_pipe();
        }
        if let Some(pipe) = dir.pipe.as_ref() {
            match splice(fds[src], None, &pipe.w, None, pipe.size, SPLICE_FLAGS) {
                Ok(0) => dir.eof = true,
                Ok(n) => {
                    dir.in_pipe = n;
                    moved += n;
                }
                Err(Errno::AGAIN) => ready[src].readable = false,
                Err(Errno::INTR) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    // Nothing was taken from the socket: read it with a buffer instead.
                    pools.splice = false;
                    dir.pipe = None;
                }
                Err(_) => return Err(()),
            }
            continue;
        }
        let buf = dir.buf.get_or_insert_with(|| pools.get_buf());
        match recv(fds[src], &mut buf[..], RecvFlags::empty()) {
            Ok((0, _)) => dir.eof = true,
            Ok((n, _)) => {
                dir.end = n;
                moved += n;
            }
            Err(Errno::AGAIN) => ready[src].readable = false,
            Err(Errno::INTR) => {}
            // The device connection failed (e.g. reset after its last bytes): the client
            // gets an EOF after everything read before, as for a close.
            Err(_) if d == 1 => dir.eof = true,
            Err(_) => return Err(()),
        }
    }
}

// ---- connection setup (thread pool) -----------------------------------------------------

struct Job {
    slot: usize,
    device_port: u16,
}

struct Finished {
    slot: usize,
    socket: Option<DeviceSocket>,
}

#[derive(Default)]
struct JobQueue {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

struct Setup {
    udid: Option<String>,
    lookup: usbmuxd::LookupOptions,
    queue: Mutex<JobQueue>,
    wake_worker: Condvar,
    finished: Mutex<Vec<Finished>>,
    /// Tells the loop that `finished` has entries.
    waker: OwnedFd,
}

impl Setup {
    /// Queues a job; starts another thread if every running one is busy.
    /// `false` if no thread could be started at all.
    fn submit(self: &Arc<Setup>, job: Job) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.jobs.push_back(job);
        if q.jobs.len() > q.idle && q.threads < MAX_SETUP_THREADS {
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new().name("iproxy-setup".into()).spawn(move || me.work());
            match spawned {
                Ok(_) => q.threads += 1,
                Err(e) if q.threads == 0 => {
                    sys::err(&format!("ERROR: Failed to create a setup thread: {e}\n"));
                    q.jobs.pop_back();
                    return false;
                }
                Err(_) => {}
            }
        }
        drop(q);
        self.wake_worker.notify_one();
        true
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    q.idle += 1;
                    q = self.wake_worker.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.idle -= 1;
                }
            };
            let socket = self.connect(job.device_port);
            self.finished.lock().unwrap_or_else(|e| e.into_inner()).push(Finished { slot: job.slot, socket });
            let _ = rustix::io::write(&self.waker, &1u64.to_ne_bytes());
        }
    }

    /// Looks the device up and connects to `port` on it, printing iproxy's messages.
    fn connect(&self, port: u16) -> Option<DeviceSocket> {
        let dev = match lookup(self.udid.as_deref(), self.lookup) {
            Lookup::Found(d) => d,
            Lookup::DaemonFailed(e) => {
                sys::out("Connecting to usbmuxd failed, terminating.\n");
                sys::err(&format!("{}\n", describe_list_failure(&e)));
                return None;
            }
            Lookup::NoDevices => {
                sys::out("No connected device found, terminating.\n");
                return None;
            }
            Lookup::NoMatch => {
                sys::out("No connected/matching device found, disconnecting client.\n");
                return None;
            }
        };
        let route = match Route::for_device(&dev, port) {
            Ok(r) => r,
            Err(e) => {
                sys::err(&format!("{}\n", e.message()));
                return None;
            }
        };
        sys::out(&format!("{}\n", route.requesting_line(&dev, port)));
        match route.connect(port) {
            Ok(s) => Some(s),
            Err(e) => {
                sys::err(&format!("{}\n", e.message()));
                None
            }
        }
    }
}

// ---- the loop --------------------------------------------------------------------------

struct Listener {
    fd: OwnedFd,
    pair: PortPair,
}

/// The running proxy.
pub struct Proxy {
    ep: OwnedFd,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Closed in this round; reusable from the next (no stale event can reach them).
    closed: Vec<usize>,
    again: Vec<usize>,
    pools: Pools,
    setup: Arc<Setup>,
    out: String,
    /// Setups of the connections accepted in this round, queued after their
    /// "New connection" lines are out (so those precede the setup threads' lines).
    accepted: Vec<Job>,
    accept_paused_until: Option<Instant>,
    /// Slots of connections with a `linger_until` (entries of closed ones are dropped
    /// when found).
    lingering: Vec<usize>,
}

impl Proxy {
    /// Takes the listening sockets (one or two per pair, in pair order). `splice`:
    /// forward with `splice(2)` through pipes where the kernel allows (otherwise every
    /// byte is copied through a buffer).
    pub fn new(config: &IproxyConfig, listeners: Vec<(OwnedFd, PortPair)>, splice: bool) -> io::Result<Proxy> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let waker = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        epoll::add(&ep, &waker, epoll::EventData::new_u64(WAKER_TOKEN), epoll::EventFlags::IN | epoll::EventFlags::ET)?;
        let listeners: Vec<Listener> = listeners.into_iter().map(|(fd, pair)| Listener { fd, pair }).collect();
        for (i, l) in listeners.iter().enumerate() {
            epoll::add(&ep, &l.fd, epoll::EventData::new_u64(LISTENER_BIT | i as u64), epoll::EventFlags::IN)?;
        }
        let setup = Arc::new(Setup {
            udid: config.udid.clone(),
            lookup: config.lookup,
            queue: Mutex::new(JobQueue::default()),
            wake_worker: Condvar::new(),
            finished: Mutex::new(Vec::new()),
            waker,
        });
        Ok(Proxy {
            ep,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            again: Vec::new(),
            pools: Pools::new(splice),
            setup,
            out: String::new(),
            accepted: Vec::new(),
            accept_paused_until: None,
            lingering: Vec::new(),
        })
    }

    fn flush_out(&mut self) {
        if !self.out.is_empty() {
            sys::out(&self.out);
            self.out.clear();
        }
    }

    /// Runs forever; returns only if waiting for events fails.
    pub fn run(&mut self) -> io::Result<()> {
        self.out.push_str("waiting for connection\n");
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        loop {
            self.flush_out();
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else {
                let next = self.accept_paused_until.into_iter().chain(self.linger_deadlines()).min();
                next.map(|t| t.saturating_duration_since(Instant::now()))
            };
            let timeout = timeout.map(|d| {
                rustix::event::Timespec::try_from(d).unwrap_or(rustix::event::Timespec { tv_sec: i64::MAX, tv_nsec: 0 })
            });
            events.clear();
            match epoll::wait(&self.ep, spare_capacity(&mut events), timeout.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut woken = false;
            for ev in &events {
                let (token, flags) = (ev.data.u64(), ev.flags);
                if token == WAKER_TOKEN {
                    woken = true;
                } else if token & LISTENER_BIT != 0 {
                    self.accept((token & !LISTENER_BIT) as usize);
                } else {
                    self.on_event((token >> 1) as usize, (token & 1) as usize, flags);
                }
            }
            if !self.accepted.is_empty() {
                self.flush_out();
                for job in std::mem::take(&mut self.accepted) {
                    let slot = job.slot;
                    if !self.setup.submit(job) {
                        self.close(slot);
                    }
                }
            }
            if woken {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.setup.waker, &mut b);
                self.finish_setups();
            }
            if self.accept_paused_until.is_some_and(|t| Instant::now() >= t) {
                self.resume_accepting();
            }
            if !self.lingering.is_empty() {
                self.end_lingering();
            }
            for slot in std::mem::take(&mut self.again) {
                if let Some(c) = self.conns[slot].as_mut() {
                    c.queued = false;
                    self.pump(slot);
                }
            }
            self.free.append(&mut self.closed);
        }
    }

    fn accept(&mut self, li: usize) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let l = &self.listeners[li];
            match accept_with(&l.fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    let _ = sockopt::set_tcp_nodelay(&fd, true);
                    let pair = l.pair;
                    let raw = fd.as_raw_fd();
                    let slot = self.insert(Conn {
                        client: fd,
                        device: None,
                        ready: [Ready::default(); 2],
                        dirs: [Dir::default(), Dir::default()],
                        splice: [true, false],
                        queued: false,
                        linger_until: None,
                    });
                    self.out.push_str(&format!(
                        "New connection for {}->{}, fd = {raw}\nwaiting for connection\n",
                        pair.local, pair.device
                    ));
                    self.accepted.push(Job { slot, device_port: pair.device });
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                    sys::err(&format!("accept: {}\n", sys::strerror(e.raw_os_error())));
                    self.pause_accepting();
                    return;
                }
                Err(e) => {
                    sys::err(&format!("accept: {}\n", sys::strerror(e.raw_os_error())));
                    return;
                }
            }
        }
    }

    /// Out of descriptors: stop accepting for a moment instead of spinning on a
    /// listener that stays readable.
    fn pause_accepting(&mut self) {
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = epoll::modify(
                &self.ep,
                &l.fd,
                epoll::EventData::new_u64(LISTENER_BIT | i as u64),
                epoll::EventFlags::empty(),
            );
        }
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = epoll::modify(
                &self.ep,
                &l.fd,
                epoll::EventData::new_u64(LISTENER_BIT | i as u64),
                epoll::EventFlags::IN,
            );
        }
    }

    /// When the lingering connections are due.
    fn linger_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.lingering.iter().filter_map(|&slot| self.conns[slot].as_ref().and_then(|c| c.linger_until))
    }

    /// Closes the lingering connections that are due; forgets those already closed.
    fn end_lingering(&mut self) {
        let now = Instant::now();
        for slot in std::mem::take(&mut self.lingering) {
            match self.conns[slot].as_ref().and_then(|c| c.linger_until) {
                Some(t) if t <= now => self.close(slot),
                Some(_) => self.lingering.push(slot),
                None => {}
            }
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.conns[slot] = Some(conn);
                slot
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns[slot].take() {
            for d in &mut c.dirs {
                d.release(&mut self.pools);
            }
            // Dropping the sockets closes them, which also removes them from the epoll set.
            self.closed.push(slot);
        }
    }

    fn finish_setups(&mut self) {
        let done = std::mem::take(&mut *self.setup.finished.lock().unwrap_or_else(|e| e.into_inner()));
        for f in done {
            let Some(socket) = f.socket else {
                self.close(f.slot);
                continue;
            };
            let Some(c) = self.conns[f.slot].as_mut() else { continue };
            let flags =
                epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
            let ok = epoll::add(&self.ep, &c.client, epoll::EventData::new_u64(conn_token(f.slot, 0)), flags).is_ok()
                && epoll::add(&self.ep, &socket, epoll::EventData::new_u64(conn_token(f.slot, 1)), flags).is_ok();
            // Splicing out of a UNIX socket costs more CPU than copying (measured with
            // Linux 6.x: unix_stream_splice_read), so only TCP sources are spliced.
            c.splice[1] = sockopt::socket_domain(&socket).is_ok_and(|f| f != AddressFamily::UNIX);
            c.device = Some(socket);
            if !ok {
                self.close(f.slot);
            }
            // The sockets' current readiness arrives as the first events.
        }
    }

    fn on_event(&mut self, slot: usize, side: usize, flags: epoll::EventFlags) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        use epoll::EventFlags as F;
        if flags.intersects(F::IN | F::HUP | F::ERR | F::RDHUP) {
            c.ready[side].readable = true;
        }
        if flags.intersects(F::OUT | F::HUP | F::ERR) {
            c.ready[side].writable = true;
        }
        self.pump(slot);
    }

    fn pump(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let mut more = false;
        for d in 0..2 {
            match pump_dir(c, d, &mut self.pools) {
                Ok(Flow::Idle) => {}
                Ok(Flow::More) => more = true,
                Err(()) => {
                    self.close(slot);
                    return;
                }
            }
        }
        if c.dirs[0].finished() && c.dirs[1].finished() {
            self.close(slot);
            return;
        }
        if c.dirs[0].broken && c.dirs[1].finished() && c.linger_until.is_none() {
            // Device gone, all its bytes and the EOF handed to the client, which still
            // writes: wait for its EOF, LINGER at most.
            c.linger_until = Some(Instant::now() + LINGER);
            self.lingering.push(slot);
        }
        if more && !c.queued {
            c.queued = true;
            self.again.push(slot);
        }
    }
}
