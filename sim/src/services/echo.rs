//! [`Echo`]: sends every byte back.

use super::Service;
use std::collections::VecDeque;

/// Default for [`Echo::with_buffer`]: 256 KiB.
pub const DEFAULT_ECHO_BUFFER: usize = 256 * 1024;

/// Sends back every byte it receives, in order. It holds at most a fixed number of bytes
/// not yet sent back; when that buffer is full it stops accepting input, so the device
/// stops acknowledging and a host that writes without reading is paused by flow control
/// (instead of the device buffering without bound). Never ends by itself.
#[derive(Debug, Clone)]
pub struct Echo {
    pending: VecDeque<u8>,
    limit: usize,
    received: u64,
    sent: u64,
}

impl Echo {
    /// An echo with a [`DEFAULT_ECHO_BUFFER`]-byte buffer.
    pub fn new() -> Echo {
        Echo::with_buffer(DEFAULT_ECHO_BUFFER)
    }

    /// An echo holding at most `limit` (at least 1) bytes not yet sent back.
    pub fn with_buffer(limit: usize) -> Echo {
        Echo { pending: VecDeque::new(), limit: limit.max(1), received: 0, sent: 0 }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes handed back to the device for sending so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes received and not yet handed back.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

impl Default for Echo {
    fn default() -> Echo {
        Echo::new()
    }
}

impl Service for Echo {
    fn on_data(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        self.pending.extend(data);
    }

    fn has_output(&self) -> bool {
        !self.pending.is_empty()
    }

    fn poll_output(&mut self, buf: &mut Vec<u8>, max: usize) {
        let n = max.min(self.pending.len());
        buf.extend(self.pending.drain(..n));
        self.sent += n as u64;
    }

    fn capacity(&self) -> usize {
        self.limit.saturating_sub(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_in_order_within_its_buffer() {
        let mut e = Echo::with_buffer(8);
        assert_eq!(e.capacity(), 8);
        e.on_data(b"hello");
        assert_eq!((e.capacity(), e.buffered(), e.has_output()), (3, 5, true));
        let mut out = Vec::new();
        e.poll_output(&mut out, 2);
        assert_eq!(out, b"he");
        e.on_data(b"!!");
        e.poll_output(&mut out, 100);
        assert_eq!(out, b"hello!!");
        assert!(!e.has_output());
        assert_eq!((e.received(), e.sent(), e.capacity()), (7, 7, 8));
    }
}
