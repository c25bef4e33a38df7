//! Pair records and the SystemBUID, stored as the usbmuxd daemon stores them
//! (`usbmuxd-daemon.md` §9): `<dir>/SystemConfiguration.plist` with `SystemBUID`, and one
//! `<UDID>.plist` per device, XML. Record ids are limited to UDID characters, so no id
//! can name a path outside the directory (the daemon's CVE-2025-66004 cannot happen
//! here). Files are created with mode 0600.

use crate::client::api::valid_record_id;
use plist::{Dictionary, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Environment variable naming the record directory of the USB backend.
pub const PAIR_RECORD_DIR_ENV: &str = "USBMUXD_PAIR_RECORD_DIR";
/// The daemon's default directory.
pub const DEFAULT_PAIR_RECORD_DIR: &str = "/var/lib/lockdown";
const SYSTEM_CONFIG: &str = "SystemConfiguration.plist";

/// Result numbers the daemon protocol uses for pair-record failures (errno values).
const EINVAL: u32 = libc::EINVAL as u32;
const ENOENT: u32 = libc::ENOENT as u32;

/// A pair-record directory.
#[derive(Debug, Clone)]
pub struct PairStore {
    dir: PathBuf,
}

fn errno_of(e: &io::Error) -> u32 {
    e.raw_os_error().map_or(libc::EIO as u32, |n| n as u32)
}

impl PairStore {
    pub fn new(dir: impl Into<PathBuf>) -> PairStore {
        PairStore { dir: dir.into() }
    }

    /// The directory from `USBMUXD_PAIR_RECORD_DIR`, or `/var/lib/lockdown`.
    pub fn from_env() -> PairStore {
        PairStore::new(
            std::env::var_os(PAIR_RECORD_DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_PAIR_RECORD_DIR), PathBuf::from),
        )
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

    fn ensure_dir(&self) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&self.dir)
    }

    /// Writes `bytes` to `path` through a temporary file, mode 0600.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.ensure_dir()?;
        let tmp = path.with_extension("plist.tmp");
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }

    /// The SystemBUID, generated and stored on first use (an upper-case random UUID).
    pub fn read_buid(&self) -> String {
        let path = self.dir.join(SYSTEM_CONFIG);
        let mut config = fs::read(&path)
            .ok()
            .and_then(|b| plist::from_bytes::<Value>(&b).ok())
            .and_then(|v| v.into_dictionary())
            .unwrap_or_default();
        if let Some(buid) = config.get("SystemBUID").and_then(Value::as_string) {
            return buid.to_string();
        }
        let buid = random_buid();
        config.insert("SystemBUID".into(), buid.clone().into());
        // As the daemon: if storing fails the value is still returned.
        let _ = self.write_file(&path, &crate::proto::plist_to_xml(&config));
        buid
    }

    /// The stored record, as stored (XML). `Err(errno)`: 22 for a bad id, 2 if missing.
    pub fn read(&self, id: &str) -> Result<Vec<u8>, u32> {
        let path = self.record_path(id)?;
        fs::read(path).map_err(|e| if e.kind() == io::ErrorKind::NotFound { ENOENT } else { errno_of(&e) })
    }

    /// Stores a record: `data` must be a plist (XML or binary) dictionary of at least 8
    /// bytes; it is stored as XML. `Err(errno)` as the daemon answers.
    pub fn save(&self, id: &str, data: &[u8]) -> Result<(), u32> {
        let path = self.record_path(id)?;
        if data.len() < 8 {
            return Err(EINVAL);
        }
        let dict: Dictionary = match plist::from_bytes::<Value>(data) {
            Ok(Value::Dictionary(d)) => d,
            _ => return Err(EINVAL),
        };
        self.write_file(&path, &crate::proto::plist_to_xml(&dict)).map_err(|_| ENOENT)
    }

    /// Deletes a record. `Err(errno)` of the removal (2 if it did not exist).
    pub fn delete(&self, id: &str) -> Result<(), u32> {
        let path = self.record_path(id)?;
        fs::remove_file(path).map_err(|e| errno_of(&e))
    }
}

/// `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, upper-case hex from the system's randomness.
fn random_buid() -> String {
    let mut bytes = [0u8; 16];
    let filled = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // No /dev/urandom: std's hasher keys also come from the OS's randomness.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id() as u64);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_store(name: &str) -> PairStore {
        let dir = std::env::temp_dir().join(format!("usbmuxd-pairing-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        PairStore::new(dir)
    }

    #[test]
    fn buid_is_generated_once_and_kept() {
        let s = temp_store("buid");
        let buid = s.read_buid();
        assert_eq!(buid.len(), 36);
        assert!(buid.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!([8, 13, 18, 23].map(|i| buid.as_bytes()[i]), [b'-'; 4]);
        assert_eq!(s.read_buid(), buid);
        assert_eq!(PairStore::new(s.dir()).read_buid(), buid);
        let text = fs::read_to_string(s.dir().join(SYSTEM_CONFIG)).unwrap();
        assert!(text.contains("<key>SystemBUID</key>"));
        let mode = fs::metadata(s.dir().join(SYSTEM_CONFIG)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn records_round_trip_as_xml_and_ids_cannot_escape() {
        let s = temp_store("records");
        let mut d = Dictionary::new();
        d.insert("HostID".into(), "ABC".into());
        let mut binary = Vec::new();
        Value::Dictionary(d.clone()).to_writer_binary(&mut binary).unwrap();
        let udid = "00008030-001A2B3C4D5E6F70";
        assert_eq!(s.read(udid), Err(ENOENT));
        s.save(udid, &binary).unwrap();
        let stored = s.read(udid).unwrap();
        assert!(stored.starts_with(b"<?xml"));
        assert_eq!(crate::proto::xml_to_dict(&stored).unwrap(), d);
        let mode = fs::metadata(s.dir().join(format!("{udid}.plist"))).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.save(udid, b"short"), Err(EINVAL));
        assert_eq!(s.save(udid, b"<?xml version=\"1.0\"?><plist><array/></plist>"), Err(EINVAL));
        assert_eq!(s.save(udid, b"<plist version=\"1.0\"><string>x</string></plist>"), Err(EINVAL));
        for bad in ["../evil", "a/b", "", "..", "SystemConfiguration.plist", "a.b", "a b", "é"] {
            assert_eq!(s.save(bad, &binary), Err(EINVAL), "{bad}");
            assert_eq!(s.read(bad), Err(EINVAL), "{bad}");
            assert_eq!(s.delete(bad), Err(EINVAL), "{bad}");
        }
        s.delete(udid).unwrap();
        assert_eq!(s.delete(udid), Err(ENOENT));
        fs::remove_dir_all(s.dir()).unwrap();
    }
}
