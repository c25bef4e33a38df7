//! Command line options the way GNU `getopt_long` reads them, with its error messages:
//! options may come before, between or after the operands (unless `POSIXLY_CORRECT` is
//! set), `--` ends the options, short options cluster (`-nd`, `-uUDID`), long options
//! may be abbreviated to any unambiguous prefix and take their argument as `--opt=ARG`
//! or as the next word.

/// A long option: its name, whether it takes an argument, and the short option it
/// stands for.
#[derive(Debug, Clone, Copy)]
pub struct LongOption {
    pub name: &'static str,
    pub has_arg: bool,
    pub short: char,
}

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An option (as its short letter) and its argument, if it takes one.
    Opt(char, Option<String>),
    /// A usage error, with getopt's message (`prog: invalid option -- 'x'`).
    Error(String),
}

/// Iterates over the options of `args` (without the program name); the operands are
/// collected and available from [`Getopt::operands`] once the iteration has ended.
pub struct Getopt<'a> {
    prog: String,
    args: Vec<String>,
    shorts: &'a str,
    longs: &'a [LongOption],
    next: usize,
    /// Inside a cluster of short options: (index of the word, byte offset).
    cluster: Option<(usize, usize)>,
    operands: Vec<String>,
    posix: bool,
    done: bool,
}

impl<'a> Getopt<'a> {
    /// `prog` is `argv[0]` as given (getopt's messages use it unchanged); `shorts` is a
    /// getopt option string such as `"dhu:lns:v"`.
    pub fn new(prog: &str, args: Vec<String>, shorts: &'a str, longs: &'a [LongOption]) -> Getopt<'a> {
        Getopt {
            prog: prog.to_string(),
            args,
            shorts,
            longs,
            next: 0,
            cluster: None,
            operands: Vec::new(),
            posix: std::env::var_os("POSIXLY_CORRECT").is_some(),
            done: false,
        }
    }

    /// Stops at the first operand, as with `POSIXLY_CORRECT` set.
    pub fn posix(mut self, posix: bool) -> Self {
        self.posix = posix;
        self
    }

    /// The operands, in order (complete once [`Iterator::next`] returned `None`).
    pub fn operands(&self) -> &[String] {
        &self.operands
    }

    fn short_spec(&self, c: char) -> Option<bool> {
        if c == ':' {
            return None;
        }
        let i = self.shorts.find(c)?;
        Some(self.shorts[i + c.len_utf8()..].starts_with(':'))
    }

    fn take_rest(&mut self) {
        self.operands.extend(self.args.drain(self.next..));
        self.next = self.args.len();
        self.done = true;
    }

    fn long(&mut self, body: &str) -> Item {
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let opt = match self.longs.iter().find(|o| o.name == name) {
            Some(o) => *o,
            None => {
                let matches: Vec<&LongOption> = self.longs.iter().filter(|o| o.name.starts_with(name)).collect();
                match matches.as_slice() {
                    [one] => **one,
                    [] => return Item::Error(format!("{}: unrecognized option '--{body}'", self.prog)),
                    many => {
                        let list: String = many.iter().map(|o| format!(" '--{}'", o.name)).collect();
                        return Item::Error(format!(
                            "{}: option '--{name}' is ambiguous; possibilities:{list}",
                            self.prog
                        ));
                    }
                }
            }
        };
        match (opt.has_arg, value) {
            (true, Some(v)) => Item::Opt(opt.short, Some(v)),
            (true, None) if self.next < self.args.len() => {
                self.next += 1;
                Item::Opt(opt.short, Some(self.args[self.next - 1].clone()))
            }
            (true, None) => Item::Error(format!("{}: option '--{}' requires an argument", self.prog, opt.name)),
            (false, Some(_)) => {
                Item::Error(format!("{}: option '--{}' doesn't allow an argument", self.prog, opt.name))
            }
            (false, None) => Item::Opt(opt.short, None),
        }
    }
}

impl Iterator for Getopt<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some((word, off)) = self.cluster {
                let arg = &self.args[word];
                let c = arg[off..].chars().next().expect("cluster offset inside the word");
                let rest = off + c.len_utf8();
                self.cluster = (rest < arg.len()).then_some((word, rest));
                return Some(match self.short_spec(c) {
                    None => Item::Error(format!("{}: invalid option -- '{c}'", self.prog)),
                    Some(false) => Item::Opt(c, None),
                    Some(true) if rest < arg.len() => {
                        self.cluster = None;
                        Item::Opt(c, Some(arg[rest..].to_string()))
                    }
                    Some(true) if self.next < self.args.len() => {
                        self.next += 1;
                        Item::Opt(c, Some(self.args[self.next - 1].clone()))
                    }
                    Some(true) => Item::Error(format!("{}: option requires an argument -- '{c}'", self.prog)),
                });
            }
            if self.done || self.next >= self.args.len() {
                return None;
            }
            let arg = self.args[self.next].clone();
            self.next += 1;
            if arg == "--" {
                self.take_rest();
                return None;
            }
            if let Some(body) = arg.strip_prefix("--") {
                return Some(self.long(body));
            }
            if arg.len() > 1 && arg.starts_with('-') {
                self.cluster = Some((self.next - 1, 1));
                continue;
            }
            self.operands.push(arg);
            if self.posix {
                self.take_rest();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iproxy's long options and `--verbose`, which makes `--ve` ambiguous.
    fn longs() -> Vec<LongOption> {
        let mut longs = crate::cli::long_options(true);
        longs.push(LongOption { name: "verbose", has_arg: false, short: 'V' });
        longs
    }

    fn run(args: &[&str]) -> (Vec<Item>, Vec<String>) {
        let longs = longs();
        let mut g = Getopt::new("prog", args.iter().map(|s| s.to_string()).collect(), "dhu:lns:v", &longs).posix(false);
        let items: Vec<Item> = g.by_ref().collect();
        (items, g.operands().to_vec())
    }

    fn opt(c: char, v: Option<&str>) -> Item {
        Item::Opt(c, v.map(str::to_string))
    }

    #[test]
    fn permutes_clusters_and_arguments() {
        let (items, ops) = run(&["1:2", "-nd", "-uABC", "3:4", "-s", "::1", "-u", "-n"]);
        assert_eq!(
            items,
            vec![opt('n', None), opt('d', None), opt('u', Some("ABC")), opt('s', Some("::1")), opt('u', Some("-n"))]
        );
        assert_eq!(ops, ["1:2", "3:4"]);
    }

    #[test]
    fn long_forms_and_abbreviations() {
        let (items, ops) = run(&["--udid=X", "--udid", "Y", "--ud", "Z", "--net", "--so=a", "--", "-n", "--help"]);
        assert_eq!(
            items,
            vec![opt('u', Some("X")), opt('u', Some("Y")), opt('u', Some("Z")), opt('n', None), opt('s', Some("a"))]
        );
        assert_eq!(ops, ["-n", "--help"]);
        let (items, _) = run(&["--udid="]);
        assert_eq!(items, vec![opt('u', Some(""))]);
        let (_, ops) = run(&["-", "x"]);
        assert_eq!(ops, ["-", "x"]);
    }

    #[test]
    fn messages() {
        let first = |args: &[&str]| run(args).0.into_iter().find(|i| matches!(i, Item::Error(_)));
        let err = |s: &str| Some(Item::Error(s.to_string()));
        assert_eq!(first(&["-x"]), err("prog: invalid option -- 'x'"));
        assert_eq!(first(&["-nx"]), err("prog: invalid option -- 'x'"));
        assert_eq!(first(&["-:"]), err("prog: invalid option -- ':'"));
        assert_eq!(first(&["-u"]), err("prog: option requires an argument -- 'u'"));
        assert_eq!(first(&["--udid"]), err("prog: option '--udid' requires an argument"));
        assert_eq!(first(&["--ud"]), err("prog: option '--udid' requires an argument"));
        assert_eq!(first(&["--bogus"]), err("prog: unrecognized option '--bogus'"));
        assert_eq!(first(&["--bogus=1"]), err("prog: unrecognized option '--bogus=1'"));
        assert_eq!(first(&["--network=1"]), err("prog: option '--network' doesn't allow an argument"));
        assert_eq!(first(&["--ve"]), err("prog: option '--ve' is ambiguous; possibilities: '--version' '--verbose'"));
    }

    #[test]
    fn posix_mode_stops_at_the_first_operand() {
        let mut g =
            Getopt::new("p", ["-n", "1:2", "-d"].iter().map(|s| s.to_string()).collect(), "dn", &[]).posix(true);
        let items: Vec<Item> = g.by_ref().collect();
        assert_eq!(items, vec![opt('n', None)]);
        assert_eq!(g.operands(), ["1:2", "-d"]);
    }
}
