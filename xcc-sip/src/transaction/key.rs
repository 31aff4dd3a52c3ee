//! Transaction matching keys (RFC 3261 §17.1.3 and §17.2.3).

use std::fmt;

use rand::Rng;

use crate::message::{Method, Request, Response};

/// RFC 3261 branch magic cookie: a branch starting with it is globally unique.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Which side of a transaction a key belongs to: client and server keys never collide even when
/// a request loops back to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// What identifies a transaction.
///
/// Client side (§17.1.3): top Via branch + CSeq method. Server side (§17.2.3): branch + sent-by +
/// method, where an ACK matches the INVITE transaction it acknowledges and a CANCEL has its own
/// transaction (same branch, method CANCEL). Branches without the magic cookie (RFC 2543 peers)
/// are not matched: they get no key and the endpoint treats them as malformed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// Side.
    pub role: Role,
    /// Top Via branch, compared case-sensitively as the RFC says.
    pub branch: String,
    /// Server side: sent-by of the top Via, lower-cased; client side: empty (our branch is unique).
    pub sent_by: String,
    /// The method, with ACK folded into INVITE.
    pub method: Method,
}

impl TransactionKey {
    /// Key of a request we received.
    pub fn server(req: &Request) -> Option<Self> {
        let via = req.headers.top_via()?;
        let branch = via.branch().filter(|b| b.starts_with(MAGIC_COOKIE))?;
        let method = match &req.method {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        Some(Self {
            role: Role::Server,
            branch: branch.to_owned(),
            sent_by: via.sent_by(),
            method,
        })
    }

    /// Key of a request we are sending (ACK for 2xx is not a transaction: `None`).
    pub fn client(req: &Request) -> Option<Self> {
        if req.method == Method::Ack {
            return None;
        }
        let branch = req.headers.top_via()?.branch()?;
        Some(Self {
            role: Role::Client,
            branch: branch.to_owned(),
            sent_by: String::new(),
            method: req.method.clone(),
        })
    }

    /// Key of the client transaction a response belongs to.
    pub fn for_response(resp: &Response) -> Option<Self> {
        let branch = resp.headers.top_via()?.branch()?;
        Some(Self {
            role: Role::Client,
            branch: branch.to_owned(),
            sent_by: String::new(),
            method: Method::parse(&resp.headers.cseq.method)?,
        })
    }

    /// For a server CANCEL key: the INVITE server transaction it targets (§9.2).
    pub fn cancelled_invite(&self) -> Self {
        Self {
            method: Method::Invite,
            ..self.clone()
        }
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{}/{}/{}",
            self.role, self.branch, self.sent_by, self.method
        )
    }
}

/// A fresh RFC 3261 branch: magic cookie plus 96 random bits from the caller's RNG.
pub fn generate_branch(rng: &mut impl Rng) -> String {
    let bits: u128 = rng.random::<u128>() >> 32;
    format!("{MAGIC_COOKIE}{bits:024x}")
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::message::Message;

    fn req(method: &str, via: &str) -> Request {
        let raw = format!(
            "{method} sip:x@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn ack_matches_invite_cancel_does_not() {
        let via = "SIP/2.0/UDP Host.Example.com:5060;branch=z9hG4bKabc";
        let invite = TransactionKey::server(&req("INVITE", via)).unwrap();
        let ack = TransactionKey::server(&req("ACK", via)).unwrap();
        let cancel = TransactionKey::server(&req("CANCEL", via)).unwrap();
        assert_eq!(invite, ack);
        assert_ne!(invite, cancel);
        assert_eq!(cancel.cancelled_invite(), invite);
    }

    #[test]
    fn sent_by_and_cookie_are_part_of_server_key() {
        let a = TransactionKey::server(&req("BYE", "SIP/2.0/UDP h1;branch=z9hG4bKx")).unwrap();
        let b = TransactionKey::server(&req("BYE", "SIP/2.0/UDP h2;branch=z9hG4bKx")).unwrap();
        assert_ne!(a, b);
        assert!(TransactionKey::server(&req("BYE", "SIP/2.0/UDP h1;branch=old")).is_none());
    }

    #[test]
    fn branches_are_unique_and_cookied() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (a, b) = (generate_branch(&mut rng), generate_branch(&mut rng));
        assert!(a.starts_with(MAGIC_COOKIE) && a.len() == 31);
        assert_ne!(a, b);
    }
}
