//! [`TestDaemon`]: start, control and stop a fake usbmuxd.

use crate::config::{DaemonConfig, Listen, ProtocolMode, Service, TestDevice};
use crate::log::LoggedRequest;
use crate::misbehaviour::{Arsenal, Misbehaviour, RequestKind, Times};
use crate::net::{BoundAddress, Listener};
use crate::server::{AcceptLoop, ConnectionSet};
use crate::services::ServiceStats;
use crate::state::{Event, Shared, State};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usbmuxd::usb::pairing::PairStore;

/// Why a runtime control call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// [`TestDaemon::attach`] with a handle that is already attached.
    HandleInUse(u32),
    /// No attached device has this handle.
    NoSuchDevice(u32),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::HandleInUse(h) => write!(f, "device handle {h} is already attached"),
            ControlError::NoSuchDevice(h) => write!(f, "no device with handle {h}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// A running fake usbmuxd. Every method takes `&self`, so a daemon can be shared between
/// threads (e.g. in an `Arc`). Dropping it stops it and joins all of its threads.
///
/// Behaviour follows the open-source daemon (daemon spec §4–§6): a connection starts in
/// the binary protocol and switches to plist replies with its first plist request;
/// lengths < 16 or > 64 KiB close the connection; unparseable plists get no reply; a
/// request on a listening connection closes it; `Connect` to an unknown device gives 2, to
/// a port without service 3, else `Result 0` and a raw pipe to the service.
pub struct TestDaemon {
    shared: Arc<Shared>,
    address: BoundAddress,
    accept: Mutex<Option<AcceptLoop>>,
    /// Directory we created (socket and/or pair records), removed on drop.
    temp_dir: Option<PathBuf>,
}

fn make_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("usbmuxd-testd-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl TestDaemon {
    /// Binds the socket, adds the configured devices and starts serving.
    pub fn start(config: DaemonConfig) -> io::Result<TestDaemon> {
        let needs_temp = config.listen == Listen::TempDir || config.pair_dir.is_none();
        let temp_dir = if needs_temp { Some(make_temp_dir()?) } else { None };
        let tmp = || temp_dir.clone().expect("temporary directory was created");
        let pair_dir = config.pair_dir.clone().unwrap_or_else(|| tmp().join("lockdown"));
        let address = match &config.listen {
            Listen::Unix(p) => BoundAddress::Unix(p.clone()),
            Listen::Tcp(a) => BoundAddress::Tcp(*a),
            Listen::TempDir => BoundAddress::Unix(tmp().join("usbmuxd")),
        };
        let mut state = State {
            mode: config.mode,
            list_devices: config.list_devices,
            devices: BTreeMap::new(),
            last_handle: 0,
            listeners: BTreeMap::new(),
            arsenal: Arsenal::default(),
            counters: HashMap::new(),
        };
        for dev in config.devices {
            state.add_device(dev).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let _ = std::fs::create_dir_all(&pair_dir);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            store: Mutex::new(PairStore::new(pair_dir)),
            connections: Arc::new(ConnectionSet::default()),
        });
        let mut daemon = TestDaemon { shared, address, accept: Mutex::new(None), temp_dir };
        let (accept, bound) = daemon.listen()?;
        daemon.address = bound;
        *daemon.accept.lock() = Some(accept);
        Ok(daemon)
    }

    fn listen(&self) -> io::Result<(AcceptLoop, BoundAddress)> {
        let (listener, bound) = Listener::bind(&self.address)?;
        self.shared.connections.open();
        let shared = Arc::clone(&self.shared);
        let accept = AcceptLoop::start(listener, move |stream| {
            let s = Arc::clone(&shared);
            shared.connections.spawn(stream, move |id, stream| crate::connection::serve(s, id, stream));
        })?;
        Ok((accept, bound))
    }

    // ----- where it listens -------------------------------------------------------------

    /// The bound address (TCP port 0 already replaced by the real port).
    pub fn address(&self) -> &BoundAddress {
        &self.address
    }

    /// The value to put in `USBMUXD_SOCKET_ADDRESS`: `UNIX:/path` or `127.0.0.1:port`.
    pub fn usbmuxd_socket_address(&self) -> String {
        self.address.to_env_value()
    }

    pub fn socket_path(&self) -> Option<&Path> {
        match &self.address {
            BoundAddress::Unix(p) => Some(p),
            BoundAddress::Tcp(_) => None,
        }
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.address {
            BoundAddress::Tcp(a) => Some(*a),
            BoundAddress::Unix(_) => None,
        }
    }

    /// Where pair records and `SystemConfiguration.plist` are stored.
    pub fn pair_dir(&self) -> PathBuf {
        self.shared.store.lock().dir().to_path_buf()
    }

    // ----- life cycle ---------------------------------------------------------------------

    pub fn is_running(&self) -> bool {
        self.accept.lock().is_some()
    }

    /// "Kills" the daemon: closes the listening socket, removes the socket file (if it is
    /// still ours), closes
    /// every client connection (listeners and pipes included) and joins their threads.
    /// Devices, pair records, armed misbehaviours and the log are kept. Idempotent.
    pub fn stop(&self) {
        let Some(accept) = self.accept.lock().take() else {
            return;
        };
        accept.stop();
        self.shared.connections.close_all();
        self.shared.state.lock().listeners.clear();
        self.shared.poke();
    }

    /// Starts serving again on the same address (after [`TestDaemon::stop`]; if the daemon
    /// is running it is stopped first, like a daemon restart). Devices keep their handles.
    pub fn restart(&self) -> io::Result<()> {
        self.stop();
        let mut slot = self.accept.lock();
        let (accept, _) = self.listen()?;
        *slot = Some(accept);
        Ok(())
    }

    // ----- devices and events -------------------------------------------------------------

    /// Adds a device and sends `Attached` / `DEVICE_ADD` to every listener. A handle of 0
    /// gets the next free id (ids are not reused while the daemon lives, like upstream).
    /// Returns the handle.
    pub fn attach(&self, device: TestDevice) -> Result<u32, ControlError> {
        let mut state = self.shared.state.lock();
        let device = state.add_device(device)?.clone();
        state.broadcast(Event::Add(&device));
        Ok(device.handle)
    }

    /// Removes a device and sends `Detached` / `DEVICE_REMOVE` to every listener. Pipes
    /// already open to its services stay open.
    pub fn detach(&self, handle: u32) -> Result<TestDevice, ControlError> {
        let mut state = self.shared.state.lock();
        let device = state.devices.remove(&handle).ok_or(ControlError::NoSuchDevice(handle))?;
        state.broadcast(Event::Remove(handle));
        Ok(device)
    }

    /// Sends `Paired` / `DEVICE_PAIRED` for an attached device to every listener.
    pub fn paired(&self, handle: u32) -> Result<(), ControlError> {
        let mut state = self.shared.state.lock();
        if !state.devices.contains_key(&handle) {
            return Err(ControlError::NoSuchDevice(handle));
        }
        state.broadcast(Event::Paired(handle));
        Ok(())
    }

    /// The attached devices, by handle.
    pub fn devices(&self) -> Vec<TestDevice> {
        self.shared.state.lock().devices.values().cloned().collect()
    }

    /// Sets (`Some`) or removes (`None`) the service on a port of an attached device.
    pub fn set_service(&self, handle: u32, port: u16, service: Option<Service>) -> Result<(), ControlError> {
        let mut state = self.shared.state.lock();
        let dev = state.devices.get_mut(&handle).ok_or(ControlError::NoSuchDevice(handle))?;
        match service {
            Some(s) => dev.services.insert(port, s),
            None => dev.services.remove(&port),
        };
        Ok(())
    }

    /// Traffic seen by the service on `port` of device `handle` so far.
    pub fn service_stats(&self, handle: u32, port: u16) -> ServiceStats {
        self.shared.state.lock().counters.get(&(handle, port)).map(|c| c.snapshot()).unwrap_or_default()
    }

    /// Requests received so far by the lockdownd service on `port` of device `handle`
    /// (in order, over all connections).
    pub fn lockdownd_requests(&self, handle: u32, port: u16) -> Vec<plist::Dictionary> {
        self.shared.state.lock().counters.get(&(handle, port)).map(|c| c.lockdownd_requests()).unwrap_or_default()
    }

    /// Number of connections in listen mode.
    pub fn listener_count(&self) -> usize {
        self.shared.state.lock().listeners.len()
    }

    /// Number of open client connections (any state).
    pub fn connection_count(&self) -> usize {
        self.shared.connections.len()
    }

    /// Writes raw bytes to every listener (e.g. an undecodable event). Returns how many
    /// listeners got them; the others are dropped.
    pub fn send_to_listeners(&self, bytes: &[u8]) -> usize {
        let mut state = self.shared.state.lock();
        state.listeners.retain(|_, l| {
            let ok = std::io::Write::write_all(&mut l.stream, bytes).is_ok();
            if !ok {
                l.stream.shutdown(Shutdown::Both);
            }
            ok
        });
        state.listeners.len()
    }

    /// Closes every listening connection (the daemon keeps running). Returns how many.
    pub fn disconnect_listeners(&self) -> usize {
        let listeners = std::mem::take(&mut self.shared.state.lock().listeners);
        for l in listeners.values() {
            l.stream.shutdown(Shutdown::Both);
        }
        self.shared.poke();
        listeners.len()
    }

    // ----- protocol behaviour ---------------------------------------------------------------

    pub fn set_protocol_mode(&self, mode: ProtocolMode) {
        self.shared.state.lock().mode = mode;
    }

    pub fn set_list_devices(&self, supported: bool) {
        self.shared.state.lock().list_devices = supported;
    }

    /// Arms `m` for the next request it applies to (see [`crate::misbehaviour`]).
    pub fn misbehave(&self, m: Misbehaviour) {
        self.misbehave_on(RequestKind::Any, m, Times::Once);
    }

    /// Arms `m` for requests of `kind`, `times` times.
    pub fn misbehave_on(&self, kind: RequestKind, m: Misbehaviour, times: Times) {
        self.shared.state.lock().arsenal.arm(kind, m, times);
    }

    /// Disarms everything.
    pub fn clear_misbehaviours(&self) {
        self.shared.state.lock().arsenal.clear();
    }

    /// Number of armed entries not yet used up.
    pub fn armed_misbehaviours(&self) -> usize {
        self.shared.state.lock().arsenal.len()
    }

    // ----- the request log ------------------------------------------------------------------

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().clear();
    }

    /// Waits until a logged request satisfies `pred`; returns the first that does.
    pub fn wait_for_request(&self, timeout: Duration, pred: impl Fn(&LoggedRequest) -> bool) -> Option<LoggedRequest> {
        let mut found = None;
        self.wait_until(timeout, |d| {
            found = d.shared.log.lock().iter().find(|r| pred(r)).cloned();
            found.is_some()
        });
        found
    }

    /// Waits until `cond(self)` holds, re-checking on every request, listener change, and
    /// at least every 10 ms. Returns whether it held before `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&TestDaemon) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let mut guard = self.shared.log.lock();
            self.shared.changed.wait_for(&mut guard, (deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Waits until at least `n` connections are in listen mode.
    pub fn wait_for_listeners(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |d| d.listener_count() >= n)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
