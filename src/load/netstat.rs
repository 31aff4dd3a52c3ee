//! Per-socket receive drops from `/proc/net/udp`: measured evidence of who lost a packet.
//!
//! The kernel counts, per UDP socket, datagrams it dropped because the socket's receive buffer was
//! full (the `drops` column). Summed over the phones' sockets it says the load generator did not
//! keep up; summed over the relay's leg sockets it says the relay did not. Read while the sockets
//! are still open (the counter dies with the socket).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};

/// Receive drops of the IPv4 UDP sockets bound to any of `addrs`, or `None` when
/// `/proc/net/udp` cannot be read or lists none of them (an IPv6 relay, say): unknown is not zero.
///
/// A socket bound to 0.0.0.0 on one of the ports counts too: a relay bound to the wildcard
/// address answers from 127.0.0.1, and no other socket can hold that port on 127.0.0.1 beside it.
pub fn udp_drops(addrs: &HashSet<SocketAddr>) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    drops_in(&text, addrs)
}

/// Sums the `drops` column of the lines whose local address is one of `addrs`; `None` if none is.
fn drops_in(text: &str, addrs: &HashSet<SocketAddr>) -> Option<u64> {
    let ports: HashSet<u16> = addrs.iter().map(SocketAddr::port).collect();
    let mut matched = false;
    let sum = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let local = parse_local(fields.nth(1)?)?;
            // After local_address: rem_address st tx:rx tr:when retrnsmt uid timeout inode ref
            // pointer drops (the 11th field after it).
            let drops: u64 = fields.nth(10)?.parse().ok()?;
            let ours = addrs.contains(&local)
                || (local.ip().is_unspecified() && ports.contains(&local.port()));
            ours.then_some(drops)
        })
        .inspect(|_| matched = true)
        .sum();
    matched.then_some(sum)
}

/// `0100007F:6590` -> 127.0.0.1:26000. The address is the kernel's `__be32` printed as a host
/// integer, so its bytes are in memory order: convert back with the host's byte order.
fn parse_local(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((Ipv4Addr::from(ip.to_ne_bytes()), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_for_our_sockets_only() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: {lo:08X}:6590 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000000000000000 7\n\
             2: {lo:08X}:6591 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000000000000000 5\n\
             3: 00000000:6592 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000000000000000 100\n\
             4: {lo:08X}:6593 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000000000000000 1000\n\
             garbage line\n"
        );
        let ours: HashSet<SocketAddr> = [
            "127.0.0.1:26000",
            "127.0.0.1:26001",
            "127.0.0.1:26002",
            "127.0.0.1:9",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            drops_in(&text, &ours),
            Some(112),
            "wildcard-bound 26002 is ours, 26003 is not"
        );
        let absent = HashSet::from(["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(drops_in(&text, &absent), None, "no socket listed: unknown");
    }

    #[test]
    fn a_full_socket_buffer_shows_as_drops() {
        use std::net::UdpSocket;
        let rx = UdpSocket::bind("127.0.0.1:25990").or_else(|_| UdpSocket::bind("127.0.0.1:0"));
        let rx = rx.unwrap();
        let addr = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours = HashSet::from([addr]);
        assert_eq!(udp_drops(&ours), Some(0));
        // Nobody reads `rx`: enough datagrams overflow any default receive buffer (bounded).
        let payload = [0u8; 1400];
        for _ in 0..20_000 {
            let _ = tx.send_to(&payload, addr);
        }
        assert!(udp_drops(&ours).unwrap() > 0);
    }
}
