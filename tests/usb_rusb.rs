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
