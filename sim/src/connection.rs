//! One pseudo-TCP connection, device side: the sequence/acknowledgement bookkeeping,
//! the window checks, delivery to the service and segmentation of its output.
//!
//! Sequence numbers: the device's initial sequence number is 0 (its SYN|ACK), so its
//! data starts at 1, as the host assumes (§4.5). The host's first data byte is its SYN's
//! sequence number + 1. The device acknowledges host bytes only once they have been
//! delivered to the service (like the host does for its consumer, §4.6).

use crate::config::wire_window;
use crate::event::ResetReason;
use crate::misbehaviour::{AckEvery, Direction, Misbehaviour};
use crate::services::{Service, ServiceStatus};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};
use usbmuxd::usbmux::codec::{flags, TcpHeader};

/// Flags of every RST the device sends (refusals and resets): RST|ACK, `0x14`, as real
/// devices refuse connections.
pub const RESET_FLAGS: u8 = flags::RST | flags::ACK;

/// Identifies a connection of one [`crate::SimDevice`]; assigned in accept order from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The number (1 for the device's first connection).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// TCP state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// SYN|ACK sent, waiting for the host's ACK.
    SynReceived,
    /// Handshake complete.
    Established,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Payload bytes accepted from the host (in sequence, within the window).
    pub bytes_received: u64,
    /// Of those, bytes delivered to the service.
    pub bytes_delivered: u64,
    /// Payload bytes the device sent.
    pub bytes_sent: u64,
    /// Of those, bytes the host has acknowledged.
    pub bytes_acked: u64,
    /// TCP packets received on this connection (SYN included).
    pub packets_received: u64,
    /// TCP packets sent on this connection (SYN|ACK and RST included).
    pub packets_sent: u64,
}

/// A snapshot of a connection, from [`crate::SimDevice::connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection.
    pub id: ConnectionId,
    /// The host's port.
    pub host_port: u16,
    /// The device's port.
    pub device_port: u16,
    /// Handshake state.
    pub state: ConnectionState,
    /// Counters so far.
    pub stats: ConnectionStats,
    /// The window the host advertised last, in bytes.
    pub host_window: u32,
    /// The acknowledgement number the device sent last.
    pub ack_sent: u32,
    /// The window the device advertised last, in bytes.
    pub window_sent: u32,
    /// Sequence space sent and not yet acknowledged by the host (payload bytes; the
    /// SYN|ACK counts as one until the handshake completes).
    pub unacked: u32,
    /// Bytes received and not yet delivered to the service.
    pub undelivered: usize,
}

/// What a host packet did to a connection.
pub(crate) enum Inbound {
    /// Accepted; `established` if it completed the handshake.
    Accepted { established: bool },
    /// The host reset (closed) the connection.
    HostReset,
    /// A protocol violation: the device must reset the connection.
    Violation(ResetReason),
}

/// How a pump round ended.
pub(crate) enum PumpEnd {
    /// The connection stays.
    Open,
    /// The service ended cleanly and the bare RST was queued.
    ServiceClosed,
    /// The device reset the connection (RST with the reason's text queued).
    Reset(ResetReason),
}

/// What the device's settings mean for a pump round.
pub(crate) struct Policy<'a> {
    /// Receive window in bytes, as on the wire.
    pub window: u32,
    pub max_segment: usize,
    pub misbehaviour: &'a Misbehaviour,
}

/// `a` is after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

pub(crate) struct Connection {
    pub id: ConnectionId,
    pub host_port: u16,
    pub device_port: u16,
    pub state: ConnectionState,
    pub service: Box<dyn Service>,
    pub stats: ConnectionStats,
    // Device → host.
    snd_una: u32,
    snd_nxt: u32,
    host_window: u32,
    // Host → device.
    rcv_nxt: u32,
    delivered: u32,
    recv_buf: VecDeque<u8>,
    // Acknowledgements and window the device has put on the wire.
    ack_sent: u32,
    window_sent: u32,
    right_edge: u32,
    window_update: bool,
    // Acknowledgement policy: `released` is the highest ack the coalescing rule has let
    // go; it becomes sendable (`ack_ready`) when its time in `ack_queue` has come.
    released: u32,
    ack_queue: VecDeque<(Instant, u32)>,
    ack_ready: u32,
    unreleased_packets: u32,
    unreleased_bytes: u64,
    first_unreleased: Option<Instant>,
}

impl Connection {
    /// A connection for the host's SYN `syn`, in SYN-RECEIVED; [`Connection::syn_ack`]
    /// gives the answer.
    pub fn new(id: ConnectionId, syn: &TcpHeader, service: Box<dyn Service>) -> Connection {
        let rcv_nxt = syn.seq.wrapping_add(1);
        Connection {
            id,
            host_port: syn.source_port,
            device_port: syn.dest_port,
            state: ConnectionState::SynReceived,
            service,
            stats: ConnectionStats { packets_received: 1, ..ConnectionStats::default() },
            snd_una: 0,
            snd_nxt: 0,
            host_window: syn.window,
            rcv_nxt,
            delivered: rcv_nxt,
            recv_buf: VecDeque::new(),
            ack_sent: rcv_nxt,
            window_sent: 0,
            right_edge: rcv_nxt,
            window_update: false,
            released: rcv_nxt,
            ack_queue: VecDeque::new(),
            ack_ready: rcv_nxt,
            unreleased_packets: 0,
            unreleased_bytes: 0,
            first_unreleased: None,
        }
    }

    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            host_port: self.host_port,
            device_port: self.device_port,
            state: self.state,
            stats: self.stats,
            host_window: self.host_window,
            ack_sent: self.ack_sent,
            window_sent: self.window_sent,
            unacked: self.snd_nxt.wrapping_sub(self.snd_una),
            undelivered: self.recv_buf.len(),
        }
    }

    fn header(&mut self, flags: u8, window: u32) -> TcpHeader {
        let ack = self.ack_ready;
        self.ack_sent = ack;
        self.window_sent = window;
        let edge = ack.wrapping_add(window);
        if after(edge, self.right_edge) {
            self.right_edge = edge;
        }
        self.window_update = false;
        self.stats.packets_sent += 1;
        TcpHeader { source_port: self.device_port, dest_port: self.host_port, seq: self.snd_nxt, ack, flags, window }
    }

    /// The SYN|ACK: seq 0, ack = SYN's seq + 1 (1 from a correct host).
    pub fn syn_ack(&mut self, window: u32) -> TcpHeader {
        let h = self.header(flags::SYN | flags::ACK, window);
        self.snd_nxt = 1;
        h
    }

    /// An RST with `text` (plus `\n`) as payload, or none if `text` is empty.
    pub fn rst(&mut self, window: u32, text: &str) -> (TcpHeader, Vec<u8>) {
        let h = self.header(RESET_FLAGS, window);
        let payload = if text.is_empty() { Vec::new() } else { format!("{text}\n").into_bytes() };
        (h, payload)
    }

    /// Processes one host packet of this connection.
    pub fn on_segment(&mut self, h: &TcpHeader, payload: &[u8], now: Instant) -> Inbound {
        self.stats.packets_received += 1;
        if h.flags & flags::RST != 0 {
            return Inbound::HostReset;
        }
        if h.flags == flags::SYN {
            return Inbound::Violation(ResetReason::DuplicateSyn);
        }
        if h.flags != flags::ACK {
            return Inbound::Violation(ResetReason::UnexpectedFlags(h.flags));
        }
        if h.seq != self.rcv_nxt {
            return Inbound::Violation(ResetReason::SequenceGap { expected: self.rcv_nxt, got: h.seq });
        }
        // The handshake ACK must acknowledge the SYN|ACK (ack 1); later acks must lie
        // between what was acknowledged and what was sent.
        let floor = if self.state == ConnectionState::SynReceived { self.snd_nxt } else { self.snd_una };
        if after(floor, h.ack) || after(h.ack, self.snd_nxt) {
            return Inbound::Violation(ResetReason::BadAck { ack: h.ack, acked: self.snd_una, sent: self.snd_nxt });
        }
        let end = h.seq.wrapping_add(payload.len() as u32);
        if after(end, self.right_edge) {
            return Inbound::Violation(ResetReason::WindowOverrun {
                window: self.window_sent,
                excess: end.wrapping_sub(self.right_edge),
            });
        }
        let established = self.state == ConnectionState::SynReceived;
        self.state = ConnectionState::Established;
        self.snd_una = h.ack;
        self.stats.bytes_acked = u64::from(self.snd_una.wrapping_sub(1));
        self.host_window = h.window;
        if !payload.is_empty() {
            self.recv_buf.extend(payload);
            self.rcv_nxt = end;
            self.stats.bytes_received += payload.len() as u64;
            self.unreleased_packets += 1;
            self.unreleased_bytes += payload.len() as u64;
            self.first_unreleased.get_or_insert(now);
        }
        Inbound::Accepted { established }
    }

    /// Hands received bytes to the service, as many as it takes.
    fn deliver(&mut self) -> bool {
        let n = self.service.capacity().min(self.recv_buf.len());
        if n == 0 {
            return false;
        }
        let (a, b) = self.recv_buf.as_slices();
        if n <= a.len() {
            self.service.on_data(&a[..n]);
        } else {
            let mut chunk = Vec::with_capacity(n);
            chunk.extend_from_slice(a);
            chunk.extend_from_slice(&b[..n - a.len()]);
            self.service.on_data(&chunk);
        }
        self.recv_buf.drain(..n);
        self.delivered = self.delivered.wrapping_add(n as u32);
        self.stats.bytes_delivered += n as u64;
        true
    }

    /// Applies the acknowledgement policy: which ack may go on the wire now.
    fn release_acks(&mut self, now: Instant, m: &Misbehaviour) {
        if self.delivered != self.released {
            let release = match &m.ack_coalescing {
                None => true,
                Some(c) => {
                    let threshold = match c.every {
                        AckEvery::Packets(n) => self.unreleased_packets >= n,
                        AckEvery::Bytes(n) => self.unreleased_bytes >= n,
                    };
                    let flush = match (c.flush_after, self.first_unreleased) {
                        (Some(after), Some(first)) => now >= first + after,
                        _ => false,
                    };
                    threshold || flush
                }
            };
            if release {
                let at = now + m.ack_delay.unwrap_or(Duration::ZERO);
                self.ack_queue.push_back((at, self.delivered));
                self.released = self.delivered;
                self.unreleased_packets = 0;
                self.unreleased_bytes = 0;
                self.first_unreleased = None;
            }
        }
        while let Some(&(at, ack)) = self.ack_queue.front() {
            if at > now {
                break;
            }
            self.ack_ready = ack;
            self.ack_queue.pop_front();
        }
    }

    /// After a misbehaviour change: acks already waiting become sendable no later than
    /// the new delay allows; a window change is announced.
    pub fn reconfigure(&mut self, now: Instant, m: &Misbehaviour, window_changed: bool) {
        let latest = now + m.ack_delay.unwrap_or(Duration::ZERO);
        for entry in self.ack_queue.iter_mut() {
            entry.0 = entry.0.min(latest);
        }
        if window_changed && self.state == ConnectionState::Established {
            self.window_update = true;
        }
    }

    /// When this connection's acknowledgement policy wants to run again.
    pub fn next_timeout(&self, m: &Misbehaviour) -> Option<Instant> {
        let queued = self.ack_queue.front().map(|&(at, _)| at);
        let flush = match (&m.ack_coalescing, self.first_unreleased) {
            (Some(c), Some(first)) if self.delivered != self.released => c.flush_after.map(|f| first + f),
            _ => None,
        };
        match (queued, flush) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes the host's window still has room for.
    fn sendable(&self) -> usize {
        let limit = self.snd_una.wrapping_add(self.host_window);
        let room = limit.wrapping_sub(self.snd_nxt) as i32;
        room.max(0) as usize
    }

    /// Bytes counted by a [`crate::ResetAfter`] in `direction`.
    fn counted(&self, direction: Direction) -> u64 {
        match direction {
            Direction::FromHost => self.stats.bytes_received,
            Direction::ToHost => self.stats.bytes_sent,
            Direction::Both => self.stats.bytes_received + self.stats.bytes_sent,
        }
    }

    /// Delivers, acknowledges, sends and closes as far as the state allows; pushes the
    /// packets to send onto `out`.
    pub fn pump(&mut self, now: Instant, p: &Policy<'_>, out: &mut Vec<(TcpHeader, Vec<u8>)>) -> PumpEnd {
        if self.state != ConnectionState::Established {
            return PumpEnd::Open;
        }
        let reset =
            p.misbehaviour.reset_after.as_ref().filter(|r| r.port.map_or(true, |port| port == self.device_port));
        loop {
            let mut progress = self.deliver();
            if let ServiceStatus::Abort(text) = self.service.status() {
                return self.reset(p.window, ResetReason::ServiceAborted(text), out);
            }
            if let Some(r) = reset {
                if self.counted(r.direction) >= r.bytes {
                    return self.reset(p.window, ResetReason::Injected(r.reason.clone()), out);
                }
            }
            self.release_acks(now, p.misbehaviour);
            let mut max = self.sendable().min(p.max_segment);
            if let Some(r) = reset {
                if r.direction != Direction::FromHost {
                    max = max.min((r.bytes - self.counted(r.direction)) as usize);
                }
            }
            if max > 0 && self.service.has_output() {
                let mut data = Vec::with_capacity(max.min(1 << 16));
                self.service.poll_output(&mut data, max);
                data.truncate(max);
                if !data.is_empty() {
                    let h = self.header(flags::ACK, p.window);
                    self.snd_nxt = self.snd_nxt.wrapping_add(data.len() as u32);
                    self.stats.bytes_sent += data.len() as u64;
                    out.push((h, data));
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        if self.ack_ready != self.ack_sent || self.window_update || p.window > self.window_sent {
            let h = self.header(flags::ACK, p.window);
            out.push((h, Vec::new()));
        }
        if self.service.status() == ServiceStatus::Close && !self.service.has_output() && self.snd_una == self.snd_nxt {
            out.push(self.rst(p.window, ""));
            return PumpEnd::ServiceClosed;
        }
        PumpEnd::Open
    }

    /// Queues an RST carrying `reason`'s text.
    pub fn reset(&mut self, window: u32, reason: ResetReason, out: &mut Vec<(TcpHeader, Vec<u8>)>) -> PumpEnd {
        out.push(self.rst(window, &reason.to_string()));
        PumpEnd::Reset(reason)
    }
}

/// The window to advertise for `m` over the configured `receive_window`.
pub(crate) fn effective_window(receive_window: u32, m: &Misbehaviour) -> u32 {
    wire_window(m.receive_window.unwrap_or(receive_window))
}
