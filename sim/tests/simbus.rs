//! The simulated-bus server (`usbmux_sim::simbus`) and the `usbmux-simd` program against
//! a client written by hand from the wire protocol: hello lines, control lines and
//! length-prefixed frames built byte by byte here, not with the library's `wire` helpers,
//! so that a mistake shared by both sides of the library would still show.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use usbmux_sim::simbus::{serial_for_udid, PlugOptions, SimBusServer};
use usbmux_sim::{DeviceConfig, DropReason, Event, Misbehaviour, ECHO_PORT, SINK_PORT, SOURCE_PORT};
use usbmuxd::usbmux::codec::{flags, HeaderFormat, Packet, TcpHeader, VersionBody};

const T: Duration = Duration::from_secs(5);
const UDID: &str = "00008030-001A2B3C4D5E6F70";
const UDID2: &str = "00008101-000A11112222333E";

fn temp_socket(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "usbmux-simbus-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("bus.sock")
}

fn device(udid: &str) -> DeviceConfig {
    DeviceConfig::new().udid(udid).with_default_services()
}

/// The VERSION 2.0 request, by hand: short header (protocol 0, length 20), then major,
/// minor, padding, all big-endian.
fn version_request() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0u32, 20, 2, 0, 0] {
        v.extend_from_slice(&word.to_be_bytes());
    }
    v
}

/// A frame: big-endian u32 length, then the bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A control connection.
struct Control {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

impl Control {
    fn open(path: &PathBuf) -> Control {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        (&stream).write_all(b"USBSIMBUS 1 CONTROL\n").unwrap();
        let mut c = Control { reader: BufReader::new(stream.try_clone().unwrap()), stream };
        assert_eq!(c.line(), "USBSIMBUS 1 OK");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        assert!(l.ends_with('\n'), "line {l:?}");
        l.pop();
        l
    }

    /// The lines up to `SYNC`.
    fn initial(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.line() {
                s if s == "SYNC" => return lines,
                s => lines.push(s),
            }
        }
    }
}

fn arrived(bus_id: u64, product_id: u16, udid: &str) -> String {
    format!(
        "ARRIVED bus_id={bus_id} vendor_id=0x05ac product_id=0x{product_id:04x} location=0x{:08x} speed_bps=480000000 serial={}",
        (1 << 16) | (bus_id & 0xff),
        serial_for_udid(udid)
    )
}

/// A device connection: frames out directly, frames in through a reader thread.
struct Dev {
    stream: UnixStream,
    frames: mpsc::Receiver<Option<Vec<u8>>>,
    tx_seq: u16,
}

/// Opens a device connection; the server's reply line.
fn open_raw(path: &PathBuf, bus_id: u64) -> (UnixStream, BufReader<UnixStream>, String) {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    (&stream).write_all(format!("USBSIMBUS 1 OPEN {bus_id}\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    (stream, reader, reply.trim_end().to_string())
}

impl Dev {
    fn open(path: &PathBuf, bus_id: u64) -> Dev {
        let (stream, mut reader, reply) = open_raw(path, bus_id);
        assert_eq!(reply, "USBSIMBUS 1 OK max_packet_size=512");
        stream.set_read_timeout(None).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || loop {
            let mut len = [0u8; 4];
            if reader.read_exact(&mut len).is_err() {
                let _ = tx.send(None);
                return;
            }
            let mut payload = vec![0; u32::from_be_bytes(len) as usize];
            if reader.read_exact(&mut payload).is_err() || tx.send(Some(payload)).is_err() {
                let _ = tx.send(None);
                return;
            }
        });
        Dev { stream, frames: rx, tx_seq: 0 }
    }

    fn send_transfer(&self, bytes: &[u8]) {
        (&self.stream).write_all(&frame(bytes)).unwrap();
    }

    /// The next frame; `None` once the server closed the connection.
    fn frame(&self) -> Option<Vec<u8>> {
        self.frames.recv_timeout(T).expect("a frame or the end within 5 s")
    }

    /// The next device packet, reassembled from frames like a host reading 16 KiB: a
    /// frame shorter than 16384 ends it. Also returns the frame sizes.
    fn packet(&self) -> (Vec<u8>, Vec<usize>) {
        let mut packet = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let f = self.frame().expect("connection open");
            sizes.push(f.len());
            let short = f.len() < 16384;
            packet.extend_from_slice(&f);
            if short && !packet.is_empty() {
                return (packet, sizes);
            }
        }
    }

    fn decode(&self) -> Packet {
        let (p, _) = self.packet();
        Packet::decode(&p, HeaderFormat::Long).unwrap().1
    }

    /// A packet with a long header and the next counters.
    fn long(&mut self, packet: Packet) -> Vec<u8> {
        let bytes = packet.encode(Some((self.tx_seq, 0xffff)));
        self.tx_seq = self.tx_seq.wrapping_add(1);
        bytes
    }

    /// VERSION, SETUP, and a connection to `port` (SYN, SYN|ACK, ACK).
    fn handshake(&mut self, port: u16) {
        self.send_transfer(&version_request());
        assert_eq!(self.frame().unwrap(), version_request(), "a version-2 device answers 2.0");
        let setup = self.long(Packet::Setup(vec![7]));
        self.send_transfer(&setup);
        let syn = TcpHeader { source_port: 1, dest_port: port, seq: 0, ack: 0, flags: flags::SYN, window: 131072 };
        let syn = self.long(Packet::Tcp { header: syn, payload: vec![] });
        self.send_transfer(&syn);
        let Packet::Tcp { header, .. } = self.decode() else { panic!("expected SYN|ACK") };
        assert_eq!((header.flags, header.seq, header.ack), (flags::SYN | flags::ACK, 0, 1));
        let ack = self.data_packet(port, 1, 1, &[]);
        self.send_transfer(&ack);
    }

    /// The payload of the next device TCP packet that carries data (pure ACKs skipped).
    fn payload(&self) -> Vec<u8> {
        loop {
            match self.decode() {
                Packet::Tcp { payload, .. } if payload.is_empty() => continue,
                Packet::Tcp { payload, .. } => return payload,
                other => panic!("expected TCP, got {other:?}"),
            }
        }
    }

    fn data_packet(&mut self, port: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let h = TcpHeader { source_port: 1, dest_port: port, seq, ack, flags: flags::ACK, window: 131072 };
        self.long(Packet::Tcp { header: h, payload: payload.to_vec() })
    }
}

impl Drop for Dev {
    /// Closing: the reader thread holds a clone of the socket, so shut it down.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn control_connection_lists_devices_and_follows_hotplug() {
    let path = temp_socket("control");
    let server = SimBusServer::bind(&path).unwrap();
    let a = server.plug(device(UDID), PlugOptions::default()).unwrap();
    let b = server.plug(device(UDID2), PlugOptions::product_id(0x12ab)).unwrap();
    assert_eq!((a.bus_id, a.location, a.serial.as_str()), (258, 0x10002, "00008030001A2B3C4D5E6F70"));
    assert_eq!((b.bus_id, b.location, b.product_id), (259, 0x10003, 0x12ab));

    let mut c = Control::open(&path);
    assert_eq!(c.initial(), [arrived(258, 0x12a8, UDID), arrived(259, 0x12ab, UDID2)]);
    assert_eq!(
        arrived(258, 0x12a8, UDID),
        "ARRIVED bus_id=258 vendor_id=0x05ac product_id=0x12a8 location=0x00010002 speed_bps=480000000 serial=00008030001A2B3C4D5E6F70"
    );
    wait_until("the control connection to register", || server.control_connections() == 1);

    // Hot-plug: a 40-character serial goes out unchanged; a re-plugged device gets a new
    // address.
    let old = "0123456789abcdef0123456789abcdef01234567";
    let d = server.plug(device(old), PlugOptions::default()).unwrap();
    assert_eq!(c.line(), arrived(260, 0x12a8, old));
    assert!(server.unplug(a.bus_id));
    assert_eq!(c.line(), "LEFT bus_id=258");
    assert!(!server.unplug(a.bus_id), "already gone");
    let again = server.plug(device(UDID), PlugOptions::default()).unwrap();
    assert_eq!(again.bus_id, 261);
    assert_eq!(c.line(), arrived(261, 0x12a8, UDID));

    // A second subscriber sees the current list; both see later events.
    let mut c2 = Control::open(&path);
    assert_eq!(c2.initial(), [arrived(259, 0x12ab, UDID2), arrived(260, 0x12a8, old), arrived(261, 0x12a8, UDID)]);
    server.unplug(d.bus_id);
    assert_eq!(c.line(), "LEFT bus_id=260");
    assert_eq!(c2.line(), "LEFT bus_id=260");

    // Same serial twice, stream framing, bad serials: refused.
    assert_eq!(
        server.plug(device(UDID2), PlugOptions::default()).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    let stream = device("X").framing(usbmux_sim::Framing::Stream);
    assert!(server.plug(stream, PlugOptions::default()).is_err());
    assert!(server.plug(device("has space"), PlugOptions::default()).is_err());
    assert!(server.plug(device(&"f".repeat(256)), PlugOptions::default()).is_err());

    // A client closing its control connection is forgotten; junk it sends is ignored.
    (&c2.stream).write_all(b"whatever\n\0\xff").unwrap();
    drop(c2);
    wait_until("the closed control connection to go", || server.control_connections() == 1);
    server.unplug(b.bus_id);
    assert_eq!(c.line(), "LEFT bus_id=259");

    // Shutting down unplugs the rest, closes the control connection and removes the
    // socket file.
    drop(server);
    assert_eq!(c.line(), "LEFT bus_id=261");
    let mut rest = String::new();
    assert_eq!(c.reader.read_line(&mut rest).unwrap(), 0, "EOF, got {rest:?}");
    assert!(!path.exists());
}

#[test]
fn version_exchange_busy_and_reopen() {
    let path = temp_socket("version");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;
    assert_eq!(
        Packet::Version(VersionBody { major: 2, minor: 0, padding: 0 }).encode(None),
        version_request(),
        "the hand-built request is a VERSION packet"
    );

    let dev = Dev::open(&path, id);
    assert!(server.devices()[0].open);
    dev.send_transfer(&version_request());
    let reply = dev.frame().unwrap();
    assert_eq!(reply, version_request(), "VERSION 2.0 back, as one 20-byte transfer");
    assert!(matches!(server.take_events(id).first(), Some(Event::Version { .. })));

    // One host at a time; unknown devices are refused.
    let (_s, _r, reply) = open_raw(&path, id);
    assert_eq!(reply, format!("USBSIMBUS 1 ERR busy device {id} is open on connection 1"));
    let (_s, _r, reply) = open_raw(&path, 999);
    assert_eq!(reply, "USBSIMBUS 1 ERR no-device no device with bus id 999 is plugged in");

    // The host lets go; the device is free again and a new host starts a new session.
    drop(dev);
    wait_until("the device to be released", || !server.devices()[0].open);
    let mut dev = Dev::open(&path, id);
    dev.handshake(ECHO_PORT);
    let data = dev.data_packet(ECHO_PORT, 1, 1, b"ping");
    dev.send_transfer(&data);
    assert_eq!(dev.payload(), b"ping");
}

#[test]
fn unplug_closes_the_device_connection() {
    let path = temp_socket("unplug");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;
    let mut c = Control::open(&path);
    c.initial();
    let mut dev = Dev::open(&path, id);
    dev.handshake(ECHO_PORT);
    assert!(server.unplug(id));
    assert_eq!(dev.frame(), None, "the device connection ends");
    assert_eq!(c.line(), format!("LEFT bus_id={id}"));
    // Writing more is harmless; reopening fails.
    let _ = (&dev.stream).write_all(&frame(b"late"));
    let (_s, _r, reply) = open_raw(&path, id);
    assert!(reply.starts_with("USBSIMBUS 1 ERR no-device"), "{reply}");
    assert!(server.devices().is_empty());
}

#[test]
fn zero_length_packets_terminate_host_transfers() {
    let path = temp_socket("zlp");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;
    let mut dev = Dev::open(&path, id);
    dev.handshake(ECHO_PORT);
    server.take_events(id);

    // 16 + 20 + 476 = 512 bytes: a multiple of wMaxPacketSize, so a ZLP must follow.
    let a = dev.data_packet(ECHO_PORT, 1, 1, &[b'a'; 476]);
    assert_eq!(a.len(), 512);
    dev.send_transfer(&a);
    dev.send_transfer(&[]);
    assert_eq!(dev.payload(), [b'a'; 476]);
    assert!(server.take_events(id).iter().all(|e| !matches!(e, Event::Dropped(_))));

    // Without the ZLP the device runs the next transfer into the 512-byte one and loses it.
    let b = dev.data_packet(ECHO_PORT, 477, 1, &[b'b'; 476]);
    let c = dev.data_packet(ECHO_PORT, 953, 1, b"lost");
    dev.send_transfer(&b);
    dev.send_transfer(&c);
    assert_eq!(dev.payload(), [b'b'; 476]);
    wait_until("the device to report the missing ZLP", || {
        server.take_events(id).iter().any(|e| matches!(e, Event::Dropped(DropReason::MissingZlp { lost: 40 })))
    });
}

#[test]
fn device_packets_arrive_as_16k_reads_with_a_zlp() {
    let path = temp_socket("reads");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;
    let mut dev = Dev::open(&path, id);
    dev.handshake(SOURCE_PORT);
    // The source fills our 131072-byte window: 49116 + 49116 + 32840 payload bytes.
    let mut sizes = Vec::new();
    let mut data = Vec::new();
    for _ in 0..3 {
        let (p, s) = dev.packet();
        sizes.push(s);
        let (_, Packet::Tcp { payload, .. }) = Packet::decode(&p, HeaderFormat::Long).unwrap() else { panic!() };
        data.extend(payload);
    }
    // 49152 = three full reads, then the device's ZLP completes the next read empty.
    assert_eq!(sizes, [vec![16384, 16384, 16384, 0], vec![16384, 16384, 16384, 0], vec![16384, 16384, 108]]);
    assert_eq!(data, usbmux_sim::services::source_bytes(131072));
}

#[test]
fn device_timers_run_on_the_real_clock() {
    let path = temp_socket("timers");
    let server = SimBusServer::bind(&path).unwrap();
    let late = Misbehaviour::default().late_acks(Duration::from_millis(150));
    let id = server.plug(device(UDID).misbehaviour(late), PlugOptions::default()).unwrap().bus_id;
    let mut dev = Dev::open(&path, id);
    dev.handshake(SINK_PORT);
    let data = dev.data_packet(SINK_PORT, 1, 1, b"0123456789");
    let sent = Instant::now();
    dev.send_transfer(&data);
    // Nothing else is sent: only the device's timer can produce this ACK.
    let Packet::Tcp { header, payload } = dev.decode() else { panic!() };
    let after = sent.elapsed();
    assert_eq!((header.flags, header.ack, payload.len()), (flags::ACK, 11, 0));
    assert!(after >= Duration::from_millis(150), "ACK after {after:?}");
}

/// Host input wakes the timer thread only when the device wants an earlier timer than the
/// one it waits for: a timer appearing while it sleeps without one (each round), and
/// input arriving while it already waits (the second packet) must still give every ACK
/// in time, round after round.
#[test]
fn device_timers_follow_input_while_waiting_and_idle() {
    let path = temp_socket("timers-input");
    let server = SimBusServer::bind(&path).unwrap();
    let delay = Duration::from_millis(100);
    let id = server.plug(device(UDID).misbehaviour(Misbehaviour::default().late_acks(delay)), PlugOptions::default());
    let mut dev = Dev::open(&path, id.unwrap().bus_id);
    dev.handshake(SINK_PORT);
    let mut seq = 1;
    for round in 0..3 {
        let first = dev.data_packet(SINK_PORT, seq, 1, b"abcd");
        let start = Instant::now();
        dev.send_transfer(&first);
        thread::sleep(Duration::from_millis(30));
        let second = dev.data_packet(SINK_PORT, seq + 4, 1, b"efgh");
        let second_at = Instant::now();
        dev.send_transfer(&second);
        seq += 8;
        // ACKs (pure, from the timer) until everything is acknowledged.
        loop {
            let Packet::Tcp { header, payload } = dev.decode() else { panic!("expected TCP") };
            assert_eq!((header.flags, payload.len()), (flags::ACK, 0), "round {round}");
            let at = Instant::now();
            assert!(at - start >= delay, "round {round}: ACK {} after {:?}", header.ack, at - start);
            if header.ack == seq {
                assert!(at - second_at >= delay, "round {round}: final ACK after {:?}", at - second_at);
                assert!(at - second_at < T / 2, "round {round}: final ACK only after {:?}", at - second_at);
                break;
            }
            assert_eq!(header.ack, seq - 4, "round {round}: the first packet's ACK");
        }
    }
}

#[test]
fn hostile_input_closes_the_connection_not_the_server() {
    let path = temp_socket("hostile");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;

    // A frame announcing 4 GiB: the connection is closed, nothing is allocated.
    let dev = Dev::open(&path, id);
    (&dev.stream).write_all(&0xFFFF_FFF0u32.to_be_bytes()).unwrap();
    assert_eq!(dev.frame(), None);
    // Just over the limit.
    let dev = Dev::open(&path, id);
    (&dev.stream).write_all(&65537u32.to_be_bytes()).unwrap();
    assert_eq!(dev.frame(), None);
    // A frame cut short by the client going away.
    let dev = Dev::open(&path, id);
    (&dev.stream).write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    drop(dev);

    // Bad hellos.
    for (hello, expect) in [
        (&b"GET / HTTP/1.0\r\n"[..], "USBSIMBUS 1 ERR bad-request"),
        (b"USBSIMBUS 2 CONTROL\n", "USBSIMBUS 1 ERR version"),
        (b"USBSIMBUS 1 OPEN banana\n", "USBSIMBUS 1 ERR bad-request"),
        (b"USBSIMBUS 1 OPEN 258 259\n", "USBSIMBUS 1 ERR bad-request"),
        (b"USBSIMBUS 1 \xff\xfe\n", "USBSIMBUS 1 ERR bad-request"),
        (&[b'A'; 5000][..], "USBSIMBUS 1 ERR bad-request line too long"),
    ] {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let _ = (&s).write_all(hello);
        let mut reply = String::new();
        let _ = BufReader::new(&s).read_line(&mut reply);
        assert!(reply.starts_with(expect), "{hello:?}: {reply:?}");
    }
    // A client that connects and leaves at once.
    drop(UnixStream::connect(&path).unwrap());
    // A control connection that floods the server with junk is ignored.
    let c = Control::open(&path);
    (&c.stream).write_all(&[0xAB; 100_000]).unwrap();

    // The device is still there and works.
    wait_until("the device to be released", || !server.devices()[0].open);
    let mut dev = Dev::open(&path, id);
    dev.handshake(ECHO_PORT);
    let data = dev.data_packet(ECHO_PORT, 1, 1, b"still here");
    dev.send_transfer(&data);
    assert_eq!(dev.payload(), b"still here");
}

/// However the host's writes cut or join its frames (inside the length, inside the
/// payload, many in one write), the device gets the same transfers; frames before a bad
/// one in the same write still count.
#[test]
fn host_frames_split_or_batched_arbitrarily() {
    let path = temp_socket("split");
    let server = SimBusServer::bind(&path).unwrap();
    let id = server.plug(device(UDID), PlugOptions::default()).unwrap().bus_id;
    let mut dev = Dev::open(&path, id);
    dev.handshake(ECHO_PORT);
    // 8 transfers of 12036 bytes (not a multiple of 512: no ZLPs), within the host window
    // of 131072 bytes that our never-moving ack leaves the echo.
    let mut seq = 1;
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for i in 0..8u8 {
        let payload: Vec<u8> = (0..12000u32).map(|j| i.wrapping_mul(31).wrapping_add(j as u8)).collect();
        bytes.extend(frame(&dev.data_packet(ECHO_PORT, seq, 1, &payload)));
        seq += payload.len() as u32;
        sent.extend(payload);
    }
    // The first half in one write, the rest in pieces of 1 to 5000 bytes with pauses.
    let half = 4 * (12036 + 4);
    (&dev.stream).write_all(&bytes[..half]).unwrap();
    let mut at = half;
    for size in [1, 2, 3, 5000, 7, 4999, 1, 12040].iter().cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        (&dev.stream).write_all(&bytes[at..end]).unwrap();
        at = end;
        thread::sleep(Duration::from_millis(2));
    }
    let mut echoed = Vec::new();
    while echoed.len() < sent.len() {
        echoed.extend(dev.payload());
    }
    assert_eq!(echoed, sent);
    assert!(server.take_events(id).iter().all(|e| !matches!(e, Event::Dropped(_))));
    // A good frame and an oversized one in one write: the first is answered, then the
    // connection is closed.
    let mut both = frame(&dev.data_packet(ECHO_PORT, seq, 1, b"last"));
    both.extend(65537u32.to_be_bytes());
    (&dev.stream).write_all(&both).unwrap();
    assert_eq!(dev.payload(), b"last");
    while dev.frame().is_some() {}
    wait_until("the device to be released", || !server.devices()[0].open);
}

#[test]
fn bind_replaces_a_stale_socket_but_not_a_live_one() {
    let path = temp_socket("bind");
    let first = SimBusServer::bind(&path).unwrap();
    assert_eq!(SimBusServer::bind(&path).err().unwrap().kind(), std::io::ErrorKind::AddrInUse);
    drop(first);
    assert!(!path.exists());
    // A stale socket file (its server gone without cleaning up).
    let stale = path.with_file_name("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let server = SimBusServer::bind(&stale).unwrap();
    drop(Control::open(&stale));
    drop(server);
    assert!(!stale.exists());
    // Not a socket: left alone.
    let file = path.with_file_name("file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(SimBusServer::bind(&file).err().unwrap().kind(), std::io::ErrorKind::AlreadyExists);
    assert!(file.exists());
}

/// The program, driven over stdin/stdout.
struct Simd {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Simd {
    fn start(args: &[&str]) -> (Simd, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_usbmux-simd"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        (Simd { child, stdin, stdout }, ready.trim_end().to_string())
    }

    /// Sends a command; returns its reply lines (the last one `OK…` / `ERR…`).
    fn cmd(&mut self, line: &str) -> Vec<String> {
        writeln!(self.stdin, "{line}").unwrap();
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(self.stdout.read_line(&mut l).unwrap() > 0, "usbmux-simd exited");
            let l = l.trim_end().to_string();
            let end = l.starts_with("OK") || l.starts_with("ERR");
            lines.push(l);
            if end {
                return lines;
            }
        }
    }
}

#[test]
fn the_program() {
    let path = temp_socket("program");
    let p = path.to_str().unwrap();
    let (mut simd, ready) =
        Simd::start(&["--socket", p, "--device", UDID, "--service", "5000=source:10", "--service", "9=none"]);
    assert_eq!(ready, format!("READY {p}"));

    let mut c = Control::open(&path);
    assert_eq!(c.initial(), [arrived(258, 0x12a8, UDID)]);
    assert_eq!(simd.cmd("plug 00008101-000A11112222333E,0x12ab"), ["OK 259"]);
    assert_eq!(c.line(), arrived(259, 0x12ab, UDID2));
    assert_eq!(
        simd.cmd("plug 00008101-000A11112222333E")[0],
        "ERR a device with serial 00008101000A11112222333E is plugged in"
    );
    assert_eq!(simd.cmd("plug A,0x1ffff")[0], "ERR bad product id \"0x1ffff\"");
    assert_eq!(
        simd.cmd("list"),
        [
            "DEVICE bus_id=258 udid=00008030-001A2B3C4D5E6F70 serial=00008030001A2B3C4D5E6F70 vendor_id=0x05ac product_id=0x12a8 location=0x00010002 speed_bps=480000000 open=no",
            "DEVICE bus_id=259 udid=00008101-000A11112222333E serial=00008101000A11112222333E vendor_id=0x05ac product_id=0x12ab location=0x00010003 speed_bps=480000000 open=no",
            "OK 2",
        ]
    );

    // The command line's services: 5000 a 10-byte source; 9 removed.
    let mut dev = Dev::open(&path, 259);
    dev.handshake(5000);
    assert_eq!(dev.payload(), usbmux_sim::services::source_bytes(10));
    let syn = TcpHeader { source_port: 2, dest_port: 9, seq: 0, ack: 0, flags: flags::SYN, window: 131072 };
    let syn = dev.long(Packet::Tcp { header: syn, payload: vec![] });
    dev.send_transfer(&syn);
    let Packet::Tcp { header, .. } = dev.decode() else { panic!() };
    assert_eq!(header.flags, flags::RST | flags::ACK, "port 9 refused");
    assert!(simd.cmd("list")[1].ends_with("open=yes"));
    let events = simd.cmd("events 00008101000A11112222333E");
    assert!(events.iter().any(|e| e.starts_with("EVENT Version")), "{events:?}");

    // Unplug by UDID and by bus id.
    assert_eq!(simd.cmd("unplug 00008101-000A11112222333E"), ["OK"]);
    assert_eq!(dev.frame(), None);
    assert_eq!(c.line(), "LEFT bus_id=259");
    assert_eq!(simd.cmd("unplug 258"), ["OK"]);
    assert_eq!(c.line(), "LEFT bus_id=258");
    assert_eq!(simd.cmd("unplug 258")[0], "ERR no device \"258\"");
    assert_eq!(simd.cmd("frobnicate")[0], "ERR unknown command \"frobnicate\" (try help)");
    assert!(simd.cmd("help").len() > 3);
    assert_eq!(simd.cmd("list"), ["OK 0"]);

    assert_eq!(simd.cmd("quit"), ["OK"]);
    assert!(simd.child.wait().unwrap().success());
    let mut rest = String::new();
    assert_eq!(c.reader.read_line(&mut rest).unwrap(), 0);
    assert!(!path.exists(), "socket removed");
}

#[test]
fn the_program_refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_usbmux-simd")).args(["--device", "A"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--socket is required"));
    let out = Command::new(env!("CARGO_BIN_EXE_usbmux-simd")).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("USBMUXD_SIMBUS"));
}

/// The library's side of the protocol (`usbmuxd::usb::simbus`) against this server, with
/// the host engine driven over the link: what the USB backend will do, minus the backend.
#[test]
fn library_client_against_the_server() {
    use std::sync::{Arc, Mutex};
    use usbmuxd::usb::simbus::SimBus;
    use usbmuxd::usb::{Bus, BusEvent, LinkEvent};
    use usbmuxd::usbmux::{Engine, EngineConfig, EngineEvent};

    let path = temp_socket("library");
    let server = SimBusServer::bind(&path).unwrap();
    let first = server.plug(device(UDID), PlugOptions::default()).unwrap();

    let (bus_tx, bus_rx) = mpsc::channel();
    let bus_tx = Mutex::new(bus_tx);
    let mut bus = SimBus::new(&path);
    bus.start(Arc::new(move |e| drop(bus_tx.lock().unwrap().send(e)))).unwrap();
    assert_eq!(bus_rx.try_recv().unwrap(), BusEvent::Arrived(first.clone()), "reported before start returned");
    let second = server.plug(device(UDID2), PlugOptions::product_id(0x12ab)).unwrap();
    let BusEvent::Arrived(info) = bus_rx.recv_timeout(T).unwrap() else { panic!() };
    assert_eq!(info, second);
    assert!(info.is_mux_device());
    assert!(bus.describe().contains("2 device(s)"), "{}", bus.describe());

    let (link_tx, link_rx) = mpsc::channel();
    let link_tx = Mutex::new(link_tx);
    let mut link = bus.open(&info, Arc::new(move |e| drop(link_tx.lock().unwrap().send(e)))).unwrap();
    assert_eq!(link.read_size(), Some(16384));

    // The engine over the link: echo 300 KB (packets of up to 49152 bytes, ZLPs included).
    let mut engine = Engine::new(EngineConfig::default());
    engine.start();
    let mut buf = Vec::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (mut conn, mut sent, mut echoed) = (None, 0, Vec::new());
    let end = Instant::now() + T;
    while echoed.len() < data.len() {
        assert!(Instant::now() < end, "echo stalled at {} bytes", echoed.len());
        while engine.poll_transmit(&mut buf) {
            link.send(&buf).unwrap();
        }
        if let Ok(e) = link_rx.recv_timeout(Duration::from_millis(10)) {
            let LinkEvent::Transfer(t) = e else { panic!("{e:?}") };
            engine.handle_input(&t, Instant::now());
        }
        engine.handle_timeout(Instant::now());
        while let Some(e) = engine.poll_event() {
            match e {
                EngineEvent::Ready { .. } => conn = Some(engine.connect(ECHO_PORT, Instant::now()).unwrap()),
                EngineEvent::Connected(_) | EngineEvent::Readable(_) | EngineEvent::Writable(_) => {}
                other => panic!("{other:?}"),
            }
        }
        if let Some(id) = conn {
            if sent < data.len() {
                sent += engine.send(id, &data[sent..]).unwrap_or(0);
            }
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = engine.recv(id, &mut chunk) {
                echoed.extend_from_slice(&chunk[..n]);
            }
        }
    }
    assert!(echoed == data, "echo differs");

    // Unplug: the link reports Gone, the bus Left.
    server.unplug(second.bus_id);
    let gone = loop {
        match link_rx.recv_timeout(T).unwrap() {
            LinkEvent::Transfer(_) => continue,
            LinkEvent::Gone(why) => break why,
        }
    };
    assert_eq!(gone, "device disconnected");
    assert_eq!(bus_rx.recv_timeout(T).unwrap(), BusEvent::Left(second.bus_id));
    drop(link);

    // The simulator goes away: the remaining device leaves; a new one is found again.
    drop(server);
    assert_eq!(bus_rx.recv_timeout(T).unwrap(), BusEvent::Left(first.bus_id));
    let server = SimBusServer::bind(&path).unwrap();
    let again = server.plug(device(UDID), PlugOptions::default()).unwrap();
    assert_eq!(bus_rx.recv_timeout(T).unwrap(), BusEvent::Arrived(again));
    drop(bus);
    wait_until("the bus to disconnect", || server.control_connections() == 0);
}
