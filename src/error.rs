//! The one error type of the crate, and its mapping to the negative errno values the C
//! API returns.

use crate::proto::DecodeError;
use std::fmt;
use std::io;

/// Everything that can go wrong talking to the daemon or a device.
#[derive(Debug)]
pub enum Error {
    /// An argument was NULL, empty or out of range.
    InvalidArgument(&'static str),
    /// The daemon could not be reached (missing socket, nobody listening, TCP failure).
    DaemonUnreachable(io::Error),
    /// An I/O error on an established connection.
    Io(io::Error),
    /// No answer within the time limit.
    TimedOut,
    /// The peer closed the connection.
    ConnectionClosed,
    /// The peer sent bytes that do not decode.
    Decode(DecodeError),
    /// A well-formed reply of the wrong kind for the request.
    UnexpectedReply(&'static str),
    /// The daemon answered with a non-zero result code (meaning depends on the request).
    DaemonResult(u32),
    /// No such device.
    NoDevice,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno value (positive) that best describes this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::DaemonUnreachable(e) => match e.raw_os_error() {
                Some(n) if n > 0 => n,
                _ => libc::ECONNREFUSED,
            },
            Error::Io(e) => match e.raw_os_error() {
                Some(n) if n > 0 => n,
                _ if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
                _ if e.kind() == io::ErrorKind::UnexpectedEof => libc::ECONNRESET,
                _ => libc::EIO,
            },
            Error::TimedOut => libc::ETIMEDOUT,
            Error::ConnectionClosed => libc::ECONNRESET,
            Error::Decode(DecodeError::LengthTooShort(_)) => libc::EPROTO,
            Error::Decode(_) => libc::EBADMSG,
            Error::UnexpectedReply(_) => libc::EPROTO,
            Error::DaemonResult(n) => *n as i32,
            Error::NoDevice => libc::ENODEV,
        }
    }

    /// `-errno`, the form the C API returns.
    pub fn neg_errno(&self) -> i32 {
        -self.errno()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::DaemonUnreachable(e) => write!(f, "cannot reach usbmuxd: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::TimedOut => write!(f, "timed out"),
            Error::ConnectionClosed => write!(f, "connection closed by peer"),
            Error::Decode(e) => write!(f, "malformed message: {e}"),
            Error::UnexpectedReply(what) => write!(f, "unexpected reply: {what}"),
            Error::DaemonResult(n) => write!(f, "daemon answered result {n}"),
            Error::NoDevice => write!(f, "no such device"),
        }
    }
}

impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Decode(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::Io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(Error::TimedOut.neg_errno(), -libc::ETIMEDOUT);
        assert_eq!(Error::ConnectionClosed.neg_errno(), -libc::ECONNRESET);
        assert_eq!(Error::DaemonUnreachable(io::Error::from_raw_os_error(libc::ENOENT)).neg_errno(), -libc::ENOENT);
        assert_eq!(Error::DaemonUnreachable(io::Error::other("x")).neg_errno(), -libc::ECONNREFUSED);
        assert_eq!(Error::Decode(DecodeError::NotADictionary).neg_errno(), -libc::EBADMSG);
        assert_eq!(Error::Decode(DecodeError::LengthTooShort(3)).neg_errno(), -libc::EPROTO);
        assert_eq!(Error::DaemonResult(2).neg_errno(), -2);
        assert_eq!(Error::InvalidArgument("x").neg_errno(), -libc::EINVAL);
    }
}
