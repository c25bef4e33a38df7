//! The 16-byte little-endian header that starts every message on the daemon socket.

use super::DecodeError;

/// Size of [`Header`] on the wire.
pub const HEADER_LEN: usize = 16;

/// Largest message (header included) this crate accepts from a peer.
///
/// The daemon itself rejects requests over 64 KiB; replies can be larger (a long
/// `DeviceList`, a pair record), so the client allows more, but a bounded amount,
/// so that a hostile length field cannot make us allocate without limit.
pub const MAX_MESSAGE_LEN: u32 = 4 * 1024 * 1024;

/// Header `version` field: binary protocol.
pub const VERSION_BINARY: u32 = 0;
/// Header `version` field: plist protocol.
pub const VERSION_PLIST: u32 = 1;

/// `enum usbmuxd_msgtype` values.
pub mod msgtype {
    pub const RESULT: u32 = 1;
    pub const CONNECT: u32 = 2;
    pub const LISTEN: u32 = 3;
    pub const DEVICE_ADD: u32 = 4;
    pub const DEVICE_REMOVE: u32 = 5;
    pub const DEVICE_PAIRED: u32 = 6;
    pub const PLIST: u32 = 8;
}

/// `enum usbmuxd_result` values (the daemon also reuses the field for errno values).
pub mod result {
    pub const OK: u32 = 0;
    pub const BADCOMMAND: u32 = 1;
    pub const BADDEV: u32 = 2;
    pub const CONNREFUSED: u32 = 3;
    pub const BADVERSION: u32 = 6;
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length, header included.
    pub length: u32,
    /// 0 = binary protocol, 1 = plist protocol.
    pub version: u32,
    /// One of [`msgtype`].
    pub message: u32,
    /// Request id, echoed by the daemon; 0 on unsolicited events.
    pub tag: u32,
}

impl Header {
    /// A header for a message carrying `payload_len` bytes after the header.
    pub fn new(version: u32, message: u32, tag: u32, payload_len: usize) -> Header {
        let length = u32::try_from(HEADER_LEN + payload_len).unwrap_or(u32::MAX);
        Header { length, version, message, tag }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.message.to_le_bytes());
        out[12..16].copy_from_slice(&self.tag.to_le_bytes());
        out
    }

    /// Decodes and validates a header: `length` must be at least 16 and at most `max_len`.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_len: u32) -> Result<Header, DecodeError> {
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header = Header { length: word(0), version: word(4), message: word(8), tag: word(12) };
        if (header.length as usize) < HEADER_LEN {
            return Err(DecodeError::LengthTooShort(header.length));
        }
        if header.length > max_len {
            return Err(DecodeError::LengthTooLarge(header.length));
        }
        Ok(header)
    }

    /// Number of payload bytes that follow the header.
    pub fn payload_len(&self) -> usize {
        self.length as usize - HEADER_LEN
    }
}

/// Builds a whole message: header followed by `payload`.
pub fn frame(version: u32, message: u32, tag: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&Header::new(version, message, tag, payload.len()).encode());
    out.extend_from_slice(payload);
    out
}

/// Reassembles messages from a byte stream that arrives in arbitrary pieces.
///
/// Pure: the caller feeds whatever it read and takes out complete messages.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_len: u32,
}

impl FrameDecoder {
    pub fn new(max_len: u32) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), max_len }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error for a
    /// header that can never be valid (the stream cannot be resynchronised after that).
    pub fn next_frame(&mut self) -> Result<Option<(Header, Vec<u8>)>, DecodeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&self.buf[..HEADER_LEN]);
        let header = Header::decode(&raw, self.max_len)?;
        if self.buf.len() < header.length as usize {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..header.length as usize].to_vec();
        self.buf.drain(..header.length as usize);
        Ok(Some((header, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = Header::new(VERSION_PLIST, msgtype::PLIST, 1, 411);
        let bytes = h.encode();
        assert_eq!(bytes, [0xab, 1, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Header::decode(&bytes, MAX_MESSAGE_LEN).unwrap(), h);
        assert_eq!(h.payload_len(), 411);
    }

    #[test]
    fn header_rejects_bad_lengths() {
        let mut bytes = Header::new(0, 1, 1, 0).encode();
        bytes[0] = 15;
        assert_eq!(Header::decode(&bytes, MAX_MESSAGE_LEN), Err(DecodeError::LengthTooShort(15)));
        let bytes = Header { length: u32::MAX, version: 0, message: 1, tag: 0 }.encode();
        assert_eq!(Header::decode(&bytes, MAX_MESSAGE_LEN), Err(DecodeError::LengthTooLarge(u32::MAX)));
    }

    #[test]
    fn decoder_reassembles_split_and_coalesced_frames() {
        let a = frame(0, msgtype::RESULT, 7, &3u32.to_le_bytes());
        let b = frame(0, msgtype::DEVICE_REMOVE, 0, &9u32.to_le_bytes());
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for split in 0..stream.len() {
            let mut d = FrameDecoder::new(MAX_MESSAGE_LEN);
            d.push(&stream[..split]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.push(&stream[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].0.tag, 7);
            assert_eq!(got[1].1, 9u32.to_le_bytes());
            assert_eq!(d.buffered(), 0);
        }
    }
}
