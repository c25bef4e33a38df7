//! Device services: what a client talks to once `Connect` has turned its socket into a
//! raw pipe. Also usable on a plain TCP port ([`ServiceServer`]) to play a network device.

use crate::config::{Service, TestDevice};
use crate::net::{BoundAddress, Listener, Stream};
use crate::server::{AcceptLoop, ConnectionSet};
use parking_lot::Mutex;
use plist::Dictionary;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use usbmux_sim::services::{extend_with_pattern, lockdownd, Lockdownd, Service as _, ServiceStatus};

/// Traffic of one service (one device port), over all its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Connections handed to the service.
    pub connections: u64,
    /// Bytes the service read from clients.
    pub bytes_received: u64,
    /// Bytes the service wrote to clients.
    pub bytes_sent: u64,
}

/// Live counters behind [`ServiceStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    /// Requests received by a lockdownd service, in order.
    lockdownd_requests: Mutex<Vec<Dictionary>>,
}

impl Counters {
    pub fn snapshot(&self) -> ServiceStats {
        ServiceStats {
            connections: self.connections.load(Ordering::SeqCst),
            bytes_received: self.received.load(Ordering::SeqCst),
            bytes_sent: self.sent.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn record_lockdownd_request(&self, request: &Dictionary) {
        self.lockdownd_requests.lock().push(request.clone());
    }

    pub fn lockdownd_requests(&self) -> Vec<Dictionary> {
        self.lockdownd_requests.lock().clone()
    }

    pub(crate) fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::SeqCst);
    }

    pub(crate) fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Serves one connection until the service is done or the client goes away.
pub(crate) fn run(service: &Service, mut stream: Stream, device: &TestDevice, counters: &Counters) {
    counters.connections.fetch_add(1, Ordering::SeqCst);
    let _ = match service {
        Service::Echo => echo(stream, counters),
        Service::Sink => drain(&mut stream, counters),
        Service::Source(n) => source(&mut stream, *n, counters),
        Service::CloseImmediately => {
            stream.shutdown(Shutdown::Both);
            Ok(())
        }
        Service::Lockdownd => serve_lockdownd(&mut stream, device, counters),
    };
}

/// Reads until EOF, counting.
fn drain(stream: &mut Stream, counters: &Counters) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => counters.add_received(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The values lockdownd reports for `device`: the defaults for its UDID, then its
/// `lockdown_values` overrides.
fn lockdownd_values(device: &TestDevice) -> Dictionary {
    let mut values = lockdownd::default_values(&device.udid);
    for (k, v) in &device.lockdown_values {
        values.insert(k.clone(), v.clone());
    }
    values
}

/// Serves [`Lockdownd`] on a socket until the client closes, says Goodbye or sends
/// garbage (then the connection is closed).
fn serve_lockdownd(stream: &mut Stream, device: &TestDevice, counters: &Counters) -> io::Result<()> {
    let mut service = Lockdownd::new(lockdownd_values(device));
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        counters.add_received(n);
        let seen = service.requests().len();
        service.on_data(&buf[..n]);
        for request in &service.requests()[seen..] {
            counters.record_lockdownd_request(request);
        }
        out.clear();
        service.poll_output(&mut out, usize::MAX);
        stream.write_all(&out)?;
        counters.add_sent(out.len());
        match service.status() {
            ServiceStatus::Open => {}
            ServiceStatus::Close => return Ok(()),
            ServiceStatus::Abort(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
        }
    }
}

fn source(stream: &mut Stream, n: u64, counters: &Counters) -> io::Result<()> {
    let mut offset = 0u64;
    let mut chunk = Vec::with_capacity(16384);
    while offset < n {
        chunk.clear();
        let len = (n - offset).min(16384);
        extend_with_pattern(&mut chunk, offset, len as usize);
        stream.write_all(&chunk)?;
        counters.add_sent(chunk.len());
        offset += len;
    }
    // Half-close so the client sees EOF, then wait for it to close: closing with unread
    // input would make the peer see a reset instead of the data.
    stream.shutdown(Shutdown::Write);
    drain(stream, counters)
}

/// Echo with a reader thread and an unbounded queue, so that a client that writes a lot
/// before reading anything cannot deadlock against us.
fn echo(mut stream: Stream, counters: &Counters) -> io::Result<()> {
    let mut reader = stream.try_clone()?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader_thread = std::thread::Builder::new().name("testd-echo-rx".into()).spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })?;
    let mut result = Ok(());
    for chunk in rx.iter() {
        counters.add_received(chunk.len());
        if let Err(e) = stream.write_all(&chunk) {
            result = Err(e);
            break;
        }
        counters.add_sent(chunk.len());
    }
    // On a write error the reader may still be blocked: wake it.
    if result.is_err() {
        stream.shutdown(Shutdown::Both);
    }
    let _ = reader_thread.join();
    result
}

/// A service on a plain TCP port, e.g. the service of a network device at the address
/// its `NetworkAddress` points to. Stops (and joins its threads) on drop.
pub struct ServiceServer {
    addr: SocketAddr,
    accept: Option<AcceptLoop>,
    connections: Arc<ConnectionSet>,
    counters: Arc<Counters>,
}

impl ServiceServer {
    /// Serves `service` on `addr` (`127.0.0.1:0` for a free port). Lockdownd answers as
    /// a USB device with UDID `network-service`; see [`ServiceServer::start_for_device`].
    pub fn start(addr: SocketAddr, service: Service) -> io::Result<ServiceServer> {
        ServiceServer::start_for_device(addr, service, TestDevice::usb(0, "network-service"))
    }

    /// Like [`ServiceServer::start`], with `device` providing lockdownd's values.
    pub fn start_for_device(addr: SocketAddr, service: Service, device: TestDevice) -> io::Result<ServiceServer> {
        let (listener, bound) = Listener::bind(&BoundAddress::Tcp(addr))?;
        let BoundAddress::Tcp(real) = bound else { unreachable!("TCP bind gives a TCP address") };
        let connections = Arc::new(ConnectionSet::default());
        connections.open();
        let counters = Arc::new(Counters::default());
        let (set, c) = (Arc::clone(&connections), Arc::clone(&counters));
        let accept = AcceptLoop::start(listener, move |stream| {
            let (service, device, c) = (service.clone(), device.clone(), Arc::clone(&c));
            set.spawn(stream, move |_, stream| run(&service, stream, &device, &c));
        })?;
        Ok(ServiceServer { addr: real, accept: Some(accept), connections, counters })
    }

    /// The bound address (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn stats(&self) -> ServiceStats {
        self.counters.snapshot()
    }

    /// Requests received so far if the service is [`Service::Lockdownd`].
    pub fn lockdownd_requests(&self) -> Vec<Dictionary> {
        self.counters.lockdownd_requests()
    }
}

impl Drop for ServiceServer {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.stop();
        }
        self.connections.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use usbmux_sim::services::source_bytes;

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn tcp_echo_handles_big_writes_before_reads() {
        let server = ServiceServer::start(local(), Service::Echo).unwrap();
        let mut c = TcpStream::connect(server.addr()).unwrap();
        let data = source_bytes(4 << 20);
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert!(back == data);
        drop(c);
        let stats = server.stats();
        assert_eq!((stats.connections, stats.bytes_received, stats.bytes_sent), (1, 4 << 20, 4 << 20));
    }

    #[test]
    fn tcp_source_and_close() {
        let source = ServiceServer::start(local(), Service::Source(100_000)).unwrap();
        let mut c = TcpStream::connect(source.addr()).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got == source_bytes(100_000));
        let closer = ServiceServer::start(local(), Service::CloseImmediately).unwrap();
        let mut c = TcpStream::connect(closer.addr()).unwrap();
        assert_eq!(c.read(&mut [0u8; 8]).unwrap_or(0), 0);
    }

    #[test]
    fn drop_wakes_blocked_connections() {
        let server = ServiceServer::start(local(), Service::Sink).unwrap();
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(b"abc").unwrap();
        // The sink thread is blocked reading; dropping the server must not hang.
        while server.stats().bytes_received < 3 {
            std::thread::yield_now();
        }
        drop(server);
        assert_eq!(c.read(&mut [0u8; 8]).unwrap_or(0), 0);
    }
}
