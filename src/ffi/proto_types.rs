//! C types of `usbmuxd-proto.h`: wire constants and packed structs of the daemon
//! protocol, exactly as libusbmuxd 2.1.1 publishes them. cbindgen generates the header
//! from this file alone; Rust code uses `crate::proto` instead.
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::c_char;

pub const USBMUXD_PROTOCOL_VERSION: u32 = 0;

pub const USBMUXD_SOCKET_FILE: &str = "/var/run/usbmuxd";

#[repr(C)]
pub enum usbmuxd_result {
    RESULT_OK = 0,
    RESULT_BADCOMMAND = 1,
    RESULT_BADDEV = 2,
    RESULT_CONNREFUSED = 3,
    RESULT_BADVERSION = 6,
}

#[repr(C)]
pub enum usbmuxd_msgtype {
    MESSAGE_RESULT = 1,
    MESSAGE_CONNECT = 2,
    MESSAGE_LISTEN = 3,
    MESSAGE_DEVICE_ADD = 4,
    MESSAGE_DEVICE_REMOVE = 5,
    MESSAGE_DEVICE_PAIRED = 6,
    MESSAGE_PLIST = 8,
}

#[repr(C, packed)]
pub struct usbmuxd_header {
    /// total message size in bytes, this header included
    pub length: u32,
    /// 0 = binary payload, 1 = XML plist payload
    pub version: u32,
    /// one of `usbmuxd_msgtype`
    pub message: u32,
    /// request tag, echoed by the daemon in its reply
    pub tag: u32,
}

#[repr(C, packed)]
pub struct usbmuxd_result_msg {
    pub header: usbmuxd_header,
    pub result: u32,
}

#[repr(C, packed)]
pub struct usbmuxd_connect_request {
    pub header: usbmuxd_header,
    pub device_id: u32,
    /// device port, in network byte order
    pub port: u16,
    /// always 0
    pub reserved: u16,
}

#[repr(C, packed)]
pub struct usbmuxd_listen_request {
    pub header: usbmuxd_header,
}

#[repr(C, packed)]
pub struct usbmuxd_device_record {
    pub device_id: u32,
    pub product_id: u16,
    pub serial_number: [c_char; 256],
    pub padding: u16,
    pub location: u32,
}

const _: () = assert!(std::mem::size_of::<usbmuxd_header>() == 16);
const _: () = assert!(std::mem::size_of::<usbmuxd_result_msg>() == 20);
const _: () = assert!(std::mem::size_of::<usbmuxd_connect_request>() == 24);
const _: () = assert!(std::mem::size_of::<usbmuxd_device_record>() == 268);
