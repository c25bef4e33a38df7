//! Device list and lookup.

use super::types::{usbmuxd_device_info_t, ConnectionTypeField, LookupOptionsBits};
use super::{c_str, guard};
use crate::client::api::{self, LookupOptions};
use crate::proto::{DeviceRecord, CONN_DATA_LEN, MAX_UDID_LEN};
use crate::Error;
use std::os::raw::{c_char, c_int};

/// The C view of a device record.
pub(crate) fn device_info(d: &DeviceRecord) -> usbmuxd_device_info_t {
    let mut info = usbmuxd_device_info_t {
        handle: d.handle,
        product_id: d.product_id,
        udid: [0; 44],
        conn_type: ConnectionTypeField(d.connection.as_c()),
        conn_data: [0; 200],
    };
    for (dst, &src) in info.udid.iter_mut().zip(d.udid.as_bytes().iter().take(MAX_UDID_LEN)) {
        *dst = src as c_char;
    }
    let n = d.network_address.len().min(CONN_DATA_LEN);
    info.conn_data[..n].copy_from_slice(&d.network_address[..n]);
    info
}

fn list_error(e: &Error) -> c_int {
    match e {
        // The daemon refused Listen: upstream returned the positive result code with a
        // NULL list; a negative value is what callers test for.
        Error::DaemonResult(_) => -libc::ECONNREFUSED,
        e => e.neg_errno(),
    }
}

/// Lists the devices known to the daemon, USB and network.
///
/// On success returns the count n and stores in `*device_list` a `malloc`ed array of
/// n + 1 records, the last all zero. The caller frees it with
/// `usbmuxd_device_list_free()` or `free()`. On error `*device_list` is NULL and a
/// negative errno is returned (-EINVAL for a NULL `device_list`).
///
/// # Safety
/// `device_list` must be NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_get_device_list(device_list: *mut *mut usbmuxd_device_info_t) -> c_int {
    if device_list.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: checked non-null; the caller provides a writable pointer slot.
    unsafe { *device_list = std::ptr::null_mut() };
    guard("usbmuxd_get_device_list", -libc::EIO, || {
        let devices = match api::list_devices() {
            Ok(d) => d,
            Err(e) => {
                crate::debug!(1, "usbmuxd_get_device_list", "{e}");
                return list_error(&e);
            }
        };
        let size = std::mem::size_of::<usbmuxd_device_info_t>();
        // SAFETY: calloc of n + 1 records; zero-filled, so the terminator is already there.
        let array = unsafe { libc::calloc(devices.len() + 1, size) } as *mut usbmuxd_device_info_t;
        if array.is_null() {
            return -libc::ENOMEM;
        }
        for (i, d) in devices.iter().enumerate() {
            // SAFETY: i < n + 1 records allocated above.
            unsafe { array.add(i).write(device_info(d)) };
        }
        // SAFETY: as above, the caller's pointer slot.
        unsafe { *device_list = array };
        c_int::try_from(devices.len()).unwrap_or(c_int::MAX)
    })
}

/// Frees a list from `usbmuxd_get_device_list()` (same as `free(*device_list)`).
/// Does not reset `*device_list`. Always returns 0.
///
/// # Safety
/// `device_list` must be NULL or point to NULL or to a list this library returned.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_device_list_free(device_list: *mut *mut usbmuxd_device_info_t) -> c_int {
    if !device_list.is_null() {
        // SAFETY: the list came from calloc in usbmuxd_get_device_list (or is NULL).
        unsafe { libc::free((*device_list).cast()) };
    }
    0
}

/// Shared body of the two lookup functions.
///
/// # Safety
/// As for `usbmuxd_get_device`.
unsafe fn lookup(name: &str, udid: *const c_char, device: *mut usbmuxd_device_info_t, opts: LookupOptions) -> c_int {
    if device.is_null() {
        return -libc::EINVAL;
    }
    let wanted = if udid.is_null() {
        None
    } else {
        // SAFETY: non-null, NUL-terminated by contract. A UDID that is not UTF-8 can
        // match no device (every UDID we report is UTF-8).
        match unsafe { c_str(udid) } {
            Some(s) => Some(s),
            None => return 0,
        }
    };
    guard(name, -libc::EIO, || {
        let Ok(list) = api::list_devices() else { return -libc::ENODEV };
        match api::select_device(&list, wanted, opts) {
            Some(d) => {
                // SAFETY: checked non-null; the caller provides a writable record.
                unsafe { device.write(device_info(d)) };
                1
            }
            None => 0,
        }
    })
}

/// Looks up a USB device by UDID (NULL = the first USB device). Returns 1 and fills
/// `*device` if found, 0 if not, -EINVAL for a NULL `device`, -ENODEV if the device
/// list could not be read.
///
/// # Safety
/// `udid` must be NULL or a NUL-terminated string; `device` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_get_device_by_udid(udid: *const c_char, device: *mut usbmuxd_device_info_t) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { lookup("usbmuxd_get_device_by_udid", udid, device, LookupOptions::USB) }
}

/// Looks up a device by UDID (NULL = the first one of an accepted kind) among the kinds
/// `options` selects (0 = USB). With both a USB and a network entry for the UDID, the
/// USB one is chosen unless `DEVICE_LOOKUP_PREFER_NETWORK` is set. Returns 1 / 0 /
/// -EINVAL / -ENODEV as `usbmuxd_get_device_by_udid`.
///
/// # Safety
/// `udid` must be NULL or a NUL-terminated string; `device` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_get_device(
    udid: *const c_char,
    device: *mut usbmuxd_device_info_t,
    options: LookupOptionsBits,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { lookup("usbmuxd_get_device", udid, device, LookupOptions::from_bits(options.0)) }
}
