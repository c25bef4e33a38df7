//! The in-process USB backend: talks to devices directly over USB (or a simulated bus),
//! with no usbmuxd daemon. See `docs/ARCHITECTURE.md`.

pub mod daemon;
pub mod pairing;
#[cfg(feature = "usb")]
pub mod rusb;
pub mod simbus;
pub mod transport;

pub use transport::{Bus, BusEvent, BusSink, DeviceLink, LinkEvent, LinkSink, UsbDeviceInfo};

use parking_lot::Mutex;
use std::io;
use std::sync::Arc;

/// Environment variable choosing the backend: `daemon`, `usb`, or unset / `auto` (the
/// daemon when its socket answers, else the USB backend).
pub const BACKEND_ENV: &str = "USBMUXD_BACKEND";

/// Which backend requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// Only the usbmuxd daemon.
    Daemon,
    /// Only the in-process USB backend.
    Usb,
    /// The daemon if it answers, else the USB backend.
    Auto,
}

/// The backend `USBMUXD_BACKEND` asks for (re-read on every request).
pub fn backend_choice() -> BackendChoice {
    match std::env::var(BACKEND_ENV).ok().as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("daemon") => BackendChoice::Daemon,
        Some("usb") => BackendChoice::Usb,
        _ => BackendChoice::Auto,
    }
}

static RUNNING: Mutex<Option<Arc<daemon::UsbDaemon>>> = Mutex::new(None);

/// The bus the USB backend uses: the simulated bus named by `USBMUXD_SIMBUS`, else real
/// USB (when built with the `usb` feature).
fn open_bus() -> io::Result<Box<dyn Bus>> {
    if let Some(bus) = simbus::SimBus::from_env() {
        return Ok(Box::new(bus));
    }
    #[cfg(feature = "usb")]
    {
        return Ok(Box::new(rusb::RusbBus::new()));
    }
    #[allow(unreachable_code)]
    Err(io::Error::new(io::ErrorKind::Unsupported, "built without USB support (cargo feature `usb`)"))
}

/// A client connection to the in-process USB backend, starting it on first use.
pub fn in_process_client() -> io::Result<std::os::unix::net::UnixStream> {
    let mut running = RUNNING.lock();
    if running.is_none() {
        let daemon = daemon::UsbDaemon::start(open_bus()?, pairing::PairStore::from_env())?;
        *running = Some(Arc::new(daemon));
    }
    running.as_ref().expect("started above").connect_client()
}
