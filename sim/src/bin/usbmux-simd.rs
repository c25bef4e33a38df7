//! `usbmux-simd`: a simulated USB bus with simulated iPhones, served on a UNIX socket for
//! the library's USB backend (`USBMUXD_SIMBUS=PATH`), driven over stdin/stdout by tests.
//! See [`USAGE`] and [`HELP`]; the wire protocol is documented in `usbmux_sim::simbus`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use usbmux_sim::services::{Echo, Lockdownd, Service, ServiceStatus, Sink, Source};
use usbmux_sim::simbus::{PlugOptions, SimBusServer};
use usbmux_sim::stdio::serve_lines;
use usbmux_sim::{
    boxed_factory, ConnectionInfo, ConnectionState, DeviceConfig, Direction, Misbehaviour, ResetAfter, ServiceFactory,
    DEFAULT_SOURCE_LEN, ECHO_PORT, LOCKDOWND_PORT, SINK_PORT, SOURCE_PORT,
};

const USAGE: &str = "\
usage: usbmux-simd --socket PATH [options]

A simulated USB bus with simulated iPhones. A program run with USBMUXD_SIMBUS=PATH (and
the library's USB backend) sees the devices plugged in here as USB devices. Prints
`READY PATH` once listening, then reads control commands from stdin (`help` lists them);
EOF = quit.

options:
  --socket PATH                  serve the bus on this UNIX socket (a stale socket file
                                 is replaced)
  --device UDID[,PRODUCT_ID]     plug in a device at start; repeatable (product id
                                 decimal or 0x hex, default 0x12a8). The USB serial is the
                                 UDID without the dash of a 25-character UDID.
  --service PORT=KIND            service on every device: echo | sink | source:N | close |
                                 lockdownd | none (removes the port); repeatable
  --no-default-services          start from no services instead of the defaults
                                 (62078 lockdownd, 7 echo, 9 sink, 19 source:1048576)
  --verbose                      log connections and device events on stderr
  -h, --help                     this text
";

const HELP: &str = "\
commands (reply: OK [info] | ERR why, data lines first):
  plug UDID[,PRODUCT_ID]   plug in a device with the services of the command line (OK <bus_id>)
  unplug UDID|BUS_ID       unplug it: its connection closes, LEFT is announced
  list                     DEVICE lines (OK <count>)
  events UDID|BUS_ID       EVENT lines: what the device reported since last asked (OK <count>)
  connections UDID|BUS_ID  CONNECTION lines: the device's open connections and their
                           counters (OK <count>)
  misbehave UDID|BUS_ID reset-after N [to-host|from-host|both] [port=P] [REASON...]
                           reset connections (those to device port P) once N payload bytes
                           passed (default to-host: the host gets exactly N bytes), with an
                           RST carrying REASON (default \"simulated reset\"); until unplugged
  misbehave UDID|BUS_ID clear   a well-behaved device again
  help                     this text
  quit                     unplug everything and exit (also on EOF)";

/// A service that ends the connection cleanly right after it is established.
struct CloseNow;

impl Service for CloseNow {
    fn on_data(&mut self, _: &[u8]) {}
    fn has_output(&self) -> bool {
        false
    }
    fn poll_output(&mut self, _: &mut Vec<u8>, _: usize) {}
    fn status(&self) -> ServiceStatus {
        ServiceStatus::Close
    }
}

/// `PORT=echo|sink|source:N|close|lockdownd|none`; `none` gives `None`.
fn parse_service(spec: &str) -> Result<(u16, Option<ServiceFactory>), String> {
    let (port, kind) = spec.split_once('=').ok_or_else(|| format!("expected PORT=KIND, got {spec:?}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let factory = match kind {
        "echo" => Some(boxed_factory(|_| Echo::new())),
        "sink" => Some(boxed_factory(|_| Sink::new())),
        "close" => Some(boxed_factory(|_| CloseNow)),
        "lockdownd" => Some(boxed_factory(|ctx| Lockdownd::for_udid(ctx.udid))),
        "none" => None,
        _ => match kind.strip_prefix("source:") {
            Some(n) => {
                let n: u64 = n.parse().map_err(|_| format!("bad byte count {n:?}"))?;
                Some(boxed_factory(move |_| Source::new(n)))
            }
            None => return Err(format!("unknown service {kind:?}")),
        },
    };
    Ok((port, factory))
}

fn default_services() -> BTreeMap<u16, ServiceFactory> {
    let mut m = BTreeMap::new();
    for (port, spec) in [
        (LOCKDOWND_PORT, "lockdownd".to_string()),
        (ECHO_PORT, "echo".into()),
        (SINK_PORT, "sink".into()),
        (SOURCE_PORT, format!("source:{DEFAULT_SOURCE_LEN}")),
    ] {
        let (_, f) = parse_service(&format!("{port}={spec}")).expect("default services parse");
        m.insert(port, f.expect("not none"));
    }
    m
}

/// A `CONNECTION …` line of the `connections` command.
fn connection_line(c: ConnectionInfo) -> String {
    format!(
        "CONNECTION id={} host_port={} device_port={} state={} bytes_received={} bytes_delivered={} bytes_sent={} bytes_acked={} unacked={} host_window={} undelivered={}",
        c.id.get(),
        c.host_port,
        c.device_port,
        match c.state {
            ConnectionState::SynReceived => "syn-received",
            ConnectionState::Established => "established",
        },
        c.stats.bytes_received,
        c.stats.bytes_delivered,
        c.stats.bytes_sent,
        c.stats.bytes_acked,
        c.unacked,
        c.host_window,
        c.undelivered
    )
}

const MISBEHAVE_USAGE: &str =
    "usage: misbehave UDID|BUS_ID reset-after N [to-host|from-host|both] [port=P] [REASON...] | clear";

/// The words after `misbehave UDID|BUS_ID`: `reset-after N [to-host|from-host|both]
/// [port=P] [REASON...]` or `clear`.
fn parse_misbehaviour(words: &[&str]) -> Result<Misbehaviour, String> {
    match words {
        ["clear"] => Ok(Misbehaviour::none()),
        ["reset-after", n, rest @ ..] => {
            let bytes: u64 = n.parse().map_err(|_| format!("bad byte count {n:?}"))?;
            let mut rest = rest;
            let mut direction = Direction::ToHost;
            if let Some((first, tail)) = rest.split_first() {
                let d = match *first {
                    "to-host" => Some(Direction::ToHost),
                    "from-host" => Some(Direction::FromHost),
                    "both" => Some(Direction::Both),
                    _ => None,
                };
                if let Some(d) = d {
                    direction = d;
                    rest = tail;
                }
            }
            let mut port = None;
            if let Some(p) = rest.first().and_then(|w| w.strip_prefix("port=")) {
                port = Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?);
                rest = &rest[1..];
            }
            let reason = if rest.is_empty() { "simulated reset".to_string() } else { rest.join(" ") };
            let mut reset = ResetAfter::new(bytes, direction, &reason);
            if let Some(p) = port {
                reset = reset.on_port(p);
            }
            Ok(Misbehaviour::none().reset_after(reset))
        }
        _ => Err(MISBEHAVE_USAGE.into()),
    }
}

/// `UDID[,PRODUCT_ID]`.
fn parse_device(spec: &str) -> Result<(String, u16), String> {
    let (udid, pid) = match spec.split_once(',') {
        Some((u, p)) => (u, Some(p)),
        None => (spec, None),
    };
    if udid.is_empty() || udid.len() > 255 || !udid.bytes().all(|b| b.is_ascii_graphic()) || udid.contains(',') {
        return Err(format!("bad UDID {udid:?}"));
    }
    let product_id = match pid {
        None => usbmux_sim::simbus::DEFAULT_PRODUCT_ID,
        Some(p) => {
            let n = match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(hex) => u16::from_str_radix(hex, 16),
                None => p.parse(),
            };
            n.map_err(|_| format!("bad product id {p:?}"))?
        }
    };
    Ok((udid.to_string(), product_id))
}

#[derive(Default)]
struct Options {
    socket: Option<String>,
    devices: Vec<(String, u16)>,
    services: BTreeMap<u16, ServiceFactory>,
    verbose: bool,
}

enum Parsed {
    Run(Options),
    Help,
}

fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, String> {
    let mut args = args.into_iter();
    let mut o = Options::default();
    let mut services = Vec::new();
    let mut no_defaults = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--socket" => o.socket = Some(value("--socket")?),
            "--device" => o.devices.push(parse_device(&value("--device")?)?),
            "--service" => services.push(parse_service(&value("--service")?)?),
            "--no-default-services" => no_defaults = true,
            "--verbose" => o.verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.socket.is_none() {
        return Err("--socket is required".into());
    }
    if !no_defaults {
        o.services = default_services();
    }
    for (port, f) in services {
        match f {
            Some(f) => o.services.insert(port, f),
            None => o.services.remove(&port),
        };
    }
    Ok(Parsed::Run(o))
}

struct Controller<'a> {
    server: &'a SimBusServer,
    services: BTreeMap<u16, ServiceFactory>,
}

impl Controller<'_> {
    fn plug(&self, udid: &str, product_id: u16) -> Result<u64, String> {
        let mut config = DeviceConfig::new().udid(udid);
        for (port, f) in &self.services {
            config = config.listen_with(*port, f.clone());
        }
        self.server.plug(config, PlugOptions::product_id(product_id)).map(|i| i.bus_id).map_err(|e| e.to_string())
    }

    /// A bus id, or the UDID / serial of a plugged-in device.
    fn lookup(&self, what: &str) -> Result<u64, String> {
        if let Ok(id) = what.parse::<u64>() {
            if self.server.devices().iter().any(|d| d.info.bus_id == id) {
                return Ok(id);
            }
        }
        self.server.find(what).ok_or_else(|| format!("no device {what:?}"))
    }

    /// Executes one line: the reply lines (empty for blank and `#` lines) and whether to quit.
    fn handle(&self, line: &str) -> (Vec<String>, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&cmd) = words.first() else { return (Vec::new(), false) };
        if cmd.starts_with('#') {
            return (Vec::new(), false);
        }
        let result = self.execute(cmd, &words[1..]);
        let lines = match result {
            Ok((mut data, info)) => {
                data.push(if info.is_empty() { "OK".into() } else { format!("OK {info}") });
                data
            }
            Err(why) => vec![format!("ERR {why}")],
        };
        (lines, cmd == "quit")
    }

    fn execute(&self, cmd: &str, args: &[&str]) -> Result<(Vec<String>, String), String> {
        let one_arg = || match args {
            [a] => Ok(*a),
            _ => Err(format!("{cmd} takes exactly one argument")),
        };
        match cmd {
            "plug" => {
                let (udid, pid) = parse_device(one_arg()?)?;
                Ok((Vec::new(), self.plug(&udid, pid)?.to_string()))
            }
            "unplug" => {
                let id = self.lookup(one_arg()?)?;
                self.server.unplug(id);
                Ok((Vec::new(), String::new()))
            }
            "list" => {
                let lines: Vec<String> = self
                    .server
                    .devices()
                    .iter()
                    .map(|d| {
                        format!(
                            "DEVICE bus_id={} udid={} serial={} vendor_id=0x{:04x} product_id=0x{:04x} location=0x{:08x} speed_bps={} open={}",
                            d.info.bus_id,
                            d.udid,
                            d.info.serial,
                            d.info.vendor_id,
                            d.info.product_id,
                            d.info.location,
                            d.info.speed_bps,
                            if d.open { "yes" } else { "no" }
                        )
                    })
                    .collect();
                let n = lines.len();
                Ok((lines, n.to_string()))
            }
            "events" => {
                let id = self.lookup(one_arg()?)?;
                let lines: Vec<String> = self.server.take_events(id).iter().map(|e| format!("EVENT {e:?}")).collect();
                let n = lines.len();
                Ok((lines, n.to_string()))
            }
            "connections" => {
                let id = self.lookup(one_arg()?)?;
                let lines = self
                    .server
                    .with_device(id, |d| {
                        d.connections()
                            .into_iter()
                            .filter_map(|c| d.connection(c))
                            .map(connection_line)
                            .collect::<Vec<_>>()
                    })
                    .ok_or_else(|| format!("no device {id}"))?;
                let n = lines.len();
                Ok((lines, n.to_string()))
            }
            "misbehave" => {
                let [what, spec @ ..] = args else { return Err(MISBEHAVE_USAGE.into()) };
                let id = self.lookup(what)?;
                let m = parse_misbehaviour(spec)?;
                self.server
                    .with_device(id, |d| d.set_misbehaviour(m, std::time::Instant::now()))
                    .ok_or_else(|| format!("no device {what:?}"))?;
                Ok((Vec::new(), String::new()))
            }
            "help" => Ok((HELP.lines().map(str::to_string).collect(), String::new())),
            "quit" => Ok((Vec::new(), String::new())),
            other => Err(format!("unknown command {other:?} (try help)")),
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("usbmux-simd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let socket = options.socket.clone().expect("checked by parse_args");
    let mut server = match SimBusServer::bind(&socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("usbmux-simd: cannot listen on {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.set_verbose(options.verbose);
    let controller = Controller { server: &server, services: options.services };
    for (udid, pid) in &options.devices {
        if let Err(e) = controller.plug(udid, *pid) {
            eprintln!("usbmux-simd: cannot plug in {udid}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let ready = server.path().display().to_string();
    serve_lines(std::io::stdin().lock(), std::io::stdout(), &ready, |line| controller.handle(line));
    server.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Parsed, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_line() {
        let Ok(Parsed::Run(o)) = args(&[
            "--socket",
            "/tmp/s",
            "--device",
            "00008030-001A2B3C4D5E6F70",
            "--device",
            "AAA,0x12ab",
            "--device",
            "BBB,4777",
            "--service",
            "9=none",
            "--service",
            "5000=source:10",
            "--verbose",
        ]) else {
            panic!()
        };
        assert_eq!(o.socket.as_deref(), Some("/tmp/s"));
        assert_eq!(
            o.devices,
            [("00008030-001A2B3C4D5E6F70".to_string(), 0x12a8), ("AAA".into(), 0x12ab), ("BBB".into(), 4777)]
        );
        assert_eq!(o.services.keys().copied().collect::<Vec<_>>(), [7, 19, 5000, 62078]);
        assert!(o.verbose);
        let Ok(Parsed::Run(o)) = args(&["--socket", "x", "--no-default-services", "--service", "7=close"]) else {
            panic!()
        };
        assert_eq!(o.services.keys().copied().collect::<Vec<_>>(), [7]);
        assert!(matches!(args(&["-h"]), Ok(Parsed::Help)));
        assert_eq!(parse_misbehaviour(&["clear"]), Ok(Misbehaviour::none()));
        assert_eq!(
            parse_misbehaviour(&["reset-after", "300000"]),
            Ok(Misbehaviour::none().reset_after(ResetAfter::new(300_000, Direction::ToHost, "simulated reset")))
        );
        assert_eq!(
            parse_misbehaviour(&["reset-after", "0", "from-host", "port=7", "going", "away"]),
            Ok(Misbehaviour::none().reset_after(ResetAfter::new(0, Direction::FromHost, "going away").on_port(7)))
        );
        assert_eq!(
            parse_misbehaviour(&["reset-after", "5", "port=19"]),
            Ok(Misbehaviour::none().reset_after(ResetAfter::new(5, Direction::ToHost, "simulated reset").on_port(19)))
        );
        for bad in [&[][..], &["reset-after"], &["reset-after", "-1"], &["reset-after", "1", "port=x"], &["mute"]] {
            assert!(parse_misbehaviour(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &["--device", "A"][..],
            &["--socket"],
            &["--socket", "x", "--device", "A,0x10000"],
            &["--socket", "x", "--device", "A,b,c"],
            &["--socket", "x", "--device", ""],
            &["--socket", "x", "--service", "7=telnet"],
            &["--socket", "x", "--service", "70000=echo"],
            &["--socket", "x", "--service", "7=source:-1"],
            &["--socket", "x", "--bogus"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
