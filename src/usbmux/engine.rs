//! The host side of the usbmux protocol as a sans-IO state machine.
//!
//! The driver feeds what the device sent ([`Engine::handle_input`]), takes packets to
//! send ([`Engine::poll_transmit`], one bulk OUT transfer each; the driver adds the
//! zero-length packet, see [`crate::usbmux::needs_zlp`]), takes events
//! ([`Engine::poll_event`]), and wakes the engine at [`Engine::poll_timeout`]. The
//! current time is always passed in; the engine has no threads, sockets or clock.
//!
//! Flow control, both ways:
//! - towards the device, data waits in a bounded per-connection queue and is sent only
//!   within the device's advertised window (`window − bytes in flight`), in packets of at
//!   most [`MAX_TCP_PAYLOAD`] bytes;
//! - from the device, the acknowledgement number only advances for bytes the reader has
//!   taken with [`Engine::recv`], and the inbound buffer holds a whole advertised window,
//!   so a slow reader pauses the device and nothing is ever dropped. ACKs go out as soon
//!   as a quarter of the window has been consumed or the reader has drained everything,
//!   and ride on outgoing data otherwise: there is no fixed delay on the hot path.

use super::codec::{
    flags, CodecError, HeaderFormat, MuxHeader, Packet, Protocol, Reassembler, TcpHeader, VersionBody, LONG_HEADER_LEN,
    MAX_TCP_PAYLOAD, SHORT_HEADER_LEN, TCP_HEADER_LEN, USB_READ_SIZE,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Tunables of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Window advertised to the device for each connection, in bytes (rounded down to a
    /// multiple of 256, at most 0xFFFF × 256). Also the size of each inbound buffer.
    pub receive_window: u32,
    /// Bytes a connection queues for the device before `send` accepts no more.
    pub send_buffer: usize,
    /// Largest TCP payload per packet (at most [`MAX_TCP_PAYLOAD`]).
    pub max_payload: usize,
    /// How long a connection may wait for the device's SYN/ACK.
    pub connect_timeout: Duration,
    /// `Some(read size)`: input comes in USB bulk transfers of that size (short-packet
    /// termination); `None`: input is a byte stream.
    pub usb_read_size: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            receive_window: 256 * 1024,
            send_buffer: 256 * 1024,
            max_payload: MAX_TCP_PAYLOAD,
            connect_timeout: Duration::from_secs(5),
            usb_read_size: Some(USB_READ_SIZE),
        }
    }
}

/// A connection, named by its host-side port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u16);

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The device answered with RST (nothing listens there), with its reason text if any.
    Refused(Option<String>),
    /// The device answered with something other than SYN/ACK or RST.
    Unexpected(u8),
    /// No answer within the connect timeout.
    TimedOut,
    /// The device went away.
    DeviceGone,
}

/// Something the driver (or the user above it) should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The version exchange is done; connections may be opened.
    Ready {
        version: u32,
    },
    /// The device answered the version request with a version we do not speak.
    VersionRejected {
        major: u32,
        minor: u32,
    },
    Connected(ConnectionId),
    ConnectFailed(ConnectionId, ConnectFailure),
    /// New data can be read with [`Engine::recv`].
    Readable(ConnectionId),
    /// The send queue has room again after [`Engine::send`] accepted less than offered.
    Writable(ConnectionId),
    /// The connection ended: reset by the device (with its reason text, if it sent one),
    /// a protocol violation, or the device going away. Data already received can still
    /// be read; after that `recv` reports the reset.
    Reset(ConnectionId, String),
    /// A CONTROL message from the device (3 error, 5 warning, 7 info).
    DeviceMessage {
        kind: u8,
        text: String,
    },
    /// Input that could not be parsed was dropped.
    InputDropped(CodecError),
}

/// Errors of the user-facing calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The version exchange has not finished (or failed).
    NotReady,
    /// No such connection (never opened, or closed).
    UnknownConnection,
    /// Every host port is in use.
    NoFreePort,
    /// The connection is not established yet.
    NotConnected,
    /// The connection was reset; the text says why.
    Reset(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NotReady => write!(f, "device not ready"),
            EngineError::UnknownConnection => write!(f, "unknown connection"),
            EngineError::NoFreePort => write!(f, "no free port"),
            EngineError::NotConnected => write!(f, "not connected yet"),
            EngineError::Reset(why) => write!(f, "connection reset: {why}"),
        }
    }
}

impl std::error::Error for EngineError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceState {
    /// VERSION sent (or about to be), reply awaited.
    Init,
    Active {
        version: u32,
    },
    /// Unusable: bad version, or gone.
    Failed,
}

#[derive(Debug)]
enum ConnState {
    Connecting {
        deadline: Instant,
    },
    Connected,
    /// Reset; holds the reason. Buffered data stays readable.
    Reset(String),
}

#[derive(Debug)]
struct Connection {
    device_port: u16,
    state: ConnState,
    /// Next sequence number we send.
    tx_seq: u32,
    /// Device's last acknowledgement and window.
    peer_ack: u32,
    peer_window: u32,
    /// Next sequence number expected from the device.
    rx_next: u32,
    /// Sequence number of the first byte in `inbound` (what our ACK says once consumed).
    consumed_seq: u32,
    /// The acknowledgement number last sent.
    ack_sent: u32,
    inbound: VecDeque<u8>,
    outbound: VecDeque<u8>,
    /// `send` refused bytes: tell the user when room appears.
    blocked_writer: bool,
    /// `Readable` was reported and `recv` has not drained the buffer since.
    readable_reported: bool,
}

impl Connection {
    fn in_flight(&self) -> u32 {
        self.tx_seq.wrapping_sub(self.peer_ack)
    }

    fn sendable(&self, max_payload: usize) -> usize {
        let room = self.peer_window.saturating_sub(self.in_flight()) as usize;
        room.min(self.outbound.len()).min(max_payload)
    }

    fn ack_due(&self, window: u32) -> bool {
        let unacked = self.consumed_seq.wrapping_sub(self.ack_sent);
        unacked > 0 && (unacked >= window / 4 || self.inbound.is_empty())
    }
}

/// The host side of one device's usbmux session.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    state: DeviceState,
    reassembler: Reassembler,
    /// Mux v2 packet counters (ours, and the device's last rx field, echoed back).
    mux_tx: u16,
    mux_rx: u16,
    connections: BTreeMap<u16, Connection>,
    next_port: u16,
    /// Control packets (VERSION, SETUP, SYN, RST, anonymous RST) waiting to go out, as
    /// protocol and body; encoded when transmitted so they carry current counters.
    control: VecDeque<Packet>,
    /// Round-robin position among connections for data.
    cursor: u16,
    events: VecDeque<EngineEvent>,
}

impl Engine {
    /// A new engine; [`start`](Self::start) begins the version exchange.
    pub fn new(mut config: EngineConfig) -> Engine {
        config.receive_window = (config.receive_window.clamp(256, 0xFFFF << 8) >> 8) << 8;
        config.max_payload = config.max_payload.clamp(1, MAX_TCP_PAYLOAD);
        // A zero send buffer would accept nothing, ever, and never report `Writable`.
        config.send_buffer = config.send_buffer.max(1);
        let reassembler = match config.usb_read_size {
            Some(size) => Reassembler::usb(size),
            None => Reassembler::stream(),
        };
        Engine {
            config,
            state: DeviceState::Init,
            reassembler,
            mux_tx: 0,
            mux_rx: 0xFFFF,
            connections: BTreeMap::new(),
            next_port: 1,
            control: VecDeque::new(),
            cursor: 0,
            events: VecDeque::new(),
        }
    }

    /// Queues the VERSION request (2.0).
    pub fn start(&mut self) {
        self.control.push_back(Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
    }

    /// The negotiated mux version, once the device has answered.
    pub fn version(&self) -> Option<u32> {
        match self.state {
            DeviceState::Active { version } => Some(version),
            _ => None,
        }
    }

    fn header_format(&self) -> HeaderFormat {
        match self.state {
            DeviceState::Active { version } if version >= 2 => HeaderFormat::Long,
            _ => HeaderFormat::Short,
        }
    }

    // ---- input -------------------------------------------------------------------

    /// Feeds bytes received from the device (one bulk IN transfer, or a stream chunk).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let mut reassembler = std::mem::replace(&mut self.reassembler, Reassembler::stream());
        let result = reassembler.feed(bytes, |packet| self.handle_packet(packet, now));
        self.reassembler = reassembler;
        if let Err(e) = result {
            self.events.push_back(EngineEvent::InputDropped(e));
        }
    }

    fn handle_packet(&mut self, bytes: &[u8], now: Instant) {
        let format = self.header_format();
        let header = match MuxHeader::decode(bytes, format) {
            Ok(h) => h,
            Err(e) => return self.events.push_back(EngineEvent::InputDropped(e)),
        };
        if let Some((_, rx)) = header.counters {
            // As the daemon does: echo the rx field of the device's last packet.
            self.mux_rx = rx;
        }
        if header.protocol == Protocol::Tcp {
            // Hot path: parse in place, no copy of the payload.
            let body = &bytes[format.header_len()..];
            match TcpHeader::decode(body) {
                Ok(tcp) => self.handle_tcp(tcp, &body[TCP_HEADER_LEN..], now),
                Err(e) => self.events.push_back(EngineEvent::InputDropped(e)),
            }
            return;
        }
        match Packet::decode(bytes, format) {
            Ok((_, Packet::Version(v))) => self.handle_version(v),
            Ok((_, Packet::Control { kind, text })) => self.events.push_back(EngineEvent::DeviceMessage {
                kind,
                text: String::from_utf8_lossy(&text).trim_end_matches('\n').to_string(),
            }),
            Ok(_) => {} // SETUP from the device: meaningless, ignored as the daemon does.
            Err(e) => self.events.push_back(EngineEvent::InputDropped(e)),
        }
    }

    fn handle_version(&mut self, v: VersionBody) {
        if self.state != DeviceState::Init {
            return;
        }
        match v.major {
            1 => {
                self.state = DeviceState::Active { version: 1 };
                self.events.push_back(EngineEvent::Ready { version: 1 });
            }
            2 => {
                // SETUP resets the counters: it carries tx 0 / rx 0xFFFF.
                self.mux_tx = 0;
                self.mux_rx = 0xFFFF;
                self.state = DeviceState::Active { version: 2 };
                self.control.push_front(Packet::Setup(vec![0x07]));
                self.events.push_back(EngineEvent::Ready { version: 2 });
            }
            major => {
                self.state = DeviceState::Failed;
                self.events.push_back(EngineEvent::VersionRejected { major, minor: v.minor });
            }
        }
    }

    fn handle_tcp(&mut self, tcp: TcpHeader, payload: &[u8], _now: Instant) {
        if !matches!(self.state, DeviceState::Active { .. }) {
            return; // TCP before the version exchange is discarded.
        }
        let id = ConnectionId(tcp.dest_port);
        let window = self.config.receive_window;
        let Some(conn) = self.connections.get_mut(&tcp.dest_port).filter(|c| c.device_port == tcp.source_port) else {
            if tcp.flags & flags::RST == 0 {
                self.queue_tcp_control(tcp.dest_port, tcp.source_port, 0, tcp.seq, flags::RST, 0);
            }
            return;
        };
        conn.peer_ack = tcp.ack;
        conn.peer_window = tcp.window;
        let reason = || String::from_utf8_lossy(payload).trim_end_matches('\n').to_string();
        match conn.state {
            ConnState::Connecting { .. } => {
                if tcp.flags == flags::SYN | flags::ACK {
                    conn.state = ConnState::Connected;
                    conn.tx_seq = 1;
                    conn.rx_next = tcp.seq.wrapping_add(1);
                    conn.consumed_seq = conn.rx_next;
                    conn.ack_sent = conn.rx_next;
                    let (seq, ack) = (conn.tx_seq, conn.rx_next);
                    self.queue_tcp_control(id.0, tcp.source_port, seq, ack, flags::ACK, window);
                    self.events.push_back(EngineEvent::Connected(id));
                } else {
                    let failure = if tcp.flags & flags::RST != 0 {
                        ConnectFailure::Refused(Some(reason()).filter(|r| !r.is_empty()))
                    } else {
                        self.queue_tcp_control(id.0, tcp.source_port, 0, 0, flags::RST, window);
                        ConnectFailure::Unexpected(tcp.flags)
                    };
                    self.connections.remove(&id.0);
                    self.events.push_back(EngineEvent::ConnectFailed(id, failure));
                }
            }
            ConnState::Connected => {
                if tcp.flags != flags::ACK {
                    let why = if tcp.flags & flags::RST != 0 {
                        let r = reason();
                        if r.is_empty() {
                            "reset by device".to_string()
                        } else {
                            r
                        }
                    } else {
                        self.send_reset(id);
                        format!("unexpected TCP flags {:#04x} from device", tcp.flags)
                    };
                    return self.mark_reset(id, why);
                }
                if tcp.seq != conn.rx_next && !payload.is_empty() {
                    let why = format!("device sent sequence {} where {} was expected", tcp.seq, conn.rx_next);
                    self.send_reset(id);
                    return self.mark_reset(id, why);
                }
                if conn.inbound.len() + payload.len() > window as usize {
                    self.send_reset(id);
                    return self.mark_reset(id, "device sent beyond the advertised window".to_string());
                }
                if !payload.is_empty() {
                    conn.inbound.extend(payload);
                    conn.rx_next = conn.rx_next.wrapping_add(payload.len() as u32);
                    if !conn.readable_reported {
                        conn.readable_reported = true;
                        self.events.push_back(EngineEvent::Readable(id));
                    }
                }
            }
            ConnState::Reset(_) => {}
        }
    }

    /// Queues an RST for a connection we are abandoning (the device still knows it).
    fn send_reset(&mut self, id: ConnectionId) {
        if let Some(c) = self.connections.get(&id.0) {
            let (dport, seq, ack) = (c.device_port, c.tx_seq, c.consumed_seq);
            let window = self.config.receive_window;
            self.queue_tcp_control(id.0, dport, seq, ack, flags::RST, window);
        }
    }

    fn mark_reset(&mut self, id: ConnectionId, why: String) {
        if let Some(c) = self.connections.get_mut(&id.0) {
            c.state = ConnState::Reset(why.clone());
            c.outbound.clear();
            self.events.push_back(EngineEvent::Reset(id, why));
        }
    }

    fn queue_tcp_control(&mut self, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u32) {
        let header = TcpHeader { source_port: sport, dest_port: dport, seq, ack, flags, window };
        self.control.push_back(Packet::Tcp { header, payload: Vec::new() });
    }

    // ---- output ------------------------------------------------------------------

    fn counters(&mut self) -> Option<(u16, u16)> {
        if self.header_format() != HeaderFormat::Long {
            return None;
        }
        let c = (self.mux_tx, self.mux_rx);
        self.mux_tx = self.mux_tx.wrapping_add(1);
        Some(c)
    }

    /// Writes the next packet for the device into `out` (cleared first) and returns
    /// `true`, or `false` if there is nothing to send. Each packet is one bulk OUT
    /// transfer.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        if let Some(packet) = self.control.pop_front() {
            // VERSION always goes with the short header; SETUP always with the long one.
            let counters = match packet {
                Packet::Version(_) => None,
                Packet::Setup(_) => {
                    self.mux_tx = 1;
                    Some((0, 0xFFFF))
                }
                _ => self.counters(),
            };
            if let Packet::Tcp { header, .. } = &packet {
                // Only a packet of the connection itself carries its acknowledgement (an
                // anonymous RST from the same host port to another device port does not).
                if let Some(c) =
                    self.connections.get_mut(&header.source_port).filter(|c| c.device_port == header.dest_port)
                {
                    c.ack_sent = header.ack;
                }
            }
            out.extend_from_slice(&packet.encode(counters));
            return true;
        }
        if !matches!(self.state, DeviceState::Active { .. }) {
            return false;
        }
        // Data (with a piggy-backed ACK) or a pure ACK, connections taken in turn.
        let ports: Vec<u16> = self
            .connections
            .range(self.cursor..)
            .chain(self.connections.range(..self.cursor))
            .map(|(p, _)| *p)
            .collect();
        for port in ports {
            let Some(c) = self.connections.get(&port) else { continue };
            if !matches!(c.state, ConnState::Connected) {
                continue;
            }
            let n = c.sendable(self.config.max_payload);
            if n == 0 && !c.ack_due(self.config.receive_window) {
                continue;
            }
            self.cursor = port.wrapping_add(1);
            let counters = self.counters();
            let window = self.config.receive_window;
            let c = self.connections.get_mut(&port).expect("present");
            let header = TcpHeader {
                source_port: port,
                dest_port: c.device_port,
                seq: c.tx_seq,
                ack: c.consumed_seq,
                flags: flags::ACK,
                window,
            };
            let header_len = if counters.is_some() { LONG_HEADER_LEN } else { SHORT_HEADER_LEN };
            let total = header_len + TCP_HEADER_LEN + n;
            MuxHeader { protocol: Protocol::Tcp, length: total as u32, counters }.encode_into(out);
            header.encode_into(out);
            let (a, b) = c.outbound.as_slices();
            let first = a.len().min(n);
            out.extend_from_slice(&a[..first]);
            out.extend_from_slice(&b[..n - first]);
            c.outbound.drain(..n);
            c.tx_seq = c.tx_seq.wrapping_add(n as u32);
            c.ack_sent = c.consumed_seq;
            if c.blocked_writer && c.outbound.len() < self.config.send_buffer {
                c.blocked_writer = false;
                self.events.push_back(EngineEvent::Writable(ConnectionId(port)));
            }
            return true;
        }
        false
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(|c| match c.state {
                ConnState::Connecting { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Expires connection attempts whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u16> = self
            .connections
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Connecting { deadline } if deadline <= now))
            .map(|(p, _)| *p)
            .collect();
        for port in expired {
            // Tell the device to forget it, in case its SYN/ACK is merely late.
            self.send_reset(ConnectionId(port));
            self.connections.remove(&port);
            self.events.push_back(EngineEvent::ConnectFailed(ConnectionId(port), ConnectFailure::TimedOut));
        }
    }

    // ---- the user's side ----------------------------------------------------------

    /// Opens a connection to `port` on the device. [`EngineEvent::Connected`] or
    /// [`EngineEvent::ConnectFailed`] follows.
    pub fn connect(&mut self, port: u16, now: Instant) -> Result<ConnectionId, EngineError> {
        if !matches!(self.state, DeviceState::Active { .. }) {
            return Err(EngineError::NotReady);
        }
        let sport = self.allocate_port()?;
        self.connections.insert(
            sport,
            Connection {
                device_port: port,
                state: ConnState::Connecting { deadline: now + self.config.connect_timeout },
                tx_seq: 0,
                peer_ack: 0,
                peer_window: 0,
                rx_next: 0,
                consumed_seq: 0,
                ack_sent: 0,
                inbound: VecDeque::new(),
                outbound: VecDeque::new(),
                blocked_writer: false,
                readable_reported: false,
            },
        );
        self.queue_tcp_control(sport, port, 0, 0, flags::SYN, self.config.receive_window);
        Ok(ConnectionId(sport))
    }

    /// Host ports count up from 1, skipping ports in use; 0 is never used.
    fn allocate_port(&mut self) -> Result<u16, EngineError> {
        for _ in 0..=u16::MAX {
            let p = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(1);
            if p != 0 && !self.connections.contains_key(&p) {
                return Ok(p);
            }
        }
        Err(EngineError::NoFreePort)
    }

    /// Queues data for the device. Returns how many bytes were taken (less than offered
    /// when the send queue is full: [`EngineEvent::Writable`] follows when it has room).
    pub fn send(&mut self, id: ConnectionId, data: &[u8]) -> Result<usize, EngineError> {
        let limit = self.config.send_buffer;
        let c = self.connections.get_mut(&id.0).ok_or(EngineError::UnknownConnection)?;
        match &c.state {
            ConnState::Connected => {}
            ConnState::Connecting { .. } => return Err(EngineError::NotConnected),
            ConnState::Reset(why) => return Err(EngineError::Reset(why.clone())),
        }
        let n = data.len().min(limit.saturating_sub(c.outbound.len()));
        c.outbound.extend(&data[..n]);
        if n < data.len() {
            c.blocked_writer = true;
        }
        Ok(n)
    }

    /// Reads received data. `Ok(0)` means nothing is buffered right now; once the
    /// connection was reset and its data drained, the reset is reported as an error.
    /// Consuming data is what lets the device send more.
    pub fn recv(&mut self, id: ConnectionId, buf: &mut [u8]) -> Result<usize, EngineError> {
        let c = self.connections.get_mut(&id.0).ok_or(EngineError::UnknownConnection)?;
        let n = buf.len().min(c.inbound.len());
        if n == 0 {
            return match &c.state {
                ConnState::Reset(why) if !buf.is_empty() => Err(EngineError::Reset(why.clone())),
                ConnState::Connecting { .. } => Err(EngineError::NotConnected),
                _ => Ok(0),
            };
        }
        let (a, b) = c.inbound.as_slices();
        let first = a.len().min(n);
        buf[..first].copy_from_slice(&a[..first]);
        buf[first..n].copy_from_slice(&b[..n - first]);
        c.inbound.drain(..n);
        c.consumed_seq = c.consumed_seq.wrapping_add(n as u32);
        if c.inbound.is_empty() {
            c.readable_reported = false;
        }
        Ok(n)
    }

    /// Bytes waiting to be read on a connection.
    pub fn readable_len(&self, id: ConnectionId) -> usize {
        self.connections.get(&id.0).map_or(0, |c| c.inbound.len())
    }

    /// How many more bytes [`send`](Self::send) would accept now (0 unless connected).
    pub fn send_capacity(&self, id: ConnectionId) -> usize {
        match self.connections.get(&id.0) {
            Some(c) if matches!(c.state, ConnState::Connected) => {
                self.config.send_buffer.saturating_sub(c.outbound.len())
            }
            _ => 0,
        }
    }

    /// Bytes queued for the device and not yet sent.
    pub fn queued_len(&self, id: ConnectionId) -> usize {
        self.connections.get(&id.0).map_or(0, |c| c.outbound.len())
    }

    /// Ends a connection (an RST to the device: the protocol has no FIN) and forgets it.
    /// Queued unsent data is discarded.
    pub fn close(&mut self, id: ConnectionId) {
        let Some(c) = self.connections.get(&id.0) else { return };
        if !matches!(c.state, ConnState::Reset(_)) {
            self.send_reset(id);
        }
        self.connections.remove(&id.0);
    }

    /// The device is gone: every connection ends (no RST can be sent any more).
    pub fn device_gone(&mut self) {
        self.state = DeviceState::Failed;
        self.control.clear();
        let ports: Vec<u16> = self.connections.keys().copied().collect();
        for port in ports {
            let id = ConnectionId(port);
            if matches!(self.connections[&port].state, ConnState::Connecting { .. }) {
                self.connections.remove(&port);
                self.events.push_back(EngineEvent::ConnectFailed(id, ConnectFailure::DeviceGone));
            } else if !matches!(self.connections[&port].state, ConnState::Reset(_)) {
                self.mark_reset(id, "device removed".to_string());
            }
        }
    }

    /// Open connections (any state), for diagnostics.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usbmux::codec::MAX_OUT_PACKET;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    fn stream_engine() -> Engine {
        Engine::new(EngineConfig { usb_read_size: None, ..EngineConfig::default() })
    }

    fn transmit(e: &mut Engine) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        e.poll_transmit(&mut out).then_some(out)
    }

    fn device_tcp(counters: (u16, u16), sport: u16, dport: u16, seq: u32, ack: u32, fl: u8, payload: &[u8]) -> Vec<u8> {
        Packet::Tcp {
            header: TcpHeader { source_port: sport, dest_port: dport, seq, ack, flags: fl, window: 131072 },
            payload: payload.to_vec(),
        }
        .encode(Some(counters))
    }

    /// Runs the handshake of §8 and opens connection 1 to 62078.
    fn connected(now: Instant) -> (Engine, ConnectionId) {
        let mut e = stream_engine();
        e.start();
        assert_eq!(transmit(&mut e).unwrap(), hex("00 00 00 00 00 00 00 14 00 00 00 02 00 00 00 00 00 00 00 00"));
        e.handle_input(&hex("00 00 00 00 00 00 00 14 00 00 00 02 00 00 00 00 00 00 00 00"), now);
        assert_eq!(e.poll_event(), Some(EngineEvent::Ready { version: 2 }));
        assert_eq!(transmit(&mut e).unwrap(), hex("00 00 00 02 00 00 00 11 fe ed fa ce 00 00 ff ff 07"));
        let id = e.connect(62078, now).unwrap();
        assert_eq!(id, ConnectionId(1));
        assert_eq!(
            transmit(&mut e).unwrap(),
            hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 01 ff ff 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 04 00 00 00 00 00")
        );
        e.handle_input(&device_tcp((0, 1), 62078, 1, 0, 1, flags::SYN | flags::ACK, &[]), now);
        assert_eq!(e.poll_event(), Some(EngineEvent::Connected(id)));
        (e, id)
    }

    #[test]
    fn handshake_and_data_match_the_spec_examples() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        // The ACK completing the handshake echoes the device's rx field (1).
        let ack = transmit(&mut e).unwrap();
        assert_eq!(&ack[..16], &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 02 00 01")[..]);
        assert_eq!(&ack[16..], &hex("00 01 f2 7e 00 00 00 01 00 00 00 01 50 10 04 00 00 00 00 00")[..]);
        // Data out: seq 1, ack 1, window = our 256 KiB.
        assert_eq!(e.send(id, &[0, 0, 1, 0x1c]).unwrap(), 4);
        let data = transmit(&mut e).unwrap();
        assert_eq!(data.len(), 40);
        assert_eq!(&data[16..28], &hex("00 01 f2 7e 00 00 00 01 00 00 00 01")[..]);
        assert_eq!(&data[36..], &[0, 0, 1, 0x1c]);
        // Data in: not acknowledged until read; read everything → ACK 5.
        e.handle_input(&device_tcp((1, 3), 62078, 1, 1, 5, flags::ACK, &[0, 0, 1, 0x29]), now);
        assert_eq!(e.poll_event(), Some(EngineEvent::Readable(id)));
        assert!(transmit(&mut e).is_none(), "no ACK before the reader took the bytes");
        let mut buf = [0u8; 16];
        assert_eq!(e.recv(id, &mut buf).unwrap(), 4);
        let ack = transmit(&mut e).unwrap();
        assert_eq!(&ack[12..16], &hex("00 04 00 03")[..]);
        assert_eq!(&ack[20..28], &hex("00 00 00 05 00 00 00 05")[..]);
        // Close: RST with current seq/ack.
        e.close(id);
        let rst = transmit(&mut e).unwrap();
        assert_eq!(&rst[16..], &hex("00 01 f2 7e 00 00 00 05 00 00 00 05 50 04 04 00 00 00 00 00")[..]);
        assert_eq!(e.connection_count(), 0);
    }

    #[test]
    fn window_is_respected_and_data_is_segmented() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        transmit(&mut e).unwrap(); // handshake ACK
        let data = vec![7u8; 200_000];
        assert_eq!(e.send(id, &data).unwrap(), 200_000);
        let mut sent = 0;
        while let Some(p) = transmit(&mut e) {
            assert!(p.len() <= MAX_OUT_PACKET);
            sent += p.len() - 36;
        }
        assert_eq!(sent, 131072, "exactly the device's window, no more");
        // The device acknowledges everything: the rest flows.
        e.handle_input(&device_tcp((2, 3), 62078, 1, 1, 1 + 131072, flags::ACK, &[]), now);
        while let Some(p) = transmit(&mut e) {
            sent += p.len() - 36;
        }
        assert_eq!(sent, 200_000);
    }

    #[test]
    fn slow_reader_pauses_device_and_overrun_resets() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        transmit(&mut e).unwrap();
        let chunk = vec![1u8; 32768];
        let mut seq = 1u32;
        for _ in 0..8 {
            e.handle_input(&device_tcp((1, 1), 62078, 1, seq, 1, flags::ACK, &chunk), now);
            seq += 32768;
        }
        assert!(transmit(&mut e).is_none(), "nothing read, nothing acknowledged");
        assert_eq!(e.readable_len(id), 256 * 1024);
        // One byte beyond the window: the device broke the rules.
        e.handle_input(&device_tcp((1, 1), 62078, 1, seq, 1, flags::ACK, &[9]), now);
        let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
        assert!(events.contains(&EngineEvent::Reset(id, "device sent beyond the advertised window".into())));
        // What was received is still readable, then the reset is reported.
        let mut buf = vec![0u8; 300_000];
        assert_eq!(e.recv(id, &mut buf).unwrap(), 256 * 1024);
        assert!(matches!(e.recv(id, &mut buf), Err(EngineError::Reset(_))));
    }

    #[test]
    fn refusal_reset_reason_and_timeouts() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        while transmit(&mut e).is_some() {}
        // RST with a text payload is surfaced.
        e.handle_input(&device_tcp((1, 1), 62078, 1, 1, 1, flags::RST | flags::ACK, b"too much data\n"), now);
        assert_eq!(e.poll_event(), Some(EngineEvent::Reset(id, "too much data".into())));
        assert!(transmit(&mut e).is_none(), "no RST answers an RST");
        // A closed port.
        let id2 = e.connect(1234, now).unwrap();
        assert_eq!(id2, ConnectionId(2));
        transmit(&mut e).unwrap();
        e.handle_input(&device_tcp((1, 1), 1234, 2, 0, 1, flags::RST | flags::ACK, &[]), now);
        assert_eq!(e.poll_event(), Some(EngineEvent::ConnectFailed(id2, ConnectFailure::Refused(None))));
        // No answer at all.
        let id3 = e.connect(1234, now).unwrap();
        transmit(&mut e).unwrap();
        assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(5)));
        e.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(e.poll_event(), Some(EngineEvent::ConnectFailed(id3, ConnectFailure::TimedOut)));
        assert!(transmit(&mut e).is_some(), "an RST tells the device to forget it");
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn ports_in_use_are_skipped_and_unknown_connections_get_an_anonymous_rst() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        while transmit(&mut e).is_some() {}
        e.next_port = 1;
        let next = e.connect(80, now).unwrap();
        assert_ne!(next, id);
        // A packet for a connection we do not have.
        e.handle_input(&device_tcp((1, 1), 62078, 7, 0x1234, 0, flags::ACK, &[]), now);
        let mut found = false;
        while let Some(p) = transmit(&mut e) {
            if p[16..18] == [0, 7] {
                assert_eq!(&p[16..], &hex("00 07 f2 7e 00 00 00 00 00 00 12 34 50 04 00 00 00 00 00 00")[..]);
                found = true;
            }
        }
        assert!(found);
    }

    #[test]
    fn sequence_gap_is_a_reset_and_version_one_uses_short_headers() {
        let now = Instant::now();
        let (mut e, id) = connected(now);
        e.handle_input(&device_tcp((1, 1), 62078, 1, 50, 1, flags::ACK, b"x"), now);
        assert!(matches!(e.poll_event(), Some(EngineEvent::Reset(i, _)) if i == id));

        let mut v1 = stream_engine();
        v1.start();
        transmit(&mut v1).unwrap();
        v1.handle_input(&Packet::Version(VersionBody { major: 1, minor: 0, padding: 0 }).encode(None), now);
        assert_eq!(v1.poll_event(), Some(EngineEvent::Ready { version: 1 }));
        v1.connect(62078, now).unwrap();
        assert_eq!(
            transmit(&mut v1).unwrap(),
            hex("00 00 00 06 00 00 00 1c 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 04 00 00 00 00 00")
        );

        let mut bad = stream_engine();
        bad.start();
        bad.handle_input(&Packet::Version(VersionBody { major: 9, minor: 1, padding: 0 }).encode(None), now);
        assert_eq!(bad.poll_event(), Some(EngineEvent::VersionRejected { major: 9, minor: 1 }));
        assert_eq!(bad.connect(1, now), Err(EngineError::NotReady));
    }
}
