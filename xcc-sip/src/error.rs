//! The signalling layer's one error type.

use std::net::SocketAddr;

use crate::message::Header;

/// Everything that can go wrong in `xcc-sip`, structured so the transport can decide between a
/// 400/505 answer, a silent drop and closing a connection without parsing strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message could not be parsed; see [`ParseError::answer_status`] for what to do with it.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A stream peer sent a message head or body larger than the configured limit; close it.
    #[error("stream message exceeds {limit} bytes")]
    Oversize {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A response could not be routed back: its top Via names no usable address.
    #[error("cannot route response: top Via sent-by {sent_by:?} is not an address")]
    Unroutable {
        /// The sent-by host as written in the Via.
        sent_by: String,
    },
    /// A transaction was asked to send something its state does not allow.
    #[error("transaction {key}: {reason}")]
    TransactionState {
        /// The transaction's matching key, for the log.
        key: String,
        /// What was refused.
        reason: &'static str,
    },
    /// A request handed to the endpoint has no Via branch, so no transaction can be keyed on it.
    #[error("{method} request has no Via branch")]
    NoBranch {
        /// The request's method.
        method: String,
    },
    /// A client transaction with this key already exists (a branch was reused).
    #[error("transaction {key} already exists")]
    DuplicateTransaction {
        /// The key, for the log.
        key: String,
    },
    /// No transaction with this key (already terminated, or never existed).
    #[error("no transaction {key}")]
    UnknownTransaction {
        /// The key, for the log.
        key: String,
    },
    /// An in-dialog request with a CSeq not above the last one seen (RFC 3261 §12.2.2: 500).
    #[error("CSeq {got} not above {last}")]
    CSeqOutOfOrder {
        /// CSeq received.
        got: u32,
        /// Highest CSeq seen before.
        last: u32,
    },
    /// A socket could not be bound or configured.
    #[error("socket {addr}: {source}")]
    Socket {
        /// Address being bound.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A 401/407 challenge XCC cannot answer (not Digest, missing realm/nonce, unknown algorithm
    /// or qop).
    #[error("unusable auth challenge: {reason}")]
    Challenge {
        /// What was missing or unsupported.
        reason: &'static str,
    },
    /// A stored dialog-state blob (call store, after a restart) cannot be restored: not the
    /// format or version this build writes, a damaged field, or a call that already exists.
    #[error("dialog state refused: {reason}")]
    DialogState {
        /// What was wrong.
        reason: String,
    },
    /// A peer address was expected to be reachable but is not (used by drivers).
    #[error("peer {addr} unreachable")]
    Unreachable {
        /// The address that failed.
        addr: SocketAddr,
    },
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which part of a message was malformed: stable names for logs and drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// No CRLF CRLF between head and body.
    NoHeadEnd,
    /// Start line is neither a Request-Line nor a Status-Line.
    StartLine,
    /// Method is not a token.
    Method,
    /// Request-URI is missing a scheme, has spaces, `<>` or escaped headers.
    RequestUri,
    /// SIP-Version other than SIP/2.0 (answered 505).
    Version,
    /// Status code not three digits in 100..=699.
    StatusCode,
    /// A header line without a colon or with a non-token name.
    HeaderLine,
    /// Bytes that are not UTF-8 in the head.
    Encoding,
    /// A mandatory header is absent.
    Missing(&'static str),
    /// Via does not follow `SIP/2.0/transport sent-by *(;param)`.
    Via,
    /// From/To/Contact/Route is not a name-addr or addr-spec (quotes, `<>`, display name).
    NameAddr(&'static str),
    /// A URI inside a header is not a valid SIP URI.
    Uri,
    /// CSeq number over 2^31-1, not a number, or method differs from the Request-Line.
    CSeq,
    /// Max-Forwards not a number in 0..=255.
    MaxForwards,
    /// Content-Length not a non-negative number, or several that disagree.
    ContentLength,
    /// Body shorter than Content-Length (a datagram must carry it all).
    Truncated,
}

/// A message that could not be parsed, with what the receiver should do about it.
///
/// RFC 3261 §16.3/§8.2 want a 400 for a bad request when a response can still be built (its Via,
/// From, To, Call-ID and CSeq are legible); anything else, and every bad response, is dropped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed SIP message: {reason:?}")]
pub struct ParseError {
    /// What was wrong.
    pub reason: Malformed,
    /// Headers a 400/505 would copy (Via, From, To, Call-ID, CSeq) when the message was a request
    /// and all five were found; `None` means drop.
    pub reply_headers: Option<Vec<Header>>,
}

impl ParseError {
    /// A drop-only error (responses, garbage).
    pub(crate) fn drop(reason: Malformed) -> Self {
        Self {
            reason,
            reply_headers: None,
        }
    }

    /// The status to answer with, or `None` to drop silently.
    pub fn answer_status(&self) -> Option<u16> {
        self.reply_headers.as_ref().map(|_| match self.reason {
            Malformed::Version => 505,
            _ => 400,
        })
    }
}
