//! Knobs that make a [`crate::SimDevice`] behave badly — or merely unusually — so that a
//! host implementation can be tested against it. Set them in
//! [`crate::DeviceConfig::misbehaviour`] or at runtime with
//! [`crate::SimDevice::set_misbehaviour`]; [`Misbehaviour::default`] is a well-behaved
//! device.
//!
//! Every knob has an outcome a host test can observe on the wire or through the host's
//! API; each field's documentation states it.

use std::time::Duration;

/// The set of misbehaviours of a device. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// **Tiny (or any other) receive window**, in bytes, instead of
    /// [`crate::DeviceConfig::receive_window`] (e.g. 256 or 512). Rounded down to a
    /// multiple of 256 (the wire unit).
    ///
    /// Outcome: every packet the device sends advertises this window, and a host that
    /// sends past `last ack + window` gets the connection reset with a
    /// [`crate::ResetReason::WindowOverrun`] text. A correct host keeps working, only
    /// in smaller steps: it must never have more than this many unacknowledged bytes
    /// in flight. Changing it at runtime sends a window update (a pure ACK) on every
    /// established connection; the device never takes back a window it has already
    /// granted (the right edge only moves forward).
    pub receive_window: Option<u32>,

    /// **Late ACKs**: an acknowledgement becomes sendable only this long after the data
    /// it acknowledges was delivered to the service (driven by
    /// [`crate::SimDevice::poll_timeout`]).
    ///
    /// Outcome: no packet from the device acknowledges a host byte earlier than
    /// `delay` after that byte arrived — neither pure ACKs nor data packets (which carry
    /// the last sendable ack). A host that waits for ACKs before sending more (window
    /// full) stalls for about `delay` per window, and must not time out or overrun.
    pub ack_delay: Option<Duration>,

    /// **Coalesced ACKs**: acknowledge only every N packets or bytes.
    ///
    /// Outcome: the device's acknowledgement number stays put until at least `every`
    /// data packets (or bytes) have arrived since it last moved, or — if set — until
    /// `flush_after` has passed since the first of them. Without `flush_after`, a host
    /// whose window fills before the threshold is reached stalls for good (which a host
    /// test can use to check its own timeouts). Combined with
    /// [`Misbehaviour::ack_delay`], the delay counts from the moment the threshold is met.
    pub ack_coalescing: Option<AckCoalescing>,

    /// **RST in mid-stream** after N bytes on a connection, with a reason text.
    ///
    /// Outcome: see [`ResetAfter`].
    pub reset_after: Option<ResetAfter>,

    /// **Fragmented output** (stream framing only): [`crate::SimDevice::poll_transmit`]
    /// returns the device's byte stream cut at random boundaries into chunks of 1 to
    /// this many bytes, ignoring packet boundaries (a chunk may end inside a header or
    /// span several packets). The cuts come from [`crate::DeviceConfig::seed`], so a
    /// run is reproducible.
    ///
    /// Outcome: the concatenation of all chunks is byte-for-byte what the device would
    /// have sent unfragmented; a host reading a stream must reassemble packets by their
    /// length fields. No effect with USB framing, where each transfer is one packet.
    pub fragment_output: Option<usize>,

    /// **Stop answering** (a hung device): input is discarded unread, nothing is sent,
    /// timers do not fire. Output queued before remains queued and is sent after the
    /// knob is cleared, but host packets that arrived meanwhile are lost for good, so the
    /// device will then see sequence gaps on connections the host kept using.
    ///
    /// Outcome: the host gets no answer at all (connect attempts and VERSION requests
    /// must time out on the host's side). Compare [`crate::SimDevice::unplug`], which
    /// makes the device *report* that it is gone.
    pub mute: bool,
}

impl Misbehaviour {
    /// A well-behaved device (same as `default()`).
    pub fn none() -> Misbehaviour {
        Misbehaviour::default()
    }

    /// Sets [`Misbehaviour::receive_window`].
    pub fn tiny_window(mut self, bytes: u32) -> Misbehaviour {
        self.receive_window = Some(bytes);
        self
    }

    /// Sets [`Misbehaviour::ack_delay`].
    pub fn late_acks(mut self, delay: Duration) -> Misbehaviour {
        self.ack_delay = Some(delay);
        self
    }

    /// Sets [`Misbehaviour::ack_coalescing`].
    pub fn coalesced_acks(mut self, every: AckEvery, flush_after: Option<Duration>) -> Misbehaviour {
        self.ack_coalescing = Some(AckCoalescing { every, flush_after });
        self
    }

    /// Sets [`Misbehaviour::reset_after`].
    pub fn reset_after(mut self, reset: ResetAfter) -> Misbehaviour {
        self.reset_after = Some(reset);
        self
    }

    /// Sets [`Misbehaviour::fragment_output`] (chunks of 1 to `max_chunk` bytes).
    pub fn fragmented_output(mut self, max_chunk: usize) -> Misbehaviour {
        self.fragment_output = Some(max_chunk.max(1));
        self
    }

    /// Sets [`Misbehaviour::mute`].
    pub fn mute(mut self) -> Misbehaviour {
        self.mute = true;
        self
    }
}

/// Parameters of [`Misbehaviour::ack_coalescing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckCoalescing {
    /// The threshold.
    pub every: AckEvery,
    /// Acknowledge anyway once this long has passed since the first unacknowledged
    /// packet arrived. `None`: only the threshold counts.
    pub flush_after: Option<Duration>,
}

/// Threshold of [`AckCoalescing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEvery {
    /// After this many data packets (packets with payload).
    Packets(u32),
    /// After this many payload bytes.
    Bytes(u64),
}

/// Which payload bytes [`ResetAfter`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes the host sent (accepted in sequence).
    FromHost,
    /// Bytes the device sent.
    ToHost,
    /// Both together.
    Both,
}

/// Parameters of [`Misbehaviour::reset_after`]: the device resets a connection once
/// `bytes` payload bytes have passed in `direction`, with an RST whose payload is
/// `reason`.
///
/// Outcome:
/// * [`Direction::ToHost`] (or `Both` when the device's output crosses the count): the
///   host receives exactly the bytes up to the count (the device cuts its last data
///   packet short), immediately followed by an RST carrying `reason`;
/// * [`Direction::FromHost`] (or `Both` when the host's input crosses the count): the
///   packet that reaches the count is accepted (and delivered as far as the service
///   takes it), then the device sends the RST carrying `reason` without acknowledging
///   that packet's data.
///
/// With `bytes == 0` every matching connection is reset right after its handshake.
/// The device reports [`crate::Event::Closed`] with [`crate::ResetReason::Injected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetAfter {
    /// The count.
    pub bytes: u64,
    /// What is counted.
    pub direction: Direction,
    /// Only connections to this device port; `None`: every connection.
    pub port: Option<u16>,
    /// The RST's payload (the device appends a `\n`, like real devices' reason texts).
    pub reason: String,
}

impl ResetAfter {
    /// Reset every connection after `bytes` bytes in `direction`, with `reason`.
    pub fn new(bytes: u64, direction: Direction, reason: &str) -> ResetAfter {
        ResetAfter { bytes, direction, port: None, reason: reason.to_string() }
    }

    /// Restricts the reset to connections to device port `port`.
    pub fn on_port(mut self, port: u16) -> ResetAfter {
        self.port = Some(port);
        self
    }
}

/// A small deterministic generator (xorshift64*, seeded through splitmix64). Not for
/// anything but reproducible test randomness.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // splitmix64, so that small or similar seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `1..=max` (`max >= 1`).
    pub(crate) fn between_1_and(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let a: Vec<usize> = {
            let mut r = Rng::new(42);
            (0..1000).map(|_| r.between_1_and(7)).collect()
        };
        let mut r = Rng::new(42);
        let b: Vec<usize> = (0..1000).map(|_| r.between_1_and(7)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&n| (1..=7).contains(&n)));
        for n in 1..=7 {
            assert!(a.contains(&n), "{n} never drawn");
        }
        let mut c = Rng::new(43);
        assert_ne!(a, (0..1000).map(|_| c.between_1_and(7)).collect::<Vec<_>>());
        assert_ne!(Rng::new(0).next_u64(), 0);
    }

    #[test]
    fn builders() {
        let m = Misbehaviour::none()
            .tiny_window(512)
            .late_acks(Duration::from_millis(40))
            .coalesced_acks(AckEvery::Packets(4), None)
            .reset_after(ResetAfter::new(10, Direction::ToHost, "bye").on_port(7))
            .fragmented_output(0)
            .mute();
        assert_eq!(m.receive_window, Some(512));
        assert_eq!(m.ack_delay, Some(Duration::from_millis(40)));
        assert_eq!(m.ack_coalescing.unwrap().every, AckEvery::Packets(4));
        assert_eq!(m.reset_after.as_ref().unwrap().port, Some(7));
        assert_eq!(m.fragment_output, Some(1));
        assert!(m.mute);
        assert_eq!(Misbehaviour::none(), Misbehaviour::default());
    }
}
