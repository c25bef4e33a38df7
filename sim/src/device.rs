//! [`SimDevice`]: the device side of the usbmux protocol as a sans-IO state machine.

use crate::config::{DeviceConfig, Framing, ServiceFactory, MAX_SEGMENT};
use crate::connection::{
    effective_window, Connection, ConnectionId, ConnectionInfo, Inbound, Policy, PumpEnd, RESET_FLAGS,
};
use crate::event::{CloseCause, DropReason, Event, MuxState, ResetReason};
use crate::misbehaviour::{Misbehaviour, Rng};
use crate::services::{Service, ServiceContext};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Instant;
use usbmuxd::usbmux::codec::{
    flags, needs_zlp, HeaderFormat, MuxHeader, Packet, Protocol, Reassembler, TcpHeader, USB_READ_SIZE,
};

/// CONTROL message types (the first payload byte, §3.6), for [`SimDevice::send_control`].
pub mod control {
    /// A device error message (logged at error level by the daemon).
    pub const ERROR: u8 = 3;
    /// A device warning (logged at warning level by newer daemons).
    pub const WARNING: u8 = 5;
    /// An informational message.
    pub const INFO: u8 = 7;
}

/// The error of I/O on an unplugged device (a USB driver would see "no device").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceGone;

impl fmt::Display for DeviceGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the simulated device has been unplugged")
    }
}

impl std::error::Error for DeviceGone {}

/// Input framing state.
enum Input {
    /// Bytes of a transfer not terminated yet (its length was a multiple of
    /// wMaxPacketSize), and whether further transfers already ran into it.
    Usb {
        max_packet_size: usize,
        unterminated: Vec<u8>,
        merged: bool,
    },
    Stream(Reassembler),
}

/// A simulated iPhone, USB mux side: VERSION/SETUP, the pseudo-TCP layer and the
/// services behind it, with optional misbehaviour.
///
/// Sans-IO, like `quinn-proto`: no threads, sockets or clock. The caller moves bytes and
/// time in and out:
///
/// * [`SimDevice::handle_input`] — bytes the host sent (see [`Framing`] for what one call
///   means);
/// * [`SimDevice::poll_transmit`] — the next bytes for the host, until `None`;
/// * [`SimDevice::poll_timeout`] / [`SimDevice::handle_timeout`] — the device's timers
///   (late or coalesced ACKs);
/// * [`SimDevice::poll_event`] — what happened, for assertions.
///
/// Time is a [`std::time::Instant`] supplied by the caller; it only has to be
/// monotonic, so tests can use `Instant::now()` once and add durations to it without
/// ever sleeping.
///
/// ```
/// use std::time::Instant;
/// use usbmux_sim::{DeviceConfig, Event, SimDevice};
/// use usbmuxd::usbmux::codec::{Packet, VersionBody};
///
/// let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
/// let now = Instant::now();
/// let version = Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None);
/// dev.handle_input(&version, now).unwrap();
/// assert_eq!(dev.poll_transmit().unwrap(), version); // a version-2 device answers 2.0
/// assert!(matches!(dev.poll_event(), Some(Event::Version { .. })));
/// ```
pub struct SimDevice {
    config: DeviceConfig,
    misbehaviour: Misbehaviour,
    state: MuxState,
    format: HeaderFormat,
    /// The device's packet counter (long headers).
    mux_tx: u16,
    /// The host's `tx_seq` of the last packet received (the device's `rx_seq` field).
    mux_rx: u16,
    expected_host_tx: Option<u16>,
    input: Input,
    conns: BTreeMap<(u16, u16), Connection>,
    next_id: u64,
    transmit: VecDeque<Vec<u8>>,
    /// Flattened output while fragmenting.
    fragments: VecDeque<u8>,
    events: VecDeque<Event>,
    rng: Rng,
}

impl SimDevice {
    /// A device, plugged in and waiting for the host's VERSION request.
    pub fn new(config: DeviceConfig) -> SimDevice {
        let input = match config.framing {
            Framing::Usb { max_packet_size } => Input::Usb { max_packet_size, unterminated: Vec::new(), merged: false },
            Framing::Stream => Input::Stream(Reassembler::stream()),
        };
        SimDevice {
            misbehaviour: config.misbehaviour.clone(),
            rng: Rng::new(config.seed),
            config,
            state: MuxState::AwaitingVersion,
            format: HeaderFormat::Short,
            mux_tx: 0,
            mux_rx: 0xFFFF,
            expected_host_tx: None,
            input,
            conns: BTreeMap::new(),
            next_id: 1,
            transmit: VecDeque::new(),
            fragments: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration the device was created with (services reflect
    /// [`SimDevice::listen`] / [`SimDevice::unlisten`]; the misbehaviour is the initial one).
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The mux-level state.
    pub fn state(&self) -> MuxState {
        self.state
    }

    /// The header the device uses now: short until SETUP (and always for version 1).
    pub fn header_format(&self) -> HeaderFormat {
        self.format
    }

    /// Whether [`SimDevice::unplug`] was called.
    pub fn is_unplugged(&self) -> bool {
        self.state == MuxState::Unplugged
    }

    /// The current misbehaviour.
    pub fn misbehaviour(&self) -> &Misbehaviour {
        &self.misbehaviour
    }

    /// Changes the misbehaviour at runtime. A changed receive window is announced with a
    /// pure ACK on every established connection; acknowledgements held back by a previous
    /// [`Misbehaviour::ack_delay`] become due no later than the new delay allows.
    pub fn set_misbehaviour(&mut self, misbehaviour: Misbehaviour, now: Instant) {
        let old = effective_window(self.config.receive_window, &self.misbehaviour);
        self.misbehaviour = misbehaviour;
        let changed = old != effective_window(self.config.receive_window, &self.misbehaviour);
        for c in self.conns.values_mut() {
            c.reconfigure(now, &self.misbehaviour, changed);
        }
        if self.state != MuxState::Unplugged {
            self.pump(now);
        }
    }

    /// Serves `port` with services from `factory` from now on (replacing the previous
    /// factory; existing connections keep their service).
    pub fn listen(&mut self, port: u16, factory: ServiceFactory) {
        self.config.services_mut().insert(port, factory);
    }

    /// Stops accepting connections on `port` (existing ones stay).
    pub fn unlisten(&mut self, port: u16) {
        self.config.services_mut().remove(&port);
    }

    /// Feeds bytes the host sent: one bulk OUT transfer (USB framing; an empty slice is a
    /// ZLP) or any chunk of the byte stream (stream framing). Everything the device does
    /// in response is queued for [`SimDevice::poll_transmit`] and
    /// [`SimDevice::poll_event`].
    ///
    /// # Errors
    /// [`DeviceGone`] once the device has been unplugged.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), DeviceGone> {
        if self.state == MuxState::Unplugged {
            return Err(DeviceGone);
        }
        if self.misbehaviour.mute {
            if !bytes.is_empty() {
                self.events.push_back(Event::Dropped(DropReason::Muted { bytes: bytes.len() }));
            }
            return Ok(());
        }
        let packets = match &mut self.input {
            Input::Stream(r) => match r.push(bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.events.push_back(Event::Dropped(DropReason::Malformed(e)));
                    Vec::new()
                }
            },
            Input::Usb { max_packet_size, unterminated, merged } => {
                if !unterminated.is_empty() && !bytes.is_empty() {
                    *merged = true;
                }
                unterminated.extend_from_slice(bytes);
                if needs_zlp(bytes.len(), *max_packet_size) || unterminated.is_empty() {
                    Vec::new()
                } else {
                    let transfer = std::mem::take(unterminated);
                    let merged = std::mem::take(merged);
                    self.split_transfer(&transfer, merged)
                }
            }
        };
        for p in packets {
            self.handle_packet(&p, now);
        }
        self.pump(now);
        Ok(())
    }

    /// The packets of one complete USB transfer, read the way the device reads: in
    /// 16 KiB chunks through the codec's USB reassembly. A transfer that ran into an
    /// unterminated one keeps only its first packet.
    fn split_transfer(&mut self, transfer: &[u8], merged: bool) -> Vec<Vec<u8>> {
        let mut r = Reassembler::usb(USB_READ_SIZE);
        let mut packets = Vec::new();
        for chunk in transfer.chunks(USB_READ_SIZE) {
            match r.push(chunk) {
                Ok(p) => packets.extend(p),
                Err(e) => {
                    self.events.push_back(Event::Dropped(DropReason::Malformed(e)));
                    return packets;
                }
            }
        }
        if r.pending() > 0 {
            // The transfer ended on a full read inside a packet: nothing more will come.
            let field = MuxHeader::peek_length(transfer).unwrap_or(0);
            let actual = r.pending();
            self.events.push_back(Event::Dropped(DropReason::Malformed(
                usbmuxd::usbmux::codec::CodecError::LengthMismatch { field, actual },
            )));
        }
        if merged && packets.len() > 1 {
            let lost = packets[1..].iter().map(Vec::len).sum();
            packets.truncate(1);
            self.events.push_back(Event::Dropped(DropReason::MissingZlp { lost }));
        }
        packets
    }

    fn drop_packet(&mut self, reason: DropReason) {
        self.events.push_back(Event::Dropped(reason));
    }

    fn handle_packet(&mut self, bytes: &[u8], now: Instant) {
        // VERSION always travels with the short header.
        let is_version = bytes.get(0..4) == Some(&[0, 0, 0, 0][..]);
        let format = match self.state {
            _ if is_version => HeaderFormat::Short,
            MuxState::AwaitingSetup => HeaderFormat::Long,
            _ => self.format,
        };
        let (header, packet) = match Packet::decode(bytes, format) {
            Ok(p) => p,
            Err(e) => return self.drop_packet(DropReason::Malformed(e)),
        };
        if let Some((tx, _)) = header.counters {
            // SETUP restarts the host's counter; anything else must follow on.
            if let (Some(expected), false) = (self.expected_host_tx, matches!(packet, Packet::Setup(_))) {
                if tx != expected {
                    self.events.push_back(Event::MuxCounterGap { expected, got: tx });
                }
            }
            self.expected_host_tx = Some(tx.wrapping_add(1));
            self.mux_rx = tx;
        }
        let out_of_place = |protocol, state| DropReason::OutOfPlace { protocol, state };
        match packet {
            Packet::Version(requested) => self.on_version(requested),
            Packet::Setup(payload) => {
                let v2 = self.config.version.major >= 2;
                match self.state {
                    MuxState::AwaitingSetup | MuxState::Active if v2 => {
                        self.state = MuxState::Active;
                        self.format = HeaderFormat::Long;
                        self.mux_tx = 0;
                        self.events.push_back(Event::Setup { payload });
                    }
                    state => self.drop_packet(out_of_place(Protocol::Setup, state)),
                }
            }
            Packet::Control { .. } => self.drop_packet(out_of_place(Protocol::Control, self.state)),
            Packet::Tcp { header, payload } => {
                if self.state == MuxState::Active {
                    self.on_tcp(&header, &payload, now);
                } else {
                    self.drop_packet(out_of_place(Protocol::Tcp, self.state));
                }
            }
        }
    }

    fn on_version(&mut self, requested: usbmuxd::usbmux::codec::VersionBody) {
        if self.state != MuxState::AwaitingVersion {
            // A new session: whatever was going on is forgotten.
            self.transmit.clear();
            self.fragments.clear();
            self.close_all(CloseCause::SessionRestarted);
        }
        let answered = self.config.version;
        self.transmit.push_back(Packet::Version(answered).encode(None));
        self.state = if answered.major >= 2 { MuxState::AwaitingSetup } else { MuxState::Active };
        self.format = HeaderFormat::Short;
        self.mux_tx = 0;
        self.mux_rx = 0xFFFF;
        self.expected_host_tx = None;
        self.events.push_back(Event::Version { requested, answered });
    }

    fn close_all(&mut self, cause: CloseCause) {
        for (_, c) in std::mem::take(&mut self.conns) {
            self.events.push_back(closed(&c, cause.clone()));
        }
    }

    fn window(&self) -> u32 {
        effective_window(self.config.receive_window, &self.misbehaviour)
    }

    fn on_tcp(&mut self, h: &TcpHeader, payload: &[u8], now: Instant) {
        let key = (h.source_port, h.dest_port);
        if let Some(mut c) = self.conns.remove(&key) {
            match c.on_segment(h, payload, now) {
                Inbound::Accepted { established } => {
                    if established {
                        self.events.push_back(Event::Established { id: c.id });
                    }
                    self.conns.insert(key, c);
                }
                Inbound::HostReset => self.events.push_back(closed(&c, CloseCause::HostReset)),
                Inbound::Violation(reason) => {
                    let mut out = Vec::new();
                    c.reset(self.window(), reason.clone(), &mut out);
                    self.send_segments(out);
                    self.events.push_back(closed(&c, CloseCause::DeviceReset(reason)));
                }
            }
            return;
        }
        let (host_port, device_port) = key;
        if h.flags == flags::SYN {
            let Some(factory) = self.config.service_factory(device_port).cloned() else {
                let refusal = TcpHeader {
                    source_port: device_port,
                    dest_port: host_port,
                    seq: 0,
                    ack: h.seq.wrapping_add(1),
                    flags: RESET_FLAGS,
                    window: 0,
                };
                self.send_tcp(refusal, Vec::new());
                self.events.push_back(Event::Refused { host_port, device_port });
                return;
            };
            let service = factory(&ServiceContext { udid: &self.config.udid, host_port, device_port });
            let id = ConnectionId(self.next_id);
            self.next_id += 1;
            let mut c = Connection::new(id, h, service);
            let syn_ack = c.syn_ack(self.window());
            self.send_tcp(syn_ack, Vec::new());
            self.conns.insert(key, c);
            self.events.push_back(Event::Accepted { id, host_port, device_port });
        } else if h.flags & flags::RST != 0 {
            self.drop_packet(DropReason::UnknownReset { host_port, device_port });
        } else {
            let rst = TcpHeader {
                source_port: device_port,
                dest_port: host_port,
                seq: 0,
                ack: h.seq,
                flags: flags::RST,
                window: 0,
            };
            self.send_tcp(rst, Vec::new());
            self.events.push_back(Event::UnknownConnection { host_port, device_port, flags: h.flags });
        }
    }

    /// Lets every connection deliver, acknowledge, send and close as far as it can.
    fn pump(&mut self, now: Instant) {
        if self.state != MuxState::Active || self.misbehaviour.mute {
            return;
        }
        let window = self.window();
        let max_segment = self.config.max_segment.clamp(1, MAX_SEGMENT);
        let keys: Vec<(u16, u16)> = self.conns.keys().copied().collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(mut c) = self.conns.remove(&key) else { continue };
            let policy = Policy { window, max_segment, misbehaviour: &self.misbehaviour };
            let end = c.pump(now, &policy, &mut out);
            self.send_segments(std::mem::take(&mut out));
            match end {
                PumpEnd::Open => {
                    self.conns.insert(key, c);
                }
                PumpEnd::ServiceClosed => self.events.push_back(closed(&c, CloseCause::ServiceClosed)),
                PumpEnd::Reset(reason) => self.events.push_back(closed(&c, CloseCause::DeviceReset(reason))),
            }
        }
    }

    fn send_segments(&mut self, segments: Vec<(TcpHeader, Vec<u8>)>) {
        for (h, payload) in segments {
            self.send_tcp(h, payload);
        }
    }

    fn send_tcp(&mut self, header: TcpHeader, payload: Vec<u8>) {
        self.send_packet(Packet::Tcp { header, payload });
    }

    fn send_packet(&mut self, packet: Packet) {
        let counters = match self.format {
            HeaderFormat::Long => {
                let c = (self.mux_tx, self.mux_rx);
                self.mux_tx = self.mux_tx.wrapping_add(1);
                Some(c)
            }
            HeaderFormat::Short => None,
        };
        self.transmit.push_back(packet.encode(counters));
    }

    /// The next bytes for the host: with USB framing one bulk IN transfer (exactly one mux
    /// packet); with stream framing one packet, or a random fragment of the byte stream
    /// under [`Misbehaviour::fragment_output`]. `None` when there is nothing to send, the
    /// device is muted or unplugged.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.state == MuxState::Unplugged || self.misbehaviour.mute {
            return None;
        }
        let fragment = match (self.config.framing, self.misbehaviour.fragment_output) {
            (Framing::Stream, Some(max)) => Some(max.max(1)),
            _ => None,
        };
        match fragment {
            Some(max) => {
                while let Some(p) = self.transmit.pop_front() {
                    self.fragments.extend(p);
                }
                if self.fragments.is_empty() {
                    return None;
                }
                let n = self.rng.between_1_and(max).min(self.fragments.len());
                Some(self.fragments.drain(..n).collect())
            }
            None if !self.fragments.is_empty() => Some(self.fragments.drain(..).collect()),
            None => self.transmit.pop_front(),
        }
    }

    /// When [`SimDevice::handle_timeout`] should be called next (a held-back ACK is due),
    /// if ever. `None` while muted or unplugged.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != MuxState::Active || self.misbehaviour.mute {
            return None;
        }
        self.conns.values().filter_map(|c| c.next_timeout(&self.misbehaviour)).min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == MuxState::Unplugged {
            return;
        }
        self.pump(now);
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues a CONTROL packet (protocol 1) of type `kind` (see [`control`]) with `text`,
    /// in the header format of the moment.
    ///
    /// # Errors
    /// [`DeviceGone`] once the device has been unplugged.
    pub fn send_control(&mut self, kind: u8, text: &[u8]) -> Result<(), DeviceGone> {
        if self.state == MuxState::Unplugged {
            return Err(DeviceGone);
        }
        self.send_packet(Packet::Control { kind, text: text.to_vec() });
        Ok(())
    }

    /// Resets connection `id` now with an RST carrying `reason` (and `\n`). Returns
    /// whether the connection existed.
    pub fn reset_connection(&mut self, id: ConnectionId, reason: &str) -> bool {
        let Some(key) = self.key_of(id) else { return false };
        let Some(mut c) = self.conns.remove(&key) else { return false };
        let reason = ResetReason::Requested(reason.to_string());
        let mut out = Vec::new();
        c.reset(self.window(), reason.clone(), &mut out);
        self.send_segments(out);
        self.events.push_back(closed(&c, CloseCause::DeviceReset(reason)));
        true
    }

    /// Unplugs the device: every connection ends ([`CloseCause::Unplugged`], no RST),
    /// [`Event::Unplugged`] is reported, queued output is discarded, and from now on
    /// [`SimDevice::handle_input`] and [`SimDevice::send_control`] fail with
    /// [`DeviceGone`] while [`SimDevice::poll_transmit`] and
    /// [`SimDevice::poll_timeout`] return `None`. A re-plugged device is a new
    /// `SimDevice` (e.g. from a clone of [`SimDevice::config`]).
    pub fn unplug(&mut self) {
        if self.state == MuxState::Unplugged {
            return;
        }
        self.close_all(CloseCause::Unplugged);
        self.transmit.clear();
        self.fragments.clear();
        self.state = MuxState::Unplugged;
        self.events.push_back(Event::Unplugged);
    }

    fn key_of(&self, id: ConnectionId) -> Option<(u16, u16)> {
        self.conns.iter().find(|(_, c)| c.id == id).map(|(k, _)| *k)
    }

    /// The open connections, in port order (host port, then device port).
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.conns.values().map(|c| c.id).collect()
    }

    /// The connection between `host_port` and `device_port`, if open.
    pub fn find_connection(&self, host_port: u16, device_port: u16) -> Option<ConnectionId> {
        self.conns.get(&(host_port, device_port)).map(|c| c.id)
    }

    /// A snapshot of connection `id`, if it is open.
    pub fn connection(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.conns.values().find(|c| c.id == id).map(Connection::info)
    }

    /// The service of open connection `id` as its concrete type `S` (e.g.
    /// [`crate::Lockdownd`] to read its request log).
    pub fn service<S: Service>(&self, id: ConnectionId) -> Option<&S> {
        let c = self.conns.values().find(|c| c.id == id)?;
        let service: &dyn Service = &*c.service;
        service.as_any().downcast_ref::<S>()
    }

    /// Like [`SimDevice::service`], mutable. Changes take effect at the next input,
    /// timeout or [`SimDevice::poll_now`].
    pub fn service_mut<S: Service>(&mut self, id: ConnectionId) -> Option<&mut S> {
        let c = self.conns.values_mut().find(|c| c.id == id)?;
        let service: &mut dyn Service = &mut *c.service;
        service.as_any_mut().downcast_mut::<S>()
    }

    /// Lets the connections act on a change made from outside (e.g. through
    /// [`SimDevice::service_mut`]) without waiting for input or a timeout.
    pub fn poll_now(&mut self, now: Instant) {
        if self.state == MuxState::Unplugged {
            return;
        }
        self.pump(now);
    }
}

fn closed(c: &Connection, cause: CloseCause) -> Event {
    Event::Closed { id: c.id, host_port: c.host_port, device_port: c.device_port, cause, stats: c.stats }
}

impl fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDevice")
            .field("udid", &self.config.udid)
            .field("state", &self.state)
            .field("format", &self.format)
            .field("connections", &self.conns.len())
            .field("queued_packets", &self.transmit.len())
            .field("misbehaviour", &self.misbehaviour)
            .finish()
    }
}
