//! The B2BUA's call flows in virtual time: every path ends with the leak check (no call, no
//! table entry, no transaction, all media released).

mod b2bua_common;

use std::time::Duration;

use b2bua_common::*;
use bytes::Bytes;
use xcc_sip::auth::Credentials;
use xcc_sip::b2bua::{B2buaEvent, EndReason, HangupReason, MediaRefusal, Side};
use xcc_sip::monitor::Health;
use xcc_sip::transport::Transport;
use xcc_sip::{Message, Method, Response};

fn ended(h: &Harness) -> Vec<EndReason> {
    h.events
        .iter()
        .filter_map(|e| match e {
            B2buaEvent::CallEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn refused(h: &Harness) -> Vec<u16> {
    h.events
        .iter()
        .filter_map(|e| match e {
            B2buaEvent::CallRefused { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn server_call_is_set_up_relayed_and_torn_down_by_the_pbx() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    h.response(Side::Server, 100);
    let out = h.request(Side::Pbx, Method::Invite);
    // XCC is a UA on the PBX side: its own Call-ID, tag, Contact; user and display kept.
    assert_eq!(out.uri, format!("sip:1001@{PBX_PEER}"));
    assert_ne!(out.headers.call_id, inv.headers.call_id);
    assert_ne!(out.headers.from.tag(), inv.headers.from.tag());
    assert_eq!(out.headers.from.display.as_deref(), Some("\"Alice\""));
    assert!(out.headers.from.uri.starts_with("sip:alice@"));
    assert_eq!(out.headers.max_forwards, Some(69));
    assert!(out.headers.contact[0].uri.contains(PBX_LOCAL));
    assert_eq!(
        std::str::from_utf8(&out.body).unwrap(),
        FakeMedia::sdp(1, "offer")
    );
    assert_eq!(h.media.log, ["offer server"]);

    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    let ringing = h.response(Side::Server, 180);
    let our_tag = ringing.headers.to.tag().unwrap().to_owned();
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    let ack = h.request(Side::Pbx, Method::Ack);
    assert_eq!(ack.headers.cseq.seq, out.headers.cseq.seq);
    assert_eq!(ack.headers.to.tag(), Some("p1"));
    let ok = h.response(Side::Server, 200);
    assert_eq!(
        ok.headers.to.tag(),
        Some(our_tag.as_str()),
        "one tag per dialog"
    );
    assert_eq!(
        std::str::from_utf8(&ok.body).unwrap(),
        FakeMedia::sdp(1, "answer")
    );
    assert!(ok.headers.contact[0].uri.contains(SERVER_LOCAL));
    let server = uac_dialog(Side::Server, &inv, &ok);
    let via = h.via(Side::Server);
    h.send(Side::Server, &server.ack(1, via, Bytes::new()));
    assert_eq!(h.b2bua.calls(), 1);

    // The PBX hangs up: 200 to it, BYE to the server.
    let mut pbx = uas_dialog(Side::Pbx, &out, "p1");
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.new_request(Method::Bye, via, Bytes::new()));
    h.response(Side::Pbx, 200);
    let bye = h.request(Side::Server, Method::Bye);
    assert_eq!(bye.headers.call_id, "c1");
    assert_eq!(bye.headers.from.tag(), Some(our_tag.as_str()));
    assert_eq!(
        bye.uri,
        format!("sip:alice@{SERVER_PEER}"),
        "the caller's Contact"
    );
    h.reply(Side::Server, &bye, 200, None, None);
    assert_eq!(h.b2bua.calls(), 0);
    let lifecycle: Vec<_> = h
        .events
        .iter()
        .filter(|e| !matches!(e, B2buaEvent::DialogState { .. }))
        .cloned()
        .collect();
    assert!(matches!(
        lifecycle.as_slice(),
        [
            B2buaEvent::CallStarted {
                from: Side::Server,
                ..
            },
            B2buaEvent::CallAnswered { .. },
            B2buaEvent::CallEnded {
                reason: EndReason::Bye { from: Side::Pbx },
                ..
            }
        ]
    ));
    // No 2xx retransmission after the ACK.
    h.clear();
    h.advance(Duration::from_secs(5));
    assert_eq!(h.count(Side::Server, |_| true), 0, "{}", h.dump());
    h.settle_and_check();
    let c = h.b2bua.counters();
    assert_eq!(
        (c.calls_started, c.calls_answered, c.calls_ended),
        (1, 1, 1)
    );
    assert_eq!(c.sides[Side::Server.index()].requests_in["INVITE"], 1);
    assert_eq!(
        c.sides[Side::Pbx.index()].responses_in[&("INVITE".to_owned(), 200)],
        1
    );
}

#[test]
fn pbx_call_reaches_the_server_and_the_server_hangs_up() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Pbx, "p1", Some(PBX_ANSWER), "");
    h.response(Side::Pbx, 100);
    let out = h.request(Side::Server, Method::Invite);
    assert_eq!(out.uri, format!("sip:1001@{SERVER_PEER}"));
    assert_eq!(h.media.log, ["offer pbx"]);
    h.reply(Side::Server, &out, 200, Some("s1"), Some(SERVER_OFFER));
    h.request(Side::Server, Method::Ack);
    let ok = h.response(Side::Pbx, 200);
    let pbx = uac_dialog(Side::Pbx, &inv, &ok);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.ack(1, via, Bytes::new()));

    let mut server = uas_dialog(Side::Server, &out, "s1");
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Bye, via, Bytes::new()),
    );
    h.response(Side::Server, 200);
    let bye = h.request(Side::Pbx, Method::Bye);
    h.reply(Side::Pbx, &bye, 200, None, None);
    assert_eq!(ended(&h), [EndReason::Bye { from: Side::Server }]);
    h.settle_and_check();
}

#[test]
fn early_media_answer_is_given_once_and_reused_by_the_200() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 183, Some("p1"), Some(PBX_ANSWER));
    let early = h.response(Side::Server, 183);
    assert_eq!(
        std::str::from_utf8(&early.body).unwrap(),
        FakeMedia::sdp(1, "answer")
    );
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    let ok = h.response(Side::Server, 200);
    assert_eq!(ok.body, early.body);
    assert_eq!(
        h.media
            .log
            .iter()
            .filter(|l| l.starts_with("answer"))
            .count(),
        1,
        "{:?}",
        h.media.log
    );
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
    assert!(h.media.violations.is_empty());
}

#[test]
fn non_2xx_final_is_relayed_with_its_code_and_media_released() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 486, Some("p1"), None);
    // The transaction layer ACKs the non-2xx; the caller gets 486 and must ACK it.
    let ack = h.request(Side::Pbx, Method::Ack);
    assert_eq!(ack.headers.cseq.seq, 1);
    let busy = h.response(Side::Server, 486);
    assert!(h.media.live.is_empty());
    assert_eq!(ended(&h), [EndReason::Rejected { status: 486 }]);
    let mut ack = xcc_sip::Request {
        method: Method::Ack,
        uri: "sip:1001@127.0.0.1".into(),
        headers: busy.headers.clone(),
        body: Bytes::new(),
    };
    ack.headers.cseq.method = "ACK".into();
    h.send(Side::Server, &ack);
    h.settle_and_check();
}

#[test]
fn digest_challenge_is_answered_once_then_relayed() {
    let mut cfg = config();
    cfg.pbx.credentials = Some(Credentials {
        username: "xcc".into(),
        password: "secret".into(),
    });
    let mut h = Harness::new(cfg);
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    let challenge = |h: &mut Harness, req: &xcc_sip::Request| {
        let mut r = Response::for_request(req, 407, "Proxy Authentication Required", Some("p1"));
        r.headers.other.push(xcc_sip::Header {
            name: "Proxy-Authenticate".into(),
            value: "Digest realm=\"pbx\", nonce=\"abc\", qop=\"auth\"".into(),
        });
        h.inject(Side::Pbx, &Message::Response(r));
    };
    challenge(&mut h, &out);
    let retry = h.request(Side::Pbx, Method::Invite);
    assert_eq!(retry.headers.cseq.seq, 2);
    assert_eq!(retry.headers.call_id, out.headers.call_id);
    assert_ne!(
        retry.headers.via[0].branch(),
        out.headers.via[0].branch(),
        "a new transaction"
    );
    let auth = retry.headers.other("Proxy-Authorization").unwrap();
    assert!(auth.contains("username=\"xcc\"") && auth.contains("realm=\"pbx\""));
    assert!(h.statuses(Side::Server).iter().all(|s| *s < 200));

    challenge(&mut h, &retry);
    h.response(Side::Server, 407);
    assert_eq!(ended(&h), [EndReason::Rejected { status: 407 }]);
    h.settle_and_check();
}

#[test]
fn far_side_silence_is_408_to_the_caller() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    h.request(Side::Pbx, Method::Invite);
    h.advance(Duration::from_secs(31));
    assert!(!h.statuses(Side::Server).contains(&408));
    h.advance(Duration::from_secs(2)); // timer B = 64*T1 = 32 s
    h.response(Side::Server, 408);
    assert_eq!(ended(&h), [EndReason::Timeout]);
    assert!(h.media.live.is_empty());
    h.settle_and_check();
}

#[test]
fn ringing_forever_ends_with_timer_c_as_408() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    h.advance(Duration::from_secs(181));
    h.response(Side::Server, 408);
    assert_eq!(ended(&h), [EndReason::Timeout]);
    h.settle_and_check();
}

#[test]
fn unreachable_far_side_is_503_with_retry_after() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    h.request(Side::Pbx, Method::Invite);
    h.transport_error(Side::Pbx);
    let r = h.response(Side::Server, 503);
    assert_eq!(r.headers.other("Retry-After"), Some("30"));
    assert_eq!(ended(&h), [EndReason::Unreachable]);
    h.settle_and_check();
}

#[test]
fn refusals_before_a_call_exists() {
    // name, media refusal, offer, extra headers, status, Retry-After expected
    type Case<'a> = (
        &'a str,
        Option<MediaRefusal>,
        Option<&'a str>,
        &'a str,
        u16,
        bool,
    );
    let cases: [Case; 7] = [
        (
            "exhausted",
            Some(MediaRefusal::Exhausted),
            Some(SERVER_OFFER),
            "",
            503,
            true,
        ),
        (
            "no TURN allocation ready",
            Some(MediaRefusal::RelayUnavailable {
                reason: "no TURN allocation ready on 198.51.100.7:3478".into(),
            }),
            Some(SERVER_OFFER),
            "",
            503,
            true,
        ),
        (
            "media draining",
            Some(MediaRefusal::Draining),
            Some(SERVER_OFFER),
            "",
            503,
            true,
        ),
        (
            "bad sdp",
            Some(MediaRefusal::BadSdp {
                reason: "no audio".into(),
            }),
            Some(SERVER_OFFER),
            "",
            488,
            false,
        ),
        ("no offer", None, None, "", 488, false),
        (
            "require",
            None,
            Some(SERVER_OFFER),
            "Require: 100rel\r\n",
            420,
            false,
        ),
        (
            "internal",
            Some(MediaRefusal::Internal {
                reason: "bug".into(),
            }),
            Some(SERVER_OFFER),
            "",
            500,
            false,
        ),
    ];
    for (name, refusal, sdp, extra, status, retry_after) in cases {
        let mut h = Harness::default();
        h.media.refuse_offer = refusal;
        h.invite(Side::Server, "c1", sdp, extra);
        let r = h.response(Side::Server, status);
        assert_eq!(
            r.headers.other("Retry-After").is_some(),
            retry_after,
            "{name}"
        );
        assert_eq!(
            h.count(Side::Pbx, |_| true),
            0,
            "{name}: nothing sent to the PBX"
        );
        assert_eq!(refused(&h), [status], "{name}");
        assert_eq!(h.b2bua.calls(), 0, "{name}");
        h.settle_and_check();
    }
}

#[test]
fn draining_refuses_invites_and_options_with_retry_after() {
    let mut h = Harness::default();
    let (_, _) = established(&mut h, "live");
    h.b2bua.set_draining(true);
    h.invite(Side::Server, "c2", Some(SERVER_OFFER), "");
    assert_eq!(
        h.response(Side::Server, 503).headers.other("Retry-After"),
        Some("30")
    );
    assert_eq!(h.media.allocated, 1, "no media asked for while draining");
    let via = h.via(Side::Pbx);
    let opts = format!(
        "OPTIONS sip:xcc@{PBX_LOCAL} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@{PBX_PEER}>;tag=o1\r\nTo: <sip:xcc@{PBX_LOCAL}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    h.inject_bytes(Side::Pbx, opts.as_bytes());
    assert!(
        h.response(Side::Pbx, 503)
            .headers
            .other("Retry-After")
            .is_some()
    );
    assert_eq!(h.b2bua.calls(), 1, "the call in progress continues");
    h.hangup(1, HangupReason::Drain);
    h.settle_and_check();
}

#[test]
fn max_forwards_zero_is_483() {
    let mut h = Harness::default();
    let via = h.via(Side::Server);
    let text = format!(
        "INVITE sip:1001@{SERVER_LOCAL} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 0\r\nFrom: <sip:a@{SERVER_PEER}>;tag=a\r\nTo: <sip:1001@{SERVER_LOCAL}>\r\nCall-ID: mf\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{SERVER_PEER}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SERVER_OFFER}",
        SERVER_OFFER.len()
    );
    h.inject_bytes(Side::Server, text.as_bytes());
    h.response(Side::Server, 483);
    assert_eq!(h.media.allocated, 0);
    h.settle_and_check();
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Server, &cancel);
    h.response(Side::Server, 487);
    assert_eq!(
        h.statuses(Side::Server),
        [100, 200],
        "Trying, then the CANCEL's own 200"
    );
    assert!(h.media.live.is_empty(), "media released at once");
    // RFC 3261 §9.1: no CANCEL before a provisional.
    assert_eq!(
        h.count(
            Side::Pbx,
            |m| matches!(m, Message::Request(r) if r.method == Method::Cancel)
        ),
        0
    );
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    let c = h.request(Side::Pbx, Method::Cancel);
    assert_eq!(c.headers.via[0].branch(), out.headers.via[0].branch());
    h.reply(Side::Pbx, &c, 200, None, None);
    h.reply(Side::Pbx, &out, 487, Some("p1"), None);
    h.request(Side::Pbx, Method::Ack);
    assert_eq!(ended(&h), [EndReason::Cancelled]);
    assert_eq!(
        h.statuses(Side::Server),
        [100, 200],
        "nothing more to the caller"
    );
    h.settle_and_check();
}

#[test]
fn cancel_after_ringing_is_forwarded_at_once() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Server, &cancel);
    h.response(Side::Server, 487);
    let c = h.request(Side::Pbx, Method::Cancel);
    h.reply(Side::Pbx, &c, 200, None, None);
    h.reply(Side::Pbx, &out, 487, Some("p1"), None);
    h.settle_and_check();
}

#[test]
fn a_200_racing_the_cancel_is_acked_and_byed() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Server, &cancel);
    h.response(Side::Server, 487);
    let c = h.request(Side::Pbx, Method::Cancel);
    // The PBX answered before it saw the CANCEL.
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    h.reply(Side::Pbx, &c, 481, None, None);
    let ack = h.request(Side::Pbx, Method::Ack);
    let bye = h.request(Side::Pbx, Method::Bye);
    assert_eq!(ack.headers.to.tag(), Some("p1"));
    assert_eq!(bye.headers.call_id, out.headers.call_id);
    assert_eq!(bye.uri, Harness::contact(Side::Pbx).uri);
    h.reply(Side::Pbx, &bye, 200, None, None);
    assert_eq!(h.count(Side::Server, |m| matches!(m, Message::Response(r) if r.status == 200 && r.headers.cseq.method == "INVITE")), 0);
    // A retransmission of that 200 is re-ACKed, not BYEd again.
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    h.request(Side::Pbx, Method::Ack);
    assert_eq!(
        h.count(
            Side::Pbx,
            |m| matches!(m, Message::Request(r) if r.method == Method::Bye)
        ),
        0
    );
    assert_eq!(ended(&h), [EndReason::Cancelled]);
    h.settle_and_check();
}

#[test]
fn cancelled_call_whose_far_side_never_answers_is_forgotten() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    h.request(Side::Pbx, Method::Invite);
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Server, &cancel);
    h.response(Side::Server, 487);
    h.settle_and_check();
}

#[test]
fn requests_for_unknown_dialogs_get_481() {
    let mut h = Harness::default();
    for method in ["BYE", "INFO", "INVITE", "UPDATE"] {
        let via = h.via(Side::Pbx);
        let text = format!(
            "{method} sip:xcc@{PBX_LOCAL} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@{PBX_PEER}>;tag=a\r\nTo: <sip:xcc@{PBX_LOCAL}>;tag=nosuch\r\nCall-ID: gone\r\nCSeq: 5 {method}\r\nContact: <sip:pbx@{PBX_PEER}>\r\nContent-Length: 0\r\n\r\n"
        );
        h.inject_bytes(Side::Pbx, text.as_bytes());
        h.response(Side::Pbx, 481);
    }
    // And after a call ended, its dialog is unknown too.
    let (_, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.new_request(Method::Bye, via, Bytes::new()));
    h.response(Side::Pbx, 200);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.new_request(Method::Bye, via, Bytes::new()));
    h.response(Side::Pbx, 481);
    assert!(h.b2bua.counters().unmatched >= 5);
    h.settle_and_check();
}

#[test]
fn hangup_of_an_answered_call_byes_both_sides() {
    let mut h = Harness::default();
    let (server, pbx) = established(&mut h, "c1");
    h.hangup(1, HangupReason::MediaTimeout);
    let b1 = h.request(Side::Server, Method::Bye);
    let b2 = h.request(Side::Pbx, Method::Bye);
    assert_eq!(b1.headers.call_id, server.key.call_id);
    assert_eq!(b2.headers.call_id, pbx.key.call_id);
    assert!(h.media.live.is_empty());
    assert_eq!(ended(&h), [EndReason::Hangup(HangupReason::MediaTimeout)]);
    h.reply(Side::Server, &b1, 200, None, None);
    h.reply(Side::Pbx, &b2, 200, None, None);
    // Unknown / already ended ids are ignored.
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn hangup_while_ringing_is_487_and_cancel() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    h.hangup(1, HangupReason::Api);
    h.response(Side::Server, 487);
    let c = h.request(Side::Pbx, Method::Cancel);
    h.reply(Side::Pbx, &c, 200, None, None);
    h.reply(Side::Pbx, &out, 487, Some("p1"), None);
    assert_eq!(ended(&h), [EndReason::Hangup(HangupReason::Api)]);
    h.settle_and_check();
}

#[test]
fn reinvite_hold_is_reoffered_relayed_and_answered() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    let hold = SERVER_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let re = server.new_request(Method::Invite, via, Bytes::from(hold));
    h.send(Side::Server, &re);
    assert!(h.media.log.contains(&"reoffer 1 server".to_owned()));
    let out = h.request(Side::Pbx, Method::Invite);
    assert_eq!(out.headers.call_id, pbx.key.call_id);
    assert_eq!(out.headers.to.tag(), Some(pbx.key.local_tag.as_str()));
    assert_eq!(
        std::str::from_utf8(&out.body).unwrap(),
        FakeMedia::sdp(1, "reoffer")
    );
    pbx.handle_request(&out).unwrap();
    h.reply(Side::Pbx, &out, 200, None, Some(PBX_ANSWER));
    h.request(Side::Pbx, Method::Ack);
    let ok = h.response(Side::Server, 200);
    assert_eq!(ok.headers.cseq.seq, re.headers.cseq.seq);
    assert_eq!(
        std::str::from_utf8(&ok.body).unwrap(),
        FakeMedia::sdp(1, "answer")
    );
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.ack(re.headers.cseq.seq, via, Bytes::new()),
    );
    // Then the PBX re-INVITEs (resume) the other way.
    let via = h.via(Side::Pbx);
    let re2 = pbx.new_request(Method::Invite, via, Bytes::from(PBX_ANSWER));
    h.send(Side::Pbx, &re2);
    let out2 = h.request(Side::Server, Method::Invite);
    h.reply(Side::Server, &out2, 200, None, Some(SERVER_OFFER));
    h.request(Side::Server, Method::Ack);
    h.response(Side::Pbx, 200);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.ack(re2.headers.cseq.seq, via, Bytes::new()));
    assert_eq!(h.b2bua.calls(), 1);
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Bye, via, Bytes::new()),
    );
    h.settle_and_check();
    assert!(h.media.pending.is_empty());
}

#[test]
fn reinvite_glare_is_491() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    let out = h.request(Side::Pbx, Method::Invite);
    let via = h.via(Side::Pbx);
    let crossing = pbx.new_request(Method::Invite, via, Bytes::from(PBX_ANSWER));
    h.send(Side::Pbx, &crossing);
    h.response(Side::Pbx, 491);
    // The first re-INVITE completes normally.
    pbx.handle_request(&out).unwrap();
    h.reply(Side::Pbx, &out, 200, None, Some(PBX_ANSWER));
    h.response(Side::Server, 200);
    assert_eq!(h.b2bua.calls(), 1);
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn refused_reoffer_is_488_and_the_call_keeps_its_media() {
    let mut h = Harness::default();
    let (mut server, _) = established(&mut h, "c1");
    h.media.refuse_reoffer = Some(MediaRefusal::BadSdp {
        reason: "no common codec".into(),
    });
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from("v=0\r\n"));
    h.send(Side::Server, &re);
    let r = h.response(Side::Server, 488);
    assert!(
        r.headers
            .other("Warning")
            .unwrap()
            .contains("no common codec")
    );
    assert_eq!(h.count(Side::Pbx, |_| true), 0, "nothing relayed");
    assert_eq!(h.b2bua.calls(), 1);
    assert_eq!(h.media.live.len(), 1);
    // The call goes on: a later re-INVITE works.
    h.media.refuse_reoffer = None;
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    h.request(Side::Pbx, Method::Invite);
    h.hangup(1, HangupReason::Api);
    h.response(Side::Server, 487);
    h.settle_and_check();
}

#[test]
fn far_side_refusing_a_reinvite_is_relayed_and_the_offer_abandoned() {
    let mut h = Harness::default();
    let (mut server, _) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 488, None, None);
    h.response(Side::Server, 488);
    assert!(h.media.log.contains(&"abandon 1".to_owned()));
    assert_eq!(h.b2bua.calls(), 1, "488 keeps the call");
    // A 481 from the far side ends the dialog (RFC 3261 §14.1).
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 481, None, None);
    h.response(Side::Server, 481);
    h.request(Side::Server, Method::Bye);
    h.request(Side::Pbx, Method::Bye);
    assert_eq!(ended(&h), [EndReason::ReInviteFailed { status: 481 }]);
    h.settle_and_check();
}

#[test]
fn our_200_is_retransmitted_until_acked_and_the_call_ends_without_ack() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    h.clear();
    h.advance(Duration::from_millis(4000));
    // T1 doubling: 0.5, 1.5, 3.5 s.
    assert_eq!(h.statuses(Side::Server), [200, 200, 200]);
    h.advance(Duration::from_secs(29));
    h.request(Side::Server, Method::Bye);
    h.request(Side::Pbx, Method::Bye);
    assert_eq!(ended(&h), [EndReason::AckTimeout]);
    h.settle_and_check();
}

#[test]
fn retransmitted_far_200_is_reacked() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    let first = h.request(Side::Pbx, Method::Ack);
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    let again = h.request(Side::Pbx, Method::Ack);
    assert_eq!(first, again, "the same ACK");
    assert_eq!(
        h.count(
            Side::Server,
            |m| matches!(m, Message::Response(r) if r.status == 200)
        ),
        1
    );
    assert_eq!(
        h.media
            .log
            .iter()
            .filter(|l| l.starts_with("answer"))
            .count(),
        1
    );
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn answer_refused_by_media_is_488_to_caller_and_bye_to_callee() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.media.refuse_answer = Some(MediaRefusal::BadSdp {
        reason: "no crypto".into(),
    });
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    h.request(Side::Pbx, Method::Ack);
    h.request(Side::Pbx, Method::Bye);
    h.response(Side::Server, 488);
    assert_eq!(ended(&h), [EndReason::MediaRefused]);
    h.settle_and_check();
}

#[test]
fn options_and_info_inside_and_outside_calls() {
    let mut h = Harness::default();
    let via = h.via(Side::Server);
    let opts = format!(
        "OPTIONS sip:xcc@{SERVER_LOCAL} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:s@{SERVER_PEER}>;tag=o1\r\nTo: <sip:xcc@{SERVER_LOCAL}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    h.inject_bytes(Side::Server, opts.as_bytes());
    assert!(
        h.response(Side::Server, 200)
            .headers
            .other("Allow")
            .unwrap()
            .contains("INVITE")
    );

    let (mut server, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Options, via, Bytes::new()),
    );
    h.response(Side::Server, 200);
    assert_eq!(
        h.count(Side::Pbx, |_| true),
        0,
        "in-dialog OPTIONS answered locally"
    );

    let via = h.via(Side::Server);
    let mut info = server.new_request(Method::Info, via, Bytes::from("Signal=5\r\n"));
    info.headers.content_type = Some("application/dtmf-relay".into());
    h.send(Side::Server, &info);
    let out = h.request(Side::Pbx, Method::Info);
    assert_eq!(
        out.headers.content_type.as_deref(),
        Some("application/dtmf-relay")
    );
    assert_eq!(&out.body[..], b"Signal=5\r\n");
    pbx.handle_request(&out).unwrap();
    h.reply(Side::Pbx, &out, 200, None, None);
    let r = h.response(Side::Server, 200);
    assert_eq!(r.headers.cseq.method, "INFO");
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn malformed_input_is_answered_or_counted_never_a_panic() {
    let mut h = Harness::default();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00\x01\x02",
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\r\n",
        b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:20900;branch=z9hG4bKm\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: m\r\nCSeq: x INVITE\r\nContent-Length: 0\r\n\r\n",
    ];
    for g in garbage {
        h.inject_bytes(Side::Server, g);
        h.inject_bytes(Side::Pbx, g);
    }
    assert!(h.unparseable <= 2, "only 400s echoing the broken CSeq");
    let c = h.b2bua.counters();
    assert!(c.malformed_answered + c.malformed_dropped >= 8, "{c:?}");
    assert!(h.statuses(Side::Server).iter().all(|s| *s == 400));
    assert_eq!(h.media.allocated, 0);
    h.settle_and_check();
}

#[test]
fn many_calls_are_limited_by_the_media_pool() {
    let mut h = Harness::default();
    h.media.capacity = Some(50);
    for i in 0..60 {
        h.invite(Side::Server, &format!("c{i}"), Some(SERVER_OFFER), "");
    }
    assert_eq!(h.b2bua.calls(), 50);
    assert_eq!(
        h.count(
            Side::Server,
            |m| matches!(m, Message::Response(r) if r.status == 503)
        ),
        10
    );
    // Every PBX INVITE rejected: all released.
    let outs: Vec<_> = h
        .outbox
        .iter()
        .filter_map(|(s, _, m)| match m {
            Message::Request(r) if *s == Side::Pbx && r.method == Method::Invite => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(outs.len(), 50);
    for out in outs {
        h.reply(Side::Pbx, &out, 480, Some("x"), None);
    }
    h.settle_and_check();
}

#[test]
fn options_monitor_reports_peer_health() {
    let mut cfg = config();
    cfg.pbx.options_interval = Some(Duration::from_secs(10));
    cfg.pbx.down_after = 2;
    let mut h = Harness::new(cfg);
    h.advance(Duration::ZERO);
    let probe = h.request(Side::Pbx, Method::Options);
    h.reply(Side::Pbx, &probe, 200, None, None);
    assert!(h.events.contains(&B2buaEvent::PeerHealth {
        side: Side::Pbx,
        health: Health::Up
    }));
    assert_eq!(h.b2bua.health(Side::Pbx), Health::Up);
    assert_eq!(h.b2bua.health(Side::Server), Health::Unknown);
    // Unanswered probes: down.
    h.advance(Duration::from_secs(120));
    assert_eq!(h.b2bua.health(Side::Pbx), Health::Down);
    assert!(h.events.contains(&B2buaEvent::PeerHealth {
        side: Side::Pbx,
        health: Health::Down
    }));
}

#[test]
fn tcp_pbx_gets_no_retransmissions_and_tcp_everywhere() {
    let mut cfg = config();
    cfg.pbx.peer.transport = Transport::Tcp;
    let mut h = Harness::new(cfg);
    h.transports[Side::Pbx.index()] = Transport::Tcp;
    let inv = h.invite(Side::Pbx, "t1", Some(PBX_ANSWER), "");
    let out = h.request(Side::Server, Method::Invite);
    h.reply(Side::Server, &out, 200, Some("s1"), Some(SERVER_OFFER));
    let ok = h.response(Side::Pbx, 200);
    assert!(ok.headers.contact[0].uri.ends_with(";transport=tcp"));
    h.clear();
    // Over TCP XCC's 200 is not retransmitted (RFC 3261 §13.3.1.4), but the ACK is still awaited.
    h.advance(Duration::from_secs(10));
    assert_eq!(h.statuses(Side::Pbx), Vec::<u16>::new(), "{}", h.dump());
    let pbx = uac_dialog(Side::Pbx, &inv, &ok);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.ack(1, via, Bytes::new()));
    // The server hangs up: the BYE to the PBX goes over TCP with a TCP Via.
    let mut server = uas_dialog(Side::Server, &out, "s1");
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Bye, via, Bytes::new()),
    );
    let bye = h.request(Side::Pbx, Method::Bye);
    assert_eq!(bye.headers.via[0].transport, "TCP");
    h.reply(Side::Pbx, &bye, 200, None, None);
    h.settle_and_check();
}

#[test]
fn tcp_caller_that_never_acks_is_hung_up() {
    let mut cfg = config();
    cfg.server.peer.transport = Transport::Tcp;
    let mut h = Harness::new(cfg);
    h.transports[Side::Server.index()] = Transport::Tcp;
    h.invite(Side::Server, "t2", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    h.response(Side::Server, 200);
    h.advance(Duration::from_secs(33));
    assert_eq!(
        h.statuses(Side::Server),
        [100],
        "no retransmission over TCP"
    );
    h.request(Side::Server, Method::Bye);
    h.request(Side::Pbx, Method::Bye);
    assert_eq!(ended(&h), [EndReason::AckTimeout]);
    h.settle_and_check();
}

#[test]
fn routes_and_record_route_are_followed_on_the_callers_dialog() {
    let mut h = Harness::default();
    let extra = "Record-Route: <sip:127.0.0.9:20999;lr>\r\n";
    h.invite(Side::Server, "rr", Some(SERVER_OFFER), extra);
    let out = h.request(Side::Pbx, Method::Invite);
    assert!(
        out.headers.route.is_empty(),
        "the far dialog has its own route set"
    );
    h.reply(Side::Pbx, &out, 200, Some("p1"), Some(PBX_ANSWER));
    let ok = h.response(Side::Server, 200);
    assert_eq!(
        ok.headers.record_route.len(),
        1,
        "Record-Route echoed in the 2xx"
    );
    h.hangup(1, HangupReason::Api);
    // The BYE to the server goes through the recorded proxy.
    let (s, p, m) = h
        .outbox
        .iter()
        .find(|(s, _, m)| {
            *s == Side::Server && matches!(m, Message::Request(r) if r.method == Method::Bye)
        })
        .cloned()
        .expect("BYE to the server");
    assert_eq!(s, Side::Server);
    assert_eq!(p.addr.to_string(), "127.0.0.9:20999");
    let Message::Request(bye) = m else {
        unreachable!()
    };
    assert_eq!(bye.headers.route[0].uri, "sip:127.0.0.9:20999;lr");
    assert_eq!(bye.uri, format!("sip:alice@{SERVER_PEER}"));
    h.clear();
    h.settle_and_check();
}

#[test]
fn cancelled_reinvite_is_487_cancelled_onwards_and_the_call_goes_on() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    let out = h.request(Side::Pbx, Method::Invite);
    pbx.handle_request(&out).unwrap();
    h.reply(Side::Pbx, &out, 100, None, None);
    let mut cancel = re.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Server, &cancel);
    h.response(Side::Server, 487);
    assert!(h.media.log.contains(&"abandon 1".to_owned()));
    let c = h.request(Side::Pbx, Method::Cancel);
    h.reply(Side::Pbx, &c, 200, None, None);
    // The PBX had already accepted: its 200 is ACKed, nothing more reaches the server.
    h.reply(Side::Pbx, &out, 200, None, Some(PBX_ANSWER));
    h.request(Side::Pbx, Method::Ack);
    assert_eq!(
        h.count(
            Side::Server,
            |m| matches!(m, Message::Response(r) if r.status == 200)
        ),
        1,
        "only the CANCEL's 200: {}",
        h.dump()
    );
    assert_eq!(h.b2bua.calls(), 1);
    assert!(h.media.pending.is_empty());
    // A later re-INVITE works.
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::from(SERVER_OFFER));
    h.send(Side::Server, &re);
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 200, None, Some(PBX_ANSWER));
    h.response(Side::Server, 200);
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn merged_invite_with_a_new_branch_is_482_and_the_call_goes_on() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "m1", Some(SERVER_OFFER), "");
    h.request(Side::Pbx, Method::Invite);
    let mut again = inv.clone();
    again.headers.via[0] = h.via(Side::Server);
    h.send(Side::Server, &again);
    h.response(Side::Server, 482);
    assert_eq!(
        h.count(Side::Pbx, |_| true),
        0,
        "nothing new towards the PBX"
    );
    assert_eq!(h.b2bua.calls(), 1);
    assert_eq!(h.media.live.len(), 1, "the live call keeps its media");
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn offerless_reinvite_is_answered_locally_with_the_last_sdp() {
    let mut h = Harness::default();
    let (mut server, _) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    let re = server.new_request(Method::Invite, via, Bytes::new());
    h.send(Side::Server, &re);
    let ok = h.response(Side::Server, 200);
    assert_eq!(
        std::str::from_utf8(&ok.body).unwrap(),
        FakeMedia::sdp(1, "answer"),
        "the SDP XCC last gave the server"
    );
    assert_eq!(
        h.count(Side::Pbx, |_| true),
        0,
        "a session refresh is not relayed"
    );
    assert!(!h.media.log.iter().any(|l| l.starts_with("reoffer")));
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.ack(re.headers.cseq.seq, via, Bytes::new()),
    );
    h.clear();
    h.advance(Duration::from_secs(5));
    assert_eq!(
        h.statuses(Side::Server),
        Vec::<u16>::new(),
        "ACKed: no retransmission"
    );
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn update_is_answered_locally_and_out_of_order_cseq_is_500() {
    let mut h = Harness::default();
    let (_, mut pbx) = established(&mut h, "c1");
    let via = h.via(Side::Pbx);
    h.send(
        Side::Pbx,
        &pbx.new_request(Method::Update, via, Bytes::new()),
    );
    h.response(Side::Pbx, 200);
    let via = h.via(Side::Pbx);
    h.send(
        Side::Pbx,
        &pbx.new_request(Method::Update, via, Bytes::from(PBX_ANSWER)),
    );
    h.response(Side::Pbx, 488);
    let via = h.via(Side::Pbx);
    let mut stale = pbx.new_request(Method::Info, via, Bytes::new());
    stale.headers.cseq.seq = 1;
    h.send(Side::Pbx, &stale);
    h.response(Side::Pbx, 500);
    assert_eq!(h.count(Side::Server, |_| true), 0, "nothing relayed");
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn pbx_caller_cancels_and_the_server_leg_is_cancelled() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Pbx, "p1", Some(PBX_ANSWER), "");
    let out = h.request(Side::Server, Method::Invite);
    h.reply(Side::Server, &out, 180, Some("s1"), None);
    h.response(Side::Pbx, 180);
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = "CANCEL".into();
    cancel.body = Bytes::new();
    cancel.headers.content_type = None;
    h.send(Side::Pbx, &cancel);
    h.response(Side::Pbx, 487);
    let c = h.request(Side::Server, Method::Cancel);
    h.reply(Side::Server, &c, 200, None, None);
    h.reply(Side::Server, &out, 487, Some("s1"), None);
    h.request(Side::Server, Method::Ack);
    assert_eq!(ended(&h), [EndReason::Cancelled]);
    h.settle_and_check();
}

#[test]
fn challenge_without_credentials_is_relayed() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 401, Some("p1"), None);
    h.response(Side::Server, 401);
    assert_eq!(
        h.count(
            Side::Pbx,
            |m| matches!(m, Message::Request(r) if r.method == Method::Invite)
        ),
        0,
        "no retry without credentials"
    );
    h.settle_and_check();
}

#[test]
fn relayed_info_that_times_out_is_408_to_its_sender() {
    let mut h = Harness::default();
    let (mut server, _) = established(&mut h, "c1");
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Info, via, Bytes::new()),
    );
    h.request(Side::Pbx, Method::Info);
    h.advance(Duration::from_secs(33)); // timer F
    let r = h.response(Side::Server, 408);
    assert_eq!(r.headers.cseq.method, "INFO");
    assert_eq!(h.b2bua.calls(), 1, "an INFO failure does not end the call");
    h.hangup(1, HangupReason::Api);
    h.settle_and_check();
}

#[test]
fn bye_on_the_early_dialog_acts_as_cancel() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 180, Some("p1"), None);
    let ringing = h.response(Side::Server, 180);
    let mut early = uac_dialog(Side::Server, &inv, &ringing);
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &early.new_request(Method::Bye, via, Bytes::new()),
    );
    h.response(Side::Server, 487);
    let c = h.request(Side::Pbx, Method::Cancel);
    h.reply(Side::Pbx, &c, 200, None, None);
    h.reply(Side::Pbx, &out, 487, Some("p1"), None);
    assert_eq!(ended(&h), [EndReason::Cancelled]);
    h.settle_and_check();
}

#[test]
fn a_forked_second_2xx_is_acked_and_byed_and_the_call_keeps_the_first() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    h.reply(Side::Pbx, &out, 200, Some("fork-a"), Some(PBX_ANSWER));
    h.request(Side::Pbx, Method::Ack);
    h.response(Side::Server, 200);
    h.reply(Side::Pbx, &out, 200, Some("fork-b"), Some(PBX_ANSWER));
    let ack = h.request(Side::Pbx, Method::Ack);
    let bye = h.request(Side::Pbx, Method::Bye);
    assert_eq!(ack.headers.to.tag(), Some("fork-b"));
    assert_eq!(bye.headers.to.tag(), Some("fork-b"));
    assert_eq!(h.b2bua.calls(), 1, "the first answer keeps the call");
    assert_eq!(
        h.count(
            Side::Server,
            |m| matches!(m, Message::Response(r) if r.status == 200)
        ),
        0
    );
    h.hangup(1, HangupReason::Api);
    let bye_a = h.request(Side::Pbx, Method::Bye);
    assert_eq!(bye_a.headers.to.tag(), Some("fork-a"));
    h.settle_and_check();
}

/// TCP frames arrive parsed: `handle_message` runs the same flow as bytes (100 to the caller,
/// INVITE to the PBX), and a frame that did not parse is answered 400 on its side through
/// `handle_malformed` instead of being lost.
#[test]
fn parsed_and_malformed_stream_frames_are_handled_like_datagrams() {
    let mut h = Harness::default();
    let inv = h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    // `invite` injected bytes; start over with the same request as a parsed message.
    let mut h = Harness::default();
    let source = h.source(Side::Server);
    h.b2bua.handle_message(
        h.now,
        Side::Server,
        source,
        Message::Request(inv),
        &mut h.media,
    );
    h.collect_now();
    h.response(Side::Server, 100);
    h.request(Side::Pbx, Method::Invite);

    let mut framer = xcc_sip::framing::StreamFramer::default();
    framer.push(
        b"OPTIONS sip:xcc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:4900;branch=z9hG4bK-bad\r\n\
          From: <sip:s@127.0.0.1>;tag=1\r\nTo: <sip:xcc@127.0.0.1>\r\nCall-ID: bad-1\r\n\
          CSeq: one OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    let Ok(Some(xcc_sip::framing::Frame::Malformed(err))) = framer.poll_frame() else {
        panic!("the frame should be malformed");
    };
    h.b2bua.handle_malformed(Side::Server, source, &err);
    // Read raw: the 400 copies the broken CSeq back, so it does not parse itself.
    let (side, t) = h.b2bua.poll_transmit().expect("a 400");
    assert_eq!(side, Side::Server);
    assert_eq!(t.target, xcc_sip::endpoint::Target::Peer(source));
    let text = String::from_utf8_lossy(&t.bytes);
    assert!(text.starts_with("SIP/2.0 400 "), "{text}");
    assert!(text.contains("Call-ID: bad-1\r\n"), "{text}");
    assert_eq!(h.b2bua.counters().malformed_answered, 1);
}

#[test]
fn replaced_pbx_peer_takes_new_calls_and_running_calls_keep_their_dialogs() {
    let mut h = Harness::default();
    let (_server, pbx) = established(&mut h, "c1");
    let moved = addr("127.0.0.1:20571");
    let mut next = xcc_sip::b2bua::SideConfig::new(
        xcc_sip::endpoint::Peer {
            addr: moved,
            transport: Transport::Udp,
        },
        addr("127.0.0.1:1"),
    );
    next.options_interval = Some(Duration::from_secs(30));
    let now = h.now;
    h.b2bua.set_side(now, Side::Pbx, next);
    h.collect_now();

    // A new call goes to the new peer, with its address in the Request-URI.
    h.invite(Side::Server, "c2", Some(SERVER_OFFER), "");
    let sent: Vec<_> = h
        .outbox
        .iter()
        .filter_map(|(side, p, m)| match m {
            Message::Request(r) if *side == Side::Pbx && r.method == Method::Invite => {
                Some((p.addr, r.uri.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [(moved, "sip:1001@127.0.0.1:20571".to_owned())],
        "{}",
        h.dump()
    );
    // The monitor restarted towards the new peer, from XCC's unchanged local address.
    h.advance(Duration::from_millis(1));
    let probe = h.outbox.iter().find_map(|(side, p, m)| match m {
        Message::Request(r) if *side == Side::Pbx && r.method == Method::Options => {
            Some((p.addr, r.headers.via[0].sent_by()))
        }
        _ => None,
    });
    let (to, via) = probe.expect("an OPTIONS probe");
    assert_eq!(to, moved);
    assert!(via.contains(PBX_LOCAL), "{via}");

    // The established call's BYE follows its dialog (the old PBX's Contact), not the new peer.
    h.hangup(1, HangupReason::Api);
    let bye = h
        .outbox
        .iter()
        .find_map(|(side, p, m)| match m {
            Message::Request(r) if *side == Side::Pbx && r.method == Method::Bye => {
                Some((p.addr, r.headers.call_id.clone()))
            }
            _ => None,
        })
        .expect("a BYE to the PBX");
    assert_eq!(bye, (addr(PBX_PEER), pbx.key.call_id.clone()));
}

#[test]
fn a_call_challenged_after_the_pbx_moved_retries_where_its_invite_went() {
    let mut h = Harness::default();
    h.invite(Side::Server, "c1", Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    let mut next = xcc_sip::b2bua::SideConfig::new(
        xcc_sip::endpoint::Peer {
            addr: addr("127.0.0.1:20571"),
            transport: Transport::Udp,
        },
        addr(PBX_LOCAL),
    );
    next.credentials = Some(Credentials {
        username: "xcc".into(),
        password: "secret".into(),
    });
    let now = h.now;
    h.b2bua.set_side(now, Side::Pbx, next);
    let mut r = Response::for_request(&out, 401, "Unauthorized", Some("p1"));
    r.headers.other.push(xcc_sip::Header {
        name: "WWW-Authenticate".into(),
        value: "Digest realm=\"pbx\", nonce=\"abc\", qop=\"auth\"".into(),
    });
    h.inject(Side::Pbx, &Message::Response(r));
    // `request` checks the destination: the old PBX, which issued the challenge.
    let retry = h.request(Side::Pbx, Method::Invite);
    assert_eq!(retry.headers.call_id, out.headers.call_id);
    assert!(retry.headers.other("Authorization").is_some());
}
