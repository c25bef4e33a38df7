//! Requests (client → daemon) and messages (daemon → client), in both the binary (v0)
//! and the plist (v1) protocol. Encoding and decoding only: no I/O.

use super::device::{DeviceRecord, BINARY_RECORD_LEN};
use super::header::{frame, msgtype, Header, VERSION_BINARY, VERSION_PLIST};
use super::DecodeError;
use plist::{Dictionary, Value};

/// Identification keys every plist request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// macOS bundle identifier; omitted when unknown.
    pub bundle_id: Option<String>,
    /// `ClientVersionString`, e.g. `libusbmuxd 2.1.1`.
    pub version_string: String,
    /// Short program name; omitted when unknown.
    pub prog_name: Option<String>,
}

/// `kLibUSBMuxVersion` sent by libusbmuxd 2.x.
pub const LIBUSBMUX_VERSION: u64 = 3;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Listen,
    /// `port` in host order, as the user thinks of it (62078 for lockdownd).
    Connect {
        device_id: u32,
        port: u16,
    },
    ListDevices,
    ReadBuid,
    ReadPairRecord {
        record_id: String,
    },
    /// `device_id` 0 means "no DeviceID key".
    SavePairRecord {
        record_id: String,
        data: Vec<u8>,
        device_id: u32,
    },
    DeletePairRecord {
        record_id: String,
    },
}

fn int(v: u64) -> Value {
    Value::Integer(v.into())
}

/// Serialises a dictionary as libplist does: XML, tab-indented, trailing newline.
pub fn plist_to_xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // Writing a plist Value into a Vec cannot fail.
    let _ = Value::Dictionary(dict.clone()).to_writer_xml(&mut out);
    out.push(b'\n');
    out
}

/// Parses an XML plist payload whose root must be a dictionary. Binary plists are
/// rejected, as libusbmuxd and the daemon reject them.
pub fn xml_to_dict(payload: &[u8]) -> Result<Dictionary, DecodeError> {
    let end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = &payload[..end];
    if text.starts_with(b"bplist") {
        return Err(DecodeError::InvalidPlist("binary plist where XML is required".into()));
    }
    match Value::from_reader_xml(text) {
        Ok(Value::Dictionary(d)) => Ok(d),
        Ok(_) => Err(DecodeError::NotADictionary),
        Err(e) => Err(DecodeError::InvalidPlist(e.to_string())),
    }
}

impl Request {
    /// The plist `MessageType`.
    pub fn message_type(&self) -> &'static str {
        match self {
            Request::Listen => "Listen",
            Request::Connect { .. } => "Connect",
            Request::ListDevices => "ListDevices",
            Request::ReadBuid => "ReadBUID",
            Request::ReadPairRecord { .. } => "ReadPairRecord",
            Request::SavePairRecord { .. } => "SavePairRecord",
            Request::DeletePairRecord { .. } => "DeletePairRecord",
        }
    }

    /// The request dictionary, keys in libusbmuxd's order.
    pub fn to_dict(&self, info: &ClientInfo) -> Dictionary {
        let mut d = Dictionary::new();
        if let Some(b) = &info.bundle_id {
            d.insert("BundleID".into(), b.clone().into());
        }
        d.insert("ClientVersionString".into(), info.version_string.clone().into());
        d.insert("MessageType".into(), self.message_type().into());
        if let Some(p) = &info.prog_name {
            d.insert("ProgName".into(), p.clone().into());
        }
        d.insert("kLibUSBMuxVersion".into(), int(LIBUSBMUX_VERSION));
        match self {
            Request::Connect { device_id, port } => {
                d.insert("DeviceID".into(), int(*device_id as u64));
                // The port travels in network byte order even inside the plist.
                d.insert("PortNumber".into(), int(port.swap_bytes() as u64));
            }
            Request::ReadPairRecord { record_id } | Request::DeletePairRecord { record_id } => {
                d.insert("PairRecordID".into(), record_id.clone().into());
            }
            Request::SavePairRecord { record_id, data, device_id } => {
                d.insert("PairRecordID".into(), record_id.clone().into());
                d.insert("PairRecordData".into(), Value::Data(data.clone()));
                if *device_id > 0 {
                    d.insert("DeviceID".into(), int(*device_id as u64));
                }
            }
            _ => {}
        }
        d
    }

    /// The whole plist (v1) message.
    pub fn encode_plist(&self, info: &ClientInfo, tag: u32) -> Vec<u8> {
        frame(VERSION_PLIST, msgtype::PLIST, tag, &plist_to_xml(&self.to_dict(info)))
    }

    /// The whole binary (v0) message, for the two requests that have one.
    pub fn encode_binary(&self, tag: u32) -> Option<Vec<u8>> {
        match self {
            Request::Listen => Some(frame(VERSION_BINARY, msgtype::LISTEN, tag, &[])),
            Request::Connect { device_id, port } => {
                let mut p = [0u8; 8];
                p[0..4].copy_from_slice(&device_id.to_le_bytes());
                p[4..6].copy_from_slice(&port.to_be_bytes());
                Some(frame(VERSION_BINARY, msgtype::CONNECT, tag, &p))
            }
            _ => None,
        }
    }
}

/// A message from the daemon, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonMessage {
    /// `Result` / binary `RESULT`.
    Result(u32),
    /// `Attached` / `DEVICE_ADD`.
    DeviceAdd(DeviceRecord),
    /// `Detached` / `DEVICE_REMOVE`.
    DeviceRemove(u32),
    /// `Paired` / `DEVICE_PAIRED`.
    DevicePaired(u32),
    /// A reply dictionary without `MessageType` (`DeviceList`, `BUID`, `PairRecordData`).
    Dictionary(Dictionary),
    /// `Detached`/`Paired` lacking `DeviceID`: not decodable, but not a framing error either.
    EventWithoutDeviceId,
    /// A binary message of a type this crate does not interpret.
    Other { message: u32, payload: Vec<u8> },
}

fn le_u32(payload: &[u8]) -> Result<u32, DecodeError> {
    match payload {
        [a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => Err(DecodeError::Truncated { expected: 4, got: payload.len() }),
    }
}

/// Decodes one daemon → client message.
pub fn decode_daemon_message(header: &Header, payload: &[u8]) -> Result<DaemonMessage, DecodeError> {
    match header.message {
        msgtype::RESULT => Ok(DaemonMessage::Result(le_u32(payload)?)),
        msgtype::DEVICE_ADD => Ok(DaemonMessage::DeviceAdd(DeviceRecord::from_binary(payload)?)),
        msgtype::DEVICE_REMOVE => Ok(DaemonMessage::DeviceRemove(le_u32(payload)?)),
        msgtype::DEVICE_PAIRED => Ok(DaemonMessage::DevicePaired(le_u32(payload)?)),
        msgtype::PLIST => decode_plist_message(xml_to_dict(payload)?),
        other => Ok(DaemonMessage::Other { message: other, payload: payload.to_vec() }),
    }
}

fn decode_plist_message(dict: Dictionary) -> Result<DaemonMessage, DecodeError> {
    let Some(kind) = dict.get("MessageType").and_then(Value::as_string) else {
        return Ok(DaemonMessage::Dictionary(dict));
    };
    let device_id = dict.get("DeviceID").and_then(Value::as_unsigned_integer).map(|v| v as u32);
    match kind {
        "Result" => {
            let n = dict.get("Number").and_then(Value::as_unsigned_integer).unwrap_or(0);
            Ok(DaemonMessage::Result(n as u32))
        }
        "Attached" => {
            let props = dict
                .get("Properties")
                .and_then(Value::as_dictionary)
                .ok_or(DecodeError::BadDeviceRecord("Attached without Properties"))?;
            Ok(DaemonMessage::DeviceAdd(DeviceRecord::from_properties(props)?))
        }
        "Detached" => Ok(device_id.map_or(DaemonMessage::EventWithoutDeviceId, DaemonMessage::DeviceRemove)),
        "Paired" => Ok(device_id.map_or(DaemonMessage::EventWithoutDeviceId, DaemonMessage::DevicePaired)),
        other => Err(DecodeError::UnknownMessageType(other.to_string())),
    }
}

/// Decodes the entries of a `ListDevices` reply. `None` if the dictionary has no
/// `DeviceList` array; an error if any entry is not a usable device.
pub fn decode_device_list(dict: &Dictionary) -> Option<Result<Vec<DeviceRecord>, DecodeError>> {
    let list = dict.get("DeviceList")?.as_array()?;
    Some(
        list.iter()
            .map(|entry| {
                entry
                    .as_dictionary()
                    .and_then(|e| e.get("Properties"))
                    .and_then(Value::as_dictionary)
                    .ok_or(DecodeError::BadDeviceRecord("DeviceList entry without Properties"))
                    .and_then(DeviceRecord::from_properties)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// The daemon's side: decoding requests, encoding replies and events. Used by the test
// daemon and by anyone writing a usbmuxd-compatible server.

/// A request as a daemon receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRequest {
    pub header: Header,
    /// The decoded request, or `None` for a message the daemon should answer with BADCOMMAND.
    pub request: Option<Request>,
    /// The full plist dictionary for plist requests (to inspect client identification).
    pub dict: Option<Dictionary>,
}

/// Decodes a client → daemon message. Errors mean "no reply" (the daemon logs and ignores
/// unparseable plists and plists without a string `MessageType`).
pub fn decode_request(header: &Header, payload: &[u8]) -> Result<IncomingRequest, DecodeError> {
    let request = match header.message {
        msgtype::LISTEN => Some(Request::Listen),
        msgtype::CONNECT => {
            if payload.len() < 8 {
                return Err(DecodeError::Truncated { expected: 8, got: payload.len() });
            }
            let device_id = le_u32(payload)?;
            let port = u16::from_be_bytes([payload[4], payload[5]]);
            Some(Request::Connect { device_id, port })
        }
        msgtype::PLIST => {
            let dict = xml_to_dict(payload)?;
            let kind = dict
                .get("MessageType")
                .and_then(Value::as_string)
                .ok_or(DecodeError::BadRequest("plist request without MessageType"))?
                .to_string();
            let string = |k: &str| dict.get(k).and_then(Value::as_string).map(str::to_string);
            let int = |k: &str| dict.get(k).and_then(Value::as_unsigned_integer);
            let request = match kind.as_str() {
                "Listen" => Some(Request::Listen),
                "Connect" => Some(Request::Connect {
                    device_id: int("DeviceID").unwrap_or(0) as u32,
                    port: (int("PortNumber").unwrap_or(0) as u16).swap_bytes(),
                }),
                "ListDevices" => Some(Request::ListDevices),
                "ReadBUID" => Some(Request::ReadBuid),
                "ReadPairRecord" => string("PairRecordID").map(|record_id| Request::ReadPairRecord { record_id }),
                "DeletePairRecord" => string("PairRecordID").map(|record_id| Request::DeletePairRecord { record_id }),
                "SavePairRecord" => match (string("PairRecordID"), dict.get("PairRecordData").and_then(Value::as_data))
                {
                    (Some(record_id), Some(data)) => Some(Request::SavePairRecord {
                        record_id,
                        data: data.to_vec(),
                        device_id: int("DeviceID").unwrap_or(0) as u32,
                    }),
                    _ => None,
                },
                _ => None,
            };
            return Ok(IncomingRequest { header: *header, request, dict: Some(dict) });
        }
        _ => None,
    };
    Ok(IncomingRequest { header: *header, request, dict: None })
}

/// A `Result` reply in the given protocol version.
pub fn encode_result(version: u32, tag: u32, number: u32) -> Vec<u8> {
    if version == VERSION_PLIST {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "Result".into());
        d.insert("Number".into(), int(number as u64));
        encode_plist_message(tag, &d)
    } else {
        frame(VERSION_BINARY, msgtype::RESULT, tag, &number.to_le_bytes())
    }
}

/// A plist message (`MESSAGE_PLIST`, version 1) carrying `dict`.
pub fn encode_plist_message(tag: u32, dict: &Dictionary) -> Vec<u8> {
    frame(VERSION_PLIST, msgtype::PLIST, tag, &plist_to_xml(dict))
}

/// The `Attached` dictionary for a device (also the shape of a `DeviceList` entry).
pub fn attached_dict(device: &DeviceRecord, location_id: Option<u32>) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), "Attached".into());
    d.insert("DeviceID".into(), int(device.handle as u64));
    d.insert("Properties".into(), Value::Dictionary(device.to_properties(location_id)));
    d
}

/// A `Detached` (`paired == false`) or `Paired` event dictionary.
pub fn device_event_dict(kind: &str, device_id: u32) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), kind.into());
    d.insert("DeviceID".into(), int(device_id as u64));
    d
}

/// A binary `DEVICE_ADD` event.
pub fn encode_binary_device_add(device: &DeviceRecord, location: u32) -> Vec<u8> {
    let rec: [u8; BINARY_RECORD_LEN] = device.to_binary(location);
    frame(VERSION_BINARY, msgtype::DEVICE_ADD, 0, &rec)
}

/// A binary `DEVICE_REMOVE` or `DEVICE_PAIRED` event.
pub fn encode_binary_device_event(message: u32, device_id: u32) -> Vec<u8> {
    frame(VERSION_BINARY, message, 0, &device_id.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::header::{HEADER_LEN, MAX_MESSAGE_LEN};

    fn info() -> ClientInfo {
        ClientInfo { bundle_id: None, version_string: "libusbmuxd 2.0.2".into(), prog_name: Some("idevice_id".into()) }
    }

    fn split(msg: &[u8]) -> (Header, &[u8]) {
        let h = Header::decode(msg[..HEADER_LEN].try_into().unwrap(), MAX_MESSAGE_LEN).unwrap();
        (h, &msg[HEADER_LEN..])
    }

    /// The byte-exact `ListDevices` request of the protocol document (§11.1).
    #[test]
    fn list_devices_request_matches_libusbmuxd_bytes() {
        let msg = Request::ListDevices.encode_plist(&info(), 1);
        assert_eq!(msg.len(), 427);
        assert_eq!(&msg[..16], &[0xab, 1, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]);
        let text = std::str::from_utf8(&msg[16..]).unwrap();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        assert!(text.contains("\t<key>ProgName</key>\n\t<string>idevice_id</string>\n"));
        assert!(text.ends_with("</dict>\n</plist>\n"));
    }

    /// The byte-exact `Connect` request of §11.3: 515 bytes, PortNumber 32498.
    #[test]
    fn connect_request_swaps_port() {
        let msg = Request::Connect { device_id: 3, port: 62078 }.encode_plist(&info(), 2);
        assert_eq!(msg.len(), 515);
        assert!(std::str::from_utf8(&msg[16..]).unwrap().contains("<integer>32498</integer>"));
        let bin = Request::Connect { device_id: 3, port: 62078 }.encode_binary(2).unwrap();
        assert_eq!(bin, [0x18, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xf2, 0x7e, 0, 0]);
        // The daemon side decodes both forms back to the same request.
        for m in [msg, bin] {
            let (h, p) = split(&m);
            let r = decode_request(&h, p).unwrap();
            assert_eq!(r.request, Some(Request::Connect { device_id: 3, port: 62078 }));
        }
    }

    #[test]
    fn result_reply_is_294_bytes_and_decodes() {
        let msg = encode_result(VERSION_PLIST, 2, 0);
        assert_eq!(msg.len(), 294);
        let (h, p) = split(&msg);
        assert_eq!(decode_daemon_message(&h, p).unwrap(), DaemonMessage::Result(0));
        let bin = encode_result(VERSION_BINARY, 2, 2);
        let (h, p) = split(&bin);
        assert_eq!(decode_daemon_message(&h, p).unwrap(), DaemonMessage::Result(2));
    }

    #[test]
    fn every_request_round_trips_through_the_daemon_decoder() {
        let reqs = [
            Request::Listen,
            Request::ListDevices,
            Request::ReadBuid,
            Request::ReadPairRecord { record_id: "abc".into() },
            Request::DeletePairRecord { record_id: "abc".into() },
            Request::SavePairRecord { record_id: "abc".into(), data: b"0123456789".to_vec(), device_id: 4 },
            Request::SavePairRecord { record_id: "abc".into(), data: b"0123456789".to_vec(), device_id: 0 },
        ];
        for r in reqs {
            let msg = r.encode_plist(&info(), 9);
            let (h, p) = split(&msg);
            let got = decode_request(&h, p).unwrap();
            assert_eq!(got.request.as_ref(), Some(&r));
            assert_eq!(got.dict.unwrap().get("kLibUSBMuxVersion").unwrap().as_unsigned_integer(), Some(3));
        }
    }

    #[test]
    fn events_decode_in_both_protocols() {
        let dev = DeviceRecord {
            handle: 3,
            product_id: 0x12a8,
            udid: "00008030-001A2B3C4D5E6F70".into(),
            connection: crate::proto::ConnectionType::Usb,
            network_address: vec![],
        };
        let cases = [
            (encode_plist_message(0, &attached_dict(&dev, Some(1))), DaemonMessage::DeviceAdd(dev.clone())),
            (encode_binary_device_add(&dev, 0x10005), DaemonMessage::DeviceAdd(dev.clone())),
            (encode_plist_message(0, &device_event_dict("Detached", 3)), DaemonMessage::DeviceRemove(3)),
            (encode_plist_message(0, &device_event_dict("Paired", 3)), DaemonMessage::DevicePaired(3)),
            (encode_binary_device_event(msgtype::DEVICE_REMOVE, 3), DaemonMessage::DeviceRemove(3)),
            (encode_binary_device_event(msgtype::DEVICE_PAIRED, 3), DaemonMessage::DevicePaired(3)),
        ];
        for (msg, want) in cases {
            let (h, p) = split(&msg);
            assert_eq!(decode_daemon_message(&h, p).unwrap(), want);
        }
        let mut no_id = Dictionary::new();
        no_id.insert("MessageType".into(), "Detached".into());
        let msg = encode_plist_message(0, &no_id);
        let (h, p) = split(&msg);
        assert_eq!(decode_daemon_message(&h, p).unwrap(), DaemonMessage::EventWithoutDeviceId);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let h = Header::new(VERSION_PLIST, msgtype::PLIST, 1, 5);
        assert!(decode_daemon_message(&h, b"<plis").is_err());
        assert!(decode_daemon_message(&h, b"bplist00\0\0\0").is_err());
        let mut weird = Dictionary::new();
        weird.insert("MessageType".into(), "Weird".into());
        let msg = encode_plist_message(0, &weird);
        let (h, p) = split(&msg);
        assert!(matches!(decode_daemon_message(&h, p), Err(DecodeError::UnknownMessageType(_))));
        let h = Header::new(VERSION_BINARY, msgtype::RESULT, 1, 2);
        assert!(decode_daemon_message(&h, &[0, 0]).is_err());
        let h = Header::new(VERSION_BINARY, msgtype::DEVICE_ADD, 1, 10);
        assert!(decode_daemon_message(&h, &[0; 10]).is_err());
        // A trailing NUL after the XML is tolerated.
        let mut msg = encode_result(VERSION_PLIST, 1, 3);
        msg.push(0);
        assert_eq!(
            decode_daemon_message(&Header::new(1, 8, 1, msg.len() - 16), &msg[16..]).unwrap(),
            DaemonMessage::Result(3)
        );
    }

    #[test]
    fn device_list_decoding() {
        let dev = DeviceRecord {
            handle: 3,
            product_id: 0x12a8,
            udid: "00008030-001A2B3C4D5E6F70".into(),
            connection: crate::proto::ConnectionType::Usb,
            network_address: vec![],
        };
        let mut d = Dictionary::new();
        d.insert("DeviceList".into(), Value::Array(vec![Value::Dictionary(attached_dict(&dev, None))]));
        assert_eq!(decode_device_list(&d).unwrap().unwrap(), vec![dev]);
        d.insert("DeviceList".into(), Value::Array(vec![Value::String("junk".into())]));
        assert!(decode_device_list(&d).unwrap().is_err());
        assert!(decode_device_list(&Dictionary::new()).is_none());
    }
}
