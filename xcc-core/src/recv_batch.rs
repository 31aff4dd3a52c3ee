//! Reading several datagrams from one UDP socket in one system call (`recvmmsg`).
//!
//! Why: the load generator's receiver serves thousands of sockets and often finds several
//! datagrams queued on one, each with a kernel receive stamp to read from control messages.
//! `recvmmsg` with `MSG_DONTWAIT` returns what is queued, up to the batch size, and a short count
//! means the queue was empty when it returned, which re-arms edge-triggered readiness without
//! asking again. Buffers are allocated once; nothing here allocates per call.
//!
//! xccd's media worker reads with [`RecvBatch::recv_one`] (`recvfrom`) instead: it finds one
//! datagram per wake-up, and for one datagram `recvmmsg` costs more kernel time than a
//! `recvfrom` plus the `EAGAIN` that follows it (measured, see the worker).
//!
//! Each datagram also gets room for control messages, so a socket that asked for kernel receive
//! timestamps ([`enable_rx_timestamps`]) has them read in the same call (the load generator's
//! phones do; xccd's media sockets do not ask, and the kernel then writes none).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams one [`RecvBatch::recv`] reads at most.
pub const BATCH: usize = 8;

/// Control-message room per datagram: one `SCM_TIMESTAMPNS` takes `CMSG_SPACE(16)` = 32 bytes
/// on 64-bit Linux; the rest is headroom, so an unexpected extra message does not truncate it.
const CMSG_ROOM: usize = 64;

/// One datagram's control-message buffer, aligned for `cmsghdr` as `CMSG_FIRSTHDR` assumes
/// (a plain `[u8; N]` may sit at any address).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_ROOM]);

const _: () = assert!(std::mem::align_of::<libc::cmsghdr>() <= std::mem::align_of::<CmsgBuf>());
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const _: () = assert!(
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::timespec>() as libc::c_uint) } as usize
        <= CMSG_ROOM
);

/// Receive buffers with their `recvmmsg` headers, reused for every call.
///
/// Each buffer is `buf_len` bytes; the kernel is offered only the first `max_datagram` of them, so
/// a datagram can be transformed in place with room to grow behind it (an SRTP tag).
pub struct RecvBatch {
    /// `BATCH` buffers of `buf_len` bytes, back to back.
    bufs: Box<[u8]>,
    buf_len: usize,
    max_datagram: usize,
    addrs: [libc::sockaddr_storage; BATCH],
    iovs: [libc::iovec; BATCH],
    /// Where the kernel writes each datagram's control messages (a receive timestamp).
    cmsgs: [CmsgBuf; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
}

impl RecvBatch {
    /// Buffers of `buf_len` bytes of which the first `max_datagram` receive (`max_datagram <=
    /// buf_len`, clamped).
    pub fn new(max_datagram: usize, buf_len: usize) -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C data for which all-zero bytes
        // are valid (null pointers, zero lengths); `recv` points them at the buffers before
        // every use.
        let (addrs, iovs, hdrs) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        Self {
            bufs: vec![0u8; buf_len * BATCH].into_boxed_slice(),
            buf_len,
            max_datagram: max_datagram.min(buf_len),
            addrs,
            iovs,
            cmsgs: [CmsgBuf([0; CMSG_ROOM]); BATCH],
            hdrs,
        }
    }

    /// Reads up to [`BATCH`] datagrams from `fd` without blocking. `Ok(n)` with `n < BATCH`
    /// means the socket's queue was empty when the call returned; `WouldBlock` means it was
    /// empty to begin with.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * buf_len is inside `bufs` (BATCH buffers of buf_len bytes).
                iov_base: unsafe { base.add(i * self.buf_len) }.cast(),
                iov_len: self.max_datagram,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            // The kernel shrinks msg_controllen to what it wrote: reset it every call.
            hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = CMSG_ROOM as _;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at a live buffer of at least max_datagram bytes, a
        // sockaddr_storage and a control buffer of the sizes given, all owned by `self` and not
        // moved during the call; vlen = BATCH is the arrays' length.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Reads one datagram from `fd` into buffer 0 without blocking (`recvfrom`), then
    /// [`RecvBatch::meta`]`(0)` and [`RecvBatch::buf_mut`]`(0)` describe it. No control
    /// messages are read.
    pub fn recv_one(&mut self, fd: RawFd) -> io::Result<()> {
        let mut namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: buffer 0 has at least max_datagram bytes and addrs[0] is a sockaddr_storage
        // whose size is passed in namelen; both are owned by `self` for the call.
        let n = unsafe {
            libc::recvfrom(
                fd,
                self.bufs.as_mut_ptr().cast(),
                self.max_datagram,
                libc::MSG_DONTWAIT,
                (&raw mut self.addrs[0]).cast(),
                &mut namelen,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.hdrs[0].msg_len = n as libc::c_uint;
        self.hdrs[0].msg_hdr.msg_namelen = namelen;
        self.hdrs[0].msg_hdr.msg_controllen = 0;
        Ok(())
    }

    /// Length and source of datagram `i` of the last [`RecvBatch::recv`], or of datagram 0 after
    /// [`RecvBatch::recv_one`] (`None` for a source that is neither IPv4 nor IPv6). A datagram
    /// longer than `max_datagram` was cut to it.
    pub fn meta(&self, i: usize) -> (usize, Option<SocketAddr>) {
        let len = (self.hdrs[i].msg_len as usize).min(self.max_datagram);
        (
            len,
            sockaddr_to_std(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen),
        )
    }

    /// Buffer `i` (all `buf_len` bytes): datagram `i` of the last receive is at its start.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.buf_len..(i + 1) * self.buf_len]
    }

    /// The kernel's receive timestamp of datagram `i` of the last [`RecvBatch::recv`]
    /// (CLOCK_REALTIME, ns since the Unix epoch); `None` when the socket does not ask for one
    /// ([`enable_rx_timestamps`]) or the control messages were truncated (`MSG_CTRUNC`).
    pub fn kernel_time_ns(&self, i: usize) -> Option<u64> {
        let hdr = &self.hdrs.get(i)?.msg_hdr;
        if hdr.msg_flags & libc::MSG_CTRUNC != 0 || hdr.msg_controllen > CMSG_ROOM {
            return None;
        }
        let want = std::mem::size_of::<libc::timespec>();
        // SAFETY: `hdr` describes `self.cmsgs[i]`, and msg_controllen (checked above) is at most
        // its size; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that lie inside that length,
        // and a header's data is read only when its cmsg_len says it holds a timespec. The read
        // is unaligned because CMSG_DATA promises no alignment for the payload type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            // Bounded: each step advances by at least one aligned cmsghdr within CMSG_ROOM.
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET
                    && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                    && (*c).cmsg_len as usize >= libc::CMSG_LEN(want as libc::c_uint) as usize
                {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    return timespec_ns(&ts);
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }
}

/// A non-negative timespec as ns; `None` for negative or malformed values.
pub fn timespec_ns(ts: &libc::timespec) -> Option<u64> {
    let sec = u64::try_from(ts.tv_sec).ok()?;
    let nsec = u64::try_from(ts.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    sec.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// Asks the kernel to stamp each datagram queued on `socket` with its software receive time,
/// read back with [`RecvBatch::kernel_time_ns`]. The load generator's latency then ends when the
/// datagram reached the phone, not when a receiver thread that waited for a CPU read it.
///
/// `SO_TIMESTAMPNS` rather than `SO_TIMESTAMPING` with `SOF_TIMESTAMPING_RX_SOFTWARE |
/// SOF_TIMESTAMPING_SOFTWARE`: both deliver the same software stamp (`skb->tstamp`, CLOCK_REALTIME,
/// taken when loopback hands the datagram to the receive path); `SO_TIMESTAMPNS` needs no flags and
/// yields one `timespec`, where `SO_TIMESTAMPING`'s three-slot `scm_timestamping` exists for
/// hardware stamps that loopback does not have.
pub fn enable_rx_timestamps(socket: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a c_int that lives across the call, its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An IPv4/IPv6 address written by the kernel, or `None` for anything else.
pub fn sockaddr_to_std(sa: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(sa.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say the storage holds a sockaddr_in, which is
            // smaller than and alignment-compatible with sockaddr_storage.
            let a = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                a.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind(bind).unwrap();
        let tx = UdpSocket::bind(bind).unwrap();
        (rx, tx)
    }

    #[test]
    fn a_short_batch_returns_every_queued_datagram_with_its_source() {
        let (rx, tx) = pair("127.0.0.1:0");
        let mut batch = RecvBatch::new(64, 80);
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "empty socket"
        );
        for i in 0..3u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        // Loopback delivers synchronously: all three are queued when send_to returns.
        let n = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 3);
        for i in 0..n {
            let (len, from) = batch.meta(i);
            assert_eq!((len, from), (10, Some(tx.local_addr().unwrap())));
            assert_eq!(batch.buf_mut(i)[..len], [i as u8; 10]);
            assert_eq!(batch.buf_mut(i).len(), 80, "room behind the datagram");
        }
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_full_batch_leaves_the_rest_queued_and_long_datagrams_are_cut() {
        let (rx, tx) = pair("127.0.0.1:0");
        let mut batch = RecvBatch::new(16, 32);
        for i in 0..BATCH + 2 {
            tx.send_to(&[i as u8; 20], rx.local_addr().unwrap())
                .unwrap();
        }
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), BATCH);
        assert_eq!(batch.meta(0).0, 16, "cut to max_datagram");
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 2);
        assert_eq!(batch.buf_mut(1)[0], (BATCH + 1) as u8, "in order");
    }

    #[test]
    fn recv_one_reads_one_datagram_with_its_source_and_cuts_long_ones() {
        let (rx, tx) = pair("127.0.0.1:0");
        let mut batch = RecvBatch::new(16, 32);
        assert_eq!(
            batch.recv_one(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "empty socket"
        );
        tx.send_to(&[1; 5], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[2; 20], rx.local_addr().unwrap()).unwrap();
        batch.recv_one(rx.as_raw_fd()).unwrap();
        assert_eq!(batch.meta(0), (5, Some(tx.local_addr().unwrap())));
        assert_eq!(batch.buf_mut(0)[..5], [1; 5]);
        batch.recv_one(rx.as_raw_fd()).unwrap();
        assert_eq!(batch.meta(0).0, 16, "cut to max_datagram");
        assert_eq!(batch.buf_mut(0)[..16], [2; 16]);
        assert_eq!(
            batch.recv_one(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn ipv6_sources_are_read() {
        let (rx, tx) = pair("[::1]:0");
        let mut batch = RecvBatch::new(64, 64);
        tx.send_to(b"six", rx.local_addr().unwrap()).unwrap();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(batch.meta(0), (3, Some(tx.local_addr().unwrap())));
    }
}
