//! A hand-driven host for the device tests: builds host packets with the codec, feeds
//! them to a `SimDevice` the way a USB driver would (one transfer each, ZLP when the
//! length is a multiple of 512) and decodes what comes back.

#![allow(dead_code)]

use std::time::{Duration, Instant};
use usbmux_sim::{Event, SimDevice};
use usbmuxd::usbmux::codec::{flags, needs_zlp, HeaderFormat, MuxHeader, Packet, Reassembler, TcpHeader, VersionBody};

pub const WINDOW: u32 = 131072;

pub fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

/// A decoded device packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub counters: Option<(u16, u16)>,
    pub packet: Packet,
}

impl Got {
    pub fn tcp(&self) -> (&TcpHeader, &[u8]) {
        match &self.packet {
            Packet::Tcp { header, payload } => (header, payload),
            other => panic!("expected TCP, got {other:?}"),
        }
    }
}

pub struct Host {
    pub format: HeaderFormat,
    pub tx: u16,
    pub rx: u16,
    pub now: Instant,
    /// Send ZLPs after transfers that are a multiple of 512 bytes.
    pub zlp: bool,
    pub stream: Option<Reassembler>,
}

impl Host {
    pub fn new() -> Host {
        Host { format: HeaderFormat::Short, tx: 0, rx: 0xFFFF, now: Instant::now(), zlp: true, stream: None }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub fn encode(&mut self, p: &Packet) -> Vec<u8> {
        match self.format {
            HeaderFormat::Short => p.encode(None),
            HeaderFormat::Long => {
                let bytes = p.encode(Some((self.tx, self.rx)));
                self.tx = self.tx.wrapping_add(1);
                bytes
            }
        }
    }

    /// One bulk OUT transfer (+ ZLP when needed).
    pub fn send_raw(&mut self, dev: &mut SimDevice, bytes: &[u8]) {
        dev.handle_input(bytes, self.now).unwrap();
        if self.zlp && needs_zlp(bytes.len(), 512) {
            dev.handle_input(&[], self.now).unwrap();
        }
    }

    pub fn send(&mut self, dev: &mut SimDevice, p: &Packet) {
        let bytes = self.encode(p);
        self.send_raw(dev, &bytes);
    }

    pub fn send_tcp(&mut self, dev: &mut SimDevice, header: TcpHeader, payload: &[u8]) {
        self.send(dev, &Packet::Tcp { header, payload: payload.to_vec() });
    }

    /// Decodes one device packet, copying its rx_seq like the daemon does.
    pub fn decode(&mut self, bytes: &[u8]) -> Got {
        let is_version = bytes[..4] == [0, 0, 0, 0];
        let format = if is_version { HeaderFormat::Short } else { self.format };
        let (h, packet) = Packet::decode(bytes, format).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"));
        if let Some((_, rx)) = h.counters {
            self.rx = rx;
        }
        Got { counters: h.counters, packet }
    }

    /// Everything the device has to send now.
    pub fn recv(&mut self, dev: &mut SimDevice) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(bytes) = dev.poll_transmit() {
            let packets = match &mut self.stream {
                Some(r) => r.push(&bytes).unwrap(),
                None => {
                    assert_eq!(MuxHeader::peek_length(&bytes), Some(bytes.len() as u32), "one packet per transfer");
                    assert!(bytes.len() <= 65536);
                    vec![bytes]
                }
            };
            for p in packets {
                out.push(self.decode(&p));
            }
        }
        out
    }

    pub fn recv_one(&mut self, dev: &mut SimDevice) -> Got {
        let mut got = self.recv(dev);
        assert_eq!(got.len(), 1, "expected exactly one packet, got {got:?}");
        got.pop().unwrap()
    }

    /// VERSION 2.0 + SETUP, checking the reply.
    pub fn start_v2(&mut self, dev: &mut SimDevice) {
        self.send(dev, &Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
        let got = self.recv_one(dev);
        assert_eq!(got.packet, Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
        self.format = HeaderFormat::Long;
        self.tx = 0;
        self.rx = 0xFFFF;
        self.send(dev, &Packet::Setup(vec![7]));
        assert!(self.recv(dev).is_empty(), "no reply to SETUP");
    }

    /// Opens a connection like a correct host; returns it.
    pub fn connect(&mut self, dev: &mut SimDevice, sport: u16, dport: u16) -> Conn {
        self.send_tcp(dev, tcp(sport, dport, 0, 0, flags::SYN, WINDOW), &[]);
        let got = self.recv_one(dev);
        let (h, _) = got.tcp();
        assert_eq!((h.flags, h.seq, h.ack), (flags::SYN | flags::ACK, 0, 1), "SYN|ACK");
        let mut c = Conn {
            sport,
            dport,
            seq: 1,
            ack: 1,
            window: WINDOW,
            device_ack: h.ack,
            device_window: h.window,
            received: Vec::new(),
            taken: 0,
            reset: None,
            packets: Vec::new(),
        };
        self.send_tcp(dev, c.header(flags::ACK), &[]);
        c.absorb(self.recv(dev));
        c
    }
}

pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u32) -> TcpHeader {
    TcpHeader { source_port: sport, dest_port: dport, seq, ack, flags, window }
}

/// A correct host's view of one connection: it acknowledges everything it received
/// (as if its consumer read at once) unless told otherwise.
#[derive(Debug)]
pub struct Conn {
    pub sport: u16,
    pub dport: u16,
    /// Next host seq.
    pub seq: u32,
    /// Host's ack (= 1 + device bytes consumed).
    pub ack: u32,
    pub window: u32,
    pub device_ack: u32,
    pub device_window: u32,
    pub received: Vec<u8>,
    /// Bytes taken out of `received` by `take`.
    pub taken: u32,
    /// The device's RST payload, once reset.
    pub reset: Option<Vec<u8>>,
    /// Every TCP header received on this connection.
    pub packets: Vec<(TcpHeader, usize)>,
}

impl Conn {
    pub fn header(&self, flags: u8) -> TcpHeader {
        tcp(self.sport, self.dport, self.seq, self.ack, flags, self.window)
    }

    /// Takes the device's packets for this connection into account (data is received
    /// but not acknowledged: call `consume`).
    pub fn absorb(&mut self, got: Vec<Got>) {
        for g in got {
            let (h, payload) = g.tcp();
            assert_eq!((h.source_port, h.dest_port), (self.dport, self.sport), "packet for another connection");
            assert!(self.reset.is_none(), "packet after RST");
            self.packets.push((*h, payload.len()));
            self.device_ack = h.ack;
            self.device_window = h.window;
            if h.flags & flags::RST != 0 {
                self.reset = Some(payload.to_vec());
                continue;
            }
            assert_eq!(h.flags, flags::ACK);
            assert_eq!(h.seq, 1 + self.taken + self.received.len() as u32, "device seq");
            self.received.extend_from_slice(payload);
        }
    }

    /// Bytes the device's window lets the host send now.
    pub fn room(&self) -> usize {
        (self.device_ack + self.device_window).saturating_sub(self.seq) as usize
    }

    /// Marks everything received as consumed (the next packet acknowledges it).
    pub fn consume(&mut self) {
        self.ack = 1 + self.taken + self.received.len() as u32;
    }

    /// Consumes and returns what was received so far.
    pub fn take(&mut self) -> Vec<u8> {
        self.consume();
        self.taken += self.received.len() as u32;
        std::mem::take(&mut self.received)
    }

    /// Sends one data packet (no window check: the caller decides).
    pub fn send_data(&mut self, host: &mut Host, dev: &mut SimDevice, data: &[u8]) {
        let h = self.header(flags::ACK);
        host.send_tcp(dev, h, data);
        self.seq += data.len() as u32;
        let got = host.recv(dev);
        self.absorb(got);
    }

    /// A pure ACK with the current ack value.
    pub fn send_ack(&mut self, host: &mut Host, dev: &mut SimDevice) {
        let h = self.header(flags::ACK);
        host.send_tcp(dev, h, &[]);
        let got = host.recv(dev);
        self.absorb(got);
    }

    /// Like a correct host: sends `data` within the device's window, consuming and
    /// acknowledging whatever comes back, until all is sent and the device is quiet.
    pub fn exchange(&mut self, host: &mut Host, dev: &mut SimDevice, data: &[u8]) {
        let mut off = 0;
        let mut idle = 0;
        while idle < 3 {
            let n = self.room().min(data.len() - off).min(49116);
            let before = (self.received.len(), self.device_ack);
            if n > 0 {
                self.send_data(host, dev, &data[off..off + n]);
                off += n;
            }
            self.consume();
            self.send_ack(host, dev);
            if self.reset.is_some() {
                return;
            }
            if n == 0 && before == (self.received.len(), self.device_ack) {
                idle += 1;
            } else {
                idle = 0;
            }
        }
        assert_eq!(off, data.len(), "host could not send everything");
    }
}

/// All events queued.
pub fn events(dev: &mut SimDevice) -> Vec<Event> {
    std::iter::from_fn(|| dev.poll_event()).collect()
}
