//! The safe Rust API: list and look up devices, connect to a device port, read the
//! BUID and manage pair records. Each call opens its own daemon connection.

use super::transport::{wait_ready, DaemonStream};
use super::{DaemonConn, Reply};
use crate::error::{Error, Result};
use crate::proto::{decode_device_list, ConnectionType, DaemonMessage, DeviceRecord, Request};
use plist::Value;
use rustix::event::PollFlags;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// How long the `Listen`-based device list waits for further devices.
const LISTEN_SILENCE: Duration = Duration::from_millis(100);
/// Attempts before giving up on a daemon that keeps changing its mind.
const MAX_ATTEMPTS: usize = 3;

/// Lists the devices the daemon knows, USB and network (a device reachable both ways
/// appears twice, with the same UDID and different handles).
pub fn list_devices() -> Result<Vec<DeviceRecord>> {
    for _ in 0..MAX_ATTEMPTS {
        let mut conn = DaemonConn::open()?;
        if conn.list_devices_supported() {
            match conn.request(&Request::ListDevices) {
                Ok(Reply::Dictionary(d)) => match decode_device_list(&d) {
                    Some(result) => return Ok(result?),
                    // A reply without a DeviceList: fall back to Listen on this connection.
                    None => return list_by_listening(&mut conn)?.ok_or(Error::UnexpectedReply("Listen refused")),
                },
                Ok(Reply::Result(n)) => {
                    if n == crate::proto::result::BADVERSION {
                        conn.mark_binary_only();
                    }
                    conn.mark_no_list_devices();
                }
                Err(e) => {
                    crate::debug!(1, "usbmuxd_get_device_list", "ListDevices failed: {e}; using Listen");
                    conn.mark_no_list_devices();
                }
            }
            continue;
        }
        if let Some(list) = list_by_listening(&mut conn)? {
            return Ok(list);
        }
    }
    Err(Error::UnexpectedReply("daemon refused every way of listing devices"))
}

/// `Listen`, then collect the devices reported until 100 ms pass without a message.
/// `Ok(None)` means "retry on a fresh connection" (the daemon wants the binary protocol).
fn list_by_listening(conn: &mut DaemonConn) -> Result<Option<Vec<DeviceRecord>>> {
    let was_binary = conn.is_binary();
    match conn.request(&Request::Listen)? {
        Reply::Result(0) => {}
        Reply::Result(n) if n == crate::proto::result::BADVERSION && !was_binary => {
            conn.mark_binary_only();
            return Ok(None);
        }
        Reply::Result(n) => {
            crate::debug!(1, "usbmuxd_get_device_list", "Listen refused with result {n}");
            return Err(Error::DaemonResult(n));
        }
        Reply::Dictionary(_) => return Err(Error::UnexpectedReply("dictionary in reply to Listen")),
    }
    let mut devices: Vec<DeviceRecord> = Vec::new();
    loop {
        match conn.read_event(Some(LISTEN_SILENCE)) {
            Ok(DaemonMessage::DeviceAdd(d)) => devices.push(d),
            Ok(DaemonMessage::DeviceRemove(h)) => devices.retain(|d| d.handle != h),
            Ok(other) => crate::debug!(1, "usbmuxd_get_device_list", "Ignoring message {other:?}"),
            Err(_) => break,
        }
    }
    Ok(Some(devices))
}

/// Which kinds of device a lookup considers (`enum usbmux_lookup_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LookupOptions {
    pub usb: bool,
    pub network: bool,
    /// With a UDID reachable both ways, pick the network entry.
    pub prefer_network: bool,
}

impl LookupOptions {
    pub const USB: LookupOptions = LookupOptions { usb: true, network: false, prefer_network: false };

    /// From the C bit mask; 0 means USB only, as upstream.
    pub fn from_bits(bits: i32) -> LookupOptions {
        if bits == 0 {
            return LookupOptions::USB;
        }
        LookupOptions { usb: bits & 2 != 0, network: bits & 4 != 0, prefer_network: bits & 8 != 0 }
    }
}

/// Picks a device from `list` as `usbmuxd_get_device` does: without a UDID the first
/// entry of an accepted kind; with one, the USB or network entry of that UDID (the last
/// of each kind seen before both are found), preferring USB unless told otherwise.
pub fn select_device<'a>(
    list: &'a [DeviceRecord],
    udid: Option<&str>,
    opts: LookupOptions,
) -> Option<&'a DeviceRecord> {
    let accepted = |d: &DeviceRecord| match d.connection {
        ConnectionType::Usb => opts.usb,
        ConnectionType::Network => opts.network,
    };
    let Some(udid) = udid else {
        return list.iter().find(|d| accepted(d));
    };
    let (mut usb, mut net) = (None, None);
    for d in list.iter().filter(|d| d.udid == udid && accepted(d)) {
        match d.connection {
            ConnectionType::Usb => usb = Some(d),
            ConnectionType::Network => net = Some(d),
        }
        if usb.is_some() && net.is_some() {
            break;
        }
    }
    match (usb, net) {
        (Some(_), Some(n)) if opts.prefer_network => Some(n),
        (Some(u), _) => Some(u),
        (None, n) => n,
    }
}

/// Looks a device up by UDID (`None` = any) among the daemon's devices.
pub fn get_device(udid: Option<&str>, opts: LookupOptions) -> Result<Option<DeviceRecord>> {
    let list = list_devices()?;
    Ok(select_device(&list, udid, opts).cloned())
}

/// A connection to a TCP port on a device, through the daemon: after the daemon's
/// `Result 0` the socket is a raw byte pipe to the device service.
///
/// The socket is non-blocking and close-on-exec, as libusbmuxd's are; the methods here
/// wait with `poll`, so they work on it like blocking calls with a time limit.
#[derive(Debug)]
pub struct Connection {
    stream: DaemonStream,
}

/// Connects to `port` (host byte order, e.g. 62078) on device `handle`.
///
/// A daemon refusal comes back as [`Error::DaemonResult`] with its result code
/// (2 = no such device, 3 = connection refused by the device).
pub fn connect(handle: u32, port: u16) -> Result<Connection> {
    for _ in 0..MAX_ATTEMPTS {
        let mut conn = DaemonConn::open()?;
        let was_binary = conn.is_binary();
        match conn.request(&Request::Connect { device_id: handle, port })? {
            Reply::Result(0) => return Ok(Connection { stream: conn.stream }),
            Reply::Result(n) if n == crate::proto::result::BADVERSION && !was_binary => conn.mark_binary_only(),
            Reply::Result(n) => return Err(Error::DaemonResult(n)),
            Reply::Dictionary(_) => return Err(Error::UnexpectedReply("dictionary in reply to Connect")),
        }
    }
    Err(Error::UnexpectedReply("daemon keeps refusing the protocol version"))
}

impl Connection {
    /// Sends what the socket takes now (waiting up to `timeout` for room): returns the
    /// number of bytes sent, which may be less than `data.len()`.
    pub fn send(&self, data: &[u8], timeout: Duration) -> Result<usize> {
        send_fd(self.as_fd(), data, Some(timeout))
    }

    /// Sends all of `data`.
    pub fn send_all(&self, mut data: &[u8], timeout: Duration) -> Result<()> {
        while !data.is_empty() {
            let n = self.send(data, timeout)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Receives up to `buf.len()` bytes, waiting at most `timeout` (`None` = forever).
    /// A closed peer is [`Error::ConnectionClosed`].
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        recv_fd(self.as_fd(), buf, timeout)
    }

    /// Hands the socket over to the caller (who must close it).
    pub fn into_raw_fd(self) -> RawFd {
        self.stream.into_raw_fd()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// One `send` on a connected socket after waiting for room (`usbmuxd_send`).
pub fn send_fd(fd: BorrowedFd<'_>, data: &[u8], timeout: Option<Duration>) -> Result<usize> {
    let ready = wait_ready(fd, PollFlags::OUT, timeout.map(|t| Instant::now() + t))?;
    if ready.intersects(PollFlags::ERR | PollFlags::NVAL) && !ready.contains(PollFlags::OUT) {
        return Err(Error::ConnectionClosed);
    }
    loop {
        match rustix::net::send(fd, data, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::Io(io::Error::from(e))),
        }
    }
}

/// One `recv` on a connected socket after waiting for data (`usbmuxd_recv_timeout`).
pub fn recv_fd(fd: BorrowedFd<'_>, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
    let ready = wait_ready(fd, PollFlags::IN, timeout.map(|t| Instant::now() + t))?;
    if ready.contains(PollFlags::NVAL) {
        return Err(Error::InvalidArgument("not an open descriptor"));
    }
    loop {
        match rustix::net::recv(fd, &mut *buf, rustix::net::RecvFlags::empty()) {
            Ok((0, _)) if !buf.is_empty() => return Err(Error::ConnectionClosed),
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::Io(io::Error::from(e))),
        }
    }
}

/// Reads the daemon's SystemBUID. `Ok(None)` if the daemon answered without one.
pub fn read_buid() -> Result<Option<String>> {
    match plist_request(&Request::ReadBuid)? {
        Reply::Dictionary(d) => Ok(d.get("BUID").and_then(Value::as_string).map(str::to_string)),
        Reply::Result(0) => Ok(None),
        Reply::Result(n) => Err(Error::DaemonResult(n)),
    }
}

/// Whether `id` may name a pair record: UDID characters only (`[0-9A-Za-z-]`), so that
/// no id can name a file outside the daemon's record directory even when the daemon
/// does not check (Debian's usbmuxd 1.1.1 serves `../` paths on read).
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn check_record_id(id: &str) -> Result<()> {
    if valid_record_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidArgument("pair record id must be a UDID ([0-9A-Za-z-])"))
    }
}

/// Reads the pair record stored under `record_id` (normally the UDID): the raw bytes of
/// a serialized plist. `Ok(None)` if the daemon answered success without data.
/// A missing record is `Err(Error::DaemonResult(2))` (ENOENT).
pub fn read_pair_record(record_id: &str) -> Result<Option<Vec<u8>>> {
    check_record_id(record_id)?;
    match plist_request(&Request::ReadPairRecord { record_id: record_id.to_string() })? {
        Reply::Dictionary(d) => match d.get("PairRecordData").and_then(Value::as_data) {
            Some(data) if !data.is_empty() => Ok(Some(data.to_vec())),
            _ => Ok(None),
        },
        Reply::Result(0) => Ok(None),
        Reply::Result(n) => Err(Error::DaemonResult(n)),
    }
}

/// Stores a pair record; with `device_id > 0` the daemon also tells listeners the device
/// is now paired.
pub fn save_pair_record(record_id: &str, data: &[u8], device_id: u32) -> Result<()> {
    check_record_id(record_id)?;
    let req = Request::SavePairRecord { record_id: record_id.to_string(), data: data.to_vec(), device_id };
    expect_ok(plist_request(&req)?)
}

/// Deletes the pair record stored under `record_id`.
pub fn delete_pair_record(record_id: &str) -> Result<()> {
    check_record_id(record_id)?;
    expect_ok(plist_request(&Request::DeletePairRecord { record_id: record_id.to_string() })?)
}

fn expect_ok(reply: Reply) -> Result<()> {
    match reply {
        Reply::Result(0) => Ok(()),
        Reply::Result(n) => Err(Error::DaemonResult(n)),
        Reply::Dictionary(_) => Err(Error::UnexpectedReply("dictionary where a result was expected")),
    }
}

/// Pair-record and BUID requests exist only as plists; a daemon that answers one has
/// shown it speaks plist.
fn plist_request(req: &Request) -> Result<Reply> {
    let mut conn = DaemonConn::open()?;
    let reply = conn.request(req)?;
    conn.mark_plist_ok();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(handle: u32, udid: &str, connection: ConnectionType) -> DeviceRecord {
        DeviceRecord { handle, product_id: 0, udid: udid.into(), connection, network_address: vec![1] }
    }

    #[test]
    fn record_ids_are_udid_characters_only() {
        assert!(valid_record_id("00008030-001A2B3C4D5E6F70"));
        assert!(valid_record_id("ffffffffffffffffffffffffffffffffffffffff"));
        for bad in ["", "../evil", "a/b", "..", "x.plist", "SystemConfiguration\0", "a b", "é"] {
            assert!(!valid_record_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn lookup_rules() {
        use ConnectionType::*;
        let list = vec![dev(1, "A", Network), dev(2, "B", Usb), dev(3, "A", Usb), dev(4, "B", Network)];
        let all = LookupOptions::from_bits(2 | 4);
        let prefer = LookupOptions::from_bits(2 | 4 | 8);
        let h = |d: Option<&DeviceRecord>| d.map(|d| d.handle);
        assert_eq!(h(select_device(&list, None, LookupOptions::from_bits(0))), Some(2));
        assert_eq!(h(select_device(&list, None, all)), Some(1));
        assert_eq!(h(select_device(&list, None, prefer)), Some(1), "PREFER_NETWORK ignored without UDID");
        assert_eq!(h(select_device(&list, Some("A"), all)), Some(3));
        assert_eq!(h(select_device(&list, Some("A"), prefer)), Some(1));
        assert_eq!(h(select_device(&list, Some("A"), LookupOptions::from_bits(4))), Some(1));
        assert_eq!(h(select_device(&list, Some("A"), LookupOptions::from_bits(8))), None);
        assert_eq!(h(select_device(&list, Some("C"), all)), None);
        assert_eq!(h(select_device(&list, Some("a"), all)), None, "UDID match is case-sensitive");
    }
}
