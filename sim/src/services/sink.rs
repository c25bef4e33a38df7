//! [`Sink`]: discards and counts.

use super::Service;

/// Discards everything it receives and counts it; sends nothing, never ends by itself.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    received: u64,
}

impl Sink {
    /// A sink that has received nothing yet.
    pub fn new() -> Sink {
        Sink::default()
    }

    /// Bytes received (and discarded) so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl Service for Sink {
    fn on_data(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
    }

    fn has_output(&self) -> bool {
        false
    }

    fn poll_output(&mut self, _buf: &mut Vec<u8>, _max: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let mut s = Sink::new();
        s.on_data(&[0; 10]);
        s.on_data(&[]);
        s.on_data(&[1; 5]);
        assert_eq!(s.received(), 15);
        assert!(!s.has_output());
        let mut out = Vec::new();
        s.poll_output(&mut out, 100);
        assert!(out.is_empty());
    }
}
