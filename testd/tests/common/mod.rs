//! A raw protocol client for the tests: speaks the usbmuxd wire format by hand, so that
//! the daemon's exact bytes can be checked.
#![allow(dead_code)]

use plist::{Dictionary, Value};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use usbmuxd::proto::{
    decode_daemon_message, frame, msgtype, ClientInfo, DaemonMessage, Header, Request, HEADER_LEN, MAX_MESSAGE_LEN,
};
use usbmuxd_testd::{BoundAddress, TestDaemon};

pub const UDID: &str = "00008030-001A2B3C4D5E6F70";
pub const UDID2: &str = "00008101-000A11B22C33D44E";
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn info(prog: &str) -> ClientInfo {
    ClientInfo { bundle_id: None, version_string: "libusbmuxd 2.0.2".into(), prog_name: Some(prog.into()) }
}

pub struct Client {
    pub conn: Conn,
}

impl Client {
    pub fn connect(d: &TestDaemon) -> Client {
        Client::try_connect(d).expect("connect to the test daemon")
    }

    pub fn try_connect(d: &TestDaemon) -> io::Result<Client> {
        let conn = match d.address() {
            BoundAddress::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(TIMEOUT))?;
                Conn::Unix(s)
            }
            BoundAddress::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_read_timeout(Some(TIMEOUT))?;
                Conn::Tcp(s)
            }
        };
        Ok(Client { conn })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        match &self.conn {
            Conn::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
            Conn::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).unwrap();
    }

    pub fn plist(&mut self, req: &Request, tag: u32) {
        let bytes = req.encode_plist(&info("testd-tests"), tag);
        self.send(&bytes);
    }

    pub fn binary(&mut self, req: &Request, tag: u32) {
        let bytes = req.encode_binary(tag).unwrap();
        self.send(&bytes);
    }

    pub fn plist_dict(&mut self, d: &Dictionary, tag: u32) {
        self.send(&frame(1, msgtype::PLIST, tag, &usbmuxd::proto::plist_to_xml(d)));
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.conn.read_exact(&mut buf).unwrap();
        buf
    }

    /// One whole message.
    pub fn read_raw(&mut self) -> Vec<u8> {
        let mut raw = self.read_exact(HEADER_LEN);
        let h = Header::decode(raw[..16].try_into().unwrap(), MAX_MESSAGE_LEN).unwrap();
        raw.extend(self.read_exact(h.payload_len()));
        raw
    }

    pub fn read_msg(&mut self) -> (Header, DaemonMessage) {
        let raw = self.read_raw();
        let h = Header::decode(raw[..16].try_into().unwrap(), MAX_MESSAGE_LEN).unwrap();
        (h, decode_daemon_message(&h, &raw[16..]).unwrap())
    }

    pub fn read_result(&mut self) -> u32 {
        match self.read_msg().1 {
            DaemonMessage::Result(n) => n,
            other => panic!("expected a Result, got {other:?}"),
        }
    }

    pub fn read_dict(&mut self) -> Dictionary {
        match self.read_msg().1 {
            DaemonMessage::Dictionary(d) => d,
            other => panic!("expected a dictionary, got {other:?}"),
        }
    }

    /// Everything until EOF (panics on timeout).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match self.conn.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("no EOF: {e} (after {} bytes)", out.len()),
            }
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.set_read_timeout(d);
        let mut b = [0u8; 1];
        match self.conn.read(&mut b) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.set_read_timeout(TIMEOUT);
    }

    pub fn expect_eof(&mut self) {
        let rest = self.read_to_eof();
        assert!(rest.is_empty(), "expected EOF, got {} bytes", rest.len());
    }
}

pub fn dict(pairs: &[(&str, Value)]) -> Dictionary {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A lockdownd request/reply over a connected pipe.
pub fn lockdown(c: &mut Client, request: &Dictionary) -> Dictionary {
    let xml = usbmuxd::proto::plist_to_xml(request);
    c.send(&(xml.len() as u32).to_be_bytes());
    c.send(&xml);
    let len = u32::from_be_bytes(c.read_exact(4).try_into().unwrap()) as usize;
    let body = c.read_exact(len);
    Value::from_reader_xml(&body[..]).unwrap().into_dictionary().unwrap()
}
