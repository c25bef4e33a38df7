//! The daemon's SystemBUID and pair records.

use super::{c_str, guard, malloc_copy};
use crate::client::api;
use crate::Error;
use std::os::raw::{c_char, c_int};

/// Pair-record calls return `-result` for a daemon refusal (e.g. -ENOENT for a missing
/// record: the daemon reports errno values there) and -errno otherwise.
fn pair_error(function: &str, e: Error) -> c_int {
    crate::debug!(1, function, "{e}");
    match e {
        Error::DaemonResult(n) => -(n as c_int),
        e => e.neg_errno(),
    }
}

/// Reads the daemon's SystemBUID into `*buid`, a `malloc`ed string the caller frees
/// with `free()`. Returns 0 (`*buid` may stay NULL if the daemon sent none),
/// -EINVAL for NULL, or a negative error.
///
/// # Safety
/// `buid` must be NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_read_buid(buid: *mut *mut c_char) -> c_int {
    if buid.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: checked non-null.
    unsafe { *buid = std::ptr::null_mut() };
    guard("usbmuxd_read_buid", -libc::EIO, || match api::read_buid() {
        Ok(Some(s)) => {
            let p = malloc_copy(s.as_bytes(), true);
            if p.is_null() {
                return -libc::ENOMEM;
            }
            // SAFETY: checked non-null above.
            unsafe { *buid = p.cast() };
            0
        }
        Ok(None) => 0,
        Err(e) => pair_error("usbmuxd_read_buid", e),
    })
}

/// Reads the pair record `record_id`: `*record_data` gets a `malloc`ed copy (not
/// NUL-terminated; free with `free()`), `*record_size` its length. Returns 0; 1 if the
/// daemon answered success without data (upstream behaviour); -ENOENT if there is no
/// such record; -EINVAL for NULL arguments; another negative error otherwise.
///
/// # Safety
/// `record_id` must be NULL or NUL-terminated; the out pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_read_pair_record(
    record_id: *const c_char,
    record_data: *mut *mut c_char,
    record_size: *mut u32,
) -> c_int {
    if record_id.is_null() || record_data.is_null() || record_size.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: checked non-null.
    unsafe {
        *record_data = std::ptr::null_mut();
        *record_size = 0;
    }
    // SAFETY: non-null, NUL-terminated by contract.
    let Some(id) = (unsafe { c_str(record_id) }) else { return -libc::EINVAL };
    guard("usbmuxd_read_pair_record", -libc::EIO, || match api::read_pair_record(id) {
        Ok(Some(data)) => {
            let Ok(size) = u32::try_from(data.len()) else { return -libc::EMSGSIZE };
            let p = malloc_copy(&data, false);
            if p.is_null() {
                return -libc::ENOMEM;
            }
            // SAFETY: checked non-null above.
            unsafe {
                *record_data = p.cast();
                *record_size = size;
            }
            0
        }
        Ok(None) => 1,
        Err(e) => pair_error("usbmuxd_read_pair_record", e),
    })
}

/// Stores `record_size` bytes (a serialized plist dictionary) as pair record
/// `record_id`; with `device_id` > 0 the daemon also reports the device as paired to
/// listeners. The caller keeps ownership of `record_data`. Returns 0, -EINVAL for
/// NULL/empty arguments, `-result` for a daemon refusal, or another negative error.
///
/// # Safety
/// `record_id` must be NULL or NUL-terminated; `record_data` NULL or `record_size`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_save_pair_record_with_device_id(
    record_id: *const c_char,
    device_id: u32,
    record_data: *const c_char,
    record_size: u32,
) -> c_int {
    if record_id.is_null() || record_data.is_null() || record_size == 0 {
        return -libc::EINVAL;
    }
    // SAFETY: non-null, NUL-terminated by contract.
    let Some(id) = (unsafe { c_str(record_id) }) else { return -libc::EINVAL };
    // SAFETY: non-null, `record_size` readable bytes by contract.
    let data = unsafe { std::slice::from_raw_parts(record_data.cast::<u8>(), record_size as usize) };
    guard("usbmuxd_save_pair_record", -libc::EIO, || match api::save_pair_record(id, data, device_id) {
        Ok(()) => 0,
        Err(e) => pair_error("usbmuxd_save_pair_record", e),
    })
}

/// `usbmuxd_save_pair_record_with_device_id()` without a device id.
///
/// # Safety
/// As for `usbmuxd_save_pair_record_with_device_id`.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_save_pair_record(
    record_id: *const c_char,
    record_data: *const c_char,
    record_size: u32,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { usbmuxd_save_pair_record_with_device_id(record_id, 0, record_data, record_size) }
}

/// Deletes pair record `record_id`. Returns 0, -EINVAL for NULL, `-result` for a daemon
/// refusal (-ENOENT if absent), or another negative error.
///
/// # Safety
/// `record_id` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_delete_pair_record(record_id: *const c_char) -> c_int {
    // SAFETY: NULL or NUL-terminated by contract.
    let Some(id) = (unsafe { c_str(record_id) }) else { return -libc::EINVAL };
    guard("usbmuxd_delete_pair_record", -libc::EIO, || match api::delete_pair_record(id) {
        Ok(()) => 0,
        Err(e) => pair_error("usbmuxd_delete_pair_record", e),
    })
}
