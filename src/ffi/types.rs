//! C types of `usbmuxd.h`, laid out exactly as libusbmuxd 2.1.1 lays them out.
//! cbindgen generates the public header from these definitions (see build.rs).
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// Which transports `usbmuxd_get_device()` considers; callers pass a bit-or of these.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum usbmux_lookup_options {
    /// consider devices attached over USB
    DEVICE_LOOKUP_USBMUX = 1 << 1,
    /// consider devices reachable over the network (WiFi sync)
    DEVICE_LOOKUP_NETWORK = 1 << 2,
    /// when a device is reachable both ways, return its network entry
    DEVICE_LOOKUP_PREFER_NETWORK = 1 << 3,
}

/// How the daemon reaches a device (`usbmuxd_device_info_t.conn_type`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum usbmux_connection_type {
    CONNECTION_TYPE_USB = 1,
    CONNECTION_TYPE_NETWORK = 2,
}

/// Kind of a device event (`usbmuxd_event_t.event`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum usbmuxd_event_type {
    UE_DEVICE_ADD = 1,
    UE_DEVICE_REMOVE = 2,
    UE_DEVICE_PAIRED = 3,
}

/// The bits of a `enum usbmux_lookup_options` argument. Callers pass bit-or
/// combinations that are not enumerators, so Rust must not receive the enum type itself;
/// the header names it `enum usbmux_lookup_options` (cbindgen rename, see cbindgen.toml).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupOptionsBits(pub c_int);

/// A `enum usbmux_connection_type` field as stored in C memory: any int may be there.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTypeField(pub c_int);

/// One device as known to the daemon (256 bytes). `handle` is the daemon's opaque
/// device id to pass to `usbmuxd_connect()`; `udid` is NUL-terminated; for network
/// devices `conn_data` holds the raw address bytes reported by the daemon.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct usbmuxd_device_info_t {
    pub handle: u32,
    pub product_id: u32,
    pub udid: [c_char; 44],
    pub conn_type: ConnectionTypeField,
    pub conn_data: [u8; 200],
}

/// What an event callback receives: `event` holds a `usbmuxd_event_type` value and
/// `device` the device it concerns. Valid only for the duration of the callback.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct usbmuxd_event_t {
    pub event: c_int,
    pub device: usbmuxd_device_info_t,
}

/// Event callback, invoked on the library's listener thread.
pub type usbmuxd_event_cb_t = Option<unsafe extern "C" fn(event: *const usbmuxd_event_t, user_data: *mut c_void)>;

/// Opaque subscription state; never dereferenced by callers.
pub struct usbmuxd_subscription_context {
    _private: [u8; 0],
}

/// Handle returned by `usbmuxd_events_subscribe()`.
pub type usbmuxd_subscription_context_t = *mut usbmuxd_subscription_context;

const _: () = assert!(std::mem::size_of::<usbmuxd_device_info_t>() == 256);
const _: () = assert!(std::mem::size_of::<usbmuxd_event_t>() == 260);
const _: () = assert!(std::mem::offset_of!(usbmuxd_device_info_t, conn_type) == 52);
const _: () = assert!(std::mem::offset_of!(usbmuxd_device_info_t, conn_data) == 56);
