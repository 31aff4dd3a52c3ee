//! Dialog state (RFC 3261 §12): what in-dialog requests (re-INVITE, BYE, ACK for 2xx) are built
//! from, and the checks on requests received within a dialog.
//!
//! Pure data plus rules, no I/O and no timers: the B2BUA owns one per call leg.

use bytes::Bytes;

use crate::error::Error;
use crate::header::{CSeq, NameAddr, Via};
use crate::message::{Headers, Method, Request, Response};

/// Identifies a dialog from our side: Call-ID plus our tag and the peer's tag (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (From when we are the UAC, To when we are the UAS).
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogKey {
    /// Key of a request received inside a dialog (our tag is in To); `None` outside a dialog.
    pub fn for_incoming(req: &Request) -> Option<Self> {
        Some(Self {
            call_id: req.headers.call_id.clone(),
            local_tag: req.headers.to.tag()?.to_owned(),
            remote_tag: req.headers.from.tag()?.to_owned(),
        })
    }

    /// Key of a response to a request we sent (our tag is in From).
    pub fn for_response(resp: &Response) -> Option<Self> {
        Some(Self {
            call_id: resp.headers.call_id.clone(),
            local_tag: resp.headers.from.tag()?.to_owned(),
            remote_tag: resp.headers.to.tag()?.to_owned(),
        })
    }
}

/// One dialog's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Identity.
    pub key: DialogKey,
    /// Our From/To identity, with our tag.
    pub local: NameAddr,
    /// The peer's identity, with its tag.
    pub remote: NameAddr,
    /// Where in-dialog requests go when the route set is empty (peer's Contact URI).
    pub remote_target: String,
    /// Proxies to traverse, in sending order (all loose routers; see `new_request`).
    pub route_set: Vec<NameAddr>,
    /// Last CSeq we used.
    pub local_seq: u32,
    /// Highest CSeq received from the peer; `None` until it sends one in the dialog.
    pub remote_seq: Option<u32>,
    /// Our Contact, put on every request we send.
    pub local_contact: NameAddr,
}

impl Dialog {
    /// UAC side, from our INVITE and a 1xx/2xx carrying a To tag (§12.1.2): the route set is
    /// the response's Record-Route reversed.
    pub fn uac(invite: &Request, resp: &Response, local_contact: NameAddr) -> Option<Self> {
        let key = DialogKey::for_response(resp)?;
        Some(Self {
            key,
            local: invite.headers.from.clone(),
            remote: resp.headers.to.clone(),
            remote_target: resp.headers.contact.first()?.uri.clone(),
            route_set: resp.headers.record_route.iter().rev().cloned().collect(),
            local_seq: invite.headers.cseq.seq,
            remote_seq: None,
            local_contact,
        })
    }

    /// UAS side, from a received INVITE and the tag we put in To (§12.1.1): the route set is the
    /// request's Record-Route in order.
    pub fn uas(
        invite: &Request,
        local_tag: &str,
        initial_local_seq: u32,
        local_contact: NameAddr,
    ) -> Option<Self> {
        let mut local = invite.headers.to.clone();
        local.set_tag(local_tag);
        Some(Self {
            key: DialogKey {
                call_id: invite.headers.call_id.clone(),
                local_tag: local_tag.to_owned(),
                remote_tag: invite.headers.from.tag()?.to_owned(),
            },
            local,
            remote: invite.headers.from.clone(),
            remote_target: invite.headers.contact.first()?.uri.clone(),
            route_set: invite.headers.record_route.clone(),
            local_seq: initial_local_seq,
            remote_seq: Some(invite.headers.cseq.seq),
            local_contact,
        })
    }

    /// Builds an in-dialog request (§12.2.1.1) with the next CSeq. `via` carries our sent-by and
    /// a fresh branch. Only loose routing is produced: a strict-routing first hop (no `;lr`) is
    /// still addressed loosely, which RFC 3261 §16.12 compatible proxies accept.
    pub fn new_request(&mut self, method: Method, via: Via, body: Bytes) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1) & 0x7fff_ffff;
        self.build(method, self.local_seq, via, body)
    }

    /// The ACK for a 2xx to the INVITE sent with `invite_seq` (§13.2.2.4): same CSeq number,
    /// its own branch, built by the dialog because the transaction layer does not ACK 2xx.
    pub fn ack(&self, invite_seq: u32, via: Via, body: Bytes) -> Request {
        self.build(Method::Ack, invite_seq, via, body)
    }

    fn build(&self, method: Method, seq: u32, via: Via, body: Bytes) -> Request {
        Request {
            uri: self.remote_target.clone(),
            headers: Headers {
                via: vec![via],
                from: self.local.clone(),
                to: self.remote.clone(),
                call_id: self.key.call_id.clone(),
                cseq: CSeq {
                    seq,
                    method: method.as_str().to_owned(),
                },
                max_forwards: Some(70),
                contact: vec![self.local_contact.clone()],
                route: self.route_set.clone(),
                record_route: Vec::new(),
                content_type: (!body.is_empty()).then(|| "application/sdp".to_owned()),
                other: Vec::new(),
            },
            method,
            body,
        }
    }

    /// Checks a request received in this dialog (§12.2.2): an out-of-order CSeq is refused
    /// (answer 500); ACK and CANCEL reuse their INVITE's number and are not checked. A target
    /// refresh (re-INVITE/UPDATE) with a Contact moves the remote target.
    pub fn handle_request(&mut self, req: &Request) -> Result<(), Error> {
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            let seq = req.headers.cseq.seq;
            if self.remote_seq.is_some_and(|r| seq <= r) {
                return Err(Error::CSeqOutOfOrder {
                    got: seq,
                    last: self.remote_seq.unwrap_or_default(),
                });
            }
            self.remote_seq = Some(seq);
        }
        if matches!(req.method, Method::Invite | Method::Update)
            && let Some(c) = req.headers.contact.first()
        {
            self.remote_target = c.uri.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn parse(s: &str) -> Message {
        Message::parse(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn our_via() -> Via {
        Via::parse("SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKnew").unwrap()
    }

    fn contact() -> NameAddr {
        NameAddr::parse("<sip:xcc@192.0.2.50:5060>", "Contact").unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@pbx.example.net SIP/2.0
Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKinv
From: <sip:xcc@192.0.2.50>;tag=ours
To: <sip:bob@pbx.example.net>
Call-ID: dlg-1
CSeq: 10 INVITE
Contact: <sip:xcc@192.0.2.50:5060>
Content-Length: 0

";

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_contact() {
        let Message::Request(inv) = parse(INVITE) else {
            panic!()
        };
        let Message::Response(ok) = parse(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKinv
Record-Route: <sip:p2.example.net;lr>, <sip:p1.example.net;lr>
From: <sip:xcc@192.0.2.50>;tag=ours
To: <sip:bob@pbx.example.net>;tag=theirs
Call-ID: dlg-1
CSeq: 10 INVITE
Contact: <sip:bob@198.51.100.9:5062>
Content-Length: 0

",
        ) else {
            panic!()
        };
        let mut d = Dialog::uac(&inv, &ok, contact()).unwrap();
        assert_eq!(d.key, DialogKey::for_response(&ok).unwrap());
        let ack = d.ack(10, our_via(), Bytes::new());
        assert_eq!(
            (ack.headers.cseq.seq, ack.method.clone()),
            (10, Method::Ack)
        );
        let bye = d.new_request(Method::Bye, our_via(), Bytes::new());
        assert_eq!(bye.uri, "sip:bob@198.51.100.9:5062");
        assert_eq!(bye.headers.cseq.seq, 11);
        assert_eq!(bye.headers.to.tag(), Some("theirs"));
        assert_eq!(bye.headers.from.tag(), Some("ours"));
        let routes: Vec<_> = bye.headers.route.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(routes, ["sip:p1.example.net;lr", "sip:p2.example.net;lr"]);
        // What we build parses back.
        Message::parse(&bye.to_bytes()).unwrap();
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_rejects_old_cseq() {
        let raw = INVITE.replace(
            "Contact:",
            "Record-Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>\nContact:",
        );
        let Message::Request(inv) = parse(&raw) else {
            panic!()
        };
        let mut d = Dialog::uas(&inv, "uas-tag", 500, contact()).unwrap();
        assert_eq!(d.route_set[0].uri, "sip:p1.example.net;lr");
        let mut bye = inv.clone();
        bye.method = Method::Bye;
        bye.headers.cseq = CSeq {
            seq: 10,
            method: "BYE".into(),
        };
        assert!(matches!(
            d.handle_request(&bye),
            Err(Error::CSeqOutOfOrder { got: 10, last: 10 })
        ));
        bye.headers.cseq.seq = 11;
        d.handle_request(&bye).unwrap();
        assert_eq!(
            d.new_request(Method::Bye, our_via(), Bytes::new())
                .headers
                .cseq
                .seq,
            501
        );
    }

    #[test]
    fn reinvite_refreshes_remote_target() {
        let Message::Request(inv) = parse(INVITE) else {
            panic!()
        };
        let mut d = Dialog::uas(&inv, "t", 1, contact()).unwrap();
        let mut re = inv.clone();
        re.headers.cseq.seq = 11;
        re.headers.contact = vec![NameAddr::parse("<sip:moved@203.0.113.7>", "Contact").unwrap()];
        d.handle_request(&re).unwrap();
        assert_eq!(d.remote_target, "sip:moved@203.0.113.7");
    }
}
