//! The C ABI of libusbmuxd 2.1.1: thin wrappers that check pointers, call the safe Rust
//! API, and map its results to the return values and errno codes upstream documents.
//!
//! Rules every exported function follows:
//! - pointers are checked before use; NULL gets the spec's error (-EINVAL where upstream
//!   would crash);
//! - no panic crosses the boundary ([`guard`]);
//! - memory handed to the caller comes from `malloc` and is released with `free()`
//!   (or `usbmuxd_device_list_free`); the library never frees caller memory.

mod config;
mod connection;
mod devices;
mod events;
mod pair;
pub mod proto_types;
#[allow(dead_code)] // the enums exist for the generated header
pub mod types;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic into `on_panic` and a debug line instead of unwinding
/// into C (which would be undefined behaviour).
fn guard<T>(function: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            crate::debug!(0, function, "internal error (panic caught at the C boundary)");
            on_panic
        }
    }
}

/// Sets the caller's `errno` (programs such as iproxy print `strerror(errno)` after a
/// failed call; it should name the real cause, not whatever a retried read left there).
fn set_errno(value: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = value };
}

/// Copies `bytes` into a new `malloc` block the caller releases with `free()`.
/// `nul` appends a terminating NUL. Null on allocation failure.
fn malloc_copy(bytes: &[u8], nul: bool) -> *mut u8 {
    let total = bytes.len() + usize::from(nul);
    // SAFETY: malloc with a non-zero size; the result is checked before use.
    let p = unsafe { libc::malloc(total.max(1)) } as *mut u8;
    if !p.is_null() {
        // SAFETY: `p` points to at least `total` writable bytes that do not overlap `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            if nul {
                *p.add(bytes.len()) = 0;
            }
        }
    }
    p
}

/// Reads a C string argument. `None` for NULL or text that is not UTF-8.
///
/// # Safety
/// `s` must be NULL or point to a NUL-terminated string that outlives the call.
unsafe fn c_str<'a>(s: *const std::os::raw::c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { std::ffi::CStr::from_ptr(s) }.to_str().ok()
}
