//! One stream and one listener type over UNIX and TCP sockets, so that the rest of the
//! daemon does not care which transport a test chose.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connected client socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Errors are ignored: the usual one is "not connected", i.e. already shut down.
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a running daemon listens, after binding (a TCP port 0 is replaced by the real one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl BoundAddress {
    /// The value for `USBMUXD_SOCKET_ADDRESS`: `UNIX:<path>`, `<ipv4>:<port>` or `[<ipv6>]:<port>`.
    pub fn to_env_value(&self) -> String {
        match self {
            BoundAddress::Unix(p) => format!("UNIX:{}", p.display()),
            BoundAddress::Tcp(a) => a.to_string(),
        }
    }
}

/// A listening socket. A UNIX socket's file is removed when the listener is dropped,
/// unless it has been replaced by another file in the meantime.
pub(crate) enum Listener {
    Unix { listener: UnixListener, path: PathBuf, file_id: Option<(u64, u64)> },
    Tcp(TcpListener),
}

/// Device and inode of a file, to recognise "our" socket file.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, file_id: Some(id), .. } = self {
            if file_id(path) == Some(*id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Unix { listener, .. } => listener.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

impl Listener {
    /// Binds to `addr`. A stale UNIX socket file (left by a killed daemon) is replaced;
    /// any other existing file is an error rather than being deleted.
    pub fn bind(addr: &BoundAddress) -> io::Result<(Listener, BoundAddress)> {
        match addr {
            BoundAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                let file_id = file_id(path);
                Ok((Listener::Unix { listener, path: path.clone(), file_id }, addr.clone()))
            }
            BoundAddress::Tcp(a) => {
                // std sets SO_REUSEADDR, so a restart can rebind the same port at once.
                let l = TcpListener::bind(a)?;
                let real = l.local_addr()?;
                Ok((Listener::Tcp(l), BoundAddress::Tcp(real)))
            }
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Unix { listener, .. } => listener.set_nonblocking(on),
            Listener::Tcp(l) => l.set_nonblocking(on),
        }
    }

    /// Accepts a connection; the stream is blocking whatever the listener is.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept()?;
                s.set_nonblocking(false)?;
                Ok(Stream::Unix(s))
            }
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
        }
    }
}

pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => {
            Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a socket", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
