//! [`Source`]: sends a fixed amount of a deterministic pattern, then ends.

use super::{Service, ServiceStatus};

/// Byte `offset` of what a [`Source`] sends: `offset % 251` (a prime, so that chunks lost
/// or repeated at power-of-two boundaries change the data).
pub fn source_pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// The first `n` bytes a [`Source`] sends.
pub fn source_bytes(n: usize) -> Vec<u8> {
    (0..n as u64).map(source_pattern).collect()
}

/// Appends `len` bytes of [`source_pattern`] from `offset` on to `buf`. The pattern repeats
/// every 251 bytes: whole slices of one period are copied instead of a remainder computed
/// per byte (sources feed throughput benchmarks).
pub fn extend_with_pattern(buf: &mut Vec<u8>, mut offset: u64, len: usize) {
    static PERIOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let period = PERIOD.get_or_init(|| source_bytes(2 * 251));
    buf.reserve(len);
    let mut left = len;
    while left > 0 {
        let start = (offset % 251) as usize;
        let n = left.min(251);
        buf.extend_from_slice(&period[start..start + n]);
        offset += n as u64;
        left -= n;
    }
}

/// Sends `len` bytes of [`source_pattern`] as fast as the host's window allows, then ends
/// **cleanly**: since the protocol has no FIN, the device sends a bare RST (no payload)
/// once the host has acknowledged the last byte, i.e. once the host's consumer has read
/// everything. A host therefore sees exactly `len` bytes followed by the connection being
/// reset without a reason text. Bytes the host sends are counted and discarded.
#[derive(Debug, Clone)]
pub struct Source {
    len: u64,
    sent: u64,
    received: u64,
}

impl Source {
    /// A source of `len` bytes.
    pub fn new(len: u64) -> Source {
        Source { len, sent: 0, received: 0 }
    }

    /// Total bytes this source sends.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether this source sends nothing at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes handed to the device for sending so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes received from the host (discarded).
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl Service for Source {
    fn on_data(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
    }

    fn has_output(&self) -> bool {
        self.sent < self.len
    }

    fn poll_output(&mut self, buf: &mut Vec<u8>, max: usize) {
        let n = (self.len - self.sent).min(max as u64) as usize;
        extend_with_pattern(buf, self.sent, n);
        self.sent += n as u64;
    }

    fn status(&self) -> ServiceStatus {
        if self.sent == self.len {
            ServiceStatus::Close
        } else {
            ServiceStatus::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern() {
        assert_eq!(source_bytes(3), [0, 1, 2]);
        assert_eq!(source_pattern(251), 0);
        assert_eq!(source_pattern(252), 1);
        for (offset, len) in [(0u64, 0usize), (0, 1000), (250, 3), (251 * 7 + 13, 700)] {
            let mut buf = vec![9];
            extend_with_pattern(&mut buf, offset, len);
            let want: Vec<u8> = std::iter::once(9).chain((offset..offset + len as u64).map(source_pattern)).collect();
            assert_eq!(buf, want, "offset {offset} len {len}");
        }
    }

    #[test]
    fn sends_exactly_len_then_closes() {
        let mut s = Source::new(600);
        let mut out = Vec::new();
        while s.has_output() {
            assert_eq!(s.status(), ServiceStatus::Open);
            s.poll_output(&mut out, 256);
        }
        assert_eq!(out, source_bytes(600));
        assert_eq!(s.status(), ServiceStatus::Close);
        s.on_data(b"ignored");
        assert_eq!((s.sent(), s.received()), (600, 7));
        assert_eq!(Source::new(0).status(), ServiceStatus::Close);
    }
}
