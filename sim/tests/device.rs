//! The device against hand-made host packets: handshake bytes from the spec's worked
//! examples (§8), connections, data, flow control and the error paths.

mod common;

use common::*;
use usbmux_sim::services::{source_bytes, Service};
use usbmux_sim::*;
use usbmuxd::usbmux::codec::{flags, CodecError, HeaderFormat, Packet, Protocol, VersionBody};

/// Replies `00 00 01 29` to the 4 bytes `00 00 01 1c` (the exchange of §8.7–8.8).
#[derive(Default)]
struct Reply(Vec<u8>);

impl Service for Reply {
    fn on_data(&mut self, data: &[u8]) {
        if data == [0, 0, 1, 0x1c] {
            self.0.extend_from_slice(&[0, 0, 1, 0x29]);
        }
    }
    fn has_output(&self) -> bool {
        !self.0.is_empty()
    }
    fn poll_output(&mut self, buf: &mut Vec<u8>, max: usize) {
        let n = max.min(self.0.len());
        buf.extend(self.0.drain(..n));
    }
}

#[test]
fn spec_section_8_session_byte_for_byte() {
    let mut dev = SimDevice::new(DeviceConfig::new().listen(62078, |_| Reply::default()));
    let host = &mut Host::new();
    let now = host.now;

    // §8.1 → §8.2
    dev.handle_input(&hex("00 00 00 00 00 00 00 14 00 00 00 02 00 00 00 00 00 00 00 00"), now).unwrap();
    assert_eq!(dev.poll_transmit().unwrap(), hex("00 00 00 00 00 00 00 14 00 00 00 02 00 00 00 00 00 00 00 00"));
    assert_eq!(dev.state(), MuxState::AwaitingSetup);
    // §8.3: no answer
    dev.handle_input(&hex("00 00 00 02 00 00 00 11 fe ed fa ce 00 00 ff ff 07"), now).unwrap();
    assert_eq!(dev.poll_transmit(), None);
    assert_eq!((dev.state(), dev.header_format()), (MuxState::Active, HeaderFormat::Long));
    // §8.4 → §8.5 (the device's counters: tx 0, rx 1 = the SYN's tx_seq)
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 01 ff ff 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 02 00 00 00 00 00"),
        now,
    )
    .unwrap();
    assert_eq!(
        dev.poll_transmit().unwrap(),
        hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 00 00 01 f2 7e 00 01 00 00 00 00 00 00 00 01 50 12 02 00 00 00 00 00")
    );
    // §8.6: handshake complete, nothing to say
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 02 00 01 00 01 f2 7e 00 00 00 01 00 00 00 01 50 10 02 00 00 00 00 00"),
        now,
    )
    .unwrap();
    assert_eq!(dev.poll_transmit(), None);
    // §8.7 → §8.8: the reply acknowledges the 4 bytes (ack 5)
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 28 fe ed fa ce 00 03 00 01 00 01 f2 7e 00 00 00 01 00 00 00 01 50 10 02 00 00 00 00 00 00 00 01 1c"),
        now,
    )
    .unwrap();
    assert_eq!(
        dev.poll_transmit().unwrap(),
        hex("00 00 00 06 00 00 00 28 fe ed fa ce 00 01 00 03 f2 7e 00 01 00 00 00 01 00 00 00 05 50 10 02 00 00 00 00 00 00 00 01 29")
    );
    assert_eq!(dev.poll_transmit(), None);
    // §8.8: the host's immediate ACK (ack 1) and its delayed ACK (ack 5): no answers.
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 04 00 03 00 01 f2 7e 00 00 00 05 00 00 00 01 50 10 02 00 00 00 00 00"),
        now,
    )
    .unwrap();
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 05 00 03 00 01 f2 7e 00 00 00 05 00 00 00 05 50 10 02 00 00 00 00 00"),
        now,
    )
    .unwrap();
    assert_eq!(dev.poll_transmit(), None);
    let id = dev.find_connection(1, 62078).unwrap();
    let info = dev.connection(id).unwrap();
    assert_eq!((info.stats.bytes_received, info.stats.bytes_sent, info.stats.bytes_acked, info.unacked), (4, 4, 4, 0));
    // §8.9: the host closes.
    dev.handle_input(
        &hex("00 00 00 06 00 00 00 24 fe ed fa ce 00 06 00 03 00 01 f2 7e 00 00 00 05 00 00 00 05 50 04 02 00 00 00 00 00"),
        now,
    )
    .unwrap();
    assert_eq!(dev.poll_transmit(), None);
    assert!(dev.connections().is_empty());

    let ev = events(&mut dev);
    assert_eq!(
        ev[..4],
        [
            Event::Version {
                requested: VersionBody { major: 2, minor: 0, padding: 0 },
                answered: VersionBody { major: 2, minor: 0, padding: 0 }
            },
            Event::Setup { payload: vec![7] },
            Event::Accepted { id, host_port: 1, device_port: 62078 },
            Event::Established { id },
        ]
    );
    assert!(matches!(ev[4], Event::Closed { cause: CloseCause::HostReset, stats, .. } if stats.bytes_received == 4));
    assert_eq!(ev.len(), 5, "no counter gaps or drops: {ev:?}");
}

#[test]
fn version_1_device_uses_short_headers_and_no_setup() {
    let mut dev = SimDevice::new(DeviceConfig::new().version(1, 0).with_default_services());
    let now = std::time::Instant::now();
    dev.handle_input(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None), now).unwrap();
    assert_eq!(dev.poll_transmit().unwrap(), hex("00 00 00 00 00 00 00 14 00 00 00 01 00 00 00 00 00 00 00 00"));
    assert_eq!((dev.state(), dev.header_format()), (MuxState::Active, HeaderFormat::Short));
    // §8.4, version-1 SYN (28 bytes) → a short SYN|ACK.
    dev.handle_input(&hex("00 00 00 06 00 00 00 1c 00 01 f2 7e 00 00 00 00 00 00 00 00 50 02 02 00 00 00 00 00"), now)
        .unwrap();
    assert_eq!(
        dev.poll_transmit().unwrap(),
        hex("00 00 00 06 00 00 00 1c f2 7e 00 01 00 00 00 00 00 00 00 01 50 12 02 00 00 00 00 00")
    );
    // A SETUP makes no sense to a version-1 device.
    dev.handle_input(&Packet::Setup(vec![7]).encode(Some((0, 0xffff))), now).unwrap();
    assert_eq!(dev.poll_transmit(), None);
    let ev = events(&mut dev);
    assert!(ev.contains(&Event::Dropped(DropReason::OutOfPlace { protocol: Protocol::Setup, state: MuxState::Active })));

    // A full echo exchange with short headers.
    let host = &mut Host::new();
    let mut dev = SimDevice::new(DeviceConfig::new().version(1, 0).with_default_services());
    host.send(&mut dev, &Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
    host.recv_one(&mut dev);
    let mut c = host.connect(&mut dev, 5, ECHO_PORT);
    let data = source_bytes(200_000);
    c.exchange(host, &mut dev, &data);
    assert!(c.received == data);
}

#[test]
fn invalid_version_is_answered_as_configured() {
    let mut dev = SimDevice::new(DeviceConfig::new().version(7, 3));
    let now = std::time::Instant::now();
    dev.handle_input(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None), now).unwrap();
    let reply = dev.poll_transmit().unwrap();
    assert_eq!(
        Packet::decode(&reply, HeaderFormat::Short).unwrap().1,
        Packet::Version(VersionBody { major: 7, minor: 3, padding: 0 })
    );
}

#[test]
fn packets_before_the_version_exchange_or_setup_are_dropped() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    let syn = Packet::Tcp { header: tcp(1, ECHO_PORT, 0, 0, flags::SYN, WINDOW), payload: vec![] };
    host.send(&mut dev, &syn);
    assert!(host.recv(&mut dev).is_empty());
    host.send(&mut dev, &Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
    host.recv_one(&mut dev);
    host.format = HeaderFormat::Long;
    host.send(&mut dev, &syn);
    assert!(host.recv(&mut dev).is_empty());
    let ev = events(&mut dev);
    assert!(ev.contains(&Event::Dropped(DropReason::OutOfPlace {
        protocol: Protocol::Tcp,
        state: MuxState::AwaitingVersion
    })));
    assert!(ev
        .contains(&Event::Dropped(DropReason::OutOfPlace { protocol: Protocol::Tcp, state: MuxState::AwaitingSetup })));
}

#[test]
fn connect_to_closed_port_is_refused_with_rst_ack() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.send_tcp(&mut dev, tcp(3, 4242, 0, 0, flags::SYN, WINDOW), &[]);
    let got = host.recv_one(&mut dev);
    let (h, payload) = got.tcp();
    assert_eq!((h.source_port, h.dest_port, h.seq, h.ack, h.flags, h.window), (4242, 3, 0, 1, 0x14, 0));
    assert!(payload.is_empty());
    assert_eq!(events(&mut dev).last(), Some(&Event::Refused { host_port: 3, device_port: 4242 }));
    assert!(dev.connections().is_empty());
}

#[test]
fn echo_round_trip_segments_within_limits() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    c.exchange(host, &mut dev, b"hello");
    assert_eq!(c.received, b"hello");
    let data = source_bytes(3 << 20);
    c.exchange(host, &mut dev, &data);
    assert!(c.received[5..] == data[..]);
    assert!(c.packets.iter().all(|(_, len)| *len <= DEFAULT_MAX_SEGMENT));
    assert!(c.packets.iter().any(|(_, len)| *len == DEFAULT_MAX_SEGMENT), "full-size segments are used");
    let id = dev.find_connection(1, ECHO_PORT).unwrap();
    assert_eq!(dev.service::<Echo>(id).unwrap().received(), 5 + (3 << 20));
    assert!(dev.service::<Sink>(id).is_none());
    // The host closes.
    host.send_tcp(&mut dev, c.header(flags::RST), &[]);
    assert!(host.recv(&mut dev).is_empty());
    assert!(matches!(events(&mut dev).last(), Some(Event::Closed { cause: CloseCause::HostReset, .. })));
}

#[test]
fn device_honours_the_hosts_window() {
    let mut dev = SimDevice::new(DeviceConfig::new().listen(19, |_| Source::new(10_000)));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.send_tcp(&mut dev, tcp(1, 19, 0, 0, flags::SYN, 1024), &[]);
    host.recv_one(&mut dev);
    let mut c = Conn {
        sport: 1,
        dport: 19,
        seq: 1,
        ack: 1,
        window: 1024,
        device_ack: 1,
        device_window: WINDOW,
        received: vec![],
        taken: 0,
        reset: None,
        packets: vec![],
    };
    // Handshake ACK: the device may send 1024 bytes, no more, until the host acks.
    c.send_ack(host, &mut dev);
    assert_eq!(c.received.len(), 1024);
    c.send_ack(host, &mut dev);
    assert_eq!(c.received.len(), 1024, "no ack → no more data");
    // A slow reader: half consumed.
    c.ack = 1 + 512;
    c.send_ack(host, &mut dev);
    assert_eq!(c.received.len(), 1024 + 512);
    // The window may also open without new acks.
    c.window = 4096;
    c.send_ack(host, &mut dev);
    assert_eq!(c.received.len(), 512 + 4096);
    // Reading everything lets the source finish; it ends with a bare RST once all is acked.
    while c.reset.is_none() {
        c.consume();
        c.send_ack(host, &mut dev);
    }
    assert_eq!(c.received, source_bytes(10_000));
    assert_eq!(c.reset.as_deref(), Some(&[][..]), "clean end: RST without payload");
    let (last, _) = c.packets.last().unwrap();
    assert_eq!((last.flags, last.seq), (RESET_FLAGS, 10_001));
    assert!(matches!(events(&mut dev).last(), Some(Event::Closed { cause: CloseCause::ServiceClosed, .. })));
}

#[test]
fn source_waits_for_the_final_ack_before_its_rst() {
    let mut dev = SimDevice::new(DeviceConfig::new().listen(19, |_| Source::new(100)));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, 19);
    assert_eq!(c.received.len(), 100);
    assert!(c.reset.is_none());
    c.ack = 100; // one byte short
    c.send_ack(host, &mut dev);
    assert!(c.reset.is_none());
    c.consume();
    c.send_ack(host, &mut dev);
    assert_eq!(c.reset, Some(vec![]));
}

#[test]
fn window_overrun_resets_with_a_reason() {
    let mut dev = SimDevice::new(DeviceConfig::new().receive_window(1024).with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    assert_eq!(c.device_window, 1024);
    c.send_data(host, &mut dev, &[1; 1000]);
    assert!(c.reset.is_none());
    assert_eq!(c.device_ack, 1001, "the sink consumed and the device acknowledged");
    // The window now reaches up to 1001 + 1024: 1025 bytes is one too many.
    c.send_data(host, &mut dev, &[2; 1025]);
    let text = String::from_utf8(c.reset.clone().expect("reset")).unwrap();
    assert!(text.contains("overrun") && text.contains("1 byte(s) past the 1024-byte window"), "{text}");
    assert!(text.ends_with('\n'));
    let ev = events(&mut dev);
    let Some(Event::Closed {
        cause: CloseCause::DeviceReset(ResetReason::WindowOverrun { window, excess }),
        stats,
        ..
    }) = ev.last()
    else {
        panic!("{ev:?}")
    };
    assert_eq!((*window, *excess, stats.bytes_received), (1024, 1, 1000));
}

#[test]
fn sequence_gap_and_duplicate_reset_the_connection() {
    for (skew, what) in [(10i32, "missing"), (-3, "repeated")] {
        let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
        let host = &mut Host::new();
        host.start_v2(&mut dev);
        let mut c = host.connect(&mut dev, 1, SINK_PORT);
        c.send_data(host, &mut dev, b"abcdef");
        c.seq = (c.seq as i32 + skew) as u32;
        c.send_data(host, &mut dev, b"ghi");
        let text = String::from_utf8(c.reset.clone().expect("reset")).unwrap();
        assert!(text.contains("sequence error") && text.contains(what), "{text}");
        let ev = events(&mut dev);
        assert!(matches!(
            ev.last(),
            Some(Event::Closed { cause: CloseCause::DeviceReset(ResetReason::SequenceGap { expected: 7, .. }), .. })
        ));
    }
}

#[test]
fn bad_acks_and_flags_reset_the_connection() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    // Acknowledging data the device never sent.
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    c.ack = 50;
    c.send_ack(host, &mut dev);
    assert!(String::from_utf8(c.reset.unwrap()).unwrap().contains("bad acknowledgement 50"));
    // ACK|PSH (the host sends only SYN, ACK or RST).
    let mut c = host.connect(&mut dev, 2, SINK_PORT);
    let h = c.header(flags::ACK | flags::PSH);
    host.send_tcp(&mut dev, h, b"x");
    c.absorb(host.recv(&mut dev));
    assert!(String::from_utf8(c.reset.unwrap()).unwrap().contains("unexpected TCP flags 0x18"));
    // A second SYN on an open connection.
    let mut c = host.connect(&mut dev, 3, SINK_PORT);
    host.send_tcp(&mut dev, tcp(3, SINK_PORT, 0, 0, flags::SYN, WINDOW), &[]);
    c.absorb(host.recv(&mut dev));
    assert!(c.reset.is_some());
    let causes: Vec<_> = events(&mut dev)
        .into_iter()
        .filter_map(|e| match e {
            Event::Closed { cause: CloseCause::DeviceReset(r), .. } => Some(r),
            _ => None,
        })
        .collect();
    assert!(matches!(
        causes[..],
        [
            ResetReason::BadAck { ack: 50, acked: 1, sent: 1 },
            ResetReason::UnexpectedFlags(0x18),
            ResetReason::DuplicateSyn
        ]
    ));
}

#[test]
fn unknown_connections_get_an_anonymous_rst_and_rsts_are_dropped() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.send_tcp(&mut dev, tcp(7, ECHO_PORT, 0x1234, 1, flags::ACK, WINDOW), b"data");
    let got = host.recv_one(&mut dev);
    let (h, payload) = got.tcp();
    assert_eq!((h.source_port, h.dest_port, h.seq, h.ack, h.flags, h.window), (ECHO_PORT, 7, 0, 0x1234, flags::RST, 0));
    assert!(payload.is_empty());
    host.send_tcp(&mut dev, tcp(7, ECHO_PORT, 0x1234, 1, flags::RST, WINDOW), &[]);
    assert!(host.recv(&mut dev).is_empty());
    let ev = events(&mut dev);
    assert!(ev.contains(&Event::UnknownConnection { host_port: 7, device_port: ECHO_PORT, flags: flags::ACK }));
    assert!(ev.contains(&Event::Dropped(DropReason::UnknownReset { host_port: 7, device_port: ECHO_PORT })));
}

#[test]
fn lockdownd_over_the_device() {
    use plist::{Dictionary, Value};
    use usbmux_sim::services::lockdownd::{encode_message, LOCKDOWN_TYPE};
    fn request(pairs: &[(&str, &str)]) -> Vec<u8> {
        let d: Dictionary = pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        encode_message(&d)
    }
    fn replies(mut bytes: &[u8]) -> Vec<Dictionary> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(Value::from_reader_xml(&bytes[4..4 + len]).unwrap().into_dictionary().unwrap());
            bytes = &bytes[4 + len..];
        }
        out
    }
    const UDID: &str = "00008110-000A11112222801E";
    let mut dev = SimDevice::new(DeviceConfig::new().udid(UDID).with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, LOCKDOWND_PORT);
    c.exchange(host, &mut dev, &request(&[("Request", "QueryType"), ("Label", "sim-test")]));
    let r = replies(&c.take());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["Type"].as_string(), Some(LOCKDOWN_TYPE));
    assert_eq!(r[0]["Label"].as_string(), Some("sim-test"));
    let id = dev.find_connection(1, LOCKDOWND_PORT).unwrap();
    assert_eq!(dev.service::<Lockdownd>(id).unwrap().requests().len(), 1);

    let mut two = request(&[("Request", "GetValue"), ("Key", "UniqueDeviceID")]);
    two.extend(request(&[("Request", "Goodbye")]));
    c.exchange(host, &mut dev, &two);
    let r = replies(&c.take());
    assert_eq!(r[0]["Value"].as_string(), Some(UDID));
    assert_eq!(r[1]["Result"].as_string(), Some("Success"));
    assert_eq!(c.reset.as_deref(), Some(&[][..]), "Goodbye ends the connection cleanly");
    assert!(matches!(events(&mut dev).last(), Some(Event::Closed { cause: CloseCause::ServiceClosed, .. })));
}

#[test]
fn service_abort_sends_its_reason() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, LOCKDOWND_PORT);
    c.send_data(host, &mut dev, &[0, 0, 0, 2, b'h', b'i']);
    assert_eq!(c.reset.as_deref(), Some(&b"lockdownd: request is not a plist dictionary\n"[..]));
}

#[test]
fn control_messages() {
    let mut dev = SimDevice::new(DeviceConfig::new());
    let host = &mut Host::new();
    dev.send_control(control::INFO, b"before").unwrap();
    assert_eq!(dev.poll_transmit().unwrap(), hex("00 00 00 01 00 00 00 0f 07 62 65 66 6f 72 65"));
    host.start_v2(&mut dev);
    dev.send_control(control::ERROR, b"oops").unwrap();
    dev.send_control(control::WARNING, b"").unwrap();
    let got = host.recv(&mut dev);
    assert_eq!(got[0].packet, Packet::Control { kind: 3, text: b"oops".to_vec() });
    assert_eq!(got[0].counters, Some((0, 0)), "long header after SETUP (rx = SETUP's tx_seq 0)");
    assert_eq!(got[1].packet, Packet::Control { kind: 5, text: vec![] });
    assert_eq!(got[1].counters, Some((1, 0)));
}

#[test]
fn mux_counters() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    // SYN was tx 1, ACK tx 2; the SYN|ACK was device tx 0 with rx 1.
    assert_eq!(host.rx, 1);
    c.send_data(host, &mut dev, b"ping");
    let (h, _) = c.packets.last().unwrap();
    assert_eq!(h.ack, 5);
    assert_eq!(host.rx, 3, "rx_seq of the echo = tx_seq of the data packet");
    assert!(events(&mut dev).iter().all(|e| !matches!(e, Event::MuxCounterGap { .. })));
    // Skipping a host packet counter is reported (only).
    host.tx += 1;
    c.send_data(host, &mut dev, b"pong");
    assert_eq!(&c.received[4..], b"pong");
    assert!(events(&mut dev).contains(&Event::MuxCounterGap { expected: 4, got: 5 }));
    // A second SETUP restarts both sides' counters without complaint.
    host.tx = 0;
    host.send(&mut dev, &Packet::Setup(vec![7]));
    c.send_data(host, &mut dev, b"x");
    let ev = events(&mut dev);
    assert_eq!(ev[0], Event::Setup { payload: vec![7] });
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(c.received.last(), Some(&b'x'));
    assert_eq!(host.rx, 1);
}

#[test]
fn usb_framing_needs_zlps() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    // 476 bytes of payload + 36 = 512: a ZLP must follow.
    c.send_data(host, &mut dev, &[9; 476]);
    assert_eq!(c.received.len(), 476, "with a ZLP all is well");
    host.zlp = false;
    let h = c.header(flags::ACK);
    host.send_tcp(&mut dev, h, &[8; 476]);
    c.seq += 476;
    assert!(host.recv(&mut dev).is_empty(), "an unterminated transfer waits");
    // The next transfer runs into it: its packet is lost...
    c.consume();
    let h = c.header(flags::ACK);
    host.send_tcp(&mut dev, h, b"lost");
    c.seq += 4;
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.received.len(), 952);
    assert!(events(&mut dev).contains(&Event::Dropped(DropReason::MissingZlp { lost: 40 })));
    // ...which the device notices at the next packet: the host's seq jumped.
    c.send_data(host, &mut dev, b"next");
    assert!(String::from_utf8(c.reset.clone().unwrap()).unwrap().contains("4 byte(s) missing"));
}

#[test]
fn large_host_packets_and_malformed_transfers() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    // A full 49152-byte transfer (3 × 16 KiB, then a ZLP).
    c.send_data(host, &mut dev, &source_bytes(49116));
    assert_eq!(c.device_ack, 49117);
    // A truncated transfer is dropped.
    let h = c.header(flags::ACK);
    let bytes = host.encode(&Packet::Tcp { header: h, payload: vec![1; 10] });
    host.send_raw(&mut dev, &bytes[..30]);
    assert!(events(&mut dev).iter().any(|e| matches!(
        e,
        Event::Dropped(DropReason::Malformed(CodecError::LengthMismatch { field: 46, actual: 30 }))
    )));
    // Stray ZLPs are harmless.
    dev.handle_input(&[], host.now).unwrap();
    assert!(host.recv(&mut dev).is_empty());
}

#[test]
fn stream_framing_accepts_any_split() {
    let config = DeviceConfig::new().framing(Framing::Stream).with_default_services();
    let mut stream = Vec::new();
    let mut h = Host::new();
    stream.extend(h.encode(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 })));
    h.format = HeaderFormat::Long;
    stream.extend(h.encode(&Packet::Setup(vec![7])));
    stream.extend(h.encode(&Packet::Tcp { header: tcp(1, ECHO_PORT, 0, 0, flags::SYN, WINDOW), payload: vec![] }));
    stream.extend(h.encode(&Packet::Tcp { header: tcp(1, ECHO_PORT, 1, 1, flags::ACK, WINDOW), payload: vec![] }));
    stream.extend(
        h.encode(&Packet::Tcp { header: tcp(1, ECHO_PORT, 1, 1, flags::ACK, WINDOW), payload: b"hi".to_vec() }),
    );
    for step in [1, 2, 7, 16, 33, 1000] {
        let mut dev = SimDevice::new(config.clone());
        let host = &mut Host::new();
        host.stream = Some(usbmuxd::usbmux::codec::Reassembler::stream());
        for chunk in stream.chunks(step) {
            dev.handle_input(chunk, host.now).unwrap();
        }
        host.format = HeaderFormat::Long;
        let got = host.recv(&mut dev);
        assert_eq!(got.len(), 3, "version, SYN|ACK, echo");
        assert_eq!(got[2].tcp().1, b"hi");
    }
}

#[test]
fn a_new_version_request_restarts_the_session() {
    let mut dev = SimDevice::new(DeviceConfig::new().with_default_services());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.connect(&mut dev, 1, ECHO_PORT);
    events(&mut dev);
    host.format = HeaderFormat::Short;
    host.start_v2(&mut dev);
    assert!(dev.connections().is_empty());
    let ev = events(&mut dev);
    assert!(matches!(ev[0], Event::Closed { cause: CloseCause::SessionRestarted, .. }));
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    c.exchange(host, &mut dev, b"again");
    assert_eq!(c.received, b"again");
}

#[test]
fn echo_backpressure_stops_acks_until_the_host_reads() {
    let config = DeviceConfig::new().receive_window(1024).listen(ECHO_PORT, |_| Echo::with_buffer(1000));
    let mut dev = SimDevice::new(config);
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    c.window = 2048; // the host takes at most 2048 unread bytes
    c.send_ack(host, &mut dev);
    // The host writes up to 5000 bytes as the device's window allows, reading nothing back.
    let mut sent = 0;
    while c.room() > 0 && sent < 5000 {
        let n = c.room().min(5000 - sent);
        c.send_data(host, &mut dev, &vec![7; n]);
        sent += n;
    }
    // Echoed: 2048 (the host's window); then the echo's buffer filled (1000) and the
    // device stopped acknowledging, so the host was paused after one more window (1024).
    assert_eq!(c.received.len(), 2048);
    assert_eq!(c.device_ack, 1 + 2048 + 1000);
    assert_eq!(sent, 2048 + 1000 + 1024);
    let id = dev.find_connection(1, ECHO_PORT).unwrap();
    let info = dev.connection(id).unwrap();
    assert_eq!((info.undelivered, info.unacked, info.host_window), (1024, 2048, 2048));
    // Reading lets everything flow again.
    c.exchange(host, &mut dev, &vec![7; 5000 - sent]);
    assert_eq!(c.received, vec![7; 5000]);
}

#[test]
fn runtime_listen_reset_and_downcast() {
    let mut dev = SimDevice::new(DeviceConfig::new());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.send_tcp(&mut dev, tcp(1, 9, 0, 0, flags::SYN, WINDOW), &[]);
    assert_eq!(host.recv_one(&mut dev).tcp().0.flags, RESET_FLAGS);
    dev.listen(9, boxed_factory(|_| Sink::new()));
    let mut c = host.connect(&mut dev, 2, 9);
    c.send_data(host, &mut dev, b"12345");
    let id = dev.find_connection(2, 9).unwrap();
    assert_eq!(dev.service::<Sink>(id).unwrap().received(), 5);
    dev.unlisten(9);
    assert!(dev.reset_connection(id, "bye now"));
    assert!(!dev.reset_connection(id, "again"));
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.reset.as_deref(), Some(&b"bye now\n"[..]));
    host.send_tcp(&mut dev, tcp(3, 9, 0, 0, flags::SYN, WINDOW), &[]);
    assert_eq!(host.recv_one(&mut dev).tcp().0.flags, RESET_FLAGS);
}

#[test]
fn device_packets_fit_the_hosts_16k_usb_reads() {
    use usbmuxd::usbmux::codec::{Reassembler, USB_READ_SIZE};
    for (max_segment, largest) in [(DEFAULT_MAX_SEGMENT, 49152), (100_000, 65536), (1000, 1036)] {
        let config = DeviceConfig::new().max_segment(max_segment).listen(19, |_| Source::new(300_000));
        let mut dev = SimDevice::new(config);
        let host = &mut Host::new();
        host.start_v2(&mut dev);
        host.send_tcp(&mut dev, tcp(1, 19, 0, 0, flags::SYN, WINDOW), &[]);
        host.recv_one(&mut dev);
        let mut acked = 1u32;
        let mut data = Vec::new();
        let mut sizes = Vec::new();
        'session: loop {
            host.send_tcp(&mut dev, tcp(1, 19, 1, acked, flags::ACK, WINDOW), &[]);
            let mut any = false;
            let mut r = Reassembler::usb(USB_READ_SIZE);
            while let Some(transfer) = dev.poll_transmit() {
                any = true;
                let mut packets = Vec::new();
                for read in transfer.chunks(USB_READ_SIZE) {
                    packets.extend(r.push(read).unwrap());
                }
                assert_eq!(packets.len(), 1);
                sizes.push(transfer.len());
                let got = host.decode(&packets[0]);
                let (h, payload) = got.tcp();
                if h.flags & flags::RST != 0 {
                    assert_eq!(data, source_bytes(300_000));
                    assert_eq!(*sizes.iter().max().unwrap(), largest);
                    break 'session;
                }
                data.extend_from_slice(payload);
            }
            assert!(any, "device stalled");
            acked = 1 + data.len() as u32;
        }
    }
}
