//! XCC signalling: SIP transport, RFC 3261 transactions and dialogs, back-to-back user agent.
//!
//! Layers, bottom up, all sans-IO except [`driver`]:
//! - [`message`] (with [`header`], [`uri`]): XCC's own strict parser and message types; a
//!   [`ParseError`] says whether to answer 400/505 or drop.
//! - [`framing`]: TCP stream -> messages (Content-Length, CRLF keepalive, size limit);
//!   [`transport`]: Via `received`/`rport` and response routing.
//! - [`transaction`]: the four RFC 3261 §17 machines (+ RFC 6026 Accepted) and
//!   [`transaction::TransactionKey`]; [`endpoint::Endpoint`] owns and matches them.
//! - [`dialog`] and [`auth`]: in-dialog request building and Digest answers, for the B2BUA.
//! - [`b2bua`]: the back-to-back user agent, one call across a server dialog and a PBX dialog.
//! - [`driver`]: the tokio loop that reads sockets and the clock and moves bytes in and out.
//!
//! The drive loop: feed input with `handle_*(now, ..)`, then drain `poll_transmit()` and
//! `poll_event()`, then sleep until `poll_timeout()` and call `handle_timeout(now)`.

#![warn(missing_docs)]

pub mod auth;
pub mod b2bua;
pub mod dialog;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod header;
pub mod message;
pub mod monitor;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use error::{Error, Malformed, ParseError, Result};
pub use header::{CSeq, NameAddr, Via};
pub use message::{Header, Headers, Message, Method, Request, Response};
pub use uri::SipUri;
