//! The daemon's shared state: devices, listening clients, armed misbehaviours, the request
//! log and service counters. Device events are sent to listeners while the state lock is
//! held, so that a listener's initial device list and later events never interleave.

use crate::config::{ProtocolMode, TestDevice};
use crate::daemon::ControlError;
use crate::log::LoggedRequest;
use crate::misbehaviour::Arsenal;
use crate::net::Stream;
use crate::server::ConnectionSet;
use crate::services::Counters;
use parking_lot::{Condvar, Mutex};
use plist::{Dictionary, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use usbmuxd::proto::{
    attached_dict, device_event_dict, encode_binary_device_add, encode_binary_device_event, encode_plist_message,
    msgtype, ConnectionType, VERSION_PLIST,
};
use usbmuxd::usb::pairing::PairStore;

/// A device event, as sent to listeners.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event<'a> {
    Add(&'a TestDevice),
    Remove(u32),
    Paired(u32),
}

impl Event<'_> {
    /// The message for a listener speaking `version`.
    pub fn encode(&self, version: u32) -> Vec<u8> {
        let plist = version == VERSION_PLIST;
        match *self {
            Event::Add(dev) => {
                let location = (dev.connection == ConnectionType::Usb).then_some(dev.location);
                if plist {
                    encode_plist_message(0, &attached_dict(&dev.record(), location))
                } else {
                    encode_binary_device_add(&dev.record(), dev.location)
                }
            }
            Event::Remove(id) if plist => encode_plist_message(0, &device_event_dict("Detached", id)),
            Event::Remove(id) => encode_binary_device_event(msgtype::DEVICE_REMOVE, id),
            Event::Paired(id) if plist => encode_plist_message(0, &device_event_dict("Paired", id)),
            Event::Paired(id) => encode_binary_device_event(msgtype::DEVICE_PAIRED, id),
        }
    }
}

/// A client in listen mode.
#[derive(Debug)]
pub(crate) struct ListenerEntry {
    /// A clone of the client's socket, written to by whoever raises an event.
    pub stream: Stream,
    /// Protocol of the listener: 0 binary, 1 plist.
    pub version: u32,
    /// Identification keys from the client's last plist request (for `ListListeners`).
    pub info: Dictionary,
}

#[derive(Debug)]
pub(crate) struct State {
    pub mode: ProtocolMode,
    pub list_devices: bool,
    pub devices: BTreeMap<u32, TestDevice>,
    /// Highest handle handed out; new devices get higher ones, as with the real daemon.
    pub last_handle: u32,
    pub listeners: BTreeMap<u64, ListenerEntry>,
    pub arsenal: Arsenal,
    pub counters: HashMap<(u32, u16), Arc<Counters>>,
}

impl State {
    /// Writes `event` to every listener; listeners that cannot take it are dropped.
    pub fn broadcast(&mut self, event: Event<'_>) {
        self.listeners.retain(|_, l| {
            let ok = l.stream.write_all(&event.encode(l.version)).is_ok();
            if !ok {
                l.stream.shutdown(Shutdown::Both);
            }
            ok
        });
    }

    /// Adds a device (no event), giving it a handle if it has none and a location if it
    /// is a USB device without one. Returns the device as stored.
    pub fn add_device(&mut self, mut device: TestDevice) -> Result<&TestDevice, ControlError> {
        let handle = self.assign_handle(device.handle).ok_or(ControlError::HandleInUse(device.handle))?;
        device.handle = handle;
        if device.connection == ConnectionType::Usb && device.location == 0 {
            device.location = 0x0001_0000 | (handle & 0xffff);
        }
        Ok(self.devices.entry(handle).or_insert(device))
    }

    /// The handle a new device gets: its own if non-zero, else the next unused one.
    fn assign_handle(&mut self, wanted: u32) -> Option<u32> {
        let handle = if wanted != 0 {
            wanted
        } else {
            let mut h = self.last_handle.wrapping_add(1).max(1);
            while self.devices.contains_key(&h) {
                h = h.wrapping_add(1).max(1);
            }
            h
        };
        if self.devices.contains_key(&handle) {
            return None;
        }
        self.last_handle = self.last_handle.max(handle);
        Some(handle)
    }

    pub fn counters(&mut self, handle: u32, port: u16) -> Arc<Counters> {
        Arc::clone(self.counters.entry((handle, port)).or_default())
    }

    /// `ListListeners` entries, shaped like the open-source daemon's (but with each
    /// listener's own connection number in `ID String`).
    pub fn listener_list(&self) -> Vec<Value> {
        self.listeners
            .iter()
            .map(|(id, l)| {
                let prog = l.info.get("ProgName").and_then(Value::as_string).unwrap_or("unknown").to_string();
                let mut d = Dictionary::new();
                d.insert("Blacklisted".into(), false.into());
                if let Some(b) = l.info.get("BundleID") {
                    d.insert("BundleID".into(), b.clone());
                }
                d.insert("ConnType".into(), Value::Integer(0u64.into()));
                d.insert("ID String".into(), format!("{id}-{prog}").into());
                d.insert("ProgName".into(), prog.into());
                let v = l.info.get("kLibUSBMuxVersion").and_then(Value::as_unsigned_integer).unwrap_or(0);
                d.insert("kLibUSBMuxVersion".into(), Value::Integer(v.into()));
                Value::Dictionary(d)
            })
            .collect()
    }
}

/// Everything the connection threads and the [`crate::TestDaemon`] handle share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub log: Mutex<Vec<LoggedRequest>>,
    /// Signalled on every new log entry and listener change, for the `wait_*` helpers.
    pub changed: Condvar,
    pub store: Mutex<PairStore>,
    pub connections: Arc<ConnectionSet>,
}

impl Shared {
    pub fn record(&self, entry: LoggedRequest) {
        self.log.lock().push(entry);
        self.changed.notify_all();
    }

    /// Wakes waiters after a change outside the log (their condition is re-checked).
    pub fn poke(&self) {
        let _guard = self.log.lock();
        self.changed.notify_all();
    }
}
