//! Connections to device ports: connect, send, receive, disconnect.

use super::{guard, set_errno};
use crate::client::api;
use crate::proto::result;
use crate::Error;
use std::os::fd::BorrowedFd;
use std::os::raw::{c_char, c_int, c_uint, c_ushort};
use std::time::Duration;

/// How long `usbmuxd_send` waits for room in the socket (as libusbmuxd 2.1.x).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of `usbmuxd_recv`.
const RECV_TIMEOUT_MS: c_uint = 5000;

/// Connects to `tcp_port` (host byte order, e.g. 62078) on device `handle` through the
/// daemon. Returns a socket descriptor (non-blocking, close-on-exec; the caller closes
/// it with `usbmuxd_disconnect()` or `close()`), or: the daemon's unreachability as a
/// negative errno (-ENOENT, -ECONNREFUSED, ...), -ENODEV (no such device),
/// -ECONNREFUSED (the device refused the port), -EBADF (any other failure).
#[no_mangle]
pub extern "C" fn usbmuxd_connect(handle: u32, tcp_port: c_ushort) -> c_int {
    guard("usbmuxd_connect", -libc::EBADF, || {
        crate::debug!(2, "usbmuxd_connect", "Connecting to device {handle}, port {tcp_port}");
        match api::connect(handle, tcp_port) {
            Ok(conn) => {
                crate::debug!(2, "usbmuxd_connect", "Connected to device {handle}, port {tcp_port}");
                conn.into_raw_fd()
            }
            Err(e) => {
                crate::debug!(1, "usbmuxd_connect", "Connection to device {handle} port {tcp_port} failed: {e}");
                let ret = match e {
                    Error::DaemonUnreachable(_) => e.neg_errno(),
                    Error::DaemonResult(result::BADDEV) => -libc::ENODEV,
                    Error::DaemonResult(result::CONNREFUSED) => -libc::ECONNREFUSED,
                    _ => -libc::EBADF,
                };
                set_errno(-ret);
                ret
            }
        }
    })
}

/// Closes a descriptor from `usbmuxd_connect()`. Returns 0, or -1 with `errno` set.
#[no_mangle]
pub extern "C" fn usbmuxd_disconnect(sfd: c_int) -> c_int {
    // SAFETY: close() on any integer is memory-safe; the caller gives up the descriptor.
    unsafe { libc::close(sfd) }
}

/// Borrows a caller's descriptor for the duration of a call.
///
/// # Safety
/// `fd` must be non-negative; it need not be open (poll then reports POLLNVAL).
unsafe fn borrow(fd: c_int) -> BorrowedFd<'static> {
    // SAFETY: the descriptor is only used during the current call, while the caller
    // keeps it; an unopened number is harmless for poll/send/recv (EBADF/POLLNVAL).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Sends up to `len` bytes once the socket has room (waiting at most 10 s). Returns 0
/// with `*sent_bytes` = bytes sent, which may be less than `len` (the socket is
/// non-blocking: loop). Errors (with `*sent_bytes` = 0): -EINVAL (bad fd or NULL
/// `sent_bytes`), -EFAULT (NULL data), -ETIMEDOUT, -ECONNRESET, or -errno of send.
///
/// # Safety
/// `data` must be NULL or point to `len` readable bytes; `sent_bytes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_send(sfd: c_int, data: *const c_char, len: u32, sent_bytes: *mut u32) -> c_int {
    if sfd < 0 || sent_bytes.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: checked non-null; writable by contract.
    unsafe { *sent_bytes = 0 };
    if data.is_null() && len > 0 {
        return -libc::EFAULT;
    }
    let buf: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: non-null, `len` readable bytes by contract.
        unsafe { std::slice::from_raw_parts(data.cast(), len as usize) }
    };
    guard("usbmuxd_send", -libc::EIO, || {
        // SAFETY: sfd >= 0, used only during this call.
        match api::send_fd(unsafe { borrow(sfd) }, buf, Some(SEND_TIMEOUT)) {
            Ok(n) => {
                if n < buf.len() {
                    crate::debug!(1, "usbmuxd_send", "sent {n} of {} bytes", buf.len());
                }
                // SAFETY: as above.
                unsafe { *sent_bytes = n as u32 };
                0
            }
            Err(e) => e.neg_errno(),
        }
    })
}

/// Waits up to `timeout` ms (0 = forever) for data, then receives up to `len` bytes.
/// Returns 0 with `*recv_bytes` = bytes received (at least 1). Errors (with
/// `*recv_bytes` = 0): -ETIMEDOUT, -ECONNRESET (peer closed), -EINVAL (bad fd or NULL
/// `recv_bytes`), -EFAULT (NULL data), or -errno of recv.
///
/// # Safety
/// `data` must be NULL or point to `len` writable bytes; `recv_bytes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_recv_timeout(
    sfd: c_int,
    data: *mut c_char,
    len: u32,
    recv_bytes: *mut u32,
    timeout: c_uint,
) -> c_int {
    if sfd < 0 || recv_bytes.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: checked non-null; writable by contract.
    unsafe { *recv_bytes = 0 };
    if data.is_null() && len > 0 {
        return -libc::EFAULT;
    }
    let buf: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: non-null, `len` writable bytes by contract, not aliased during the call.
        unsafe { std::slice::from_raw_parts_mut(data.cast(), len as usize) }
    };
    let timeout = (timeout != 0).then(|| Duration::from_millis(timeout.into()));
    guard("usbmuxd_recv_timeout", -libc::EIO, || {
        // SAFETY: sfd >= 0, used only during this call.
        match api::recv_fd(unsafe { borrow(sfd) }, buf, timeout) {
            Ok(n) => {
                // SAFETY: as above.
                unsafe { *recv_bytes = n as u32 };
                0
            }
            Err(e) => e.neg_errno(),
        }
    })
}

/// `usbmuxd_recv_timeout()` with a 5000 ms timeout.
///
/// # Safety
/// As for `usbmuxd_recv_timeout`.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_recv(sfd: c_int, data: *mut c_char, len: u32, recv_bytes: *mut u32) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { usbmuxd_recv_timeout(sfd, data, len, recv_bytes, RECV_TIMEOUT_MS) }
}
