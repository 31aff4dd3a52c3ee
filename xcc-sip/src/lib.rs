//! XCC signalling: SIP transport, RFC 3261 transactions and dialogs, back-to-back user agent.
//!
//! Everything here is sans-IO: drivers read sockets and the clock, feed bytes and `now` into
//! [`framing`], [`transport`] and [`transaction`], and send what `poll_transmit` returns.

pub mod auth;
pub mod dialog;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod header;
pub mod message;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use error::{Error, Malformed, ParseError, Result};
pub use header::{CSeq, NameAddr, Via};
pub use message::{Header, Headers, Message, Method, Request, Response};
pub use uri::SipUri;
