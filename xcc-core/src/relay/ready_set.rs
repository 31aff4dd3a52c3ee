//! Level-triggered readiness for a worker's UDP sockets: an epoll set of its own, nested in the
//! worker's (edge-triggered) mio poll.
//!
//! Why: with edge-triggered readiness a socket must be read until the kernel says "empty", and at
//! 50 packets/s per socket a wake-up finds one datagram, so every packet cost a second `recvfrom`
//! that returned `EAGAIN`. With level-triggered readiness the worker reads one datagram from each
//! ready socket per round and asks the set again; a socket that still holds data is reported
//! again, one that does not is not. A wake-up then costs one or two `epoll_wait` on the set
//! instead of one empty `recvfrom` per socket, and every ready socket gets a turn per round
//! (a flood on one socket cannot starve the others). mio has no level-triggered mode, hence the
//! set of our own; its descriptor is registered in the mio poll, which wakes the worker when any
//! socket in the set becomes readable.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Ready sockets one [`ReadySet::wait_now`] reports at most; the rest stay ready for the next.
pub(crate) const READY_BATCH: usize = 256;

/// An epoll set of UDP sockets, each with a token, reported while they hold data.
pub(crate) struct ReadySet {
    epfd: OwnedFd,
    events: Box<[libc::epoll_event]>,
}

impl ReadySet {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; READY_BATCH].into_boxed_slice(),
        })
    }

    /// Adds `fd`, reported with `token` while it has a datagram (or an error) queued.
    pub fn add(&self, fd: RawFd, token: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` lives across the call; epoll_ctl only reads it.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `fd` (before it is closed: a duplicate of it elsewhere would keep it registered).
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Which sockets hold data now, without waiting: `Ok(n)` with their tokens in
    /// [`ReadySet::token`]`(0..n)`; 0 means none did when the call looked.
    pub fn wait_now(&mut self) -> io::Result<usize> {
        // SAFETY: `events` has READY_BATCH entries owned by `self`; the kernel writes at most that
        // many.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                READY_BATCH as libc::c_int,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The token of ready socket `i` of the last [`ReadySet::wait_now`].
    pub fn token(&self, i: usize) -> usize {
        self.events[i].u64 as usize
    }
}

impl AsRawFd for ReadySet {
    /// The set's own descriptor: readable while any socket in it is.
    fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn tokens(set: &mut ReadySet) -> Vec<usize> {
        let n = set.wait_now().unwrap();
        let mut t: Vec<usize> = (0..n).map(|i| set.token(i)).collect();
        t.sort_unstable();
        t
    }

    #[test]
    fn a_socket_is_reported_while_it_holds_data_and_not_after() {
        let mut set = ReadySet::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set.add(a.as_raw_fd(), 7).unwrap();
        set.add(b.as_raw_fd(), 9).unwrap();
        assert!(tokens(&mut set).is_empty(), "nothing queued");
        // Loopback queues synchronously: both datagrams are there when send_to returns.
        tx.send_to(b"one", a.local_addr().unwrap()).unwrap();
        tx.send_to(b"two", a.local_addr().unwrap()).unwrap();
        tx.send_to(b"three", b.local_addr().unwrap()).unwrap();
        assert_eq!(tokens(&mut set), vec![7, 9]);
        let mut buf = [0u8; 16];
        a.recv_from(&mut buf).unwrap();
        b.recv_from(&mut buf).unwrap();
        assert_eq!(
            tokens(&mut set),
            vec![7],
            "a still holds one datagram, b none"
        );
        a.recv_from(&mut buf).unwrap();
        assert!(tokens(&mut set).is_empty());
    }

    #[test]
    fn a_removed_socket_is_not_reported() {
        let mut set = ReadySet::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set.add(a.as_raw_fd(), 1).unwrap();
        tx.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert_eq!(tokens(&mut set), vec![1]);
        set.remove(a.as_raw_fd()).unwrap();
        assert!(tokens(&mut set).is_empty());
        assert!(
            set.remove(a.as_raw_fd()).is_err(),
            "not in the set any more"
        );
    }
}
