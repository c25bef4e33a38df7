//! The stdin/stdout driver of the test programs `usbmux-simd` and `usbmuxd-testd`: `READY
//! <what>` once serving, then one command a line, each answered with the lines its
//! handler returns, until the handler says quit or the input ends.

use std::io::{BufRead, Write};

/// Writes `READY {ready}`, then feeds each line of `input` to `handle` and writes the
/// lines it returns (each reply in one write, flushed); stops when `handle` returns
/// `true` (quit) or at the end of `input` or a read error. Write errors are ignored.
pub fn serve_lines(
    input: impl BufRead,
    mut output: impl Write,
    ready: &str,
    mut handle: impl FnMut(&str) -> (Vec<String>, bool),
) {
    let mut say = |lines: &[String]| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let _ = output.write_all(text.as_bytes());
        let _ = output.flush();
    };
    say(&[format!("READY {ready}")]);
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (lines, quit) = handle(&line);
        say(&lines);
        if quit {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_then_replies_until_quit() {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        serve_lines(&b"a\n\nquit\nnever\n"[..], &mut out, "/tmp/x", |line| {
            seen.push(line.to_string());
            match line {
                "" => (Vec::new(), false),
                "quit" => (vec!["OK".into()], true),
                _ => (vec![format!("data {line}"), "OK".into()], false),
            }
        });
        assert_eq!(seen, ["a", "", "quit"]);
        assert_eq!(String::from_utf8(out).unwrap(), "READY /tmp/x\ndata a\nOK\nOK\n");
    }

    #[test]
    fn stops_at_end_of_input() {
        let mut out = Vec::new();
        serve_lines(&b"x"[..], &mut out, "UNIX:/s", |_| (vec!["OK".into()], false));
        assert_eq!(String::from_utf8(out).unwrap(), "READY UNIX:/s\nOK\n");
    }
}
