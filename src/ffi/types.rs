//! C types of `usbmuxd.h`, laid out exactly as libusbmuxd 2.1.1 lays them out.
//! cbindgen generates the public header from these definitions (see build.rs).
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// Device lookup options for usbmuxd_get_device.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum usbmux_lookup_options {
    /// include USBMUX devices during lookup
    DEVICE_LOOKUP_USBMUX = 1 << 1,
    /// include network devices during lookup
    DEVICE_LOOKUP_NETWORK = 1 << 2,
    /// prefer network connection if device is available via USBMUX *and* network
    DEVICE_LOOKUP_PREFER_NETWORK = 1 << 3,
}

/// Type of connection a device is available on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum usbmux_connection_type {
    CONNECTION_TYPE_USB = 1,
    CONNECTION_TYPE_NETWORK = 2,
}

/// Event types for event callback function.
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

/// Device information structure holding data to identify the device.
/// The relevant 'handle' should be passed to 'usbmuxd_connect()', to
/// start a proxy connection. The value 'handle' should be considered
/// opaque and no presumption made about the meaning of its value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct usbmuxd_device_info_t {
    pub handle: u32,
    pub product_id: u32,
    pub udid: [c_char; 44],
    pub conn_type: ConnectionTypeField,
    pub conn_data: [u8; 200],
}

/// Event structure that will be passed to the callback function.
/// 'event' will contains the type of the event, and 'device' will contains
/// information about the device.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct usbmuxd_event_t {
    pub event: c_int,
    pub device: usbmuxd_device_info_t,
}

/// Callback function prototype.
pub type usbmuxd_event_cb_t = Option<unsafe extern "C" fn(event: *const usbmuxd_event_t, user_data: *mut c_void)>;

/// Subscription context type. Opaque to callers.
pub struct usbmuxd_subscription_context {
    _private: [u8; 0],
}

/// Subscription context type.
pub type usbmuxd_subscription_context_t = *mut usbmuxd_subscription_context;

const _: () = assert!(std::mem::size_of::<usbmuxd_device_info_t>() == 256);
const _: () = assert!(std::mem::size_of::<usbmuxd_event_t>() == 260);
const _: () = assert!(std::mem::offset_of!(usbmuxd_device_info_t, conn_type) == 52);
const _: () = assert!(std::mem::offset_of!(usbmuxd_device_info_t, conn_data) == 56);
