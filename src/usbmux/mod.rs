//! The USB side of the usbmux protocol (`usb-mux-protocol.md`): the wire codec and a
//! sans-IO protocol engine for the host side. Drivers (the USB backend, tests, the
//! benchmarks) move bytes and time in and out; nothing here does I/O or reads a clock.

pub mod codec;
pub mod engine;

pub use codec::{
    needs_zlp, CodecError, HeaderFormat, MuxHeader, Packet, Protocol, Reassembler, TcpHeader, VersionBody,
};
pub use engine::{ConnectFailure, ConnectionId, Engine, EngineConfig, EngineError, EngineEvent};
