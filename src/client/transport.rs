//! Sockets to the daemon: connecting with a time limit, and reading/writing whole
//! messages on a non-blocking socket with deadlines.

use super::address::DaemonAddress;
use crate::error::{Error, Result};
use crate::proto::{self, DecodeError, Header, HEADER_LEN, MAX_MESSAGE_LEN};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Limit for establishing a connection to the daemon (per address).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit for each wait for a reply, and for each chunk of a payload.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Socket buffer size libusbmuxd requests for daemon sockets.
const SOCKET_BUFFER: usize = 0x20000;

/// Waits until `fd` is ready for `events`, or until `deadline` (`None` = forever).
/// Retries on EINTR. Returns the ready flags; POLLHUP/POLLERR count as ready.
pub fn wait_ready(fd: BorrowedFd<'_>, events: PollFlags, deadline: Option<Instant>) -> Result<PollFlags> {
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 }))
            }
        };
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Err(Error::TimedOut),
            Ok(_) => return Ok(fds[0].revents()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A connected stream to a daemon (or, after `Connect`, to a device port through it).
#[derive(Debug)]
pub enum DaemonStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsFd for DaemonStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DaemonStream::Unix(s) => s.as_fd(),
            DaemonStream::Tcp(s) => s.as_fd(),
        }
    }
}

impl DaemonStream {
    /// Connects to the daemon at `addr`. The socket is close-on-exec and non-blocking,
    /// with 128 KiB buffers, like every socket libusbmuxd hands out.
    pub fn connect(addr: &DaemonAddress) -> Result<DaemonStream> {
        match addr {
            DaemonAddress::Unix(path) => connect_unix(path).map(DaemonStream::Unix),
            DaemonAddress::Tcp { host, port } => connect_tcp(host, *port).map(DaemonStream::Tcp),
            DaemonAddress::InProcess => crate::usb::in_process_client().and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(DaemonStream::Unix(s))
            }),
        }
        .map_err(Error::DaemonUnreachable)
    }

    /// Gives up ownership of the descriptor.
    pub fn into_raw_fd(self) -> RawFd {
        match self {
            DaemonStream::Unix(s) => s.into_raw_fd(),
            DaemonStream::Tcp(s) => s.into_raw_fd(),
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DaemonStream::Unix(s) => s.read(buf),
            DaemonStream::Tcp(s) => s.read(buf),
        }
    }

    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        // std sends with MSG_NOSIGNAL on Linux: a closed peer gives EPIPE, never SIGPIPE.
        match self {
            DaemonStream::Unix(s) => s.write(buf),
            DaemonStream::Tcp(s) => s.write(buf),
        }
    }

    /// Shuts both directions down (wakes any thread blocked on this socket).
    pub fn shutdown(&self) {
        let _ = match self {
            DaemonStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            DaemonStream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// Writes all of `buf`, waiting at most `timeout` for the socket to take each part.
    pub fn write_all_timeout(&mut self, mut buf: &[u8], timeout: Duration) -> Result<()> {
        while !buf.is_empty() {
            match self.write_some(buf) {
                Ok(0) => return Err(Error::ConnectionClosed),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(self.as_fd(), PollFlags::OUT, Some(Instant::now() + timeout))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Fills `buf` completely. `first_deadline` bounds the wait for the first byte
    /// (`None` = forever); after that, each further chunk must come within `REPLY_TIMEOUT`.
    /// Returns how many bytes arrived before the peer closed (`< buf.len()` only on EOF).
    fn read_full(&mut self, buf: &mut [u8], first_deadline: Option<Instant>) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.read_some(&mut buf[got..]) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let deadline = if got == 0 { first_deadline } else { Some(Instant::now() + REPLY_TIMEOUT) };
                    wait_ready(self.as_fd(), PollFlags::IN, deadline)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }

    /// Reads one whole message. `timeout` bounds the wait for its first byte (`None` =
    /// forever). A peer that closes before the header is complete gives
    /// [`Error::ConnectionClosed`] (nothing read) or a protocol error (part of it read).
    pub fn read_message(&mut self, timeout: Option<Duration>) -> Result<(Header, Vec<u8>)> {
        let mut raw = [0u8; HEADER_LEN];
        let got = self.read_full(&mut raw, timeout.map(|t| Instant::now() + t))?;
        if got == 0 {
            return Err(Error::ConnectionClosed);
        }
        if got < HEADER_LEN {
            return Err(Error::UnexpectedReply("truncated header"));
        }
        let header = Header::decode(&raw, MAX_MESSAGE_LEN)?;
        let mut payload = vec![0u8; header.payload_len()];
        let got = self.read_full(&mut payload, Some(Instant::now() + REPLY_TIMEOUT))?;
        if got < payload.len() {
            return Err(DecodeError::Truncated { expected: payload.len(), got }.into());
        }
        Ok((header, payload))
    }

    /// Reads and decodes one daemon message.
    pub fn read_daemon_message(&mut self, timeout: Option<Duration>) -> Result<(Header, proto::DaemonMessage)> {
        let (header, payload) = self.read_message(timeout)?;
        Ok((header, proto::decode_daemon_message(&header, &payload)?))
    }
}

fn connect_unix(path: &std::path::Path) -> io::Result<UnixStream> {
    // Upstream stats first; a path that exists but is not a socket is refused outright
    // (upstream could return a stale errno, even 0, here).
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
    }
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let _ = sockopt::set_socket_send_buffer_size(&fd, SOCKET_BUFFER);
    let _ = sockopt::set_socket_recv_buffer_size(&fd, SOCKET_BUFFER);
    let addr = SocketAddrUnix::new(path)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::INPROGRESS) | Err(rustix::io::Errno::AGAIN) => {
            wait_ready(fd.as_fd(), PollFlags::OUT, Some(Instant::now() + CONNECT_TIMEOUT)).map_err(|e| match e {
                Error::TimedOut => io::Error::from_raw_os_error(libc::ETIMEDOUT),
                Error::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
            sockopt::socket_error(&fd)??;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(UnixStream::from(fd))
}

fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::from_raw_os_error(libc::ECONNREFUSED);
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                let _ = s.set_nodelay(true);
                let _ = sockopt::set_socket_send_buffer_size(&s, SOCKET_BUFFER);
                let _ = sockopt::set_socket_recv_buffer_size(&s, SOCKET_BUFFER);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
