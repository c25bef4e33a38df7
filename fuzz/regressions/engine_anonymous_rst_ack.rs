//! Regression test for a finding of the `usbmux_engine` fuzz target (liveness invariant
//! "once the reader has drained a connection, an ACK for everything consumed is on the
//! wire"), fixed in 419475d.
//!
//! Cause: `Engine::poll_transmit` recorded `ack_sent` for every queued control TCP packet
//! whose *source port* named a live connection:
//!
//! ```text
//! if let Packet::Tcp { header, .. } = &packet {
//!     if let Some(c) = self.connections.get_mut(&header.source_port) {
//!         c.ack_sent = header.ack;
//!     }
//! }
//! ```
//!
//! The anonymous RST that answers a packet for an unknown (host port, device port) pair
//! also has a live host port as its source port when only the device port is wrong, and
//! its ack is the stranger's sequence number. If that number equalled the live
//! connection's `consumed_seq`, the engine believed the pending ACK went out and never
//! sent it: the device kept the consumed bytes unacknowledged (with a full window it
//! stalled for ever). With any other number, `ack_sent` was simply corrupted (an extra
//! ACK, or an ACK suppressed until more data is read).
//!
//! Fix: `ack_sent` is only updated when `header.dest_port == c.device_port`.
//!
//! Run: `cargo test --manifest-path fuzz/Cargo.toml --test engine_anonymous_rst_ack`
//! (or copy the test into `src/usbmux/engine.rs`'s tests).

use std::time::Instant;
use usbmuxd::usbmux::codec::{flags, Packet, TcpHeader, VersionBody};
use usbmuxd::usbmux::{Engine, EngineConfig, EngineEvent};

fn device_tcp(sport: u16, dport: u16, seq: u32, ack: u32, fl: u8, payload: &[u8]) -> Vec<u8> {
    Packet::Tcp {
        header: TcpHeader { source_port: sport, dest_port: dport, seq, ack, flags: fl, window: 131072 },
        payload: payload.to_vec(),
    }
    .encode(Some((1, 1)))
}

/// Every TCP packet the engine sends, as (sport, dport, seq, ack, flags).
fn drain(e: &mut Engine) -> Vec<(u16, u16, u32, u32, u8)> {
    let mut out = Vec::new();
    let mut sent = Vec::new();
    while e.poll_transmit(&mut out) {
        if out[3] == 6 {
            let t = &out[16..36];
            let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            sent.push((
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                be32(&t[4..8]),
                be32(&t[8..12]),
                t[13],
            ));
        }
    }
    sent
}

#[test]
fn anonymous_rst_on_a_live_port_does_not_swallow_the_pending_ack() {
    let now = Instant::now();
    let mut e = Engine::new(EngineConfig { usb_read_size: None, ..EngineConfig::default() });
    e.start();
    e.handle_input(&Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None), now);
    let id = e.connect(62078, now).unwrap();
    e.handle_input(&device_tcp(62078, id.0, 0, 1, flags::SYN | flags::ACK, &[]), now);
    drain(&mut e); // SETUP, SYN, handshake ACK (ack 1)

    // The device sends 4 bytes; the reader takes them: an ACK 5 is now due.
    e.handle_input(&device_tcp(62078, id.0, 1, 1, flags::ACK, b"abcd"), now);
    let mut buf = [0u8; 16];
    assert_eq!(e.recv(id, &mut buf).unwrap(), 4);

    // Before the driver polls, a packet arrives for the same host port from another
    // device port, with sequence number 5: the engine answers with an anonymous RST.
    e.handle_input(&device_tcp(62079, id.0, 5, 0, flags::ACK, &[]), now);

    let sent = drain(&mut e);
    assert!(sent.contains(&(id.0, 62079, 0, 5, flags::RST)), "the anonymous RST goes out: {sent:?}");
    assert!(
        sent.iter().any(|&(s, d, _, ack, f)| (s, d, ack, f) == (id.0, 62078, 5, flags::ACK)),
        "the ACK for the 4 consumed bytes never went to port 62078: {sent:?}"
    );
    while let Some(ev) = e.poll_event() {
        assert!(!matches!(ev, EngineEvent::Reset(..)), "the live connection was not affected: {ev:?}");
    }
}
