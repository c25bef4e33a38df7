//! The USB backend as an in-process usbmuxd: one I/O thread that owns the bus, one
//! [`Engine`] per device, and serves the ordinary client protocol over socket pairs.
//!
//! The library's daemon client connects to it exactly as to the real daemon (a
//! `socketpair` instead of `/var/run/usbmuxd`), so every request — ListDevices, Listen,
//! Connect, ReadBUID, pair records — behaves the same on both backends, and after a
//! successful Connect the caller holds a real socket whose other end this thread bridges
//! to the device's pseudo-TCP connection.
//!
//! Flow control is end to end: bytes from the device are taken from the engine only as
//! fast as the caller's socket accepts them (the engine acknowledges only what was taken,
//! so a slow reader pauses the device), and bytes from the caller are read only while the
//! engine's send queue has room.

use super::pairing::PairStore;
use super::transport::{Bus, BusEvent, DeviceLink, LinkEvent, UsbDeviceInfo};
use crate::proto::{
    attached_dict, decode_request, device_event_dict, encode_binary_device_add, encode_binary_device_event,
    encode_plist_message, encode_result, msgtype, result, ConnectionType, DeviceRecord, FrameDecoder, Header,
    IncomingRequest, Request, VERSION_BINARY, VERSION_PLIST,
};
use crate::usbmux::{ConnectFailure, ConnectionId, Engine, EngineConfig, EngineEvent};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use plist::{Dictionary, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
/// Largest request a client may send (the daemon's limit).
const MAX_REQUEST: u32 = 0x10000;
/// Bytes moved per read or write on a bridged connection.
const CHUNK: usize = 64 * 1024;

/// What other threads hand to the I/O thread.
enum Input {
    Bus(BusEvent),
    /// An event of the link of the device with this handle.
    Link(u32, LinkEvent),
    Client(std::os::unix::net::UnixStream),
    Shutdown,
}

/// The mailbox of the I/O thread.
struct Inbox {
    queue: Mutex<VecDeque<Input>>,
    waker: Waker,
}

impl Inbox {
    fn push(&self, input: Input) {
        let mut queue = self.queue.lock();
        queue.push_back(input);
        // The I/O thread drains the whole queue each turn: one wake-up per batch suffices.
        if queue.len() == 1 {
            let _ = self.waker.wake();
        }
    }
}

/// A running backend. Dropping it stops the I/O thread.
pub struct UsbDaemon {
    inbox: Arc<Inbox>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UsbDaemon {
    /// Starts the I/O thread on `bus`, keeping pair records in `pairing`.
    pub fn start(mut bus: Box<dyn Bus>, pairing: PairStore) -> io::Result<UsbDaemon> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let inbox = Arc::new(Inbox { queue: Mutex::new(VecDeque::new()), waker });
        let sink_inbox = inbox.clone();
        bus.start(Arc::new(move |e| sink_inbox.push(Input::Bus(e))))?;
        crate::debug!(1, "usb_backend", "{}", bus.describe());
        let mut server = Server {
            poll,
            bus,
            inbox: inbox.clone(),
            pairing,
            devices: BTreeMap::new(),
            by_bus_id: HashMap::new(),
            next_handle: 1,
            clients: HashMap::new(),
            next_token: 1,
            deferred: Vec::new(),
            buf: vec![0u8; CHUNK],
            packet: Vec::with_capacity(64 * 1024),
        };
        let thread = std::thread::Builder::new().name("usbmuxd-usb".into()).spawn(move || server.run())?;
        Ok(UsbDaemon { inbox, thread: Some(thread) })
    }

    /// A new client connection, as if connected to the daemon's socket.
    pub fn connect_client(&self) -> io::Result<std::os::unix::net::UnixStream> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        self.inbox.push(Input::Client(theirs));
        Ok(ours)
    }
}

impl Drop for UsbDaemon {
    fn drop(&mut self) {
        self.inbox.push(Input::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Device {
    /// When the device was opened: requests that list devices wait (up to
    /// [`SETTLE_TIME`]) for its version exchange, so a device present at start-up is seen.
    opened: Instant,
    info: UsbDeviceInfo,
    record: DeviceRecord,
    link: Box<dyn DeviceLink>,
    engine: Engine,
    /// Visible to clients (version exchange done).
    visible: bool,
    /// Engine connection → client token.
    conns: HashMap<ConnectionId, Token>,
}

enum ClientState {
    Command,
    Listening {
        version: u32,
    },
    Connecting {
        handle: u32,
        conn: ConnectionId,
        version: u32,
        tag: u32,
    },
    /// A raw pipe to a device connection. `device_done`: the device side ended; close
    /// once everything received has been written.
    Connected {
        handle: u32,
        conn: ConnectionId,
        device_done: bool,
    },
}

struct Client {
    sock: UnixStream,
    decoder: FrameDecoder,
    state: ClientState,
    /// Bytes for the client not yet written (replies, events, device data).
    out: Vec<u8>,
    out_pos: usize,
    readable: bool,
    writable: bool,
    /// Close once `out` is flushed.
    closing: bool,
}

struct Server {
    poll: Poll,
    bus: Box<dyn Bus>,
    inbox: Arc<Inbox>,
    pairing: PairStore,
    devices: BTreeMap<u32, Device>,
    by_bus_id: HashMap<u64, u32>,
    next_handle: u32,
    clients: HashMap<Token, Client>,
    next_token: usize,
    /// ListDevices / Listen requests waiting for devices still starting up.
    deferred: Vec<(Token, IncomingRequest)>,
    buf: Vec<u8>,
    packet: Vec<u8>,
}

/// The daemon's UDID rule: a 24-character serial gets a dash after the 8th character.
fn udid_from_serial(serial: &str) -> String {
    let mut udid = serial.to_string();
    if udid.len() == 24 && udid.is_ascii() {
        udid.insert(8, '-');
    }
    udid
}

impl Server {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout = self
                .devices
                .values()
                .filter_map(|d| d.engine.poll_timeout())
                .chain(self.settle_deadline())
                .min()
                .map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::debug!(0, "usb_backend", "poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if let Some(c) = self.clients.get_mut(&ev.token()) {
                    c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    c.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                }
            }
            let inputs: Vec<Input> = self.inbox.queue.lock().drain(..).collect();
            for input in inputs {
                match input {
                    Input::Bus(e) => self.bus_event(e),
                    Input::Link(handle, e) => self.link_event(handle, e),
                    Input::Client(s) => self.add_client(s),
                    Input::Shutdown => return,
                }
            }
            let now = Instant::now();
            for d in self.devices.values_mut() {
                if d.engine.poll_timeout().is_some_and(|t| t <= now) {
                    d.engine.handle_timeout(now);
                }
            }
            self.service_clients();
            self.drive_devices();
            if !self.deferred.is_empty() && self.settle_deadline().is_none() {
                for (token, req) in std::mem::take(&mut self.deferred) {
                    self.handle_request(token, req);
                }
            }
            // Replies and events queued while handling devices go out now, not at the
            // next wake-up.
            let pending: Vec<Token> =
                self.clients.iter().filter(|(_, c)| c.out_pos < c.out.len()).map(|(t, _)| *t).collect();
            for token in pending {
                self.flush(token);
            }
        }
    }

    /// While a device is still in its version exchange (and not for longer than
    /// [`SETTLE_TIME`]), requests that list devices wait for it.
    fn settle_deadline(&self) -> Option<Instant> {
        self.devices
            .values()
            .filter(|d| !d.visible)
            .map(|d| d.opened + SETTLE_TIME)
            .filter(|t| *t > Instant::now())
            .min()
    }

    // ---- devices --------------------------------------------------------------------

    fn bus_event(&mut self, e: BusEvent) {
        match e {
            BusEvent::Arrived(info) if info.is_mux_device() => self.open_device(info),
            BusEvent::Arrived(_) => {}
            BusEvent::Left(bus_id) => {
                if let Some(handle) = self.by_bus_id.get(&bus_id).copied() {
                    self.remove_device(handle, "device unplugged");
                }
            }
        }
    }

    fn open_device(&mut self, info: UsbDeviceInfo) {
        if self.by_bus_id.contains_key(&info.bus_id) {
            return;
        }
        // Link events name the device by its handle, never reused: a late event from a
        // link that is gone cannot touch a device re-plugged under the same bus id.
        let handle = self.next_handle;
        let inbox = self.inbox.clone();
        let link = match self.bus.open(&info, Arc::new(move |e| inbox.push(Input::Link(handle, e)))) {
            Ok(l) => l,
            Err(e) => {
                crate::debug!(1, "usb_backend", "cannot open device {} ({}): {e}", info.serial, info.bus_id);
                return;
            }
        };
        self.next_handle = self.next_handle.checked_add(1).unwrap_or(1);
        let config = EngineConfig { usb_read_size: link.read_size(), ..EngineConfig::default() };
        let mut engine = Engine::new(config);
        engine.start();
        let record = DeviceRecord {
            handle,
            product_id: info.product_id as u32,
            udid: udid_from_serial(&info.serial),
            connection: ConnectionType::Usb,
            network_address: Vec::new(),
        };
        crate::debug!(2, "usb_backend", "device {} ({}) opened as handle {handle}", record.udid, info.bus_id);
        self.by_bus_id.insert(info.bus_id, handle);
        self.devices.insert(
            handle,
            Device { opened: Instant::now(), info, record, link, engine, visible: false, conns: HashMap::new() },
        );
    }

    fn link_event(&mut self, handle: u32, e: LinkEvent) {
        match e {
            LinkEvent::Transfer(bytes) => {
                if let Some(d) = self.devices.get_mut(&handle) {
                    d.engine.handle_input(&bytes, Instant::now());
                }
            }
            LinkEvent::Gone(why) => self.remove_device(handle, &why),
        }
    }

    fn remove_device(&mut self, handle: u32, why: &str) {
        let Some(mut d) = self.devices.remove(&handle) else { return };
        self.by_bus_id.remove(&d.info.bus_id);
        crate::debug!(1, "usb_backend", "device {} removed: {why}", d.record.udid);
        d.engine.device_gone();
        // Let the engine's resets and failures reach the clients.
        self.engine_events(&mut d);
        // The engine goes with the device: hand each caller everything it still holds,
        // then close the caller's socket once that is written. (Our reading side stays
        // open until then: a caller whose write failed might tear down and lose what is
        // still on its way to it, as iproxy 2.0.2 does.)
        for (conn, token) in std::mem::take(&mut d.conns) {
            let Some(c) = self.clients.get_mut(&token) else { continue };
            while let Ok(n) = d.engine.recv(conn, &mut self.buf) {
                if n == 0 {
                    break;
                }
                c.out.extend_from_slice(&self.buf[..n]);
            }
            c.closing = true;
            self.flush(token);
        }
        if d.visible {
            self.notify_listeners(|version| device_event(version, msgtype::DEVICE_REMOVE, "Detached", handle));
        }
    }

    /// Moves packets out of every engine and handles what the engines report.
    fn drive_devices(&mut self) {
        let handles: Vec<u32> = self.devices.keys().copied().collect();
        for handle in handles {
            let Some(mut d) = self.devices.remove(&handle) else { continue };
            let mut failed = None;
            loop {
                self.engine_events(&mut d);
                let mut sent = false;
                while d.engine.poll_transmit(&mut self.packet) {
                    sent = true;
                    if let Err(e) = d.link.send(&self.packet) {
                        failed = Some(format!("USB write failed: {e}"));
                        break;
                    }
                }
                if failed.is_some() || !sent {
                    break;
                }
            }
            self.engine_events(&mut d);
            self.devices.insert(handle, d);
            if let Some(why) = failed {
                self.remove_device(handle, &why);
            }
        }
    }

    fn engine_events(&mut self, d: &mut Device) {
        while let Some(e) = d.engine.poll_event() {
            match e {
                EngineEvent::Ready { version } => {
                    crate::debug!(2, "usb_backend", "device {} speaks mux version {version}", d.record.udid);
                    d.visible = true;
                    let (record, location) = (d.record.clone(), d.info.location);
                    self.notify_listeners(|version| attached(version, &record, location));
                }
                EngineEvent::VersionRejected { major, minor } => {
                    crate::debug!(
                        0,
                        "usb_backend",
                        "device {} speaks unknown mux version {major}.{minor}",
                        d.record.udid
                    );
                }
                EngineEvent::Connected(conn) => {
                    if let Some(token) = d.conns.get(&conn).copied() {
                        self.connect_finished(token, Ok(()));
                    }
                }
                EngineEvent::ConnectFailed(conn, why) => {
                    if let Some(token) = d.conns.remove(&conn) {
                        crate::debug!(1, "usb_backend", "connect on {} failed: {why:?}", d.record.udid);
                        let code = match why {
                            ConnectFailure::DeviceGone => result::BADDEV,
                            _ => result::CONNREFUSED,
                        };
                        self.connect_finished(token, Err(code));
                    }
                }
                EngineEvent::Readable(conn) => {
                    if let Some(c) = d.conns.get(&conn).and_then(|t| self.clients.get_mut(t)) {
                        c.writable = true; // try to move the data now
                    }
                }
                EngineEvent::Writable(conn) => {
                    if let Some(c) = d.conns.get(&conn).and_then(|t| self.clients.get_mut(t)) {
                        c.readable = true;
                    }
                }
                EngineEvent::Reset(conn, why) => {
                    crate::debug!(1, "usb_backend", "connection on {} reset: {why}", d.record.udid);
                    if let Some(c) = d.conns.get(&conn).and_then(|t| self.clients.get_mut(t)) {
                        if let ClientState::Connected { device_done, .. } = &mut c.state {
                            *device_done = true;
                            c.writable = true;
                        }
                    }
                }
                EngineEvent::DeviceMessage { kind, text } => {
                    crate::debug!(2, "usb_backend", "device {} says ({kind}): {text}", d.record.udid);
                }
                EngineEvent::InputDropped(e) => {
                    crate::debug!(1, "usb_backend", "bad input from {}: {e}", d.record.udid);
                }
            }
        }
        // Bridged data moves in service_clients, which needs the device: do it here for
        // this device's connections while we hold it.
        let tokens: Vec<Token> = d.conns.values().copied().collect();
        for token in tokens {
            self.pump_connection(token, d);
        }
    }

    // ---- clients --------------------------------------------------------------------

    fn add_client(&mut self, stream: std::os::unix::net::UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut sock = UnixStream::from_std(stream);
        let token = Token(self.next_token);
        self.next_token += 1;
        if self.poll.registry().register(&mut sock, token, Interest::READABLE | Interest::WRITABLE).is_err() {
            return;
        }
        self.clients.insert(
            token,
            Client {
                sock,
                decoder: FrameDecoder::new(MAX_REQUEST),
                state: ClientState::Command,
                out: Vec::new(),
                out_pos: 0,
                readable: true,
                writable: true,
                closing: false,
            },
        );
    }

    fn drop_client(&mut self, token: Token) {
        let Some(mut c) = self.clients.remove(&token) else { return };
        let _ = self.poll.registry().deregister(&mut c.sock);
        match c.state {
            ClientState::Connecting { handle, conn, .. } | ClientState::Connected { handle, conn, .. } => {
                if let Some(d) = self.devices.get_mut(&handle) {
                    d.conns.remove(&conn);
                    // The caller closed its end: reset the device connection (no FIN exists).
                    d.engine.close(conn);
                }
            }
            _ => {}
        }
    }

    fn service_clients(&mut self) {
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            let connected = match self.clients.get(&token).map(|c| &c.state) {
                Some(ClientState::Connected { handle, .. }) => Some(*handle),
                Some(_) => None,
                None => continue,
            };
            match connected {
                Some(handle) => {
                    if let Some(mut d) = self.devices.remove(&handle) {
                        self.pump_connection(token, &mut d);
                        self.devices.insert(handle, d);
                    } else {
                        // The device is gone and its data was already handed over.
                        self.flush(token);
                    }
                }
                None => {
                    self.read_requests(token);
                    self.flush(token);
                }
            }
        }
    }

    /// Writes pending output. Returns false if the client was dropped.
    fn flush(&mut self, token: Token) -> bool {
        let Some(c) = self.clients.get_mut(&token) else { return false };
        while c.out_pos < c.out.len() && c.writable {
            match c.sock.write(&c.out[c.out_pos..]) {
                Ok(0) => {
                    self.drop_client(token);
                    return false;
                }
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_client(token);
                    return false;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            if c.closing {
                self.drop_client(token);
                return false;
            }
        }
        true
    }

    fn read_requests(&mut self, token: Token) {
        loop {
            let Some(c) = self.clients.get_mut(&token) else { return };
            if !c.readable || c.closing {
                return;
            }
            match c.sock.read(&mut self.buf) {
                Ok(0) => return self.drop_client(token),
                Ok(n) => c.decoder.push(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_client(token),
            }
            loop {
                let Some(c) = self.clients.get_mut(&token) else { return };
                match c.decoder.next_frame() {
                    Ok(Some((header, payload))) => {
                        if !matches!(c.state, ClientState::Command) {
                            // As the daemon: a request outside command state ends the client.
                            return self.drop_client(token);
                        }
                        match decode_request(&header, &payload) {
                            Ok(req) => self.handle_request(token, req),
                            Err(e) => crate::debug!(1, "usb_backend", "ignoring undecodable request: {e}"),
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return self.drop_client(token),
                }
            }
        }
    }

    fn reply(&mut self, token: Token, bytes: Vec<u8>) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.out.extend_from_slice(&bytes);
        }
    }

    fn handle_request(&mut self, token: Token, req: IncomingRequest) {
        let Header { version, tag, .. } = req.header;
        // Replies use the plist protocol once the client spoke it.
        let version = if req.dict.is_some() { VERSION_PLIST } else { version.min(VERSION_PLIST) };
        let Some(request) = req.request.clone() else {
            return self.reply(token, encode_result(version, tag, result::BADCOMMAND));
        };
        if matches!(request, Request::Listen | Request::ListDevices) && self.settle_deadline().is_some() {
            self.deferred.push((token, req));
            return;
        }
        match request {
            Request::Listen => {
                self.reply(token, encode_result(version, tag, result::OK));
                let visible: Vec<(DeviceRecord, u32)> =
                    self.devices.values().filter(|d| d.visible).map(|d| (d.record.clone(), d.info.location)).collect();
                for (record, location) in visible {
                    self.reply(token, attached(version, &record, location));
                }
                if let Some(c) = self.clients.get_mut(&token) {
                    c.state = ClientState::Listening { version };
                }
            }
            Request::ListDevices => {
                let list: Vec<Value> = self
                    .devices
                    .values()
                    .filter(|d| d.visible)
                    .map(|d| Value::Dictionary(attached_dict(&d.record, Some(d.info.location))))
                    .collect();
                let mut dict = Dictionary::new();
                dict.insert("DeviceList".into(), Value::Array(list));
                self.reply(token, encode_plist_message(tag, &dict));
            }
            Request::Connect { device_id, port } => {
                let Some(d) = self.devices.get_mut(&device_id).filter(|d| d.visible) else {
                    return self.reply(token, encode_result(version, tag, result::BADDEV));
                };
                match d.engine.connect(port, Instant::now()) {
                    Ok(conn) => {
                        d.conns.insert(conn, token);
                        if let Some(c) = self.clients.get_mut(&token) {
                            c.state = ClientState::Connecting { handle: device_id, conn, version, tag };
                        }
                    }
                    Err(_) => self.reply(token, encode_result(version, tag, result::BADDEV)),
                }
            }
            Request::ReadBuid => {
                let mut dict = Dictionary::new();
                dict.insert("BUID".into(), self.pairing.read_buid().into());
                self.reply(token, encode_plist_message(tag, &dict));
            }
            Request::ReadPairRecord { record_id } => match self.pairing.read(&record_id) {
                Ok(data) => {
                    let mut dict = Dictionary::new();
                    dict.insert("PairRecordData".into(), Value::Data(data));
                    self.reply(token, encode_plist_message(tag, &dict));
                }
                Err(n) => self.reply(token, encode_result(VERSION_PLIST, tag, n)),
            },
            Request::SavePairRecord { record_id, data, device_id } => {
                let outcome = self.pairing.save(&record_id, &data);
                self.reply(token, encode_result(VERSION_PLIST, tag, outcome.err().unwrap_or(result::OK)));
                let paired = outcome.is_ok()
                    && device_id > 0
                    && self.devices.get(&device_id).is_some_and(|d| d.visible && d.record.udid == record_id);
                if paired {
                    self.notify_listeners(|version| device_event(version, msgtype::DEVICE_PAIRED, "Paired", device_id));
                }
            }
            Request::DeletePairRecord { record_id } => {
                let outcome = self.pairing.delete(&record_id);
                self.reply(token, encode_result(VERSION_PLIST, tag, outcome.err().unwrap_or(result::OK)));
            }
        }
    }

    fn connect_finished(&mut self, token: Token, outcome: Result<(), u32>) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let ClientState::Connecting { handle, conn, version, tag } = c.state else { return };
        match outcome {
            Ok(()) => {
                c.out.extend_from_slice(&encode_result(version, tag, result::OK));
                c.state = ClientState::Connected { handle, conn, device_done: false };
                c.readable = true;
            }
            Err(code) => {
                c.out.extend_from_slice(&encode_result(version, tag, code));
                c.state = ClientState::Command;
            }
        }
        c.writable = true;
    }

    fn notify_listeners(&mut self, message: impl Fn(u32) -> Vec<u8>) {
        for c in self.clients.values_mut() {
            if let ClientState::Listening { version } = c.state {
                c.out.extend_from_slice(&message(version));
                c.writable = true;
            }
        }
    }

    /// Moves data both ways between a connected client and its device connection.
    fn pump_connection(&mut self, token: Token, d: &mut Device) {
        // Device → client: take from the engine only what the socket accepts, so that
        // the engine's acknowledgements follow the reader.
        loop {
            if !self.flush(token) {
                return;
            }
            let Some(c) = self.clients.get_mut(&token) else { return };
            let ClientState::Connected { conn, .. } = c.state else { return };
            if !(c.writable && c.out.is_empty()) {
                break;
            }
            match d.engine.recv(conn, &mut self.buf) {
                Ok(n) if n > 0 => c.out.extend_from_slice(&self.buf[..n]),
                _ => break,
            }
        }
        let Some(c) = self.clients.get_mut(&token) else { return };
        let ClientState::Connected { conn, device_done, .. } = c.state else { return };
        if device_done {
            if c.out.is_empty() && d.engine.readable_len(conn) == 0 {
                // Everything the device sent has been handed over: close the pipe.
                d.conns.remove(&conn);
                d.engine.close(conn);
                c.closing = true;
                self.flush(token);
            }
            return;
        }
        // Client → device: read only while the engine's send queue has room.
        loop {
            let Some(c) = self.clients.get_mut(&token) else { return };
            if !c.readable {
                return;
            }
            let room = d.engine.send_capacity(conn).min(self.buf.len());
            if room == 0 {
                return;
            }
            match c.sock.read(&mut self.buf[..room]) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = d.engine.send(conn, &self.buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // The caller closed its end (or it failed): reset the device connection.
        d.conns.remove(&conn);
        d.engine.close(conn);
        self.drop_client(token);
    }
}

/// An `Attached` / `DEVICE_ADD` message in the listener's protocol.
fn attached(version: u32, record: &DeviceRecord, location: u32) -> Vec<u8> {
    if version == VERSION_BINARY {
        encode_binary_device_add(record, location)
    } else {
        encode_plist_message(0, &attached_dict(record, Some(location)))
    }
}

/// A `Detached`/`Paired` (binary REMOVE/PAIRED) message in the listener's protocol.
fn device_event(version: u32, binary: u32, name: &str, handle: u32) -> Vec<u8> {
    if version == VERSION_BINARY {
        encode_binary_device_event(binary, handle)
    } else {
        encode_plist_message(0, &device_event_dict(name, handle))
    }
}

/// How long a Listen-based device list should wait for devices still starting up.
pub const SETTLE_TIME: Duration = Duration::from_millis(500);
