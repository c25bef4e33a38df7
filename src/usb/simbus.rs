//! A simulated USB bus served by another process: the [`Bus`] the backend uses when
//! `USBMUXD_SIMBUS=/path/to/socket` is set, so that the unmodified library inside a real
//! program (idevice_id, ideviceinfo, iproxy, …) talks to simulated iPhones instead of
//! USB hardware. The server side is the simulator program `usbmux-simd` (crate
//! `usbmux-sim`, module `simbus`); this is the way to test the USB backend without
//! hardware.
//!
//! # Wire protocol, version 1
//!
//! A UNIX stream socket served by the simulator. The library opens one **control**
//! connection (discovery and hot-plug) and one **device** connection per device it opens.
//!
//! **Hello.** Every connection starts with one line from the client and one line in
//! reply. Lines are ASCII, end with `\n` and are at most [`MAX_LINE`] bytes long
//! (including the `\n`):
//!
//! ```text
//! client: USBSIMBUS 1 CONTROL              (a control connection)
//! client: USBSIMBUS 1 OPEN <bus_id>        (a device connection to device <bus_id>)
//! server: USBSIMBUS 1 OK[ <key>=<value>]*
//! server: USBSIMBUS 1 ERR <code> <text>    (then the server closes the connection)
//! ```
//!
//! The number after `USBSIMBUS` is the protocol version ([`PROTOCOL_VERSION`]); a server
//! answers a version it does not speak with `ERR version …`, naming its own version in
//! its reply. Error codes: `version`, `bad-request` (not a hello line, too long),
//! `no-device` (no device with that bus id is plugged in), `busy` (the device is open on
//! another connection: like a claimed USB interface, a device has at most one).
//!
//! **Control connection.** After `OK`, the server sends one line per device present,
//! then `SYNC`, then a line for every arrival and departure, in the order they happen:
//!
//! ```text
//! ARRIVED bus_id=257 vendor_id=0x05ac product_id=0x12a8 location=0x00010001 speed_bps=480000000 serial=00008030001A2B3C4D5E6F70
//! SYNC
//! LEFT bus_id=257
//! ```
//!
//! Fields are `key=value` words in any order (numbers decimal, or hex with `0x`); the
//! fields of [`UsbDeviceInfo`] are all required. `serial` is the raw USB iSerialNumber
//! (1–255 printable ASCII characters, no spaces): for a modern device 24 hex digits
//! without the dash, which the backend inserts (`usb-mux-protocol.md` §1.8). Unknown line
//! kinds and unknown keys are ignored, so later versions can add them. The client sends
//! nothing after its hello; closing the connection ends the subscription.
//!
//! **Device connection.** The `OK` reply carries `max_packet_size=<n>` (the bulk OUT
//! endpoint's wMaxPacketSize; 512 if absent). From then on both directions carry
//! **frames**: a 4-byte big-endian length, then that many bytes. A frame is one bulk
//! transfer, so transfer boundaries survive; a zero-length frame is a zero-length packet
//! (ZLP). A frame longer than [`MAX_TRANSFER`] (65536) bytes is a protocol violation: the
//! receiver closes the connection (it never allocates the announced size).
//!
//! * client → server: one bulk OUT transfer per frame. The client sends each mux packet
//!   as one frame, followed by an empty frame when `needs_zlp(len, max_packet_size)`,
//!   exactly as a USB host must (§2.2).
//! * server → client: one completed bulk IN read per frame, as a host controller reading
//!   in [`USB_READ_SIZE`] units would see them: a device packet of 49152 bytes arrives as
//!   three frames of 16384, and a packet whose length is a multiple of 16384 is followed
//!   by an empty frame (the device's ZLP completing the next read). Hence
//!   [`DeviceLink::read_size`] is `Some(USB_READ_SIZE)`.
//!
//! **Unplugging** a device makes the server close its device connection (the client
//! reports [`LinkEvent::Gone`]) and send `LEFT` on every control connection. Closing a
//! device connection from the client side is "releasing the interface": the device stays
//! plugged in and may be opened again.
//!
//! # This client
//!
//! [`SimBus::start`] connects, reports the devices present before it returns (it reads up
//! to `SYNC`), then follows arrivals and departures on a thread. If the simulator goes
//! away, every known device is reported `Left` and the thread reconnects every 500 ms, so a
//! restarted simulator is picked up; dropping the `SimBus` stops it. [`SimBus::open`]
//! opens a device connection with one reader thread that reports each frame as
//! [`LinkEvent::Transfer`] and the end of the connection as [`LinkEvent::Gone`]. Dropping a
//! link closes its connection and reports nothing more (a delivery already under way on
//! the reader thread may still complete).

use super::transport::{Bus, BusEvent, BusSink, DeviceLink, LinkEvent, LinkSink, UsbDeviceInfo};
use crate::usbmux::codec::{needs_zlp, USB_READ_SIZE};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// The environment variable that selects the simulated bus: the path of the simulator's
/// socket. Unset or empty: real USB.
pub const ENV_VAR: &str = "USBMUXD_SIMBUS";
/// The protocol version this module speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The first word of every hello line.
pub const MAGIC: &str = "USBSIMBUS";
/// Longest line (hello, reply, control line), `\n` included.
pub const MAX_LINE: usize = 1024;
/// Largest transfer (frame payload) either side accepts.
pub const MAX_TRANSFER: usize = 65536;
/// wMaxPacketSize assumed when the server does not say.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 512;
/// Longest serial number.
pub const MAX_SERIAL: usize = 255;

/// Time allowed for connecting and the hello exchange (and the initial device list).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between reconnection attempts after the simulator went away.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// The socket path from [`ENV_VAR`], if set and not empty.
pub fn socket_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Building and parsing the protocol's lines and frames; shared by this client and the
/// simulator's server so both speak the same protocol.
pub mod wire {
    use super::*;

    /// What a client asks for in its hello line.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Hello {
        /// A control connection.
        Control,
        /// A device connection to the device with this bus id.
        Open(u64),
    }

    /// Why a hello line was refused: the error code and text of the `ERR` reply.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Refusal {
        /// `version`, `bad-request`, `no-device` or `busy`.
        pub code: &'static str,
        /// Human-readable detail.
        pub text: String,
    }

    /// A line from the server on a control connection.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ControlLine {
        /// A device present or arriving.
        Arrived(UsbDeviceInfo),
        /// The device with this bus id left.
        Left(u64),
        /// The initial device list is complete.
        Sync,
        /// A line kind this version does not know (to be ignored).
        Unknown,
    }

    /// The hello line of a client (with `\n`).
    pub fn hello_line(hello: Hello) -> String {
        match hello {
            Hello::Control => format!("{MAGIC} {PROTOCOL_VERSION} CONTROL\n"),
            Hello::Open(bus_id) => format!("{MAGIC} {PROTOCOL_VERSION} OPEN {bus_id}\n"),
        }
    }

    /// Parses a client's hello line (without `\n`).
    pub fn parse_hello(line: &str) -> Result<Hello, Refusal> {
        let bad = |text: &str| Refusal { code: "bad-request", text: text.to_string() };
        let words: Vec<&str> = line.split(' ').collect();
        if words.first() != Some(&MAGIC) || words.len() < 3 {
            return Err(bad("expected: USBSIMBUS <version> CONTROL | OPEN <bus_id>"));
        }
        match words[1].parse::<u32>() {
            Ok(PROTOCOL_VERSION) => {}
            _ => {
                return Err(Refusal {
                    code: "version",
                    text: format!("unsupported protocol version {:?}; this server speaks {PROTOCOL_VERSION}", words[1]),
                })
            }
        }
        match &words[2..] {
            ["CONTROL"] => Ok(Hello::Control),
            ["OPEN", id] => id.parse().map(Hello::Open).map_err(|_| bad("bad bus id")),
            _ => Err(bad("unknown request")),
        }
    }

    /// The server's `OK` reply with attributes (with `\n`).
    pub fn ok_line(attrs: &[(&str, String)]) -> String {
        let mut s = format!("{MAGIC} {PROTOCOL_VERSION} OK");
        for (k, v) in attrs {
            s.push_str(&format!(" {k}={v}"));
        }
        s.push('\n');
        s
    }

    /// The server's `ERR` reply (with `\n`); newlines in the text become spaces.
    pub fn err_line(refusal: &Refusal) -> String {
        let text: String = refusal.text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let mut s = format!("{MAGIC} {PROTOCOL_VERSION} ERR {} {text}", refusal.code);
        s.truncate(MAX_LINE - 1);
        s.push('\n');
        s
    }

    /// Parses the server's reply to a hello (without `\n`): the `OK` attributes, or the
    /// error text.
    pub fn parse_reply(line: &str) -> Result<Vec<(String, String)>, String> {
        let mut words = line.splitn(4, ' ');
        if words.next() != Some(MAGIC) {
            return Err(format!("not a simulated-bus server (it said {:?})", truncate(line)));
        }
        let version = words.next().unwrap_or("");
        match words.next() {
            Some("OK") if version == PROTOCOL_VERSION.to_string() => Ok(words
                .next()
                .unwrap_or("")
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()),
            Some("OK") => Err(format!("server speaks protocol version {version:?}, not {PROTOCOL_VERSION}")),
            Some("ERR") => Err(format!("refused: {}", words.next().unwrap_or(""))),
            _ => Err(format!("bad reply {:?}", truncate(line))),
        }
    }

    fn truncate(s: &str) -> String {
        s.chars().take(80).collect()
    }

    /// Whether `s` is acceptable as a serial: 1–255 printable ASCII characters, no spaces.
    pub fn valid_serial(s: &str) -> bool {
        (1..=MAX_SERIAL).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
    }

    /// The `ARRIVED` line for a device (with `\n`).
    pub fn arrived_line(d: &UsbDeviceInfo) -> String {
        format!(
            "ARRIVED bus_id={} vendor_id=0x{:04x} product_id=0x{:04x} location=0x{:08x} speed_bps={} serial={}\n",
            d.bus_id, d.vendor_id, d.product_id, d.location, d.speed_bps, d.serial
        )
    }

    /// The `LEFT` line for a device (with `\n`).
    pub fn left_line(bus_id: u64) -> String {
        format!("LEFT bus_id={bus_id}\n")
    }

    /// The line that ends the initial device list (with `\n`).
    pub const SYNC_LINE: &str = "SYNC\n";

    /// A decimal number or `0x` hex.
    pub fn parse_number(s: &str) -> Option<u64> {
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) if !hex.is_empty() && hex.len() <= 16 => u64::from_str_radix(hex, 16).ok(),
            Some(_) => None,
            None => s.parse().ok(),
        }
    }

    /// Parses a line of a control connection (without `\n`).
    pub fn parse_control_line(line: &str) -> Result<ControlLine, String> {
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let kind = words.next().unwrap_or("");
        let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |key: &str| {
            fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).ok_or_else(|| format!("{kind} without {key}"))
        };
        let num = |key: &str, max: u64| -> Result<u64, String> {
            let v = get(key)?;
            parse_number(v).filter(|n| *n <= max).ok_or_else(|| format!("bad {key} {v:?}"))
        };
        match kind {
            "ARRIVED" => {
                let serial = get("serial")?;
                if !valid_serial(serial) {
                    return Err(format!("bad serial {serial:?}"));
                }
                Ok(ControlLine::Arrived(UsbDeviceInfo {
                    bus_id: num("bus_id", u64::MAX)?,
                    vendor_id: num("vendor_id", u16::MAX.into())? as u16,
                    product_id: num("product_id", u16::MAX.into())? as u16,
                    serial: serial.to_string(),
                    location: num("location", u32::MAX.into())? as u32,
                    speed_bps: num("speed_bps", u64::MAX)?,
                }))
            }
            "LEFT" => Ok(ControlLine::Left(num("bus_id", u64::MAX)?)),
            "SYNC" => Ok(ControlLine::Sync),
            _ => Ok(ControlLine::Unknown),
        }
    }

    /// Reads one line of at most [`MAX_LINE`] bytes and returns it without `\n`.
    /// `Ok(None)` at end of stream before any byte; an error for a longer line, a line cut
    /// off by the end of the stream, or one that is not ASCII.
    pub fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
        let mut line = Vec::new();
        let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.pop() != Some(b'\n') {
            let why = if n >= MAX_LINE { "line too long" } else { "connection closed inside a line" };
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        if !line.is_ascii() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line is not ASCII"));
        }
        Ok(Some(String::from_utf8(line).expect("ASCII is UTF-8")))
    }

    /// Appends one frame carrying `payload` to `out`.
    pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_TRANSFER);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Reads one frame. `Ok(None)` at end of stream on a frame boundary; an
    /// `InvalidData` error for a length over [`MAX_TRANSFER`] (nothing of that size is
    /// allocated) and `UnexpectedEof` for a frame cut short.
    pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_TRANSFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the {MAX_TRANSFER}-byte transfer limit"),
            ));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some(payload))
    }
}

use wire::{ControlLine, Hello};

/// A connection after its hello exchange: the socket (for writing), a reader positioned
/// after the server's reply (read timeout still set), and the reply's attributes.
type Connected = (UnixStream, BufReader<UnixStream>, Vec<(String, String)>);

/// Connects to `path` and does the hello exchange.
fn connect(path: &Path, hello: Hello) -> io::Result<Connected> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
    (&stream).write_all(wire::hello_line(hello).as_bytes())?;
    stream.set_write_timeout(None)?;
    // Large enough for a whole frame, so one read system call usually brings one in.
    let mut reader = BufReader::with_capacity(MAX_TRANSFER + 4, stream.try_clone()?);
    let line = wire::read_line(&mut reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the simulator closed the connection"))?;
    let attrs = wire::parse_reply(&line).map_err(|why| {
        let kind = if why.starts_with("refused: no-device") { io::ErrorKind::NotFound } else { io::ErrorKind::Other };
        io::Error::new(kind, format!("simulated bus {}: {why}", path.display()))
    })?;
    Ok((stream, reader, attrs))
}

/// State shared by a [`SimBus`] and its discovery thread.
struct BusShared {
    path: PathBuf,
    stopped: AtomicBool,
    /// The current control connection, so that dropping the bus can wake the thread.
    socket: Mutex<Option<UnixStream>>,
    /// Wakes the thread from its reconnection pause.
    wake: Condvar,
    devices: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

impl BusShared {
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Registers the connection's socket; `false` if the bus was dropped meanwhile.
    fn register(&self, stream: &UnixStream) -> bool {
        let mut slot = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopped() {
            return false;
        }
        *slot = stream.try_clone().ok();
        true
    }

    /// Connects and reads the initial list up to `SYNC`, reporting each device.
    fn session(&self, sink: &BusSink, known: &mut BTreeSet<u64>) -> io::Result<BufReader<UnixStream>> {
        let (stream, mut reader, _) = connect(&self.path, Hello::Control)?;
        if !self.register(&stream) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        loop {
            let line = wire::read_line(&mut reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before SYNC"))?;
            if self.handle_line(&line, sink, known) {
                break;
            }
        }
        stream.set_read_timeout(None)?;
        self.set_error(None);
        Ok(reader)
    }

    /// Handles one control line; `true` for `SYNC`.
    fn handle_line(&self, line: &str, sink: &BusSink, known: &mut BTreeSet<u64>) -> bool {
        match wire::parse_control_line(line) {
            Ok(ControlLine::Arrived(info)) => {
                if known.insert(info.bus_id) {
                    self.devices.store(known.len(), Ordering::Relaxed);
                    self.deliver(sink, BusEvent::Arrived(info));
                }
            }
            Ok(ControlLine::Left(bus_id)) => {
                if known.remove(&bus_id) {
                    self.devices.store(known.len(), Ordering::Relaxed);
                    self.deliver(sink, BusEvent::Left(bus_id));
                }
            }
            Ok(ControlLine::Sync) => return true,
            Ok(ControlLine::Unknown) => {}
            Err(why) => crate::debug!(1, "simbus", "ignoring control line {line:?}: {why}"),
        }
        false
    }

    fn deliver(&self, sink: &BusSink, event: BusEvent) {
        if !self.stopped() {
            sink(event);
        }
    }

    /// Reports every known device as gone.
    fn forget_all(&self, sink: &BusSink, known: &mut BTreeSet<u64>) {
        for bus_id in std::mem::take(known) {
            self.deliver(sink, BusEvent::Left(bus_id));
        }
        self.devices.store(0, Ordering::Relaxed);
    }

    /// The discovery thread: follows the control connection, reconnects when it ends.
    fn run(self: Arc<Self>, sink: BusSink, mut reader: Option<BufReader<UnixStream>>, mut known: BTreeSet<u64>) {
        while !self.stopped() {
            if let Some(mut r) = reader.take() {
                let end = loop {
                    match wire::read_line(&mut r) {
                        Ok(Some(line)) => {
                            self.handle_line(&line, &sink, &mut known);
                        }
                        Ok(None) => break "the simulator closed the control connection".to_string(),
                        Err(e) => break format!("control connection: {e}"),
                    }
                    if self.stopped() {
                        return;
                    }
                };
                if self.stopped() {
                    return;
                }
                crate::debug!(1, "simbus", "{end}; reconnecting");
                self.set_error(Some(end));
                self.forget_all(&sink, &mut known);
            }
            // Pause, then try again (dropping the bus wakes us up).
            {
                let guard = self.socket.lock().unwrap_or_else(|p| p.into_inner());
                if self.stopped() {
                    return;
                }
                let _ = self.wake.wait_timeout(guard, RECONNECT_EVERY);
            }
            if self.stopped() {
                return;
            }
            match self.session(&sink, &mut known) {
                Ok(r) => reader = Some(r),
                Err(e) => {
                    self.set_error(Some(e.to_string()));
                    self.forget_all(&sink, &mut known);
                }
            }
        }
    }
}

/// The simulated bus: a [`Bus`] whose devices live in a simulator process (see the
/// module documentation for the protocol).
pub struct SimBus {
    shared: Arc<BusShared>,
    started: bool,
}

impl SimBus {
    /// A bus served at `path` (nothing is connected before [`Bus::start`] / [`Bus::open`]).
    pub fn new(path: impl Into<PathBuf>) -> SimBus {
        SimBus {
            shared: Arc::new(BusShared {
                path: path.into(),
                stopped: AtomicBool::new(false),
                socket: Mutex::new(None),
                wake: Condvar::new(),
                devices: AtomicUsize::new(0),
                last_error: Mutex::new(None),
            }),
            started: false,
        }
    }

    /// The bus named by `USBMUXD_SIMBUS` ([`ENV_VAR`]), if it is set and not empty.
    pub fn from_env() -> Option<SimBus> {
        socket_from_env().map(SimBus::new)
    }

    /// The simulator's socket.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Bus for SimBus {
    /// Connects to the simulator and reports the devices present before returning; then
    /// follows arrivals and departures on a thread (reconnecting if the simulator
    /// restarts). Fails if the simulator cannot be reached now, or if already started.
    fn start(&mut self, sink: BusSink) -> io::Result<()> {
        if self.started {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "simulated bus already started"));
        }
        let mut known = BTreeSet::new();
        let reader = match self.shared.session(&sink, &mut known) {
            Ok(r) => r,
            Err(e) => {
                self.shared.set_error(Some(e.to_string()));
                return Err(io::Error::new(e.kind(), format!("simulated bus {}: {e}", self.shared.path.display())));
            }
        };
        self.started = true;
        let shared = Arc::clone(&self.shared);
        thread::Builder::new().name("usbmuxd-simbus".into()).spawn(move || shared.run(sink, Some(reader), known))?;
        Ok(())
    }

    fn open(&mut self, device: &UsbDeviceInfo, sink: LinkSink) -> io::Result<Box<dyn DeviceLink>> {
        Ok(Box::new(SimLink::open(&self.shared.path, device.bus_id, sink)?))
    }

    fn describe(&self) -> String {
        let path = self.shared.path.display();
        let error = self.shared.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match error {
            Some(e) => format!("simulated USB bus ({ENV_VAR}={path}): not connected: {e}"),
            None if !self.started => format!("simulated USB bus ({ENV_VAR}={path}), not started"),
            None => match self.shared.devices.load(Ordering::Relaxed) {
                0 => format!(
                    "simulated USB bus ({ENV_VAR}={path}): no devices plugged in (use `plug UDID` on usbmux-simd)"
                ),
                n => format!("simulated USB bus ({ENV_VAR}={path}): {n} device(s)"),
            },
        }
    }
}

impl Drop for SimBus {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let mut slot = self.shared.socket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
    }
}

/// An open device on the simulated bus: one device connection.
pub struct SimLink {
    stream: UnixStream,
    max_packet_size: usize,
    stopped: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl SimLink {
    /// Opens device `bus_id` on the bus at `path`; each transfer from the device goes to
    /// `sink` from a reader thread.
    pub fn open(path: &Path, bus_id: u64, sink: LinkSink) -> io::Result<SimLink> {
        let (stream, reader, attrs) = connect(path, Hello::Open(bus_id))?;
        let max_packet_size = attrs
            .iter()
            .find(|(k, _)| k == "max_packet_size")
            .and_then(|(_, v)| wire::parse_number(v))
            .filter(|n| (1..=MAX_TRANSFER as u64).contains(n))
            .map_or(DEFAULT_MAX_PACKET_SIZE, |n| n as usize);
        stream.set_read_timeout(None)?;
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        thread::Builder::new()
            .name(format!("usbmuxd-simbus-{bus_id}"))
            .spawn(move || read_transfers(reader, sink, flag))?;
        Ok(SimLink { stream, max_packet_size, stopped, buf: Vec::with_capacity(MAX_TRANSFER + 8) })
    }

    /// The device's wMaxPacketSize, from the server's reply.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }
}

/// The reader thread of a device connection.
fn read_transfers(mut reader: BufReader<UnixStream>, sink: LinkSink, stopped: Arc<AtomicBool>) {
    let why = loop {
        match wire::read_frame(&mut reader) {
            Ok(Some(transfer)) => {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                sink(LinkEvent::Transfer(transfer));
            }
            Ok(None) => break "device disconnected".to_string(),
            // The simulator closed the device connection with host transfers still
            // unread: the kernel reports that as a reset instead of EOF. Still an unplug.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break "device disconnected".to_string(),
            Err(e) => break format!("simulated bus: {e}"),
        }
    };
    if !stopped.load(Ordering::SeqCst) {
        sink(LinkEvent::Gone(why));
    }
}

impl DeviceLink for SimLink {
    fn read_size(&self) -> Option<usize> {
        Some(USB_READ_SIZE)
    }

    /// Writes the packet as one frame, plus an empty frame (ZLP) when its length is a
    /// multiple of the device's wMaxPacketSize; both in one write.
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        if packet.len() > MAX_TRANSFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("transfer of {} bytes exceeds {MAX_TRANSFER}", packet.len()),
            ));
        }
        self.buf.clear();
        wire::put_frame(&mut self.buf, packet);
        if needs_zlp(packet.len(), self.max_packet_size) {
            wire::put_frame(&mut self.buf, &[]);
        }
        (&self.stream).write_all(&self.buf)
    }
}

impl Drop for SimLink {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    fn info(bus_id: u64) -> UsbDeviceInfo {
        UsbDeviceInfo {
            bus_id,
            vendor_id: 0x05ac,
            product_id: 0x12a8,
            serial: "00008030001A2B3C4D5E6F70".into(),
            location: 0x0001_0002,
            speed_bps: 480_000_000,
        }
    }

    #[test]
    fn hello_lines_round_trip() {
        for h in [Hello::Control, Hello::Open(0), Hello::Open(u64::MAX)] {
            let line = hello_line(h);
            assert_eq!(parse_hello(line.trim_end_matches('\n')), Ok(h));
        }
        assert_eq!(hello_line(Hello::Open(258)), "USBSIMBUS 1 OPEN 258\n");
        assert_eq!(parse_hello("USBSIMBUS 2 CONTROL").unwrap_err().code, "version");
        assert_eq!(parse_hello("USBSIMBUS x CONTROL").unwrap_err().code, "version");
        for bad in [
            "",
            "GET / HTTP/1.0",
            "USBSIMBUS 1",
            "USBSIMBUS 1 OPEN",
            "USBSIMBUS 1 OPEN -1",
            "USBSIMBUS 1 OPEN 1 2",
            "USBSIMBUS 1 LIST",
        ] {
            assert_eq!(parse_hello(bad).unwrap_err().code, "bad-request", "{bad:?}");
        }
    }

    #[test]
    fn replies() {
        let ok = ok_line(&[("max_packet_size", "1024".into())]);
        assert_eq!(ok, "USBSIMBUS 1 OK max_packet_size=1024\n");
        assert_eq!(parse_reply(ok.trim_end()).unwrap(), vec![("max_packet_size".to_string(), "1024".to_string())]);
        assert_eq!(parse_reply("USBSIMBUS 1 OK").unwrap(), vec![]);
        let err = err_line(&Refusal { code: "no-device", text: "no device\nwith bus id 9".into() });
        assert_eq!(err, "USBSIMBUS 1 ERR no-device no device with bus id 9\n");
        assert!(parse_reply(err.trim_end()).unwrap_err().contains("no-device no device with bus id 9"));
        assert!(parse_reply("USBSIMBUS 2 OK").unwrap_err().contains("version"));
        assert!(parse_reply("HTTP/1.1 400").is_err());
    }

    #[test]
    fn control_lines_round_trip() {
        let d = info(258);
        let line = arrived_line(&d);
        assert_eq!(
            line,
            "ARRIVED bus_id=258 vendor_id=0x05ac product_id=0x12a8 location=0x00010002 speed_bps=480000000 serial=00008030001A2B3C4D5E6F70\n"
        );
        assert_eq!(parse_control_line(line.trim_end()), Ok(ControlLine::Arrived(d.clone())));
        assert_eq!(parse_control_line(left_line(258).trim_end()), Ok(ControlLine::Left(258)));
        assert_eq!(parse_control_line(SYNC_LINE.trim_end()), Ok(ControlLine::Sync));
        // Any order, extra keys and unknown kinds are fine.
        let shuffled = "ARRIVED serial=X speed_bps=5000000000 color=red location=65538 product_id=4776 vendor_id=1452 bus_id=0x102";
        let Ok(ControlLine::Arrived(i)) = parse_control_line(shuffled) else { panic!() };
        assert_eq!(
            (i.bus_id, i.product_id, i.vendor_id, i.location, i.speed_bps, i.serial.as_str()),
            (258, 0x12a8, 0x5ac, 0x10002, 5_000_000_000, "X")
        );
        assert_eq!(parse_control_line("BATTERY level=3"), Ok(ControlLine::Unknown));
        // Missing or out-of-range fields are errors, not panics.
        for bad in [
            "ARRIVED bus_id=1",
            "LEFT",
            "LEFT bus_id=x",
            "ARRIVED bus_id=1 vendor_id=0x10000 product_id=1 location=1 speed_bps=1 serial=A",
            "ARRIVED bus_id=1 vendor_id=1 product_id=1 location=0x100000000 speed_bps=1 serial=A",
            "ARRIVED bus_id=1 vendor_id=1 product_id=1 location=1 speed_bps=1 serial=",
            "ARRIVED bus_id=1 vendor_id=1 product_id=1 location=1 speed_bps=0x speed=1 serial=A",
        ] {
            assert!(parse_control_line(bad).is_err(), "{bad:?}");
        }
        assert!(
            valid_serial(&"f".repeat(255))
                && !valid_serial(&"f".repeat(256))
                && !valid_serial("a b")
                && !valid_serial("é")
        );
    }

    #[test]
    fn lines_are_limited() {
        let mut r = io::Cursor::new(b"abc\ndef".to_vec());
        assert_eq!(read_line(&mut r).unwrap().as_deref(), Some("abc"));
        assert!(read_line(&mut r).is_err(), "cut-off line");
        let mut r = io::Cursor::new(vec![b'x'; 5000]);
        assert_eq!(read_line(&mut r).unwrap_err().to_string(), "line too long");
        let mut ok = vec![b'y'; MAX_LINE - 1];
        ok.push(b'\n');
        assert_eq!(read_line(&mut io::Cursor::new(ok)).unwrap().unwrap().len(), MAX_LINE - 1);
        assert_eq!(read_line(&mut io::Cursor::new(Vec::new())).unwrap(), None);
    }

    #[test]
    fn frames() {
        let mut out = Vec::new();
        put_frame(&mut out, b"hello");
        put_frame(&mut out, b"");
        put_frame(&mut out, &[7; MAX_TRANSFER]);
        assert_eq!(&out[..9], b"\0\0\0\x05hello");
        let mut r = io::Cursor::new(out);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap().len(), MAX_TRANSFER);
        assert!(read_frame(&mut r).unwrap().is_none());
        let huge = io::Cursor::new(0xFFFF_FFFFu32.to_be_bytes().to_vec());
        assert_eq!(read_frame(&mut { huge }).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let over = io::Cursor::new(((MAX_TRANSFER + 1) as u32).to_be_bytes().to_vec());
        assert_eq!(read_frame(&mut { over }).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let cut = io::Cursor::new(b"\0\0\0\x05he".to_vec());
        assert_eq!(read_frame(&mut { cut }).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let cut = io::Cursor::new(b"\0\0".to_vec());
        assert_eq!(read_frame(&mut { cut }).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A socket path in a fresh temporary directory.
    fn temp_socket(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usbmuxd-simbus-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("bus.sock")
    }

    fn bus_sink() -> (BusSink, mpsc::Receiver<BusEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (Arc::new(move |e| drop(tx.lock().unwrap().send(e))), rx)
    }

    fn link_sink() -> (LinkSink, mpsc::Receiver<LinkEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (Arc::new(move |e| drop(tx.lock().unwrap().send(e))), rx)
    }

    const T: Duration = Duration::from_secs(5);

    /// Accepts one connection and checks its hello line.
    fn accept(l: &UnixListener, expect: &str) -> (UnixStream, BufReader<UnixStream>) {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_line(&mut r).unwrap().unwrap(), expect);
        (s, r)
    }

    #[test]
    fn discovery_against_a_fake_server() {
        let path = temp_socket("discovery");
        let l = UnixListener::bind(&path).unwrap();
        let mut bus = SimBus::new(&path);
        assert!(bus.describe().contains("not started"));
        let (sink, rx) = bus_sink();
        let server = thread::spawn(move || {
            let (mut s, _r) = accept(&l, "USBSIMBUS 1 CONTROL");
            let text = format!("{}{}BOGUS\nARRIVED bus_id=9\n{SYNC_LINE}", ok_line(&[]), arrived_line(&info(258)));
            s.write_all(text.as_bytes()).unwrap();
            (l, s)
        });
        bus.start(sink).unwrap();
        // The present device was reported before start returned; bad lines were skipped.
        assert_eq!(rx.try_recv().unwrap(), BusEvent::Arrived(info(258)));
        assert!(rx.try_recv().is_err());
        assert!(bus.describe().contains("1 device(s)"), "{}", bus.describe());
        let (l, mut s) = server.join().unwrap();
        s.write_all(format!("{}{}", arrived_line(&info(259)), left_line(258)).as_bytes()).unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), BusEvent::Arrived(info(259)));
        assert_eq!(rx.recv_timeout(T).unwrap(), BusEvent::Left(258));
        // The simulator goes away: the remaining device leaves, and the bus reconnects.
        drop(s);
        assert_eq!(rx.recv_timeout(T).unwrap(), BusEvent::Left(259));
        let (mut s, _r) = accept(&l, "USBSIMBUS 1 CONTROL");
        s.write_all(format!("{}{}{SYNC_LINE}", ok_line(&[]), arrived_line(&info(300))).as_bytes()).unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), BusEvent::Arrived(info(300)));
        // Dropping the bus closes the connection and nothing more is reported.
        drop(bus);
        let mut rest = Vec::new();
        s.set_read_timeout(Some(T)).unwrap();
        assert_eq!((&s).read_to_end(&mut rest).unwrap(), 0);
        let _ = s.write_all(arrived_line(&info(301)).as_bytes());
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn start_fails_without_a_server() {
        let path = temp_socket("absent");
        let mut bus = SimBus::new(&path);
        let (sink, _rx) = bus_sink();
        let e = bus.start(sink).unwrap_err();
        assert!(e.to_string().contains("bus.sock"), "{e}");
        assert!(bus.describe().contains("not connected"), "{}", bus.describe());
    }

    #[test]
    fn start_fails_on_a_refusal() {
        let path = temp_socket("refusal");
        let l = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _r) = accept(&l, "USBSIMBUS 1 CONTROL");
            s.write_all(err_line(&Refusal { code: "version", text: "no".into() }).as_bytes()).unwrap();
        });
        let (sink, _rx) = bus_sink();
        let e = SimBus::new(&path).start(sink).unwrap_err();
        assert!(e.to_string().contains("refused: version no"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn device_link_against_a_fake_server() {
        let path = temp_socket("link");
        let l = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, mut r) = accept(&l, "USBSIMBUS 1 OPEN 258");
            s.write_all(ok_line(&[("max_packet_size", "512".into())]).as_bytes()).unwrap();
            // What the host sent: 36 bytes, then 512 + ZLP, then 0 (an empty packet needs no ZLP).
            let got: Vec<usize> = (0..4).map(|_| read_frame(&mut r).unwrap().unwrap().len()).collect();
            assert_eq!(got, [36, 512, 0, 1000]);
            let mut out = Vec::new();
            put_frame(&mut out, &[1; 16384]);
            put_frame(&mut out, &[]);
            put_frame(&mut out, b"short");
            s.write_all(&out).unwrap();
            s
        });
        let (sink, rx) = link_sink();
        let mut bus = SimBus::new(&path);
        let mut link = bus.open(&info(258), sink).unwrap();
        assert_eq!(link.read_size(), Some(USB_READ_SIZE));
        link.send(&[0; 36]).unwrap();
        link.send(&[0; 512]).unwrap();
        link.send(&[0; 1000]).unwrap();
        assert_eq!(link.send(&vec![0; MAX_TRANSFER + 1]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let s = server.join().unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), LinkEvent::Transfer(vec![1; 16384]));
        assert_eq!(rx.recv_timeout(T).unwrap(), LinkEvent::Transfer(vec![]));
        assert_eq!(rx.recv_timeout(T).unwrap(), LinkEvent::Transfer(b"short".to_vec()));
        // Unplugged: the server closes the connection.
        drop(s);
        assert_eq!(rx.recv_timeout(T).unwrap(), LinkEvent::Gone("device disconnected".into()));
        assert!(link.send(b"x").is_err() || link.send(b"x").is_err());
    }

    #[test]
    fn unplug_with_host_transfers_unread_is_a_disconnect() {
        let path = temp_socket("unread");
        let l = UnixListener::bind(&path).unwrap();
        let (sent_tx, sent_rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut s, _r) = accept(&l, "USBSIMBUS 1 OPEN 258");
            s.write_all(ok_line(&[("max_packet_size", "512".into())]).as_bytes()).unwrap();
            // Unplugged before reading what the host sent: closing a UNIX socket with
            // unread data makes the peer's next read fail with ECONNRESET.
            sent_rx.recv().unwrap();
        });
        let (sink, rx) = link_sink();
        let mut link = SimBus::new(&path).open(&info(258), sink).unwrap();
        link.send(&[0; 36]).unwrap();
        sent_tx.send(()).unwrap();
        server.join().unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), LinkEvent::Gone("device disconnected".into()));
    }

    #[test]
    fn hostile_frames_end_the_link() {
        let path = temp_socket("hostile");
        let l = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _r) = accept(&l, "USBSIMBUS 1 OPEN 1");
            s.write_all(ok_line(&[("max_packet_size", "bogus".into())]).as_bytes()).unwrap();
            s.write_all(&0xFFFF_FFF0u32.to_be_bytes()).unwrap();
            s
        });
        let (sink, rx) = link_sink();
        let link = SimLink::open(&path, 1, sink).unwrap();
        assert_eq!(link.max_packet_size(), DEFAULT_MAX_PACKET_SIZE);
        let Ok(LinkEvent::Gone(why)) = rx.recv_timeout(T) else { panic!("expected Gone") };
        assert!(why.contains("exceeds"), "{why}");
        drop(server.join().unwrap());
    }

    #[test]
    fn refused_open_and_dropped_link() {
        let path = temp_socket("open");
        let l = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _r) = accept(&l, "USBSIMBUS 1 OPEN 5");
            s.write_all(err_line(&Refusal { code: "no-device", text: "no device 5".into() }).as_bytes()).unwrap();
            let (mut s, mut r) = accept(&l, "USBSIMBUS 1 OPEN 6");
            s.write_all(ok_line(&[]).as_bytes()).unwrap();
            // The host drops the link: end of stream, nothing else.
            assert!(read_frame(&mut r).unwrap().is_none());
            s.write_all(&[0, 0, 0, 1, 9]).ok();
        });
        let (sink, rx) = link_sink();
        let e = SimLink::open(&path, 5, Arc::clone(&sink)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        drop(SimLink::open(&path, 6, sink).unwrap());
        server.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "no events after drop");
    }
}
