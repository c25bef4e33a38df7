//! The library's in-process USB backend (`USBMUXD_BACKEND=usb`) against simulated
//! devices on the simulated bus: the same Rust API as over the daemon, with no daemon.
//!
//! The backend is started once per process and keeps its bus, so every test here shares
//! one simulated bus and runs under one lock.

use parking_lot::{Mutex, MutexGuard};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;
use usbmux_sim::simbus::{PlugOptions, SimBusServer};
use usbmux_sim::{DeviceConfig, Direction, Framing, Misbehaviour, ResetAfter};
use usbmuxd::events::{self, EventKind};
use usbmuxd::{ConnectionType, Error};

// One UDID per test, so that a failing test cannot leave a device behind for another.
const UDID_ECHO: &str = "00008030-001A2B3C4D5E6F70";
const UDID_PAIR: &str = "00008030-0000000000000002";
const UDID_RESET: &str = "00008030-0000000000000003";

struct Bus {
    server: SimBusServer,
    _dir: std::path::PathBuf,
}

fn bus() -> (&'static Bus, MutexGuard<'static, ()>) {
    static LOCK: Mutex<()> = Mutex::new(());
    static BUS: OnceLock<Bus> = OnceLock::new();
    let guard = LOCK.lock();
    let bus = BUS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("usbmuxd-backend-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = SimBusServer::bind(dir.join("simbus")).unwrap();
        std::env::set_var("USBMUXD_SIMBUS", server.path());
        std::env::set_var("USBMUXD_BACKEND", "usb");
        std::env::set_var("USBMUXD_PAIR_RECORD_DIR", dir.join("lockdown"));
        Bus { server, _dir: dir }
    });
    (bus, guard)
}

fn device(udid: &str) -> DeviceConfig {
    DeviceConfig::new().udid(udid).framing(Framing::usb()).with_default_services()
}

/// Plugs a device and waits until the backend lists it.
fn plug(bus: &Bus, udid: &str) -> (u64, u32) {
    let info = bus.server.plug(device(udid), PlugOptions::default()).unwrap();
    for _ in 0..200 {
        if let Some(d) = usbmuxd::list_devices().unwrap().into_iter().find(|d| d.udid == udid) {
            return (info.bus_id, d.handle);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{udid} never listed");
}

fn unplug(bus: &Bus, bus_id: u64, udid: &str) {
    assert!(bus.server.unplug(bus_id));
    for _ in 0..200 {
        if !usbmuxd::list_devices().unwrap().iter().any(|d| d.udid == udid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{udid} still listed after unplug");
}

#[test]
fn list_connect_and_echo_without_a_daemon() {
    let (bus, _g) = bus();
    let (bus_id, handle) = plug(bus, UDID_ECHO);
    let d = usbmuxd::list_devices().unwrap().into_iter().find(|d| d.handle == handle).unwrap();
    assert_eq!((d.udid.as_str(), d.product_id, d.connection), (UDID_ECHO, 0x12a8, ConnectionType::Usb));

    let conn = usbmuxd::connect(handle, 7).unwrap();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut got = Vec::new();
    let mut sent = 0;
    let mut buf = vec![0u8; 65536];
    while got.len() < data.len() {
        // Short waits both ways: the echo pipeline holds about a megabyte, so a writer
        // that does not read in between would stall itself.
        if sent < data.len() {
            match conn.send(&data[sent..], Duration::from_millis(5)) {
                Ok(n) => sent += n,
                Err(Error::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        match conn.recv(&mut buf, Some(Duration::from_millis(5))) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got == data, "echo byte-exact through engine, bus and simulator");
    drop(conn);

    let refused = usbmuxd::connect(handle, 4444);
    assert!(matches!(refused, Err(Error::DaemonResult(3))), "closed port refused: {refused:?}");
    assert!(matches!(usbmuxd::connect(9999, 7), Err(Error::DaemonResult(2))), "unknown device");
    unplug(bus, bus_id, UDID_ECHO);
}

#[test]
fn pair_records_are_kept_by_the_backend() {
    let (bus, _g) = bus();
    let (bus_id, handle) = plug(bus, UDID_PAIR);
    let buid = usbmuxd::read_buid().unwrap().unwrap();
    assert_eq!(usbmuxd::read_buid().unwrap().unwrap(), buid);
    let mut record = plist::Dictionary::new();
    record.insert("HostID".into(), "HOST".into());
    let mut bytes = Vec::new();
    plist::Value::Dictionary(record).to_writer_xml(&mut bytes).unwrap();

    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sub = events::subscribe(move |e| {
        let _ = tx.lock().send((e.kind, e.device.handle));
    })
    .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (EventKind::Add, handle));
    usbmuxd::save_pair_record(UDID_PAIR, &bytes, handle).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (EventKind::Paired, handle));
    let stored = usbmuxd::read_pair_record(UDID_PAIR).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&stored).contains("HOST"));
    usbmuxd::delete_pair_record(UDID_PAIR).unwrap();
    assert!(matches!(usbmuxd::read_pair_record(UDID_PAIR), Err(Error::DaemonResult(2))));

    // Unplug reaches subscribers as REMOVE, replug as ADD with a new handle.
    assert!(bus.server.unplug(bus_id));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (EventKind::Remove, handle));
    let info = bus.server.plug(device(UDID_PAIR), PlugOptions::default()).unwrap();
    let (kind, new_handle) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(kind, EventKind::Add);
    assert_ne!(new_handle, handle, "handles are not reused");
    drop(sub);
    unplug(bus, info.bus_id, UDID_PAIR);
}

#[test]
fn unplug_and_reset_mid_stream_end_the_connection_without_losing_bytes() {
    let (bus, _g) = bus();
    let (bus_id, handle) = plug(bus, UDID_RESET);
    // The device resets the source after 300000 bytes: the reader gets exactly those.
    bus.server.with_device(bus_id, |d| {
        let m = Misbehaviour::default()
            .reset_after(ResetAfter::new(300_000, Direction::ToHost, "simulated failure").on_port(19));
        d.set_misbehaviour(m, std::time::Instant::now());
    });
    let conn = usbmuxd::connect(handle, 19).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match conn.recv(&mut buf, Some(Duration::from_secs(5))) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, usbmux_sim::services::source_bytes(300_000));

    // Unplug while a slow reader has data pending: what arrived is still delivered.
    bus.server.with_device(bus_id, |d| d.set_misbehaviour(Misbehaviour::default(), std::time::Instant::now()));
    let conn = usbmuxd::connect(handle, 7).unwrap();
    conn.send_all(b"last words", Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(bus.server.unplug(bus_id));
    let mut got = Vec::new();
    loop {
        match conn.recv(&mut buf, Some(Duration::from_secs(5))) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"last words");
}
