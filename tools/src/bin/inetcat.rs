//! inetcat: connects stdin and stdout to a TCP port on an iOS device.

#![forbid(unsafe_code)]

use std::process::exit;
use usbmuxd_tools::cli::{parse_inetcat, Outcome};
use usbmuxd_tools::device::{describe_list_failure, lookup, Lookup, Route};
use usbmuxd_tools::relay::relay_stdio;
use usbmuxd_tools::sys;

fn fail(msg: &str) -> ! {
    sys::err(&format!("{msg}\n"));
    exit(1);
}

fn main() {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let config = match parse_inetcat(&argv) {
        Outcome::Run(c) => c,
        Outcome::Exit { stdout, stderr, code } => {
            sys::out(&stdout);
            sys::err(&stderr);
            exit(code);
        }
    };
    if config.debug > 0 {
        usbmuxd::debug::set_level(config.debug);
    }
    let dev = match lookup(config.udid.as_deref(), config.lookup) {
        Lookup::Found(d) => d,
        Lookup::DaemonFailed(e) => {
            sys::out("Connecting to usbmuxd failed, terminating.\n");
            fail(&describe_list_failure(&e));
        }
        Lookup::NoDevices => fail("No connected device found, terminating."),
        Lookup::NoMatch => fail("No connected/matching device found, disconnecting client."),
    };
    let socket = match Route::for_device(&dev, config.port).and_then(|r| r.connect(config.port)) {
        Ok(s) => s,
        Err(e) => fail(&e.message()),
    };
    if let Err(msg) = relay_stdio(&socket) {
        fail(&msg);
    }
}
