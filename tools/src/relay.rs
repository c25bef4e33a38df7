//! inetcat's relay: stdin → device socket and device socket → stdout with `poll`, no
//! data dropped in either direction. EOF on stdin is passed on as a half-close of the
//! device connection (`shutdown(SHUT_WR)`), and the relay goes on until the device side
//! ends; EOF from the device ends the relay (exit 0).

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{recv, send, shutdown, RecvFlags, SendFlags, Shutdown};
use std::os::fd::{AsFd, BorrowedFd};

const BUFFER: usize = 64 * 1024;

/// Writes all of `data` to `fd`, waiting with `poll` if the descriptor is non-blocking.
/// `false` if the descriptor failed (e.g. a closed pipe).
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(_) => return false,
        }
    }
    true
}

/// Relays between `input`/`output` (stdin/stdout) and `device` until the device side
/// closes. `Err` carries the message for a failure (exit status 1).
pub fn relay(device: BorrowedFd<'_>, input: BorrowedFd<'_>, output: BorrowedFd<'_>) -> Result<(), String> {
    let mut up = vec![0u8; BUFFER];
    let (mut up_start, mut up_end) = (0usize, 0usize);
    let mut down = vec![0u8; BUFFER];
    let mut input_done = false;
    let mut shut = false;
    let mut output_ok = true;
    loop {
        let pending = up_start < up_end;
        let want_input = !input_done && !pending;
        let mut dev_flags = PollFlags::IN;
        if pending {
            dev_flags |= PollFlags::OUT;
        }
        let mut fds = [PollFd::new(&device, dev_flags), PollFd::new(&input, PollFlags::IN)];
        let n = if want_input { 2 } else { 1 };
        match poll(&mut fds[..n], None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("poll: {}", crate::sys::strerror(e.raw_os_error()))),
        }
        let dev_ready = fds[0].revents();
        let in_ready = if want_input { fds[1].revents() } else { PollFlags::empty() };

        if dev_ready.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match recv(device, &mut down[..], RecvFlags::empty()) {
                Ok((0, _)) => return Ok(()),
                Ok((n, _)) => {
                    if output_ok {
                        output_ok = write_all(output, &down[..n]);
                    }
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(e) => return Err(format!("read failed: {}", crate::sys::strerror(e.raw_os_error()))),
            }
        }
        if pending && dev_ready.intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP) {
            match send(device, &up[up_start..up_end], SendFlags::NOSIGNAL) {
                Ok(n) => up_start += n,
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(_) => {
                    // The device side is gone for writing; its EOF ends the relay.
                    up_start = up_end;
                    input_done = true;
                    shut = true;
                }
            }
        }
        if in_ready.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(input, &mut up[..]) {
                Ok(0) => input_done = true,
                Ok(n) => {
                    up_start = 0;
                    up_end = n;
                    // Usually the socket takes it at once.
                    match send(device, &up[..n], SendFlags::NOSIGNAL) {
                        Ok(m) => up_start = m,
                        Err(Errno::AGAIN | Errno::INTR) => {}
                        Err(_) => {
                            up_start = up_end;
                            input_done = true;
                            shut = true;
                        }
                    }
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(e) => return Err(format!("read failed: {}", crate::sys::strerror(e.raw_os_error()))),
            }
        }
        if input_done && up_start >= up_end && !shut {
            let _ = shutdown(device, Shutdown::Write);
            shut = true;
        }
    }
}

/// Relays between stdin/stdout and `device`.
pub fn relay_stdio(device: &impl AsFd) -> Result<(), String> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    relay(device.as_fd(), stdin.as_fd(), stdout.as_fd())
}
