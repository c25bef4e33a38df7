//! What the USB backend needs from a bus: discovery with hot-plug, and per device a link
//! that carries bulk transfers. Two implementations: real hardware through libusb (rusb,
//! `rusb.rs`), and a simulated bus served by another process (`simbus.rs`), so that the
//! unmodified library in a real program can be pointed at simulated devices.
//!
//! Both report through callbacks ("sinks") that may be called from any thread; the
//! backend's I/O thread collects what they report.

use std::io;
use std::sync::Arc;

/// A USB device as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceInfo {
    /// Unique on its bus while attached (e.g. `(bus << 8) | address`).
    pub bus_id: u64,
    pub vendor_id: u16,
    pub product_id: u16,
    /// The iSerialNumber string (the backend turns it into the UDID).
    pub serial: String,
    /// `(bus number << 16) | device address`, reported as `LocationID`.
    pub location: u32,
    /// Link speed in bit/s, reported as `ConnectionSpeed`.
    pub speed_bps: u64,
}

/// Apple's USB vendor id.
pub const APPLE_VENDOR_ID: u16 = 0x05ac;

impl UsbDeviceInfo {
    /// Whether this is an iOS device in usbmux mode (`usb-mux-protocol.md` §1.1).
    pub fn is_mux_device(&self) -> bool {
        self.vendor_id == APPLE_VENDOR_ID && (self.product_id == 0x8600 || (0x1290..=0x12af).contains(&self.product_id))
    }
}

/// A change on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    Arrived(UsbDeviceInfo),
    /// The device with this `bus_id` left.
    Left(u64),
}

/// Something that happened on an open device link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// One completed bulk IN transfer (may be empty: a zero-length packet).
    Transfer(Vec<u8>),
    /// The link failed or the device went away; nothing more will come.
    Gone(String),
}

/// Where a bus reports its events.
pub type BusSink = Arc<dyn Fn(BusEvent) + Send + Sync>;
/// Where a device link reports its transfers.
pub type LinkSink = Arc<dyn Fn(LinkEvent) + Send + Sync>;

/// A bus with usbmux devices on it.
pub trait Bus: Send {
    /// Starts discovery: reports every device present now — before returning, so that
    /// the backend knows them before it answers its first request — then arrivals and
    /// departures (hot-plug, or polling where the platform has none), until dropped.
    fn start(&mut self, sink: BusSink) -> io::Result<()>;

    /// Opens a device for the mux protocol (configuration, interface, endpoints) and
    /// starts reading: every bulk IN transfer goes to `sink`.
    fn open(&mut self, device: &UsbDeviceInfo, sink: LinkSink) -> io::Result<Box<dyn DeviceLink>>;

    /// A line for debug output saying what this bus is (and, if discovery found nothing,
    /// why that may be).
    fn describe(&self) -> String;
}

/// An open device: the host's half of its bulk endpoints.
pub trait DeviceLink: Send {
    /// `Some(read size)` if incoming transfers follow USB framing (a packet ends with a
    /// transfer shorter than the read size); `None` for a byte stream.
    fn read_size(&self) -> Option<usize>;

    /// Sends one mux packet as one bulk OUT transfer, followed by a zero-length transfer
    /// when its length is a multiple of the endpoint's max packet size.
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
}
