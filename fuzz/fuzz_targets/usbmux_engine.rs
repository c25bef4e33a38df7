//! The sans-IO host-side engine (`src/usbmux/engine.rs`) driven by a sequence of
//! operations: device input (raw bytes, or well-formed packets from a small device model
//! so that deep states are reachable), the user calls (connect, send, recv, close), the
//! driver calls (poll_transmit, handle_timeout with advancing time, device_gone).
//!
//! Invariants checked after every operation:
//! * no panic, and `poll_transmit` until empty terminates;
//! * every transmitted packet decodes (in the header format the engine is using) and is at
//!   most 49152 bytes; TCP payloads respect `max_payload`; nothing but VERSION goes out
//!   before the version exchange, nothing at all after `device_gone`;
//! * the data sent never exceeds the window the device advertised (relative to the
//!   device's last acknowledgement), and data sequence numbers are contiguous;
//! * memory is bounded: `readable_len` ≤ the receive window, `queued_len` ≤ the send
//!   buffer, for every connection;
//! * `send`/`recv` return counts that match the change in `queued_len`/`readable_len`;
//! * after `handle_timeout(now)`, `poll_timeout()` is not in the past.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use usbmuxd::usbmux::codec::{
    flags, HeaderFormat, MuxHeader, Packet, Protocol, Reassembler, TcpHeader, VersionBody, MAX_IN_PACKET,
    MAX_OUT_PACKET, MAX_TCP_PAYLOAD, TCP_HEADER_LEN, USB_READ_SIZE,
};
use usbmuxd::usbmux::{ConnectionId, Engine, EngineConfig, EngineError};

#[derive(Debug, Arbitrary)]
struct Setup {
    /// `None`: stream framing; `Some(k)`: USB framing, read size chosen by `k`.
    usb: Option<u8>,
    receive_window: Size,
    send_buffer: Size,
    max_payload: u16,
    connect_timeout_ms: u16,
    start: bool,
}

/// A size: small ones make windows and buffers fill up quickly.
#[derive(Debug, Arbitrary)]
enum Size {
    Tiny,
    Small,
    Default,
    Raw(u32),
}

impl Size {
    fn get(&self) -> u32 {
        match self {
            Size::Tiny => 256,
            Size::Small => 4096,
            Size::Default => 256 * 1024,
            Size::Raw(n) => *n,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Flags {
    Ack,
    SynAck,
    RstAck,
    Rst,
    Raw(u8),
}

#[derive(Debug, Arbitrary)]
enum Seq {
    /// What the model thinks is right.
    Expected,
    /// Off by a small amount.
    Near(i8),
    Raw(u32),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Start,
    /// Raw bytes as one `handle_input` call.
    Raw(Vec<u8>),
    /// A VERSION reply.
    DeviceVersion {
        major: u8,
        minor: u8,
    },
    /// A CONTROL message from the device.
    DeviceControl {
        kind: u8,
        text: Vec<u8>,
    },
    /// A TCP packet from the device for connection `conn` (index into those opened).
    DeviceTcp {
        conn: u8,
        flags: Flags,
        seq: Seq,
        ack: Seq,
        window: u16,
        payload_len: u16,
        /// Use the other header format than the engine expects.
        wrong_format: bool,
        /// Mess with the ports: 0 → right, 1 → wrong source port, 2 → unknown dest port.
        ports: u8,
        /// Hold the packet and send it with the next one (several packets per transfer).
        batch: bool,
        /// For stream framing: where to split the delivery.
        split: u16,
    },
    Connect(u16),
    Send {
        conn: u8,
        len: u16,
        repeat: u8,
    },
    Recv {
        conn: u8,
        len: u32,
    },
    Close(u8),
    /// One `poll_transmit`.
    PollOne,
    /// `poll_transmit` until it returns false.
    PollAll,
    /// Advance time and call `handle_timeout`.
    Advance(u16),
    DeviceGone,
    /// Drain the event queue.
    Events,
}

/// What the harness knows about a connection.
#[derive(Debug, Default, Clone)]
struct ConnModel {
    device_port: u16,
    /// Device's next sequence number to send.
    device_seq: u32,
    /// Host's next sequence number, as seen on the wire.
    host_seq: u32,
    /// Last ack/window the engine accepted from the device for this connection.
    peer: Option<(u32, u32)>,
    /// Sequence number the next ACK-flagged packet from the host must carry.
    next_data_seq: Option<u32>,
    /// The acknowledgement number of the host's handshake ACK (the device's ISN + 1).
    handshake_ack: Option<u32>,
    /// The acknowledgement number the host last put on the wire for this connection.
    last_ack: u32,
    /// Bytes the user took with `recv`.
    consumed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DevState {
    Init,
    Active(u32),
    Failed,
}

struct Harness {
    engine: Engine,
    now: Instant,
    usb_read_size: Option<usize>,
    receive_window: usize,
    send_buffer: usize,
    max_payload: usize,
    ids: Vec<ConnectionId>,
    conns: HashMap<u16, ConnModel>,
    /// Shadow of the engine's device state (drives the header format).
    state: DevState,
    /// A shadow reassembler, to know what the engine saw in each input.
    shadow: Reassembler,
    batch: Vec<u8>,
    gone: bool,
    starts_after_gone: usize,
    out: Vec<u8>,
}

fn clamp_window(w: u32) -> usize {
    ((w.clamp(256, 0xFFFF << 8) >> 8) << 8) as usize
}

impl Harness {
    fn new(s: &Setup) -> Harness {
        let usb_read_size = s.usb.map(|k| match k % 6 {
            0 => USB_READ_SIZE,
            1 => 512,
            2 => 64,
            3 => 16,
            4 => 1 + (k as usize) % 40,
            _ => 1024,
        });
        let send_buffer = (s.send_buffer.get() % (512 * 1024)) as usize;
        let max_payload = if s.max_payload == 0 { MAX_TCP_PAYLOAD } else { s.max_payload as usize };
        let config = EngineConfig {
            receive_window: s.receive_window.get(),
            send_buffer,
            max_payload,
            connect_timeout: Duration::from_millis(s.connect_timeout_ms as u64),
            usb_read_size,
        };
        let mut engine = Engine::new(config);
        if s.start {
            engine.start();
        }
        Harness {
            engine,
            now: Instant::now(),
            usb_read_size,
            receive_window: clamp_window(s.receive_window.get()),
            // The engine clamps a zero send buffer to one byte.
            send_buffer: send_buffer.max(1),
            max_payload: max_payload.clamp(1, MAX_TCP_PAYLOAD),
            ids: Vec::new(),
            conns: HashMap::new(),
            state: DevState::Init,
            shadow: match usb_read_size {
                Some(n) => Reassembler::usb(n),
                None => Reassembler::stream(),
            },
            batch: Vec::new(),
            gone: false,
            starts_after_gone: 0,
            out: Vec::new(),
        }
    }

    fn format(&self) -> HeaderFormat {
        match self.state {
            DevState::Active(v) if v >= 2 => HeaderFormat::Long,
            _ => HeaderFormat::Short,
        }
    }

    fn conn(&self, i: u8) -> Option<ConnectionId> {
        if self.ids.is_empty() {
            None
        } else {
            Some(self.ids[i as usize % self.ids.len()])
        }
    }

    fn exists(&mut self, id: ConnectionId) -> bool {
        // recv into an empty buffer changes nothing and tells whether the id is known.
        !matches!(self.engine.recv(id, &mut []), Err(EngineError::UnknownConnection))
    }

    /// Hands `bytes` to the engine as the framing requires, mirroring what the engine
    /// learns in the shadow model.
    fn deliver(&mut self, bytes: &[u8], split: u16) {
        let chunks: Vec<&[u8]> = match self.usb_read_size {
            // Bulk transfers: full-size ones, then a short one (or a full one: the length
            // field then completes the packet).
            Some(n) => bytes.chunks(n).collect(),
            None if bytes.len() > 1 => {
                let at = 1 + split as usize % (bytes.len() - 1);
                vec![&bytes[..at], &bytes[at..]]
            }
            None => vec![bytes],
        };
        for chunk in chunks {
            self.input(chunk);
        }
    }

    fn input(&mut self, chunk: &[u8]) {
        // Shadow: which packets does this chunk complete, and what do they do to the
        // per-connection ack/window the engine keeps?
        let mut packets = Vec::new();
        let _ = self.shadow.feed(chunk, |p| packets.push(p.to_vec()));
        self.engine.handle_input(chunk, self.now);
        for p in packets {
            self.shadow_packet(&p);
        }
    }

    fn shadow_packet(&mut self, bytes: &[u8]) {
        let format = self.format();
        let Ok(header) = MuxHeader::decode(bytes, format) else { return };
        match header.protocol {
            Protocol::Version => {
                if let Ok((_, Packet::Version(v))) = Packet::decode(bytes, format) {
                    if self.state == DevState::Init {
                        self.state = match v.major {
                            1 | 2 => DevState::Active(v.major),
                            _ => DevState::Failed,
                        };
                    }
                }
            }
            Protocol::Tcp => {
                if !matches!(self.state, DevState::Active(_)) {
                    return;
                }
                let Ok(tcp) = TcpHeader::decode(&bytes[format.header_len()..]) else { return };
                let id = ConnectionId(tcp.dest_port);
                // Connections only disappear inside handle_input, never appear: one that
                // exists now existed when this packet was handled.
                if !self.exists(id) {
                    return;
                }
                if let Some(m) = self.conns.get_mut(&tcp.dest_port) {
                    if m.device_port == tcp.source_port {
                        m.peer = Some((tcp.ack, tcp.window));
                    }
                }
            }
            _ => {}
        }
    }

    fn device_tcp(&mut self, op: &Op) {
        let Op::DeviceTcp { conn, flags: f, seq, ack, window, payload_len, wrong_format, ports, batch, split } = op
        else {
            unreachable!()
        };
        let (sport, dport, model) = match self.conn(*conn) {
            Some(id) => {
                let m = self.conns.get(&id.0).cloned().unwrap_or_default();
                (m.device_port, id.0, m)
            }
            None => (62078, 1, ConnModel::default()),
        };
        let (sport, dport) = match ports % 3 {
            0 => (sport, dport),
            1 => (sport.wrapping_add(1), dport),
            _ => (sport, dport.wrapping_add(0x4000)),
        };
        let flags = match f {
            Flags::Ack => flags::ACK,
            Flags::SynAck => flags::SYN | flags::ACK,
            Flags::RstAck => flags::RST | flags::ACK,
            Flags::Rst => flags::RST,
            Flags::Raw(raw) => *raw,
        };
        let pick = |s: &Seq, expected: u32| match s {
            Seq::Expected => expected,
            Seq::Near(d) => expected.wrapping_add(*d as i32 as u32),
            Seq::Raw(v) => *v,
        };
        let seq = pick(seq, model.device_seq);
        let ack = pick(ack, model.host_seq);
        let format = match (self.format(), wrong_format) {
            (f, false) => f,
            (HeaderFormat::Short, true) => HeaderFormat::Long,
            (HeaderFormat::Long, true) => HeaderFormat::Short,
        };
        let max = MAX_IN_PACKET - format.header_len() - TCP_HEADER_LEN;
        let len = (*payload_len as usize).min(max);
        let payload: Vec<u8> = (0..len).map(|i| (seq as usize).wrapping_add(i) as u8).collect();
        let header = TcpHeader { source_port: sport, dest_port: dport, seq, ack, flags, window: (*window as u32) << 8 };
        let counters = (format == HeaderFormat::Long).then_some((0x1234, 0x5678));
        let bytes = Packet::Tcp { header, payload }.encode(counters);
        // The device's next sequence number follows what the engine took from it: a SYN
        // counts one (its payload is ignored), data counts its length.
        if let Some(m) = self.conns.get_mut(&dport) {
            if m.device_port == sport && !wrong_format {
                if flags & flags::SYN != 0 {
                    m.device_seq = seq.wrapping_add(1);
                } else if flags == flags::ACK && seq == m.device_seq {
                    m.device_seq = seq.wrapping_add(len as u32);
                }
            }
        }
        self.send_from_device(bytes, *batch, *split);
    }

    fn send_from_device(&mut self, bytes: Vec<u8>, batch: bool, split: u16) {
        self.batch.extend_from_slice(&bytes);
        if batch && self.batch.len() < 4 * MAX_IN_PACKET {
            return;
        }
        let all = std::mem::take(&mut self.batch);
        self.deliver(&all, split);
    }

    fn poll_one(&mut self) -> bool {
        let mut out = std::mem::take(&mut self.out);
        let sent = self.engine.poll_transmit(&mut out);
        if !sent {
            assert!(out.is_empty(), "poll_transmit returned false but wrote {} bytes", out.len());
        } else {
            self.transmitted(&out);
        }
        self.out = out;
        sent
    }

    fn transmitted(&mut self, out: &[u8]) {
        if debug() {
            eprintln!("  sent {} bytes: {:02x?}", out.len(), &out[..out.len().min(40)]);
        }
        if self.gone {
            // Only a VERSION request that `start()` queued after `device_gone` may go out.
            assert!(
                self.starts_after_gone > 0 && out[..4] == [0; 4],
                "engine transmitted after device_gone: {out:02x?}"
            );
            self.starts_after_gone -= 1;
        }
        assert!(out.len() <= MAX_OUT_PACKET, "packet of {} bytes > {MAX_OUT_PACKET}", out.len());
        let number = u32::from_be_bytes(out[..4].try_into().expect("at least a protocol field"));
        let format = match Protocol::from_number(number) {
            Some(Protocol::Version) => HeaderFormat::Short,
            Some(Protocol::Setup) => HeaderFormat::Long,
            _ => self.format(),
        };
        let (_, packet) = Packet::decode(out, format)
            .unwrap_or_else(|e| panic!("transmitted packet does not decode as {format:?}: {e}: {out:02x?}"));
        match packet {
            Packet::Version(v) => assert_eq!(v, VersionBody { major: 2, minor: 0, padding: 0 }),
            Packet::Setup(body) => {
                assert_eq!(body, [7]);
                assert!(matches!(self.state, DevState::Active(2)), "SETUP in state {:?}", self.state);
            }
            Packet::Control { .. } => panic!("the host never sends CONTROL"),
            Packet::Tcp { header, payload } => {
                assert!(matches!(self.state, DevState::Active(_)), "TCP before the version exchange");
                assert!(payload.len() <= self.max_payload, "payload {} > max {}", payload.len(), self.max_payload);
                // Every packet advertises the configured window, except the anonymous RST
                // (window 0) answering a packet for a connection that does not exist.
                let anonymous_rst = header.flags == flags::RST && header.window == 0;
                assert!(
                    header.window as usize == self.receive_window || anonymous_rst,
                    "advertised window {}",
                    header.window
                );
                self.host_tcp(header, payload.len());
            }
        }
    }

    fn host_tcp(&mut self, h: TcpHeader, n: usize) {
        let Some(m) = self.conns.get_mut(&h.source_port) else { return };
        if m.device_port != h.dest_port {
            // An anonymous RST that happens to use a live port number: not this
            // connection's packet (it must not count as its ACK; regression
            // fuzz/regressions/engine_anonymous_rst_ack.rs).
            return;
        }
        if h.flags == flags::SYN {
            // (The model was reset by `connect`: the device may have answered already.)
            m.host_seq = h.seq.wrapping_add(1);
            return;
        }
        m.host_seq = h.seq.wrapping_add(n as u32);
        m.last_ack = h.ack;
        if h.flags != flags::ACK {
            return;
        }
        m.handshake_ack.get_or_insert(h.ack);
        // Data and pure ACKs: contiguous sequence numbers, starting at 1.
        let expected = m.next_data_seq.unwrap_or(1);
        assert_eq!(h.seq, expected, "host seq jumped on port {}", h.source_port);
        m.next_data_seq = Some(h.seq.wrapping_add(n as u32));
        if n > 0 {
            let (peer_ack, peer_window) = m.peer.expect("data sent without any ack/window from the device");
            let in_flight = h.seq.wrapping_add(n as u32).wrapping_sub(peer_ack);
            assert!(
                in_flight <= peer_window,
                "port {}: {in_flight} bytes in flight beyond the device's window {peer_window}",
                h.source_port
            );
        }
    }

    fn check(&mut self) {
        let expected = match self.state {
            DevState::Active(v) => Some(v),
            _ => None,
        };
        assert_eq!(self.engine.version(), expected, "shadow device state {:?} is off", self.state);
        for i in 0..self.ids.len() {
            let id = self.ids[i];
            let r = self.engine.readable_len(id);
            let q = self.engine.queued_len(id);
            assert!(r <= self.receive_window, "{id:?}: readable {r} > window {}", self.receive_window);
            assert!(q <= self.send_buffer, "{id:?}: queued {q} > send buffer {}", self.send_buffer);
        }
        assert!(self.engine.connection_count() <= self.ids.len());
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Start => {
                self.engine.start();
                if self.gone {
                    self.starts_after_gone += 1;
                }
            }
            Op::Raw(bytes) => self.input(bytes),
            Op::DeviceVersion { major, minor } => {
                let major = match major % 4 {
                    0 | 1 => 2,
                    2 => 1,
                    _ => *major as u32,
                };
                let v = Packet::Version(VersionBody { major, minor: *minor as u32, padding: 0 }).encode(None);
                self.send_from_device(v, false, 0);
            }
            Op::DeviceControl { kind, text } => {
                let counters = (self.format() == HeaderFormat::Long).then_some((1, 1));
                let text = &text[..text.len().min(1000)];
                let p = Packet::Control { kind: *kind, text: text.to_vec() }.encode(counters);
                self.send_from_device(p, false, 0);
            }
            Op::DeviceTcp { .. } => self.device_tcp(op),
            Op::Connect(port) => {
                let ready = matches!(self.state, DevState::Active(_));
                match self.engine.connect(*port, self.now) {
                    Ok(id) => {
                        assert!(ready, "connect succeeded in state {:?}", self.state);
                        assert_ne!(id.0, 0, "host port 0 allocated");
                        self.ids.push(id);
                        self.conns.insert(id.0, ConnModel { device_port: *port, ..ConnModel::default() });
                    }
                    Err(e) => assert!(!ready || e == EngineError::NoFreePort, "connect failed when ready: {e}"),
                }
            }
            Op::Send { conn, len, repeat } => {
                let Some(id) = self.conn(*conn) else { return };
                let data = vec![0xA5u8; *len as usize];
                for _ in 0..=(*repeat % 8) {
                    let before = self.engine.queued_len(id);
                    if let Ok(n) = self.engine.send(id, &data) {
                        assert!(n <= data.len());
                        assert_eq!(self.engine.queued_len(id), before + n, "send count vs queued_len");
                    }
                }
            }
            Op::Recv { conn, len } => {
                let Some(id) = self.conn(*conn) else { return };
                let mut buf = vec![0u8; (*len as usize).min(self.receive_window + 1)];
                let before = self.engine.readable_len(id);
                if let Ok(n) = self.engine.recv(id, &mut buf) {
                    assert!(n <= buf.len() && n <= before);
                    if let Some(m) = self.conns.get_mut(&id.0) {
                        m.consumed = m.consumed.wrapping_add(n as u32);
                    }
                    assert_eq!(self.engine.readable_len(id), before - n, "recv count vs readable_len");
                }
            }
            Op::Close(conn) => {
                if let Some(id) = self.conn(*conn) {
                    self.engine.close(id);
                    assert!(!self.exists(id), "closed connection still known");
                    assert_eq!(self.engine.readable_len(id), 0);
                }
            }
            Op::PollOne => {
                self.poll_one();
            }
            Op::PollAll => self.poll_all(),
            Op::Advance(ms) => {
                self.now += Duration::from_millis(*ms as u64);
                self.engine.handle_timeout(self.now);
                if let Some(t) = self.engine.poll_timeout() {
                    assert!(t > self.now, "poll_timeout still due after handle_timeout");
                }
            }
            Op::DeviceGone => {
                self.engine.device_gone();
                self.gone = true;
                self.starts_after_gone = 0;
                self.state = DevState::Failed;
                assert!(self.engine.poll_timeout().is_none(), "timeout pending after device_gone");
            }
            Op::Events => {
                while let Some(e) = self.engine.poll_event() {
                    if debug() {
                        eprintln!("  event {e:?}");
                    }
                }
            }
        }
        self.check();
    }

    fn poll_all(&mut self) {
        // Every packet either empties the control queue or carries data/an ACK that is
        // then no longer due: the number of packets is bounded by what is queued.
        let queued: usize = self.ids.iter().map(|&id| self.engine.queued_len(id)).sum();
        let bound = 1_000_000 + queued;
        let mut n = 0;
        while self.poll_one() {
            n += 1;
            assert!(n <= bound, "poll_transmit never runs dry ({n} packets)");
        }
        // Liveness: once the reader has drained a connection, the device has been told
        // (an ACK for everything consumed is on the wire), or it could wait forever.
        for i in 0..self.ids.len() {
            let id = self.ids[i];
            let connected = self.engine.send(id, &[]).is_ok();
            if !connected || self.engine.readable_len(id) != 0 {
                continue;
            }
            let Some(m) = self.conns.get(&id.0) else { continue };
            let Some(start) = m.handshake_ack else { continue };
            assert_eq!(
                m.last_ack,
                start.wrapping_add(m.consumed),
                "{id:?}: reader drained everything but the device was not told (last ACK on the wire)"
            );
        }
    }
}

/// `FUZZ_DEBUG=1` prints the decoded operations (to read a crash input).
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else { return };
    if debug() {
        eprintln!("{setup:?}");
    }
    let mut h = Harness::new(&setup);
    let mut ops = 0;
    while !u.is_empty() && ops < 256 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        if debug() {
            eprintln!("{op:?}");
        }
        h.run(&op);
        ops += 1;
    }
    // Whatever state it is in, the engine drains.
    h.poll_all();
    h.check();
});
