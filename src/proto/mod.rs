//! Pure codecs for the client ⇄ daemon protocol (`usbmuxd-client-protocol.md`).
//!
//! Nothing here performs I/O: bytes in, values out, and back. The daemon client
//! (`crate::client`), the event listener and the test daemon all build on these.

mod device;
mod header;
mod message;

pub use device::{normalize_udid, ConnectionType, DeviceRecord, BINARY_RECORD_LEN, CONN_DATA_LEN, MAX_UDID_LEN};
pub use header::{
    frame, msgtype, result, FrameDecoder, Header, HEADER_LEN, MAX_MESSAGE_LEN, VERSION_BINARY, VERSION_PLIST,
};
pub use message::{
    attached_dict, decode_daemon_message, decode_device_list, decode_request, device_event_dict,
    encode_binary_device_add, encode_binary_device_event, encode_plist_message, encode_result, plist_to_xml,
    xml_to_dict, ClientInfo, DaemonMessage, IncomingRequest, Request, LIBUSBMUX_VERSION,
};

use std::fmt;

/// Why bytes from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Header `length` below 16.
    LengthTooShort(u32),
    /// Header `length` above the accepted maximum.
    LengthTooLarge(u32),
    /// A payload shorter than its message type needs.
    Truncated { expected: usize, got: usize },
    /// Not an XML plist.
    InvalidPlist(String),
    /// A plist whose root is not a dictionary.
    NotADictionary,
    /// A plist `MessageType` this side does not know.
    UnknownMessageType(String),
    /// A device record that cannot be used.
    BadDeviceRecord(&'static str),
    /// A request the daemon must ignore.
    BadRequest(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::LengthTooShort(n) => write!(f, "message length {n} is shorter than the header"),
            DecodeError::LengthTooLarge(n) => write!(f, "message length {n} is too large"),
            DecodeError::Truncated { expected, got } => write!(f, "payload of {got} bytes, expected {expected}"),
            DecodeError::InvalidPlist(e) => write!(f, "invalid plist: {e}"),
            DecodeError::NotADictionary => write!(f, "plist root is not a dictionary"),
            DecodeError::UnknownMessageType(t) => write!(f, "unknown MessageType {t:?}"),
            DecodeError::BadDeviceRecord(why) => write!(f, "unusable device record: {why}"),
            DecodeError::BadRequest(why) => write!(f, "bad request: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}
