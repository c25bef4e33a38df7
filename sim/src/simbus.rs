//! The server of the simulated USB bus: [`SimDevice`]s "plugged in" behind a UNIX socket,
//! so that the library's USB backend in *another process* (selected there with
//! `USBMUXD_SIMBUS=/path/to/socket`) finds them, opens them and talks to them as if they
//! were iPhones on USB. The program `usbmux-simd` wraps this server with a command line
//! and a stdin control protocol.
//!
//! # Wire protocol, version 1
//!
//! Defined (and shared) in the library: `usbmuxd::usb::simbus`, module
//! [`usbmuxd::usb::simbus::wire`]. In short:
//!
//! * every connection starts with a hello line from the client,
//!   `USBSIMBUS 1 CONTROL` or `USBSIMBUS 1 OPEN <bus_id>`, answered with
//!   `USBSIMBUS 1 OK[ key=value…]` or `USBSIMBUS 1 ERR <code> <text>` (then closed); codes
//!   `version`, `bad-request`, `no-device`, `busy`; lines ≤ 1024 bytes;
//! * a **control** connection then receives `ARRIVED bus_id=… vendor_id=0x… product_id=0x…
//!   location=0x… speed_bps=… serial=…` for each device present, `SYNC`, then `ARRIVED` /
//!   `LEFT bus_id=…` as devices are plugged in and out;
//! * a **device** connection (reply `OK max_packet_size=<n>`) carries frames in both
//!   directions: a big-endian `u32` length and that many bytes, one bulk transfer per
//!   frame, at most 65536 bytes; an empty frame is a zero-length packet.
//!
//! # What the server does
//!
//! * **Host → device**: each frame is one bulk OUT transfer, fed to
//!   [`SimDevice::handle_input`] (an empty frame is `handle_input(&[])`, the ZLP that
//!   terminates a transfer whose length is a multiple of wMaxPacketSize). A frame over
//!   65536 bytes closes the connection; the device stays plugged in.
//! * **Device → host**: like a host controller with 16 KiB bulk IN reads: each device
//!   packet (one [`SimDevice::poll_transmit`]) goes out as frames of at most
//!   [`USB_READ_SIZE`] bytes, and a packet whose length is a multiple of 16384 is followed
//!   by an empty frame (the device's terminating ZLP completes the next read empty).
//! * **Timers**: a thread per device runs [`SimDevice::handle_timeout`] when
//!   [`SimDevice::poll_timeout`] says, on the real clock.
//! * **One host per device**: a second `OPEN` while a device connection is open is refused
//!   (`busy`), like a claimed interface. Closing the connection releases the device, which
//!   keeps its state; output the device queued while nobody had it open is discarded when
//!   it is opened again. A new host starts with VERSION, which restarts the device's
//!   session.
//! * **Unplug** ([`SimBusServer::unplug`]): the device connection is closed, `LEFT` goes to
//!   every control connection, and the device is [`SimDevice::unplug`]ged. Plugging the
//!   same configuration in again makes a new device with a new address and bus id, as on
//!   real USB.
//!
//! Addresses: every device is on bus 1, at addresses 2–127 handed out in turn (skipping
//! those in use); `bus_id = (1 << 8) | address`, `location = (1 << 16) | address`.
//!
//! ```no_run
//! use usbmux_sim::simbus::{PlugOptions, SimBusServer};
//! use usbmux_sim::DeviceConfig;
//!
//! let server = SimBusServer::bind("/tmp/simbus.sock")?;
//! let config = DeviceConfig::new().udid("00008030-001A2B3C4D5E6F70").with_default_services();
//! let info = server.plug(config, PlugOptions::default())?;
//! assert_eq!(info.serial, "00008030001A2B3C4D5E6F70"); // the raw USB serial, no dash
//! // … run a program with USBMUXD_SIMBUS=/tmp/simbus.sock …
//! server.unplug(info.bus_id);
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::config::{DeviceConfig, Framing};
use crate::event::Event;
use crate::SimDevice;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use usbmuxd::usb::simbus::wire::{self, Hello, Refusal};
use usbmuxd::usb::simbus::MAX_TRANSFER;
use usbmuxd::usb::transport::APPLE_VENDOR_ID;
use usbmuxd::usb::UsbDeviceInfo;
use usbmuxd::usbmux::codec::USB_READ_SIZE;

/// The bus number of every simulated device.
pub const BUS_NUMBER: u32 = 1;
/// Product id of [`PlugOptions::default`]: `0x12a8`, what recent iPhones report.
pub const DEFAULT_PRODUCT_ID: u16 = 0x12a8;
/// Link speed of [`PlugOptions::default`]: high speed, 480 Mbit/s.
pub const HIGH_SPEED_BPS: u64 = 480_000_000;
/// Device events kept per device for [`SimBusServer::take_events`] (older ones are
/// dropped).
pub const EVENT_LOG_LIMIT: usize = 4096;

/// Time a client gets to send its hello line; also the write timeout on control
/// connections (a client that stops reading them is dropped).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How a device appears on the bus (what USB enumeration would report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlugOptions {
    /// idVendor; default [`APPLE_VENDOR_ID`].
    pub vendor_id: u16,
    /// idProduct; default [`DEFAULT_PRODUCT_ID`].
    pub product_id: u16,
    /// Link speed in bit/s; default [`HIGH_SPEED_BPS`].
    pub speed_bps: u64,
    /// The iSerialNumber string; default (`None`): [`serial_for_udid`] of the device's
    /// UDID.
    pub serial: Option<String>,
}

impl Default for PlugOptions {
    fn default() -> PlugOptions {
        PlugOptions {
            vendor_id: APPLE_VENDOR_ID,
            product_id: DEFAULT_PRODUCT_ID,
            speed_bps: HIGH_SPEED_BPS,
            serial: None,
        }
    }
}

impl PlugOptions {
    /// The default options with another product id.
    pub fn product_id(product_id: u16) -> PlugOptions {
        PlugOptions { product_id, ..PlugOptions::default() }
    }
}

/// The USB serial number a device with `udid` reports: a 25-character UDID with a dash
/// after the 8th character (`00008030-001A2B3C4D5E6F70`) loses the dash, since the host
/// inserts it (`usb-mux-protocol.md` §1.8); any other UDID is its own serial.
pub fn serial_for_udid(udid: &str) -> String {
    if udid.len() == 25 && udid.as_bytes()[8] == b'-' && udid.is_ascii() {
        format!("{}{}", &udid[..8], &udid[9..])
    } else {
        udid.to_string()
    }
}

/// A plugged-in device, as [`SimBusServer::devices`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluggedDevice {
    /// What the bus reports.
    pub info: UsbDeviceInfo,
    /// The UDID of its configuration ([`DeviceConfig::udid`]).
    pub udid: String,
    /// wMaxPacketSize of its OUT endpoint (from [`Framing::Usb`]).
    pub max_packet_size: usize,
    /// Whether a host has it open (a device connection exists).
    pub open: bool,
}

/// The serving side of a simulated USB bus. Dropping it closes every connection, unplugs
/// every device and removes the socket file.
pub struct SimBusServer {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    /// `(dev, ino)` of the socket file we created, so we only ever remove our own.
    file_id: (u64, u64),
    stopping: AtomicBool,
    verbose: AtomicBool,
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
}

struct Registry {
    devices: BTreeMap<u64, Arc<Slot>>,
    /// Open control connections (id, write half).
    controls: Vec<(u64, UnixStream)>,
    /// The address tried next.
    next_address: u32,
}

/// One plugged-in device.
struct Slot {
    info: UsbDeviceInfo,
    udid: String,
    max_packet_size: usize,
    gone: AtomicBool,
    /// The open device connection `(id, socket)`: who has the device; taken to close it
    /// without waiting for `state` (whose holder may be blocked writing to that socket).
    owner: Mutex<Option<(u64, UnixStream)>>,
    state: Mutex<SlotState>,
    /// Wakes the timer thread (paired with `state`).
    wake: Condvar,
}

struct SlotState {
    device: SimDevice,
    /// Where device transfers go: the open connection `(id, socket)`.
    out: Option<(u64, UnixStream)>,
    events: VecDeque<Event>,
    buf: Vec<u8>,
    /// The deadline the timer thread waits for (`None`: it sleeps until woken). Host input
    /// wakes it only when the device then wants an earlier timer, not after every
    /// transfer (that cost a wake-up and lock contention per frame).
    timer_wait: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.verbose.load(Ordering::Relaxed) {
            eprintln!("usbmux-simd: {what}");
        }
    }

    /// Sends `text` to every control connection, dropping those that fail.
    fn broadcast(&self, reg: &mut Registry, text: &str) {
        reg.controls.retain(|(id, s)| match (&*s).write_all(text.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                self.log(format_args!("control connection {id}: {e}; dropped"));
                let _ = s.shutdown(Shutdown::Both);
                false
            }
        });
    }
}

impl SimBusServer {
    /// Listens on `path`. A stale socket file there (nobody accepting) is replaced; a live
    /// one is an `AddrInUse` error, anything else at `path` an `AlreadyExists` error.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<SimBusServer> {
        let path = path.as_ref().to_path_buf();
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        let meta = std::fs::symlink_metadata(&path)?;
        let shared = Arc::new(Shared {
            path,
            file_id: (meta.dev(), meta.ino()),
            stopping: AtomicBool::new(false),
            verbose: AtomicBool::new(false),
            registry: Mutex::new(Registry { devices: BTreeMap::new(), controls: Vec::new(), next_address: 2 }),
            next_conn: AtomicU64::new(1),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new().name("simbus-accept".into()).spawn(move || accept_loop(s, listener))?;
        Ok(SimBusServer { shared, accept: Some(accept) })
    }

    /// The socket's path (the value for `USBMUXD_SIMBUS`).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether to print connections and device events on stderr (default off).
    pub fn set_verbose(&self, on: bool) {
        self.shared.verbose.store(on, Ordering::Relaxed);
    }

    /// Plugs in a new device made from `config` (which must use [`Framing::Usb`]) and
    /// announces it on every control connection. Returns what the bus reports about it.
    ///
    /// # Errors
    /// `InvalidInput` for stream framing or a serial that is not 1–255 printable ASCII
    /// characters; `AlreadyExists` if a plugged-in device has the same serial;
    /// `AddrNotAvailable` when all 126 addresses are in use.
    pub fn plug(&self, config: DeviceConfig, options: PlugOptions) -> io::Result<UsbDeviceInfo> {
        let Framing::Usb { max_packet_size } = config.framing else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a device on the simulated bus needs USB framing"));
        };
        let serial = options.serial.clone().unwrap_or_else(|| serial_for_udid(&config.udid));
        if !wire::valid_serial(&serial) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad serial {serial:?}")));
        }
        let mut reg = lock(&self.shared.registry);
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the server is shutting down"));
        }
        if reg.devices.values().any(|s| s.info.serial == serial) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a device with serial {serial} is plugged in"),
            ));
        }
        // Addresses 2..=127 in turn, skipping those in use.
        let address = (0..126)
            .map(|i| (reg.next_address - 2 + i) % 126 + 2)
            .find(|a| !reg.devices.contains_key(&bus_id_of(*a)))
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "all 126 USB addresses are in use"))?;
        reg.next_address = (address - 2 + 1) % 126 + 2;
        let info = UsbDeviceInfo {
            bus_id: bus_id_of(address),
            vendor_id: options.vendor_id,
            product_id: options.product_id,
            serial,
            location: (BUS_NUMBER << 16) | address,
            speed_bps: options.speed_bps,
        };
        let slot = Arc::new(Slot {
            info: info.clone(),
            udid: config.udid.clone(),
            max_packet_size,
            gone: AtomicBool::new(false),
            owner: Mutex::new(None),
            state: Mutex::new(SlotState {
                device: SimDevice::new(config),
                out: None,
                events: VecDeque::new(),
                buf: Vec::new(),
                timer_wait: None,
            }),
            wake: Condvar::new(),
        });
        let slot_udid = slot.udid.clone();
        let timer_slot = Arc::clone(&slot);
        let timer_shared = Arc::clone(&self.shared);
        thread::Builder::new()
            .name(format!("simbus-timer-{}", info.bus_id))
            .spawn(move || timer_loop(&timer_shared, &timer_slot))?;
        reg.devices.insert(info.bus_id, slot);
        self.shared.broadcast(&mut reg, &wire::arrived_line(&info));
        self.shared.log(format_args!("plugged {} as bus id {} (serial {})", slot_udid, info.bus_id, info.serial));
        Ok(info)
    }

    /// Unplugs device `bus_id`: closes its device connection, sends `LEFT` on every
    /// control connection and unplugs the [`SimDevice`]. `false` if there is no such
    /// device.
    pub fn unplug(&self, bus_id: u64) -> bool {
        let mut reg = lock(&self.shared.registry);
        let Some(slot) = reg.devices.remove(&bus_id) else { return false };
        slot.gone.store(true, Ordering::SeqCst);
        if let Some((_, s)) = lock(&slot.owner).take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.broadcast(&mut reg, &wire::left_line(bus_id));
        drop(reg);
        let mut st = lock(&slot.state);
        st.out = None;
        st.device.unplug();
        drain_events(&self.shared, &slot, &mut st);
        drop(st);
        slot.wake.notify_all();
        self.shared.log(format_args!("unplugged {bus_id}"));
        true
    }

    /// The bus id of the plugged-in device whose UDID or serial is `udid`.
    pub fn find(&self, udid: &str) -> Option<u64> {
        let reg = lock(&self.shared.registry);
        reg.devices.values().find(|s| s.udid == udid || s.info.serial == udid).map(|s| s.info.bus_id)
    }

    /// The plugged-in devices, by bus id.
    pub fn devices(&self) -> Vec<PluggedDevice> {
        let reg = lock(&self.shared.registry);
        reg.devices
            .values()
            .map(|s| PluggedDevice {
                info: s.info.clone(),
                udid: s.udid.clone(),
                max_packet_size: s.max_packet_size,
                open: lock(&s.owner).is_some(),
            })
            .collect()
    }

    /// Number of open control connections.
    pub fn control_connections(&self) -> usize {
        lock(&self.shared.registry).controls.len()
    }

    /// Runs `f` on device `bus_id` (e.g. to change its misbehaviour or look at a
    /// service), then sends whatever it queued. `None` if there is no such device.
    pub fn with_device<R>(&self, bus_id: u64, f: impl FnOnce(&mut SimDevice) -> R) -> Option<R> {
        let slot = lock(&self.shared.registry).devices.get(&bus_id).cloned()?;
        let mut st = lock(&slot.state);
        let r = f(&mut st.device);
        st.device.poll_now(Instant::now());
        flush(&self.shared, &slot, &mut st);
        drop(st);
        slot.wake.notify_all();
        Some(r)
    }

    /// Takes the events device `bus_id` reported so far (at most [`EVENT_LOG_LIMIT`], the
    /// newest). Empty if there is no such device.
    pub fn take_events(&self, bus_id: u64) -> Vec<Event> {
        let Some(slot) = lock(&self.shared.registry).devices.get(&bus_id).cloned() else { return Vec::new() };
        let mut st = lock(&slot.state);
        drain_events(&self.shared, &slot, &mut st);
        st.events.drain(..).collect()
    }

    /// Stops serving: closes the listening socket, unplugs every device, closes every
    /// connection and removes the socket file. Also done on drop.
    pub fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop, which then sees `stopping`.
        let _ = UnixStream::connect(&self.shared.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let ids: Vec<u64> = lock(&self.shared.registry).devices.keys().copied().collect();
        for id in ids {
            self.unplug(id);
        }
        for (_, s) in lock(&self.shared.registry).controls.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.shared.path) {
            if (meta.dev(), meta.ino()) == self.shared.file_id {
                let _ = std::fs::remove_file(&self.shared.path);
            }
        }
    }
}

impl Drop for SimBusServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bus_id_of(address: u32) -> u64 {
    u64::from((BUS_NUMBER << 8) | address)
}

fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let s = Arc::clone(&shared);
        let _ = thread::Builder::new().name(format!("simbus-conn-{id}")).spawn(move || serve(&s, stream, id));
    }
}

/// Writes a refusal and closes.
fn refuse(stream: &UnixStream, code: &'static str, text: String) {
    let _ = (&*stream).write_all(wire::err_line(&Refusal { code, text }).as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

/// One accepted connection: the hello, then control or device service.
fn serve(shared: &Arc<Shared>, stream: UnixStream, id: u64) {
    let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HELLO_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(MAX_TRANSFER + 4, read_half);
    let hello = match wire::read_line(&mut reader) {
        Ok(Some(line)) => wire::parse_hello(&line),
        Ok(None) => return,
        Err(e) => Err(Refusal { code: "bad-request", text: e.to_string() }),
    };
    let _ = stream.set_read_timeout(None);
    match hello {
        Err(r) => {
            shared.log(format_args!("connection {id}: refused: {} {}", r.code, r.text));
            refuse(&stream, r.code, r.text);
        }
        Ok(Hello::Control) => serve_control(shared, stream, reader, id),
        Ok(Hello::Open(bus_id)) => serve_device(shared, stream, reader, id, bus_id),
    }
}

fn serve_control(shared: &Arc<Shared>, stream: UnixStream, mut reader: BufReader<UnixStream>, id: u64) {
    {
        let mut reg = lock(&shared.registry);
        if shared.stopping.load(Ordering::SeqCst) {
            return refuse(&stream, "no-device", "the server is shutting down".into());
        }
        let mut text = wire::ok_line(&[]);
        for slot in reg.devices.values() {
            text.push_str(&wire::arrived_line(&slot.info));
        }
        text.push_str(wire::SYNC_LINE);
        if (&stream).write_all(text.as_bytes()).is_err() {
            return;
        }
        let Ok(write_half) = stream.try_clone() else { return };
        reg.controls.push((id, write_half));
    }
    shared.log(format_args!("control connection {id} opened"));
    // The client sends nothing more; read (and discard) until it closes.
    let mut sink = [0u8; 256];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    lock(&shared.registry).controls.retain(|(c, _)| *c != id);
    let _ = stream.shutdown(Shutdown::Both);
    shared.log(format_args!("control connection {id} closed"));
}

fn serve_device(shared: &Arc<Shared>, stream: UnixStream, mut reader: BufReader<UnixStream>, id: u64, bus_id: u64) {
    let slot = lock(&shared.registry).devices.get(&bus_id).cloned();
    let Some(slot) = slot else {
        return refuse(&stream, "no-device", format!("no device with bus id {bus_id} is plugged in"));
    };
    {
        let mut owner = lock(&slot.owner);
        if slot.gone.load(Ordering::SeqCst) {
            return refuse(&stream, "no-device", format!("device {bus_id} was unplugged"));
        }
        if let Some((other, _)) = &*owner {
            return refuse(&stream, "busy", format!("device {bus_id} is open on connection {other}"));
        }
        let Ok(closer) = stream.try_clone() else { return };
        *owner = Some((id, closer));
    }
    let opened =
        (&stream).write_all(wire::ok_line(&[("max_packet_size", slot.max_packet_size.to_string())]).as_bytes());
    // Device transfers have no timeout (a real bulk IN read waits for the host); unplugging
    // interrupts a blocked write by shutting the socket down.
    let _ = stream.set_write_timeout(None);
    if opened.is_ok() {
        shared.log(format_args!("device {bus_id} opened on connection {id}"));
        {
            let mut st = lock(&slot.state);
            // Output queued while nobody had the device open is not for this host.
            while st.device.poll_transmit().is_some() {}
            if let Ok(out) = stream.try_clone() {
                st.out = Some((id, out));
            }
        }
        let why = device_input(shared, &slot, &mut reader);
        shared.log(format_args!("device {bus_id}, connection {id}: {why}"));
    }
    // Release the device (unless unplugging already did).
    let mut owner = lock(&slot.owner);
    if matches!(&*owner, Some((c, _)) if *c == id) {
        *owner = None;
    }
    drop(owner);
    let _ = stream.shutdown(Shutdown::Both);
    let mut st = lock(&slot.state);
    if matches!(&st.out, Some((c, _)) if *c == id) {
        st.out = None;
    }
}

/// Feeds the host's transfers to the device until the connection ends; returns why it
/// ended.
fn device_input(shared: &Shared, slot: &Slot, reader: &mut BufReader<UnixStream>) -> String {
    loop {
        let transfer = match wire::read_frame(reader) {
            Ok(Some(t)) => t,
            Ok(None) => return "closed by the host".into(),
            Err(e) => return format!("closed: {e}"),
        };
        if slot.gone.load(Ordering::SeqCst) {
            return "unplugged".into();
        }
        let mut st = lock(&slot.state);
        if st.device.handle_input(&transfer, Instant::now()).is_err() {
            return "unplugged".into();
        }
        flush(shared, slot, &mut st);
        let wake = timer_due_earlier(&st);
        drop(st);
        if wake {
            slot.wake.notify_all();
        }
    }
}

/// Whether the device now wants a timer earlier than the one the timer thread waits for.
fn timer_due_earlier(st: &SlotState) -> bool {
    match (st.device.poll_timeout(), st.timer_wait) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(at), Some(waiting)) => at < waiting,
    }
}

/// Sends everything the device queued to the open connection (or discards it if none),
/// as bulk IN reads of at most 16 KiB; collects the device's events.
fn flush(shared: &Shared, slot: &Slot, st: &mut SlotState) {
    let mut buf = std::mem::take(&mut st.buf);
    buf.clear();
    while let Some(packet) = st.device.poll_transmit() {
        if st.out.is_none() {
            continue;
        }
        for read in packet.chunks(USB_READ_SIZE) {
            wire::put_frame(&mut buf, read);
        }
        if !packet.is_empty() && packet.len() % USB_READ_SIZE == 0 {
            wire::put_frame(&mut buf, &[]);
        }
    }
    if !buf.is_empty() {
        if let Some((id, s)) = &st.out {
            if let Err(e) = (&*s).write_all(&buf) {
                shared.log(format_args!("device {}, connection {id}: write failed: {e}", slot.info.bus_id));
                let _ = s.shutdown(Shutdown::Both);
                st.out = None;
            }
        }
    }
    st.buf = buf;
    drain_events(shared, slot, st);
}

fn drain_events(shared: &Shared, slot: &Slot, st: &mut SlotState) {
    while let Some(e) = st.device.poll_event() {
        shared.log(format_args!("device {}: {e:?}", slot.info.bus_id));
        if st.events.len() == EVENT_LOG_LIMIT {
            st.events.pop_front();
        }
        st.events.push_back(e);
    }
}

/// Runs the device's timers on the real clock until it is unplugged.
fn timer_loop(shared: &Shared, slot: &Slot) {
    let mut st = lock(&slot.state);
    loop {
        if slot.gone.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        st = match st.device.poll_timeout() {
            Some(at) if at <= now => {
                st.device.handle_timeout(now);
                flush(shared, slot, &mut st);
                continue;
            }
            Some(at) => {
                st.timer_wait = Some(at);
                slot.wake.wait_timeout(st, at - now).unwrap_or_else(|p| p.into_inner()).0
            }
            None => {
                st.timer_wait = None;
                slot.wake.wait(st).unwrap_or_else(|p| p.into_inner())
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials() {
        assert_eq!(serial_for_udid("00008030-001A2B3C4D5E6F70"), "00008030001A2B3C4D5E6F70");
        assert_eq!(
            serial_for_udid("0123456789abcdef0123456789abcdef01234567"),
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(serial_for_udid("00008030001A2B3C4D5E6F70"), "00008030001A2B3C4D5E6F70");
        assert_eq!(serial_for_udid("0000803-0001A2B3C4D5E6F70"), "0000803-0001A2B3C4D5E6F70");
    }

    #[test]
    fn server_types_are_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<SimBusServer>();
    }
}
