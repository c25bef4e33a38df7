//! Our inetcat end to end against the scripted test daemon: stdin/stdout relayed
//! byte-exact both ways, EOF on either side, failures and their exit codes.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use usbmuxd_testd::{DaemonConfig, Service, ServiceServer, TestDaemon, TestDevice};

fn usb_daemon() -> TestDaemon {
    TestDaemon::start(DaemonConfig::new().device(TestDevice::usb(3, SERIAL))).unwrap()
}

#[test]
fn stdin_to_device_and_back_then_eof() {
    let d = usb_daemon();
    let addr = d.usbmuxd_socket_address();
    // The echo sees the half-close after the last byte, echoes everything, closes.
    let data = pattern(4 << 20, 1);
    let (code, out, err) = run(INETCAT, &["7"], &addr, &data);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.len(), data.len());
    assert!(out == data);
    let (code, out, _) = run(INETCAT, &["-u", UDID, "--local", "7"], &addr, b"hello");
    assert_eq!((code, out.as_slice()), (0, &b"hello"[..]));
    // The source sends 1 MiB and closes: stdin at EOF from the start (/dev/null) works.
    let out =
        Command::new(INETCAT).arg("19").env("USBMUXD_SOCKET_ADDRESS", &addr).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == usbmuxd_testd::source_bytes(1 << 20));
    // Into a sink: every byte arrives.
    let (code, _, _) = run(INETCAT, &["9"], &addr, &pattern(1 << 20, 2));
    assert_eq!(code, 0);
    assert!(d.wait_until(Duration::from_secs(5), |d| d.service_stats(3, 9).bytes_received == 1 << 20));
}

#[test]
fn the_device_closing_ends_inetcat_with_status_0() {
    let d = usb_daemon();
    let mut child = Command::new(INETCAT)
        .arg("7")
        .env("USBMUXD_SOCKET_ADDRESS", d.usbmuxd_socket_address())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    input.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    output.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    // Unplugged: the daemon drops the pipe while stdin stays open.
    d.detach(3).unwrap();
    d.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "inetcat still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    drop(input);
}

#[test]
fn failures() {
    let d = usb_daemon();
    let addr = d.usbmuxd_socket_address();
    let (code, out, err) = run(INETCAT, &["1234"], &addr, b"");
    assert_eq!((code, out.as_slice(), err.as_str()), (1, &b""[..], "Error connecting to device: Connection refused\n"));
    let (code, _, err) = run(INETCAT, &["-u", "nosuch", "7"], &addr, b"");
    assert_eq!((code, err.as_str()), (1, "No connected/matching device found, disconnecting client.\n"));
    let (code, _, err) = run(INETCAT, &["-n", "7"], &addr, b"");
    assert_eq!((code, err.as_str()), (1, "No connected/matching device found, disconnecting client.\n"));
    let empty = TestDaemon::start(DaemonConfig::new()).unwrap();
    let (code, _, err) = run(INETCAT, &["7"], &empty.usbmuxd_socket_address(), b"");
    assert_eq!((code, err.as_str()), (1, "No connected device found, terminating.\n"));
    let (code, out, err) = run(INETCAT, &["7"], "UNIX:/nonexistent/usbmuxd", b"");
    assert_eq!(code, 1);
    assert_eq!(String::from_utf8_lossy(&out), "Connecting to usbmuxd failed, terminating.\n");
    assert_eq!(err, "cannot reach usbmuxd at /nonexistent/usbmuxd: No such file or directory\n");
}

#[test]
fn network_device() {
    let server = ServiceServer::start("127.0.0.1:0".parse().unwrap(), Service::Echo).unwrap();
    let d = TestDaemon::start(DaemonConfig::new().device(TestDevice::network(12, "net-device", Ipv4Addr::LOCALHOST)))
        .unwrap();
    let data = pattern(1 << 20, 5);
    let (code, out, err) = run(INETCAT, &["-n", &server.port().to_string()], &d.usbmuxd_socket_address(), &data);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out == data, "a real TCP half-close: the whole echo arrives");
}

#[test]
fn command_line() {
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (&[], 2, "", "Usage: inetcat [OPTIONS] DEVICE_PORT\n"),
        (&["abc"], 234, "", "Invalid device_port specified!\n"),
        (&["0"], 234, "", "Invalid device_port specified!\n"),
        (&["-u", "", "22"], 2, "", "ERROR: UDID must not be empty!\nUsage: inetcat"),
        (&["-s", "x", "22"], 2, "", "{INETCAT}: invalid option -- 's'\nUsage: inetcat"),
        (&["--source=x", "22"], 2, "", "{INETCAT}: unrecognized option '--source=x'\n"),
        (&["-v"], 0, "inetcat 2.1.1\n", ""),
        (&["-h"], 0, "Usage: inetcat [OPTIONS] DEVICE_PORT\n", ""),
    ];
    for (args, code, out_prefix, err_prefix) in cases {
        let out =
            Command::new(INETCAT).args(*args).env("USBMUXD_SOCKET_ADDRESS", "UNIX:/nonexistent").output().unwrap();
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {se}");
        assert!(so.starts_with(out_prefix), "{args:?}: stdout {so:?}");
        assert!(se.starts_with(&err_prefix.replace("{INETCAT}", INETCAT)), "{args:?}: stderr {se:?}");
    }
}
