//! The library's debug output: `[libusbmuxd] function: message` lines on stderr,
//! printed when the message level is at or below the level set by
//! `libusbmuxd_set_debug_level` (default 0; negative silences everything).

use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};

static LEVEL: AtomicI32 = AtomicI32::new(0);

/// Sets the debug level (`libusbmuxd_set_debug_level`).
pub fn set_level(level: i32) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// The current debug level.
pub fn level() -> i32 {
    LEVEL.load(Ordering::Relaxed)
}

/// Whether a message of `level` would be printed.
pub fn enabled(level: i32) -> bool {
    level <= self::level()
}

/// Prints one debug line (use the [`debug!`](crate::debug!) macro).
pub fn print(func: &str, args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[libusbmuxd] {func}: {args}");
    let _ = err.flush();
}

/// `debug!(level, "function", "format", args...)`: prints when `level <= debug level`.
#[macro_export]
macro_rules! debug {
    ($level:expr, $func:expr, $($arg:tt)+) => {
        if $crate::debug::enabled($level) {
            $crate::debug::print($func, format_args!($($arg)+));
        }
    };
}
