//! Finding the device and connecting to one of its ports, shared by iproxy and inetcat:
//! USB devices through the daemon (`usbmuxd::connect`), network devices directly over
//! TCP at the address the daemon reports, as upstream's tools do.

use crate::netaddr;
use crate::sys::{error_text, strerror};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;
use usbmuxd::client::address::DaemonAddress;
use usbmuxd::{ConnectionType, DeviceRecord, Error, LookupOptions};

/// How long a direct TCP connection to a network device may take.
pub const NETWORK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a device lookup.
#[derive(Debug)]
pub enum Lookup {
    Found(DeviceRecord),
    /// The device list could not be obtained (daemon unreachable, bad reply).
    DaemonFailed(Error),
    /// The daemon knows no device at all (only reported without a UDID, as upstream).
    NoDevices,
    /// Devices exist, but none of the requested kind / UDID.
    NoMatch,
}

/// Looks the device up the way iproxy and inetcat do: the first device of an allowed
/// kind, or the one with `udid` (exact match; with both kinds allowed, USB first).
pub fn lookup(udid: Option<&str>, opts: LookupOptions) -> Lookup {
    match usbmuxd::list_devices() {
        Err(e) => Lookup::DaemonFailed(e),
        Ok(list) if list.is_empty() && udid.is_none() => Lookup::NoDevices,
        Ok(list) => match usbmuxd::select_device(&list, udid, opts) {
            Some(d) => Lookup::Found(d.clone()),
            None => Lookup::NoMatch,
        },
    }
}

/// Where the daemon is expected (for messages).
pub fn daemon_address() -> String {
    DaemonAddress::from_env().to_string()
}

/// The detail line for a failed device list: what went wrong, in words.
pub fn describe_list_failure(e: &Error) -> String {
    match e {
        Error::DaemonUnreachable(io) => format!("cannot reach usbmuxd at {}: {}", daemon_address(), error_text(io)),
        other => format!("usbmuxd at {}: {}", daemon_address(), describe(other)),
    }
}

/// A library error in the words `strerror` would use where one fits.
pub fn describe(e: &Error) -> String {
    match e {
        Error::DaemonResult(3) => strerror(libc_errno::ECONNREFUSED),
        Error::DaemonResult(2) => strerror(libc_errno::ENODEV),
        Error::DaemonResult(n) => format!("usbmuxd refused the request (result {n})"),
        Error::DaemonUnreachable(io) => format!("cannot reach usbmuxd at {}: {}", daemon_address(), error_text(io)),
        Error::Io(io) => error_text(io),
        Error::TimedOut => format!("usbmuxd did not answer ({})", strerror(libc_errno::ETIMEDOUT)),
        other => other.to_string(),
    }
}

/// errno values used in messages (Linux).
mod libc_errno {
    pub const ENODEV: i32 = 19;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
}

/// A connected socket to the device port.
#[derive(Debug)]
pub enum DeviceSocket {
    /// Through the daemon (USB).
    Mux(usbmuxd::Connection),
    /// Direct TCP (network device).
    Direct(OwnedFd),
}

impl AsFd for DeviceSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DeviceSocket::Mux(c) => c.as_fd(),
            DeviceSocket::Direct(fd) => fd.as_fd(),
        }
    }
}

/// Why the connection to the device could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Mux(Error),
    UnsupportedFamily(u8),
    Network(io::Error),
}

impl ConnectError {
    /// The stderr line (without newline).
    pub fn message(&self) -> String {
        match self {
            ConnectError::Mux(e) => format!("Error connecting to device: {}", describe(e)),
            ConnectError::UnsupportedFamily(f) => format!("Unsupported address family 0x{f:02x}"),
            ConnectError::Network(e) => format!("Error connecting to device: {}", error_text(e)),
        }
    }
}

/// How a device port is reached.
#[derive(Debug, Clone)]
pub enum Route {
    Usb { handle: u32 },
    Network { ip: IpAddr, addrs: Vec<SocketAddr> },
}

impl Route {
    /// Decides the route to `port` on `dev` (decodes a network device's address).
    pub fn for_device(dev: &DeviceRecord, port: u16) -> Result<Route, ConnectError> {
        match dev.connection {
            ConnectionType::Usb => Ok(Route::Usb { handle: dev.handle }),
            ConnectionType::Network => {
                let addr = netaddr::decode(&dev.network_address).map_err(ConnectError::UnsupportedFamily)?;
                Ok(Route::Network { ip: addr.ip, addrs: netaddr::candidates(&addr, port) })
            }
        }
    }

    /// iproxy's progress line (2.1.1 wording).
    pub fn requesting_line(&self, dev: &DeviceRecord, port: u16) -> String {
        match self {
            Route::Usb { handle } => {
                format!("Requesting connection to USB device handle {handle} (serial: {}), port {port}", dev.udid)
            }
            Route::Network { ip, .. } => {
                format!("Requesting connection to NETWORK device {ip} (serial: {}), port {port}", dev.udid)
            }
        }
    }

    /// Connects (blocking, bounded by the daemon's reply timeout or
    /// [`NETWORK_CONNECT_TIMEOUT`]). The socket is non-blocking and close-on-exec; a
    /// direct TCP socket has `TCP_NODELAY`.
    pub fn connect(&self, port: u16) -> Result<DeviceSocket, ConnectError> {
        match self {
            Route::Usb { handle } => usbmuxd::connect(*handle, port).map(DeviceSocket::Mux).map_err(ConnectError::Mux),
            Route::Network { addrs, .. } => {
                let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no usable address");
                for a in addrs {
                    match TcpStream::connect_timeout(a, NETWORK_CONNECT_TIMEOUT) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            s.set_nonblocking(true).map_err(ConnectError::Network)?;
                            return Ok(DeviceSocket::Direct(OwnedFd::from(s)));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(ConnectError::Network(last))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            ConnectError::Mux(Error::DaemonResult(3)).message(),
            "Error connecting to device: Connection refused"
        );
        assert_eq!(ConnectError::Mux(Error::DaemonResult(2)).message(), "Error connecting to device: No such device");
        assert_eq!(ConnectError::UnsupportedFamily(0x0a).message(), "Unsupported address family 0x0a");
        assert_eq!(
            ConnectError::Network(io::Error::from_raw_os_error(113)).message(),
            "Error connecting to device: No route to host"
        );
        let unreachable = Error::DaemonUnreachable(io::Error::from_raw_os_error(2));
        assert!(describe(&unreachable).ends_with(": No such file or directory"), "{}", describe(&unreachable));
        assert!(describe(&unreachable).starts_with("cannot reach usbmuxd at "));
    }
}
