//! What a test daemon is made of: where it listens, which protocol it speaks, which
//! devices it reports and which services those devices offer.

use plist::{Dictionary, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use usbmuxd::proto::{ConnectionType, DeviceRecord};

/// lockdownd's well-known port.
pub const LOCKDOWND_PORT: u16 = 62078;
/// Default port of the [`Service::Echo`] service (the classic echo port).
pub const ECHO_PORT: u16 = 7;
/// Default port of the [`Service::Sink`] service (the classic discard port).
pub const SINK_PORT: u16 = 9;
/// Default port of the [`Service::Source`] service (the classic chargen port).
pub const SOURCE_PORT: u16 = 19;
/// Bytes sent by the default [`Service::Source`] on [`SOURCE_PORT`].
pub const DEFAULT_SOURCE_LEN: u64 = 1 << 20;
/// USB product id given to devices unless a test chooses one (an iPhone, 0x12a8).
pub const DEFAULT_PRODUCT_ID: u32 = 0x12a8;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A UNIX socket at this path (a stale socket file there is replaced).
    Unix(PathBuf),
    /// A TCP socket; port 0 picks a free port, see [`crate::TestDaemon::tcp_addr`].
    Tcp(SocketAddr),
    /// A UNIX socket named `usbmuxd` in a fresh temporary directory, which is also the
    /// default pair-record directory; the directory is removed when the daemon is dropped.
    TempDir,
}

/// Which protocol generation the daemon speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolMode {
    /// A modern daemon like the open-source usbmuxd: binary `LISTEN`/`CONNECT` and all
    /// plist requests.
    Plist,
    /// An old daemon: every plist (`MESSAGE_PLIST`) request is answered with a binary
    /// `RESULT 6` (BADVERSION, header version 0); binary `LISTEN` and `CONNECT` are served.
    BinaryOnly,
}

/// What answers on a device port after a successful `Connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Sends every byte back unchanged; closes after the client half-closes or closes.
    Echo,
    /// Reads and discards everything (counted in [`crate::ServiceStats`]).
    Sink,
    /// Sends this many bytes of [`crate::source_pattern`], then half-closes (the client sees EOF).
    Source(u64),
    /// Closes the connection right after the `Result 0`.
    CloseImmediately,
    /// A minimal lockdownd (see [`crate::lockdownd`]).
    Lockdownd,
}

/// The services every device gets unless a test says otherwise:
/// 62078 lockdownd, 7 echo, 9 sink, 19 source (1 MiB).
pub fn default_services() -> BTreeMap<u16, Service> {
    BTreeMap::from([
        (LOCKDOWND_PORT, Service::Lockdownd),
        (ECHO_PORT, Service::Echo),
        (SINK_PORT, Service::Sink),
        (SOURCE_PORT, Service::Source(DEFAULT_SOURCE_LEN)),
    ])
}

/// A fake device.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDevice {
    /// The daemon's DeviceID. 0 means "assign the next free id" when attached.
    pub handle: u32,
    /// Reported as `SerialNumber`; also lockdownd's `UniqueDeviceID`.
    pub udid: String,
    /// USB idProduct (reported for USB devices only).
    pub product_id: u32,
    /// `LocationID` / binary `location` (USB only). 0 = `0x0001_0000 | handle` (bus 1),
    /// filled in when the device is added to a daemon.
    pub location: u32,
    pub connection: ConnectionType,
    /// `NetworkAddress` bytes (network devices only), e.g. [`darwin_sockaddr_in`].
    pub network_address: Vec<u8>,
    /// Port → service, reachable through the daemon's `Connect`.
    pub services: BTreeMap<u16, Service>,
    /// Added to (or replacing entries of) lockdownd's default `GetValue` dictionary.
    pub lockdown_values: Dictionary,
}

impl TestDevice {
    /// A USB device with product id 0x12a8, location `0x0001_0000 | handle` and the
    /// [`default_services`]. `handle` 0 = assigned on attach.
    pub fn usb(handle: u32, udid: &str) -> TestDevice {
        TestDevice {
            handle,
            udid: udid.to_string(),
            product_id: DEFAULT_PRODUCT_ID,
            location: 0,
            connection: ConnectionType::Usb,
            network_address: Vec::new(),
            services: default_services(),
            lockdown_values: Dictionary::new(),
        }
    }

    /// A network device at `ip` (NetworkAddress = Darwin `sockaddr_in`, port 0), with the
    /// [`default_services`] reachable through the daemon. Clients normally connect to the
    /// address directly; [`crate::ServiceServer`] can provide a service there.
    pub fn network(handle: u32, udid: &str, ip: Ipv4Addr) -> TestDevice {
        TestDevice {
            connection: ConnectionType::Network,
            network_address: darwin_sockaddr_in(ip, 0),
            product_id: 0,
            location: 0,
            ..TestDevice::usb(handle, udid)
        }
    }

    pub fn with_product_id(mut self, product_id: u32) -> TestDevice {
        self.product_id = product_id;
        self
    }

    pub fn with_location(mut self, location: u32) -> TestDevice {
        self.location = location;
        self
    }

    /// Raw `NetworkAddress` bytes (makes sense for network devices).
    pub fn with_network_address(mut self, bytes: Vec<u8>) -> TestDevice {
        self.network_address = bytes;
        self
    }

    /// Adds or replaces the service on `port`.
    pub fn with_service(mut self, port: u16, service: Service) -> TestDevice {
        self.services.insert(port, service);
        self
    }

    /// Removes every service (a `Connect` to any port then gets `Result 3`).
    pub fn without_services(mut self) -> TestDevice {
        self.services.clear();
        self
    }

    /// Sets a value lockdownd reports (`GetValue` without domain).
    pub fn with_lockdown_value(mut self, key: &str, value: impl Into<Value>) -> TestDevice {
        self.lockdown_values.insert(key.to_string(), value.into());
        self
    }

    /// The record as the client library is expected to decode it.
    pub fn record(&self) -> DeviceRecord {
        DeviceRecord {
            handle: self.handle,
            product_id: if self.connection == ConnectionType::Usb { self.product_id } else { 0 },
            udid: self.udid.clone(),
            connection: self.connection,
            network_address: self.network_address.clone(),
        }
    }
}

/// Everything needed to start a [`crate::TestDaemon`].
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: Listen,
    pub mode: ProtocolMode,
    /// Whether `ListDevices` is answered; if not, it gets `Result 1` (like an old daemon).
    pub list_devices: bool,
    /// Devices present at start, in this order (handle 0 = next free id).
    pub devices: Vec<TestDevice>,
    /// Where `SystemConfiguration.plist` and `<ID>.plist` records live. `None`: a fresh
    /// temporary directory, removed on drop.
    pub pair_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            listen: Listen::TempDir,
            mode: ProtocolMode::Plist,
            list_devices: true,
            devices: Vec::new(),
            pair_dir: None,
        }
    }
}

impl DaemonConfig {
    /// A modern daemon on a UNIX socket in a temporary directory, no devices.
    pub fn new() -> DaemonConfig {
        DaemonConfig::default()
    }

    pub fn unix(path: impl Into<PathBuf>) -> DaemonConfig {
        DaemonConfig { listen: Listen::Unix(path.into()), ..DaemonConfig::default() }
    }

    /// TCP on `addr`; use `127.0.0.1:0` for a free port.
    pub fn tcp(addr: SocketAddr) -> DaemonConfig {
        DaemonConfig { listen: Listen::Tcp(addr), ..DaemonConfig::default() }
    }

    pub fn binary_only(mut self) -> DaemonConfig {
        self.mode = ProtocolMode::BinaryOnly;
        self
    }

    pub fn without_list_devices(mut self) -> DaemonConfig {
        self.list_devices = false;
        self
    }

    pub fn device(mut self, device: TestDevice) -> DaemonConfig {
        self.devices.push(device);
        self
    }

    pub fn pair_dir(mut self, dir: impl Into<PathBuf>) -> DaemonConfig {
        self.pair_dir = Some(dir.into());
        self
    }
}

/// A Darwin `struct sockaddr_in` (16 bytes: len 0x10, family 2, port big-endian,
/// address, 8 zero bytes), the IPv4 `NetworkAddress` format of Apple's daemon.
pub fn darwin_sockaddr_in(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = vec![0x10, 0x02];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A Darwin `struct sockaddr_in6` (28 bytes: len 0x1c, family 30, port big-endian,
/// flowinfo 0, address, scope id in host order).
pub fn darwin_sockaddr_in6(ip: Ipv6Addr, port: u16, scope_id: u32) -> Vec<u8> {
    let mut out = vec![0x1c, 0x1e];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&scope_id.to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_layouts() {
        assert_eq!(darwin_sockaddr_in(Ipv4Addr::LOCALHOST, 0), [0x10, 2, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(darwin_sockaddr_in(Ipv4Addr::new(192, 168, 1, 23), 0x1234)[2..8], [0x12, 0x34, 192, 168, 1, 23]);
        let v6 = darwin_sockaddr_in6(Ipv6Addr::LOCALHOST, 0, 4);
        assert_eq!(v6.len(), 28);
        assert_eq!(v6[..2], [0x1c, 0x1e]);
        assert_eq!(v6[23], 1);
    }

    #[test]
    fn device_records() {
        let usb = TestDevice::usb(3, "00008030-001A2B3C4D5E6F70");
        assert_eq!(usb.record().product_id, 0x12a8);
        assert_eq!(usb.services.get(&LOCKDOWND_PORT), Some(&Service::Lockdownd));
        let net = TestDevice::network(7, "abc", Ipv4Addr::LOCALHOST);
        assert_eq!(net.record().connection, ConnectionType::Network);
        assert_eq!(net.record().network_address.len(), 16);
        assert_eq!(net.record().product_id, 0);
    }
}
