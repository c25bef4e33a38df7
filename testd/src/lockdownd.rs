//! A minimal lockdownd, enough for `ideviceinfo -s` and for clients that query a device
//! without pairing.
//!
//! Framing: each message is a 4-byte big-endian length followed by a plist (requests may
//! be XML or binary; replies are XML). Requests and replies:
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

use crate::config::TestDevice;
use crate::net::Stream;
use crate::services::Counters;
use plist::{Dictionary, Value};
use std::io::{self, Cursor, Read, Write};

/// Largest request accepted; a longer length prefix closes the connection.
const MAX_MESSAGE: usize = 1 << 20;

/// The values `GetValue` reports for `device`: plausible iPhone values, the device's
/// UDID as `UniqueDeviceID`, then the device's `lockdown_values` overrides.
pub fn device_values(device: &TestDevice) -> Dictionary {
    let compact: String = device
        .udid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
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
    put(
        "SerialNumber",
        format!("F2L{}", tail.to_ascii_uppercase()).into(),
    );
    put("TimeZone", "Europe/Berlin".into());
    put("UniqueChipID", Value::Integer(chip_id.into()));
    put("UniqueDeviceID", device.udid.clone().into());
    put("WiFiAddress", "a4:d1:8c:00:00:02".into());
    for (k, v) in &device.lockdown_values {
        d.insert(k.clone(), v.clone());
    }
    d
}

/// The reply to one request, and whether to close afterwards.
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
            reply.insert("Type".into(), "com.apple.mobile.lockdown".into());
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

/// Reads one length-prefixed message; `None` at a clean EOF.
fn read_message(stream: &mut Stream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "lockdownd message too large",
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Encodes a reply: big-endian length, then the XML plist.
pub fn encode_message(dict: &Dictionary) -> Vec<u8> {
    let xml = usbmuxd::proto::plist_to_xml(dict);
    let mut out = (xml.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&xml);
    out
}

/// Serves lockdownd requests until the client closes, says Goodbye or sends garbage.
pub(crate) fn serve(
    stream: &mut Stream,
    device: &TestDevice,
    counters: &Counters,
) -> io::Result<()> {
    let values = device_values(device);
    while let Some(body) = read_message(stream)? {
        counters.add_received(body.len() + 4);
        let request = match Value::from_reader(Cursor::new(&body)) {
            Ok(Value::Dictionary(d)) => d,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "lockdownd request is not a plist dictionary",
                ))
            }
        };
        counters.record_lockdownd_request(&request);
        let (reply, close) = answer(&request, &values);
        let bytes = encode_message(&reply);
        stream.write_all(&bytes)?;
        counters.add_sent(bytes.len());
        if close {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn answers() {
        let dev = TestDevice::usb(1, "00008030-001A2B3C4D5E6F70")
            .with_lockdown_value("DeviceName", "Bob");
        let values = device_values(&dev);
        assert_eq!(
            values.get("UniqueChipID").unwrap().as_unsigned_integer(),
            Some(0x001A2B3C4D5E6F70)
        );
        assert_eq!(values.get("DeviceName").unwrap().as_string(), Some("Bob"));

        let (r, close) = answer(&req(&[("Label", "t"), ("Request", "QueryType")]), &values);
        assert_eq!(
            r.get("Type").unwrap().as_string(),
            Some("com.apple.mobile.lockdown")
        );
        assert_eq!(r.get("Label").unwrap().as_string(), Some("t"));
        assert!(!close);

        let (r, _) = answer(&req(&[("Request", "GetValue")]), &values);
        let all = r.get("Value").unwrap().as_dictionary().unwrap();
        assert_eq!(
            all.get("UniqueDeviceID").unwrap().as_string(),
            Some("00008030-001A2B3C4D5E6F70")
        );

        let (r, _) = answer(
            &req(&[("Request", "GetValue"), ("Key", "ProductVersion")]),
            &values,
        );
        assert_eq!(r.get("Value").unwrap().as_string(), Some("15.8"));
        let (r, _) = answer(&req(&[("Request", "GetValue"), ("Key", "Nope")]), &values);
        assert_eq!(r.get("Error").unwrap().as_string(), Some("MissingValue"));
        assert!(r.get("Value").is_none());

        let (r, close) = answer(&req(&[("Request", "Goodbye")]), &values);
        assert_eq!(r.get("Result").unwrap().as_string(), Some("Success"));
        assert!(close);
        let (r, _) = answer(&req(&[("Request", "StartSession")]), &values);
        assert!(r.get("Error").is_some());
    }
}
