//! Shared helpers of the tools' integration tests: run our iproxy / inetcat against the
//! in-process test daemon and watch their output.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const IPROXY: &str = env!("CARGO_BIN_EXE_iproxy");
pub const INETCAT: &str = env!("CARGO_BIN_EXE_inetcat");
pub const HELPER: &str = env!("CARGO_BIN_EXE_usbmuxd-tools-test");

/// A 24-character serial: the library shows it with a dash after the 8th character.
pub const SERIAL: &str = "001A2B3C4D5E6F7080901234";
pub const UDID: &str = "001A2B3C-4D5E6F7080901234";

/// Whether ::1 can be bound here.
pub fn have_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port free on 127.0.0.1 (and ::1 when available) right now.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !have_ipv6() || TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// Lines a child printed, collected by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(r: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                match line {
                    Ok(line) => l.0.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }

    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits until `line` was printed `n` times.
    pub fn wait_count(&self, line: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(line) < n {
            assert!(Instant::now() < deadline, "timed out waiting for {n}x {line:?}; got {:#?}", self.all());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for(&self, line: &str) {
        self.wait_count(line, 1);
    }

    pub fn wait_for_prefix(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.0.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {prefix:?}; got {:#?}", self.all());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running iproxy (killed on drop).
pub struct Iproxy {
    pub child: Child,
    pub port: u16,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Iproxy {
    /// Starts iproxy with `args` (`PORT` replaced by a free port) against the daemon at
    /// `addr` (`USBMUXD_SOCKET_ADDRESS`), and waits until it listens.
    pub fn start(addr: &str, args: &[&str]) -> Iproxy {
        Iproxy::start_env(addr, args, &[])
    }

    pub fn start_env(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Iproxy {
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.replace("PORT", &port.to_string())).collect();
        let mut cmd = Command::new(IPROXY);
        cmd.args(&args)
            .env("USBMUXD_SOCKET_ADDRESS", addr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start iproxy");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let mut p = Iproxy { child, port, stdout, stderr };
        // Listening, or a failure that names its cause (iproxy's exit status and stderr).
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.stdout.count("waiting for connection") == 0 {
            let exited = p.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() >= deadline {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let how = exited.map_or("did not listen within 10 s".to_string(), |s| format!("exited ({s})"));
                panic!("iproxy {args:?} {how}; stdout {:#?}, stderr {:#?}", p.stdout.all(), p.stderr.all());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    pub fn connect(&self) -> TcpStream {
        connect(("127.0.0.1", self.port))
    }

    /// Asserts iproxy is still running.
    pub fn alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "iproxy exited; stderr {:#?}", self.stderr.all());
    }

    /// Number of open sockets of the process.
    pub fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits until only `n` sockets are left (the listeners): every connection is gone.
    pub fn wait_sockets(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sockets() != n {
            assert!(Instant::now() < deadline, "iproxy still has {} sockets, expected {n}", self.sockets());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Iproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(addr: impl std::net::ToSocketAddrs + Copy) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Deterministic test bytes.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Sends `data` while reading the echo back; returns what came back before EOF or
/// `data.len()` bytes.
pub fn echo(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let out = data.to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in out.chunks(65536) {
            if w.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let mut back = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 65536];
    while back.len() < data.len() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
        }
    }
    writer.join().unwrap();
    back
}

/// Reads until EOF (or an error such as a reset); returns the bytes and whether it
/// ended in a clean EOF.
pub fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (v, true),
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(_) => return (v, false),
        }
    }
}

/// The client is closed by the other side without data.
pub fn expect_closed(mut s: TcpStream) {
    let _ = s.write_all(b"anyone there?\n");
    let (data, _) = read_to_end(&mut s);
    assert!(data.is_empty(), "unexpected data {data:?}");
    let _ = s.shutdown(Shutdown::Both);
}

/// Runs a program to completion with `stdin` bytes; returns (status, stdout, stderr).
pub fn run(program: &str, args: &[&str], addr: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("USBMUXD_SOCKET_ADDRESS", addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    feeder.join().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}
