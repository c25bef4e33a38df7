//! Each misbehaviour knob has the outcome its documentation promises.

mod common;

use common::*;
use std::time::Duration;
use usbmux_sim::services::source_bytes;
use usbmux_sim::*;
use usbmuxd::usbmux::codec::{flags, HeaderFormat, MuxHeader, Packet, Reassembler, VersionBody};

fn device(m: Misbehaviour) -> SimDevice {
    SimDevice::new(DeviceConfig::new().with_default_services().misbehaviour(m))
}

fn reset_text(c: &Conn) -> String {
    String::from_utf8(c.reset.clone().expect("connection reset")).unwrap()
}

#[test]
fn tiny_window_is_advertised_and_enforced() {
    let mut dev = device(Misbehaviour::none().tiny_window(256));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    assert_eq!(c.device_window, 256);
    // A correct host gets everything through, never more than 256 bytes ahead.
    let data = source_bytes(20_000);
    c.exchange(host, &mut dev, &data);
    assert!(c.received == data);
    assert!(c.packets.iter().all(|(h, len)| h.window == 256 && *len <= 256));
    // One byte too many is an overrun.
    c.send_data(host, &mut dev, &[0; 257]);
    assert!(reset_text(&c).contains("1 byte(s) past the 256-byte window"), "{}", reset_text(&c));

    // Odd sizes are rounded down to the wire unit.
    let mut dev = device(Misbehaviour::none().tiny_window(700));
    host.format = HeaderFormat::Short;
    host.start_v2(&mut dev);
    assert_eq!(host.connect(&mut dev, 1, SINK_PORT).device_window, 512);
}

#[test]
fn window_changes_at_runtime_are_announced_and_never_shrink_the_right_edge() {
    let mut dev = device(Misbehaviour::none().tiny_window(512));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    assert_eq!(c.device_window, 512);
    // Growing: a pure ACK announces it.
    dev.set_misbehaviour(Misbehaviour::none().tiny_window(1024), host.now);
    c.absorb(host.recv(&mut dev));
    assert_eq!((c.device_ack, c.device_window), (1, 1024));
    // Shrinking: announced, but what was granted stays usable.
    dev.set_misbehaviour(Misbehaviour::none().tiny_window(256), host.now);
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.device_window, 256);
    let h = c.header(flags::ACK);
    host.send_tcp(&mut dev, h, &[1; 1024]);
    c.seq += 1024;
    c.absorb(host.recv(&mut dev));
    assert!(c.reset.is_none(), "1024 bytes were granted before the shrink");
    assert_eq!((c.device_ack, c.device_window), (1025, 256));
    // Back to normal.
    dev.set_misbehaviour(Misbehaviour::none(), host.now);
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.device_window, DEFAULT_WINDOW);
}

#[test]
fn late_acks_wait_for_the_timer() {
    let delay = Duration::from_millis(40);
    let mut dev = device(Misbehaviour::none().late_acks(delay));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    let t0 = host.now;
    assert_eq!(dev.poll_timeout(), None);
    c.send_data(host, &mut dev, b"abc");
    // The echo comes back at once, but does not acknowledge yet.
    assert_eq!(c.received, b"abc");
    assert_eq!(c.device_ack, 1);
    assert_eq!(dev.poll_timeout(), Some(t0 + delay));
    dev.handle_timeout(t0 + delay - Duration::from_millis(1));
    assert!(host.recv(&mut dev).is_empty());
    // More data meanwhile: its ack is due later still.
    host.advance(Duration::from_millis(10));
    c.consume();
    c.send_data(host, &mut dev, b"de");
    assert_eq!(c.device_ack, 1);
    dev.handle_timeout(t0 + delay);
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.device_ack, 4, "the first ack is due");
    assert_eq!(dev.poll_timeout(), Some(t0 + Duration::from_millis(10) + delay));
    dev.handle_timeout(t0 + Duration::from_millis(50));
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.device_ack, 6);
    assert_eq!(dev.poll_timeout(), None);
    // Every packet's ack lagged its data by the delay: nothing acknowledged early.
    assert!(c.packets.iter().filter(|(_, len)| *len > 0).all(|(h, _)| h.ack == 1));
}

#[test]
fn late_acks_slow_a_window_limited_host_but_nothing_breaks() {
    let delay = Duration::from_millis(30);
    let mut dev = device(Misbehaviour::none().late_acks(delay).tiny_window(1024));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    let mut sent = 0;
    let mut rounds = 0;
    while sent < 10_000 {
        let n = c.room().min(10_000 - sent);
        if n > 0 {
            c.send_data(host, &mut dev, &vec![5; n]);
            sent += n;
        }
        assert!(c.reset.is_none());
        // The window is full until the timer fires.
        assert!(c.room() == 0 || sent == 10_000);
        let due = dev.poll_timeout().expect("an ack is pending");
        host.now = due;
        dev.handle_timeout(due);
        c.absorb(host.recv(&mut dev));
        rounds += 1;
    }
    assert_eq!(rounds, 10, "one window per delay");
    assert_eq!(c.device_ack, 10_001);
}

#[test]
fn coalesced_acks_by_packets_bytes_and_flush_timer() {
    let mut dev = device(Misbehaviour::none().coalesced_acks(AckEvery::Packets(3), None));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    c.send_data(host, &mut dev, b"1");
    c.send_data(host, &mut dev, b"22");
    assert_eq!(c.device_ack, 1);
    assert_eq!(dev.poll_timeout(), None, "no flush timer: a stall is possible");
    c.send_data(host, &mut dev, b"333");
    assert_eq!(c.device_ack, 7, "the third packet releases one ACK for all");
    assert_eq!(c.packets.len(), 1);
    // Pure ACKs from the host do not count.
    c.send_ack(host, &mut dev);
    c.send_ack(host, &mut dev);
    c.send_data(host, &mut dev, b"4");
    assert_eq!(c.device_ack, 7);

    let mut dev = device(Misbehaviour::none().coalesced_acks(AckEvery::Bytes(1000), Some(Duration::from_millis(50))));
    host.format = HeaderFormat::Short;
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    let t0 = host.now;
    c.send_data(host, &mut dev, &[0; 600]);
    assert_eq!(c.device_ack, 1);
    c.send_data(host, &mut dev, &[0; 600]);
    assert_eq!(c.device_ack, 1201);
    c.send_data(host, &mut dev, &[0; 10]);
    assert_eq!(dev.poll_timeout(), Some(t0 + Duration::from_millis(50)));
    dev.handle_timeout(t0 + Duration::from_millis(50));
    c.absorb(host.recv(&mut dev));
    assert_eq!(c.device_ack, 1211, "flushed by the timer");
    assert_eq!(dev.poll_timeout(), None);
}

#[test]
fn reset_after_bytes_to_the_host() {
    let reset = ResetAfter::new(1000, Direction::ToHost, "sim: injected reset").on_port(SOURCE_PORT);
    let mut dev = device(Misbehaviour::none().reset_after(reset));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let c = host.connect(&mut dev, 1, SOURCE_PORT);
    assert_eq!(c.received, source_bytes(1000), "exactly the count");
    assert_eq!(reset_text(&c), "sim: injected reset\n");
    let ev = events(&mut dev);
    assert!(matches!(
        ev.last(),
        Some(Event::Closed { cause: CloseCause::DeviceReset(ResetReason::Injected(t)), stats, .. })
            if t == "sim: injected reset" && stats.bytes_sent == 1000
    ));
    // Other ports are not affected.
    let mut e = host.connect(&mut dev, 2, ECHO_PORT);
    e.exchange(host, &mut dev, &source_bytes(5000));
    assert!(e.reset.is_none());
}

#[test]
fn reset_after_bytes_from_the_host_and_both() {
    let mut dev = device(Misbehaviour::none().reset_after(ResetAfter::new(100, Direction::FromHost, "enough")));
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, SINK_PORT);
    c.send_data(host, &mut dev, &[0; 60]);
    assert!(c.reset.is_none());
    c.send_data(host, &mut dev, &[0; 60]);
    assert_eq!(reset_text(&c), "enough\n");
    let id = match events(&mut dev).last() {
        Some(Event::Closed { stats, .. }) => {
            assert_eq!((stats.bytes_received, stats.bytes_delivered), (120, 120));
            true
        }
        other => panic!("{other:?}"),
    };
    assert!(id);

    // Both directions: an echo of 30 bytes counts 60.
    let mut dev = device(Misbehaviour::none().reset_after(ResetAfter::new(50, Direction::Both, "both")));
    host.format = HeaderFormat::Short;
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    c.send_data(host, &mut dev, &[3; 30]);
    assert_eq!(c.received.len(), 20, "the echo is cut at the count");
    assert_eq!(reset_text(&c), "both\n");

    // Zero: reset right after the handshake.
    let mut dev = device(Misbehaviour::none().reset_after(ResetAfter::new(0, Direction::Both, "go away")));
    host.format = HeaderFormat::Short;
    host.start_v2(&mut dev);
    let c = host.connect(&mut dev, 1, ECHO_PORT);
    assert_eq!(reset_text(&c), "go away\n");
}

/// What a host sends to fetch 100 000 bytes from a source, as one byte stream.
fn source_session() -> Vec<u8> {
    let mut h = Host::new();
    let mut s = h.encode(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }));
    h.format = HeaderFormat::Long;
    s.extend(h.encode(&Packet::Setup(vec![7])));
    s.extend(h.encode(&Packet::Tcp { header: tcp(1, 19, 0, 0, flags::SYN, WINDOW), payload: vec![] }));
    s.extend(h.encode(&Packet::Tcp { header: tcp(1, 19, 1, 1, flags::ACK, WINDOW), payload: vec![] }));
    s.extend(h.encode(&Packet::Tcp { header: tcp(1, 19, 1, 100_001, flags::ACK, WINDOW), payload: vec![] }));
    s
}

fn run_stream(config: DeviceConfig) -> Vec<Vec<u8>> {
    let mut dev = SimDevice::new(config);
    let mut out = Vec::new();
    for chunk in source_session().chunks(29) {
        dev.handle_input(chunk, std::time::Instant::now()).unwrap();
        out.extend(std::iter::from_fn(|| dev.poll_transmit()));
    }
    out
}

#[test]
fn fragmented_output_is_the_same_stream_cut_at_random() {
    let base = DeviceConfig::new().framing(Framing::Stream).listen(19, |_| Source::new(100_000));
    let whole = run_stream(base.clone());
    assert_eq!(whole.len(), 1 + 1 + 3 + 1, "version, SYN|ACK, 3 data packets, RST");
    let frag_config = base.clone().misbehaviour(Misbehaviour::none().fragmented_output(10)).seed(7);
    let frags = run_stream(frag_config.clone());
    assert_eq!(frags.concat(), whole.concat(), "same bytes");
    assert!(frags.iter().all(|f| (1..=10).contains(&f.len())));
    let sizes: std::collections::BTreeSet<usize> = frags.iter().map(Vec::len).collect();
    assert_eq!(sizes.len(), 10, "sizes vary");
    // Cuts inside headers and chunks spanning packets both happen.
    let mut boundaries = Vec::new();
    let mut at = 0;
    for p in &whole {
        boundaries.push(at);
        at += p.len();
    }
    let mut cut = 0;
    let mut cuts = Vec::new();
    for f in &frags {
        cut += f.len();
        cuts.push(cut);
    }
    assert!(cuts.iter().any(|c| boundaries.iter().any(|b| c > b && *c < b + 8)), "a cut inside a header");
    let starts: Vec<usize> = std::iter::once(0).chain(cuts.iter().copied()).collect();
    assert!(
        starts.windows(2).any(|w| boundaries.iter().any(|&b| w[0] < b && b < w[1])),
        "a chunk spanning two packets"
    );
    // Reproducible from the seed, different with another.
    assert_eq!(run_stream(frag_config.clone()), frags);
    assert_ne!(run_stream(frag_config.seed(8)), frags);
    // A stream reassembler gets the packets back.
    let mut r = Reassembler::stream();
    let packets: Vec<Vec<u8>> = frags.iter().flat_map(|f| r.push(f).unwrap()).collect();
    assert_eq!(packets, whole);
    // USB framing ignores the knob: one packet per transfer.
    let usb = DeviceConfig::new()
        .listen(19, |_| Source::new(100_000))
        .misbehaviour(Misbehaviour::none().fragmented_output(100));
    let mut dev = SimDevice::new(usb);
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    host.send_tcp(&mut dev, tcp(1, 19, 0, 0, flags::SYN, WINDOW), &[]);
    host.send_tcp(&mut dev, tcp(1, 19, 1, 1, flags::ACK, WINDOW), &[]);
    while let Some(t) = dev.poll_transmit() {
        assert_eq!(MuxHeader::peek_length(&t), Some(t.len() as u32));
    }
}

#[test]
fn mute_swallows_everything_until_cleared() {
    let mut dev = device(Misbehaviour::none());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let mut c = host.connect(&mut dev, 1, ECHO_PORT);
    dev.send_control(control::INFO, b"queued").unwrap();
    dev.set_misbehaviour(Misbehaviour::none().mute(), host.now);
    assert_eq!(dev.poll_transmit(), None, "queued output is held");
    c.send_data(host, &mut dev, b"lost");
    assert!(c.received.is_empty());
    host.send_tcp(&mut dev, tcp(9, 4242, 0, 0, flags::SYN, WINDOW), &[]);
    assert!(host.recv(&mut dev).is_empty(), "not even a refusal");
    assert_eq!(dev.poll_timeout(), None);
    assert!(events(&mut dev).iter().filter(|e| matches!(e, Event::Dropped(DropReason::Muted { .. }))).count() == 2);
    dev.set_misbehaviour(Misbehaviour::none(), host.now);
    let got = host.recv(&mut dev);
    assert_eq!(got[0].packet, Packet::Control { kind: control::INFO, text: b"queued".to_vec() });
    // The muted bytes never arrived: the next packet shows a gap.
    c.send_data(host, &mut dev, b"next");
    assert!(reset_text(&c).contains("4 byte(s) missing"));
}

#[test]
fn unplug_reports_and_refuses_io() {
    let mut dev = device(Misbehaviour::none());
    let host = &mut Host::new();
    host.start_v2(&mut dev);
    let c = host.connect(&mut dev, 1, ECHO_PORT);
    let id = dev.find_connection(c.sport, c.dport).unwrap();
    dev.send_control(control::INFO, b"never sent").unwrap();
    events(&mut dev);
    dev.unplug();
    assert!(dev.is_unplugged());
    assert_eq!(dev.state(), MuxState::Unplugged);
    let ev = events(&mut dev);
    assert!(matches!(ev[0], Event::Closed { id: i, cause: CloseCause::Unplugged, .. } if i == id));
    assert_eq!(ev[1], Event::Unplugged);
    assert_eq!(ev.len(), 2);
    assert_eq!(dev.poll_transmit(), None);
    assert_eq!(dev.poll_timeout(), None);
    assert_eq!(dev.handle_input(&[0; 36], host.now), Err(DeviceGone));
    assert_eq!(dev.send_control(control::INFO, b"x"), Err(DeviceGone));
    assert!(dev.connections().is_empty());
    dev.unplug();
    assert_eq!(dev.poll_event(), None, "reported once");
    // A fresh device from the same configuration is a re-plug.
    let mut again = SimDevice::new(dev.config().clone());
    host.format = HeaderFormat::Short;
    host.start_v2(&mut again);
}
