//! The `usbmuxd-testd` program: command line, READY line, control commands over stdin.

mod common;

use common::{Client, UDID};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use usbmuxd::proto::{DaemonMessage, Request};
use usbmuxd_testd::{DaemonConfig, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_usbmuxd-testd");

struct Testd {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    address: String,
}

impl Testd {
    fn spawn(args: &[&str]) -> Testd {
        let mut child = Command::new(BIN).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line.trim_end().strip_prefix("READY ").unwrap_or_else(|| panic!("got {line:?}")).to_string();
        Testd { child, stdin, stdout, address }
    }

    /// Sends a command; returns all reply lines (the last is OK… or ERR…).
    fn cmd(&mut self, line: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(self.stdout.read_line(&mut l).unwrap() > 0, "EOF after {lines:?}");
            let l = l.trim_end().to_string();
            let done = l == "OK" || l.starts_with("OK ") || l.starts_with("ERR ");
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    fn ok(&mut self, line: &str) -> String {
        let reply = self.cmd(line);
        let last = reply.last().unwrap();
        assert!(last.starts_with("OK"), "{line:?} → {reply:?}");
        last.trim_start_matches("OK").trim().to_string()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "usbmuxd-testd did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Testd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testd-bin-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("usbmuxd.sock")
}

/// A raw client for the program's socket (an in-process daemon object is not available,
/// so connect by path).
fn client(path: &std::path::Path) -> Client {
    let s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    Client { conn: common::Conn::Unix(s) }
}

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--socket PATH"));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn control_commands_drive_events_and_misbehaviour() {
    let path = socket_path("control");
    let mut t = Testd::spawn(&["--socket", path.to_str().unwrap(), "--usb", &format!("{UDID},3")]);
    assert_eq!(t.address, format!("UNIX:{}", path.display()));
    let devices = t.cmd("devices");
    assert!(devices[0].starts_with(&format!("DEVICE handle=3 udid={UDID} type=USB")), "{devices:?}");

    let mut listener = client(&path);
    listener.plist(&Request::Listen, 1);
    assert_eq!(listener.read_result(), 0);
    assert!(matches!(listener.read_msg().1, DaemonMessage::DeviceAdd(r) if r.handle == 3));
    assert_eq!(t.ok("wait-listeners 1 2000"), "1");

    assert_eq!(t.ok("attach NEWDEVICE,9,0x12ab"), "9");
    match listener.read_msg().1 {
        DaemonMessage::DeviceAdd(r) => assert_eq!((r.handle, r.product_id, r.udid.as_str()), (9, 0x12ab, "NEWDEVICE")),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.ok("attach-network NET1,10.0.0.2"), "10");
    assert!(matches!(listener.read_msg().1, DaemonMessage::DeviceAdd(r) if r.network_address[4..8] == [10, 0, 0, 2]));
    t.ok("paired 9");
    assert_eq!(listener.read_msg().1, DaemonMessage::DevicePaired(9));
    t.ok("detach 9");
    assert_eq!(listener.read_msg().1, DaemonMessage::DeviceRemove(9));
    assert!(t.cmd("detach 9").last().unwrap().starts_with("ERR "));
    assert!(t.cmd("attach DUP,3").last().unwrap().starts_with("ERR "));
    assert!(t.cmd("frobnicate").last().unwrap().starts_with("ERR "));
    assert!(t.cmd("misbehave dance").last().unwrap().starts_with("ERR "));

    // Misbehaviour aimed at Connect, twice.
    t.ok("misbehave connect-result 3 on connect times 2");
    for _ in 0..2 {
        let mut c = client(&path);
        c.plist(&Request::Connect { device_id: 3, port: 7 }, 1);
        assert_eq!(c.read_result(), 3);
    }
    let mut c = client(&path);
    c.plist(&Request::Connect { device_id: 3, port: 7 }, 1);
    assert_eq!(c.read_result(), 0);
    c.send(b"hi");
    assert_eq!(c.read_exact(2), b"hi");
    // The echo service counts a chunk as sent after writing it: the client may see the
    // bytes a moment before the counter moves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut stats = t.ok("stats 3 7");
    while stats != "connections=1 received=2 sent=2" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        stats = t.ok("stats 3 7");
    }
    assert_eq!(stats, "connections=1 received=2 sent=2");

    // The request log.
    let log = t.cmd("log");
    assert_eq!(log.last().unwrap(), "OK 4");
    assert!(log[0].starts_with("LOG client=1 version=1 tag=1 type=Listen ProgName=\"testd-tests\""), "{log:?}");
    assert!(
        log[1].contains("type=Connect") && log[1].contains("PortNumber=1792") && log[1].contains("port=7"),
        "{log:?}"
    );
    t.ok("log-clear");
    assert_eq!(t.cmd("log"), ["OK 0"]);

    // Raw bytes and disconnects for listeners.
    assert_eq!(t.ok("send-raw 01 02 03"), "1");
    assert_eq!(listener.read_exact(3), [1, 2, 3]);
    assert_eq!(t.ok("disconnect-listeners"), "1");
    listener.expect_eof();

    // stop / start.
    t.ok("stop");
    assert!(!path.exists());
    t.ok("start");
    let mut c = client(&path);
    c.plist(&Request::ListDevices, 1);
    let list = usbmuxd::proto::decode_device_list(&c.read_dict()).unwrap().unwrap();
    assert_eq!(list.iter().map(|r| r.handle).collect::<Vec<_>>(), [3, 10]);

    t.ok("quit");
    assert!(t.wait_exit().success());
    assert!(!path.exists());
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn eof_on_stdin_quits_and_tcp_reports_the_port() {
    let mut t =
        Testd::spawn(&["--tcp", "127.0.0.1:0", "--binary-only", "--no-default-services", "--service", "99=echo"]);
    let port: u16 = t.address.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
    assert_ne!(port, 0);
    t.ok("attach A");
    let mut c = Client { conn: common::Conn::Tcp(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()) };
    c.plist(&Request::ListDevices, 1);
    assert_eq!(c.read_result(), 6);
    c.binary(&Request::Connect { device_id: 1, port: 7 }, 2);
    assert_eq!(c.read_result(), 3);
    c.binary(&Request::Connect { device_id: 1, port: 99 }, 3);
    assert_eq!(c.read_result(), 0);
    drop(t.stdin.take());
    assert!(t.wait_exit().success());
    c.expect_eof();
}

#[test]
fn idevice_id_sees_devices_attached_at_run_time() {
    let Some(idevice_id) = ["/usr/bin/idevice_id"].iter().map(PathBuf::from).find(|p| p.is_file()) else {
        eprintln!("SKIP: idevice_id is not installed");
        return;
    };
    let path = socket_path("idevice_id");
    let mut t = Testd::spawn(&["--socket", path.to_str().unwrap()]);
    let list = || {
        let out = Command::new(&idevice_id)
            .arg("-l")
            .env("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", path.display()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(list(), "");
    t.ok(&format!("attach {UDID}"));
    assert_eq!(list(), format!("{UDID}\n"));
    t.ok("detach 1");
    assert_eq!(list(), "");
    t.ok("quit");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// The library and the program agree on the default port set.
#[test]
fn default_services_match_the_usage_text() {
    let d = TestDaemon::start(DaemonConfig::new()).unwrap();
    drop(d);
    assert!(usbmuxd_testd::cli::USAGE.contains("62078 lockdownd, 7 echo, 9 sink, 19 source:1048576"));
    let ports: Vec<u16> = usbmuxd_testd::default_services().keys().copied().collect();
    assert_eq!(ports, [7, 9, 19, 62078]);
}
