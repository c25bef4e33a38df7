//! `--help` and the man pages describe the same command line: the synopsis is the usage
//! line, and the OPTIONS sections list the same options, in the same order, with the
//! same arguments.

use std::process::Command;

/// Roff text without font escapes and with `\-` as `-`.
fn plain(roff: &str) -> String {
    let mut s = roff.replace("\\-", "-");
    for f in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        s = s.replace(f, "");
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first synopsis form and the option headers of a man page.
fn man_page(name: &str) -> (String, Vec<String>, String) {
    let text = std::fs::read_to_string(format!("{}/man/{name}.1", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let section = |title: &str| -> Vec<&str> {
        let start = lines.iter().position(|l| *l == format!(".SH {title}")).unwrap_or_else(|| panic!("no {title}"));
        lines[start + 1..].iter().take_while(|l| !l.starts_with(".SH ")).copied().collect()
    };
    let synopsis: Vec<&str> = section("SYNOPSIS").into_iter().take_while(|l| *l != ".br").collect();
    let synopsis = plain(&synopsis.iter().map(|l| l.trim_start_matches(".B ")).collect::<Vec<_>>().join(" "));
    let options_section = section("OPTIONS");
    let mut options = Vec::new();
    for (i, l) in options_section.iter().enumerate() {
        if *l == ".TP" {
            let head = options_section[i + 1];
            assert!(head.starts_with(".B "), "option header {head:?}");
            options.push(plain(&head[3..]));
        }
    }
    (synopsis, options, plain(&options_section.join(" ")))
}

fn help(program: &str) -> (String, Vec<String>, String) {
    let out = Command::new(program).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let usage = text.lines().next().unwrap().strip_prefix("Usage: ").expect("usage line").to_string();
    let options = text.lines().filter(|l| l.starts_with("  -")).map(|l| l[2..21].trim().to_string()).collect();
    (usage, options, text)
}

#[test]
fn iproxy_help_matches_its_man_page() {
    let (usage, options, text) = help(env!("CARGO_BIN_EXE_iproxy"));
    let (synopsis, man_options, man_text) = man_page("iproxy");
    assert_eq!(usage, synopsis);
    assert_eq!(options, man_options);
    assert_eq!(options.len(), 7);
    // The same default listening addresses in both.
    assert!(text.contains("127.0.0.1 and ::1"));
    assert!(man_text.contains("The default is 127.0.0.1 and ::1"), "{man_text}");
}

#[test]
fn inetcat_help_matches_its_man_page() {
    let (usage, options, _) = help(env!("CARGO_BIN_EXE_inetcat"));
    let (synopsis, man_options, _) = man_page("inetcat");
    assert_eq!(usage, synopsis);
    assert_eq!(options, man_options);
    assert_eq!(options.len(), 6);
}
