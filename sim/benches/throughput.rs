//! Payload throughput of the host engine against the simulated device over the
//! in-memory `Link` (USB framing: 16 KiB reads, ZLPs), one and eight connections, both
//! directions, and CPU time per GiB. A bench program, not a timed test:
//!
//!     cargo bench -p usbmux-sim --bench throughput [-- MIB_PER_RUN]
//!
//! Both state machines run on this one thread, so the CPU figure is the cost of the
//! engine and the simulator together, per GiB of payload.

use std::time::Instant;
use usbmux_sim::{DeviceConfig, Framing, Link, Sink, Source};
use usbmuxd::usbmux::{ConnectionId, EngineConfig};

const SINK: u16 = 9;
const SOURCE: u16 = 19;

/// CPU seconds used by this process so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

fn link(bytes_per_conn: u64) -> Link {
    let device = DeviceConfig::new()
        .framing(Framing::usb())
        .receive_window(256 * 1024)
        .listen(SINK, |_| Sink::new())
        .listen(SOURCE, move |_| Source::new(bytes_per_conn));
    Link::new(EngineConfig::default(), device)
}

fn open(link: &mut Link, port: u16, n: usize) -> Vec<ConnectionId> {
    let now = link.now();
    let ids: Vec<_> = (0..n).map(|_| link.engine.connect(port, now).unwrap()).collect();
    link.pump();
    ids
}

/// Host → device: keeps every connection's send queue full until each has sent `total`.
fn upload(conns: usize, total: u64) -> (f64, f64) {
    let mut link = link(0);
    let ids = open(&mut link, SINK, conns);
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = vec![0u64; conns];
    let (t0, c0) = (Instant::now(), cpu_seconds());
    while sent.iter().any(|&s| s < total) {
        for (i, id) in ids.iter().enumerate() {
            let want = (total - sent[i]).min(chunk.len() as u64) as usize;
            sent[i] += link.engine.send(*id, &chunk[..want]).unwrap() as u64;
        }
        link.pump();
    }
    while ids.iter().any(|id| link.engine.queued_len(*id) > 0) {
        link.pump();
    }
    (t0.elapsed().as_secs_f64(), cpu_seconds() - c0)
}

/// Device → host: reads every connection's source until each has delivered `total`.
fn download(conns: usize, total: u64) -> (f64, f64) {
    let mut link = link(total);
    let ids = open(&mut link, SOURCE, conns);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = vec![0u64; conns];
    let (t0, c0) = (Instant::now(), cpu_seconds());
    while got.iter().any(|&g| g < total) {
        for (i, id) in ids.iter().enumerate() {
            while let Ok(n) = link.engine.recv(*id, &mut buf) {
                if n == 0 {
                    break;
                }
                got[i] += n as u64;
            }
        }
        link.pump();
    }
    (t0.elapsed().as_secs_f64(), cpu_seconds() - c0)
}

fn main() {
    let mib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    println!("# engine <-> simulator, in-memory USB framing, {mib} MiB per run");
    println!("{:<28} {:>10} {:>14}", "case", "GB/s", "CPU s per GiB");
    for (name, conns, up) in [
        ("1 connection, host->device", 1, true),
        ("8 connections, host->device", 8, true),
        ("1 connection, device->host", 1, false),
        ("8 connections, device->host", 8, false),
    ] {
        let per_conn = (mib << 20) / conns as u64;
        let (wall, cpu) = if up { upload(conns, per_conn) } else { download(conns, per_conn) };
        let bytes = (per_conn * conns as u64) as f64;
        println!("{:<28} {:>10.2} {:>14.3}", name, bytes / wall / 1e9, cpu / (bytes / (1u64 << 30) as f64));
    }
}
