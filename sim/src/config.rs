//! [`DeviceConfig`]: what a simulated device is and how it behaves.

use crate::misbehaviour::Misbehaviour;
use crate::services::{Echo, Lockdownd, Service, ServiceContext, Sink, Source};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use usbmuxd::usbmux::codec::LONG_HEADER_LEN;
use usbmuxd::usbmux::codec::{VersionBody, MAX_IN_PACKET, MAX_TCP_PAYLOAD, TCP_HEADER_LEN};

pub use crate::services::lockdownd::LOCKDOWND_PORT;

/// Default port of [`Echo`] in [`DeviceConfig::with_default_services`] (the classic echo port).
pub const ECHO_PORT: u16 = 7;
/// Default port of [`Sink`] (the classic discard port).
pub const SINK_PORT: u16 = 9;
/// Default port of [`Source`] (the classic chargen port).
pub const SOURCE_PORT: u16 = 19;
/// Bytes sent by the default [`Source`] on [`SOURCE_PORT`]: 1 MiB.
pub const DEFAULT_SOURCE_LEN: u64 = 1 << 20;
/// UDID of [`DeviceConfig::new`].
pub const DEFAULT_UDID: &str = "00008030-001A2B3C4D5E6F70";
/// The receive window real devices advertise: 131072 bytes (`0x0200` on the wire).
pub const DEFAULT_WINDOW: u32 = 131072;
/// Largest window the 16-bit field (in units of 256 bytes) can carry.
pub const MAX_WINDOW: u32 = 0xFFFF << 8;
/// Default [`DeviceConfig::max_segment`]: 49116 bytes, the host's own per-packet cap, so
/// that a full device packet is 49152 bytes = three 16 KiB bulk reads on the host.
pub const DEFAULT_MAX_SEGMENT: usize = MAX_TCP_PAYLOAD;
/// Largest [`DeviceConfig::max_segment`]: the host accepts packets of up to 65536 bytes,
/// minus a long mux header and the TCP header = 65500.
pub const MAX_SEGMENT: usize = MAX_IN_PACKET - LONG_HEADER_LEN - TCP_HEADER_LEN;
/// wMaxPacketSize of a high-speed bulk endpoint, the default of [`Framing::usb`].
pub const HIGH_SPEED_MAX_PACKET: usize = 512;

/// Creates the service for a new connection on a port.
pub type ServiceFactory = Arc<dyn Fn(&ServiceContext<'_>) -> Box<dyn Service> + Send + Sync>;

/// How the host's bytes reach the device, i.e. what one [`crate::SimDevice::handle_input`]
/// call means, and how the device's output is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// USB: each `handle_input` call is **one bulk OUT transfer**; a zero-length call is
    /// a zero-length packet (ZLP). A transfer whose length is a multiple of
    /// `max_packet_size` is not terminated (no short packet), so it only completes with
    /// the following ZLP — without one, the device runs it into the next transfer and
    /// the packet that transfer carried is lost ([`crate::DropReason::MissingZlp`]), as
    /// on real hardware. Each [`crate::SimDevice::poll_transmit`] result is one bulk IN
    /// transfer carrying exactly one mux packet.
    Usb {
        /// wMaxPacketSize of the device's OUT endpoint (512 at high speed, 1024 at
        /// SuperSpeed).
        max_packet_size: usize,
    },
    /// A byte stream (e.g. a socket): `handle_input` takes arbitrary chunks and packets
    /// are delimited by their length fields only; `poll_transmit` returns one packet
    /// per call, or random fragments with [`Misbehaviour::fragment_output`].
    Stream,
}

impl Framing {
    /// USB framing with a high-speed endpoint (wMaxPacketSize 512).
    pub fn usb() -> Framing {
        Framing::Usb { max_packet_size: HIGH_SPEED_MAX_PACKET }
    }
}

/// Everything needed to create a [`crate::SimDevice`]. Cheap to clone (services are
/// shared factories), so the same configuration can "plug in" several devices.
#[derive(Clone)]
pub struct DeviceConfig {
    /// The device's UDID, handed to services (lockdownd's `UniqueDeviceID`).
    pub udid: String,
    /// The VERSION reply. `major` 2 (default) = long headers after SETUP; 1 = a
    /// version-1 device (short headers, no counters); anything else is not a version the
    /// host knows — the device still answers with it (and then behaves like version 2 if
    /// `major > 2`, like version 1 if `major == 0`), for testing the host's rejection.
    pub version: VersionBody,
    /// See [`Framing`]. Default: [`Framing::usb`].
    pub framing: Framing,
    /// The receive window advertised on every connection, in bytes (rounded down to a
    /// multiple of 256, at most [`MAX_WINDOW`]). Default [`DEFAULT_WINDOW`].
    /// [`Misbehaviour::receive_window`] overrides it.
    pub receive_window: u32,
    /// Largest TCP payload per packet the device sends; clamped to `1..=`[`MAX_SEGMENT`].
    /// Default [`DEFAULT_MAX_SEGMENT`].
    pub max_segment: usize,
    /// Initial misbehaviour; change it at runtime with
    /// [`crate::SimDevice::set_misbehaviour`].
    pub misbehaviour: Misbehaviour,
    /// Seed of the device's deterministic randomness (fragment sizes).
    pub seed: u64,
    services: BTreeMap<u16, ServiceFactory>,
}

impl DeviceConfig {
    /// A version-2 device with UDID [`DEFAULT_UDID`], USB framing, the default window and
    /// segment size, no misbehaviour and **no services** (every SYN is refused).
    pub fn new() -> DeviceConfig {
        DeviceConfig {
            udid: DEFAULT_UDID.to_string(),
            version: VersionBody { major: 2, minor: 0, padding: 0 },
            framing: Framing::usb(),
            receive_window: DEFAULT_WINDOW,
            max_segment: DEFAULT_MAX_SEGMENT,
            misbehaviour: Misbehaviour::default(),
            seed: 0x5EED,
            services: BTreeMap::new(),
        }
    }

    /// Sets [`DeviceConfig::udid`].
    pub fn udid(mut self, udid: &str) -> DeviceConfig {
        self.udid = udid.to_string();
        self
    }

    /// Sets the VERSION reply's major and minor ([`DeviceConfig::version`]).
    pub fn version(mut self, major: u32, minor: u32) -> DeviceConfig {
        self.version = VersionBody { major, minor, padding: 0 };
        self
    }

    /// Sets [`DeviceConfig::framing`].
    pub fn framing(mut self, framing: Framing) -> DeviceConfig {
        self.framing = framing;
        self
    }

    /// Sets [`DeviceConfig::receive_window`].
    pub fn receive_window(mut self, bytes: u32) -> DeviceConfig {
        self.receive_window = bytes;
        self
    }

    /// Sets [`DeviceConfig::max_segment`].
    pub fn max_segment(mut self, bytes: usize) -> DeviceConfig {
        self.max_segment = bytes;
        self
    }

    /// Sets [`DeviceConfig::misbehaviour`].
    pub fn misbehaviour(mut self, misbehaviour: Misbehaviour) -> DeviceConfig {
        self.misbehaviour = misbehaviour;
        self
    }

    /// Sets [`DeviceConfig::seed`].
    pub fn seed(mut self, seed: u64) -> DeviceConfig {
        self.seed = seed;
        self
    }

    /// Serves `port` with a fresh service from `factory` for each connection (replacing
    /// what was there), e.g. `.listen(7, |_| Echo::new())`.
    pub fn listen<S, F>(mut self, port: u16, factory: F) -> DeviceConfig
    where
        S: Service + 'static,
        F: Fn(&ServiceContext<'_>) -> S + Send + Sync + 'static,
    {
        self.services.insert(port, boxed_factory(factory));
        self
    }

    /// Like [`DeviceConfig::listen`] with a ready [`ServiceFactory`].
    pub fn listen_with(mut self, port: u16, factory: ServiceFactory) -> DeviceConfig {
        self.services.insert(port, factory);
        self
    }

    /// Stops serving `port` (SYNs to it are refused).
    pub fn unlisten(mut self, port: u16) -> DeviceConfig {
        self.services.remove(&port);
        self
    }

    /// Adds the services of the fake daemon's devices: [`LOCKDOWND_PORT`] a
    /// [`Lockdownd`] with the default values for the device's UDID, [`ECHO_PORT`] an
    /// [`Echo`], [`SINK_PORT`] a [`Sink`], [`SOURCE_PORT`] a [`Source`] of
    /// [`DEFAULT_SOURCE_LEN`] bytes.
    pub fn with_default_services(self) -> DeviceConfig {
        self.listen(LOCKDOWND_PORT, |ctx| Lockdownd::for_udid(ctx.udid))
            .listen(ECHO_PORT, |_| Echo::new())
            .listen(SINK_PORT, |_| Sink::new())
            .listen(SOURCE_PORT, |_| Source::new(DEFAULT_SOURCE_LEN))
    }

    /// The ports with a service, ascending.
    pub fn ports(&self) -> Vec<u16> {
        self.services.keys().copied().collect()
    }

    /// The factory serving `port`.
    pub fn service_factory(&self, port: u16) -> Option<&ServiceFactory> {
        self.services.get(&port)
    }

    pub(crate) fn services_mut(&mut self) -> &mut BTreeMap<u16, ServiceFactory> {
        &mut self.services
    }
}

/// Wraps a closure returning a concrete service into a [`ServiceFactory`].
pub fn boxed_factory<S, F>(factory: F) -> ServiceFactory
where
    S: Service + 'static,
    F: Fn(&ServiceContext<'_>) -> S + Send + Sync + 'static,
{
    Arc::new(move |ctx: &ServiceContext<'_>| Box::new(factory(ctx)) as Box<dyn Service>)
}

impl Default for DeviceConfig {
    fn default() -> DeviceConfig {
        DeviceConfig::new()
    }
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("udid", &self.udid)
            .field("version", &self.version)
            .field("framing", &self.framing)
            .field("receive_window", &self.receive_window)
            .field("max_segment", &self.max_segment)
            .field("misbehaviour", &self.misbehaviour)
            .field("seed", &self.seed)
            .field("ports", &self.ports())
            .finish()
    }
}

/// A window as it goes on the wire: a multiple of 256, at most [`MAX_WINDOW`].
pub(crate) fn wire_window(bytes: u32) -> u32 {
    bytes.min(MAX_WINDOW) & !0xFF
}
