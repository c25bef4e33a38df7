//! `usbmuxd-testd`: the fake daemon as a program, driven over stdin/stdout by C and shell
//! tests. See `usbmuxd_testd::cli::USAGE` and `usbmuxd_testd::control::HELP`.

use std::process::ExitCode;
use usbmux_sim::stdio::serve_lines;
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
    let mut controller = Controller::new(&daemon, options.services);
    serve_lines(std::io::stdin().lock(), std::io::stdout(), &daemon.usbmuxd_socket_address(), |line| {
        let response = controller.handle(line);
        (response.lines, response.quit)
    });
    daemon.stop();
    ExitCode::SUCCESS
}
