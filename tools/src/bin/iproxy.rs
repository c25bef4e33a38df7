//! iproxy: forwards local TCP ports to TCP ports on an iOS device.

#![forbid(unsafe_code)]

use usbmuxd_tools::cli::{parse_iproxy, Outcome};
use usbmuxd_tools::proxy::{listen_sockets, Proxy};
use usbmuxd_tools::sys;

fn main() {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let config = match parse_iproxy(&argv) {
        Outcome::Run(c) => c,
        Outcome::Exit { stdout, stderr, code } => {
            sys::out(&stdout);
            sys::err(&stderr);
            std::process::exit(code);
        }
    };
    if config.debug > 0 {
        usbmuxd::debug::set_level(config.debug);
    }
    sys::raise_nofile_limit();
    let mut listeners = Vec::new();
    for pair in &config.pairs {
        sys::out(&format!("Creating listening port {} for device port {}\n", pair.local, pair.device));
        match listen_sockets(pair.local, config.source.as_deref()) {
            Ok(fds) => listeners.extend(fds.into_iter().map(|fd| (fd, *pair))),
            Err(e) => {
                sys::err(&format!("Error creating socket for listen port {}: {}\n", pair.local, sys::error_text(&e)));
                std::process::exit(1);
            }
        }
    }
    // USBMUXD_TOOLS_NO_SPLICE=1: copy through buffers instead of splicing (for tests and
    // benchmarks of that path).
    let splice = !std::env::var_os("USBMUXD_TOOLS_NO_SPLICE").is_some_and(|v| !v.is_empty() && v != "0");
    let mut proxy = match Proxy::new(&config, listeners, splice) {
        Ok(p) => p,
        Err(e) => {
            sys::err(&format!("ERROR: {}\n", sys::error_text(&e)));
            std::process::exit(1);
        }
    };
    if let Err(e) = proxy.run() {
        // As upstream after its select() failed: a message, exit status 0.
        sys::err(&format!("epoll_wait: {}\n", sys::error_text(&e)));
    }
}
