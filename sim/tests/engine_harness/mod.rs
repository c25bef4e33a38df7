//! A driver for tests of the host `Engine` against the `SimDevice` through a `Link`:
//! several connections at once, each moving a known amount of data to or from a
//! service, with an event-driven, deliberately slow and irregular host application on
//! top of the engine (random read and write sizes, pauses). It checks every byte as it
//! arrives and notices stalls.
//!
//! The application only does what the engine's API promises is enough:
//! * it writes while the connection is writable; once `send` takes less than offered it
//!   waits for `EngineEvent::Writable`;
//! * it reads after `EngineEvent::Readable` (or `Reset`) until `recv` returns `Ok(0)` or
//!   the reset, possibly over several rounds, then waits for the next `Readable`.
//!
//! So a lost `Readable`/`Writable` shows up as a stall, not as a hang.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use usbmux_sim::link::Captured;
use usbmux_sim::services::{source_pattern, Service};
use usbmux_sim::{CloseCause, DeviceConfig, Echo, Event, Link, Sink, Source};
use usbmuxd::usbmux::codec::{flags, HeaderFormat, Packet};
use usbmuxd::usbmux::{ConnectFailure, ConnectionId, EngineError, EngineEvent};

/// Small deterministic generator for the test's own randomness (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `1..=max` (`max >= 1`).
    pub fn upto(&mut self, max: usize) -> usize {
        1 + (self.next() % max.max(1) as u64) as usize
    }

    pub fn percent(&mut self, p: u32) -> bool {
        (self.next() % 100) < u64::from(p)
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A sink that keeps what it received, so the host → device direction can be checked
/// byte for byte (the built-in `Sink` only counts).
#[derive(Debug, Default)]
pub struct Recorder {
    pub bytes: Vec<u8>,
}

impl Service for Recorder {
    fn on_data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    fn has_output(&self) -> bool {
        false
    }

    fn poll_output(&mut self, _buf: &mut Vec<u8>, _max: usize) {}
}

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Send `len` bytes to an `Echo` (with a buffer of this many bytes) and read them back.
    Echo { buffer: usize },
    /// Send `len` bytes to a `Sink`; done when the device-side count says so.
    Sink,
    /// Send `len` bytes to a `Recorder`; done when it holds exactly them.
    Record,
    /// Read a `Source` of `len` bytes to its clean end (the device's bare RST).
    Source,
}

/// One connection of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub len: usize,
    pub seed: u64,
}

/// Connection `i` of a test goes to device port `BASE_PORT + i`.
pub const BASE_PORT: u16 = 1000;

/// Adds to `config` a service on `BASE_PORT + i` for each spec.
pub fn serve(mut config: DeviceConfig, specs: &[Spec]) -> DeviceConfig {
    for (i, s) in specs.iter().enumerate() {
        let port = BASE_PORT + i as u16;
        let len = s.len as u64;
        config = match s.kind {
            Kind::Echo { buffer } => config.listen(port, move |_| Echo::with_buffer(buffer)),
            Kind::Sink => config.listen(port, |_| Sink::new()),
            Kind::Record => config.listen(port, |_| Recorder::default()),
            Kind::Source => config.listen(port, move |_| Source::new(len)),
        };
    }
    config
}

/// How the host application behaves.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Largest `recv` buffer.
    pub max_read: usize,
    /// Most `recv` calls per connection and round.
    pub reads_per_round: usize,
    /// Largest `send` offer.
    pub max_write: usize,
    /// Chance (percent) that a connection's application takes a pause in a round…
    pub pause_percent: u32,
    /// …of 1 to this many rounds.
    pub max_pause: u32,
    pub seed: u64,
}

impl Style {
    /// Reads and writes everything at once, never pauses.
    pub fn eager() -> Style {
        Style { max_read: 1 << 20, reads_per_round: 64, max_write: 1 << 22, pause_percent: 0, max_pause: 0, seed: 1 }
    }
}

/// The application's state of one connection.
#[derive(Debug)]
pub struct Task {
    pub spec: Spec,
    pub port: u16,
    pub id: Option<ConnectionId>,
    /// What the host sends (empty for a source).
    pub out: Vec<u8>,
    pub sent: usize,
    /// Bytes received and checked.
    pub got: usize,
    pub connected: bool,
    pub writable: bool,
    pub readable: bool,
    pub pause: u32,
    /// `EngineEvent::Reset` text.
    pub reset_event: Option<String>,
    /// What `recv` or `send` reported once the connection was reset.
    pub error: Option<EngineError>,
    pub connect_failed: Option<ConnectFailure>,
    /// The data went through completely (as far as the kind requires).
    pub complete: bool,
    /// Closed by the application (`Engine::close`).
    pub closed: bool,
}

impl Task {
    fn expected_in(&self, offset: usize, n: usize) -> Vec<u8> {
        match self.spec.kind {
            Kind::Echo { .. } => self.out[offset..offset + n].to_vec(),
            Kind::Source => (offset as u64..(offset + n) as u64).map(source_pattern).collect(),
            Kind::Sink | Kind::Record => Vec::new(),
        }
    }

    fn expects_input(&self) -> bool {
        matches!(self.spec.kind, Kind::Echo { .. } | Kind::Source)
    }

    /// Nothing more will happen on this connection.
    pub fn finished(&self) -> bool {
        self.closed || self.connect_failed.is_some()
    }
}

/// Runs the tasks of a test over a link.
pub struct Driver {
    pub link: Link,
    pub tasks: Vec<Task>,
    pub style: Style,
    rng: Rng,
    /// Strict mode (the default): any reset (other than a source's clean end), failed
    /// connect, dropped input or device-side anomaly fails the test at once.
    pub strict: bool,
    /// Close a connection as soon as its task is complete (or reset and drained).
    pub close_when_done: bool,
    /// Every engine event seen.
    pub events: Vec<EngineEvent>,
    device_events_seen: usize,
    /// The effective engine receive window (what `readable_len` may never exceed).
    pub receive_window: usize,
    pub rounds: u64,
    /// Idle rounds (nothing moved, no timer) tolerated before declaring a stall.
    pub stall_rounds: u32,
}

impl Driver {
    /// Opens one connection per spec (to `BASE_PORT + i`). `receive_window` is the
    /// engine config's value (rounded here the way the engine rounds it).
    pub fn new(link: Link, specs: &[Spec], style: Style, receive_window: u32) -> Driver {
        let tasks = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Task {
                spec: *s,
                port: BASE_PORT + i as u16,
                id: None,
                out: if s.kind == Kind::Source { Vec::new() } else { data(s.seed, s.len) },
                sent: 0,
                got: 0,
                connected: false,
                writable: false,
                readable: false,
                pause: 0,
                reset_event: None,
                error: None,
                connect_failed: None,
                complete: false,
                closed: false,
            })
            .collect();
        let receive_window = ((receive_window.clamp(256, 0xFFFF << 8) >> 8) << 8) as usize;
        let mut d = Driver {
            link,
            tasks,
            style,
            rng: Rng::new(style.seed),
            strict: true,
            close_when_done: true,
            events: Vec::new(),
            device_events_seen: 0,
            receive_window,
            rounds: 0,
            stall_rounds: 200,
        };
        let now = d.link.now();
        for t in &mut d.tasks {
            t.id = Some(d.link.engine.connect(t.port, now).expect("connect"));
        }
        d.link.pump();
        d
    }

    fn task_of(&mut self, id: ConnectionId) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.id == Some(id))
    }

    fn absorb_events(&mut self) {
        for e in self.link.take_engine_events() {
            self.events.push(e.clone());
            let strict = self.strict;
            match e {
                EngineEvent::Connected(id) => {
                    let t = self.task_of(id).expect("known connection");
                    t.connected = true;
                    t.writable = true;
                }
                EngineEvent::Readable(id) => {
                    if let Some(t) = self.task_of(id) {
                        t.readable = true;
                    }
                }
                EngineEvent::Writable(id) => {
                    if let Some(t) = self.task_of(id) {
                        t.writable = true;
                    }
                }
                EngineEvent::Reset(id, why) => {
                    let t = self.task_of(id).expect("known connection");
                    assert!(t.reset_event.is_none(), "second Reset for {id:?}");
                    if strict && !(t.spec.kind == Kind::Source && why == "reset by device") {
                        panic!("connection {id:?} ({:?}) reset: {why}", t.spec);
                    }
                    t.reset_event = Some(why);
                    t.readable = true;
                }
                EngineEvent::ConnectFailed(id, why) => {
                    assert!(!strict, "connect {id:?} failed: {why:?}");
                    let t = self.task_of(id).expect("known connection");
                    t.connect_failed = Some(why);
                }
                EngineEvent::InputDropped(e) => assert!(!strict, "engine dropped input: {e:?}"),
                EngineEvent::Ready { .. } | EngineEvent::DeviceMessage { .. } => {}
                other => assert!(!strict, "unexpected engine event {other:?}"),
            }
        }
    }

    fn check_device_events(&mut self) {
        let events = &self.link.device_events[self.device_events_seen..];
        self.device_events_seen = self.link.device_events.len();
        if !self.strict {
            return;
        }
        for e in events {
            match e {
                Event::Closed { cause: CloseCause::DeviceReset(reason), host_port, .. } => {
                    panic!("the device reset host port {host_port}: {reason}")
                }
                Event::Closed { cause: CloseCause::ServiceClosed, host_port, device_port, stats, .. } => {
                    let t = self.tasks.iter().find(|t| t.port == *device_port).expect("known port");
                    assert_eq!(t.spec.kind, Kind::Source, "port {host_port}: only sources end by themselves");
                    assert_eq!(stats.bytes_sent, t.spec.len as u64);
                }
                Event::Closed { cause: CloseCause::HostReset, .. }
                | Event::Version { .. }
                | Event::Setup { .. }
                | Event::Accepted { .. }
                | Event::Established { .. } => {}
                other => panic!("unexpected device event {other:?}"),
            }
        }
    }

    /// One round of the application on every connection, then a pump. Returns whether
    /// anything moved.
    pub fn round(&mut self) -> bool {
        self.rounds += 1;
        self.absorb_events();
        let mut progress = false;
        let style = self.style;
        let mut buf = Vec::new();
        for i in 0..self.tasks.len() {
            let t = &mut self.tasks[i];
            let Some(id) = t.id else { continue };
            if t.finished() {
                continue;
            }
            if t.pause > 0 {
                t.pause -= 1;
                continue;
            }
            if style.pause_percent > 0 && self.rng.percent(style.pause_percent) {
                t.pause = self.rng.upto(style.max_pause as usize) as u32;
                continue;
            }
            // Write.
            if t.connected && t.writable && t.sent < t.out.len() && t.error.is_none() {
                let n = self.rng.upto(style.max_write).min(t.out.len() - t.sent);
                match self.link.engine.send(id, &t.out[t.sent..t.sent + n]) {
                    Ok(k) => {
                        t.sent += k;
                        progress |= k > 0;
                        if k < n {
                            t.writable = false;
                        }
                    }
                    Err(e @ EngineError::Reset(_)) => {
                        assert!(!self.strict || t.spec.kind == Kind::Source, "send on {id:?}: {e}");
                        t.writable = false;
                    }
                    Err(e) => panic!("send on {id:?}: {e}"),
                }
            }
            // Read.
            if t.readable {
                for _ in 0..self.rng.upto(style.reads_per_round) {
                    let n = self.rng.upto(style.max_read);
                    buf.resize(n, 0);
                    match self.link.engine.recv(id, &mut buf) {
                        Ok(0) => {
                            t.readable = false;
                            break;
                        }
                        Ok(k) => {
                            assert!(t.expects_input(), "{:?} received {k} bytes", t.spec.kind);
                            let total = match t.spec.kind {
                                Kind::Echo { .. } => t.sent,
                                _ => t.spec.len,
                            };
                            assert!(t.got + k <= total, "{id:?} ({:?}): {} bytes too many", t.spec, t.got + k - total);
                            let expected = t.expected_in(t.got, k);
                            if buf[..k] != expected[..] {
                                let at = (0..k).find(|&j| buf[j] != expected[j]).unwrap();
                                panic!("{id:?} ({:?}): byte {} differs", t.spec, t.got + at);
                            }
                            t.got += k;
                            progress = true;
                        }
                        Err(e @ EngineError::Reset(_)) => {
                            t.readable = false;
                            t.error = Some(e);
                            break;
                        }
                        Err(e) => panic!("recv on {id:?}: {e}"),
                    }
                }
            }
            let readable = self.link.engine.readable_len(id);
            assert!(
                readable <= self.receive_window,
                "{id:?}: {readable} bytes buffered, more than the {}-byte receive window",
                self.receive_window
            );
        }
        self.update_completion();
        progress |= self.link.pump();
        self.check_device_events();
        progress
    }

    fn update_completion(&mut self) {
        for t in &mut self.tasks {
            let Some(id) = t.id else { continue };
            if t.finished() || t.complete {
                continue;
            }
            let len = t.spec.len;
            // A reset (other than a source's end) must be read to its error first.
            let unread_reset = t.reset_event.is_some() && t.spec.kind != Kind::Source;
            t.complete = t.connected
                && !unread_reset
                && match t.spec.kind {
                    Kind::Echo { .. } => t.sent == len && t.got == len,
                    Kind::Source => t.got == len && t.error.is_some(),
                    Kind::Sink | Kind::Record => {
                        t.sent == len && {
                            let dev = &self.link.device;
                            match dev.find_connection(id.0, t.port) {
                                None => false,
                                Some(c) if t.spec.kind == Kind::Sink => {
                                    let received = dev.service::<Sink>(c).expect("a sink").received();
                                    assert!(received <= len as u64, "the sink got {received} of {len} bytes");
                                    received == len as u64
                                }
                                Some(c) => {
                                    let r = dev.service::<Recorder>(c).expect("a recorder");
                                    assert!(r.bytes.len() <= len, "the recorder got {} of {len} bytes", r.bytes.len());
                                    assert!(
                                        t.out.starts_with(&r.bytes),
                                        "the recorder's bytes differ from what was sent"
                                    );
                                    r.bytes.len() == len
                                }
                            }
                        }
                    }
                };
            let drained_reset = t.error.is_some() && !t.readable;
            if self.close_when_done && (t.complete || drained_reset) {
                self.link.engine.close(id);
                t.closed = true;
            }
        }
    }

    /// Rounds until every task is finished. When nothing moves, virtual time jumps to the
    /// next timer of either side; with no timer either, `stall_rounds` idle rounds in a
    /// row fail the test with a description of every connection.
    pub fn run(&mut self) {
        assert!(self.run_until_stall(), "stalled after {} rounds:\n{}", self.rounds, self.describe());
        self.absorb_events();
        self.link.pump();
        self.check_device_events();
    }

    /// Like [`Driver::run`], but returns `false` instead of failing when the link stalls
    /// (nothing moves, no timer pending) before every task is finished.
    pub fn run_until_stall(&mut self) -> bool {
        let mut idle = 0;
        while !self.tasks.iter().all(Task::finished) {
            if self.round() || self.link.advance_to_next_timer() {
                idle = 0;
            } else {
                idle += 1;
                if idle >= self.stall_rounds {
                    return false;
                }
            }
        }
        true
    }

    /// After [`Driver::run`] in strict mode: everything arrived, and both sides have
    /// forgotten every connection.
    pub fn assert_all_complete(&self) {
        for t in &self.tasks {
            assert!(t.complete, "incomplete: {t:?}");
        }
        assert_eq!(self.link.engine.connection_count(), 0, "the engine still holds connections");
        assert_eq!(self.link.device.connections(), vec![], "the device still holds connections");
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        for t in &self.tasks {
            let (queued, readable) = match t.id {
                Some(id) => (self.link.engine.queued_len(id), self.link.engine.readable_len(id)),
                None => (0, 0),
            };
            let dev =
                t.id.and_then(|id| self.link.device.find_connection(id.0, t.port))
                    .and_then(|c| self.link.device.connection(c));
            let _ =
                writeln!(
                s,
                "  {:?} port {} len {}: sent {} got {} queued {queued} readable {readable} connected {} writable {} \
                 readable-flag {} reset {:?} error {:?} complete {} closed {}\n    device: {dev:?}",
                t.spec.kind, t.port, t.spec.len, t.sent, t.got, t.connected, t.writable, t.readable, t.reset_event,
                t.error, t.complete, t.closed
            );
        }
        let _ = writeln!(
            s,
            "  engine timeout {:?}, device timeout {:?}",
            self.link.engine.poll_timeout(),
            self.link.device.poll_timeout()
        );
        s
    }
}

/// A decoded TCP packet from a capture.
#[derive(Debug, Clone)]
pub struct WireTcp {
    pub to_device: bool,
    pub at: std::time::Instant,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u32,
    pub len: usize,
}

impl WireTcp {
    /// The host-side port of the connection.
    pub fn host_port(&self) -> u16 {
        if self.to_device {
            self.sport
        } else {
            self.dport
        }
    }
}

/// The TCP packets of a capture of whole packets (USB framing or an unfragmented
/// stream); `format` is the header format after the version exchange.
pub fn decode_tcp(captured: &[Captured], format: HeaderFormat) -> Vec<WireTcp> {
    let mut out = Vec::new();
    for c in captured {
        if c.bytes.get(..4) == Some(&[0, 0, 0, 0][..]) {
            continue; // VERSION
        }
        let (_, packet) = Packet::decode(&c.bytes, format).unwrap_or_else(|e| panic!("{e}: {:02x?}", &c.bytes[..16]));
        if let Packet::Tcp { header: h, payload } = packet {
            out.push(WireTcp {
                to_device: c.to_device,
                at: c.at,
                sport: h.source_port,
                dport: h.dest_port,
                seq: h.seq,
                ack: h.ack,
                flags: h.flags,
                window: h.window,
                len: payload.len(),
            });
        }
    }
    out
}

/// Replays a capture in order and checks that the host never sent a byte beyond the
/// right edge (ack + window) the device had advertised on that connection before.
/// Returns the largest host payload seen.
pub fn assert_host_within_window(packets: &[WireTcp]) -> usize {
    let mut edge: BTreeMap<u16, u32> = BTreeMap::new();
    let mut largest = 0;
    for p in packets {
        if !p.to_device {
            if p.flags & flags::RST == 0 {
                let e = edge.entry(p.host_port()).or_insert(0);
                *e = (*e).max(p.ack.wrapping_add(p.window));
            }
            continue;
        }
        if p.len == 0 {
            continue;
        }
        largest = largest.max(p.len);
        let e = edge.get(&p.host_port()).copied().unwrap_or(0);
        let end = p.seq.wrapping_add(p.len as u32);
        assert!(end <= e, "host port {}: sent up to {end}, past the device's right edge {e}: {p:?}", p.host_port());
    }
    largest
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
