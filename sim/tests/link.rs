//! The host engine of the `usbmuxd` crate against the simulated device, through `Link`.

use usbmux_sim::{DeviceConfig, Framing, Link, ECHO_PORT};
use usbmuxd::usbmux::{EngineConfig, EngineEvent};

fn echo_round_trip(framing: Framing, fragment: Option<usize>) {
    let mut link = Link::new(EngineConfig::default(), DeviceConfig::new().framing(framing).with_default_services());
    if let Some(max) = fragment {
        link.fragment(max, 42);
    }
    assert!(link.take_engine_events().contains(&EngineEvent::Ready { version: 2 }));
    let now = link.now();
    let id = link.engine.connect(ECHO_PORT, now).unwrap();
    link.pump();
    assert!(link.take_engine_events().contains(&EngineEvent::Connected(id)));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 100_000];
    while got.len() < data.len() {
        sent += link.engine.send(id, &data[sent..]).unwrap();
        link.pump();
        loop {
            let n = link.engine.recv(id, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            link.pump();
        }
    }
    assert!(got == data);
}

#[test]
fn echo_over_usb_framing() {
    echo_round_trip(Framing::usb(), None);
}

#[test]
fn echo_over_a_fragmented_stream() {
    echo_round_trip(Framing::Stream, Some(1000));
}
