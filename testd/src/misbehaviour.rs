//! Deliberately broken replies, armed at run time, so that a client's error paths can
//! be tested.
//!
//! Rules:
//! * An armed misbehaviour is consumed by the next request it applies to: the request
//!   kind must match its [`RequestKind`] filter ([`Misbehaviour::ConnectResult`] and
//!   [`Misbehaviour::ListenResult`] only ever apply to `Connect` / `Listen`). Armed entries
//!   are tried in the order they were armed.
//! * Requests refused for their version (header version not 0/1, or a plist request to a
//!   [`crate::ProtocolMode::BinaryOnly`] daemon) and requests the daemon ignores anyway
//!   (unparseable plists) never consume a misbehaviour.
//! * `Listen` and `Connect` are *not* carried out when a misbehaviour replaces their reply
//!   (no event stream, no pipe; the connection stays in command state unless the
//!   misbehaviour closes it). Other requests are carried out (a pair record is still
//!   saved) and only their reply is replaced. [`Misbehaviour::Delay`] only delays.

use plist::{Dictionary, Value};
use std::time::Duration;
use usbmuxd::proto::{encode_plist_message, encode_result, frame, msgtype, HEADER_LEN, VERSION_BINARY, VERSION_PLIST};

/// One broken (or unusual) reply. "The reply" below means the message the daemon would
/// normally have sent, encoded in the connection's current protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Misbehaviour {
    /// The reply with its header `length` field set to 8 (< 16); connection stays open.
    ShortLength,
    /// The reply with its header `length` field set to 0x7fffffff; connection stays open.
    HugeLength,
    /// The first 7 bytes of the reply, then the connection is closed.
    TruncatedHeader,
    /// The reply's header (with its true length) and the first half of its payload, then
    /// the connection is closed.
    TruncatedPayload,
    /// A `MESSAGE_PLIST` (version 1, request tag) whose payload is [`INVALID_PLIST`].
    InvalidPlist,
    /// A `MESSAGE_PLIST` (version 1, request tag) carrying the reply's dictionary (for a
    /// result: `{MessageType: Result, Number: n}`) serialised as a *binary* plist.
    BinaryPlist,
    /// A reply of the wrong kind: a `Result 0` where a dictionary is expected
    /// (`ListDevices`, `ReadBUID`, `ReadPairRecord`, `ListListeners`); where a result is
    /// expected, a plist dictionary `{DeviceList: []}` without `MessageType` on a plist
    /// connection, or a binary `DEVICE_PAIRED` (message 6, request tag, device id 0) on a
    /// binary one.
    WrongKind,
    /// Close the connection without replying.
    CloseWithoutReply,
    /// Send nothing and keep the connection open (later requests on it are served).
    NeverReply,
    /// Reply `Result n` (in the connection's protocol) to the next request of any kind.
    Result(u32),
    /// Reply `Result n` to the next `Connect` (no pipe is opened, even for 0).
    ConnectResult(u32),
    /// Reply `Result n` to the next `Listen` (the connection does not become a listener).
    ListenResult(u32),
    /// Send these exact bytes as the reply; connection stays open.
    Raw(Vec<u8>),
    /// Send this dictionary as a plist message (version 1, request tag) as the reply.
    Plist(Dictionary),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
}

/// The payload sent by [`Misbehaviour::InvalidPlist`]: an XML plist cut off in the middle.
pub const INVALID_PLIST: &[u8] =
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n\t<key>MessageType</key>\n\t<str";

/// The kind of a request, to aim a misbehaviour at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Matches every request.
    Any,
    Listen,
    Connect,
    ListDevices,
    ListListeners,
    ReadBuid,
    ReadPairRecord,
    SavePairRecord,
    DeletePairRecord,
    /// Unknown binary messages and unknown `MessageType`s.
    Other,
}

impl RequestKind {
    /// Parses the names used by the control protocol (`listen`, `connect`, `list-devices`,
    /// `list-listeners`, `read-buid`, `read-pair-record`, `save-pair-record`,
    /// `delete-pair-record`, `other`, `any`).
    pub fn parse(s: &str) -> Option<RequestKind> {
        Some(match s {
            "any" => RequestKind::Any,
            "listen" => RequestKind::Listen,
            "connect" => RequestKind::Connect,
            "list-devices" => RequestKind::ListDevices,
            "list-listeners" => RequestKind::ListListeners,
            "read-buid" => RequestKind::ReadBuid,
            "read-pair-record" => RequestKind::ReadPairRecord,
            "save-pair-record" => RequestKind::SavePairRecord,
            "delete-pair-record" => RequestKind::DeletePairRecord,
            "other" => RequestKind::Other,
            _ => return None,
        })
    }

    fn admits(self, actual: RequestKind) -> bool {
        self == RequestKind::Any || self == actual
    }
}

/// How many requests an armed misbehaviour applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    Once,
    N(u32),
    Always,
}

#[derive(Debug, Clone)]
pub(crate) struct Armed {
    kind: RequestKind,
    what: Misbehaviour,
    left: Times,
}

/// The armed misbehaviours of a daemon.
#[derive(Debug, Default)]
pub(crate) struct Arsenal {
    armed: Vec<Armed>,
}

impl Arsenal {
    pub fn arm(&mut self, kind: RequestKind, what: Misbehaviour, times: Times) {
        if times != Times::N(0) {
            self.armed.push(Armed { kind, what, left: times });
        }
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// The misbehaviour to apply to a request of kind `actual`, if any; consumes one use.
    pub fn take(&mut self, actual: RequestKind) -> Option<Misbehaviour> {
        let i = self.armed.iter().position(|a| a.kind.admits(actual) && a.what.applies_to(actual))?;
        let entry = &mut self.armed[i];
        let what = entry.what.clone();
        match entry.left {
            Times::Always => {}
            Times::N(n) if n > 1 => entry.left = Times::N(n - 1),
            _ => {
                self.armed.remove(i);
            }
        }
        Some(what)
    }
}

impl Misbehaviour {
    fn applies_to(&self, kind: RequestKind) -> bool {
        match self {
            Misbehaviour::ConnectResult(_) => kind == RequestKind::Connect,
            Misbehaviour::ListenResult(_) => kind == RequestKind::Listen,
            _ => true,
        }
    }

    /// Parses the control-protocol form: `short-length`, `huge-length`, `truncated-header`,
    /// `truncated-payload`, `invalid-plist`, `binary-plist`, `wrong-kind`, `close`,
    /// `never-reply`, `result N`, `connect-result N`, `listen-result N`, `raw HEX`,
    /// `delay MS`.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Misbehaviour, String> {
        let number = || -> Result<u32, String> {
            let a = arg.ok_or_else(|| format!("{name} needs a number"))?;
            a.parse().map_err(|_| format!("bad number {a:?}"))
        };
        let m = match name {
            "short-length" => Misbehaviour::ShortLength,
            "huge-length" => Misbehaviour::HugeLength,
            "truncated-header" => Misbehaviour::TruncatedHeader,
            "truncated-payload" => Misbehaviour::TruncatedPayload,
            "invalid-plist" => Misbehaviour::InvalidPlist,
            "binary-plist" => Misbehaviour::BinaryPlist,
            "wrong-kind" => Misbehaviour::WrongKind,
            "close" | "close-without-reply" => Misbehaviour::CloseWithoutReply,
            "never-reply" => Misbehaviour::NeverReply,
            "result" => Misbehaviour::Result(number()?),
            "connect-result" => Misbehaviour::ConnectResult(number()?),
            "listen-result" => Misbehaviour::ListenResult(number()?),
            "delay" => Misbehaviour::Delay(Duration::from_millis(number()? as u64)),
            "raw" => Misbehaviour::Raw(parse_hex(arg.ok_or("raw needs hex bytes")?)?),
            _ => return Err(format!("unknown misbehaviour {name:?}")),
        };
        if arg.is_some() && !matches!(name, "result" | "connect-result" | "listen-result" | "delay" | "raw") {
            return Err(format!("{name} takes no argument"));
        }
        Ok(m)
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b':').collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("zz"), 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

/// A reply before encoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Result(u32),
    Dict(Dictionary),
}

impl Reply {
    /// Encodes the reply for a connection currently speaking `version`.
    pub fn encode(&self, version: u32, tag: u32) -> Vec<u8> {
        match self {
            Reply::Result(n) => encode_result(version, tag, *n),
            Reply::Dict(d) => encode_plist_message(tag, d),
        }
    }

    fn as_dict(&self) -> Dictionary {
        match self {
            Reply::Result(n) => {
                let mut d = Dictionary::new();
                d.insert("MessageType".into(), "Result".into());
                d.insert("Number".into(), Value::Integer((*n as u64).into()));
                d
            }
            Reply::Dict(d) => d.clone(),
        }
    }
}

/// What the connection does instead of its normal reply.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Send, then go on serving the connection (in command state).
    Send(Vec<u8>),
    /// Send, then close.
    SendAndClose(Vec<u8>),
    /// Send nothing, keep serving.
    Silent,
}

/// The bytes of misbehaviour `m` in place of `reply` (`Delay` is handled by the caller).
pub(crate) fn act(m: &Misbehaviour, reply: &Reply, version: u32, tag: u32) -> Action {
    let normal = || reply.encode(version, tag);
    let with_length = |len: u32| {
        let mut bytes = normal();
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
        bytes
    };
    match m {
        Misbehaviour::ShortLength => Action::Send(with_length(8)),
        Misbehaviour::HugeLength => Action::Send(with_length(0x7fff_ffff)),
        Misbehaviour::TruncatedHeader => Action::SendAndClose(normal()[..7].to_vec()),
        Misbehaviour::TruncatedPayload => {
            let bytes = normal();
            let keep = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
            Action::SendAndClose(bytes[..keep].to_vec())
        }
        Misbehaviour::InvalidPlist => Action::Send(frame(VERSION_PLIST, msgtype::PLIST, tag, INVALID_PLIST)),
        Misbehaviour::BinaryPlist => {
            let mut payload = Vec::new();
            // Serialising an in-memory dictionary into a Vec cannot fail.
            let _ = Value::Dictionary(reply.as_dict()).to_writer_binary(&mut payload);
            Action::Send(frame(VERSION_PLIST, msgtype::PLIST, tag, &payload))
        }
        Misbehaviour::WrongKind => Action::Send(match reply {
            Reply::Dict(_) => encode_result(version, tag, 0),
            Reply::Result(_) if version == VERSION_BINARY => {
                frame(VERSION_BINARY, msgtype::DEVICE_PAIRED, tag, &0u32.to_le_bytes())
            }
            Reply::Result(_) => {
                let mut d = Dictionary::new();
                d.insert("DeviceList".into(), Value::Array(Vec::new()));
                encode_plist_message(tag, &d)
            }
        }),
        Misbehaviour::CloseWithoutReply => Action::SendAndClose(Vec::new()),
        Misbehaviour::NeverReply => Action::Silent,
        Misbehaviour::Result(n) | Misbehaviour::ConnectResult(n) | Misbehaviour::ListenResult(n) => {
            Action::Send(encode_result(version, tag, *n))
        }
        Misbehaviour::Raw(bytes) => Action::Send(bytes.clone()),
        Misbehaviour::Plist(d) => Action::Send(encode_plist_message(tag, d)),
        Misbehaviour::Delay(_) => Action::Send(normal()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arsenal_consumes_in_order_and_respects_kinds() {
        let mut a = Arsenal::default();
        a.arm(RequestKind::Any, Misbehaviour::ConnectResult(3), Times::Once);
        a.arm(RequestKind::Any, Misbehaviour::NeverReply, Times::N(2));
        a.arm(RequestKind::ReadBuid, Misbehaviour::InvalidPlist, Times::Always);
        assert_eq!(a.take(RequestKind::Listen), Some(Misbehaviour::NeverReply));
        assert_eq!(a.take(RequestKind::Connect), Some(Misbehaviour::ConnectResult(3)));
        assert_eq!(a.take(RequestKind::Connect), Some(Misbehaviour::NeverReply));
        assert_eq!(a.take(RequestKind::Connect), None);
        for _ in 0..3 {
            assert_eq!(a.take(RequestKind::ReadBuid), Some(Misbehaviour::InvalidPlist));
        }
        assert_eq!(a.len(), 1);
        a.clear();
        assert_eq!(a.take(RequestKind::ReadBuid), None);
    }

    #[test]
    fn parse_names() {
        assert_eq!(Misbehaviour::parse("connect-result", Some("3")), Ok(Misbehaviour::ConnectResult(3)));
        assert_eq!(Misbehaviour::parse("raw", Some("01ff")), Ok(Misbehaviour::Raw(vec![1, 0xff])));
        assert_eq!(Misbehaviour::parse("delay", Some("20")), Ok(Misbehaviour::Delay(Duration::from_millis(20))));
        assert!(Misbehaviour::parse("result", None).is_err());
        assert!(Misbehaviour::parse("close", Some("1")).is_err());
        assert!(Misbehaviour::parse("dance", None).is_err());
        assert_eq!(RequestKind::parse("save-pair-record"), Some(RequestKind::SavePairRecord));
    }

    #[test]
    fn documented_bytes() {
        let r = Reply::Result(0);
        let Action::Send(b) = act(&Misbehaviour::ShortLength, &r, 0, 5) else { panic!() };
        assert_eq!(b, [8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        let Action::Send(b) = act(&Misbehaviour::HugeLength, &r, 0, 5) else { panic!() };
        assert_eq!(b[..4], [0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(act(&Misbehaviour::TruncatedHeader, &r, 0, 5), Action::SendAndClose(vec![20, 0, 0, 0, 0, 0, 0]));
        let Action::SendAndClose(b) = act(&Misbehaviour::TruncatedPayload, &Reply::Result(1), 1, 5) else { panic!() };
        assert_eq!(b.len(), 16 + 278 / 2);
        let Action::Send(b) = act(&Misbehaviour::BinaryPlist, &r, 1, 5) else { panic!() };
        assert!(b[16..].starts_with(b"bplist00"));
        let Action::Send(b) = act(&Misbehaviour::WrongKind, &r, 0, 5) else { panic!() };
        assert_eq!(b, [20, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        let Action::Send(b) = act(&Misbehaviour::WrongKind, &Reply::Dict(Dictionary::new()), 1, 5) else { panic!() };
        assert_eq!(b.len(), 294);
        assert_eq!(act(&Misbehaviour::NeverReply, &r, 0, 5), Action::Silent);
        assert_eq!(act(&Misbehaviour::CloseWithoutReply, &r, 0, 5), Action::SendAndClose(vec![]));
    }
}
