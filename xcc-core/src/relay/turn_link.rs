//! How one of XCC's TURN allocations reaches its server: over the leg's own UDP socket, or over a
//! TCP connection of its own (RFC 8656 §3.1) for uplinks that let only TCP out.
//!
//! A TCP link never splits a frame: a frame is written whole, or its unwritten tail waits in a
//! fixed buffer for the next writable event, or (when that buffer cannot take the whole frame) it
//! is dropped whole and counted by the caller like a refused `sendto`. Received bytes are cut into
//! frames by [`TcpFramer`] in a fixed buffer. No allocation after the link is made.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpStream, UdpSocket};

use crate::nat::turn::TcpFramer;

/// Bytes a TCP link holds for a slow connection: a few dozen media frames. More waiting than
/// that means the connection is not keeping up, and late media is worthless anyway.
const OUT_CAPACITY: usize = 32 * 1024;
/// Receive framing buffer: a frame of XCC's (at most ~2.1 KiB) plus the start of the next one.
const IN_CAPACITY: usize = 8 * 1024;

/// One allocation's path to the server.
#[derive(Debug)]
pub(crate) enum TurnLink {
    /// Through the leg's UDP socket (the allocation belongs to that socket's 5-tuple).
    Udp,
    /// Through a TCP connection (the allocation belongs to the connection).
    Tcp(Box<TcpLink>),
}

/// What reading a TCP link gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Bytes arrived: look for frames.
    Data,
    /// Nothing more for now.
    Empty,
    /// The server closed the connection, or it broke: the allocation is gone.
    Closed,
}

/// A TCP connection to the TURN server with its framing and output buffers.
#[derive(Debug)]
pub(crate) struct TcpLink {
    stream: TcpStream,
    framer: TcpFramer,
    /// Bytes accepted but not yet written, `out[start..end]`.
    out: Box<[u8]>,
    start: usize,
    end: usize,
    /// Closed, reset or desynchronised: sends fail, nothing is read.
    dead: bool,
}

impl TurnLink {
    /// Sends one datagram's worth (a whole STUN message or ChannelData frame) to `server`.
    /// Returns whether it was sent or queued whole.
    pub(crate) fn send(&mut self, udp: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> bool {
        match self {
            TurnLink::Udp => matches!(udp.send_to(bytes, server), Ok(n) if n == bytes.len()),
            TurnLink::Tcp(link) => link.send(bytes),
        }
    }

    /// The TCP link, if this is one.
    pub(crate) fn tcp(&mut self) -> Option<&mut TcpLink> {
        match self {
            TurnLink::Udp => None,
            TurnLink::Tcp(link) => Some(link),
        }
    }

    /// Whether datagrams for this allocation arrive on the UDP socket.
    pub(crate) fn is_udp(&self) -> bool {
        matches!(self, TurnLink::Udp)
    }
}

impl TcpLink {
    /// Starts a non-blocking connection to `server` (bytes sent before it completes are queued).
    pub(crate) fn connect(server: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(server)?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            framer: TcpFramer::with_capacity(IN_CAPACITY),
            out: vec![0u8; OUT_CAPACITY].into_boxed_slice(),
            start: 0,
            end: 0,
            dead: false,
        })
    }

    /// The stream, to register with a poll (readable and writable).
    pub(crate) fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Whether the connection is gone.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead
    }

    /// Writes `frame` now, or queues what the kernel did not take; false (nothing written) when
    /// the queue cannot hold it whole or the link is dead.
    fn send(&mut self, frame: &[u8]) -> bool {
        if self.dead {
            return false;
        }
        let mut written = 0;
        if self.start == self.end {
            match self.stream.write(frame) {
                Ok(n) => written = n,
                Err(e) if is_transient(&e) => {}
                Err(_) => {
                    self.dead = true;
                    return false;
                }
            }
        }
        let rest = &frame[written..];
        if rest.is_empty() {
            return true;
        }
        if self.end + rest.len() > self.out.len() {
            self.out.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end + rest.len() > self.out.len() {
            // Nothing of this frame was written (the queue was not empty): drop it whole.
            debug_assert_eq!(written, 0);
            return false;
        }
        self.out[self.end..self.end + rest.len()].copy_from_slice(rest);
        self.end += rest.len();
        true
    }

    /// Writes what is queued, as far as the kernel takes it (on a writable event).
    pub(crate) fn flush(&mut self) {
        while !self.dead && self.start < self.end {
            match self.stream.write(&self.out[self.start..self.end]) {
                Ok(0) => self.dead = true,
                Ok(n) => self.start += n,
                Err(e) if is_transient(&e) => return,
                Err(_) => self.dead = true,
            }
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Reads what the stream has into the framer.
    pub(crate) fn fill(&mut self) -> Fill {
        if self.dead {
            return Fill::Closed;
        }
        let space = self.framer.space();
        if space.is_empty() {
            // A frame larger than the buffer: not from a TURN server talking to XCC.
            self.dead = true;
            return Fill::Closed;
        }
        match self.stream.read(space) {
            Ok(0) => {
                self.dead = true;
                Fill::Closed
            }
            Ok(n) => {
                self.framer.filled(n);
                Fill::Data
            }
            Err(e) if is_transient(&e) => Fill::Empty,
            Err(_) => {
                self.dead = true;
                Fill::Closed
            }
        }
    }

    /// Copies the next complete frame into `buf` and returns its length; `None` when no whole
    /// frame is buffered (or the stream is desynchronised, which kills the link).
    pub(crate) fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.framer.next_frame() {
            Ok(Some(frame)) => {
                let dst = buf.get_mut(..frame.len())?;
                dst.copy_from_slice(frame);
                Some(frame.len())
            }
            Ok(None) => None,
            Err(_) => {
                self.dead = true;
                None
            }
        }
    }
}

/// Errors after which the connection is still good: try again on the next readiness event.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A connected pair: XCC's link and the server's end (blocking std stream).
    fn pair() -> (TcpLink, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut link = TcpLink::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Until the connect completes, sends queue; flush once it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.stream.peer_addr().is_err() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        link.flush();
        (link, server)
    }

    #[test]
    fn frames_go_out_whole_and_in_order() {
        let (mut link, mut server) = pair();
        assert!(link.send(&[0x40, 0x00, 0x00, 0x02, 0xAA, 0xBB, 0, 0]));
        assert!(link.send(&[0x40, 0x01, 0x00, 0x00]));
        let mut got = [0u8; 12];
        server.read_exact(&mut got).unwrap();
        assert_eq!(got, [0x40, 0, 0, 2, 0xAA, 0xBB, 0, 0, 0x40, 1, 0, 0]);
    }

    #[test]
    fn frames_from_the_server_are_cut_whatever_the_segmentation() {
        let (mut link, mut server) = pair();
        // One ChannelData frame split across two writes, then a second one.
        server.write_all(&[0x40, 0x00, 0x00, 0x03, 1]).unwrap();
        server
            .write_all(&[2, 3, 0, 0x40, 0x00, 0x00, 0x01, 9, 0, 0, 0])
            .unwrap();
        let mut buf = [0u8; 64];
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while frames.len() < 2 && Instant::now() < deadline {
            while let Some(n) = link.next_frame(&mut buf) {
                frames.push(buf[..n].to_vec());
            }
            assert_ne!(link.fill(), Fill::Closed);
        }
        assert_eq!(
            frames,
            [
                vec![0x40, 0, 0, 3, 1, 2, 3, 0],
                vec![0x40, 0, 0, 1, 9, 0, 0, 0]
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_whole_frames_and_a_closed_server_kills_the_link() {
        let (mut link, server) = pair();
        // The server never reads: the kernel buffers fill, then the link's queue.
        let frame = [0x40u8; 1024];
        let mut accepted = 0;
        for _ in 0..100_000 {
            if !link.send(&frame) {
                break;
            }
            accepted += 1;
        }
        assert!(accepted < 100_000, "the queue is bounded");
        assert!(!link.send(&frame), "still full: dropped whole");
        assert!(!link.is_dead(), "a full queue is not a dead link");
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.fill() != Fill::Closed && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(link.is_dead());
        assert!(!link.send(&frame));
    }

    #[test]
    fn a_desynchronised_stream_kills_the_link() {
        let (mut link, mut server) = pair();
        server.write_all(&[0x80, 0, 0, 0]).unwrap(); // RTP on a TURN stream: not a frame
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.fill() != Fill::Data && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(link.next_frame(&mut buf), None);
        assert!(link.is_dead());
    }
}
