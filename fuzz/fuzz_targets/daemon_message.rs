//! The client ⇄ daemon protocol codecs (`src/proto/`) on arbitrary bytes.
//!
//! The input is a stream of daemon-socket bytes, as a seed corpus of real messages has
//! them: 16-byte little-endian headers, each followed by its payload.
//! * `FrameDecoder` fed that stream in chunks derived from the input (and with a
//!   maximum length derived from it): never panics, every frame it returns carries its
//!   own length, and the split does not change the frames.
//! * `decode_daemon_message` and `decode_request` on every frame, and on the whole input
//!   taken as one header + payload (with the header's message type as given, and forced
//!   to each known type so that every payload decoder sees every input): never panic.
//! * What `decode_request` accepts re-encodes (plist or binary) into a request that
//!   decodes to the same thing.
#![no_main]

mod rng;

use libfuzzer_sys::fuzz_target;
use rng::Rng;
use usbmuxd::proto::{
    decode_daemon_message, decode_device_list, decode_request, msgtype, xml_to_dict, ClientInfo, DaemonMessage,
    FrameDecoder, Header, Request, HEADER_LEN, MAX_MESSAGE_LEN, MAX_UDID_LEN,
};

const TYPES: [u32; 8] = [
    msgtype::RESULT,
    msgtype::CONNECT,
    msgtype::LISTEN,
    msgtype::DEVICE_ADD,
    msgtype::DEVICE_REMOVE,
    msgtype::DEVICE_PAIRED,
    msgtype::PLIST,
    7,
];

fuzz_target!(|data: &[u8]| {
    // The whole input as one message: header fields as given, length made consistent.
    if data.len() >= HEADER_LEN {
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&data[..HEADER_LEN]);
        let payload = &data[HEADER_LEN..];
        let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let _ = Header::decode(&raw, MAX_MESSAGE_LEN);
        let _ = Header::decode(&raw, word(0));
        let header = Header::new(word(4), word(8), word(12), payload.len());
        decode_both(&header, payload);
        for t in TYPES {
            decode_both(&Header { message: t, ..header }, payload);
        }
    }
    // And with no header at all: the payload decoders see the raw input.
    for t in TYPES {
        decode_both(&Header::new(1, t, 0, data.len()), data);
    }

    check_frames(data);
});

fn decode_both(header: &Header, payload: &[u8]) {
    if let Ok(DaemonMessage::Dictionary(d)) = decode_daemon_message(header, payload) {
        if let Some(Ok(devices)) = decode_device_list(&d) {
            for dev in devices {
                assert!(dev.udid.len() <= MAX_UDID_LEN, "udid of {} bytes", dev.udid.len());
            }
        }
    }
    if let Ok(DaemonMessage::DeviceAdd(dev)) = decode_daemon_message(header, payload) {
        assert!(!dev.udid.is_empty() || header.message == msgtype::DEVICE_ADD);
        assert!(dev.udid.len() <= MAX_UDID_LEN, "udid of {} bytes", dev.udid.len());
    }
    if let Ok(incoming) = decode_request(header, payload) {
        assert_eq!(incoming.header, *header);
        if let Some(request) = incoming.request {
            check_request_round_trip(&request, header.tag);
        }
    }
}

/// A request the daemon side accepted re-encodes into one it decodes identically.
fn check_request_round_trip(request: &Request, tag: u32) {
    let info = ClientInfo {
        bundle_id: Some("com.example.fuzz".into()),
        version_string: "libusbmuxd 2.1.1".into(),
        prog_name: Some("fuzz".into()),
    };
    let mut encodings = vec![request.encode_plist(&info, tag)];
    encodings.extend(request.encode_binary(tag));
    for bytes in encodings {
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&bytes[..HEADER_LEN]);
        let header = Header::decode(&raw, u32::MAX).expect("our own header decodes");
        assert_eq!(header.length as usize, bytes.len());
        let payload = &bytes[HEADER_LEN..];
        if header.message == msgtype::PLIST {
            // Strings that XML cannot carry (control characters) are the plist crate's
            // business, not this codec's: only round-trip what serialises to valid XML.
            if xml_to_dict(payload).is_err() {
                continue;
            }
        }
        let again =
            decode_request(&header, payload).unwrap_or_else(|e| panic!("re-encoded {request:?} does not decode: {e}"));
        assert_eq!(again.request.as_ref(), Some(request), "request round trip");
        assert_eq!(again.header.tag, tag);
    }
}

/// Frames until the decoder reports an error (after which a stream is unusable).
fn drain(d: &mut FrameDecoder, frames: &mut Vec<(Header, Vec<u8>)>, max_len: u32) -> bool {
    loop {
        match d.next_frame() {
            Ok(Some((header, payload))) => {
                assert_eq!(header.length as usize, HEADER_LEN + payload.len(), "frame length");
                assert!(header.length <= max_len);
                decode_both(&header, &payload);
                frames.push((header, payload));
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

fn check_frames(data: &[u8]) {
    let mut rng = Rng::new(data);
    let max_len = match rng.below(3) {
        0 => MAX_MESSAGE_LEN,
        1 => HEADER_LEN as u32 + rng.below(300) as u32,
        _ => 64 * 1024,
    };

    let mut whole = FrameDecoder::new(max_len);
    whole.push(data);
    let mut reference = Vec::new();
    let whole_err = drain(&mut whole, &mut reference, max_len);

    let mut d = FrameDecoder::new(max_len);
    let mut frames = Vec::new();
    let mut err = false;
    let mut rest = data;
    while !rest.is_empty() && !err {
        let limit = if rng.below(2) == 0 { 20 } else { 600 };
        let n = (1 + rng.below(limit)).min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        err = drain(&mut d, &mut frames, max_len);
    }
    assert_eq!(err, whole_err, "error depends on the split");
    assert_eq!(frames, reference, "frames depend on the split");
    if !err {
        assert_eq!(d.buffered(), whole.buffered());
    }
}
