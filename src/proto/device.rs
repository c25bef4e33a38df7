//! Device records as the daemon reports them, in both protocol flavours, and the UDID
//! fix-ups libusbmuxd applies to them.

use super::DecodeError;
use plist::{Dictionary, Value};

/// Size of `struct usbmuxd_device_record` (binary `DEVICE_ADD` payload).
pub const BINARY_RECORD_LEN: usize = 268;
/// Longest UDID kept (`udid[44]` in the C struct, NUL included).
pub const MAX_UDID_LEN: usize = 43;
/// Room for a network address (`conn_data[200]` in the C struct).
pub const CONN_DATA_LEN: usize = 200;

/// How a device is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// Over USB, through the daemon (`CONNECTION_TYPE_USB` = 1).
    Usb,
    /// Over the network (`CONNECTION_TYPE_NETWORK` = 2); connect to `network_address` directly.
    Network,
}

impl ConnectionType {
    /// The C enum value.
    pub fn as_c(self) -> i32 {
        match self {
            ConnectionType::Usb => 1,
            ConnectionType::Network => 2,
        }
    }
}

/// One device as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The daemon's DeviceID: pass it to `connect`. Never 0.
    pub handle: u32,
    /// USB idProduct; 0 for network devices.
    pub product_id: u32,
    /// The normalised UDID (at most 43 bytes).
    pub udid: String,
    pub connection: ConnectionType,
    /// Raw `NetworkAddress` bytes (a Darwin `struct sockaddr`) for network devices, empty for USB.
    pub network_address: Vec<u8>,
}

/// Cuts `s` to at most `max` bytes without splitting a character.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Applies libusbmuxd's UDID fix-ups: a dash after the 8th character of a 24-character
/// serial, and the handle in place of the last 8 characters of an all-`f` 40-character one.
pub fn normalize_udid(serial: &str, handle: u32) -> String {
    let mut udid = truncate_utf8(serial, MAX_UDID_LEN).to_string();
    if udid.len() == 24 && udid.is_ascii() {
        udid.insert(8, '-');
    }
    if udid.len() == 40 && udid.bytes().all(|b| b.eq_ignore_ascii_case(&b'f')) {
        udid.replace_range(32.., &format!("{handle:08x}"));
    }
    udid
}

impl DeviceRecord {
    /// Decodes the `Properties` dictionary of an `Attached` message or `DeviceList` entry.
    ///
    /// Keys of the wrong type are ignored, as upstream does; a record without a UDID or a
    /// known `ConnectionType`, or a network record without a usable address, is rejected.
    pub fn from_properties(props: &Dictionary) -> Result<DeviceRecord, DecodeError> {
        let int = |key: &str| props.get(key).and_then(Value::as_unsigned_integer);
        let handle = int("DeviceID").unwrap_or(0) as u32;
        let product_id = int("ProductID").unwrap_or(0) as u32;
        let serial = props.get("SerialNumber").and_then(Value::as_string).unwrap_or("");
        let udid = normalize_udid(serial, handle);
        if udid.is_empty() {
            return Err(DecodeError::BadDeviceRecord("empty SerialNumber"));
        }
        let connection = match props.get("ConnectionType").and_then(Value::as_string) {
            Some("USB") => ConnectionType::Usb,
            Some("Network") => ConnectionType::Network,
            Some(_) => return Err(DecodeError::BadDeviceRecord("unexpected ConnectionType")),
            None => return Err(DecodeError::BadDeviceRecord("missing ConnectionType")),
        };
        let mut network_address = Vec::new();
        if connection == ConnectionType::Network {
            match props.get("NetworkAddress").and_then(Value::as_data) {
                Some(d) if !d.is_empty() && d.len() < CONN_DATA_LEN && d[0] != 0 => network_address = d.to_vec(),
                _ => return Err(DecodeError::BadDeviceRecord("unusable NetworkAddress")),
            }
        }
        Ok(DeviceRecord { handle, product_id, udid, connection, network_address })
    }

    /// Decodes a binary (protocol 0) `struct usbmuxd_device_record`. Binary records are
    /// always USB devices (upstream leaves the type uninitialised; we set it).
    pub fn from_binary(payload: &[u8]) -> Result<DeviceRecord, DecodeError> {
        if payload.len() < BINARY_RECORD_LEN {
            return Err(DecodeError::Truncated { expected: BINARY_RECORD_LEN, got: payload.len() });
        }
        let handle = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let product_id = u16::from_le_bytes([payload[4], payload[5]]) as u32;
        let serial_field = &payload[6..6 + 256];
        let end = serial_field.iter().position(|&b| b == 0).unwrap_or(serial_field.len()).min(42);
        let serial = String::from_utf8_lossy(&serial_field[..end]);
        Ok(DeviceRecord {
            handle,
            product_id,
            udid: normalize_udid(&serial, handle),
            connection: ConnectionType::Usb,
            network_address: Vec::new(),
        })
    }

    /// The `Properties` dictionary a daemon sends for this device (daemon side).
    pub fn to_properties(&self, location_id: Option<u32>) -> Dictionary {
        let mut d = Dictionary::new();
        match self.connection {
            ConnectionType::Usb => {
                d.insert("ConnectionSpeed".into(), Value::Integer(480_000_000u64.into()));
                d.insert("ConnectionType".into(), "USB".into());
                d.insert("DeviceID".into(), Value::Integer((self.handle as u64).into()));
                if let Some(loc) = location_id {
                    d.insert("LocationID".into(), Value::Integer((loc as u64).into()));
                }
                d.insert("ProductID".into(), Value::Integer((self.product_id as u64).into()));
            }
            ConnectionType::Network => {
                d.insert("ConnectionType".into(), "Network".into());
                d.insert("DeviceID".into(), Value::Integer((self.handle as u64).into()));
                d.insert("NetworkAddress".into(), Value::Data(self.network_address.clone()));
            }
        }
        d.insert("SerialNumber".into(), self.udid.clone().into());
        d
    }

    /// The binary `struct usbmuxd_device_record` for this device (daemon side).
    pub fn to_binary(&self, location: u32) -> [u8; BINARY_RECORD_LEN] {
        let mut out = [0u8; BINARY_RECORD_LEN];
        out[0..4].copy_from_slice(&self.handle.to_le_bytes());
        out[4..6].copy_from_slice(&(self.product_id as u16).to_le_bytes());
        let serial = self.udid.as_bytes();
        let n = serial.len().min(255);
        out[6..6 + n].copy_from_slice(&serial[..n]);
        out[264..268].copy_from_slice(&location.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udid_fixups() {
        assert_eq!(normalize_udid("00008030001A2B3C4D5E6F70", 3), "00008030-001A2B3C4D5E6F70");
        assert_eq!(normalize_udid("00008030-001A2B3C4D5E6F70", 3), "00008030-001A2B3C4D5E6F70");
        let f40 = "f".repeat(32) + "FFFFFFFF";
        assert_eq!(normalize_udid(&f40, 0x1234abcd), "f".repeat(32) + "1234abcd");
        let long = "a".repeat(60);
        assert_eq!(normalize_udid(&long, 1).len(), 43);
        assert_eq!(normalize_udid("é".repeat(30).as_str(), 1).len(), 42);
    }

    #[test]
    fn binary_record_matches_spec_example() {
        let mut p = Vec::new();
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&0x12a8u16.to_le_bytes());
        let mut serial = [0u8; 256];
        serial[..24].copy_from_slice(b"00008030001A2B3C4D5E6F70");
        p.extend_from_slice(&serial);
        p.extend_from_slice(&[0, 0, 5, 0, 1, 0]);
        let r = DeviceRecord::from_binary(&p).unwrap();
        assert_eq!(r.handle, 3);
        assert_eq!(r.product_id, 0x12a8);
        assert_eq!(r.udid, "00008030-001A2B3C4D5E6F70");
        assert_eq!(r.connection, ConnectionType::Usb);
        assert!(DeviceRecord::from_binary(&p[..100]).is_err());
    }

    #[test]
    fn plist_record_rules() {
        let usb = DeviceRecord {
            handle: 3,
            product_id: 0x12a8,
            udid: "00008030-001A2B3C4D5E6F70".into(),
            connection: ConnectionType::Usb,
            network_address: vec![],
        };
        assert_eq!(DeviceRecord::from_properties(&usb.to_properties(Some(65541))).unwrap(), usb);
        let net = DeviceRecord {
            handle: 7,
            product_id: 0,
            udid: usb.udid.clone(),
            connection: ConnectionType::Network,
            network_address: vec![0x10, 2, 0, 0, 192, 168, 1, 23, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(DeviceRecord::from_properties(&net.to_properties(None)).unwrap(), net);

        let mut bad = usb.to_properties(None);
        bad.insert("ConnectionType".into(), "Bluetooth".into());
        assert!(DeviceRecord::from_properties(&bad).is_err());
        let mut bad = usb.to_properties(None);
        bad.remove("SerialNumber");
        assert!(DeviceRecord::from_properties(&bad).is_err());
        let mut bad = net.to_properties(None);
        bad.insert("NetworkAddress".into(), Value::Data(vec![0; 16]));
        assert!(DeviceRecord::from_properties(&bad).is_err());
        let mut bad = net.to_properties(None);
        bad.insert("NetworkAddress".into(), Value::Data(vec![1; 200]));
        assert!(DeviceRecord::from_properties(&bad).is_err());
        // A key of the wrong type is ignored rather than fatal.
        let mut odd = usb.to_properties(None);
        odd.insert("ProductID".into(), "not a number".into());
        assert_eq!(DeviceRecord::from_properties(&odd).unwrap().product_id, 0);
    }
}
