//! What answers on a device port: a [`Service`] is a small state machine the device
//! feeds with the bytes the host sent and asks for bytes to send back.
//!
//! The device creates one service instance per connection, from the factory registered
//! for the port (see [`crate::DeviceConfig::listen`]). Built-in services:
//!
//! | service | does | ends |
//! |---|---|---|
//! | [`Echo`] | sends every byte back | never (the host closes) |
//! | [`Sink`] | discards and counts | never (the host closes) |
//! | [`Source`] | sends `n` bytes of [`source_pattern`] | cleanly after the last byte is acknowledged |
//! | [`Lockdownd`] | a minimal lockdownd (`QueryType`, `GetValue`, `Goodbye`) | after `Goodbye`, or aborts on garbage |
//!
//! # How a service ends
//!
//! The protocol has no FIN: a connection only ever ends with an RST. A service says how
//! through [`Service::status`]:
//! * [`ServiceStatus::Close`] — a *clean* end: the device still sends all remaining output,
//!   waits until the host has acknowledged every byte of it (i.e. the host's consumer has
//!   read it all), then sends an RST **without** payload;
//! * [`ServiceStatus::Abort`] — an error: the device sends an RST at once whose payload is
//!   the reason text; output not yet sent is discarded.

use std::any::Any;

pub mod echo;
pub mod lockdownd;
pub mod sink;
pub mod source;

pub use echo::Echo;
pub use lockdownd::Lockdownd;
pub use sink::Sink;
pub use source::{extend_with_pattern, source_bytes, source_pattern, Source};

/// What a service wants done with its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceStatus {
    /// Keep the connection open.
    Open,
    /// End cleanly once all output has been sent and acknowledged (bare RST).
    Close,
    /// End now with an RST carrying this reason text.
    Abort(String),
}

/// Where a new service instance runs; passed to the port's factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceContext<'a> {
    /// The device's UDID ([`crate::DeviceConfig::udid`]).
    pub udid: &'a str,
    /// The host's end of the connection.
    pub host_port: u16,
    /// The port the host connected to.
    pub device_port: u16,
}

/// Downcasting support for services, so that [`crate::SimDevice::service`] can hand out
/// the concrete type. Implemented for every `'static` type; nothing to do for implementors.
pub trait AsAny: Any {
    /// `self` as [`Any`].
    fn as_any(&self) -> &dyn Any;
    /// `self` as mutable [`Any`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A device-side service: bytes in, bytes out, no I/O.
///
/// The device calls, in a loop while anything changes: [`Service::capacity`] and
/// [`Service::on_data`] to deliver received bytes (in order, never more than the capacity),
/// then [`Service::has_output`] / [`Service::poll_output`] while the host's window has room,
/// then [`Service::status`]. The device acknowledges host bytes only once they have been
/// delivered, so a service that reports a small capacity makes the device stop
/// acknowledging, which in turn stops the host once the device's window is full.
pub trait Service: AsAny + Send {
    /// Bytes the host sent, in order.
    fn on_data(&mut self, data: &[u8]);

    /// Whether [`Service::poll_output`] has anything to give.
    fn has_output(&self) -> bool;

    /// Appends at most `max` bytes of output to `buf`.
    fn poll_output(&mut self, buf: &mut Vec<u8>, max: usize);

    /// How many more bytes [`Service::on_data`] accepts right now. Default: unlimited.
    fn capacity(&self) -> usize {
        usize::MAX
    }

    /// Whether to keep, close or abort the connection. Default: keep it open.
    fn status(&self) -> ServiceStatus {
        ServiceStatus::Open
    }
}
