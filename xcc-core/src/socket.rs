//! Media sockets: UDP, non-blocking, buffers sized and DSCP marked before they carry a packet.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::ports::BindError;

/// What every media socket gets, from [`crate::media::MediaConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// DSCP code point (0-63); written as TOS `dscp << 2` (IPv4) or traffic class (IPv6).
    pub dscp: u8,
    /// SO_RCVBUF and SO_SNDBUF in bytes (the kernel may double or clamp it).
    pub buffer_bytes: usize,
}

/// Binds one media socket at `addr` with `opts` applied, ready for a mio registry.
///
/// `EADDRINUSE` comes back as [`BindError::Busy`] so the pool can skip the pair.
pub fn bind_media_socket(
    addr: SocketAddr,
    opts: SocketOptions,
) -> Result<mio::net::UdpSocket, BindError> {
    let fail = |e| BindError::from_io(addr, e);
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    let tos = u32::from(opts.dscp) << 2;
    if addr.is_ipv6() {
        // Media on a v6 address is v6 only: a v4 peer reaches the v4 bind address instead.
        socket.set_only_v6(true).map_err(fail)?;
        socket.set_tclass_v6(tos).map_err(fail)?;
    } else {
        socket.set_tos_v4(tos).map_err(fail)?;
    }
    socket
        .set_recv_buffer_size(opts.buffer_bytes)
        .map_err(fail)?;
    socket
        .set_send_buffer_size(opts.buffer_bytes)
        .map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: SocketOptions = SocketOptions {
        dscp: 46,
        buffer_bytes: 128 * 1024,
    };

    fn sock2(s: &mio::net::UdpSocket) -> socket2::SockRef<'_> {
        socket2::SockRef::from(s)
    }

    #[test]
    fn ipv4_socket_carries_dscp_buffers_and_is_nonblocking() {
        let s = bind_media_socket("127.0.0.1:0".parse().unwrap(), OPTS).unwrap();
        let r = sock2(&s);
        assert_eq!(r.tos_v4().unwrap(), 46 << 2);
        // Linux doubles the requested size for bookkeeping; never less than asked.
        assert!(r.recv_buffer_size().unwrap() >= 128 * 1024);
        assert!(r.send_buffer_size().unwrap() >= 128 * 1024);
        let mut buf = [0u8; 16];
        let e = s.recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ipv6_socket_carries_traffic_class() {
        let Ok(s) = bind_media_socket(
            "[::1]:0".parse().unwrap(),
            SocketOptions { dscp: 34, ..OPTS },
        ) else {
            // No IPv6 loopback in this environment: nothing to check.
            return;
        };
        assert_eq!(sock2(&s).tclass_v6().unwrap(), 34 << 2);
        assert!(sock2(&s).only_v6().unwrap());
    }

    #[test]
    fn port_in_use_is_reported_busy() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        assert!(matches!(
            bind_media_socket(addr, OPTS),
            Err(BindError::Busy)
        ));
    }
}
