//! The line-based control protocol of the `usbmuxd-testd` binary.
//!
//! One command per line; the reply ends with a line that is `OK`, `OK <info>` or
//! `ERR <why>`, possibly preceded by data lines (`LOG …`, `DEVICE …`). Blank lines and
//! lines starting with `#` are ignored (no reply).

use crate::cli::{parse_network, parse_service, parse_usb};
use crate::config::{ProtocolMode, Service, TestDevice};
use crate::misbehaviour::{Misbehaviour, RequestKind, Times};
use crate::TestDaemon;
use std::collections::BTreeMap;
use std::time::Duration;
use usbmuxd::proto::ConnectionType;

pub const HELP: &str = "\
commands (reply: OK [info] | ERR why, data lines first):
  attach UDID[,HANDLE[,PRODUCT_ID]]   add a USB device, send Attached (OK <handle>)
  attach-network UDID,IPV4[,HANDLE]   add a network device (OK <handle>)
  detach HANDLE                       remove a device, send Detached
  paired HANDLE                       send Paired
  stop                                kill the daemon: close socket and all connections
  start                               listen again on the same address (restart if running)
  misbehave NAME [ARG] [on KIND] [times N|always]
        NAME: short-length huge-length truncated-header truncated-payload invalid-plist
              binary-plist wrong-kind close never-reply result N connect-result N
              listen-result N delay MS raw HEX
        KIND: any listen connect list-devices list-listeners read-buid read-pair-record
              save-pair-record delete-pair-record other   (default: any, once)
  misbehave-clear                     disarm all misbehaviours
  mode plist|binary-only              protocol mode
  list-devices on|off                 whether ListDevices is answered
  service HANDLE PORT=KIND            set a service (echo sink source:N close lockdownd none)
  stats HANDLE PORT                   OK connections=N received=N sent=N
  lockdown-log HANDLE [PORT]          LOCKDOWN lines: requests lockdownd got (port 62078)
  devices                             DEVICE lines
  log                                 LOG lines, one per request received (OK <count>)
  log-clear                           forget the request log
  listeners                           OK <number of listening connections>
  wait-listeners N [TIMEOUT_MS]       wait until N connections listen (default 5000 ms)
  send-raw HEX                        write bytes to every listener (OK <count>)
  disconnect-listeners                close every listening connection (OK <count>)
  help                                this text
  quit                                stop and exit (also on EOF)";

/// The output of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Lines to print, the last being `OK…` or `ERR…`; empty for ignored lines.
    pub lines: Vec<String>,
    /// The program should exit.
    pub quit: bool,
}

/// Executes control commands against a daemon.
pub struct Controller<'a> {
    daemon: &'a TestDaemon,
    /// Services given to devices created by `attach` / `attach-network`.
    services: BTreeMap<u16, Service>,
}

type CmdResult = Result<(Vec<String>, String), String>;

fn ok(info: impl Into<String>) -> CmdResult {
    Ok((Vec::new(), info.into()))
}

fn number<T: std::str::FromStr>(s: Option<&&str>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what} {s:?}"))
}

impl<'a> Controller<'a> {
    pub fn new(daemon: &'a TestDaemon, services: BTreeMap<u16, Service>) -> Controller<'a> {
        Controller { daemon, services }
    }

    /// Executes one line.
    pub fn handle(&mut self, line: &str) -> Response {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&cmd) = words.first() else {
            return Response { lines: Vec::new(), quit: false };
        };
        if cmd.starts_with('#') {
            return Response { lines: Vec::new(), quit: false };
        }
        let quit = cmd == "quit";
        let lines = match self.execute(cmd, &words[1..]) {
            Ok((mut data, info)) => {
                data.push(if info.is_empty() { "OK".to_string() } else { format!("OK {info}") });
                data
            }
            Err(why) => vec![format!("ERR {why}")],
        };
        Response { lines, quit }
    }

    fn execute(&mut self, cmd: &str, args: &[&str]) -> CmdResult {
        let d = self.daemon;
        let one_arg = || match args {
            [a] => Ok(*a),
            _ => Err(format!("{cmd} takes exactly one argument")),
        };
        match cmd {
            "attach" => self.attach(parse_usb(one_arg()?)?),
            "attach-network" => self.attach(parse_network(one_arg()?)?),
            "detach" => d
                .detach(number(args.first(), "handle")?)
                .map(|_| (Vec::new(), String::new()))
                .map_err(|e| e.to_string()),
            "paired" => d
                .paired(number(args.first(), "handle")?)
                .map(|_| (Vec::new(), String::new()))
                .map_err(|e| e.to_string()),
            "stop" => {
                d.stop();
                ok("")
            }
            "start" => d.restart().map(|_| (Vec::new(), String::new())).map_err(|e| format!("cannot listen: {e}")),
            "misbehave" => self.misbehave(args),
            "misbehave-clear" => {
                d.clear_misbehaviours();
                ok("")
            }
            "mode" => {
                d.set_protocol_mode(match one_arg()? {
                    "plist" => ProtocolMode::Plist,
                    "binary-only" => ProtocolMode::BinaryOnly,
                    other => return Err(format!("unknown mode {other:?}")),
                });
                ok("")
            }
            "list-devices" => {
                d.set_list_devices(match one_arg()? {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("expected on or off, got {other:?}")),
                });
                ok("")
            }
            "service" => {
                let handle = number(args.first(), "handle")?;
                let (port, service) = parse_service(args.get(1).ok_or("missing PORT=KIND")?)?;
                d.set_service(handle, port, service).map_err(|e| e.to_string())?;
                ok("")
            }
            "stats" => {
                let s = d.service_stats(number(args.first(), "handle")?, number(args.get(1), "port")?);
                ok(format!("connections={} received={} sent={}", s.connections, s.bytes_received, s.bytes_sent))
            }
            "lockdown-log" => {
                let handle = number(args.first(), "handle")?;
                let port = if args.len() > 1 { number(args.get(1), "port")? } else { crate::LOCKDOWND_PORT };
                let lines: Vec<String> =
                    d.lockdownd_requests(handle, port).iter().map(|r| format!("LOCKDOWN {}", one_line(r))).collect();
                let n = lines.len();
                Ok((lines, n.to_string()))
            }
            "devices" => {
                let lines = d.devices().iter().map(describe_device).collect();
                Ok((lines, String::new()))
            }
            "log" => {
                let lines: Vec<String> = d.requests().iter().map(|r| format!("LOG {}", r.summary())).collect();
                let n = lines.len();
                Ok((lines, n.to_string()))
            }
            "log-clear" => {
                d.clear_requests();
                ok("")
            }
            "listeners" => ok(d.listener_count().to_string()),
            "wait-listeners" => {
                let n: usize = number(args.first(), "count")?;
                let ms: u64 = if args.len() > 1 { number(args.get(1), "timeout")? } else { 5000 };
                if d.wait_for_listeners(n, Duration::from_millis(ms)) {
                    ok(d.listener_count().to_string())
                } else {
                    Err(format!("timeout: {} listeners", d.listener_count()))
                }
            }
            "send-raw" => {
                let Misbehaviour::Raw(bytes) = Misbehaviour::parse("raw", Some(&args.concat()))? else {
                    unreachable!("raw parses to Raw")
                };
                ok(d.send_to_listeners(&bytes).to_string())
            }
            "disconnect-listeners" => ok(d.disconnect_listeners().to_string()),
            "help" => Ok((HELP.lines().map(str::to_string).collect(), String::new())),
            "quit" => {
                d.stop();
                ok("")
            }
            other => Err(format!("unknown command {other:?} (try help)")),
        }
    }

    fn attach(&self, mut dev: TestDevice) -> CmdResult {
        dev.services = self.services.clone();
        let handle = self.daemon.attach(dev).map_err(|e| e.to_string())?;
        ok(handle.to_string())
    }

    /// `NAME [ARG] [on KIND] [times N|always]`
    fn misbehave(&self, args: &[&str]) -> CmdResult {
        let mut rest = args;
        let mut kind = RequestKind::Any;
        let mut times = Times::Once;
        loop {
            match rest {
                [head @ .., "on", k] => {
                    kind = RequestKind::parse(k).ok_or_else(|| format!("unknown request kind {k:?}"))?;
                    rest = head;
                }
                [head @ .., "times", "always"] => {
                    times = Times::Always;
                    rest = head;
                }
                [head @ .., "times", n] => {
                    times = Times::N(n.parse().map_err(|_| format!("bad count {n:?}"))?);
                    rest = head;
                }
                _ => break,
            }
        }
        let m = match rest {
            [name] => Misbehaviour::parse(name, None)?,
            [name, arg] => Misbehaviour::parse(name, Some(arg))?,
            _ => return Err("usage: misbehave NAME [ARG] [on KIND] [times N|always]".into()),
        };
        self.daemon.misbehave_on(kind, m, times);
        ok("")
    }
}

fn describe_device(d: &TestDevice) -> String {
    let kind = match d.connection {
        ConnectionType::Usb => format!("USB product_id=0x{:04x} location=0x{:08x}", d.product_id, d.location),
        ConnectionType::Network => {
            let hex: String = d.network_address.iter().map(|b| format!("{b:02x}")).collect();
            format!("Network address={hex}")
        }
    };
    let ports: Vec<String> = d.services.keys().map(u16::to_string).collect();
    format!("DEVICE handle={} udid={} type={kind} ports={}", d.handle, d.udid, ports.join(","))
}

/// `Key=value` pairs of a flat dictionary on one line (nested values shown as `...`).
fn one_line(d: &plist::Dictionary) -> String {
    d.iter()
        .map(|(k, v)| match v {
            plist::Value::String(s) => format!("{k}={s:?}"),
            plist::Value::Integer(i) => format!("{k}={i}"),
            plist::Value::Boolean(b) => format!("{k}={b}"),
            _ => format!("{k}=..."),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
