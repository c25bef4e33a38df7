//! Small system helpers: error texts as `strerror` words them, the descriptor limit,
//! and output that never panics (a closed stdout is not fatal for these tools).

use std::io::{self, Write};

/// The `strerror` text of an I/O error, without Rust's " (os error N)" suffix.
pub fn error_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// `strerror(errno)`.
pub fn strerror(errno: i32) -> String {
    error_text(&io::Error::from_raw_os_error(errno))
}

/// Raises the soft limit on open descriptors to the hard limit. Returns the limit now
/// in force (`None` = unlimited).
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = Rlimit { current: lim.maximum, maximum: lim.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return raised.current;
        }
    }
    lim.current
}

/// Writes `text` to stdout and flushes; errors (a closed pipe) are ignored.
pub fn out(text: &str) {
    let mut o = io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Writes `text` to stderr; errors are ignored.
pub fn err(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// The last component of `argv[0]` (what `basename(3)` gives for the usage line).
pub fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { path } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(strerror(111), "Connection refused");
        assert_eq!(strerror(19), "No such device");
        assert_eq!(error_text(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn basenames() {
        assert_eq!(basename("/usr/bin/iproxy"), "iproxy");
        assert_eq!(basename("iproxy"), "iproxy");
        assert_eq!(basename("./x/"), "x");
        assert_eq!(basename("/"), "/");
    }
}
