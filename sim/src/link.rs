//! An in-memory link between a host-side [`Engine`] and a [`SimDevice`]: the two
//! sans-IO state machines wired together the way a USB bus (or a socket) would carry
//! their bytes, with a virtual clock. For tests and benchmarks of host code, and as an
//! example of a driver.
//!
//! USB framing moves each packet as one bulk OUT transfer followed, when its length is a
//! multiple of the endpoint's packet size, by a zero-length transfer; device packets
//! arrive as bulk IN reads of at most 16 KiB. Stream framing can cut the byte stream in
//! each direction at random (seeded) places.

use crate::config::Framing;
use crate::{DeviceConfig, Event, SimDevice};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use usbmuxd::usbmux::codec::{needs_zlp, USB_READ_SIZE};
use usbmuxd::usbmux::{Engine, EngineConfig, EngineEvent};

/// What a [`Link`] has carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Transfers (or stream chunks) host → device, zero-length ones included.
    pub to_device_transfers: u64,
    /// Bytes host → device.
    pub to_device_bytes: u64,
    /// Zero-length transfers sent after host packets.
    pub zero_length_packets: u64,
    /// Reads (or stream chunks) device → host.
    pub to_host_transfers: u64,
    /// Bytes device → host.
    pub to_host_bytes: u64,
}

/// One packet (or device output fragment) carried by a [`Link`], recorded while
/// [`Link::capture`] is on: what went over the wire, in the order the two sides
/// produced it, for tests that check the traffic itself (packet sizes, windows, timing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// `true`: host → device; `false`: device → host.
    pub to_device: bool,
    /// The link's virtual time when it was produced.
    pub at: Instant,
    /// From the engine: one whole mux packet (one `poll_transmit`, before any stream
    /// cutting, without the zero-length packet). From the device: one
    /// `SimDevice::poll_transmit` result, i.e. one whole mux packet unless the device
    /// fragments its output ([`crate::Misbehaviour::fragment_output`]).
    pub bytes: Vec<u8>,
}

/// An engine and a simulated device joined by an in-memory bus.
pub struct Link {
    /// The host side.
    pub engine: Engine,
    /// The device side.
    pub device: SimDevice,
    framing: Framing,
    /// Largest chunk a stream cut may produce (`None`: no cutting).
    fragment: Option<usize>,
    rng: u64,
    now: Instant,
    buf: Vec<u8>,
    /// Stream bytes cut off and not yet delivered, per direction.
    to_device_rest: VecDeque<u8>,
    to_host_rest: VecDeque<u8>,
    /// Events from the engine, kept for the test to look at.
    pub engine_events: Vec<EngineEvent>,
    /// Events from the device, kept for the test to look at.
    pub device_events: Vec<Event>,
    /// What the link has carried.
    pub stats: LinkStats,
    /// The traffic recorded since [`Link::capture`] was turned on.
    captured: Option<Vec<Captured>>,
}

impl Link {
    /// Joins a new engine and device and runs the version handshake. The engine's framing
    /// follows the device's.
    pub fn new(mut engine_config: EngineConfig, device_config: DeviceConfig) -> Link {
        let framing = device_config.framing;
        engine_config.usb_read_size = match framing {
            Framing::Usb { .. } => Some(USB_READ_SIZE),
            Framing::Stream => None,
        };
        let mut engine = Engine::new(engine_config);
        engine.start();
        let mut link = Link {
            engine,
            device: SimDevice::new(device_config),
            framing,
            fragment: None,
            rng: 0x9e37_79b9_7f4a_7c15,
            now: Instant::now(),
            buf: Vec::with_capacity(64 * 1024),
            to_device_rest: VecDeque::new(),
            to_host_rest: VecDeque::new(),
            engine_events: Vec::new(),
            device_events: Vec::new(),
            stats: LinkStats::default(),
            captured: None,
        };
        link.pump();
        link
    }

    /// With stream framing, cut the bytes in both directions into chunks of 1..=`max`
    /// bytes at places chosen by `seed`.
    pub fn fragment(&mut self, max: usize, seed: u64) {
        self.fragment = Some(max.max(1));
        self.rng = seed | 1;
    }

    /// Starts (`true`) or stops recording the traffic ([`Captured`]). Starting discards
    /// whatever was recorded before. Packets are recorded as they are produced, before
    /// they are delivered, so each one was produced knowing at most the other side's
    /// packets recorded before it: a test can replay the record in order to check, for
    /// example, that the host never sent past a window the device had advertised.
    pub fn capture(&mut self, on: bool) {
        self.captured = on.then(Vec::new);
    }

    /// Takes the traffic recorded so far (empty if [`Link::capture`] is off); recording
    /// goes on.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        self.captured.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The link's virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Advances virtual time by `d` and lets both sides handle their timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.engine.handle_timeout(self.now);
        self.device.handle_timeout(self.now);
        self.pump();
    }

    /// Moves to the earliest pending deadline of either side, if any. `false` if none.
    pub fn advance_to_next_timer(&mut self) -> bool {
        let next = [self.engine.poll_timeout(), self.device.poll_timeout()].into_iter().flatten().min();
        match next {
            Some(t) => {
                self.advance(t.saturating_duration_since(self.now));
                true
            }
            None => false,
        }
    }

    fn next_cut(&mut self, max: usize) -> usize {
        // xorshift64*: deterministic, good enough to place cuts.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % max as u64) as usize + 1
    }

    /// Carries everything both sides have to send until neither has more. Returns
    /// whether anything moved.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        loop {
            let mut progress = false;
            while self.engine.poll_transmit(&mut self.buf) {
                progress = true;
                if let Some(c) = &mut self.captured {
                    c.push(Captured { to_device: true, at: self.now, bytes: self.buf.clone() });
                }
                self.carry_to_device();
            }
            if self.flush_stream_to_device() {
                progress = true;
            }
            while let Some(packet) = self.device.poll_transmit() {
                progress = true;
                if let Some(c) = &mut self.captured {
                    c.push(Captured { to_device: false, at: self.now, bytes: packet.clone() });
                }
                self.carry_to_host(packet);
            }
            if self.flush_stream_to_host() {
                progress = true;
            }
            while let Some(e) = self.engine.poll_event() {
                self.engine_events.push(e);
            }
            while let Some(e) = self.device.poll_event() {
                self.device_events.push(e);
            }
            if !progress {
                return moved;
            }
            moved = true;
        }
    }

    fn carry_to_device(&mut self) {
        match self.framing {
            Framing::Usb { max_packet_size } => {
                self.stats.to_device_transfers += 1;
                self.stats.to_device_bytes += self.buf.len() as u64;
                let _ = self.device.handle_input(&self.buf, self.now);
                if needs_zlp(self.buf.len(), max_packet_size) {
                    self.stats.zero_length_packets += 1;
                    self.stats.to_device_transfers += 1;
                    let _ = self.device.handle_input(&[], self.now);
                }
            }
            Framing::Stream => self.to_device_rest.extend(&self.buf),
        }
    }

    fn carry_to_host(&mut self, packet: Vec<u8>) {
        match self.framing {
            Framing::Usb { .. } => {
                for read in packet.chunks(USB_READ_SIZE) {
                    self.stats.to_host_transfers += 1;
                    self.stats.to_host_bytes += read.len() as u64;
                    self.engine.handle_input(read, self.now);
                }
            }
            Framing::Stream => self.to_host_rest.extend(&packet),
        }
    }

    fn take_chunk(&mut self, to_device: bool) -> Option<Vec<u8>> {
        let len = if to_device { self.to_device_rest.len() } else { self.to_host_rest.len() };
        if len == 0 {
            return None;
        }
        let n = match self.fragment {
            Some(max) => self.next_cut(max).min(len),
            None => len,
        };
        let rest = if to_device { &mut self.to_device_rest } else { &mut self.to_host_rest };
        Some(rest.drain(..n).collect())
    }

    fn flush_stream_to_device(&mut self) -> bool {
        let mut any = false;
        while let Some(chunk) = self.take_chunk(true) {
            any = true;
            self.stats.to_device_transfers += 1;
            self.stats.to_device_bytes += chunk.len() as u64;
            let _ = self.device.handle_input(&chunk, self.now);
        }
        any
    }

    fn flush_stream_to_host(&mut self) -> bool {
        let mut any = false;
        while let Some(chunk) = self.take_chunk(false) {
            any = true;
            self.stats.to_host_transfers += 1;
            self.stats.to_host_bytes += chunk.len() as u64;
            self.engine.handle_input(&chunk, self.now);
        }
        any
    }

    /// Takes the engine events gathered so far.
    pub fn take_engine_events(&mut self) -> Vec<EngineEvent> {
        std::mem::take(&mut self.engine_events)
    }
}
