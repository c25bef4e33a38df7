//! The usbmux wire codec (`src/usbmux/codec.rs`) on arbitrary bytes.
//!
//! * `Packet::decode` in both header formats; whatever decodes must re-encode to bytes
//!   that decode to the same packet (and re-encoding those gives the same bytes again).
//! * `MuxHeader::decode` / `TcpHeader::decode` (at every header offset): the same round
//!   trip, byte-exact for the fields the encoders write.
//! * `Reassembler::stream()` and `Reassembler::usb(n)` fed the input in chunks whose
//!   sizes are derived from the input: never panics, every packet it yields carries its
//!   own length in its length field, and splitting the stream differently never changes
//!   which packets come out (stream framing; USB framing with full-size transfers).
//!
//! The input is the packet/stream itself, so the seed corpus is simply real packets.
#![no_main]

mod rng;

use libfuzzer_sys::fuzz_target;
use rng::Rng;
use usbmuxd::usbmux::codec::{
    HeaderFormat, MuxHeader, Packet, Reassembler, TcpHeader, LONG_HEADER_LEN, MAX_IN_PACKET, SHORT_HEADER_LEN,
    TCP_HEADER_LEN,
};

const FORMATS: [HeaderFormat; 2] = [HeaderFormat::Short, HeaderFormat::Long];

fuzz_target!(|data: &[u8]| {
    for format in FORMATS {
        check_packet(data, format);
        check_mux_header(data, format);
        if let Some(body) = data.get(format.header_len()..) {
            check_tcp_header(body);
        }
    }
    check_tcp_header(data);
    check_reassembly(data);
});

fn check_packet(data: &[u8], format: HeaderFormat) {
    let Ok((header, packet)) = Packet::decode(data, format) else { return };
    assert_eq!(header.length as usize, data.len(), "decoded length field differs from the input length");
    assert_eq!(header.protocol, packet.protocol());
    assert_eq!(header.counters.is_some(), format == HeaderFormat::Long);

    let encoded = packet.encode(header.counters);
    let (header2, packet2) =
        Packet::decode(&encoded, format).unwrap_or_else(|e| panic!("re-encoded {packet:?} does not decode: {e}"));
    assert_eq!(packet2, packet, "packet round trip");
    assert_eq!(header2.counters, header.counters, "counters round trip");
    assert_eq!(header2.length as usize, encoded.len());
    assert_eq!(packet2.encode(header2.counters), encoded, "encoding is not stable");

    // Only a VERSION body may be longer than what the encoder writes (bytes after the 12
    // it reads are ignored); every other packet re-encodes to the same length, and
    // to the same bytes apart from the TCP fields the decoder ignores.
    match &packet {
        Packet::Version(_) => assert_eq!(encoded.len(), format.header_len() + 12),
        Packet::Tcp { .. } => {
            assert_eq!(encoded.len(), data.len());
            let t = format.header_len();
            assert_eq!(encoded[..t + 12], data[..t + 12]);
            assert_eq!(encoded[t + 12] >> 4, data[t + 12] >> 4);
            assert_eq!(encoded[t + 13..t + 16], data[t + 13..t + 16]);
            assert_eq!(encoded[t + TCP_HEADER_LEN..], data[t + TCP_HEADER_LEN..]);
        }
        _ => assert_eq!(encoded, data, "non-TCP packet did not re-encode byte for byte"),
    }
}

fn check_mux_header(data: &[u8], format: HeaderFormat) {
    if let Some(len) = MuxHeader::peek_length(data) {
        assert_eq!(len.to_be_bytes(), data[4..8]);
    }
    let Ok(header) = MuxHeader::decode(data, format) else { return };
    let mut out = Vec::new();
    header.encode_into(&mut out);
    assert_eq!(out.len(), format.header_len());
    assert_eq!(out, data[..format.header_len()], "mux header is not re-encoded byte for byte");
    assert_eq!(MuxHeader::decode(&out, format).expect("re-encoded header decodes"), header);
    // A long header's first 8 bytes are also a valid short header with the same fields.
    if format == HeaderFormat::Long {
        let short = MuxHeader::decode(&data[..SHORT_HEADER_LEN], HeaderFormat::Short).expect("short prefix");
        assert_eq!((short.protocol, short.length, short.counters), (header.protocol, header.length, None));
    }
}

fn check_tcp_header(data: &[u8]) {
    let Ok(tcp) = TcpHeader::decode(data) else { return };
    assert_eq!(tcp.window & 0xff, 0, "window is in units of 256");
    let mut out = Vec::new();
    tcp.encode_into(&mut out);
    assert_eq!(out.len(), TCP_HEADER_LEN);
    assert_eq!(out[..12], data[..12]);
    assert_eq!(out[12], 0x50);
    assert_eq!(out[13..16], data[13..16]);
    assert_eq!(TcpHeader::decode(&out).expect("re-encoded TCP header decodes"), tcp);
}

#[derive(Debug, Default, PartialEq)]
struct Outcome {
    packets: Vec<Vec<u8>>,
    /// Index (in `packets`) at which the first error was reported.
    first_error: Option<usize>,
}

fn feed_all(r: &mut Reassembler, chunks: &[&[u8]]) -> Outcome {
    let mut out = Outcome::default();
    for chunk in chunks {
        let before = r.pending();
        let result = r.feed(chunk, |p| {
            assert!(p.len() >= SHORT_HEADER_LEN && p.len() <= MAX_IN_PACKET, "packet of {} bytes", p.len());
            assert_eq!(MuxHeader::peek_length(p), Some(p.len() as u32), "packet length field disagrees");
            out.packets.push(p.to_vec());
        });
        assert!(r.pending() < MAX_IN_PACKET, "pending {} bytes (before: {before})", r.pending());
        match result {
            Ok(()) => {}
            Err(_) => {
                assert_eq!(r.pending(), 0, "pending data kept after an error");
                out.first_error.get_or_insert(out.packets.len());
            }
        }
    }
    // `push` (the copying variant) must not panic on the same input either.
    out
}

/// Cuts `data` into chunks: `size(rng)` gives each chunk's length.
fn split<'a>(data: &'a [u8], rng: &mut Rng, mut size: impl FnMut(&mut Rng) -> usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = size(rng).clamp(1, rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    chunks
}

/// The packets of a stream before its first error, with an error flag.
fn until_error(o: &Outcome) -> (&[Vec<u8>], bool) {
    match o.first_error {
        Some(i) => (&o.packets[..i], true),
        None => (&o.packets[..], false),
    }
}

fn check_reassembly(data: &[u8]) {
    let mut rng = Rng::new(data);

    // Stream framing: all at once is the reference.
    let mut whole = Reassembler::stream();
    let reference = feed_all(&mut whole, &[data]);
    let whole_pending = whole.pending();
    for packet in &reference.packets {
        for format in FORMATS {
            check_packet(packet, format);
        }
    }

    // Random splits (some tiny, some large), and byte by byte for small inputs.
    let mut splittings = vec![
        split(data, &mut rng, |r| 1 + r.below(24)),
        split(data, &mut rng, |r| 1 + r.below(4096)),
        split(data, &mut rng, |r| if r.below(2) == 0 { 1 + r.below(8) } else { 1 + r.below(200) }),
    ];
    if data.len() <= 512 {
        splittings.push(data.chunks(1).collect());
    }
    for chunks in &splittings {
        let mut r = Reassembler::stream();
        let got = feed_all(&mut r, chunks);
        assert_eq!(until_error(&got), until_error(&reference), "stream split {:?}", lens(chunks));
        if reference.first_error.is_none() {
            assert_eq!(r.pending(), whole_pending);
        }
    }

    // USB framing with full-size transfers (the last one possibly short) behaves as the
    // stream, except that a short final transfer leaving a packet incomplete is an error.
    let read_sizes = [1 + rng.below(64), 1 + rng.below(1024), SHORT_HEADER_LEN, LONG_HEADER_LEN, 512, 16384];
    for size in read_sizes {
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        let mut r = Reassembler::usb(size);
        let got = feed_all(&mut r, &chunks);
        let (packets, err) = until_error(&got);
        let (ref_packets, ref_err) = until_error(&reference);
        assert_eq!(packets, ref_packets, "usb({size}) transfers");
        let short_last = chunks.last().is_some_and(|c| c.len() < size);
        let expect_err = ref_err || (short_last && whole_pending > 0);
        assert_eq!(err, expect_err, "usb({size}): error {err}, expected {expect_err}");
        if !err {
            assert_eq!(r.pending(), whole_pending);
        }
    }

    // USB framing with arbitrary transfer sizes: only "no panic, sane packets".
    let size = 1 + rng.below(100);
    let chunks = split(data, &mut rng, |r| if r.below(3) == 0 { 1 + r.below(size) } else { size });
    let mut r = Reassembler::usb(size);
    feed_all(&mut r, &chunks);
    // And the copying `push` API on the same transfers.
    let mut r = Reassembler::usb(size);
    for chunk in &chunks {
        if let Ok(packets) = r.push(chunk) {
            for p in packets {
                assert_eq!(MuxHeader::peek_length(&p), Some(p.len() as u32));
            }
        }
    }
}

fn lens(chunks: &[&[u8]]) -> Vec<usize> {
    chunks.iter().map(|c| c.len()).collect()
}
