//! The daemon client: finds the daemon, opens one connection per request (the daemon's
//! connections are one-way: after `Listen` or `Connect` they carry nothing else), and
//! remembers per daemon which protocol it speaks.

pub mod address;
pub mod api;
pub mod transport;

use crate::error::{Error, Result};
use crate::proto::{frame, msgtype, plist_to_xml, ClientInfo, DaemonMessage, Header, Request, VERSION_PLIST};
use crate::usb::BackendChoice;
use address::DaemonAddress;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use transport::{DaemonStream, REPLY_TIMEOUT};

/// What we learned about one daemon. Kept per address, not process-wide, so that two
/// daemons (or one replaced by a newer one after it went away) are each judged alone.
#[derive(Debug, Clone, Copy, Default)]
struct DaemonTraits {
    /// It answered a plist request with BADVERSION: use the binary protocol.
    binary_only: bool,
    /// `ListDevices` failed once: collect devices with `Listen` instead.
    no_list_devices: bool,
}

static TRAITS: Mutex<Option<HashMap<DaemonAddress, DaemonTraits>>> = Mutex::new(None);
static TAG: AtomicU32 = AtomicU32::new(0);

fn traits(addr: &DaemonAddress) -> DaemonTraits {
    TRAITS.lock().as_ref().and_then(|m| m.get(addr).copied()).unwrap_or_default()
}

fn update_traits(addr: &DaemonAddress, f: impl FnOnce(&mut DaemonTraits)) {
    let mut guard = TRAITS.lock();
    f(guard.get_or_insert_with(HashMap::new).entry(addr.clone()).or_default());
}

fn forget_traits(addr: &DaemonAddress) {
    if let Some(m) = TRAITS.lock().as_mut() {
        m.remove(addr);
    }
}

/// The identification this process sends with every plist request.
pub fn client_info() -> &'static ClientInfo {
    static INFO: OnceLock<ClientInfo> = OnceLock::new();
    INFO.get_or_init(|| ClientInfo {
        bundle_id: None,
        version_string: format!("libusbmuxd {}", crate::VERSION),
        prog_name: program_name(),
    })
}

/// The short name of the running executable (glibc's `program_invocation_short_name`).
fn program_name() -> Option<String> {
    let from_argv = std::env::args_os().next().and_then(|a| {
        let p = std::path::PathBuf::from(a);
        p.file_name().map(|n| n.to_string_lossy().into_owned())
    });
    from_argv.filter(|n| !n.is_empty()).or_else(|| {
        let comm = std::fs::read_to_string("/proc/self/comm").ok()?;
        Some(comm.trim_end().to_string()).filter(|n| !n.is_empty())
    })
}

/// The XML payload of a plist request. Requests without arguments are the same for the
/// whole life of the process (the tag lives in the header), so they are serialised once.
fn plist_payload(request: &Request) -> Cow<'static, [u8]> {
    static LISTEN: OnceLock<Vec<u8>> = OnceLock::new();
    static LIST_DEVICES: OnceLock<Vec<u8>> = OnceLock::new();
    static READ_BUID: OnceLock<Vec<u8>> = OnceLock::new();
    // Programs connect to the same device port again and again (lockdownd, a forwarded
    // port): the last Connect payload is kept too.
    static LAST_CONNECT: Mutex<Option<(u32, u16, Vec<u8>)>> = Mutex::new(None);
    let cache = match request {
        Request::Listen => &LISTEN,
        Request::ListDevices => &LIST_DEVICES,
        Request::ReadBuid => &READ_BUID,
        Request::Connect { device_id, port } => {
            let mut last = LAST_CONNECT.lock();
            if let Some((d, p, bytes)) = last.as_ref() {
                if d == device_id && p == port {
                    return Cow::Owned(bytes.clone());
                }
            }
            let bytes = plist_to_xml(&request.to_dict(client_info()));
            *last = Some((*device_id, *port, bytes.clone()));
            return Cow::Owned(bytes);
        }
        _ => return Cow::Owned(plist_to_xml(&request.to_dict(client_info()))),
    };
    Cow::Borrowed(cache.get_or_init(|| plist_to_xml(&request.to_dict(client_info()))))
}

/// Decodes a reply, remembering the bytes of the last plist `Result` seen: a daemon sends
/// the same few results (Result 0 above all) byte for byte, and recognising the bytes again
/// is much cheaper than parsing XML. Equal bytes decode equally, so this changes nothing.
fn decode_reply(header: &Header, payload: &[u8]) -> Result<DaemonMessage> {
    static LAST_RESULT: Mutex<Option<(Vec<u8>, u32)>> = Mutex::new(None);
    let plist = header.message == msgtype::PLIST;
    if plist {
        if let Some((bytes, n)) = LAST_RESULT.lock().as_ref() {
            if bytes.as_slice() == payload {
                return Ok(DaemonMessage::Result(*n));
            }
        }
    }
    let msg = crate::proto::decode_daemon_message(header, payload)?;
    if let (true, DaemonMessage::Result(n)) = (plist, &msg) {
        if payload.len() <= 1024 {
            *LAST_RESULT.lock() = Some((payload.to_vec(), *n));
        }
    }
    Ok(msg)
}

/// A reply to a request, as the result reader sees it.
#[derive(Debug)]
pub(crate) enum Reply {
    Result(u32),
    Dictionary(plist::Dictionary),
}

/// One connection to the daemon, used for one request.
pub(crate) struct DaemonConn {
    pub(crate) addr: DaemonAddress,
    pub(crate) stream: DaemonStream,
}

impl DaemonConn {
    /// Connects to the backend the environment selects (`USBMUXD_BACKEND`): the daemon
    /// named by `USBMUXD_SOCKET_ADDRESS` (or the default socket), the in-process USB
    /// backend, or — by default — the daemon if it answers, else the USB backend (only
    /// when no daemon address was set explicitly).
    pub(crate) fn open() -> Result<DaemonConn> {
        let daemon = DaemonAddress::from_env();
        match crate::usb::backend_choice() {
            BackendChoice::Daemon => Self::open_at(daemon),
            BackendChoice::Usb => Self::open_at(DaemonAddress::InProcess),
            BackendChoice::Auto => match Self::open_at(daemon) {
                Err(Error::DaemonUnreachable(e)) if std::env::var_os(address::SOCKET_ADDRESS_ENV).is_none() => {
                    Self::open_at(DaemonAddress::InProcess).map_err(|usb| {
                        crate::debug!(1, "connect_usbmuxd_socket", "no daemon and no USB backend either ({usb})");
                        Error::DaemonUnreachable(e)
                    })
                }
                other => other,
            },
        }
    }

    pub(crate) fn open_at(addr: DaemonAddress) -> Result<DaemonConn> {
        match DaemonStream::connect(&addr) {
            Ok(stream) => Ok(DaemonConn { addr, stream }),
            Err(e) => {
                // A daemon that is gone may come back as a different one: learn anew.
                forget_traits(&addr);
                crate::debug!(1, "connect_usbmuxd_socket", "Connection to usbmuxd at {addr} failed: {e}");
                Err(e)
            }
        }
    }

    pub(crate) fn is_binary(&self) -> bool {
        traits(&self.addr).binary_only
    }

    /// Sends `request` in the protocol this daemon speaks (plist unless it refused it;
    /// requests without a binary form always go as plists).
    pub(crate) fn send(&mut self, request: &Request) -> Result<u32> {
        let tag = TAG.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let bytes = match self.is_binary().then(|| request.encode_binary(tag)).flatten() {
            Some(b) => b,
            None => {
                let payload = plist_payload(request);
                frame(VERSION_PLIST, msgtype::PLIST, tag, &payload)
            }
        };
        self.stream.write_all_timeout(&bytes, REPLY_TIMEOUT)?;
        Ok(tag)
    }

    /// Reads the reply to a request (5 s limit): a result code or a reply dictionary.
    pub(crate) fn read_reply(&mut self, tag: u32) -> Result<Reply> {
        let (header, payload) = self.stream.read_message(Some(REPLY_TIMEOUT))?;
        let msg = decode_reply(&header, &payload)?;
        if header.tag != tag {
            crate::debug!(1, "usbmuxd_get_result", "Reply tag {} does not match request tag {}", header.tag, tag);
        }
        match msg {
            DaemonMessage::Result(n) => Ok(Reply::Result(n)),
            DaemonMessage::Dictionary(d) => Ok(Reply::Dictionary(d)),
            _ => Err(Error::UnexpectedReply("an event where a reply was expected")),
        }
    }

    /// Sends `request` and reads its reply.
    pub(crate) fn request(&mut self, request: &Request) -> Result<Reply> {
        let tag = self.send(request)?;
        self.read_reply(tag)
    }

    /// Records that this daemon refused the plist protocol.
    pub(crate) fn mark_binary_only(&self) {
        update_traits(&self.addr, |t| t.binary_only = true);
    }

    pub(crate) fn mark_plist_ok(&self) {
        update_traits(&self.addr, |t| t.binary_only = false);
    }

    pub(crate) fn list_devices_supported(&self) -> bool {
        let t = traits(&self.addr);
        !t.binary_only && !t.no_list_devices
    }

    pub(crate) fn mark_no_list_devices(&self) {
        update_traits(&self.addr, |t| t.no_list_devices = true);
    }

    /// Reads the next message of a listening connection.
    pub(crate) fn read_event(&mut self, timeout: Option<Duration>) -> Result<DaemonMessage> {
        Ok(self.stream.read_daemon_message(timeout)?.1)
    }
}
