//! Port arguments, read exactly as the C tools read them (`strtol` base 10 or `atoi`,
//! then truncated to 16 bits), so that every command line keeps its meaning.

/// `strtol(s, &end, 10)` on a 64-bit `long`: leading white space, an optional sign,
/// decimal digits; saturates on overflow. Returns the value and the number of bytes
/// consumed (0 when there are no digits, as `end == s` in C).
pub fn strtol(s: &str) -> (i64, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits_start = i;
    let mut value: i64 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        let d = i64::from(b[i] - b'0');
        match value.checked_mul(10).and_then(|v| if negative { v.checked_sub(d) } else { v.checked_add(d) }) {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == digits_start {
        return (0, 0);
    }
    if overflow {
        value = if negative { i64::MIN } else { i64::MAX };
    }
    (value, i)
}

/// `atoi(s)` as glibc computes it (`(int) strtol(s, NULL, 10)`).
pub fn atoi(s: &str) -> i32 {
    strtol(s).0 as i32
}

/// One LOCAL:DEVICE pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    pub local: u16,
    pub device: u16,
}

/// Why a port argument was rejected; the message names the argument at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    Listen(String),
    Device(String),
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Listen(a) => write!(f, "Invalid listen port specified in argument '{a}'!"),
            PortError::Device(a) => write!(f, "Invalid device port specified in argument '{a}'!"),
        }
    }
}

/// The 16-bit truncation of a `strtol` result, as a `uint16_t` assignment does it.
fn truncate(v: i64) -> u16 {
    v as u16
}

/// Parses iproxy's operands: exactly two operands without `:` are the legacy form
/// `LOCAL DEVICE`; otherwise every operand is `LOCAL:DEVICE`. Ports are `strtol` values
/// truncated to 16 bits (so 65537 is 1) that must not be 0.
pub fn parse_pairs(operands: &[String]) -> Result<Vec<PortPair>, PortError> {
    if operands.len() == 2 && !operands.iter().any(|a| a.contains(':')) {
        let whole = |a: &String| {
            let (v, n) = strtol(a);
            let port = truncate(v);
            (port != 0 && n == a.len()).then_some(port)
        };
        let local = whole(&operands[0]).ok_or_else(|| PortError::Listen(operands[0].clone()))?;
        let device = whole(&operands[1]).ok_or_else(|| PortError::Device(operands[1].clone()))?;
        return Ok(vec![PortPair { local, device }]);
    }
    operands
        .iter()
        .map(|arg| {
            let (v, n) = strtol(arg);
            let local = truncate(v);
            if local == 0 || arg.as_bytes().get(n) != Some(&b':') {
                return Err(PortError::Listen(arg.clone()));
            }
            let rest = &arg[n + 1..];
            let (v, m) = strtol(rest);
            let device = truncate(v);
            if device == 0 || m != rest.len() {
                return Err(PortError::Device(arg.clone()));
            }
            Ok(PortPair { local, device })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(args: &[&str]) -> Result<Vec<(u16, u16)>, PortError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_pairs(&v).map(|p| p.iter().map(|p| (p.local, p.device)).collect())
    }

    #[test]
    fn strtol_like_c() {
        assert_eq!(strtol("22"), (22, 2));
        assert_eq!(strtol("  +7x"), (7, 4));
        assert_eq!(strtol("-5"), (-5, 2));
        assert_eq!(strtol("abc"), (0, 0));
        assert_eq!(strtol(" "), (0, 0));
        assert_eq!(strtol("-"), (0, 0));
        assert_eq!(strtol("99999999999999999999"), (i64::MAX, 20));
        assert_eq!(strtol("-99999999999999999999"), (i64::MIN, 21));
        assert_eq!(atoi("22abc"), 22);
        assert_eq!(atoi("70000") as u16, 4464);
        assert_eq!(atoi("-5") as u16, 65531);
        assert_eq!(atoi("abc"), 0);
    }

    #[test]
    fn pair_forms() {
        assert_eq!(pairs(&["2222:22"]), Ok(vec![(2222, 22)]));
        assert_eq!(pairs(&["2222:22", "3333:44"]), Ok(vec![(2222, 22), (3333, 44)]));
        assert_eq!(pairs(&["2222", "22"]), Ok(vec![(2222, 22)]));
        assert_eq!(pairs(&["65537:22"]), Ok(vec![(1, 22)]), "truncated to 16 bits as upstream");
        assert_eq!(pairs(&["-1:22"]), Ok(vec![(65535, 22)]));
        assert_eq!(pairs(&["2222: 22"]), Ok(vec![(2222, 22)]), "strtol skips white space");
        assert_eq!(pairs(&["99999999999999999999:22"]), Ok(vec![(65535, 22)]), "saturated, then truncated");
    }

    #[test]
    fn pair_errors_name_the_argument_at_fault() {
        let listen = |a: &str| Err(PortError::Listen(a.to_string()));
        let device = |a: &str| Err(PortError::Device(a.to_string()));
        assert_eq!(pairs(&["2222"]), listen("2222"));
        assert_eq!(pairs(&["0:22"]), listen("0:22"));
        assert_eq!(pairs(&["65536:22"]), listen("65536:22"));
        assert_eq!(pairs(&[":22"]), listen(":22"));
        assert_eq!(pairs(&["2222x:22"]), listen("2222x:22"));
        assert_eq!(pairs(&["2222:abc"]), device("2222:abc"));
        assert_eq!(pairs(&["2222:"]), device("2222:"));
        assert_eq!(pairs(&["2222:22x"]), device("2222:22x"));
        assert_eq!(pairs(&["2222:0"]), device("2222:0"));
        assert_eq!(pairs(&["1:2", "3:x"]), device("3:x"));
        assert_eq!(pairs(&["x", "22"]), listen("x"));
        assert_eq!(pairs(&["2222", "22x"]), device("22x"));
        assert_eq!(pairs(&["2222", "65536"]), device("65536"));
        assert_eq!(pairs(&["1", "2", "3"]), listen("1"), "three operands are pairs, not the legacy form");
        assert_eq!(
            PortError::Device("2222:abc".into()).to_string(),
            "Invalid device port specified in argument '2222:abc'!"
        );
    }
}
