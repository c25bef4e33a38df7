//! The real-hardware [`Bus`]: iOS devices on the machine's USB buses, through libusb
//! (the `rusb` crate; cargo feature `usb`, libusb built from source and linked in).
//!
//! # Threads
//!
//! - **The event thread** (`usbmuxd-libusb`) runs libusb's event loop
//!   (`handle_events` with a 500 ms tick, woken early by `libusb_interrupt_event_handler`
//!   when it has to stop). Hot-plug callbacks and the completions of the bulk IN transfers
//!   run there (or, briefly, on a thread inside a synchronous libusb call that took over
//!   event handling: libusb serialises event handling, so callbacks never overlap).
//!   It is shared by the bus and every link opened from it and stops when the last of
//!   them is dropped: a link that outlives its bus keeps working.
//! - **The discovery thread** (`usbmuxd-usb-discovery`) turns hot-plug callbacks (which
//!   may not do blocking I/O) into [`BusEvent`]s: it opens each new iOS device, reads its
//!   serial number and closes it again, then reports it. Where libusb has no hot-plug
//!   support it scans the bus every second instead (mark and sweep). A device that cannot
//!   be read (e.g. its node is not yet accessible because udev has not applied its rules)
//!   is tried again a second later, up to 5 times, and the reason is kept for
//!   [`Bus::describe`]. [`Bus::start`] returns once the devices present have been read
//!   and reported (or after 5 s), so a first device list is complete, as with the
//!   simulated bus. The thread ends when the bus is dropped.
//! - The backend's own thread calls [`DeviceLink::send`]: a synchronous bulk OUT
//!   transfer (then a zero-length one when [`needs_zlp`]), at most 10 s each.
//!
//! # Reads in flight
//!
//! Each link keeps [`IN_TRANSFERS`] (3) asynchronous bulk IN transfers of
//! [`IN_READ_SIZE`] (64 KiB) bytes queued, through libusb's asynchronous API
//! (`rusb::ffi`); each is handed to the link's sink from its completion callback and
//! resubmitted at once. The alternative, a thread calling rusb's synchronous `read_bulk`
//! in a loop, was rejected for two reasons:
//!
//! - **Throughput.** With one read queued, the endpoint has no buffer from the moment a
//!   read completes until the thread has handed it over and submitted the next one
//!   (reap, return, sink call and wake-up of the backend, SUBMITURB: tens of µs); the
//!   device NAKs meanwhile. With three queued, the next transfer is already on the bus
//!   while a completion is processed, as in upstream's daemon; the pipe only idles when
//!   the host falls behind by three whole transfers.
//! - **Framing and shutdown.** A synchronous read can only be stopped by its timeout;
//!   a timeout that cuts a transfer short hands over a partial transfer that looks
//!   like a short packet, i.e. the end of a mux packet, which breaks the USB framing
//!   [`Reassembler::usb`](crate::usbmux::Reassembler::usb) relies on. Asynchronous
//!   transfers are cancelled only when the link closes, when their data no longer
//!   matters.
//!
//! The read size is 64 KiB (= the largest packet the host accepts,
//! `codec::MAX_IN_PACKET`) rather than upstream's 16 KiB. A bulk IN transfer ends at the
//! device's short packet (or ZLP), which ends every mux packet, so every completion
//! holds exactly one whole mux packet (or a ZLP, which is not passed on): the backend's
//! reassembler takes it without copying instead of joining up to four 16 KiB pieces,
//! and there is one completion (one REAPURB and one SUBMITURB ioctl) per packet instead
//! of up to four. The read size is a multiple of every bulk max packet size, so a device
//! can never overflow it; a 64 KiB packet fills a read exactly and its ZLP completes the
//! next one empty. Should a device ever omit the short packet after a packet whose
//! length is a multiple of its max packet size, the transfer simply carries on into the
//! next packet: [`read_size`](DeviceLink::read_size) reports 64 KiB, so the reassembler
//! treats a full 64 KiB read as "more may follow" and splits by the length fields, and
//! only a short read ends a packet — the same rules as with 16 KiB reads.
//!
//! Counted on the umockdev bus (`tests/umockdev/`, every usbdevfs ioctl seen): the same
//! session (handshake, 200 000 bytes echoed, close) takes 7 IN completions and 91 ioctls
//! with 64 KiB reads against 19 completions and 115 ioctls with 16 KiB reads.
//!
//! Completions of one endpoint are reaped in submission order and their callbacks run
//! one at a time, so the sink sees transfers in the device's order. After the first
//! error (the device left: `LIBUSB_TRANSFER_NO_DEVICE`; stall, I/O error, overflow,
//! cancellation by anyone but us, or a failed resubmission) the sink gets one
//! [`LinkEvent::Gone`] and nothing more.
//!
//! Dropping a link cancels its transfers, waits (up to 5 s; they normally complete at
//! once) until every callback has returned, frees them, releases the interface and
//! closes the device. A link dropped from inside its own sink is closed on a short-lived
//! thread instead, since its callbacks cannot complete while the sink is running.
//!
//! # Opening a device (`usb-mux-protocol.md` §1.4–§1.8)
//!
//! Configuration: the mux interface is altsetting 0 with class/subclass/protocol exactly
//! 255/254/2 and exactly one bulk IN and one bulk OUT endpoint (in either order). Of the
//! configurations that have one, configuration 4 is preferred, else the highest (§1.4.3);
//! if setting it fails the next is tried. When the active configuration differs, kernel
//! drivers are detached first from the interfaces of the active and of the chosen
//! configuration (Linux only sees those of the active one). Only the mux interface is
//! claimed. The mode-switch vendor requests of upstream's development line (§1.3) are
//! not sent: like the 1.1.1 daemon, this only selects a configuration that already has
//! the mux interface. `wMaxPacketSize` of the OUT endpoint (64 if 0) decides ZLPs.
//!
//! Discovery reports the raw serial (string descriptor `iSerialNumber` in the first
//! LANGID, UTF-16LE → ASCII by the rules of §1.8; the backend adds the dash of 24-digit
//! serials), `location = (bus << 16) | address`, `bus_id = (bus << 8) | address` and the
//! speed in bit/s (§1.7).
//!
//! # Tests
//!
//! Unit tests below (descriptor parsing, configuration choice, serial conversion);
//! `tests/usb_rusb.rs` runs discovery on whatever machine it is on (here: no USB at all,
//! which must be reported, not crash or hang); `tests/umockdev/run.sh` runs the real
//! libusb paths against a simulated iPhone on a umockdev bus: enumeration, configuration,
//! claim, the IN ring, ZLPs, an engine session, close with reads queued, unplugging.
//!
//! # Unsafe code
//!
//! Only the asynchronous IN transfers (`InRing`) use `rusb::ffi`; each `unsafe`
//! block says why it is sound. The invariant everything rests on: a transfer, its buffer
//! and the `InRing` its `user_data` points to live until libusb has returned every
//! submitted transfer through the callback and the callback has returned
//! (`RingState::in_flight` counts both); they are freed only after that, or leaked if
//! it never happens.

use super::transport::{Bus, BusEvent, BusSink, DeviceLink, LinkEvent, LinkSink, UsbDeviceInfo, APPLE_VENDOR_ID};
use crate::usbmux::codec::{needs_zlp, MAX_IN_PACKET};
use ::rusb::{constants as c, ffi, Context, Device, DeviceHandle, Direction, TransferType, UsbContext};
use parking_lot::{Condvar, Mutex};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{c_int, c_void};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bulk IN transfers kept queued per device.
pub const IN_TRANSFERS: usize = 3;
/// Size of each bulk IN transfer: the largest mux packet the host accepts.
pub const IN_READ_SIZE: usize = MAX_IN_PACKET;
/// Limit for one bulk OUT transfer (the mux layer's flow control keeps the device
/// reading; a device that accepts nothing for this long is taken as hung).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Period of bus scans where libusb has no hot-plug support, and of retries.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts to read a new device's descriptors before giving up on it (until it
/// re-enumerates).
const MAX_ATTEMPTS: u32 = 5;
/// Timeout of the string-descriptor control transfers (as upstream).
const CONTROL_TIMEOUT: Duration = Duration::from_millis(1000);
/// The event thread's `handle_events` timeout (it is also interrupted explicitly).
const EVENT_TICK: Duration = Duration::from_millis(500);
/// How long [`Bus::start`] waits for the devices present to be read and reported.
const START_SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing a link waits for its cancelled transfers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The usbmux interface triplet (§1.3).
const MUX_CLASS: (u8, u8, u8) = (0xff, 0xfe, 0x02);
/// The configuration §1.4.3 prefers.
const PREFERRED_CONFIGURATION: u8 = 4;

// ---- pure helpers (unit-tested) -------------------------------------------------------

/// `bus_id` of a device: unique on the machine while it is attached.
pub fn bus_id(bus: u8, address: u8) -> u64 {
    (u64::from(bus) << 8) | u64::from(address)
}

/// `LocationID` of a device (§1.9).
pub fn location(bus: u8, address: u8) -> u32 {
    (u32::from(bus) << 16) | u32::from(address)
}

/// Link speed in bit/s as reported to clients (§1.7, master's table).
pub fn speed_bps(speed: ::rusb::Speed) -> u64 {
    match speed {
        ::rusb::Speed::Low => 1_500_000,
        ::rusb::Speed::Full => 12_000_000,
        ::rusb::Speed::High => 480_000_000,
        ::rusb::Speed::Super => 5_000_000_000,
        ::rusb::Speed::SuperPlus => 10_000_000_000,
        _ => 480_000_000,
    }
}

/// The text of a USB string descriptor by the rules of §1.8: UTF-16LE code units from
/// byte 2 up to `bLength`; a unit with a non-zero high byte or bit 7 set becomes `?`, a
/// zero unit ends the string, at most 255 characters.
pub fn string_descriptor_ascii(descriptor: &[u8]) -> String {
    let end = descriptor.first().map_or(0, |&b| usize::from(b)).min(descriptor.len());
    let mut out = String::new();
    let mut i = 2;
    while i + 1 < end && out.len() < 255 {
        let unit = u16::from_le_bytes([descriptor[i], descriptor[i + 1]]);
        if unit == 0 {
            break;
        }
        out.push(if unit > 0x7f { '?' } else { unit as u8 as char });
        i += 2;
    }
    out
}

/// One endpoint of an interface's altsetting 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSummary {
    /// `bEndpointAddress` (bit 7: IN).
    pub address: u8,
    pub bulk: bool,
    /// `wMaxPacketSize` (size bits only).
    pub max_packet_size: u16,
}

/// An interface's altsetting 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSummary {
    pub number: u8,
    /// Class, subclass, protocol.
    pub triplet: (u8, u8, u8),
    pub endpoints: Vec<EndpointSummary>,
}

/// What configuration selection needs of one configuration descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    /// `bConfigurationValue`.
    pub value: u8,
    pub interfaces: Vec<InterfaceSummary>,
}

/// Where the mux protocol runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxInterface {
    pub configuration: u8,
    pub interface: u8,
    pub endpoint_in: u8,
    pub endpoint_out: u8,
    /// `wMaxPacketSize` of the OUT endpoint, 64 when the descriptor says 0.
    pub out_max_packet_size: usize,
}

/// The mux interface of a configuration: altsetting 0 with exactly 255/254/2 and
/// exactly two endpoints, one bulk IN and one bulk OUT (either order).
pub fn mux_interface(config: &ConfigSummary) -> Option<MuxInterface> {
    config.interfaces.iter().find_map(|iface| {
        if iface.triplet != MUX_CLASS || iface.endpoints.len() != 2 {
            return None;
        }
        let is_in = |e: &&EndpointSummary| e.address & 0x80 != 0;
        let ep_in = iface.endpoints.iter().find(is_in)?;
        let ep_out = iface.endpoints.iter().find(|e| !is_in(e))?;
        if !ep_in.bulk || !ep_out.bulk {
            return None;
        }
        Some(MuxInterface {
            configuration: config.value,
            interface: iface.number,
            endpoint_in: ep_in.address,
            endpoint_out: ep_out.address,
            out_max_packet_size: match ep_out.max_packet_size {
                0 => 64,
                n => usize::from(n),
            },
        })
    })
}

/// The configurations with a mux interface in the order to try them (§1.4.3):
/// configuration 4 first, then from the highest down.
pub fn mux_candidates(configs: &[ConfigSummary]) -> Vec<MuxInterface> {
    let mut found: Vec<MuxInterface> = configs.iter().filter_map(mux_interface).collect();
    found.sort_by_key(|m| (m.configuration != PREFERRED_CONFIGURATION, std::cmp::Reverse(m.configuration)));
    found.dedup_by_key(|m| m.configuration);
    found
}

fn summarize(config: &::rusb::ConfigDescriptor) -> ConfigSummary {
    let interfaces = config
        .interfaces()
        .filter_map(|iface| {
            let alt = iface.descriptors().find(|d| d.setting_number() == 0)?;
            Some(InterfaceSummary {
                number: alt.interface_number(),
                triplet: (alt.class_code(), alt.sub_class_code(), alt.protocol_code()),
                endpoints: alt
                    .endpoint_descriptors()
                    .map(|e| EndpointSummary {
                        address: e.address(),
                        bulk: e.transfer_type() == TransferType::Bulk,
                        max_packet_size: e.max_packet_size() & 0x7ff,
                    })
                    .collect(),
            })
        })
        .collect();
    ConfigSummary { value: config.number(), interfaces }
}

fn is_mux_ids(vendor_id: u16, product_id: u16) -> bool {
    UsbDeviceInfo { bus_id: 0, vendor_id, product_id, serial: String::new(), location: 0, speed_bps: 0 }.is_mux_device()
}

fn device_name(device: &Device<Context>) -> String {
    format!("/dev/bus/usb/{:03}/{:03}", device.bus_number(), device.address())
}

fn io_error(what: impl std::fmt::Display, e: ::rusb::Error) -> io::Error {
    io::Error::new(error_kind(e), format!("{what}: {e}"))
}

fn error_kind(e: ::rusb::Error) -> io::ErrorKind {
    match e {
        ::rusb::Error::NoDevice => io::ErrorKind::NotConnected,
        ::rusb::Error::NotFound => io::ErrorKind::NotFound,
        ::rusb::Error::Access => io::ErrorKind::PermissionDenied,
        ::rusb::Error::Timeout => io::ErrorKind::TimedOut,
        ::rusb::Error::Pipe => io::ErrorKind::BrokenPipe,
        ::rusb::Error::Interrupted => io::ErrorKind::Interrupted,
        ::rusb::Error::InvalidParam => io::ErrorKind::InvalidInput,
        ::rusb::Error::NoMem => io::ErrorKind::OutOfMemory,
        ::rusb::Error::NotSupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    }
}

/// Why opening a device node failed, with a hint for the usual causes.
fn open_error(device: &Device<Context>, e: ::rusb::Error) -> String {
    let hint = match e {
        ::rusb::Error::Access => {
            " (read/write access to the device node is needed: a udev rule such as the usbmuxd package's, or root)"
        }
        ::rusb::Error::Busy => " (another program holds it; is the usbmuxd daemon running?)",
        _ => "",
    };
    format!("cannot open {}: {e}{hint}", device_name(device))
}

// ---- the event thread -----------------------------------------------------------------

/// libusb's event loop on its own thread, shared by a bus and its links.
struct EventLoop {
    context: Context,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    fn start(context: Context) -> io::Result<Arc<EventLoop>> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (context.clone(), stop.clone());
        let thread = thread::Builder::new().name("usbmuxd-libusb".into()).spawn(move || {
            while !flag.load(Ordering::Acquire) {
                match ctx.handle_events(Some(EVENT_TICK)) {
                    Ok(()) | Err(::rusb::Error::Interrupted) => {}
                    Err(e) => {
                        crate::debug!(1, "usb", "libusb event handling failed: {e}");
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })?;
        Ok(Arc::new(EventLoop { context, stop, thread: Some(thread) }))
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.context.interrupt_handle_events();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

// ---- the bus --------------------------------------------------------------------------

/// What discovery has found, for [`Bus::describe`].
#[derive(Default)]
struct Status {
    /// Bus ids of the devices reported as arrived.
    reported: HashMap<u64, String>,
    /// Devices that could not be read, and why.
    problems: HashMap<u64, String>,
    /// The last failure of a bus scan.
    scan_error: Option<String>,
}

/// iOS devices on the machine's USB buses, through libusb.
pub struct RusbBus {
    /// The libusb context, or why there is none.
    context: Result<Context, String>,
    events: Option<Arc<EventLoop>>,
    status: Arc<Mutex<Status>>,
    started: bool,
    discovery: Option<Discovery>,
}

struct Discovery {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Keeps the hot-plug callback registered (dropped first on shutdown).
    registration: Option<::rusb::Registration<Context>>,
    hotplug: bool,
}

enum Msg {
    Arrived(Device<Context>),
    Left(u64),
    /// Answered once everything before it has been handled.
    Sync(mpsc::Sender<()>),
    Stop,
}

impl Default for RusbBus {
    fn default() -> Self {
        Self::new()
    }
}

impl RusbBus {
    /// Initialises libusb. Never fails: where libusb cannot start (no USB on this
    /// machine) the bus reports no devices and [`Bus::describe`] says why.
    pub fn new() -> RusbBus {
        let context = Context::new().map_err(|e| {
            let sys = Path::new("/sys/bus/usb").exists();
            let dev = Path::new("/dev/bus/usb").exists();
            if !sys && !dev {
                format!("libusb found no USB buses (no /sys/bus/usb, no /dev/bus/usb): libusb_init: {e}")
            } else if !dev {
                format!(
                    "libusb cannot start: no /dev/bus/usb (in a container it must be made visible): libusb_init: {e}"
                )
            } else {
                format!("libusb cannot start: libusb_init: {e}")
            }
        });
        if let Err(e) = &context {
            crate::debug!(2, "usb", "{e}");
        }
        RusbBus { context, events: None, status: Arc::default(), started: false, discovery: None }
    }

    fn event_loop(&mut self) -> io::Result<Arc<EventLoop>> {
        if let Some(events) = &self.events {
            return Ok(events.clone());
        }
        let context = self.context.as_ref().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.clone()))?;
        let events = EventLoop::start(context.clone())?;
        self.events = Some(events.clone());
        Ok(events)
    }

    fn find_device(&self, info: &UsbDeviceInfo) -> io::Result<Device<Context>> {
        let context = self.context.as_ref().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.clone()))?;
        let list = context.devices().map_err(|e| io_error("listing USB devices", e))?;
        list.iter()
            .find(|d| bus_id(d.bus_number(), d.address()) == info.bus_id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("USB device {:#x} is gone", info.bus_id)))
    }
}

impl Bus for RusbBus {
    fn start(&mut self, sink: BusSink) -> io::Result<()> {
        if std::mem::replace(&mut self.started, true) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "discovery already started"));
        }
        let Ok(context) = self.context.clone() else {
            // No USB here: nothing will ever arrive; describe() says why.
            return Ok(());
        };
        self.event_loop()?;
        let (tx, rx) = mpsc::channel();
        let hotplug = ::rusb::has_hotplug();
        let worker = Worker {
            context: context.clone(),
            sink,
            status: self.status.clone(),
            polling: !hotplug,
            known: HashSet::new(),
            pending: HashMap::new(),
            given_up: HashSet::new(),
        };
        let thread = thread::Builder::new().name("usbmuxd-usb-discovery".into()).spawn(move || worker.run(rx))?;
        let mut discovery = Discovery { tx: tx.clone(), thread: Some(thread), registration: None, hotplug };
        if hotplug {
            // Reports the devices present now (ENUMERATE) on this thread, then arrivals
            // and departures on the event thread; either way only into the channel.
            match ::rusb::HotplugBuilder::new()
                .vendor_id(APPLE_VENDOR_ID)
                .enumerate(true)
                .register(context, Box::new(Forwarder { tx }))
            {
                Ok(reg) => discovery.registration = Some(reg),
                Err(e) => {
                    drop(discovery);
                    return Err(io_error("registering the USB hot-plug callback", e));
                }
            }
        }
        // Like the simulated bus: the devices present now are reported before start()
        // returns, so a first device list is complete.
        let (done, synced) = mpsc::channel();
        let _ = discovery.tx.send(Msg::Sync(done));
        self.discovery = Some(discovery);
        if synced.recv_timeout(START_SYNC_TIMEOUT).is_err() {
            crate::debug!(
                1,
                "usb",
                "reading the devices present took over {START_SYNC_TIMEOUT:?}; they are reported when done"
            );
        }
        Ok(())
    }

    fn open(&mut self, device: &UsbDeviceInfo, sink: LinkSink) -> io::Result<Box<dyn DeviceLink>> {
        let events = self.event_loop()?;
        let dev = self.find_device(device)?;
        let link = RusbLink::open(&dev, events, sink)?;
        crate::debug!(
            2,
            "usb",
            "{} ({}): configuration {}, interface {}, endpoints in {:#04x} out {:#04x}, max packet {}",
            device_name(&dev),
            device.serial,
            link.mux.configuration,
            link.mux.interface,
            link.mux.endpoint_in,
            link.mux.endpoint_out,
            link.mux.out_max_packet_size
        );
        Ok(Box::new(link))
    }

    fn describe(&self) -> String {
        let context = match &self.context {
            Ok(c) => c,
            Err(why) => return why.clone(),
        };
        let v = ::rusb::version();
        let mode = match &self.discovery {
            None => "discovery not started",
            Some(d) if d.hotplug => "hot-plug",
            Some(_) => "polling every 1 s",
        };
        let mut out = format!("libusb {}.{}.{} ({mode})", v.major(), v.minor(), v.micro());
        let status = self.status.lock();
        let list = match context.devices() {
            Ok(list) => list,
            Err(e) => {
                out += &format!(": cannot list USB devices: {e}");
                return out;
            }
        };
        let mut buses = BTreeSet::new();
        let mut other_apple = Vec::new();
        let mut total = 0;
        for d in list.iter() {
            total += 1;
            buses.insert(d.bus_number());
            if let Ok(desc) = d.device_descriptor() {
                if desc.vendor_id() == APPLE_VENDOR_ID && !is_mux_ids(desc.vendor_id(), desc.product_id()) {
                    other_apple.push(format!("05ac:{:04x}", desc.product_id()));
                }
            }
        }
        out += &format!(": {total} USB device(s) on {} bus(es)", buses.len());
        let mut serials: Vec<&String> = status.reported.values().collect();
        serials.sort();
        if serials.is_empty() {
            out += ", no iOS device in usbmux mode";
            if total == 0 {
                out += " (no USB devices visible at all: is /dev/bus/usb readable, or hidden from a container?)";
            }
        } else {
            out += &format!(", iOS device(s): {}", serials.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
        }
        if !other_apple.is_empty() {
            out += &format!(
                "; Apple device(s) not in usbmux mode (recovery, DFU, or not an iOS device): {}",
                other_apple.join(", ")
            );
        }
        let mut problems: Vec<&String> = status.problems.values().collect();
        problems.sort();
        for p in problems {
            out += &format!("; {p}");
        }
        if let Some(e) = &status.scan_error {
            out += &format!("; last bus scan failed: {e}");
        }
        out
    }
}

impl Drop for RusbBus {
    fn drop(&mut self) {
        if let Some(mut d) = self.discovery.take() {
            // Deregistering waits for a running hot-plug callback (libusb holds its lock
            // while calling it; ours only sends into a channel, so it cannot block).
            d.registration.take();
            let _ = d.tx.send(Msg::Stop);
            if let Some(t) = d.thread.take() {
                // Not from the discovery thread itself (a sink that dropped the bus).
                if t.thread().id() != thread::current().id() {
                    let _ = t.join();
                }
            }
        }
        // The event thread stops once the links opened from this bus are gone too.
        self.events.take();
    }
}

/// The hot-plug callback: runs where blocking libusb calls are not allowed, so it only
/// forwards to the discovery thread.
struct Forwarder {
    tx: mpsc::Sender<Msg>,
}

impl ::rusb::Hotplug<Context> for Forwarder {
    fn device_arrived(&mut self, device: Device<Context>) {
        let _ = self.tx.send(Msg::Arrived(device));
    }

    fn device_left(&mut self, device: Device<Context>) {
        let _ = self.tx.send(Msg::Left(bus_id(device.bus_number(), device.address())));
    }
}

/// A device waiting for (another) attempt to read it.
struct Pending {
    device: Device<Context>,
    attempts: u32,
    at: Instant,
}

/// The discovery thread.
struct Worker {
    context: Context,
    sink: BusSink,
    status: Arc<Mutex<Status>>,
    polling: bool,
    /// Devices reported as arrived.
    known: HashSet<u64>,
    /// Devices seen but not (yet) readable.
    pending: HashMap<u64, Pending>,
    /// Devices that could not be read in [`MAX_ATTEMPTS`] tries: left alone until they
    /// leave the bus.
    given_up: HashSet<u64>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_scan = Instant::now();
        loop {
            let now = Instant::now();
            if self.polling && now >= next_scan {
                self.scan();
                next_scan = now + POLL_INTERVAL;
            }
            self.retry_due();
            let wake = self
                .pending
                .values()
                .map(|p| p.at)
                .chain(self.polling.then_some(next_scan))
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Msg::Arrived(device)) => self.arrived(device),
                Ok(Msg::Left(id)) => self.left(id),
                Ok(Msg::Sync(done)) => {
                    let _ = done.send(());
                }
                Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn arrived(&mut self, device: Device<Context>) {
        let id = bus_id(device.bus_number(), device.address());
        let Ok(desc) = device.device_descriptor() else { return };
        if !is_mux_ids(desc.vendor_id(), desc.product_id()) || self.known.contains(&id) || self.given_up.contains(&id) {
            return;
        }
        self.pending.entry(id).or_insert(Pending { device, attempts: 0, at: Instant::now() });
        self.retry_due();
    }

    fn left(&mut self, id: u64) {
        self.pending.remove(&id);
        self.given_up.remove(&id);
        let mut status = self.status.lock();
        status.problems.remove(&id);
        status.reported.remove(&id);
        drop(status);
        if self.known.remove(&id) {
            (self.sink)(BusEvent::Left(id));
        }
    }

    /// Tries the pending devices whose time has come.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self.pending.iter().filter(|(_, p)| p.at <= now).map(|(&id, _)| id).collect();
        for id in due {
            let Some(mut p) = self.pending.remove(&id) else { continue };
            match read_info(&p.device) {
                Ok(info) => {
                    let mut status = self.status.lock();
                    status.problems.remove(&id);
                    status.reported.insert(id, info.serial.clone());
                    drop(status);
                    self.known.insert(id);
                    crate::debug!(
                        2,
                        "usb",
                        "found {} ({:04x}:{:04x}) at {}",
                        info.serial,
                        info.vendor_id,
                        info.product_id,
                        device_name(&p.device)
                    );
                    (self.sink)(BusEvent::Arrived(info));
                }
                Err(why) => {
                    p.attempts += 1;
                    let gave_up = p.attempts >= MAX_ATTEMPTS;
                    crate::debug!(1, "usb", "{why}{}", if gave_up { " (giving up)" } else { " (will retry)" });
                    self.status.lock().problems.insert(id, why);
                    if gave_up {
                        self.given_up.insert(id);
                    } else {
                        p.at = Instant::now() + POLL_INTERVAL;
                        self.pending.insert(id, p);
                    }
                }
            }
        }
    }

    /// One mark-and-sweep scan (no hot-plug support).
    fn scan(&mut self) {
        let list = match self.context.devices() {
            Ok(list) => list,
            Err(e) => {
                self.status.lock().scan_error = Some(e.to_string());
                return;
            }
        };
        self.status.lock().scan_error = None;
        let mut present = HashSet::new();
        for device in list.iter() {
            let Ok(desc) = device.device_descriptor() else { continue };
            if !is_mux_ids(desc.vendor_id(), desc.product_id()) {
                continue;
            }
            let id = bus_id(device.bus_number(), device.address());
            present.insert(id);
            if !self.known.contains(&id) && !self.given_up.contains(&id) && !self.pending.contains_key(&id) {
                self.pending.insert(id, Pending { device, attempts: 0, at: Instant::now() });
            }
        }
        let gone: Vec<u64> = self
            .known
            .iter()
            .chain(self.pending.keys())
            .chain(&self.given_up)
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.left(id);
        }
    }
}

/// Opens a device just long enough to read what discovery reports.
fn read_info(device: &Device<Context>) -> Result<UsbDeviceInfo, String> {
    let desc = device.device_descriptor().map_err(|e| format!("{}: device descriptor: {e}", device_name(device)))?;
    let handle = device.open().map_err(|e| open_error(device, e))?;
    let serial = read_serial(&handle, desc.serial_number_string_index())
        .map_err(|e| format!("{}: serial number: {e}", device_name(device)))?;
    let (bus, address) = (device.bus_number(), device.address());
    Ok(UsbDeviceInfo {
        bus_id: bus_id(bus, address),
        vendor_id: desc.vendor_id(),
        product_id: desc.product_id(),
        serial,
        location: location(bus, address),
        speed_bps: speed_bps(device.speed()),
    })
}

/// The serial-number string in the device's first language (§1.8).
fn read_serial(handle: &DeviceHandle<Context>, index: Option<u8>) -> Result<String, String> {
    let index = index.ok_or("the device has no serial-number string")?;
    let request_type = ::rusb::request_type(Direction::In, ::rusb::RequestType::Standard, ::rusb::Recipient::Device);
    let string = u16::from(c::LIBUSB_DT_STRING) << 8;
    let mut buf = [0u8; 255];
    let n = handle
        .read_control(request_type, c::LIBUSB_REQUEST_GET_DESCRIPTOR, string, 0, &mut buf, CONTROL_TIMEOUT)
        .map_err(|e| format!("reading the language ids: {e}"))?;
    if n < 4 {
        return Err("the device lists no language ids".into());
    }
    let language = u16::from_le_bytes([buf[2], buf[3]]);
    let n = handle
        .read_control(
            request_type,
            c::LIBUSB_REQUEST_GET_DESCRIPTOR,
            string | u16::from(index),
            language,
            &mut buf,
            CONTROL_TIMEOUT,
        )
        .map_err(|e| format!("reading string descriptor {index}: {e}"))?;
    let serial = string_descriptor_ascii(&buf[..n]);
    if serial.is_empty() {
        return Err("empty serial-number string".into());
    }
    Ok(serial)
}

/// Selects the configuration, detaches kernel drivers where needed and claims the mux
/// interface (§1.4.3, §1.5).
fn configure(device: &Device<Context>, handle: &DeviceHandle<Context>) -> io::Result<MuxInterface> {
    let name = device_name(device);
    let desc = device.device_descriptor().map_err(|e| io_error(format!("{name}: device descriptor"), e))?;
    let configs: Vec<ConfigSummary> = (0..desc.num_configurations())
        .filter_map(|i| device.config_descriptor(i).ok())
        .map(|c| summarize(&c))
        .collect();
    let candidates = mux_candidates(&configs);
    if candidates.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no configuration has a usbmux interface (255/254/2 with one bulk IN and one bulk OUT endpoint)"),
        ));
    }
    let mut last_error = None;
    for mux in candidates {
        let current = handle.active_configuration().unwrap_or(0);
        if current != mux.configuration {
            // libusb (Linux) can only see drivers of the active configuration's
            // interfaces; the chosen one's are included as §1.4.1 says.
            let numbers: BTreeSet<u8> = configs
                .iter()
                .filter(|c| c.value == current || c.value == mux.configuration)
                .flat_map(|c| c.interfaces.iter().map(|i| i.number))
                .collect();
            for n in numbers {
                if handle.kernel_driver_active(n) == Ok(true) {
                    if let Err(e) = handle.detach_kernel_driver(n) {
                        crate::debug!(1, "usb", "{name}: detaching the kernel driver of interface {n}: {e}");
                    }
                }
            }
            if let Err(e) = handle.set_active_configuration(mux.configuration) {
                crate::debug!(1, "usb", "{name}: setting configuration {}: {e}", mux.configuration);
                last_error = Some(io_error(format!("{name}: setting configuration {}", mux.configuration), e));
                continue;
            }
        }
        handle.claim_interface(mux.interface).map_err(|e| {
            let hint = if e == ::rusb::Error::Busy {
                " (is the usbmuxd daemon or another program using the device?)"
            } else {
                ""
            };
            io_error(format!("{name}: claiming interface {}{hint}", mux.interface), e)
        })?;
        return Ok(mux);
    }
    Err(last_error.unwrap_or_else(|| io::Error::other(format!("{name}: no usable configuration"))))
}

// ---- the link -------------------------------------------------------------------------

thread_local! {
    /// Set while a completion callback of ours runs on this thread: a link dropped from
    /// its sink must not wait for its own callbacks.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// An open device: the mux interface claimed, the IN ring running.
pub struct RusbLink {
    mux: MuxInterface,
    /// `None` only while dropping.
    inner: Option<LinkInner>,
}

struct LinkInner {
    /// Declared before `handle`: the transfers refer to it.
    ring: Arc<InRing>,
    handle: DeviceHandle<Context>,
    interface: u8,
    _events: Arc<EventLoop>,
}

impl RusbLink {
    fn open(device: &Device<Context>, events: Arc<EventLoop>, sink: LinkSink) -> io::Result<RusbLink> {
        let handle = device.open().map_err(|e| io::Error::new(error_kind(e), open_error(device, e)))?;
        let mux = configure(device, &handle)?;
        let ring = match InRing::start(&handle, mux.endpoint_in, sink) {
            Ok(ring) => ring,
            Err(e) => {
                let _ = handle.release_interface(mux.interface);
                return Err(io::Error::new(e.kind(), format!("{}: {e}", device_name(device))));
            }
        };
        Ok(RusbLink { mux, inner: Some(LinkInner { ring, handle, interface: mux.interface, _events: events }) })
    }

    /// Where the mux protocol runs on this device.
    pub fn mux_interface(&self) -> MuxInterface {
        self.mux
    }
}

impl DeviceLink for RusbLink {
    fn read_size(&self) -> Option<usize> {
        Some(IN_READ_SIZE)
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let inner = self.inner.as_ref().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let ep = self.mux.endpoint_out;
        let n = inner.handle.write_bulk(ep, packet, SEND_TIMEOUT).map_err(|e| io_error("bulk OUT transfer", e))?;
        if n != packet.len() {
            // Only a timeout returns a partial count: the device stopped taking data.
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("bulk OUT transfer: {n} of {} bytes taken within {SEND_TIMEOUT:?}", packet.len()),
            ));
        }
        if needs_zlp(packet.len(), self.mux.out_max_packet_size) {
            inner.handle.write_bulk(ep, &[], SEND_TIMEOUT).map_err(|e| io_error("zero-length bulk OUT transfer", e))?;
        }
        Ok(())
    }
}

impl Drop for RusbLink {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        if IN_CALLBACK.with(Cell::get) {
            // Inside our own sink: the callbacks we would wait for cannot finish until
            // this one returns.
            let _ = thread::Builder::new().name("usbmuxd-usb-close".into()).spawn(move || inner.close());
        } else {
            inner.close();
        }
    }
}

impl LinkInner {
    fn close(self) {
        let LinkInner { ring, handle, interface, _events } = self;
        if ring.cancel_and_wait(CLOSE_TIMEOUT) {
            drop(ring);
            let _ = handle.release_interface(interface);
            drop(handle);
        } else {
            // libusb still owns some transfer: freeing it or closing the handle under it
            // would be a use-after-free. Leak both (never seen: cancellation completes
            // at once on Linux).
            crate::debug!(1, "usb", "bulk IN transfers not returned {CLOSE_TIMEOUT:?} after cancelling; leaking them");
            std::mem::forget(ring);
            std::mem::forget(handle);
        }
        drop(_events);
    }
}

// ---- the ring of bulk IN transfers (libusb's asynchronous API) -------------------------

struct RingState {
    /// Transfers submitted and not yet retired by their callback (a callback that is
    /// running still counts).
    in_flight: usize,
    /// The link is closing: retire instead of resubmitting, report nothing.
    closing: bool,
    /// `Gone` was reported: retire, report nothing more.
    gone: bool,
}

/// The bulk IN transfers of one link. Their `user_data` points here.
struct InRing {
    state: Mutex<RingState>,
    idle: Condvar,
    sink: LinkSink,
    transfers: Vec<*mut ffi::libusb_transfer>,
    buffers: Vec<*mut [u8]>,
}

// SAFETY: the raw pointers are only dereferenced (a) by the owner before the first
// submission and after the last retirement, and (b) by libusb and the completion
// callback while a transfer is in flight, which libusb serialises; everything shared
// between threads is behind `state`.
unsafe impl Send for InRing {}
// SAFETY: as for `Send`; `&InRing` only gives access to `state` (a mutex), `sink`
// (`Send + Sync`) and the pointers, whose use follows the in-flight protocol above.
unsafe impl Sync for InRing {}

impl InRing {
    /// Allocates [`IN_TRANSFERS`] transfers and submits them. Fails only if none could
    /// be submitted (with fewer, it goes on with fewer, like upstream).
    fn start(handle: &DeviceHandle<Context>, endpoint: u8, sink: LinkSink) -> io::Result<Arc<InRing>> {
        let mut transfers = Vec::with_capacity(IN_TRANSFERS);
        let mut buffers = Vec::with_capacity(IN_TRANSFERS);
        for _ in 0..IN_TRANSFERS {
            // SAFETY: plain allocation; a null result is checked.
            let t = unsafe { ffi::libusb_alloc_transfer(0) };
            if t.is_null() {
                break;
            }
            transfers.push(t);
            buffers.push(Box::into_raw(vec![0u8; IN_READ_SIZE].into_boxed_slice()));
        }
        let ring = Arc::new(InRing {
            state: Mutex::new(RingState { in_flight: 0, closing: false, gone: false }),
            idle: Condvar::new(),
            sink,
            transfers,
            buffers,
        });
        let user_data = Arc::as_ptr(&ring) as *mut c_void;
        for (&t, &buf) in ring.transfers.iter().zip(&ring.buffers) {
            // SAFETY: `t` was just allocated and is not submitted; `buf` is a live
            // allocation of IN_READ_SIZE bytes owned by the ring, as is `user_data`;
            // the handle outlives the ring (LinkInner drops the ring first, and only
            // once no transfer is in flight).
            unsafe {
                ffi::libusb_fill_bulk_transfer(
                    t,
                    handle.as_raw(),
                    endpoint,
                    buf.cast::<u8>(),
                    IN_READ_SIZE as c_int,
                    in_callback,
                    user_data,
                    0, // no timeout
                )
            };
        }
        let mut state = ring.state.lock();
        let mut error = None;
        for &t in &ring.transfers {
            // SAFETY: filled above and not in flight. Its callback may run on the event
            // thread as soon as this returns; it then waits for `state`, held here.
            match unsafe { ffi::libusb_submit_transfer(t) } {
                0 => state.in_flight += 1,
                rc => error = Some(rc),
            }
        }
        let started = state.in_flight;
        drop(state);
        if started == 0 {
            let rc = error.unwrap_or(c::LIBUSB_ERROR_NO_MEM);
            return Err(io::Error::other(format!("could not start any bulk IN transfer: {}", libusb_error_name(rc))));
        }
        if let Some(rc) = error {
            crate::debug!(
                1,
                "usb",
                "only {started} of {IN_TRANSFERS} bulk IN transfers started: {}",
                libusb_error_name(rc)
            );
        }
        Ok(ring)
    }

    /// Stops resubmission, cancels what is in flight and waits until every callback has
    /// returned. `false` if that did not happen within `timeout`.
    fn cancel_and_wait(&self, timeout: Duration) -> bool {
        self.state.lock().closing = true;
        // Every submission happened under `state` before `closing` was set, so every
        // transfer that will ever be in flight is in flight (or retiring) now.
        for &t in &self.transfers {
            // SAFETY: `t` is a live transfer of this ring; cancelling one that is not in
            // flight only returns LIBUSB_ERROR_NOT_FOUND.
            unsafe { ffi::libusb_cancel_transfer(t) };
        }
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.in_flight > 0 {
            if self.idle.wait_until(&mut state, deadline).timed_out() {
                return state.in_flight == 0;
            }
        }
        true
    }

    fn deliver(&self, event: LinkEvent) {
        IN_CALLBACK.with(|f| f.set(true));
        // A panic must not unwind into libusb (it would abort the program).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.sink)(event)));
        IN_CALLBACK.with(|f| f.set(false));
    }
}

impl Drop for InRing {
    fn drop(&mut self) {
        // Only reached with nothing in flight (LinkInner::close leaks the ring otherwise).
        for &t in &self.transfers {
            // SAFETY: not in flight, never used again.
            unsafe { ffi::libusb_free_transfer(t) };
        }
        for &b in &self.buffers {
            // SAFETY: made by Box::into_raw in `start`, no transfer refers to it any more.
            drop(unsafe { Box::from_raw(b) });
        }
    }
}

fn libusb_error_name(rc: c_int) -> String {
    // SAFETY: libusb_error_name returns a static NUL-terminated string for any value.
    let name = unsafe { std::ffi::CStr::from_ptr(ffi::libusb_error_name(rc)) };
    name.to_string_lossy().into_owned()
}

fn transfer_status_text(status: c_int) -> &'static str {
    match status {
        c::LIBUSB_TRANSFER_NO_DEVICE => "the device was disconnected",
        c::LIBUSB_TRANSFER_STALL => "bulk IN endpoint stalled",
        c::LIBUSB_TRANSFER_OVERFLOW => "bulk IN transfer overflowed",
        c::LIBUSB_TRANSFER_TIMED_OUT => "bulk IN transfer timed out",
        c::LIBUSB_TRANSFER_CANCELLED => "bulk IN transfer cancelled",
        _ => "bulk IN transfer failed",
    }
}

/// Completion of a bulk IN transfer: hand the data over, resubmit.
extern "system" fn in_callback(t: *mut ffi::libusb_transfer) {
    // SAFETY: libusb passes back a transfer of ours; its user_data is the InRing, which
    // lives until this callback has retired the transfer (in_flight > 0 until then).
    let ring = unsafe { &*((*t).user_data as *const InRing) };
    // SAFETY: `t` is a valid transfer that libusb has handed back to us.
    let (status, length, buffer) = unsafe { ((*t).status, (*t).actual_length, (*t).buffer) };
    let ok = status == c::LIBUSB_TRANSFER_COMPLETED;
    let active = {
        let st = ring.state.lock();
        !st.closing && !st.gone
    };
    let mut gone = None;
    if active {
        if ok {
            let length = usize::try_from(length).unwrap_or(0).min(IN_READ_SIZE);
            if length > 0 {
                // SAFETY: libusb wrote `length` bytes into our IN_READ_SIZE buffer, and
                // does not touch it until the transfer is resubmitted.
                let data = unsafe { std::slice::from_raw_parts(buffer, length) }.to_vec();
                ring.deliver(LinkEvent::Transfer(data));
            }
            // Zero-length completions (a ZLP after a packet that filled a read) carry
            // nothing for the reassembler.
        } else {
            gone = Some(transfer_status_text(status).to_string());
        }
    }
    let mut st = ring.state.lock();
    if ok && !st.closing && !st.gone {
        // SAFETY: `t` is ours, filled, and not in flight (libusb returned it).
        let rc = unsafe { ffi::libusb_submit_transfer(t) };
        if rc == 0 {
            return; // still in flight
        }
        gone = Some(format!("resubmitting a bulk IN transfer failed: {}", libusb_error_name(rc)));
    }
    let report = gone.filter(|_| !st.closing && !st.gone);
    if report.is_some() {
        st.gone = true;
    }
    drop(st);
    if let Some(why) = report {
        ring.deliver(LinkEvent::Gone(why));
    }
    // Retire: after this the ring may be freed at any moment.
    let mut st = ring.state.lock();
    st.in_flight -= 1;
    if st.in_flight == 0 {
        ring.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: u8, bulk: bool, mps: u16) -> EndpointSummary {
        EndpointSummary { address, bulk, max_packet_size: mps }
    }

    fn iface(number: u8, triplet: (u8, u8, u8), endpoints: Vec<EndpointSummary>) -> InterfaceSummary {
        InterfaceSummary { number, triplet, endpoints }
    }

    /// An iPhone's usual configuration 4: PTP, mux, tethering.
    fn iphone_config(value: u8) -> ConfigSummary {
        ConfigSummary {
            value,
            interfaces: vec![
                iface(0, (6, 1, 1), vec![ep(0x81, true, 512), ep(0x02, true, 512), ep(0x83, false, 64)]),
                iface(1, MUX_CLASS, vec![ep(0x04, true, 512), ep(0x85, true, 512)]),
                iface(2, (0xff, 0xfd, 1), vec![ep(0x86, true, 512), ep(0x07, true, 512)]),
            ],
        }
    }

    #[test]
    fn serial_follows_the_spec_conversion() {
        let mut d = vec![0u8, 3];
        for ch in "0000812000092D910EDB401E".encode_utf16() {
            d.extend_from_slice(&ch.to_le_bytes());
        }
        d[0] = d.len() as u8;
        assert_eq!(string_descriptor_ascii(&d), "0000812000092D910EDB401E");
        // Non-ASCII units become '?', a zero unit ends, bLength bounds the walk.
        let d = [12, 3, b'a', 0, 0xe9, 0, 0x42, 0x30, b'b', 0, 0, 0, b'c', 0];
        assert_eq!(string_descriptor_ascii(&d), "a??b");
        let d = [6, 3, b'x', 0, b'y', 0, b'z', 0];
        assert_eq!(string_descriptor_ascii(&d), "xy");
        // bLength beyond the bytes received, odd lengths, empty input.
        assert_eq!(string_descriptor_ascii(&[40, 3, b'q', 0, b'r']), "q");
        assert_eq!(string_descriptor_ascii(&[]), "");
        assert_eq!(string_descriptor_ascii(&[2, 3]), "");
    }

    #[test]
    fn serial_is_bounded_by_blength() {
        let mut d = vec![255u8, 3];
        d.extend(std::iter::repeat([b'7', 0]).take(200).flatten());
        assert_eq!(string_descriptor_ascii(&d).len(), 126);
    }

    #[test]
    fn ids_and_speeds() {
        assert_eq!(location(1, 9), 0x10009);
        assert_eq!(bus_id(3, 127), 0x37f);
        assert_eq!(speed_bps(::rusb::Speed::High), 480_000_000);
        assert_eq!(speed_bps(::rusb::Speed::Super), 5_000_000_000);
        assert_eq!(speed_bps(::rusb::Speed::SuperPlus), 10_000_000_000);
        assert_eq!(speed_bps(::rusb::Speed::Full), 12_000_000);
        assert_eq!(speed_bps(::rusb::Speed::Low), 1_500_000);
        assert_eq!(speed_bps(::rusb::Speed::Unknown), 480_000_000);
        assert!(is_mux_ids(0x05ac, 0x12a8));
        assert!(is_mux_ids(0x05ac, 0x8600));
        assert!(!is_mux_ids(0x05ac, 0x1281));
    }

    #[test]
    fn prefers_configuration_4_then_the_highest() {
        let configs: Vec<ConfigSummary> = (1..=5).map(iphone_config).collect();
        let order: Vec<u8> = mux_candidates(&configs).iter().map(|m| m.configuration).collect();
        assert_eq!(order, vec![4, 5, 3, 2, 1]);
        let m = mux_candidates(&configs)[0];
        assert_eq!(
            m,
            MuxInterface {
                configuration: 4,
                interface: 1,
                endpoint_in: 0x85,
                endpoint_out: 0x04,
                out_max_packet_size: 512
            }
        );
        // Without a configuration 4: the highest.
        let configs = vec![iphone_config(1), iphone_config(3), iphone_config(2)];
        assert_eq!(mux_candidates(&configs)[0].configuration, 3);
    }

    #[test]
    fn mux_interface_needs_the_exact_triplet_and_two_bulk_endpoints() {
        let pair = || vec![ep(0x85, true, 1024), ep(0x04, true, 1024)];
        let cfg = |ifaces| ConfigSummary { value: 1, interfaces: ifaces };
        // Swapped endpoint order is fine.
        let m = mux_interface(&cfg(vec![iface(3, MUX_CLASS, pair())])).unwrap();
        assert_eq!((m.interface, m.endpoint_in, m.endpoint_out, m.out_max_packet_size), (3, 0x85, 0x04, 1024));
        // Upstream's inverted match would take these; the exact test does not.
        for triplet in [(0xff, 0x2a, 0xff), (0xff, 0xfe, 0x01), (0x02, 0xfe, 0x02), (0xff, 0xfd, 0x02)] {
            assert_eq!(mux_interface(&cfg(vec![iface(0, triplet, pair())])), None, "{triplet:?}");
        }
        // Endpoint count, directions and types.
        let bad = [
            vec![ep(0x85, true, 512)],
            vec![ep(0x85, true, 512), ep(0x04, true, 512), ep(0x86, false, 64)],
            vec![ep(0x85, true, 512), ep(0x86, true, 512)],
            vec![ep(0x05, true, 512), ep(0x04, true, 512)],
            vec![ep(0x85, false, 512), ep(0x04, true, 512)],
        ];
        for eps in bad {
            assert_eq!(mux_interface(&cfg(vec![iface(0, MUX_CLASS, eps.clone())])), None, "{eps:?}");
        }
        // wMaxPacketSize 0 counts as 64.
        let m = mux_interface(&cfg(vec![iface(0, MUX_CLASS, vec![ep(0x85, true, 0), ep(0x04, true, 0)])])).unwrap();
        assert_eq!(m.out_max_packet_size, 64);
        // A configuration without one is skipped; none at all gives no candidates.
        let ptp_only = ConfigSummary { value: 4, interfaces: vec![iface(0, (6, 1, 1), pair())] };
        assert_eq!(mux_candidates(&[ptp_only.clone(), iphone_config(3)])[0].configuration, 3);
        assert!(mux_candidates(&[ptp_only]).is_empty());
    }
}
