//! The request log: every message a client sent, decoded, for assertions.

use plist::{Dictionary, Value};
use usbmuxd::proto::{msgtype, Header, Request};

/// One received request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// Connection number (1, 2, … over the daemon's lifetime, restarts included).
    pub client: u64,
    pub header: Header,
    /// The decoded request; `None` for messages the codec does not model (unknown types,
    /// `ListListeners`, pair-record requests missing keys, undecodable payloads).
    pub request: Option<Request>,
    /// The whole plist dictionary of a plist request (client identification included).
    pub dict: Option<Dictionary>,
    /// Why the payload could not be decoded, if it could not.
    pub error: Option<String>,
    /// The message bytes, header included.
    pub raw: Vec<u8>,
}

impl LoggedRequest {
    /// Header version (0 binary, 1 plist).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn tag(&self) -> u32 {
        self.header.tag
    }

    /// A plist string value.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.dict.as_ref()?.get(key)?.as_string()
    }

    /// A plist integer value.
    pub fn integer(&self, key: &str) -> Option<u64> {
        self.dict.as_ref()?.get(key)?.as_unsigned_integer()
    }

    /// The plist `MessageType`, or for binary messages `LISTEN`, `CONNECT`, or the number.
    pub fn message_type(&self) -> String {
        if let Some(t) = self.string("MessageType") {
            return t.to_string();
        }
        match self.header.message {
            msgtype::LISTEN => "LISTEN".into(),
            msgtype::CONNECT => "CONNECT".into(),
            msgtype::PLIST => "PLIST?".into(),
            n => format!("MESSAGE_{n}"),
        }
    }

    /// For a `Connect` (binary or plist): the device id and the port in host order (the
    /// plist `PortNumber` already un-swapped). Plain integers, so that tests inside the
    /// `usbmuxd` crate itself need not name this crate's copy of its types.
    pub fn connect_target(&self) -> Option<(u32, u16)> {
        match self.request {
            Some(Request::Connect { device_id, port }) => Some((device_id, port)),
            _ => None,
        }
    }

    /// Whether the message was a plist (`MESSAGE_PLIST`) request.
    pub fn is_plist(&self) -> bool {
        self.header.message == msgtype::PLIST
    }

    pub fn prog_name(&self) -> Option<&str> {
        self.string("ProgName")
    }

    /// One line: `client=… version=… tag=… type=…` followed by the interesting fields
    /// (client identification, DeviceID/PortNumber/port, PairRecordID, decode error).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "client={} version={} tag={} type={}",
            self.client,
            self.header.version,
            self.header.tag,
            self.message_type()
        );
        if let Some(d) = &self.dict {
            for key in [
                "ProgName",
                "ClientVersionString",
                "BundleID",
                "kLibUSBMuxVersion",
                "DeviceID",
                "PortNumber",
                "PairRecordID",
            ] {
                match d.get(key) {
                    Some(Value::String(v)) => s.push_str(&format!(" {key}={v:?}")),
                    Some(Value::Integer(v)) => s.push_str(&format!(" {key}={v}")),
                    Some(_) => s.push_str(&format!(" {key}=?")),
                    None => {}
                }
            }
            if let Some(Value::Data(data)) = d.get("PairRecordData") {
                s.push_str(&format!(" PairRecordData=<{} bytes>", data.len()));
            }
        }
        if let Some(Request::Connect { device_id, port }) = &self.request {
            s.push_str(&format!(" device={device_id} port={port}"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" error={e:?}"));
        }
        s
    }
}
