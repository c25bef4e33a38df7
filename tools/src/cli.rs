//! The command lines of iproxy and inetcat (those of libusbmuxd 2.1.1): options, usage
//! texts, messages and exit codes. Parsing is pure: it returns what to run, or what to
//! print and the exit status.

use crate::getopt::{Getopt, Item, LongOption};
use crate::ports::{atoi, parse_pairs, PortPair};
use crate::sys::basename;
use usbmuxd::LookupOptions;

/// Most LOCAL:DEVICE pairs one iproxy accepts (as upstream).
pub const MAX_PAIRS: usize = 16;

/// Exit status of usage errors (bad option, missing operand).
pub const EXIT_USAGE: i32 = 2;
/// iproxy: invalid port specification (2.1.1: `EINVAL`).
pub const EXIT_BAD_PORT: i32 = 22;
/// inetcat: the port evaluates to 0 (all versions: `-EINVAL & 255`).
pub const EXIT_BAD_DEVICE_PORT: i32 = 234;

const OPTION_LINES_COMMON: [(&str, &str); 3] = [
    ("-u, --udid UDID", "use only the device with this UDID"),
    ("-n, --network", "use network (Wi-Fi) devices; with -l too, USB and network"),
    ("-l, --local", "use USB devices (the default when neither -n nor -l is given)"),
];
const OPTION_SOURCE: (&str, &str) = ("-s, --source ADDR", "listen on ADDR only (default: 127.0.0.1 and ::1)");
const OPTION_LINES_END: [(&str, &str); 3] = [
    ("-h, --help", "print this help and exit"),
    ("-d, --debug", "print debug output on stderr (repeat for more)"),
    ("-v, --version", "print the version and exit"),
];

fn option_lines(with_source: bool) -> String {
    let mut lines: Vec<(&str, &str)> = OPTION_LINES_COMMON.to_vec();
    if with_source {
        lines.push(OPTION_SOURCE);
    }
    lines.extend(OPTION_LINES_END);
    lines.iter().map(|(o, d)| format!("  {o:<19}{d}\n")).collect()
}

/// iproxy's usage text (`-h` prints it on stdout, argument errors on stderr).
pub fn iproxy_usage(prog: &str) -> String {
    format!(
        "Usage: {} [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]\n\
         \n\
         Forward connections to local TCP ports to TCP ports on an iOS device.\n\
         \n\
         OPTIONS:\n\
         {}\
         \n\
         The legacy form '{} LOCAL_PORT DEVICE_PORT' (exactly two ports) is accepted too.\n\
         The daemon is reached at $USBMUXD_SOCKET_ADDRESS (default /var/run/usbmuxd).\n",
        basename(prog),
        option_lines(true),
        basename(prog)
    )
}

/// inetcat's usage text.
pub fn inetcat_usage(prog: &str) -> String {
    format!(
        "Usage: {} [OPTIONS] DEVICE_PORT\n\
         \n\
         Connect stdin and stdout to a TCP port on an iOS device.\n\
         \n\
         OPTIONS:\n\
         {}\
         \n\
         The daemon is reached at $USBMUXD_SOCKET_ADDRESS (default /var/run/usbmuxd).\n",
        basename(prog),
        option_lines(false)
    )
}

/// The long options of both programs, in `option_lines` order; `--source` is iproxy's only.
const LONG_OPTIONS: [LongOption; 7] = [
    LongOption { name: "udid", has_arg: true, short: 'u' },
    LongOption { name: "network", has_arg: false, short: 'n' },
    LongOption { name: "local", has_arg: false, short: 'l' },
    LongOption { name: "source", has_arg: true, short: 's' },
    LongOption { name: "help", has_arg: false, short: 'h' },
    LongOption { name: "debug", has_arg: false, short: 'd' },
    LongOption { name: "version", has_arg: false, short: 'v' },
];

/// The long options of iproxy (`with_source`) or of inetcat.
pub(crate) fn long_options(with_source: bool) -> Vec<LongOption> {
    LONG_OPTIONS.into_iter().filter(|o| with_source || o.short != 's').collect()
}

/// What to do after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Run(T),
    /// Print and exit without running.
    Exit {
        stdout: String,
        stderr: String,
        code: i32,
    },
}

fn exit_out<T>(stdout: String) -> Outcome<T> {
    Outcome::Exit { stdout, stderr: String::new(), code: 0 }
}

fn exit_err<T>(stderr: String, code: i32) -> Outcome<T> {
    Outcome::Exit { stdout: String::new(), stderr, code }
}

/// iproxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IproxyConfig {
    pub pairs: Vec<PortPair>,
    pub udid: Option<String>,
    pub lookup: LookupOptions,
    /// `-s`: the address to listen on (default: loopback, IPv4 and IPv6).
    pub source: Option<String>,
    /// Library debug level (number of `-d`).
    pub debug: i32,
}

/// inetcat's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetcatConfig {
    pub port: u16,
    pub udid: Option<String>,
    pub lookup: LookupOptions,
    pub debug: i32,
}

/// No -n/-l: USB only; -n: network only; -l: USB only; both: both.
fn lookup_options(network: bool, local: bool) -> LookupOptions {
    if !network && !local {
        return LookupOptions::USB;
    }
    LookupOptions { usb: local, network, prefer_network: false }
}

struct Common {
    udid: Option<String>,
    network: bool,
    local: bool,
    source: Option<String>,
    debug: i32,
}

/// Runs the options in order (so `-h`/`-v` win over anything after them, and errors
/// before them win over them). `Err` is the outcome to exit with.
fn common_options<T>(
    argv: &[String],
    shorts: &str,
    longs: &[LongOption],
    name: &str,
    usage: &dyn Fn(&str) -> String,
) -> Result<(Common, Vec<String>), Outcome<T>> {
    let prog = argv.first().map(String::as_str).unwrap_or(name);
    let mut g = Getopt::new(prog, argv.iter().skip(1).cloned().collect(), shorts, longs);
    let mut c = Common { udid: None, network: false, local: false, source: None, debug: 0 };
    let usage_error = |msg: String| exit_err(format!("{msg}\n{}", usage(prog)), EXIT_USAGE);
    for item in g.by_ref() {
        match item {
            Item::Opt('u', Some(v)) => {
                if v.is_empty() {
                    return Err(usage_error("ERROR: UDID must not be empty!".into()));
                }
                c.udid = Some(v);
            }
            Item::Opt('s', Some(v)) => {
                if v.is_empty() {
                    return Err(usage_error("ERROR: source address must not be empty!".into()));
                }
                c.source = Some(v);
            }
            Item::Opt('n', _) => c.network = true,
            Item::Opt('l', _) => c.local = true,
            Item::Opt('d', _) => c.debug += 1,
            Item::Opt('h', _) => return Err(exit_out(usage(prog))),
            Item::Opt('v', _) => return Err(exit_out(format!("{name} {}\n", usbmuxd::VERSION))),
            Item::Opt(other, _) => unreachable!("option -{other} is not in the option string"),
            Item::Error(msg) => return Err(usage_error(msg)),
        }
    }
    Ok((c, g.operands().to_vec()))
}

/// Parses iproxy's command line (`argv[0]` included).
pub fn parse_iproxy(argv: &[String]) -> Outcome<IproxyConfig> {
    let usage = |p: &str| iproxy_usage(p);
    let (c, operands) = match common_options(argv, "dhu:lns:v", &long_options(true), "iproxy", &usage) {
        Ok(x) => x,
        Err(outcome) => return outcome,
    };
    let prog = argv.first().map(String::as_str).unwrap_or("iproxy");
    if operands.is_empty() {
        return exit_err(
            format!("ERROR: Not enough parameters. Need at least one pair of ports.\n{}", iproxy_usage(prog)),
            EXIT_USAGE,
        );
    }
    if operands.len() > MAX_PAIRS {
        return exit_err(format!("ERROR: Too many LOCAL:DEVICE port pairs. Maximum is {MAX_PAIRS}.\n"), 1);
    }
    let pairs = match parse_pairs(&operands) {
        Ok(p) => p,
        Err(e) => return exit_err(format!("{e}\n"), EXIT_BAD_PORT),
    };
    Outcome::Run(IproxyConfig {
        pairs,
        udid: c.udid,
        lookup: lookup_options(c.network, c.local),
        source: c.source,
        debug: c.debug,
    })
}

/// Parses inetcat's command line (`argv[0]` included).
pub fn parse_inetcat(argv: &[String]) -> Outcome<InetcatConfig> {
    let usage = |p: &str| inetcat_usage(p);
    let (c, operands) = match common_options(argv, "dhu:lnv", &long_options(false), "inetcat", &usage) {
        Ok(x) => x,
        Err(outcome) => return outcome,
    };
    let prog = argv.first().map(String::as_str).unwrap_or("inetcat");
    let Some(first) = operands.first() else {
        return exit_err(inetcat_usage(prog), EXIT_USAGE);
    };
    // atoi; the check is on that int, the 16-bit truncation happens later (usbmuxd_connect
    // takes an `unsigned short`), so 65536 passes and means port 0, as upstream.
    let value = atoi(first);
    if value == 0 {
        return exit_err("Invalid device_port specified!\n".into(), EXIT_BAD_DEVICE_PORT);
    }
    let port = value as u16;
    Outcome::Run(InetcatConfig { port, udid: c.udid, lookup: lookup_options(c.network, c.local), debug: c.debug })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("/usr/bin/iproxy").chain(args.iter().copied()).map(str::to_string).collect()
    }

    fn iproxy(args: &[&str]) -> Outcome<IproxyConfig> {
        parse_iproxy(&argv(args))
    }

    fn exit(o: Outcome<IproxyConfig>) -> (String, String, i32) {
        match o {
            Outcome::Exit { stdout, stderr, code } => (stdout, stderr, code),
            Outcome::Run(c) => panic!("runs: {c:?}"),
        }
    }

    fn run(o: Outcome<IproxyConfig>) -> IproxyConfig {
        match o {
            Outcome::Run(c) => c,
            Outcome::Exit { stderr, .. } => panic!("exits: {stderr}"),
        }
    }

    #[test]
    fn usage_layout() {
        let u = iproxy_usage("/usr/bin/iproxy");
        let lines: Vec<&str> = u.lines().collect();
        assert_eq!(lines[0], "Usage: iproxy [OPTIONS] LOCAL_PORT:DEVICE_PORT [LOCAL_PORT2:DEVICE_PORT2 ...]");
        assert_eq!(lines[1], "");
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "OPTIONS:");
        let opts: Vec<&str> = lines[5..12].iter().map(|l| &l[2..4]).collect();
        assert_eq!(opts, ["-u", "-n", "-l", "-s", "-h", "-d", "-v"]);
        for l in &lines[5..12] {
            assert_eq!(&l[19..21], "  ", "description starts after 21 characters: {l:?}");
            assert_ne!(&l[21..22], " ", "{l:?}");
        }
        let i = inetcat_usage("inetcat");
        assert!(i.starts_with("Usage: inetcat [OPTIONS] DEVICE_PORT\n\n"));
        assert!(!i.contains("--source"));
    }

    #[test]
    fn options_in_order() {
        let (out, err, code) = exit(iproxy(&["-h", "-x"]));
        assert_eq!((err.as_str(), code), ("", 0));
        assert!(out.starts_with("Usage: iproxy "));
        let (out, err, code) = exit(iproxy(&["-x", "-h"]));
        assert_eq!((out.as_str(), code), ("", 2));
        assert!(err.starts_with("/usr/bin/iproxy: invalid option -- 'x'\nUsage: iproxy "));
        assert_eq!(exit(iproxy(&["--version"])), (format!("iproxy {}\n", usbmuxd::VERSION), String::new(), 0));
        assert_eq!(exit(iproxy(&["-u", "", "-v"])).2, 2);
        let (_, err, _) = exit(iproxy(&["-s", "", "1:2"]));
        assert!(err.starts_with("ERROR: source address must not be empty!\nUsage:"));
        let (_, err, _) = exit(iproxy(&["--udid=", "1:2"]));
        assert!(err.starts_with("ERROR: UDID must not be empty!\nUsage:"));
    }

    #[test]
    fn operands_and_their_errors() {
        let (_, err, code) = exit(iproxy(&[]));
        assert_eq!(code, 2);
        assert!(err.starts_with("ERROR: Not enough parameters. Need at least one pair of ports.\nUsage: iproxy"));
        assert_eq!(
            exit(iproxy(&["2222:abc"])),
            (String::new(), "Invalid device port specified in argument '2222:abc'!\n".into(), 22)
        );
        assert_eq!(exit(iproxy(&["0:22"])).2, 22);
        let many: Vec<String> = (1..=17).map(|i| format!("{i}:{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            exit(iproxy(&many)),
            (String::new(), "ERROR: Too many LOCAL:DEVICE port pairs. Maximum is 16.\n".into(), 1)
        );
        assert_eq!(run(iproxy(&many[..16])).pairs.len(), 16);
    }

    #[test]
    fn settings() {
        let c = run(iproxy(&["-d", "2222:22", "-nl", "--udid", "X", "-u", "Y", "-s", "::1", "3:4", "-d"]));
        assert_eq!(c.pairs, vec![PortPair { local: 2222, device: 22 }, PortPair { local: 3, device: 4 }]);
        assert_eq!(c.udid.as_deref(), Some("Y"));
        assert_eq!(c.source.as_deref(), Some("::1"));
        assert_eq!(c.debug, 2);
        assert_eq!(c.lookup, LookupOptions { usb: true, network: true, prefer_network: false });
        assert_eq!(run(iproxy(&["1", "2"])).pairs, vec![PortPair { local: 1, device: 2 }]);
        assert_eq!(run(iproxy(&["1:2"])).lookup, LookupOptions::USB);
        assert_eq!(
            run(iproxy(&["-n", "1:2"])).lookup,
            LookupOptions { usb: false, network: true, prefer_network: false }
        );
        assert_eq!(run(iproxy(&["-l", "1:2"])).lookup, LookupOptions::USB);
        assert_eq!(run(iproxy(&["--", "1:2"])).pairs.len(), 1);
    }

    #[test]
    fn inetcat_command_line() {
        let p = |args: &[&str]| {
            parse_inetcat(
                &std::iter::once("inetcat").chain(args.iter().copied()).map(str::to_string).collect::<Vec<_>>(),
            )
        };
        let port = |args: &[&str]| match p(args) {
            Outcome::Run(c) => c.port,
            Outcome::Exit { code, .. } => panic!("exit {code}"),
        };
        assert_eq!(port(&["22abc"]), 22);
        assert_eq!(port(&["70000"]), 4464);
        assert_eq!(port(&["--", "-5"]), 65531);
        assert_eq!(port(&["22", "ignored"]), 22);
        assert_eq!(port(&["-u", "X", "-n", "1234"]), 1234);
        assert_eq!(port(&["65536"]), 0, "checked before the truncation");
        for bad in [&["abc"][..], &["0"], &["--", "-0"]] {
            assert_eq!(
                p(bad),
                Outcome::Exit { stdout: String::new(), stderr: "Invalid device_port specified!\n".into(), code: 234 }
            );
        }
        match p(&[]) {
            Outcome::Exit { stdout, stderr, code } => {
                assert_eq!((stdout.as_str(), code), ("", 2));
                assert!(stderr.starts_with("Usage: inetcat [OPTIONS] DEVICE_PORT"));
            }
            other => panic!("{other:?}"),
        }
        match p(&["-s", "x", "22"]) {
            Outcome::Exit { stderr, code, .. } => {
                assert_eq!(code, 2);
                assert!(stderr.starts_with("inetcat: invalid option -- 's'\nUsage: inetcat"));
            }
            other => panic!("{other:?}"),
        }
    }
}
