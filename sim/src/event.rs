//! What a [`crate::SimDevice`] reports through [`crate::SimDevice::poll_event`].

use crate::connection::{ConnectionId, ConnectionStats};
use std::fmt;
use usbmuxd::usbmux::codec::{CodecError, Protocol, VersionBody};

/// The device's mux-level state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxState {
    /// Waiting for the host's VERSION request; everything else is dropped.
    AwaitingVersion,
    /// Answered version 2 (or higher); waiting for SETUP, which switches to long headers.
    /// TCP is dropped until then.
    AwaitingSetup,
    /// Connections possible (version 1 after the VERSION exchange, version 2 after SETUP).
    Active,
    /// [`crate::SimDevice::unplug`] was called: no more I/O.
    Unplugged,
}

/// Something the device did or noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A VERSION request arrived and was answered. A VERSION request after the exchange
    /// restarts the session: every connection is dropped (without RST) first.
    Version {
        /// What the host asked for.
        requested: VersionBody,
        /// What the device answered ([`crate::DeviceConfig::version`]).
        answered: VersionBody,
    },
    /// SETUP arrived: long headers from now on, device counters reset. `payload` is
    /// what the host sent (`[0x07]` from a correct host; other payloads are accepted too).
    Setup {
        /// The SETUP payload.
        payload: Vec<u8>,
    },
    /// A SYN to a listening port was answered with SYN|ACK (seq 0, ack 1).
    Accepted {
        /// The new connection.
        id: ConnectionId,
        /// The host's port.
        host_port: u16,
        /// The device's port.
        device_port: u16,
    },
    /// The host's ACK completed the handshake.
    Established {
        /// The connection.
        id: ConnectionId,
    },
    /// A SYN to a port without service was answered with RST|ACK (0x14).
    Refused {
        /// The host's port.
        host_port: u16,
        /// The device's port nobody listens on.
        device_port: u16,
    },
    /// A connection ended.
    Closed {
        /// The connection.
        id: ConnectionId,
        /// The host's port.
        host_port: u16,
        /// The device's port.
        device_port: u16,
        /// Why.
        cause: CloseCause,
        /// Final counters.
        stats: ConnectionStats,
    },
    /// A TCP packet (without RST) for a connection the device does not have was answered
    /// with an anonymous RST (§4.4: seq 0, ack = the packet's seq, window 0).
    UnknownConnection {
        /// The host's port of the packet.
        host_port: u16,
        /// The device's port of the packet.
        device_port: u16,
        /// The packet's flags.
        flags: u8,
    },
    /// The host's mux `tx_seq` did not follow its previous one (a lost or repeated
    /// packet; SETUP, which restarts the counter, excepted). Only reported: the device
    /// goes on.
    MuxCounterGap {
        /// Previous `tx_seq` + 1.
        expected: u16,
        /// What arrived.
        got: u16,
    },
    /// Input the device could not use and ignored.
    Dropped(DropReason),
    /// [`crate::SimDevice::unplug`] was called. Comes after the `Closed` events of the
    /// connections that existed.
    Unplugged,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The host sent RST (its way of closing).
    HostReset,
    /// The service ended cleanly; everything it sent was acknowledged; the device sent a
    /// bare RST.
    ServiceClosed,
    /// The device reset the connection with an RST whose payload is the reason's text.
    DeviceReset(ResetReason),
    /// A new VERSION request restarted the session (no RST sent).
    SessionRestarted,
    /// The device was unplugged (no RST sent).
    Unplugged,
}

/// Why the device reset a connection. Its [`fmt::Display`] text, plus `\n`, is the RST
/// payload the host receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReason {
    /// The host sent past the window the device advertised ("overrun").
    WindowOverrun {
        /// The window the device had advertised, in bytes.
        window: u32,
        /// Bytes beyond the right edge (last advertised ack + window).
        excess: u32,
    },
    /// The host's sequence number was not the next expected one: bytes were lost
    /// (`got > expected`) or repeated (`got < expected`).
    SequenceGap {
        /// The next sequence number the device expected.
        expected: u32,
        /// The packet's sequence number.
        got: u32,
    },
    /// The host acknowledged bytes the device never sent, or went backwards.
    BadAck {
        /// The packet's acknowledgement number.
        ack: u32,
        /// The highest acknowledgement seen before.
        acked: u32,
        /// The device's next sequence number (one past the last byte sent).
        sent: u32,
    },
    /// Flags other than ACK (and RST) on a connection.
    UnexpectedFlags(u8),
    /// A SYN for a connection that already exists.
    DuplicateSyn,
    /// The service aborted ([`crate::ServiceStatus::Abort`]) with this text.
    ServiceAborted(String),
    /// [`crate::Misbehaviour::reset_after`] fired; its reason text.
    Injected(String),
    /// [`crate::SimDevice::reset_connection`] was called with this text.
    Requested(String),
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetReason::WindowOverrun { window, excess } => write!(
                f,
                "usbmux-sim: receive buffer overrun: the host sent {excess} byte(s) past the {window}-byte window \
                 it was given; the device has lost track of this stream"
            ),
            ResetReason::SequenceGap { expected, got } => {
                let (n, what) = if got > expected {
                    (got.wrapping_sub(*expected), "missing")
                } else {
                    (expected.wrapping_sub(*got), "repeated")
                };
                write!(f, "usbmux-sim: sequence error: expected seq {expected}, got {got} ({n} byte(s) {what})")
            }
            ResetReason::BadAck { ack, acked, sent } => {
                write!(f, "usbmux-sim: bad acknowledgement {ack}: previously acknowledged {acked}, sent up to {sent}")
            }
            ResetReason::UnexpectedFlags(flags) => {
                write!(f, "usbmux-sim: unexpected TCP flags {flags:#04x} on an open connection")
            }
            ResetReason::DuplicateSyn => write!(f, "usbmux-sim: SYN for a connection that is already open"),
            ResetReason::ServiceAborted(text) | ResetReason::Injected(text) | ResetReason::Requested(text) => {
                f.write_str(text)
            }
        }
    }
}

/// Why input was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Not a valid packet (bad length, magic, protocol, TCP offset, truncated …).
    Malformed(CodecError),
    /// USB framing: a transfer ran into an unterminated one (no ZLP after a transfer whose
    /// length is a multiple of wMaxPacketSize). The first packet was processed; these
    /// bytes after it were lost.
    MissingZlp {
        /// Bytes lost.
        lost: usize,
    },
    /// A packet the device does not accept in this state: anything but VERSION before
    /// the VERSION exchange, TCP before SETUP, SETUP to a version-1 device, CONTROL
    /// (device → host only).
    OutOfPlace {
        /// The packet's protocol.
        protocol: Protocol,
        /// The device's state when it arrived.
        state: MuxState,
    },
    /// An RST for a connection the device does not have (silently dropped, as in §4.4).
    UnknownReset {
        /// The host's port.
        host_port: u16,
        /// The device's port.
        device_port: u16,
    },
    /// [`crate::Misbehaviour::mute`] is on; this many bytes were discarded unread.
    Muted {
        /// Bytes discarded.
        bytes: usize,
    },
}
