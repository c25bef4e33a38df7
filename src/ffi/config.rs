//! Process-wide settings: debug level, inotify use, library version.

use std::os::raw::{c_char, c_int};

/// Sets the debug level: messages of that level and below go to stderr
/// (default 0; negative silences everything).
#[no_mangle]
pub extern "C" fn libusbmuxd_set_debug_level(level: c_int) {
    crate::debug::set_level(level);
}

/// Chooses how the event listener waits for a daemon that went away: watching the
/// socket's directory with inotify (non-zero, the default) or polling once a second (0).
#[no_mangle]
pub extern "C" fn libusbmuxd_set_use_inotify(set: c_int) {
    crate::events::set_use_inotify(set != 0);
}

/// The library version, a static string the caller must not free.
#[no_mangle]
pub extern "C" fn libusbmuxd_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}
