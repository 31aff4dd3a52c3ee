//! Choosing the address XCC advertises when the configuration does not name one.

use std::net::{IpAddr, Ipv4Addr};

/// Why an advertised address was chosen, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// Set in the configuration.
    Configured,
    /// `media.bind_address` is a specific address.
    MediaBind,
    /// First non-loopback interface address.
    Interface,
    /// Nothing better found.
    LoopbackFallback,
}

impl std::fmt::Display for AddressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressSource::Configured => "set in the configuration",
            AddressSource::MediaBind => "media.bind_address is a specific address",
            AddressSource::Interface => {
                "first non-loopback interface address (configure nat.* behind NAT)"
            }
            AddressSource::LoopbackFallback => {
                "no non-loopback interface found; peers elsewhere cannot reach it"
            }
        })
    }
}

/// The configured address, else the media bind address if specific, else `interfaces`' first
/// usable address (IPv4 preferred when the bind family allows), else 127.0.0.1.
pub fn choose(
    configured: Option<IpAddr>,
    bind: IpAddr,
    interfaces: &[IpAddr],
) -> (IpAddr, AddressSource) {
    if let Some(addr) = configured {
        return (addr, AddressSource::Configured);
    }
    if !bind.is_unspecified() {
        return (bind, AddressSource::MediaBind);
    }
    let usable = |a: &&IpAddr| !a.is_loopback() && !a.is_unspecified() && !is_link_local(a);
    let family_ok = |a: &&IpAddr| bind.is_ipv6() || a.is_ipv4();
    let pick = interfaces
        .iter()
        .filter(usable)
        .filter(family_ok)
        .find(|a| a.is_ipv4())
        .or_else(|| interfaces.iter().filter(usable).find(family_ok));
    match pick {
        Some(addr) => (*addr, AddressSource::Interface),
        None => (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            AddressSource::LoopbackFallback,
        ),
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Addresses of the interfaces that are up, in kernel order (getifaddrs).
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and has not been freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family field is valid.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(sin6.sin6_addr.s6_addr.into()));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn configured_wins() {
        assert_eq!(
            choose(Some(ip("203.0.113.1")), ip("10.0.0.1"), &[]),
            (ip("203.0.113.1"), AddressSource::Configured)
        );
    }

    #[test]
    fn specific_bind_address_is_next() {
        assert_eq!(
            choose(None, ip("10.0.0.1"), &[ip("192.0.2.1")]),
            (ip("10.0.0.1"), AddressSource::MediaBind)
        );
    }

    #[test]
    fn first_non_loopback_ipv4_interface_then_fallback() {
        let ifs = [
            ip("127.0.0.1"),
            ip("fe80::1"),
            ip("2001:db8::1"),
            ip("169.254.1.1"),
            ip("192.0.2.7"),
        ];
        assert_eq!(
            choose(None, ip("0.0.0.0"), &ifs),
            (ip("192.0.2.7"), AddressSource::Interface)
        );
        assert_eq!(
            choose(None, ip("::"), &ifs[..3]),
            (ip("2001:db8::1"), AddressSource::Interface)
        );
        assert_eq!(
            choose(None, ip("0.0.0.0"), &ifs[..3]),
            (ip("127.0.0.1"), AddressSource::LoopbackFallback)
        );
    }

    #[test]
    fn getifaddrs_lists_loopback() {
        let all = interface_addresses().unwrap();
        assert!(all.iter().any(|a| a.is_loopback()), "{all:?}");
    }
}
