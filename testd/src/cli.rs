//! Command line of the `usbmuxd-testd` binary, and the device/service syntax shared with
//! the control protocol.

use crate::config::{default_services, DaemonConfig, Listen, ProtocolMode, Service, TestDevice};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: usbmuxd-testd (--socket PATH | --tcp HOST:PORT) [options]

Fake usbmuxd for tests. Prints `READY <address>` (the USBMUXD_SOCKET_ADDRESS value) once
listening, then reads control commands from stdin (`help` lists them); EOF = quit.

options:
  --socket PATH                  listen on a UNIX socket (a stale socket file is replaced)
  --tcp HOST:PORT                listen on TCP (port 0 = any free port)
  --usb UDID[,HANDLE[,PRODUCT_ID]]
                                 a USB device (handle: next free id; product id: 0x12a8)
  --network UDID,IPV4[,HANDLE]   a network device, NetworkAddress = Darwin sockaddr_in(IPV4)
  --binary-only                  old daemon: plist requests get binary RESULT 6
  --no-list-devices              ListDevices gets Result 1
  --pair-dir DIR                 pair records and SystemConfiguration.plist (default: temp dir)
  --service PORT=KIND            service on every device: echo | sink | source:N | close |
                                 lockdownd | none (removes the port); repeatable
  --no-default-services          start from no services instead of the defaults
                                 (62078 lockdownd, 7 echo, 9 sink, 19 source:1048576)
  -h, --help                     this text
";

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: DaemonConfig,
    /// The services of every device, including devices attached later with `attach`.
    pub services: BTreeMap<u16, Service>,
}

/// Result of parsing: run, or print the usage.
#[derive(Debug)]
pub enum Parsed {
    Run(Options),
    Help,
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, String> {
    let mut args = args.into_iter();
    let mut listen = None;
    let mut config = DaemonConfig::default();
    let mut services = default_services();
    let mut service_args = Vec::new();
    let mut no_defaults = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--socket" => listen = Some(Listen::Unix(PathBuf::from(value("--socket")?))),
            "--tcp" => listen = Some(Listen::Tcp(parse_socket_addr(&value("--tcp")?)?)),
            "--usb" => config.devices.push(parse_usb(&value("--usb")?)?),
            "--network" => config.devices.push(parse_network(&value("--network")?)?),
            "--binary-only" => config.mode = ProtocolMode::BinaryOnly,
            "--no-list-devices" => config.list_devices = false,
            "--pair-dir" => config.pair_dir = Some(PathBuf::from(value("--pair-dir")?)),
            "--service" => service_args.push(parse_service(&value("--service")?)?),
            "--no-default-services" => no_defaults = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    config.listen = listen.ok_or("one of --socket or --tcp is required")?;
    if no_defaults {
        services.clear();
    }
    for (port, service) in service_args {
        match service {
            Some(s) => services.insert(port, s),
            None => services.remove(&port),
        };
    }
    for dev in &mut config.devices {
        dev.services = services.clone();
    }
    Ok(Parsed::Run(Options { config, services }))
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

fn parse_u32(s: &str, what: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("bad {what} {s:?}"))
}

fn parse_udid(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || s.contains(char::is_whitespace) {
        return Err(format!("bad UDID {s:?}"));
    }
    Ok(s.to_string())
}

/// `UDID[,HANDLE[,PRODUCT_ID]]` → a USB device with the default services (handle 0 =
/// next free; product id decimal or `0x` hex).
pub fn parse_usb(spec: &str) -> Result<TestDevice, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    if parts.len() > 3 {
        return Err(format!("too many fields in {spec:?}"));
    }
    let handle = parts.get(1).map(|h| parse_u32(h, "handle")).transpose()?.unwrap_or(0);
    let mut dev = TestDevice::usb(handle, &parse_udid(parts[0])?);
    if let Some(pid) = parts.get(2) {
        dev.product_id = parse_u32(pid, "product id")?;
    }
    Ok(dev)
}

/// `UDID,IPV4[,HANDLE]` → a network device.
pub fn parse_network(spec: &str) -> Result<TestDevice, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!("expected UDID,IPV4[,HANDLE], got {spec:?}"));
    }
    let ip: Ipv4Addr = parts[1].parse().map_err(|_| format!("bad IPv4 address {:?}", parts[1]))?;
    let handle = parts.get(2).map(|h| parse_u32(h, "handle")).transpose()?.unwrap_or(0);
    Ok(TestDevice::network(handle, &parse_udid(parts[0])?, ip))
}

/// `PORT=echo|sink|source:N|close|lockdownd|none`; `none` gives `None` (remove the port).
pub fn parse_service(spec: &str) -> Result<(u16, Option<Service>), String> {
    let (port, kind) = spec.split_once('=').ok_or_else(|| format!("expected PORT=KIND, got {spec:?}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let service = match kind {
        "echo" => Some(Service::Echo),
        "sink" => Some(Service::Sink),
        "close" => Some(Service::CloseImmediately),
        "lockdownd" => Some(Service::Lockdownd),
        "none" => None,
        _ => match kind.strip_prefix("source:") {
            Some(n) => Some(Service::Source(n.parse().map_err(|_| format!("bad byte count {n:?}"))?)),
            None => return Err(format!("unknown service {kind:?}")),
        },
    };
    Ok((port, service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use usbmuxd::proto::ConnectionType;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(o) => Ok(o),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn full_command_line() {
        let o = run(&[
            "--socket",
            "/tmp/x.sock",
            "--usb",
            "AAA,5,0x12ab",
            "--usb",
            "BBB",
            "--network",
            "CCC,127.0.0.1,9",
            "--binary-only",
            "--no-list-devices",
            "--pair-dir",
            "/tmp/pairs",
            "--service",
            "7=sink",
            "--service",
            "5000=source:10",
            "--service",
            "19=none",
        ])
        .unwrap();
        assert_eq!(o.config.listen, Listen::Unix("/tmp/x.sock".into()));
        assert_eq!(o.config.mode, ProtocolMode::BinaryOnly);
        assert!(!o.config.list_devices);
        let d = &o.config.devices;
        assert_eq!((d[0].handle, d[0].product_id, d[0].udid.as_str()), (5, 0x12ab, "AAA"));
        assert_eq!(d[1].handle, 0);
        assert_eq!(d[2].connection, ConnectionType::Network);
        assert_eq!(d[2].network_address[4..8], [127, 0, 0, 1]);
        for dev in d {
            assert_eq!(dev.services.get(&7), Some(&Service::Sink));
            assert_eq!(dev.services.get(&5000), Some(&Service::Source(10)));
            assert_eq!(dev.services.get(&19), None);
            assert_eq!(dev.services.get(&62078), Some(&Service::Lockdownd));
        }
    }

    #[test]
    fn errors_and_help() {
        assert!(run(&[]).is_err());
        assert!(run(&["--socket"]).is_err());
        assert!(run(&["--tcp", "nonsense"]).is_err());
        assert!(run(&["--socket", "x", "--usb", "A,notanumber"]).is_err());
        assert!(run(&["--socket", "x", "--network", "A"]).is_err());
        assert!(run(&["--socket", "x", "--service", "7=teleport"]).is_err());
        assert!(run(&["--socket", "x", "--frobnicate"]).is_err());
        assert!(matches!(parse(["-h".to_string()]), Ok(Parsed::Help)));
        let o = run(&["--tcp", "127.0.0.1:0", "--no-default-services", "--service", "7=echo"]).unwrap();
        assert_eq!(o.services.len(), 1);
    }
}
