//! A confirmed call survives a restart of the B2BUA: its dialog-state blob (emitted as
//! `B2buaEvent::DialogState`) restores it into a fresh B2BUA, after which BYE and re-INVITE from
//! either side work as before. Virtual time, fake media, leak checks as in `b2bua_flows.rs`.

mod b2bua_common;

use b2bua_common::*;
use bytes::Bytes;
use xcc_core::ids::CallId;
use xcc_sip::b2bua::{B2bua, B2buaEvent, EndReason, HangupReason, Side};
use xcc_sip::{Error, Method};

/// The latest dialog-state blob the B2BUA emitted for `call`.
fn last_blob(h: &Harness, call: u64) -> Vec<u8> {
    h.events
        .iter()
        .rev()
        .find_map(|e| match e {
            B2buaEvent::DialogState { call: c, blob } if c.0 == call => Some(blob.clone()),
            _ => None,
        })
        .expect("a DialogState event for the call")
}

/// A fresh process: new B2BUA (other seed), the call's media already live (the store restored
/// it), and the dialogs restored from `blob`.
fn restarted(blob: &[u8]) -> Harness {
    let mut h = Harness::default();
    h.b2bua = B2bua::new(config(), h.now, [9; 32]);
    h.media.live.insert(1);
    h.media.allocated = 1;
    h.b2bua
        .restore_dialogs(CallId(1), blob, h.now)
        .expect("restore");
    assert_eq!(h.b2bua.calls(), 1);
    assert_eq!(h.b2bua.transactions(), [0, 0], "no transaction in flight");
    h.collect_now();
    assert!(h.take_events().is_empty(), "restoring emits nothing");
    h
}

#[test]
fn the_answer_emits_the_dialog_state_and_in_dialog_requests_update_it() {
    let mut h = Harness::default();
    let (mut server, _pbx) = established(&mut h, "c1");
    let first = last_blob(&h, 1);
    assert!(first.starts_with(b"{\"v\":1,"), "versioned JSON");
    assert!(first.len() < 2048, "compact: {} bytes", first.len());
    // An in-dialog request moves the peer's CSeq: a new blob follows.
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Options, via, Bytes::new()),
    );
    h.response(Side::Server, 200);
    assert_ne!(last_blob(&h, 1), first);
    assert_eq!(h.b2bua.export_dialogs(CallId(1)).unwrap(), last_blob(&h, 1));
    assert_eq!(h.b2bua.export_dialogs(CallId(2)), None);
}

#[test]
fn after_a_restart_a_bye_from_the_pbx_reaches_the_server() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let blob = last_blob(&h, 1);

    let mut h = restarted(&blob);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.new_request(Method::Bye, via, Bytes::new()));
    h.response(Side::Pbx, 200);
    let bye = h.request(Side::Server, Method::Bye);
    assert_eq!(bye.headers.call_id, "c1");
    server
        .handle_request(&bye)
        .expect("the BYE is in the server's dialog, CSeq in order");
    h.reply(Side::Server, &bye, 200, None, None);
    assert!(matches!(
        h.events.as_slice(),
        [B2buaEvent::CallEnded {
            reason: EndReason::Bye { from: Side::Pbx },
            ..
        }]
    ));
    h.settle_and_check();
}

#[test]
fn after_a_restart_a_bye_from_the_server_reaches_the_pbx() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let blob = last_blob(&h, 1);

    let mut h = restarted(&blob);
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Bye, via, Bytes::new()),
    );
    h.response(Side::Server, 200);
    let bye = h.request(Side::Pbx, Method::Bye);
    assert_eq!(bye.headers.call_id, pbx.key.call_id);
    pbx.handle_request(&bye).expect("in the PBX's dialog");
    h.reply(Side::Pbx, &bye, 200, None, None);
    h.settle_and_check();
}

#[test]
fn after_a_restart_reinvites_are_relayed_and_the_state_keeps_following() {
    let mut h = Harness::default();
    let (mut server, mut pbx) = established(&mut h, "c1");
    let blob = last_blob(&h, 1);

    let mut h = restarted(&blob);
    // An offerless re-INVITE (session refresh) is answered from the stored last SDP.
    let via = h.via(Side::Server);
    let refresh = server.new_request(Method::Invite, via, Bytes::new());
    h.send(Side::Server, &refresh);
    let ok = h.response(Side::Server, 200);
    assert_eq!(
        std::str::from_utf8(&ok.body).unwrap(),
        FakeMedia::sdp(1, "answer")
    );
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.ack(refresh.headers.cseq.seq, via, Bytes::new()),
    );
    // The PBX puts the call on hold: relayed to the server and answered.
    let via = h.via(Side::Pbx);
    let hold = PBX_ANSWER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let re = pbx.new_request(Method::Invite, via, Bytes::from(hold));
    h.send(Side::Pbx, &re);
    let out = h.request(Side::Server, Method::Invite);
    server.handle_request(&out).expect("in the server's dialog");
    h.reply(Side::Server, &out, 200, None, Some(SERVER_OFFER));
    h.request(Side::Server, Method::Ack);
    h.response(Side::Pbx, 200);
    let via = h.via(Side::Pbx);
    h.send(Side::Pbx, &pbx.ack(re.headers.cseq.seq, via, Bytes::new()));

    // A second restart after the re-INVITEs: the CSeqs stored are the new ones.
    let blob = last_blob(&h, 1);
    let mut h = restarted(&blob);
    h.hangup(1, HangupReason::Api);
    let to_server = h.request(Side::Server, Method::Bye);
    server
        .handle_request(&to_server)
        .expect("CSeq above the relayed re-INVITE's");
    let to_pbx = h.request(Side::Pbx, Method::Bye);
    pbx.handle_request(&to_pbx).expect("in the PBX's dialog");
    h.reply(Side::Server, &to_server, 200, None, None);
    h.reply(Side::Pbx, &to_pbx, 200, None, None);
    h.settle_and_check();
}

#[test]
fn damaged_unknown_or_duplicate_blobs_are_refused_without_a_panic() {
    let mut h = Harness::default();
    let _ = established(&mut h, "c1");
    let blob = last_blob(&h, 1);
    let text = String::from_utf8(blob.clone()).unwrap();

    let mut fresh = B2bua::new(config(), h.now, [9; 32]);
    let v2 = text.replacen("\"v\":1", "\"v\":2", 1);
    let no_tag = text.replacen("\"remote_tag\":\"", "\"remote_tag\":\"\",\"x\":\"", 1);
    let bad_target = text.replacen("\"remote_target\":\"sip:", "\"remote_target\":\"<>", 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"\xff\x00 not json".to_vec()),
        ("truncated", blob[..blob.len() / 2].to_vec()),
        ("unknown version", v2.into_bytes()),
        ("no version", b"{\"call\":1}".to_vec()),
        ("unknown field", no_tag.into_bytes()),
        ("bad remote target", bad_target.into_bytes()),
    ];
    for (what, bytes) in cases {
        match fresh.restore_dialogs(CallId(1), &bytes, h.now) {
            Err(Error::DialogState { reason }) => assert!(!reason.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(fresh.calls(), 0, "{what} left nothing behind");
    }
    let unknown = fresh
        .restore_dialogs(
            CallId(1),
            text.replacen("\"v\":1", "\"v\":7", 1).as_bytes(),
            h.now,
        )
        .unwrap_err();
    assert!(
        unknown.to_string().contains("unknown version 7"),
        "{unknown}"
    );
    // Stored under another call's name: refused.
    assert!(matches!(
        fresh.restore_dialogs(CallId(2), &blob, h.now),
        Err(Error::DialogState { .. })
    ));
    // The good blob restores once; a second copy is refused (the call exists).
    fresh.restore_dialogs(CallId(1), &blob, h.now).unwrap();
    assert!(matches!(
        fresh.restore_dialogs(CallId(1), &blob, h.now),
        Err(Error::DialogState { .. })
    ));
    assert_eq!(fresh.calls(), 1);
}
