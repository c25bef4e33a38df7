//! A simulated iPhone for the USB side of the usbmux protocol
//! (`usb-mux-protocol.md` §2–§5): a sans-IO device state machine ([`SimDevice`]) that
//! answers a host's VERSION and SETUP, accepts pseudo-TCP connections on configured
//! ports, runs small services behind them ([`services`]) and can be told to misbehave
//! ([`Misbehaviour`]), so that host implementations can be tested without hardware.
//!
//! All packets are built and parsed with the codec of the `usbmuxd` crate
//! ([`usbmuxd::usbmux::codec`]).
//!
//! ```
//! use std::time::Instant;
//! use usbmux_sim::{DeviceConfig, Event, Framing, SimDevice, ECHO_PORT};
//! use usbmuxd::usbmux::codec::{flags, HeaderFormat, Packet, TcpHeader, VersionBody};
//!
//! let now = Instant::now();
//! let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
//! // VERSION, SETUP, then a SYN to the echo port: what a host sends first.
//! dev.handle_input(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None), now).unwrap();
//! dev.handle_input(&Packet::Setup(vec![7]).encode(Some((0, 0xffff))), now).unwrap();
//! let syn = TcpHeader { source_port: 1, dest_port: ECHO_PORT, seq: 0, ack: 0, flags: flags::SYN, window: 131072 };
//! dev.handle_input(&Packet::Tcp { header: syn, payload: vec![] }.encode(Some((1, 0xffff))), now).unwrap();
//!
//! let _version_reply = dev.poll_transmit().unwrap();
//! let (_, reply) = Packet::decode(&dev.poll_transmit().unwrap(), HeaderFormat::Long).unwrap();
//! let Packet::Tcp { header, .. } = reply else { panic!() };
//! assert_eq!((header.flags, header.seq, header.ack), (flags::SYN | flags::ACK, 0, 1));
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod device;
pub mod event;
pub mod link;
pub mod misbehaviour;
pub mod services;
pub mod simbus;
pub mod stdio;

pub use config::{
    boxed_factory, DeviceConfig, Framing, ServiceFactory, DEFAULT_MAX_SEGMENT, DEFAULT_SOURCE_LEN, DEFAULT_UDID,
    DEFAULT_WINDOW, ECHO_PORT, HIGH_SPEED_MAX_PACKET, LOCKDOWND_PORT, MAX_SEGMENT, MAX_WINDOW, SINK_PORT, SOURCE_PORT,
};
pub use connection::{ConnectionId, ConnectionInfo, ConnectionState, ConnectionStats, RESET_FLAGS};
pub use device::{control, DeviceGone, SimDevice};
pub use event::{CloseCause, DropReason, Event, MuxState, ResetReason};
pub use link::{Link, LinkStats};
pub use misbehaviour::{AckCoalescing, AckEvery, Direction, Misbehaviour, ResetAfter};
pub use services::{Echo, Lockdownd, Service, ServiceContext, ServiceStatus, Sink, Source};
pub use simbus::{PlugOptions, PluggedDevice, SimBusServer};

#[cfg(test)]
mod tests {
    #[test]
    fn device_is_send() {
        fn send<T: Send>() {}
        send::<crate::SimDevice>();
        send::<crate::DeviceConfig>();
    }
}
