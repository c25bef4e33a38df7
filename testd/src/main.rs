//! `usbmuxd-testd`: the fake daemon as a program, driven over stdin/stdout by C and shell
//! tests. See `usbmuxd_testd::cli::USAGE` and `usbmuxd_testd::control::HELP`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use usbmuxd_testd::cli::{self, Parsed};
use usbmuxd_testd::control::Controller;
use usbmuxd_testd::TestDaemon;

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("usbmuxd-testd: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let daemon = match TestDaemon::start(options.config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("usbmuxd-testd: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let say = |lines: &[String]| {
        let mut out = stdout.lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    };
    say(&[format!("READY {}", daemon.usbmuxd_socket_address())]);

    let mut controller = Controller::new(&daemon, options.services);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let response = controller.handle(&line);
        say(&response.lines);
        if response.quit {
            break;
        }
    }
    daemon.stop();
    ExitCode::SUCCESS
}
