//! Property tests: the host `Engine` and the `SimDevice`, joined by a `Link`, move bytes
//! exactly — every byte once, in order, in both directions — whatever the framing, the
//! windows, the packet sizes, the number of connections and the pace of the host
//! application.
//!
//! Each case opens 1–8 connections at once to echo, sink, recorder and source services
//! and drives them with a slow, irregular, event-driven application (see
//! `engine_harness`). Checked throughout: data byte-exact; no connection reset (a source's
//! clean end excepted); the device never resets anything (so the engine never sent past
//! its window, never skipped or repeated a byte, never acknowledged too much); the
//! engine never buffers more than its receive window; the device sees no mux counter gap
//! and drops no input; the engine drops no input; nothing stalls; at the end both sides
//! hold no connection; and, replaying a capture of the wire, every engine packet stays
//! within the right edge the device had advertised and within the size limits.
//!
//! The second property adds the misbehaviour a correct host just has to live with (late
//! ACKs, coalesced ACKs that are flushed, fragmented device output); the third injects
//! one mid-stream reset and checks that it ends exactly its connection, exactly there.
//!
//! Case counts: `PROPTEST_CASES` overrides the defaults below (which keep the file well
//! under a minute in release and in debug). `ENGINE_PROPS_VERBOSE=1` prints one line per
//! case (connections, bytes, rounds, link statistics, time).

mod engine_harness;

use engine_harness::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use usbmux_sim::{DeviceConfig, Framing, Link, Misbehaviour};
use usbmuxd::usbmux::codec::{HeaderFormat, MAX_OUT_PACKET, MAX_TCP_PAYLOAD};
use usbmuxd::usbmux::EngineConfig;

/// Debug builds are some 20 times slower: fewer and smaller cases.
const DEBUG: bool = cfg!(debug_assertions);

/// Bytes a case may move in total…
const MAX_TOTAL: usize = if DEBUG { 4 << 20 } else { 16 << 20 };
/// …and packets of the smallest size in play (keeps tiny windows and segments cheap).
const MAX_SMALL_PACKETS: usize = if DEBUG { 20_000 } else { 300_000 };

fn cases(release: u32, debug: u32) -> ProptestConfig {
    let default = if DEBUG { debug } else { release };
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// `None`: USB framing; `Some((max chunk, seed))`: a stream cut at random places.
    stream: Option<(usize, u64)>,
    device_window: u32,
    device_max_segment: usize,
    engine_window: u32,
    send_buffer: usize,
    max_payload: usize,
    specs: Vec<Spec>,
    style: Style,
    /// Benign misbehaviour (second property only).
    misbehaviour: Misbehaviour,
}

impl Case {
    /// The smallest unit data moves in: what bounds the packet count.
    fn unit(&self) -> usize {
        let mut unit = (self.device_window as usize)
            .min(self.device_max_segment)
            .min(((self.engine_window.clamp(256, 0xFFFF << 8) >> 8) << 8) as usize)
            .min(self.max_payload)
            .min(self.style.max_read * self.style.reads_per_round)
            .min(self.style.max_write)
            .min(self.send_buffer);
        if let Some((chunk, _)) = self.stream {
            unit = unit.min(chunk);
        }
        if let Some(f) = self.misbehaviour.fragment_output {
            unit = unit.min(f);
        }
        unit.max(1)
    }

    /// Scales the sizes down to the budget.
    fn within_budget(mut self) -> Case {
        let budget = MAX_TOTAL.min(self.unit().saturating_mul(MAX_SMALL_PACKETS));
        let each = budget / self.specs.len();
        for s in &mut self.specs {
            s.len = s.len.min(each);
        }
        self
    }

    fn run(&self) {
        let mut device = serve(DeviceConfig::new(), &self.specs)
            .receive_window(self.device_window)
            .max_segment(self.device_max_segment)
            .misbehaviour(self.misbehaviour.clone());
        if self.stream.is_some() {
            device = device.framing(Framing::Stream);
        }
        let engine = EngineConfig {
            receive_window: self.engine_window,
            send_buffer: self.send_buffer,
            max_payload: self.max_payload,
            ..EngineConfig::default()
        };
        let mut link = Link::new(engine, device);
        if let Some((chunk, seed)) = self.stream {
            link.fragment(chunk, seed);
        }
        let whole_packets = self.misbehaviour.fragment_output.is_none() || self.stream.is_none();
        link.capture(whole_packets);
        let mut driver = Driver::new(link, &self.specs, self.style, self.engine_window);
        let started = std::time::Instant::now();
        driver.run();
        driver.assert_all_complete();
        if whole_packets {
            // The wire, independently of the device's own checks: the engine's packets
            // respect its size limits and the device's advertised window.
            let captured = driver.link.take_captured();
            for c in captured.iter().filter(|c| c.to_device) {
                assert!(c.bytes.len() <= MAX_OUT_PACKET, "a {}-byte packet", c.bytes.len());
            }
            let largest = assert_host_within_window(&decode_tcp(&captured, HeaderFormat::Long));
            assert!(largest <= self.max_payload.clamp(1, MAX_TCP_PAYLOAD), "{largest}-byte payload");
        }
        if std::env::var_os("ENGINE_PROPS_VERBOSE").is_some() {
            let total: usize = self.specs.iter().map(|s| s.len).sum();
            eprintln!(
                "{} conns, {total} bytes, unit {}, {} rounds, {:?}, {:?}",
                self.specs.len(),
                self.unit(),
                driver.rounds,
                driver.link.stats,
                started.elapsed()
            );
        }
    }
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        4 => 1..=4096usize,
        4 => 4097..=300_000usize,
        2 => 300_001..=(4usize << 20),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        (1..=(256usize << 10)).prop_map(|buffer| Kind::Echo { buffer }),
        Just(Kind::Sink),
        Just(Kind::Record),
        Just(Kind::Source),
    ];
    (kind, size(), any::<u64>()).prop_map(|(kind, len, seed)| Spec { kind, len, seed })
}

fn style() -> impl Strategy<Value = Style> {
    let max_read = prop_oneof![1..=64usize, 65..=4096usize, 4097..=(300usize << 10)];
    let max_write = prop_oneof![1..=512usize, 513..=65536usize, 65537..=(4usize << 20)];
    (max_read, 1..=8usize, max_write, 0..=40u32, 1..=6u32, any::<u64>()).prop_map(
        |(max_read, reads_per_round, max_write, pause_percent, max_pause, seed)| Style {
            max_read,
            reads_per_round,
            max_write,
            pause_percent,
            max_pause,
            seed,
        },
    )
}

/// Multiples of 256 from 256 B to 256 KiB.
fn window() -> impl Strategy<Value = u32> {
    prop_oneof![1..=8u32, 9..=1024u32].prop_map(|units| units * 256)
}

fn case() -> impl Strategy<Value = Case> {
    let framing =
        prop_oneof![Just(None), (prop_oneof![1..=16usize, 17..=(64usize << 10)], any::<u64>()).prop_map(Some),];
    let device_max_segment = prop_oneof![1..=512usize, 513..=65500usize, Just(49116usize), Just(65500usize)];
    let max_payload = prop_oneof![1..=512usize, 513..=49116usize, Just(49116usize)];
    let send_buffer = prop_oneof![1..=4096usize, 4097..=(1usize << 20)];
    // The engine rounds its window down to the wire unit and clamps it to 256 B ..
    // 0xFFFF × 256: unaligned, tiny and huge values included.
    let engine_window = prop_oneof![4 => window(), 1 => 0..=(1u32 << 20), 1 => Just(0xFFFF << 8), 1 => Just(u32::MAX)];
    (
        framing,
        window(),
        device_max_segment,
        engine_window,
        send_buffer,
        max_payload,
        prop::collection::vec(spec(), 1..=8),
        style(),
    )
        .prop_map(
            |(stream, device_window, device_max_segment, engine_window, send_buffer, max_payload, specs, style)| {
                Case {
                    stream,
                    device_window,
                    device_max_segment,
                    engine_window,
                    send_buffer,
                    max_payload,
                    specs,
                    style,
                    misbehaviour: Misbehaviour::none(),
                }
                .within_budget()
            },
        )
}

/// Misbehaviour a correct host must simply live with: small or odd windows are covered
/// by `case`; here late ACKs, coalesced ACKs that are flushed, and fragmented device
/// output (stream framing).
fn benign_misbehaviour() -> impl Strategy<Value = Misbehaviour> {
    let delay = prop::option::of((1..=200u64).prop_map(ms));
    let coalesce = prop::option::of((1..=8u32, 1..=100u64));
    let fragment = prop::option::of(prop_oneof![1..=16usize, 17..=70_000usize]);
    (delay, coalesce, fragment).prop_map(|(delay, coalesce, fragment)| {
        let mut m = Misbehaviour::none();
        m.ack_delay = delay;
        if let Some((every, flush)) = coalesce {
            m = m.coalesced_acks(usbmux_sim::AckEvery::Packets(every), Some(ms(flush)));
        }
        m.fragment_output = fragment;
        m
    })
}

proptest! {
    #![proptest_config(cases(192, 64))]

    #[test]
    fn bytes_move_exactly_once_in_order(case in case()) {
        case.run();
    }
}

proptest! {
    #![proptest_config(cases(96, 32))]

    #[test]
    fn bytes_move_exactly_under_benign_misbehaviour(mut case in case(), m in benign_misbehaviour()) {
        case.misbehaviour = m;
        case = case.within_budget();
        case.run();
    }
}

/// Where a `ResetAfter` hits: connection `target % n`, after `per_mille` ‰ of the bytes
/// that connection would move in `direction` (0 ‰: right after the handshake; 1000 ‰:
/// exactly at the last byte; more: never).
#[derive(Debug, Clone)]
struct Reset {
    target: usize,
    per_mille: u64,
    direction: usbmux_sim::Direction,
}

fn reset() -> impl Strategy<Value = Reset> {
    use usbmux_sim::Direction;
    let direction = prop_oneof![Just(Direction::ToHost), Just(Direction::FromHost), Just(Direction::Both)];
    let per_mille = prop_oneof![1 => Just(0u64), 1 => Just(1000u64), 4 => 0..=1300u64];
    (0..8usize, per_mille, direction).prop_map(|(target, per_mille, direction)| Reset { target, per_mille, direction })
}

proptest! {
    #![proptest_config(cases(96, 32))]

    /// A device reset in mid-stream ends exactly its connection, exactly where told:
    /// the host reads every byte the device sent before the RST (for `ToHost`, exactly
    /// `n`), then the reset with the device's reason text; the other connections do not
    /// notice.
    #[test]
    fn a_reset_in_mid_stream_cuts_exactly_there(case in case(), r in reset()) {
        use usbmux_sim::{CloseCause, Direction, Event, ResetAfter, ResetReason};
        use usbmuxd::usbmux::EngineError;
        let target = r.target % case.specs.len();
        let spec = case.specs[target];
        let port = BASE_PORT + target as u16;
        // What the connection would move each way without the reset.
        let (to_host, from_host) = match spec.kind {
            Kind::Echo { .. } => (spec.len, spec.len),
            Kind::Source => (spec.len, 0),
            Kind::Sink | Kind::Record => (0, spec.len),
        };
        let total = match r.direction {
            Direction::ToHost => to_host,
            Direction::FromHost => from_host,
            Direction::Both => to_host + from_host,
        } as u64;
        let n = total * r.per_mille / 1000;
        let reason = format!("cut after {n}");
        let mut device = serve(DeviceConfig::new(), &case.specs)
            .receive_window(case.device_window)
            .max_segment(case.device_max_segment)
            .misbehaviour(Misbehaviour::none().reset_after(ResetAfter::new(n, r.direction, &reason).on_port(port)));
        if case.stream.is_some() {
            device = device.framing(Framing::Stream);
        }
        let engine = EngineConfig {
            receive_window: case.engine_window,
            send_buffer: case.send_buffer,
            max_payload: case.max_payload,
            ..EngineConfig::default()
        };
        let mut link = Link::new(engine, device);
        if let Some((chunk, seed)) = case.stream {
            link.fragment(chunk, seed);
        }
        let mut driver = Driver::new(link, &case.specs, case.style, case.engine_window);
        driver.strict = false;
        driver.run();

        for (i, t) in driver.tasks.iter().enumerate() {
            prop_assert!(t.connect_failed.is_none(), "{:?}", t);
            let closed = driver.link.device_events.iter().find_map(|e| match e {
                Event::Closed { device_port, cause, stats, .. } if *device_port == t.port => Some((cause.clone(), *stats)),
                _ => None,
            });
            let (cause, stats) = closed.expect("the device closed every connection");
            if i != target {
                prop_assert!(t.complete, "untouched connection incomplete: {:?}", t);
                prop_assert!(matches!(cause, CloseCause::HostReset | CloseCause::ServiceClosed), "{:?}", cause);
                continue;
            }
            let expect_reset = n <= total;
            if expect_reset {
                prop_assert_eq!(&t.error, &Some(EngineError::Reset(reason.clone())), "{:?}", t);
                prop_assert_eq!(t.reset_event.as_deref(), Some(&*reason));
                prop_assert_eq!(cause, CloseCause::DeviceReset(ResetReason::Injected(reason.clone())));
                prop_assert_eq!(t.got as u64, stats.bytes_sent, "the host read everything the device sent");
                match r.direction {
                    Direction::ToHost => prop_assert_eq!(t.got as u64, n, "cut exactly at n"),
                    Direction::FromHost => prop_assert!(stats.bytes_received >= n),
                    Direction::Both => prop_assert!(stats.bytes_received + stats.bytes_sent >= n),
                }
            } else {
                prop_assert!(t.complete && t.error.as_ref().map_or(true, |e| *e == EngineError::Reset("reset by device".into())), "{:?}", t);
            }
        }
        prop_assert_eq!(driver.link.engine.connection_count(), 0);
        prop_assert!(driver.link.device.connections().is_empty());
        let anomaly = driver.link.device_events.iter().find(|e| matches!(e, Event::Dropped(_) | Event::MuxCounterGap { .. }));
        prop_assert!(anomaly.is_none(), "{:?}", anomaly);
    }
}
