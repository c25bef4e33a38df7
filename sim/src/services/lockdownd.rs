//! A minimal lockdownd, enough for `ideviceinfo -s`, `idevice_id UDID` and for clients
//! that query a device without pairing. This is the canonical implementation: the
//! fake daemon `usbmuxd-testd` serves it over its sockets too.
//!
//! Framing, as the real lockdownd on port 62078: each message is a 4-byte big-endian
//! length followed by a plist (requests may be XML or binary; replies are XML).
//! Requests and replies:
//! * `{Request: QueryType}` → `{Request: QueryType, Type: "com.apple.mobile.lockdown"}`
//! * `{Request: GetValue}` → `{Request: GetValue, Result: Success, Value: <dict of all values>}`;
//!   with `Key` → that value (`Key` echoed); with `Domain` the values of that domain
//!   (none are modelled: a domain without `Key` gives an empty dictionary, a key in a
//!   domain gives `MissingValue`). Unknown key → `{Request: GetValue, Error: MissingValue}`.
//! * `{Request: Goodbye}` → `{Request: Goodbye, Result: Success}`, then the connection closes.
//! * anything else → `{Request: <it>, Error: "UnsupportedRequest"}` (no `Request` key:
//!   `Error: "MissingRequest"`).
//!
//! A `Label` sent with a request is echoed in the reply.
//!
//! The pure functions ([`default_values`], [`answer`], [`encode_message`]) are the whole
//! protocol; [`Lockdownd`] wraps them in a [`Service`] that does the framing.

use super::{Service, ServiceStatus};
use plist::{Dictionary, Value};
use std::collections::VecDeque;
use std::io::Cursor;

/// lockdownd's well-known port.
pub const LOCKDOWND_PORT: u16 = 62078;

/// What `QueryType` reports.
pub const LOCKDOWN_TYPE: &str = "com.apple.mobile.lockdown";

/// Largest request accepted; a longer length prefix aborts the connection.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Plausible values of an iPhone for `GetValue`, with `udid` as `UniqueDeviceID` (and the
/// serial number and chip id derived from it). Add or replace entries for a custom device.
pub fn default_values(udid: &str) -> Dictionary {
    let compact: String = udid.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let tail = &compact[compact.len().saturating_sub(9)..];
    // Modern UDIDs (`00008030-001A2B3C4D5E6F70`) end in the ECID, in hex.
    let chip_id = match compact.len() {
        24 => u64::from_str_radix(&compact[8..], 16).unwrap_or(0),
        _ => 0,
    };
    let mut d = Dictionary::new();
    let mut put = |k: &str, v: Value| {
        d.insert(k.to_string(), v);
    };
    put("ActivationState", "Activated".into());
    put("BluetoothAddress", "a4:d1:8c:00:00:01".into());
    put("BuildVersion", "19H370".into());
    put("CPUArchitecture", "arm64e".into());
    put("DeviceClass", "iPhone".into());
    put("DeviceColor", "1".into());
    put("DeviceName", "Test iPhone".into());
    put("HardwareModel", "N104AP".into());
    put("HardwarePlatform", "t8030".into());
    put("HostAttached", true.into());
    put("PasswordProtected", false.into());
    put("ProductName", "iPhone OS".into());
    put("ProductType", "iPhone12,1".into());
    put("ProductVersion", "15.8".into());
    put("ProtocolVersion", "2".into());
    put("SerialNumber", format!("F2L{}", tail.to_ascii_uppercase()).into());
    put("TimeZone", "Europe/Berlin".into());
    put("UniqueChipID", Value::Integer(chip_id.into()));
    put("UniqueDeviceID", udid.into());
    put("WiFiAddress", "a4:d1:8c:00:00:02".into());
    d
}

/// The reply to one request given the device's `values`, and whether to close afterwards.
pub fn answer(request: &Dictionary, values: &Dictionary) -> (Dictionary, bool) {
    let mut reply = Dictionary::new();
    let mut close = false;
    let kind = request.get("Request").and_then(Value::as_string);
    if let Some(k) = kind {
        reply.insert("Request".into(), k.into());
    }
    let key = request.get("Key").and_then(Value::as_string);
    let domain = request.get("Domain").and_then(Value::as_string);
    match kind {
        Some("QueryType") => {
            reply.insert("Type".into(), LOCKDOWN_TYPE.into());
        }
        Some("GetValue") => {
            if let Some(d) = domain {
                reply.insert("Domain".into(), d.into());
            }
            if let Some(k) = key {
                reply.insert("Key".into(), k.into());
            }
            let value = match (domain, key) {
                (None, None) => Some(Value::Dictionary(values.clone())),
                (None, Some(k)) => values.get(k).cloned(),
                (Some(_), None) => Some(Value::Dictionary(Dictionary::new())),
                (Some(_), Some(_)) => None,
            };
            match value {
                Some(v) => {
                    reply.insert("Result".into(), "Success".into());
                    reply.insert("Value".into(), v);
                }
                None => {
                    reply.insert("Error".into(), "MissingValue".into());
                }
            }
        }
        Some("Goodbye") => {
            reply.insert("Result".into(), "Success".into());
            close = true;
        }
        Some(_) => {
            reply.insert("Error".into(), "UnsupportedRequest".into());
        }
        None => {
            reply.insert("Error".into(), "MissingRequest".into());
        }
    }
    if let Some(label) = request.get("Label") {
        reply.insert("Label".into(), label.clone());
    }
    (reply, close)
}

/// Encodes a message: big-endian length, then the XML plist.
pub fn encode_message(dict: &Dictionary) -> Vec<u8> {
    let xml = usbmuxd::proto::plist_to_xml(dict);
    let mut out = (xml.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&xml);
    out
}

/// lockdownd as a [`Service`]: reassembles length-prefixed requests from whatever chunks
/// arrive, answers each with [`answer`], and keeps a log of the requests.
///
/// Ends cleanly ([`ServiceStatus::Close`]) after answering `Goodbye` (later input is
/// ignored); aborts with a reason text on a length prefix above [`MAX_MESSAGE`] or a
/// request that is not a plist dictionary.
#[derive(Debug, Clone)]
pub struct Lockdownd {
    values: Dictionary,
    input: Vec<u8>,
    output: VecDeque<u8>,
    requests: Vec<Dictionary>,
    status: ServiceStatus,
}

impl Lockdownd {
    /// A lockdownd reporting `values` (see [`default_values`]).
    pub fn new(values: Dictionary) -> Lockdownd {
        Lockdownd {
            values,
            input: Vec::new(),
            output: VecDeque::new(),
            requests: Vec::new(),
            status: ServiceStatus::Open,
        }
    }

    /// A lockdownd reporting [`default_values`] for `udid`.
    pub fn for_udid(udid: &str) -> Lockdownd {
        Lockdownd::new(default_values(udid))
    }

    /// The values `GetValue` reports.
    pub fn values(&self) -> &Dictionary {
        &self.values
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> &[Dictionary] {
        &self.requests
    }

    /// Bytes of an incomplete request held.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    fn abort(&mut self, reason: String) {
        self.output.clear();
        self.input.clear();
        self.status = ServiceStatus::Abort(reason);
    }
}

impl Service for Lockdownd {
    fn on_data(&mut self, data: &[u8]) {
        if self.status != ServiceStatus::Open {
            return;
        }
        self.input.extend_from_slice(data);
        while self.input.len() >= 4 {
            let len = u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]) as usize;
            if len > MAX_MESSAGE {
                return self.abort(format!("lockdownd: message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"));
            }
            if self.input.len() < 4 + len {
                return;
            }
            let request = match Value::from_reader(Cursor::new(&self.input[4..4 + len])) {
                Ok(Value::Dictionary(d)) => d,
                _ => return self.abort("lockdownd: request is not a plist dictionary".to_string()),
            };
            self.input.drain(..4 + len);
            let (reply, close) = answer(&request, &self.values);
            self.requests.push(request);
            self.output.extend(encode_message(&reply));
            if close {
                self.input.clear();
                self.status = ServiceStatus::Close;
                return;
            }
        }
    }

    fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    fn poll_output(&mut self, buf: &mut Vec<u8>, max: usize) {
        let n = max.min(self.output.len());
        buf.extend(self.output.drain(..n));
    }

    fn status(&self) -> ServiceStatus {
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDID: &str = "00008030-001A2B3C4D5E6F70";

    fn req(pairs: &[(&str, &str)]) -> Dictionary {
        pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect()
    }

    #[test]
    fn answers() {
        let mut values = default_values(UDID);
        values.insert("DeviceName".into(), "Bob".into());
        assert_eq!(values.get("UniqueChipID").unwrap().as_unsigned_integer(), Some(0x001A2B3C4D5E6F70));
        assert_eq!(values.get("SerialNumber").unwrap().as_string(), Some("F2LC4D5E6F70"));
        assert_eq!(values.get("DeviceName").unwrap().as_string(), Some("Bob"));

        let (r, close) = answer(&req(&[("Label", "t"), ("Request", "QueryType")]), &values);
        assert_eq!(r.get("Type").unwrap().as_string(), Some(LOCKDOWN_TYPE));
        assert_eq!(r.get("Label").unwrap().as_string(), Some("t"));
        assert!(!close);

        let (r, _) = answer(&req(&[("Request", "GetValue")]), &values);
        let all = r.get("Value").unwrap().as_dictionary().unwrap();
        assert_eq!(all.get("UniqueDeviceID").unwrap().as_string(), Some(UDID));

        let (r, _) = answer(&req(&[("Request", "GetValue"), ("Key", "ProductVersion")]), &values);
        assert_eq!(r.get("Value").unwrap().as_string(), Some("15.8"));
        assert_eq!(r.get("Key").unwrap().as_string(), Some("ProductVersion"));
        let (r, _) = answer(&req(&[("Request", "GetValue"), ("Key", "Nope")]), &values);
        assert_eq!(r.get("Error").unwrap().as_string(), Some("MissingValue"));
        assert!(r.get("Value").is_none());
        let (r, _) = answer(&req(&[("Request", "GetValue"), ("Domain", "com.apple.disk_usage")]), &values);
        assert!(r.get("Value").unwrap().as_dictionary().unwrap().is_empty());
        let (r, _) = answer(&req(&[("Request", "GetValue"), ("Domain", "d"), ("Key", "k")]), &values);
        assert_eq!(r.get("Error").unwrap().as_string(), Some("MissingValue"));

        let (r, close) = answer(&req(&[("Request", "Goodbye")]), &values);
        assert_eq!(r.get("Result").unwrap().as_string(), Some("Success"));
        assert!(close);
        let (r, _) = answer(&req(&[("Request", "StartSession")]), &values);
        assert_eq!(r.get("Error").unwrap().as_string(), Some("UnsupportedRequest"));
        let (r, _) = answer(&Dictionary::new(), &values);
        assert_eq!(r.get("Error").unwrap().as_string(), Some("MissingRequest"));
    }

    fn take_reply(l: &mut Lockdownd) -> Dictionary {
        let mut out = Vec::new();
        l.poll_output(&mut out, usize::MAX);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 4 + len, "exactly one reply");
        Value::from_reader_xml(&out[4..]).unwrap().into_dictionary().unwrap()
    }

    #[test]
    fn service_reassembles_requests_from_any_split() {
        let q = encode_message(&req(&[("Request", "QueryType")]));
        let g = encode_message(&req(&[("Request", "GetValue"), ("Key", "ProductType")]));
        let both: Vec<u8> = q.iter().chain(g.iter()).copied().collect();
        for split in [1, 3, 4, 5, q.len() - 1, q.len(), q.len() + 2, both.len() - 1] {
            let mut l = Lockdownd::for_udid(UDID);
            l.on_data(&both[..split]);
            l.on_data(&both[split..]);
            assert_eq!(l.requests().len(), 2, "split at {split}");
            let mut out = Vec::new();
            l.poll_output(&mut out, usize::MAX);
            let first_len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            let first = Value::from_reader_xml(&out[4..4 + first_len]).unwrap().into_dictionary().unwrap();
            assert_eq!(first.get("Type").unwrap().as_string(), Some(LOCKDOWN_TYPE));
            let second = Value::from_reader_xml(&out[8 + first_len..]).unwrap().into_dictionary().unwrap();
            assert_eq!(second.get("Value").unwrap().as_string(), Some("iPhone12,1"));
            assert_eq!(l.status(), ServiceStatus::Open);
        }
    }

    #[test]
    fn binary_requests_goodbye_and_garbage() {
        let mut l = Lockdownd::for_udid(UDID);
        let mut bin = Vec::new();
        Value::Dictionary(req(&[("Request", "QueryType"), ("Label", "x")])).to_writer_binary(&mut bin).unwrap();
        let mut msg = (bin.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&bin);
        l.on_data(&msg);
        let r = take_reply(&mut l);
        assert_eq!(r.get("Label").unwrap().as_string(), Some("x"));

        l.on_data(&encode_message(&req(&[("Request", "Goodbye")])));
        assert_eq!(take_reply(&mut l).get("Result").unwrap().as_string(), Some("Success"));
        assert_eq!(l.status(), ServiceStatus::Close);
        l.on_data(&encode_message(&req(&[("Request", "QueryType")])));
        assert!(!l.has_output(), "input after Goodbye is ignored");
        assert_eq!(l.requests().len(), 2);

        let mut l = Lockdownd::for_udid(UDID);
        l.on_data(&[0, 0, 0, 3, b'a', b'b', b'c']);
        assert!(matches!(l.status(), ServiceStatus::Abort(ref t) if t.contains("not a plist")));
        let mut l = Lockdownd::for_udid(UDID);
        l.on_data(&[0xff, 0, 0, 0]);
        assert!(matches!(l.status(), ServiceStatus::Abort(ref t) if t.contains("exceeds")));
    }
}
