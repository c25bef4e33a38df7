//! The in-process USB backend: talks to devices directly over USB (or a simulated bus),
//! with no usbmuxd daemon. See `docs/ARCHITECTURE.md`.

pub mod daemon;
pub mod pairing;
#[cfg(feature = "usb")]
pub mod rusb;
pub mod simbus;
pub mod transport;

pub use transport::{Bus, BusEvent, BusSink, DeviceLink, LinkEvent, LinkSink, UsbDeviceInfo};
