//! The daemon against the real upstream clients installed from Debian 12 (libusbmuxd 2.0.2,
//! libimobiledevice 1.3.0): `idevice_id`, `ideviceinfo`, `iproxy`, `inetcat`. A test whose
//! program is not installed prints `SKIP …` and passes.

mod common;

use common::{TIMEOUT, UDID, UDID2};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use usbmuxd_testd::*;

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join(name)).find(|p| p.is_file())
}

macro_rules! require {
    ($name:expr) => {
        match tool($name) {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIP: {} is not installed (Debian package libimobiledevice-utils / libusbmuxd-tools)",
                    $name
                );
                return;
            }
        }
    };
}

fn command(path: &PathBuf, d: &TestDaemon) -> Command {
    let mut c = Command::new(path);
    c.env("USBMUXD_SOCKET_ADDRESS", d.usbmuxd_socket_address());
    c
}

/// Runs to completion, killing the program if it takes longer than 20 s.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Kills a spawned program when the test ends, whatever happens.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts iproxy with `options` and `LOCAL:device_port` on a free local port, and connects
/// to that port once iproxy listens (read timeout [`TIMEOUT`]). Dropping the [`Reaper`]
/// kills iproxy.
fn start_iproxy(iproxy: &PathBuf, d: &TestDaemon, options: &[&str], device_port: u16) -> (Reaper, TcpStream) {
    let port = free_port();
    let child = command(iproxy, d)
        .args(options)
        .arg(format!("{port}:{device_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reaper = Reaper(child);
    let deadline = Instant::now() + TIMEOUT;
    let s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("iproxy does not listen: {e}"),
        }
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (reaper, s)
}

fn devices() -> DaemonConfig {
    DaemonConfig::new().device(TestDevice::usb(3, UDID)).device(TestDevice::usb(5, UDID2)).device(TestDevice::network(
        7,
        "00008030-0000111122223333",
        Ipv4Addr::LOCALHOST,
    ))
}

#[test]
fn idevice_id_lists_usb_and_network_devices() {
    let idevice_id = require!("idevice_id");
    let d = TestDaemon::start(devices()).unwrap();
    let out = run({
        let mut c = command(&idevice_id, &d);
        c.arg("-l");
        c
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), format!("{UDID}\n{UDID2}\n"));
    let out = run({
        let mut c = command(&idevice_id, &d);
        c.arg("-n");
        c
    });
    assert_eq!(stdout(&out), "00008030-0000111122223333\n");
    let first = &d.requests()[0];
    assert_eq!(first.message_type(), "ListDevices");
    assert_eq!(first.prog_name(), Some("idevice_id"));
    assert_eq!(first.string("ClientVersionString"), Some("libusbmuxd 2.0.2"));
    assert_eq!(first.integer("kLibUSBMuxVersion"), Some(3));
    assert_eq!((first.version(), first.tag()), (1, 1));
}

#[test]
fn idevice_id_over_tcp() {
    let idevice_id = require!("idevice_id");
    let d =
        TestDaemon::start(DaemonConfig { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..devices() }).unwrap();
    let out = run({
        let mut c = command(&idevice_id, &d);
        c.arg("-l");
        c
    });
    assert_eq!(stdout(&out), format!("{UDID}\n{UDID2}\n"), "{out:?}");
}

#[test]
fn idevice_id_falls_back_to_listen_without_list_devices() {
    let idevice_id = require!("idevice_id");
    let d = TestDaemon::start(devices().without_list_devices()).unwrap();
    let out = run({
        let mut c = command(&idevice_id, &d);
        c.arg("-l");
        c
    });
    assert_eq!(stdout(&out), format!("{UDID}\n{UDID2}\n"), "{out:?}");
    let kinds: Vec<String> = d.requests().iter().map(|r| r.message_type()).collect();
    assert_eq!(kinds, ["ListDevices", "Listen"]);
}

/// libusbmuxd 2.0.2 falls back to binary LISTEN after BADVERSION. (Debian's idevice_id then
/// crashes in `idevice_device_list_extended_free`, because 2.0.2 leaves `conn_type` of
/// binary records uninitialised — libusbmuxd-api §4.5; the exit status is therefore only
/// reported, not checked.)
#[test]
fn binary_only_daemon_makes_libusbmuxd_fall_back_to_version_0() {
    let idevice_id = require!("idevice_id");
    let d = TestDaemon::start(devices().binary_only()).unwrap();
    let out = run({
        let mut c = command(&idevice_id, &d);
        c.arg("-l");
        c
    });
    eprintln!("idevice_id -l against a binary-only daemon: {:?}, stdout {:?}", out.status, stdout(&out));
    let log = d.requests();
    assert_eq!(log[0].message_type(), "ListDevices");
    assert_eq!(log[0].version(), 1);
    let listen = log.iter().find(|r| r.message_type() == "LISTEN").expect("binary LISTEN after BADVERSION");
    assert_eq!(listen.version(), 0);
    assert!(listen.dict.is_none());
}

#[test]
fn ideviceinfo_reads_values_from_lockdownd() {
    let ideviceinfo = require!("ideviceinfo");
    let d = TestDaemon::start(
        DaemonConfig::new().device(TestDevice::usb(3, UDID).with_lockdown_value("DeviceName", "Unit Test Phone")),
    )
    .unwrap();
    let out = run({
        let mut c = command(&ideviceinfo, &d);
        c.args(["-s", "-u", UDID]);
        c
    });
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for line in [
        format!("UniqueDeviceID: {UDID}"),
        "DeviceName: Unit Test Phone".into(),
        "ProductType: iPhone12,1".into(),
        "ProductVersion: 15.8".into(),
        "DeviceClass: iPhone".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
    }
    let connect = d.requests().into_iter().find(|r| r.message_type() == "Connect").unwrap();
    assert_eq!(connect.integer("PortNumber"), Some(32498));
    assert_eq!(connect.integer("DeviceID"), Some(3));
    assert_eq!(connect.prog_name(), Some("ideviceinfo"));
    let lockdown = d.lockdownd_requests(3, LOCKDOWND_PORT);
    assert_eq!(lockdown[0]["Request"].as_string(), Some("GetValue"));
    assert_eq!(lockdown[0]["Label"].as_string(), Some("ideviceinfo"));

    // One key, and a key lockdownd does not have.
    let out = run({
        let mut c = command(&ideviceinfo, &d);
        c.args(["-s", "-u", UDID, "-k", "ProductVersion"]);
        c
    });
    assert_eq!(stdout(&out), "15.8\n");
    let out = run({
        let mut c = command(&ideviceinfo, &d);
        c.args(["-s", "-u", UDID, "-k", "NoSuchKey"]);
        c
    });
    assert_eq!(stdout(&out), "");
    // An unknown UDID never reaches lockdownd.
    let out = run({
        let mut c = command(&ideviceinfo, &d);
        c.args(["-s", "-u", "nosuchdevice"]);
        c
    });
    assert!(!out.status.success());
}

#[test]
fn iproxy_relays_to_the_echo_service() {
    let iproxy = require!("iproxy");
    let d = TestDaemon::start(devices()).unwrap();
    let (_reaper, mut s) = start_iproxy(&iproxy, &d, &[], ECHO_PORT);
    s.write_all(b"hello through iproxy").unwrap();
    let mut back = [0u8; 20];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello through iproxy");

    // A bigger transfer, written and read concurrently.
    let data = source_bytes(2 << 20);
    let mut w = s.try_clone().unwrap();
    let expect = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&data).unwrap());
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == expect);

    let connect = d.requests().into_iter().find(|r| r.message_type() == "Connect").unwrap();
    assert_eq!(connect.integer("PortNumber"), Some((ECHO_PORT.swap_bytes()) as u64));
    assert_eq!(connect.integer("DeviceID"), Some(3));
    assert_eq!(connect.prog_name(), Some("iproxy"));
}

#[test]
fn inetcat_relays_stdio_to_the_echo_service() {
    let inetcat = require!("inetcat");
    let d = TestDaemon::start(devices()).unwrap();
    let mut child = command(&inetcat, &d)
        .arg(ECHO_PORT.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let reaper = Reaper(child);
    stdin.write_all(b"ping via inetcat\n").unwrap();
    let mut got = [0u8; 17];
    out.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping via inetcat\n");
    assert_eq!(d.service_stats(3, ECHO_PORT).bytes_received, 17);

    // When the device closes the connection, inetcat exits 0.
    drop(d);
    let mut child = reaper;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "inetcat did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

/// `iproxy -n` reaches a network device directly at its `NetworkAddress`, where a
/// [`ServiceServer`] plays the device's service.
#[test]
fn iproxy_network_mode_connects_to_the_network_address() {
    let iproxy = require!("iproxy");
    let service = ServiceServer::start("127.0.0.1:0".parse().unwrap(), Service::Echo).unwrap();
    let d = TestDaemon::start(devices()).unwrap();
    let (_reaper, mut s) = start_iproxy(&iproxy, &d, &["-n"], service.port());
    s.write_all(b"over the network").unwrap();
    let mut back = [0u8; 16];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over the network");
    assert_eq!(service.stats().connections, 1);
    // The daemon was only asked for the device list, never to Connect.
    assert!(d.requests().iter().all(|r| r.message_type() != "Connect"));
}
