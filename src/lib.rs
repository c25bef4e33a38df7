//! A Rust implementation of libusbmuxd 2.x: the library through which libimobiledevice,
//! ifuse, iproxy and friends reach iOS devices via the usbmuxd daemon.
//!
//! Layers (see `docs/ARCHITECTURE.md`):
//! - [`proto`]: pure codecs for the daemon protocol, no I/O;
//! - [`client`]: the daemon client — address resolution, sockets, one request per connection;
//! - the safe Rust API re-exported here ([`list_devices`], [`connect`], [`events`], pair records);
//! - `ffi`: the C ABI of libusbmuxd 2.1.1, a thin layer over the Rust API.

pub mod client;
pub mod debug;
mod error;
pub mod events;
pub mod proto;
pub mod usb;
pub mod usbmux;

mod ffi;

pub use client::api::*;
pub use error::{Error, Result};
pub use proto::{ConnectionType, DeviceRecord};

/// The version this library implements (`libusbmuxd_version()`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
