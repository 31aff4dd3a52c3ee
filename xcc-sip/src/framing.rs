//! Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1): cuts a TCP byte stream into messages.
//!
//! Sans-IO: the driver appends whatever `read()` returned with [`StreamFramer::push`] and drains
//! [`StreamFramer::poll_frame`] until it returns `None`. Keepalive pings (CRLF CRLF) are surfaced
//! so the driver can answer the single CRLF pong; a peer exceeding the size limit gets an error
//! and must be disconnected, since the stream cannot be resynchronised.

use crate::error::{Error, Malformed, ParseError};
use crate::header::{canonical_name, parse_decimal};
use crate::message::{MAX_BODY, Message, find_head_end};

/// Default limit for one message head (64 KiB covers any sane header set).
pub const MAX_HEAD: usize = 64 * 1024;

/// What came off the stream.
#[derive(Debug)]
pub enum Frame {
    /// A complete message.
    Message(Box<Message>),
    /// A message that was framed correctly but did not parse: answer or drop it, keep the stream.
    Malformed(ParseError),
    /// A CRLF CRLF ping: reply with [`PONG`].
    Ping,
}

/// RFC 5626 §3.5.1 pong.
pub const PONG: &[u8] = b"\r\n";

/// Per-connection framing state.
#[derive(Debug)]
pub struct StreamFramer {
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    /// Limit on head + body of one message.
    limit: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(MAX_HEAD + MAX_BODY)
    }
}

impl StreamFramer {
    /// A framer that refuses messages (head + body) larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered, waiting for the rest of a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Next frame, `Ok(None)` when more bytes are needed, `Err` when the connection must close.
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(Frame::Ping));
            }
            if !self.buf.starts_with(b"\r\n") {
                break;
            }
            // Could still become a ping: wait for more bytes.
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                return Ok(None);
            }
            // A single CRLF between messages (RFC 3261 §7.5) or a pong: skip it.
            self.buf.drain(..2);
        }
        let Some(head_end) = find_head_end(&self.buf) else {
            if self.buf.len() > self.limit.min(MAX_HEAD) {
                return Err(Error::Oversize { limit: self.limit });
            }
            return Ok(None);
        };
        let body_len = match content_length(&self.buf[..head_end]) {
            Ok(n) => n,
            Err(reason) => {
                // Without a legible Content-Length the next message boundary is unknown.
                tracing::debug!(?reason, "stream message without usable Content-Length");
                return Err(Error::Parse(ParseError::drop(reason)));
            }
        };
        let total = head_end + 4 + body_len;
        if total > self.limit {
            return Err(Error::Oversize { limit: self.limit });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = match Message::parse(&self.buf[..total]) {
            Ok(m) => Frame::Message(Box::new(m)),
            Err(e) => Frame::Malformed(e),
        };
        self.buf.drain(..total);
        Ok(Some(frame))
    }
}

/// Content-Length from a raw head; mandatory on streams (RFC 3261 §18.3).
fn content_length(head: &[u8]) -> Result<usize, Malformed> {
    let head = std::str::from_utf8(head).map_err(|_| Malformed::Encoding)?;
    let mut found = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if canonical_name(name.trim_end()) == Some("Content-Length") {
            let n =
                parse_decimal(value.trim(), MAX_BODY as u64 + 1).ok_or(Malformed::ContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(Malformed::ContentLength);
            }
            found = Some(n);
        }
    }
    // Bounded by MAX_BODY above.
    found
        .map(|n| n as usize)
        .ok_or(Malformed::Missing("Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nabcd";

    fn frames(f: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(fr) = f.poll_frame().unwrap() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn partial_reads_reassemble() {
        let mut f = StreamFramer::default();
        for chunk in OPTIONS.chunks(7) {
            assert!(frames(&mut f).is_empty());
            f.push(chunk);
        }
        let got = frames(&mut f);
        let [Frame::Message(m)] = &got[..] else {
            panic!("one message expected")
        };
        assert!(matches!(&**m, Message::Request(r) if &r.body[..] == b"abcd"));
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn several_messages_in_one_read_and_keepalive() {
        let mut f = StreamFramer::default();
        let mut data = OPTIONS.to_vec();
        data.extend_from_slice(b"\r\n\r\n");
        data.extend_from_slice(OPTIONS);
        data.extend_from_slice(&OPTIONS[..20]);
        f.push(&data);
        let got = frames(&mut f);
        assert_eq!(got.len(), 3);
        assert!(matches!(got[1], Frame::Ping));
        assert_eq!(f.pending(), 20);
    }

    #[test]
    fn oversize_message_is_an_error() {
        let mut f = StreamFramer::new(64);
        f.push(OPTIONS);
        assert!(matches!(f.poll_frame(), Err(Error::Oversize { limit: 64 })));
        let mut f = StreamFramer::new(1 << 20);
        f.push(&vec![b'A'; MAX_HEAD + 1]);
        assert!(matches!(f.poll_frame(), Err(Error::Oversize { .. })));
    }

    #[test]
    fn missing_content_length_closes_stream() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n");
        assert!(matches!(f.poll_frame(), Err(Error::Parse(_))));
    }

    #[test]
    fn malformed_but_framed_message_keeps_the_stream() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS <sip:x> SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        f.push(OPTIONS);
        let got = frames(&mut f);
        assert!(matches!(got[0], Frame::Malformed(_)));
        assert!(matches!(got[1], Frame::Message(_)));
    }
}
