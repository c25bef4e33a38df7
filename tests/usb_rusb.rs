//! The libusb transport on the machine it runs on (`cargo test --features usb`): whatever
//! the machine has — no USB at all, buses without iOS devices, or devices — discovery
//! starts, says what it found (and why nothing), and stops without hanging.
#![cfg(feature = "usb")]

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use usbmuxd::usb::rusb::{RusbBus, POLL_INTERVAL};
use usbmuxd::usb::{Bus, BusEvent, UsbDeviceInfo};

/// Runs `f` on a thread and fails the test if it does not finish within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("hung (or panicked)")
}

fn no_usb_here() -> bool {
    !Path::new("/sys/bus/usb").exists() && !Path::new("/dev/bus/usb").exists()
}

#[test]
fn discovery_reports_what_it_found_and_stops() {
    let (description, events) = within(Duration::from_secs(30), || {
        let events = Arc::new(Mutex::new(Vec::<BusEvent>::new()));
        let seen = events.clone();
        let mut bus = RusbBus::new();
        bus.start(Arc::new(move |e| seen.lock().unwrap().push(e))).expect("start");
        assert!(bus.start(Arc::new(|_| {})).is_err(), "a second start is refused");
        // Long enough for a polling scan and the reads of any device present.
        std::thread::sleep(POLL_INTERVAL + Duration::from_millis(500));
        let description = bus.describe();
        drop(bus);
        let events = events.lock().unwrap().clone();
        (description, events)
    });
    eprintln!("describe(): {description}");
    assert!(!description.is_empty());
    if no_usb_here() {
        assert!(description.contains("no USB buses"), "{description}");
        assert!(events.is_empty(), "{events:?}");
    } else {
        assert!(description.starts_with("libusb") || description.contains("cannot start"), "{description}");
    }
    for e in &events {
        if let BusEvent::Arrived(info) = e {
            assert!(info.is_mux_device() && !info.serial.is_empty(), "{info:?}");
        }
    }
}

#[test]
fn opening_an_absent_device_fails_cleanly() {
    let error = within(Duration::from_secs(30), || {
        let mut bus = RusbBus::new();
        let ghost = UsbDeviceInfo {
            bus_id: 0xfeff, // bus 254, address 255: never assigned
            vendor_id: 0x05ac,
            product_id: 0x12a8,
            serial: "00008120000000000000001E".into(),
            location: 0xfe00ff,
            speed_bps: 480_000_000,
        };
        let result = bus.open(&ghost, Arc::new(|_| {}));
        result.err().map(|e| e.to_string())
    });
    let error = error.expect("opening a device that is not there must fail");
    eprintln!("open(): {error}");
    if no_usb_here() {
        assert!(error.contains("no USB buses"), "{error}");
    }
}

#[test]
fn dropping_an_unstarted_bus_does_not_hang() {
    within(Duration::from_secs(10), || {
        let bus = RusbBus::new();
        let _ = bus.describe();
        drop(bus);
    });
}

/// Run by `tests/umockdev/run.sh` against a simulated iPhone on a umockdev bus (the
/// environment says what to expect): discovery finds it; opening selects configuration 4
/// and claims the mux interface; closing cancels the queued reads and releases it;
/// opened again (configuration 4 is already active), the host engine runs over the link: the VERSION exchange,
/// SETUP, a connection to the echo service and 200 000 bytes echoed back (packets of
/// 49 152 bytes, each followed by a ZLP; device packets spanning several 16 KiB reads
/// joined into the link's 64 KiB transfers); then the device is unplugged and the link
/// reports `Gone` once, after which sending fails.
#[test]
#[ignore = "needs the umockdev testbed of tests/umockdev/run.sh"]
fn umockdev_iphone_engine_session() {
    use std::time::Instant;
    use usbmuxd::usb::LinkEvent;
    use usbmuxd::usbmux::{Engine, EngineConfig, EngineEvent};

    const ECHO_PORT: u16 = 7;
    const LEN: usize = 200_000;
    let serial = std::env::var("USBMUXD_UMOCKDEV_SERIAL").expect("run by tests/umockdev/run.sh");
    let location: u32 = std::env::var("USBMUXD_UMOCKDEV_LOCATION").unwrap().parse().unwrap();
    within(Duration::from_secs(120), move || {
        let (bus_tx, bus_rx) = mpsc::channel();
        let bus_tx = Mutex::new(bus_tx);
        let mut bus = RusbBus::new();
        bus.start(Arc::new(move |e| {
            let _ = bus_tx.lock().unwrap().send(e);
        }))
        .expect("start");
        eprintln!("describe(): {}", bus.describe());
        // start() returns once the devices present are reported.
        let info = match bus_rx.try_recv() {
            Ok(BusEvent::Arrived(info)) => info,
            other => panic!("expected the iPhone to be reported by start(): {other:?}"),
        };
        assert_eq!(info.serial, serial);
        assert_eq!((info.vendor_id, info.product_id), (0x05ac, 0x12a8));
        assert_eq!(info.location, location);
        assert_eq!(info.speed_bps, 480_000_000);
        assert!(bus.describe().contains(&serial), "{}", bus.describe());

        // Open and close while the reads are queued: they are cancelled, nothing reported.
        let (idle_tx, idle_rx) = mpsc::channel::<LinkEvent>();
        let idle_tx = Mutex::new(idle_tx);
        let idle = bus
            .open(
                &info,
                Arc::new(move |e| {
                    let _ = idle_tx.lock().unwrap().send(e);
                }),
            )
            .expect("open");
        std::thread::sleep(Duration::from_millis(100));
        drop(idle);
        assert!(
            idle_rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "nothing is reported after the link is dropped"
        );

        let (link_tx, link_rx) = mpsc::channel();
        let link_tx = Mutex::new(link_tx);
        let mut link = bus
            .open(
                &info,
                Arc::new(move |e| {
                    let _ = link_tx.lock().unwrap().send(e);
                }),
            )
            .expect("open");
        let mut engine = Engine::new(EngineConfig { usb_read_size: link.read_size(), ..EngineConfig::default() });
        engine.start();
        let pattern: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 251) as u8).collect();
        let (mut conn, mut sent, mut echoed) = (None, 0, Vec::new());
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while echoed.len() < LEN {
            assert!(Instant::now() < deadline, "stalled: sent {sent}, echoed {}", echoed.len());
            while engine.poll_transmit(&mut buf) {
                link.send(&buf).expect("bulk OUT");
            }
            let wait = engine
                .poll_timeout()
                .map_or(Duration::from_millis(200), |t| t.saturating_duration_since(Instant::now()))
                .min(Duration::from_millis(200));
            match link_rx.recv_timeout(wait) {
                Ok(LinkEvent::Transfer(bytes)) => engine.handle_input(&bytes, Instant::now()),
                Ok(LinkEvent::Gone(why)) => panic!("link gone: {why}"),
                Err(_) => engine.handle_timeout(Instant::now()),
            }
            while let Some(event) = engine.poll_event() {
                match event {
                    EngineEvent::Ready { version } => {
                        assert_eq!(version, 2);
                        conn = Some(engine.connect(ECHO_PORT, Instant::now()).expect("connect"));
                    }
                    EngineEvent::Connected(_) | EngineEvent::Readable(_) | EngineEvent::Writable(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            if let Some(id) = conn {
                if sent < LEN {
                    sent += engine.send(id, &pattern[sent..]).unwrap_or(0);
                }
                let mut chunk = [0u8; 65536];
                while let Ok(n @ 1..) = engine.recv(id, &mut chunk) {
                    echoed.extend_from_slice(&chunk[..n]);
                }
            }
        }
        assert!(echoed == pattern, "echo differs");
        // Pull the plug: the pending IN transfers fail with ENODEV.
        std::fs::write(std::env::var("USBMUXD_UMOCKDEV_UNPLUG").unwrap(), b"").unwrap();
        loop {
            match link_rx.recv_timeout(Duration::from_secs(10)).expect("no Gone after unplugging") {
                LinkEvent::Gone(why) => {
                    assert!(why.contains("disconnected"), "{why}");
                    break;
                }
                LinkEvent::Transfer(bytes) => engine.handle_input(&bytes, Instant::now()),
            }
        }
        assert!(link.send(&[0; 28]).is_err(), "sending to an unplugged device fails");
        assert!(link_rx.recv_timeout(Duration::from_millis(300)).is_err(), "nothing after Gone");
        drop(link);
        drop(bus);
    });
}
