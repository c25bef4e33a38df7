//! Where the daemon listens: `USBMUXD_SOCKET_ADDRESS` or the platform default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Name of the environment variable that redirects every client to another daemon.
pub const SOCKET_ADDRESS_ENV: &str = "USBMUXD_SOCKET_ADDRESS";
/// The default daemon socket.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/usbmuxd";

/// A daemon address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DaemonAddress {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    /// The in-process USB backend (`crate::usb`), reached through a socket pair.
    InProcess,
}

/// `strtol(s, &end, 10)` consuming the whole string, restricted to 1..=65535.
fn parse_port(s: &str) -> Option<u16> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    if negative || value == 0 || value > 65535 {
        return None;
    }
    Some(value as u16)
}

impl DaemonAddress {
    /// The address the next connection should use: re-reads the environment every time,
    /// as libusbmuxd does, so a change at run time takes effect for the next request.
    pub fn from_env() -> DaemonAddress {
        DaemonAddress::parse(std::env::var(SOCKET_ADDRESS_ENV).ok().as_deref())
    }

    /// Interprets a `USBMUXD_SOCKET_ADDRESS` value (`None` = unset). Values that do not
    /// parse fall back to the default socket, as upstream does.
    pub fn parse(value: Option<&str>) -> DaemonAddress {
        let default = DaemonAddress::Unix(PathBuf::from(DEFAULT_SOCKET_PATH));
        let Some(value) = value else { return default };
        if let Some(path) = value.strip_prefix("UNIX:") {
            return if path.is_empty() { default } else { DaemonAddress::Unix(PathBuf::from(path)) };
        }
        let Some(colon) = value.rfind(':') else { return default };
        let Some(port) = parse_port(&value[colon + 1..]) else { return default };
        let host = if let Some(rest) = value.strip_prefix('[') {
            match rest.rfind(']') {
                Some(end) => &rest[..end],
                None => &value[..colon],
            }
        } else {
            &value[..colon]
        };
        if host.is_empty() {
            return default;
        }
        DaemonAddress::Tcp { host: host.to_string(), port }
    }

    /// For a UNIX socket: the directory to watch and the entry name that appears there
    /// when the daemon (re)creates its socket.
    pub fn watch_target(&self) -> Option<(PathBuf, OsString)> {
        match self {
            DaemonAddress::Unix(path) => {
                let name = path.file_name()?.to_os_string();
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => Path::new(".").to_path_buf(),
                };
                Some((dir, name))
            }
            DaemonAddress::Tcp { .. } | DaemonAddress::InProcess => None,
        }
    }
}

impl std::fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonAddress::Unix(p) => write!(f, "{}", p.display()),
            DaemonAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            DaemonAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            DaemonAddress::InProcess => write!(f, "the in-process USB backend"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> DaemonAddress {
        DaemonAddress::Tcp { host: host.into(), port }
    }

    #[test]
    fn parses_every_documented_form() {
        let default = DaemonAddress::Unix(DEFAULT_SOCKET_PATH.into());
        assert_eq!(DaemonAddress::parse(None), default);
        assert_eq!(DaemonAddress::parse(Some("UNIX:/tmp/mux")), DaemonAddress::Unix("/tmp/mux".into()));
        assert_eq!(DaemonAddress::parse(Some("UNIX:")), default);
        assert_eq!(DaemonAddress::parse(Some("unix:/tmp/mux")), default, "prefix is case-sensitive");
        assert_eq!(DaemonAddress::parse(Some("127.0.0.1:27015")), tcp("127.0.0.1", 27015));
        assert_eq!(DaemonAddress::parse(Some("localhost:1")), tcp("localhost", 1));
        assert_eq!(DaemonAddress::parse(Some("[::1]:27015")), tcp("::1", 27015));
        assert_eq!(DaemonAddress::parse(Some("[fe80::1%en0]:27015")), tcp("fe80::1%en0", 27015));
        assert_eq!(DaemonAddress::parse(Some("::1:27015")), tcp("::1", 27015));
        assert_eq!(DaemonAddress::parse(Some("host: +22")), tcp("host", 22), "strtol accepts space and sign");
        for bad in ["host", "host:", "host:0", "host:65536", "host:-1", "host:12x", ":27015", "[]:1"] {
            assert_eq!(DaemonAddress::parse(Some(bad)), default, "{bad}");
        }
    }

    #[test]
    fn watch_target_is_the_socket_directory() {
        let a = DaemonAddress::Unix("/run/other/mux.sock".into());
        assert_eq!(a.watch_target(), Some(("/run/other".into(), "mux.sock".into())));
        assert_eq!(DaemonAddress::Unix("rel.sock".into()).watch_target(), Some((".".into(), "rel.sock".into())));
        assert_eq!(tcp("h", 1).watch_target(), None);
    }
}
