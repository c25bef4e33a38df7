//! One client connection: reads requests, answers them like the open-source daemon
//! (daemon spec §4–§6), applies armed misbehaviours, and ends as a listener, a pipe to a
//! device service, or closed.

use crate::config::{ProtocolMode, Service, TestDevice};
use crate::log::LoggedRequest;
use crate::misbehaviour::{act, Action, Misbehaviour, Reply, RequestKind};
use crate::net::Stream;
use crate::services::{self, Counters};
use crate::state::{Event, ListenerEntry, Shared};
use plist::{Dictionary, Value};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use usbmuxd::proto::{
    attached_dict, decode_request, encode_result, msgtype, result, ConnectionType, Header, IncomingRequest, Request,
    HEADER_LEN, VERSION_BINARY, VERSION_PLIST,
};

/// The daemon closes connections announcing a message longer than this.
const MAX_REQUEST_LEN: u32 = 0x10000;
const EINVAL: u32 = 22;
/// A listener that does not take its events within this time is dropped.
const LISTENER_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What happens after the reply has been sent.
enum After {
    Continue,
    Listen,
    Pipe { device: TestDevice, service: Service, counters: Arc<Counters> },
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    stream: Stream,
    /// Protocol of our replies: 0 until the client sends its first plist message.
    version: u32,
    /// Identification keys of the client's last plist request.
    info: Dictionary,
}

/// Serves a client until it disconnects, the daemon stops, or the protocol says to close.
pub(crate) fn serve(shared: Arc<Shared>, id: u64, stream: Stream) {
    let mut conn = Connection { shared, id, stream, version: VERSION_BINARY, info: Dictionary::new() };
    conn.run();
    if conn.shared.state.lock().listeners.remove(&id).is_some() {
        conn.shared.poke();
    }
}

fn kind_of(req: &IncomingRequest) -> RequestKind {
    match &req.request {
        Some(Request::Listen) => RequestKind::Listen,
        Some(Request::Connect { .. }) => RequestKind::Connect,
        Some(Request::ListDevices) => RequestKind::ListDevices,
        Some(Request::ReadBuid) => RequestKind::ReadBuid,
        Some(Request::ReadPairRecord { .. }) => RequestKind::ReadPairRecord,
        Some(Request::SavePairRecord { .. }) => RequestKind::SavePairRecord,
        Some(Request::DeletePairRecord { .. }) => RequestKind::DeletePairRecord,
        None => match message_type(req) {
            Some("ListListeners") => RequestKind::ListListeners,
            Some("ReadPairRecord") => RequestKind::ReadPairRecord,
            Some("SavePairRecord") => RequestKind::SavePairRecord,
            Some("DeletePairRecord") => RequestKind::DeletePairRecord,
            _ => RequestKind::Other,
        },
    }
}

fn message_type(req: &IncomingRequest) -> Option<&str> {
    req.dict.as_ref()?.get("MessageType")?.as_string()
}

impl Connection {
    fn run(&mut self) {
        while let Some((header, payload)) = self.read_frame() {
            let decoded = decode_request(&header, &payload);
            self.log(&header, &payload, &decoded);
            let tag = header.tag;

            // Version checks come first and never consume a misbehaviour.
            if header.version != VERSION_BINARY && header.version != VERSION_PLIST {
                if !self.send(&encode_result(self.version, tag, result::BADVERSION)) {
                    return;
                }
                continue;
            }
            if header.message == msgtype::PLIST {
                if self.shared.state.lock().mode == ProtocolMode::BinaryOnly {
                    // An old daemon does not know message 8 at all.
                    if !self.send(&encode_result(VERSION_BINARY, tag, result::BADVERSION)) {
                        return;
                    }
                    continue;
                }
                self.version = VERSION_PLIST;
            }
            let request = match decoded {
                Ok(r) => r,
                // Unparseable plist or no MessageType: the daemon logs it and stays silent.
                Err(_) if header.message == msgtype::PLIST => continue,
                Err(_) => {
                    if !self.send(&encode_result(self.version, tag, result::BADCOMMAND)) {
                        return;
                    }
                    continue;
                }
            };
            self.remember_identification(&request);

            let mut misbehaviour = self.shared.state.lock().arsenal.take(kind_of(&request));
            if let Some(Misbehaviour::Delay(d)) = misbehaviour {
                std::thread::sleep(d);
                misbehaviour = None;
            }
            let (reply, after) = self.plan(&request);
            if let Some(m) = misbehaviour {
                match act(&m, &reply, self.version, tag) {
                    Action::Send(bytes) if self.send(&bytes) => continue,
                    Action::Silent => continue,
                    Action::SendAndClose(bytes) => {
                        self.send(&bytes);
                        return;
                    }
                    Action::Send(_) => return,
                }
            }
            let bytes = reply.encode(self.version, tag);
            match after {
                After::Continue => {
                    if !self.send(&bytes) {
                        return;
                    }
                }
                After::Listen => return self.listen(&bytes),
                After::Pipe { device, service, counters } => {
                    if self.send(&bytes) {
                        if let Ok(stream) = self.stream.try_clone() {
                            services::run(&service, stream, &device, &counters);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// The next request; `None` on EOF, error, or a length the daemon refuses (< 16 or
    /// > 64 KiB: closed without reply).
    fn read_frame(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut raw = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut raw).ok()?;
        let header = Header::decode(&raw, MAX_REQUEST_LEN).ok()?;
        let mut payload = vec![0u8; header.payload_len()];
        self.stream.read_exact(&mut payload).ok()?;
        Some((header, payload))
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    fn log(&self, header: &Header, payload: &[u8], decoded: &Result<IncomingRequest, usbmuxd::proto::DecodeError>) {
        let mut raw = header.encode().to_vec();
        raw.extend_from_slice(payload);
        let (request, dict, error) = match decoded {
            Ok(r) => (r.request.clone(), r.dict.clone(), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        self.shared.record(LoggedRequest { client: self.id, header: *header, request, dict, error, raw });
    }

    fn remember_identification(&mut self, request: &IncomingRequest) {
        let Some(dict) = &request.dict else { return };
        for key in ["BundleID", "ClientVersionString", "ProgName", "kLibUSBMuxVersion"] {
            if let Some(v) = dict.get(key) {
                self.info.insert(key.into(), v.clone());
            }
        }
    }

    /// The normal reply to a request, carrying out side effects that do not depend on
    /// the reply being sent (pair-record storage, `Paired` events).
    fn plan(&self, incoming: &IncomingRequest) -> (Reply, After) {
        let Some(request) = &incoming.request else {
            return (self.unmodelled(incoming), After::Continue);
        };
        let reply = match request {
            Request::Listen => return (Reply::Result(result::OK), After::Listen),
            Request::Connect { device_id, port } => return self.plan_connect(incoming, *device_id, *port),
            Request::ListDevices => {
                let state = self.shared.state.lock();
                if !state.list_devices {
                    Reply::Result(result::BADCOMMAND)
                } else {
                    let list = state
                        .devices
                        .values()
                        .map(|d| {
                            let location = (d.connection == ConnectionType::Usb).then_some(d.location);
                            Value::Dictionary(attached_dict(&d.record(), location))
                        })
                        .collect();
                    Reply::Dict(single("DeviceList", Value::Array(list)))
                }
            }
            Request::ReadBuid => Reply::Dict(single("BUID", self.shared.store.lock().read_buid().into())),
            Request::ReadPairRecord { record_id } => match self.shared.store.lock().read(record_id) {
                Ok(data) => Reply::Dict(single("PairRecordData", Value::Data(data))),
                Err(errno) => Reply::Result(errno),
            },
            Request::SavePairRecord { record_id, data, device_id } => {
                match self.shared.store.lock().save(record_id, data) {
                    Ok(()) => {
                        self.announce_pairing(record_id, *device_id);
                        Reply::Result(result::OK)
                    }
                    Err(errno) => Reply::Result(errno),
                }
            }
            Request::DeletePairRecord { record_id } => {
                Reply::Result(self.shared.store.lock().delete(record_id).err().unwrap_or(result::OK))
            }
        };
        (reply, After::Continue)
    }

    /// Requests the codec leaves undecoded: `ListListeners`, pair-record requests with
    /// missing or mistyped keys (22), anything else (1).
    fn unmodelled(&self, incoming: &IncomingRequest) -> Reply {
        match message_type(incoming) {
            Some("ListListeners") => {
                Reply::Dict(single("ListenerList", Value::Array(self.shared.state.lock().listener_list())))
            }
            Some("ReadPairRecord" | "SavePairRecord" | "DeletePairRecord") => Reply::Result(EINVAL),
            _ => Reply::Result(result::BADCOMMAND),
        }
    }

    fn plan_connect(&self, incoming: &IncomingRequest, device_id: u32, port: u16) -> (Reply, After) {
        let fail = |n| (Reply::Result(n), After::Continue);
        if let Some(dict) = &incoming.dict {
            if dict.get("DeviceID").is_none() {
                return fail(result::BADDEV);
            }
            if dict.get("PortNumber").is_none() {
                return fail(result::BADCOMMAND);
            }
        }
        let mut state = self.shared.state.lock();
        let Some(device) = state.devices.get(&device_id).cloned() else {
            return fail(result::BADDEV);
        };
        let Some(service) = device.services.get(&port).cloned() else {
            return fail(result::CONNREFUSED);
        };
        let counters = state.counters(device_id, port);
        (Reply::Result(result::OK), After::Pipe { device, service, counters })
    }

    /// Daemon §6.7 step 5: `Paired` to listeners if the DeviceID names a device whose UDID
    /// is the record id.
    fn announce_pairing(&self, record_id: &str, device_id: u32) {
        let mut state = self.shared.state.lock();
        if device_id > 0 && state.devices.get(&device_id).is_some_and(|d| d.udid == record_id) {
            state.broadcast(Event::Paired(device_id));
        }
    }

    /// Sends the Listen reply and the current devices, then waits for the client to go
    /// away. Any byte from the client closes the connection, as upstream does.
    fn listen(&mut self, reply: &[u8]) {
        {
            let mut state = self.shared.state.lock();
            let Ok(mut stream) = self.stream.try_clone() else {
                return;
            };
            let _ = stream.set_write_timeout(Some(LISTENER_WRITE_TIMEOUT));
            let mut bytes = reply.to_vec();
            for dev in state.devices.values() {
                bytes.extend_from_slice(&Event::Add(dev).encode(self.version));
            }
            if stream.write_all(&bytes).is_err() {
                return;
            }
            let info = self.info.clone();
            state.listeners.insert(self.id, ListenerEntry { stream, version: self.version, info });
        }
        self.shared.poke();
        let _ = self.stream.read(&mut [0u8; 1]);
        self.stream.shutdown(Shutdown::Both);
    }
}

fn single(key: &str, value: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(key.into(), value);
    d
}
