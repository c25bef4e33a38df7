//! Pair-record storage laid out as the daemon does it (daemon spec §9):
//! `<dir>/SystemConfiguration.plist` holding `SystemBUID`, and `<dir>/<ID>.plist` per
//! record, written as XML. Errors are the errno values the daemon puts in `Result`.

use plist::{Dictionary, Value};
use std::fs;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

const ENOENT: u32 = 2;
const EINVAL: u32 = 22;
const SYSTEM_CONFIGURATION: &str = "SystemConfiguration.plist";

/// The pair-record directory of one daemon.
#[derive(Debug)]
pub(crate) struct PairStore {
    dir: PathBuf,
}

/// Record ids are UDIDs: only `[0-9A-Za-z-]`, non-empty, so that no id can name a
/// path outside the directory (the CVE-2025-66004 class of bug).
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn errno(e: &io::Error) -> u32 {
    e.raw_os_error().map_or(ENOENT, |n| n as u32)
}

impl PairStore {
    pub fn new(dir: PathBuf) -> PairStore {
        PairStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, u32> {
        if !valid_record_id(id) {
            return Err(EINVAL);
        }
        Ok(self.dir.join(format!("{id}.plist")))
    }

    /// The SystemBUID, generated and stored on first use (other keys of the file are kept).
    pub fn read_buid(&self) -> String {
        let path = self.dir.join(SYSTEM_CONFIGURATION);
        let mut config = fs::read(&path)
            .ok()
            .and_then(|b| Value::from_reader(Cursor::new(b)).ok())
            .and_then(Value::into_dictionary)
            .unwrap_or_default();
        if let Some(buid) = config.get("SystemBUID").and_then(Value::as_string) {
            return buid.to_string();
        }
        let buid = random_buid();
        config.insert("SystemBUID".into(), buid.clone().into());
        // Like the daemon, hand out the value even if it could not be stored.
        let _ = fs::create_dir_all(&self.dir).and_then(|_| write_xml(&path, &config));
        buid
    }

    /// The stored bytes of a record, verbatim.
    pub fn read(&self, id: &str) -> Result<Vec<u8>, u32> {
        fs::read(self.record_path(id)?).map_err(|e| errno(&e))
    }

    /// Validates and stores a record (as XML, whatever format it came in).
    pub fn save(&self, id: &str, data: &[u8]) -> Result<(), u32> {
        let path = self.record_path(id)?;
        if data.len() < 8 {
            return Err(EINVAL);
        }
        let dict = match Value::from_reader(Cursor::new(data)) {
            Ok(Value::Dictionary(d)) => d,
            _ => return Err(EINVAL),
        };
        fs::create_dir_all(&self.dir).map_err(|_| 1u32)?;
        let _ = fs::remove_file(&path);
        write_xml(&path, &dict).map_err(|_| ENOENT)
    }

    pub fn delete(&self, id: &str) -> Result<(), u32> {
        fs::remove_file(self.record_path(id)?).map_err(|e| errno(&e))
    }
}

fn write_xml(path: &Path, dict: &Dictionary) -> io::Result<()> {
    fs::write(path, usbmuxd::proto::plist_to_xml(dict))
}

/// An upper-case `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` of random hex digits.
fn random_buid() -> String {
    let mut bytes = [0u8; 16];
    let from_os = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        // No /dev/urandom: std's per-process random hash keys are good enough for a test id.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> PairStore {
        let dir = std::env::temp_dir().join(format!(
            "usbmuxd-testd-pairing-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        PairStore::new(dir)
    }

    #[test]
    fn ids() {
        assert!(valid_record_id("00008030-001A2B3C4D5E6F70"));
        for bad in ["", "../evil", "a/b", "a.b", "a b", "é"] {
            assert!(!valid_record_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn buid_is_generated_once_and_persisted() {
        let s = temp_store("buid");
        let a = s.read_buid();
        assert_eq!(a.len(), 36);
        assert!(a
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!([8, 13, 18, 23].map(|i| a.as_bytes()[i]), [b'-'; 4]);
        assert_eq!(s.read_buid(), a);
        assert_eq!(PairStore::new(s.dir().to_path_buf()).read_buid(), a);
        let text = fs::read_to_string(s.dir().join(SYSTEM_CONFIGURATION)).unwrap();
        assert!(text.contains("<key>SystemBUID</key>"));
        fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn records_round_trip_as_xml() {
        let s = temp_store("records");
        let mut d = Dictionary::new();
        d.insert("HostID".into(), "ABC".into());
        let mut binary = Vec::new();
        Value::Dictionary(d.clone())
            .to_writer_binary(&mut binary)
            .unwrap();
        assert_eq!(s.read("dev1"), Err(ENOENT));
        assert_eq!(s.save("dev1", &binary), Ok(()));
        let stored = s.read("dev1").unwrap();
        assert!(stored.starts_with(b"<?xml"));
        assert_eq!(usbmuxd::proto::xml_to_dict(&stored).unwrap(), d);
        assert_eq!(s.save("dev1", b"short"), Err(EINVAL));
        assert_eq!(
            s.save("dev1", b"<plist version=\"1.0\"><string>x</string></plist>"),
            Err(EINVAL)
        );
        assert_eq!(s.save("../evil", &binary), Err(EINVAL));
        assert_eq!(s.read("../dev1"), Err(EINVAL));
        assert_eq!(s.delete("dev1"), Ok(()));
        assert_eq!(s.delete("dev1"), Err(ENOENT));
        fs::remove_dir_all(s.dir()).unwrap();
    }
}
