//! The Rust API against the scripted test daemon: every request, both protocols, the
//! fallbacks, every Connect result, malformed replies and the event listener.
//!
//! The daemon address comes from `USBMUXD_SOCKET_ADDRESS`, which is process-wide, so
//! these tests take a lock and run one at a time.

use parking_lot::{Mutex, MutexGuard};
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use usbmuxd::events::{self, Event, EventKind};
use usbmuxd::{ConnectionType, Error, LookupOptions};
use usbmuxd_testd::{DaemonConfig, Misbehaviour, RequestKind, TestDaemon, TestDevice, Times, ECHO_PORT, SOURCE_PORT};

const UDID: &str = "00008030-001A2B3C4D5E6F70";
const RAW_UDID: &str = "00008030001A2B3C4D5E6F70";

static SERIAL: Mutex<()> = Mutex::new(());

/// A test daemon the library is pointed at for the duration of one test.
struct Fixture {
    daemon: TestDaemon,
    _lock: MutexGuard<'static, ()>,
}

fn with_daemon(config: DaemonConfig) -> Fixture {
    let lock = SERIAL.lock();
    let daemon = TestDaemon::start(config).expect("test daemon starts");
    std::env::set_var("USBMUXD_SOCKET_ADDRESS", daemon.usbmuxd_socket_address());
    Fixture { daemon, _lock: lock }
}

fn usb_daemon() -> Fixture {
    with_daemon(DaemonConfig::new().device(TestDevice::usb(3, RAW_UDID)))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn lists_usb_and_network_devices() {
    let f =
        with_daemon(
            DaemonConfig::new()
                .device(TestDevice::usb(3, RAW_UDID).with_product_id(0x12a8))
                .device(TestDevice::network(7, UDID, Ipv4Addr::new(192, 168, 1, 23))),
        );
    let list = usbmuxd::list_devices().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].handle, list[0].product_id, list[0].udid.as_str()), (3, 0x12a8, UDID));
    assert_eq!(list[0].connection, ConnectionType::Usb);
    assert!(list[0].network_address.is_empty());
    assert_eq!(list[1].connection, ConnectionType::Network);
    assert_eq!(list[1].network_address, [0x10, 2, 0, 0, 192, 168, 1, 23, 0, 0, 0, 0, 0, 0, 0, 0]);

    let req = f.daemon.wait_for_request(Duration::from_secs(1), |r| r.message_type() == "ListDevices").unwrap();
    assert_eq!(req.version(), 1);
    assert_eq!(req.string("ClientVersionString"), Some("libusbmuxd 2.1.1"));
    assert!(req.prog_name().is_some_and(|p| !p.is_empty()));
    assert_eq!(req.integer("kLibUSBMuxVersion"), Some(3));

    let any = LookupOptions::from_bits(2 | 4);
    let prefer = LookupOptions::from_bits(2 | 4 | 8);
    assert_eq!(usbmuxd::get_device(Some(UDID), any).unwrap().unwrap().handle, 3);
    assert_eq!(usbmuxd::get_device(Some(UDID), prefer).unwrap().unwrap().handle, 7);
    assert_eq!(usbmuxd::get_device(Some("nope"), any).unwrap(), None);
}

#[test]
fn binary_only_daemon_is_spoken_to_in_binary_and_others_are_not_affected() {
    let f = with_daemon(DaemonConfig::new().binary_only().device(TestDevice::usb(3, RAW_UDID)));
    let list = usbmuxd::list_devices().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].udid, UDID);
    assert_eq!(list[0].connection, ConnectionType::Usb, "binary records are USB devices");
    let conn = usbmuxd::connect(3, ECHO_PORT).unwrap();
    conn.send_all(b"ping", Duration::from_secs(5)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(conn.recv(&mut buf, Some(Duration::from_secs(5))).unwrap(), 4);
    assert_eq!(&buf, b"ping");
    let binary_connect = f.daemon.wait_for_request(Duration::from_secs(1), |r| r.message_type() == "CONNECT").unwrap();
    assert_eq!(binary_connect.version(), 0);
    assert_eq!(binary_connect.connect_target(), Some((3, ECHO_PORT)));

    // A second, modern daemon elsewhere still gets plist requests: the fallback was
    // decided for that one daemon, not for the process.
    let modern = TestDaemon::start(DaemonConfig::new().device(TestDevice::usb(4, RAW_UDID))).unwrap();
    std::env::set_var("USBMUXD_SOCKET_ADDRESS", modern.usbmuxd_socket_address());
    assert_eq!(usbmuxd::list_devices().unwrap()[0].handle, 4);
    drop(usbmuxd::connect(4, ECHO_PORT).unwrap());
    let connect = modern.wait_for_request(Duration::from_secs(1), |r| r.message_type() == "Connect").unwrap();
    assert_eq!(connect.version(), 1);
    assert!(modern.requests().iter().all(|r| r.is_plist()));
}

#[test]
fn list_devices_falls_back_to_listen() {
    let f = with_daemon(DaemonConfig::new().without_list_devices().device(TestDevice::usb(3, RAW_UDID)));
    let list = usbmuxd::list_devices().unwrap();
    assert_eq!(list.iter().map(|d| d.handle).collect::<Vec<_>>(), [3]);
    assert!(f.daemon.requests().iter().any(|r| r.message_type() == "Listen"));
    // Remembered: the next listing goes straight to Listen.
    f.daemon.clear_requests();
    usbmuxd::list_devices().unwrap();
    assert!(f.daemon.requests().iter().all(|r| r.message_type() != "ListDevices"));
}

#[test]
fn connect_results_and_port_byte_order() {
    let f = usb_daemon();
    let conn = usbmuxd::connect(3, ECHO_PORT).unwrap();
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let mut echoed = Vec::new();
    let mut sent = 0;
    let mut buf = vec![0u8; 65536];
    while echoed.len() < data.len() {
        if sent < data.len() {
            sent += conn.send(&data[sent..], Duration::from_secs(5)).unwrap();
        }
        match conn.recv(&mut buf, Some(Duration::from_millis(10))) {
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
            Err(Error::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(echoed == data, "echo is byte-exact");
    drop(conn);

    drop(usbmuxd::connect(3, 62078).unwrap());
    let req = f.daemon.wait_for_request(Duration::from_secs(1), |r| r.connect_target() == Some((3, 62078))).unwrap();
    assert_eq!(req.integer("PortNumber"), Some(32498));

    assert!(matches!(usbmuxd::connect(99, ECHO_PORT), Err(Error::DaemonResult(2))));
    assert!(matches!(usbmuxd::connect(3, 4444), Err(Error::DaemonResult(3))));
    f.daemon.misbehave(Misbehaviour::ConnectResult(1));
    assert!(matches!(usbmuxd::connect(3, ECHO_PORT), Err(Error::DaemonResult(1))));
}

#[test]
fn source_data_arrives_whole_and_eof_is_reported() {
    let _f = usb_daemon();
    let conn = usbmuxd::connect(3, SOURCE_PORT).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 100_000];
    loop {
        match conn.recv(&mut buf, Some(Duration::from_secs(5))) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, usbmuxd_testd::source_bytes(got.len()));
    assert_eq!(got.len() as u64, usbmuxd_testd::DEFAULT_SOURCE_LEN);
}

#[test]
fn pair_records_and_buid() {
    let f = usb_daemon();
    let buid = usbmuxd::read_buid().unwrap().unwrap();
    assert_eq!(buid.len(), 36);
    assert_eq!(usbmuxd::read_buid().unwrap().unwrap(), buid, "stable");

    let record = plist_bytes();
    usbmuxd::save_pair_record(UDID, &record, 3).unwrap();
    let stored = usbmuxd::read_pair_record(UDID).unwrap().unwrap();
    assert!(plist::Value::from_reader_xml(&stored[..]).unwrap().as_dictionary().unwrap().contains_key("HostID"));
    usbmuxd::delete_pair_record(UDID).unwrap();
    assert!(matches!(usbmuxd::read_pair_record(UDID), Err(Error::DaemonResult(2))));
    assert!(matches!(usbmuxd::delete_pair_record(UDID), Err(Error::DaemonResult(2))));
    // Refused before anything is sent: the id could name a path outside the record store.
    f.daemon.clear_requests();
    assert!(matches!(usbmuxd::save_pair_record("../evil", &record, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(usbmuxd::read_pair_record("../lockdown/SystemConfiguration"), Err(Error::InvalidArgument(_))));
    assert!(matches!(usbmuxd::delete_pair_record("a/b"), Err(Error::InvalidArgument(_))));
    assert!(f.daemon.requests().is_empty());
    assert!(matches!(usbmuxd::save_pair_record(UDID, b"x", 0), Err(Error::DaemonResult(22))));
}

fn plist_bytes() -> Vec<u8> {
    let mut d = plist::Dictionary::new();
    d.insert("HostID".into(), "5C8F2F2A-0000-0000-0000-000000000000".into());
    let mut out = Vec::new();
    plist::Value::Dictionary(d).to_writer_binary(&mut out).unwrap();
    out
}

#[test]
fn malformed_replies_are_errors_within_the_timeout_and_leak_nothing() {
    let f = usb_daemon();
    usbmuxd::list_devices().unwrap(); // warm up lazily created state
    assert!(f.daemon.wait_until(Duration::from_secs(5), |d| d.connection_count() == 0));
    let before = open_fds();
    let cases = [
        Misbehaviour::ShortLength,
        Misbehaviour::HugeLength,
        Misbehaviour::TruncatedHeader,
        Misbehaviour::TruncatedPayload,
        Misbehaviour::InvalidPlist,
        Misbehaviour::BinaryPlist,
        Misbehaviour::WrongKind,
        Misbehaviour::CloseWithoutReply,
        Misbehaviour::NeverReply,
    ];
    for m in cases {
        for kind in [RequestKind::ReadBuid, RequestKind::Connect, RequestKind::ReadPairRecord] {
            f.daemon.misbehave_on(kind, m.clone(), Times::Once);
            let t0 = Instant::now();
            let err = match kind {
                RequestKind::ReadBuid => usbmuxd::read_buid().err(),
                RequestKind::Connect => usbmuxd::connect(3, ECHO_PORT).err(),
                _ => usbmuxd::read_pair_record(UDID).err(),
            };
            // (read_pair_record of a missing record fails anyway; WrongKind replaces it.)
            let elapsed = t0.elapsed();
            f.daemon.clear_misbehaviours();
            if m == Misbehaviour::WrongKind && kind != RequestKind::Connect {
                // A bare `Result 0` to ReadBUID / ReadPairRecord is success without data.
                assert!(err.is_none(), "{m:?}/{kind:?}");
                continue;
            }
            let err = err.unwrap_or_else(|| panic!("{m:?} on {kind:?} must fail"));
            assert!(err.errno() > 0, "{m:?}/{kind:?}: {err}");
            assert!(elapsed < Duration::from_secs(7), "{m:?}/{kind:?} took {elapsed:?}");
        }
    }
    // Device listing survives a broken ListDevices reply by falling back to Listen.
    f.daemon.misbehave_on(RequestKind::ListDevices, Misbehaviour::InvalidPlist, Times::Once);
    assert_eq!(usbmuxd::list_devices().unwrap().len(), 1);
    // The daemon runs in this process: let it notice our closed connections first.
    assert!(f.daemon.wait_until(Duration::from_secs(5), |d| d.connection_count() == 0));
    assert_eq!(open_fds(), before, "no descriptor leaked");
}

#[test]
fn unreachable_daemon_errors() {
    let _lock = SERIAL.lock();
    let dir = std::env::temp_dir().join(format!("usbmuxd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.sock");
    std::env::set_var("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", missing.display()));
    assert_eq!(usbmuxd::list_devices().unwrap_err().errno(), libc::ENOENT);
    let file = dir.join("plain-file");
    std::fs::write(&file, b"").unwrap();
    std::env::set_var("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", file.display()));
    assert_eq!(usbmuxd::connect(1, 1).unwrap_err().errno(), libc::ECONNREFUSED);
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    std::env::set_var("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", stale.display()));
    assert_eq!(usbmuxd::read_buid().unwrap_err().errno(), libc::ECONNREFUSED);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tcp_daemon_address() {
    let f = with_daemon(DaemonConfig::tcp("127.0.0.1:0".parse().unwrap()).device(TestDevice::usb(3, RAW_UDID)));
    assert!(f.daemon.usbmuxd_socket_address().starts_with("127.0.0.1:"));
    assert_eq!(usbmuxd::list_devices().unwrap().len(), 1);
    let conn = usbmuxd::connect(3, ECHO_PORT).unwrap();
    conn.send_all(b"tcp", Duration::from_secs(5)).unwrap();
    let mut buf = [0u8; 3];
    conn.recv(&mut buf, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(&buf, b"tcp");
}

/// Collects events from a subscription.
fn recorder() -> (impl Fn(&Event) + Send + Sync + 'static, mpsc::Receiver<(EventKind, u32)>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    (
        move |e: &Event| {
            let _ = tx.lock().send((e.kind, e.device.handle));
        },
        rx,
    )
}

fn next(rx: &mpsc::Receiver<(EventKind, u32)>) -> (EventKind, u32) {
    rx.recv_timeout(Duration::from_secs(5)).expect("event within 5 s")
}

#[test]
fn events_follow_the_daemon_through_a_restart() {
    let f = usb_daemon();
    let (cb, rx) = recorder();
    let sub = events::subscribe(cb).unwrap();
    assert_eq!(next(&rx), (EventKind::Add, 3));

    f.daemon.attach(TestDevice::usb(5, "00008101-000000000000AAAA")).unwrap();
    assert_eq!(next(&rx), (EventKind::Add, 5));
    f.daemon.paired(5).unwrap();
    assert_eq!(next(&rx), (EventKind::Paired, 5));
    f.daemon.detach(5).unwrap();
    assert_eq!(next(&rx), (EventKind::Remove, 5));

    // The daemon goes away: REMOVE for what it had; it comes back: ADD again, woken by
    // the socket appearing, not by a poll timer.
    f.daemon.stop();
    assert_eq!(next(&rx), (EventKind::Remove, 3));
    std::thread::sleep(Duration::from_millis(300));
    f.daemon.restart().unwrap();
    assert_eq!(next(&rx), (EventKind::Add, 3));

    // A second subscriber gets the replay before subscribe returns.
    let (cb2, rx2) = recorder();
    let sub2 = events::subscribe(cb2).unwrap();
    assert_eq!(rx2.try_recv().unwrap(), (EventKind::Add, 3));
    let t0 = Instant::now();
    sub2.unsubscribe();
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert_eq!(rx2.try_recv().unwrap(), (EventKind::Remove, 3));

    let t0 = Instant::now();
    sub.unsubscribe();
    assert!(t0.elapsed() < Duration::from_millis(100), "last unsubscribe stops the thread quickly");
    assert_eq!(rx.try_recv().unwrap(), (EventKind::Remove, 3));
    assert!(rx.try_recv().is_err());
}

#[test]
fn binary_listener_events() {
    let f = with_daemon(DaemonConfig::new().binary_only().device(TestDevice::usb(3, RAW_UDID)));
    let (cb, rx) = recorder();
    let sub = events::subscribe(cb).unwrap();
    assert_eq!(next(&rx), (EventKind::Add, 3));
    f.daemon.paired(3).unwrap();
    assert_eq!(next(&rx), (EventKind::Paired, 3));
    f.daemon.detach(3).unwrap();
    assert_eq!(next(&rx), (EventKind::Remove, 3));
    drop(sub);
}

#[test]
fn callbacks_may_unsubscribe_themselves_and_subscribe_others() {
    let f = usb_daemon();
    let slot: std::sync::Arc<Mutex<Option<events::Subscription>>> = Default::default();
    let (tx, rx) = mpsc::channel::<&'static str>();
    let tx = Mutex::new(tx);
    let inner_slot = slot.clone();
    let sub = events::subscribe(move |e| {
        if e.kind == EventKind::Add && e.device.handle == 5 {
            // Subscribe someone new, then end our own subscription, from inside a callback.
            let nested = events::subscribe(|_| {}).unwrap();
            drop(nested);
            if let Some(me) = inner_slot.lock().take() {
                me.unsubscribe();
            }
            let _ = tx.lock().send("unsubscribed");
        }
    })
    .unwrap();
    *slot.lock() = Some(sub);
    f.daemon.attach(TestDevice::usb(5, "00008101-000000000000AAAA")).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "unsubscribed");
    // The listener stopped with its last subscriber; a new subscription starts afresh.
    let (cb, rx2) = recorder();
    let again = events::subscribe(cb).unwrap();
    let mut seen = vec![next(&rx2), next(&rx2)];
    seen.sort_by_key(|e| e.1);
    assert_eq!(seen, [(EventKind::Add, 3), (EventKind::Add, 5)]);
    drop(again);
}

#[test]
fn no_callback_runs_after_unsubscribe_returns() {
    let f = usb_daemon();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unsubscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, a, u) = (running.clone(), after.clone(), unsubscribed.clone());
    let sub = events::subscribe(move |e| {
        if e.kind == EventKind::Add && e.device.handle == 5 {
            r.store(true, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
        if u.load(std::sync::atomic::Ordering::SeqCst) {
            a.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap();
    f.daemon.attach(TestDevice::usb(5, "00008101-000000000000AAAA")).unwrap();
    while !running.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The callback is sleeping on the listener thread: unsubscribe waits for it, and
    // the REMOVE replay it delivers itself happens before it returns.
    sub.unsubscribe();
    unsubscribed.store(true, std::sync::atomic::Ordering::SeqCst);
    f.daemon.attach(TestDevice::usb(6, "00008101-000000000000BBBB")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!after.load(std::sync::atomic::Ordering::SeqCst));
}
