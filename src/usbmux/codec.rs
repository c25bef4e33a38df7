//! The usbmux wire format between host and device (`usb-mux-protocol.md` §2–§4): mux
//! headers, the VERSION / CONTROL / SETUP / TCP protocols, reassembly of packets from
//! bulk reads, and the zero-length-packet rule. Pure: bytes in, values out.
//!
//! Everything on this side of the protocol is big-endian.

use std::fmt;

/// Short (version 0/1) mux header length.
pub const SHORT_HEADER_LEN: usize = 8;
/// Long (version 2) mux header length.
pub const LONG_HEADER_LEN: usize = 16;
/// Magic of the long header.
pub const MAGIC: u32 = 0xFEED_FACE;
/// Pseudo-TCP header length (no options).
pub const TCP_HEADER_LEN: usize = 20;
/// Largest packet the host sends (3 × 16 KiB).
pub const MAX_OUT_PACKET: usize = 49152;
/// Largest packet the host accepts (its reassembly buffer).
pub const MAX_IN_PACKET: usize = 65536;
/// Size of each bulk IN read.
pub const USB_READ_SIZE: usize = 16384;
/// Largest TCP payload per packet: 49152 − 16 − 20.
pub const MAX_TCP_PAYLOAD: usize = MAX_OUT_PACKET - LONG_HEADER_LEN - TCP_HEADER_LEN;
/// The window field counts units of 256 bytes.
pub const WINDOW_SHIFT: u32 = 8;

/// Pseudo-TCP flags.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Mux protocol numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Version,
    Control,
    Setup,
    Tcp,
}

impl Protocol {
    pub fn number(self) -> u32 {
        match self {
            Protocol::Version => 0,
            Protocol::Control => 1,
            Protocol::Setup => 2,
            Protocol::Tcp => 6,
        }
    }

    pub fn from_number(n: u32) -> Option<Protocol> {
        match n {
            0 => Some(Protocol::Version),
            1 => Some(Protocol::Control),
            2 => Some(Protocol::Setup),
            6 => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

/// Which header a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// 8 bytes: protocol, length. Used for the VERSION exchange and with v1 devices.
    Short,
    /// 16 bytes: adds magic and the two packet counters. Used after SETUP with v2 devices.
    Long,
}

impl HeaderFormat {
    /// Bytes of this header.
    pub fn header_len(self) -> usize {
        match self {
            HeaderFormat::Short => SHORT_HEADER_LEN,
            HeaderFormat::Long => LONG_HEADER_LEN,
        }
    }
}

/// A decoded mux header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxHeader {
    pub protocol: Protocol,
    /// Total packet length, header included.
    pub length: u32,
    /// `(tx_seq, rx_seq)` of a long header; `None` for a short one.
    pub counters: Option<(u16, u16)>,
}

/// The 12-byte VERSION body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionBody {
    pub major: u32,
    pub minor: u32,
    pub padding: u32,
}

/// The 20-byte pseudo-TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub source_port: u16,
    pub dest_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Window in bytes (the field holds `window >> 8`).
    pub window: u32,
}

/// A whole mux packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Version(VersionBody),
    /// CONTROL (device → host): a type byte and text.
    Control {
        kind: u8,
        text: Vec<u8>,
    },
    /// SETUP (host → device): one byte, 0x07.
    Setup(Vec<u8>),
    Tcp {
        header: TcpHeader,
        payload: Vec<u8>,
    },
}

/// Why bytes do not form a valid mux packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than a header needs.
    Short { len: usize, need: usize },
    /// The header's length field disagrees with the bytes that make up the packet.
    LengthMismatch { field: u32, actual: usize },
    /// A length above the receive limit.
    TooLarge(usize),
    /// A long header without `0xFEEDFACE`.
    BadMagic(u32),
    /// A protocol number this side does not know.
    UnknownProtocol(u32),
    /// A TCP header whose data offset is not 5 words.
    BadTcpOffset(u8),
    /// A VERSION or CONTROL body of the wrong size.
    BadBody(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Short { len, need } => write!(f, "packet of {len} bytes, need at least {need}"),
            CodecError::LengthMismatch { field, actual } => {
                write!(f, "length field {field} but {actual} bytes received")
            }
            CodecError::TooLarge(n) => write!(f, "packet of {n} bytes exceeds {MAX_IN_PACKET}"),
            CodecError::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            CodecError::UnknownProtocol(p) => write!(f, "unknown mux protocol {p}"),
            CodecError::BadTcpOffset(o) => write!(f, "TCP data offset byte {o:#04x} (expected 0x50)"),
            CodecError::BadBody(what) => write!(f, "malformed {what} body"),
        }
    }
}

impl std::error::Error for CodecError {}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl MuxHeader {
    /// Reads the length field (offset 4 in both formats) of a packet's first bytes.
    pub fn peek_length(bytes: &[u8]) -> Option<u32> {
        bytes.get(4..8).map(be32)
    }

    /// Decodes a header in the given format.
    pub fn decode(bytes: &[u8], format: HeaderFormat) -> Result<MuxHeader, CodecError> {
        if bytes.len() < format.header_len() {
            return Err(CodecError::Short { len: bytes.len(), need: format.header_len() });
        }
        let number = be32(&bytes[0..4]);
        let protocol = Protocol::from_number(number).ok_or(CodecError::UnknownProtocol(number))?;
        let length = be32(&bytes[4..8]);
        let counters = match format {
            HeaderFormat::Short => None,
            HeaderFormat::Long => {
                let magic = be32(&bytes[8..12]);
                if magic != MAGIC {
                    return Err(CodecError::BadMagic(magic));
                }
                Some((be16(&bytes[12..14]), be16(&bytes[14..16])))
            }
        };
        Ok(MuxHeader { protocol, length, counters })
    }

    /// Appends the encoded header to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.protocol.number().to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        if let Some((tx, rx)) = self.counters {
            out.extend_from_slice(&MAGIC.to_be_bytes());
            out.extend_from_slice(&tx.to_be_bytes());
            out.extend_from_slice(&rx.to_be_bytes());
        }
    }
}

impl TcpHeader {
    pub fn decode(b: &[u8]) -> Result<TcpHeader, CodecError> {
        if b.len() < TCP_HEADER_LEN {
            return Err(CodecError::Short { len: b.len(), need: TCP_HEADER_LEN });
        }
        if b[12] >> 4 != 5 {
            return Err(CodecError::BadTcpOffset(b[12]));
        }
        Ok(TcpHeader {
            source_port: be16(&b[0..2]),
            dest_port: be16(&b[2..4]),
            seq: be32(&b[4..8]),
            ack: be32(&b[8..12]),
            flags: b[13],
            window: (be16(&b[14..16]) as u32) << WINDOW_SHIFT,
        })
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.source_port.to_be_bytes());
        out.extend_from_slice(&self.dest_port.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.push(0x50);
        out.push(self.flags);
        let field = (self.window >> WINDOW_SHIFT).min(u16::MAX as u32) as u16;
        out.extend_from_slice(&field.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
}

impl Packet {
    pub fn protocol(&self) -> Protocol {
        match self {
            Packet::Version(_) => Protocol::Version,
            Packet::Control { .. } => Protocol::Control,
            Packet::Setup(_) => Protocol::Setup,
            Packet::Tcp { .. } => Protocol::Tcp,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Packet::Version(_) => 12,
            Packet::Control { text, .. } => 1 + text.len(),
            Packet::Setup(p) => p.len(),
            Packet::Tcp { payload, .. } => TCP_HEADER_LEN + payload.len(),
        }
    }

    /// Encodes the packet; `counters` is `Some((tx_seq, rx_seq))` for a long header.
    pub fn encode(&self, counters: Option<(u16, u16)>) -> Vec<u8> {
        let header_len = if counters.is_some() { LONG_HEADER_LEN } else { SHORT_HEADER_LEN };
        let total = header_len + self.body_len();
        let mut out = Vec::with_capacity(total);
        MuxHeader { protocol: self.protocol(), length: total as u32, counters }.encode_into(&mut out);
        match self {
            Packet::Version(v) => {
                out.extend_from_slice(&v.major.to_be_bytes());
                out.extend_from_slice(&v.minor.to_be_bytes());
                out.extend_from_slice(&v.padding.to_be_bytes());
            }
            Packet::Control { kind, text } => {
                out.push(*kind);
                out.extend_from_slice(text);
            }
            Packet::Setup(p) => out.extend_from_slice(p),
            Packet::Tcp { header, payload } => {
                header.encode_into(&mut out);
                out.extend_from_slice(payload);
            }
        }
        out
    }

    /// Decodes one complete packet. The header's length field must equal `bytes.len()`.
    pub fn decode(bytes: &[u8], format: HeaderFormat) -> Result<(MuxHeader, Packet), CodecError> {
        if bytes.len() > MAX_IN_PACKET {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let header = MuxHeader::decode(bytes, format)?;
        if header.length as usize != bytes.len() {
            return Err(CodecError::LengthMismatch { field: header.length, actual: bytes.len() });
        }
        let body = &bytes[format.header_len()..];
        let packet = match header.protocol {
            Protocol::Version => {
                if body.len() < 12 {
                    return Err(CodecError::BadBody("VERSION"));
                }
                Packet::Version(VersionBody {
                    major: be32(&body[0..4]),
                    minor: be32(&body[4..8]),
                    padding: be32(&body[8..12]),
                })
            }
            Protocol::Control => match body.split_first() {
                Some((&kind, text)) => Packet::Control { kind, text: text.to_vec() },
                None => return Err(CodecError::BadBody("CONTROL")),
            },
            Protocol::Setup => Packet::Setup(body.to_vec()),
            Protocol::Tcp => {
                let header = TcpHeader::decode(body)?;
                Packet::Tcp { header, payload: body[TCP_HEADER_LEN..].to_vec() }
            }
        };
        Ok((header, packet))
    }
}

/// Whether a bulk OUT transfer of `len` bytes must be followed by a zero-length one:
/// a transfer that is an exact multiple of the endpoint's packet size is not terminated
/// by a short packet, and the device would run it into the next one.
pub fn needs_zlp(len: usize, max_packet_size: usize) -> bool {
    let mps = if max_packet_size == 0 { 64 } else { max_packet_size };
    len > 0 && len % mps == 0
}

/// Reassembles mux packets from received chunks.
///
/// Two framings exist. Over USB ([`Reassembler::usb`]) a packet starts at the beginning
/// of a bulk transfer and ends with a transfer shorter than the read size (short-packet
/// termination): a short transfer that leaves a packet incomplete means bytes were lost,
/// and is an error. Over a byte stream ([`Reassembler::stream`], e.g. a socket to a
/// simulated device) only the length fields delimit packets, and chunks may split or
/// join packets anywhere. Both accept several packets in one chunk.
#[derive(Debug)]
pub struct Reassembler {
    pending: Vec<u8>,
    /// `Some(read size)` for USB framing.
    usb_read_size: Option<usize>,
}

impl Reassembler {
    /// USB framing with bulk reads of `read_size` bytes.
    pub fn usb(read_size: usize) -> Reassembler {
        Reassembler { pending: Vec::new(), usb_read_size: Some(read_size.max(1)) }
    }

    /// Byte-stream framing.
    pub fn stream() -> Reassembler {
        Reassembler { pending: Vec::new(), usb_read_size: None }
    }

    /// Bytes of an incomplete packet held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one received chunk. Returns the packets it completes or an error for bytes
    /// that can never form a packet; after an error the pending data is dropped and the
    /// next chunk starts afresh.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
        let mut out = Vec::new();
        self.feed(chunk, |p| out.push(p.to_vec()))?;
        Ok(out)
    }

    /// Like [`push`](Self::push), but hands each complete packet to `on_packet` as a slice,
    /// without copying packets that arrive whole inside one chunk (the hot path).
    pub fn feed(&mut self, chunk: &[u8], mut on_packet: impl FnMut(&[u8])) -> Result<(), CodecError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let short_transfer = self.usb_read_size.is_some_and(|size| chunk.len() < size);
        let mut rest = chunk;
        if !self.pending.is_empty() {
            // Complete the pending packet first (copying only what it needs).
            loop {
                let have = self.pending.len();
                let Some(field) = MuxHeader::peek_length(&self.pending) else {
                    let take = (8 - have).min(rest.len());
                    self.pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.pending.len() < 8 {
                        return self.incomplete(short_transfer);
                    }
                    continue;
                };
                let field = Self::check_length(field).inspect_err(|_| self.pending.clear())?;
                let take = (field - have).min(rest.len());
                self.pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.pending.len() < field {
                    return self.incomplete(short_transfer);
                }
                on_packet(&self.pending);
                self.pending.clear();
                break;
            }
        }
        while !rest.is_empty() {
            let Some(field) = MuxHeader::peek_length(rest) else { break };
            let field = Self::check_length(field)?;
            if rest.len() < field {
                break;
            }
            on_packet(&rest[..field]);
            rest = &rest[field..];
        }
        if !rest.is_empty() {
            self.pending.extend_from_slice(rest);
            return self.incomplete(short_transfer);
        }
        Ok(())
    }

    fn check_length(field: u32) -> Result<usize, CodecError> {
        let field = field as usize;
        if field < SHORT_HEADER_LEN {
            return Err(CodecError::Short { len: field, need: SHORT_HEADER_LEN });
        }
        if field > MAX_IN_PACKET {
            return Err(CodecError::TooLarge(field));
        }
        Ok(field)
    }

    /// A packet is still incomplete at the end of a chunk: fine on a stream; over USB a
    /// short transfer means nothing more of it will come.
    fn incomplete(&mut self, short_transfer: bool) -> Result<(), CodecError> {
        if !short_transfer {
            return Ok(());
        }
        let actual = self.pending.len();
        let field = MuxHeader::peek_length(&self.pending);
        self.pending.clear();
        Err(match field {
            Some(field) => CodecError::LengthMismatch { field, actual },
            None => CodecError::Short { len: actual, need: SHORT_HEADER_LEN },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    #[test]
    fn version_and_setup_match_the_spec_bytes() {
        let v = Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None);
        assert_eq!(v, hex("00 00 00 00 00 00 00 14 00 00 00 02 00 00 00 00 00 00 00 00"));
        let setup = Packet::Setup(vec![7]).encode(Some((0, 0xffff)));
        assert_eq!(setup, hex("00 00 00 02 00 00 00 11 fe ed fa ce 00 00 ff ff 07"));
        let (h, p) = Packet::decode(&setup, HeaderFormat::Long).unwrap();
        assert_eq!(h.counters, Some((0, 0xffff)));
        assert_eq!(p, Packet::Setup(vec![7]));
    }

    #[test]
    fn syn_matches_the_spec_bytes_in_both_formats() {
        let syn = Packet::Tcp {
            header: TcpHeader { source_port: 1, dest_port: 62078, seq: 0, ack: 0, flags: flags::SYN, window: 131072 },
            payload: vec![],
        };
        assert_eq!(
            syn.encode(Some((1, 0xffff))),
            hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 01 ff ff 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 02 00 00 00 00 00")
        );
        assert_eq!(
            syn.encode(None),
            hex("00 00 00 06 00 00 00 1c 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 02 00 00 00 00 00")
        );
    }

    #[test]
    fn device_data_packet_decodes() {
        let bytes = hex(
            "00 00 00 06 00 00 00 28 fe ed fa ce 00 01 00 03 f2 7e 00 01 00 00 00 01 00 00 00 05 50 10 02 00 00 00 00 00 00 00 01 29",
        );
        let (h, p) = Packet::decode(&bytes, HeaderFormat::Long).unwrap();
        assert_eq!(h.counters, Some((1, 3)));
        let Packet::Tcp { header, payload } = p else { panic!() };
        assert_eq!((header.source_port, header.dest_port, header.seq, header.ack), (62078, 1, 1, 5));
        assert_eq!((header.flags, header.window), (flags::ACK, 131072));
        assert_eq!(payload, [0, 0, 1, 0x29]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        let good = Packet::Setup(vec![7]).encode(Some((0, 0)));
        assert!(matches!(Packet::decode(&good[..10], HeaderFormat::Long), Err(CodecError::Short { .. })));
        let mut bad_magic = good.clone();
        bad_magic[8] = 0;
        assert!(matches!(Packet::decode(&bad_magic, HeaderFormat::Long), Err(CodecError::BadMagic(_))));
        let mut bad_len = good.clone();
        bad_len[7] = 99;
        assert!(matches!(Packet::decode(&bad_len, HeaderFormat::Long), Err(CodecError::LengthMismatch { .. })));
        let mut bad_proto = good.clone();
        bad_proto[3] = 9;
        assert!(matches!(Packet::decode(&bad_proto, HeaderFormat::Long), Err(CodecError::UnknownProtocol(9))));
        let tcp = Packet::Tcp {
            header: TcpHeader { source_port: 1, dest_port: 2, seq: 0, ack: 0, flags: flags::ACK, window: 0 },
            payload: vec![1],
        };
        let mut bad_offset = tcp.encode(None);
        bad_offset[8 + 12] = 0x60;
        assert!(matches!(Packet::decode(&bad_offset, HeaderFormat::Short), Err(CodecError::BadTcpOffset(0x60))));
        let control = Packet::Control { kind: 7, text: vec![] }.encode(None);
        assert!(Packet::decode(&control[..8], HeaderFormat::Short).is_err());
    }

    #[test]
    fn zlp_rule() {
        assert!(needs_zlp(512, 512));
        assert!(needs_zlp(MAX_OUT_PACKET, 1024));
        assert!(!needs_zlp(36, 512));
        assert!(!needs_zlp(0, 512));
        assert!(needs_zlp(128, 0), "unknown packet size counts as 64");
    }

    #[test]
    fn reassembly_of_large_packets_from_16k_reads() {
        let payload: Vec<u8> = (0..MAX_TCP_PAYLOAD).map(|i| i as u8).collect();
        let tcp = Packet::Tcp {
            header: TcpHeader { source_port: 1, dest_port: 2, seq: 1, ack: 1, flags: flags::ACK, window: 0 },
            payload,
        };
        let bytes = tcp.encode(Some((1, 2)));
        assert_eq!(bytes.len(), MAX_OUT_PACKET);
        let mut r = Reassembler::usb(USB_READ_SIZE);
        let mut got = Vec::new();
        for chunk in bytes.chunks(USB_READ_SIZE) {
            got.extend(r.push(chunk).unwrap());
        }
        // 49152 = 3 × 16384: the length field completes it without a short read.
        assert_eq!(got, vec![bytes.clone()]);
        assert_eq!(r.pending(), 0);
        // Several small packets in one transfer also come out.
        let small = Packet::Setup(vec![7]).encode(Some((0, 0)));
        let two: Vec<u8> = small.iter().chain(small.iter()).copied().collect();
        assert_eq!(r.push(&two).unwrap(), vec![small.clone(), small.clone()]);
        // A short read that leaves a packet incomplete is an error, and recovery follows.
        assert!(r.push(&bytes[..100]).is_err());
        assert_eq!(r.push(&small).unwrap(), vec![small]);
        // Lengths beyond the limit are refused.
        let mut huge = bytes[..16].to_vec();
        huge[4..8].copy_from_slice(&(MAX_IN_PACKET as u32 + 1).to_be_bytes());
        assert!(matches!(r.push(&huge), Err(CodecError::TooLarge(_))));
    }

    #[test]
    fn stream_reassembly_accepts_any_split() {
        let a = Packet::Setup(vec![7]).encode(Some((0, 0)));
        let b = Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None);
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for split in 0..=stream.len() {
            let mut r = Reassembler::stream();
            let mut got = r.push(&stream[..split]).unwrap();
            got.extend(r.push(&stream[split..]).unwrap());
            assert_eq!(got, vec![a.clone(), b.clone()], "split at {split}");
        }
    }
}
