//! A scriptable fake usbmuxd daemon for testing usbmuxd clients (libusbmuxd and its
//! replacement, `idevice_id`, `iproxy`, …) without an iPhone.
//!
//! ```no_run
//! use usbmuxd_testd::{DaemonConfig, TestDaemon, TestDevice, Misbehaviour};
//! use std::time::Duration;
//!
//! let daemon = TestDaemon::start(
//!     DaemonConfig::new().device(TestDevice::usb(3, "00008030-001A2B3C4D5E6F70")),
//! ).unwrap();
//! std::env::set_var("USBMUXD_SOCKET_ADDRESS", daemon.usbmuxd_socket_address());
//! // ... run the client; then assert on what it sent:
//! let connect = daemon
//!     .wait_for_request(Duration::from_secs(5), |r| r.message_type() == "Connect")
//!     .unwrap();
//! assert_eq!(connect.integer("PortNumber"), Some(32498)); // 62078, byte-swapped
//! daemon.misbehave(Misbehaviour::NeverReply); // break the next reply
//! daemon.detach(3).unwrap(); // listeners get Detached
//! ```
//!
//! Pieces:
//! * [`TestDaemon`] — listens on a UNIX or TCP socket, one thread per client, answers like
//!   the open-source daemon ([`ProtocolMode::Plist`]) or like an old binary-only one;
//!   runtime control of devices and events, stop/restart, a request log.
//! * [`TestDevice`] and [`Service`] — devices and what answers on their ports after
//!   `Connect` (echo, sink, source, close, a minimal [`lockdownd`] — the one of the
//!   `usbmux-sim` crate, served over the daemon's sockets).
//! * [`Misbehaviour`] — broken replies for error-path tests.
//! * [`ServiceServer`] — a service on a plain TCP port, to play a network device.
//! * [`control`] and [`cli`] — the line protocol and command line of the
//!   `usbmuxd-testd` binary.

pub mod cli;
mod config;
mod connection;
pub mod control;
mod daemon;
mod log;
pub mod misbehaviour;
mod net;
mod server;
mod services;
mod state;

pub use config::{
    darwin_sockaddr_in, darwin_sockaddr_in6, default_services, DaemonConfig, Listen, ProtocolMode, Service, TestDevice,
    DEFAULT_PRODUCT_ID, DEFAULT_SOURCE_LEN, ECHO_PORT, LOCKDOWND_PORT, SINK_PORT, SOURCE_PORT,
};
pub use daemon::{ControlError, TestDaemon};
pub use log::LoggedRequest;
pub use misbehaviour::{Misbehaviour, RequestKind, Times};
pub use net::BoundAddress;
pub use services::{ServiceServer, ServiceStats};
/// The minimal lockdownd the devices serve (from the `usbmux-sim` crate).
pub use usbmux_sim::services::lockdownd;
pub use usbmux_sim::services::{source_bytes, source_pattern};
/// Which pair-record ids are accepted (UDID characters); the daemon keeps its records
/// with the library's store, `usbmuxd::usb::pairing::PairStore`.
pub use usbmuxd::valid_record_id;
