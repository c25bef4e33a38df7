//! The address of a network (Wi-Fi) device, from the `NetworkAddress` bytes the daemon
//! reports (`conn_data`, a Darwin `struct sockaddr`; libusbmuxd API spec §4.5): byte 1
//! is the family (0x02 IPv4, 0x1E Darwin's AF_INET6), the IPv4 address is at bytes 4–7,
//! the IPv6 address at 8–23 and its scope id (host byte order) at 24–27.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Darwin's address family numbers, as found in byte 1.
pub const DARWIN_AF_INET: u8 = 0x02;
pub const DARWIN_AF_INET6: u8 = 0x1e;

/// A decoded network device address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAddress {
    pub ip: IpAddr,
    /// IPv6 scope id as the daemon sent it (0 for IPv4).
    pub scope_id: u32,
}

/// Decodes `conn_data`. The bytes are read as from libusbmuxd's zero-filled 200-byte
/// field, so a short record reads zeros. `Err(family)` for an unsupported family.
pub fn decode(conn_data: &[u8]) -> Result<DeviceAddress, u8> {
    let mut b = [0u8; 28];
    let n = conn_data.len().min(b.len());
    b[..n].copy_from_slice(&conn_data[..n]);
    match b[1] {
        DARWIN_AF_INET => Ok(DeviceAddress { ip: IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), scope_id: 0 }),
        DARWIN_AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            let scope_id = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Ok(DeviceAddress { ip: IpAddr::V6(Ipv6Addr::from(a)), scope_id })
        }
        other => Err(other),
    }
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Local interfaces that have an IPv6 link-local address, as (index, name), from
/// `/proc/net/if_inet6`.
fn link_local_interfaces() -> Vec<(u32, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[0].starts_with("fe8") {
            continue;
        }
        let Ok(index) = u32::from_str_radix(f[1], 16) else { continue };
        if f[5] != "lo" && !found.iter().any(|(i, _)| *i == index) {
            found.push((index, f[5].to_string()));
        }
    }
    found
}

/// The socket addresses to try for `port`, best first. A link-local IPv6 address needs
/// the scope of one of *our* interfaces: the daemon's scope id if such an interface
/// exists here, otherwise each local interface that has a link-local address.
pub fn candidates(addr: &DeviceAddress, port: u16) -> Vec<SocketAddr> {
    match addr.ip {
        IpAddr::V4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        IpAddr::V6(ip) if !is_link_local(&ip) => vec![SocketAddr::V6(SocketAddrV6::new(ip, port, 0, addr.scope_id))],
        IpAddr::V6(ip) => {
            let ifaces = link_local_interfaces();
            let mut scopes: Vec<u32> = Vec::new();
            if ifaces.iter().any(|(i, _)| *i == addr.scope_id) {
                scopes.push(addr.scope_id);
            }
            scopes.extend(ifaces.iter().map(|(i, _)| *i).filter(|i| *i != addr.scope_id));
            if scopes.is_empty() {
                scopes.push(addr.scope_id);
            }
            scopes.into_iter().map(|s| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, s))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_records() {
        let v4 = [16, 2, 0, 0, 192, 168, 1, 20, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&v4), Ok(DeviceAddress { ip: "192.168.1.20".parse().unwrap(), scope_id: 0 }));
        let mut v6 = vec![28, 0x1e, 0, 0, 0, 0, 0, 0];
        v6.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(decode(&v6), Ok(DeviceAddress { ip: "2001:db8::5".parse().unwrap(), scope_id: 7 }));
        assert_eq!(candidates(&decode(&v6).unwrap(), 22), vec!["[2001:db8::5%7]:22".parse::<SocketAddr>().unwrap()]);
        assert_eq!(decode(&[16, 0x0a, 0, 0]), Err(0x0a), "Linux AF_INET6 is not Darwin's");
        assert_eq!(decode(&[]), Err(0));
        assert_eq!(decode(&[16, 2, 0, 0, 10]), Ok(DeviceAddress { ip: "10.0.0.0".parse().unwrap(), scope_id: 0 }));
    }

    #[test]
    fn link_local_gets_a_local_scope() {
        let addr = DeviceAddress { ip: "fe80::1".parse().unwrap(), scope_id: 0xdead };
        let c = candidates(&addr, 5);
        assert!(!c.is_empty());
        for a in c {
            let SocketAddr::V6(a) = a else { panic!() };
            assert_eq!(a.port(), 5);
            let local = link_local_interfaces();
            assert!(local.is_empty() || local.iter().any(|(i, _)| *i == a.scope_id()));
        }
    }
}
