//! Call setup and its failures: the caller's INVITE, the called side's provisional, 2xx and
//! non-2xx answers, digest retry, CANCEL, timeouts; and the common teardown steps.

use std::time::Instant;

use bytes::Bytes;

use super::call::{Call, Leg, OkRetransmit, Phase};
use super::compose::{self, NewInvite};
use super::{B2bua, B2buaEvent, Client, EndReason, MediaSessions, Side, config, header};
use crate::auth;
use crate::dialog::Dialog;
use crate::endpoint::Peer;
use crate::header::NameAddr;
use crate::message::{Header, Request, Response};
use crate::transaction::{TransactionKey, generate_branch};
use xcc_core::ids::CallId;

impl B2bua {
    /// An out-of-dialog INVITE from `side`: refuse it, or start a call towards the other side.
    pub(super) fn new_call(
        &mut self,
        now: Instant,
        side: Side,
        key: TransactionKey,
        req: Request,
        source: Peer,
        media: &mut impl MediaSessions,
    ) {
        let refuse = |this: &mut Self, status: u16, extra: Vec<Header>| {
            this.counters.calls_refused += 1;
            this.events
                .push_back(B2buaEvent::CallRefused { from: side, status });
            this.respond(now, side, &key, &req, status, None, None, extra);
        };
        if self.draining {
            let extra = vec![self.retry_after()];
            return refuse(self, 503, extra);
        }
        let max_forwards = req.headers.max_forwards.unwrap_or(70);
        if max_forwards == 0 {
            return refuse(self, 483, Vec::new());
        }
        if let Some(required) = req.headers.other("Require") {
            let extra = vec![header("Unsupported", required)];
            return refuse(self, 420, extra);
        }
        if req.headers.from.tag().is_none() || req.headers.contact.is_empty() {
            return refuse(
                self,
                400,
                vec![warning("From tag and Contact are required")],
            );
        }
        let Some(callee) = compose::user_of(&req.uri) else {
            let status = if req.sip_uri().is_some() { 404 } else { 416 };
            return refuse(self, status, Vec::new());
        };
        let sdp = match compose::sdp_body(&req.headers, &req.body) {
            Some(Ok(sdp)) => sdp,
            Some(Err(())) => {
                return refuse(self, 415, vec![header("Accept", "application/sdp")]);
            }
            None => {
                return refuse(self, 488, vec![warning("an SDP offer is required")]);
            }
        };
        let media_key = format!(
            "sip/{side}/{}/{}",
            req.headers.call_id,
            req.headers.from.tag().unwrap_or_default()
        );
        let offer = match media.offer(&media_key, side, &sdp) {
            Ok(o) => o,
            Err(refusal) => {
                tracing::info!(%side, %refusal, "call refused by the media plane");
                let mut extra = vec![warning(&refusal.to_string())];
                if refusal.status() == 503 {
                    extra.push(self.retry_after());
                }
                return refuse(self, refusal.status(), extra);
            }
        };
        let id = offer.call;
        if self.calls.contains_key(&id) {
            // The media plane replayed the session of `media_key` (same Call-ID and From tag as
            // a live call): a merged request, the same INVITE reaching XCC by another path with
            // a new branch (RFC 3261 §8.2.2.2). Refuse it; the live call keeps its media.
            tracing::info!(%id, %side, "merged INVITE refused");
            return refuse(self, 482, Vec::new());
        }
        let far = side.other();
        let invite_out = NewInvite {
            side: config::side_of(&self.cfg, far),
            callee: &callee,
            near: &req,
            max_forwards: max_forwards - 1,
            sdp: offer.sdp.clone(),
            user_agent: &self.cfg.user_agent,
        }
        .build(&mut self.rng);
        let local_tag = compose::token(&mut self.rng);
        let Some(near_dialog) =
            Dialog::uas(&req, &local_tag, 0, compose::contact(self.side_cfg(side)))
        else {
            media.release(id);
            return refuse(self, 400, Vec::new());
        };
        let dest = self.side_cfg(far).peer;
        let Some(out_key) = self.send(now, far, invite_out.clone(), dest) else {
            media.release(id);
            return refuse(self, 500, Vec::new());
        };
        self.dialogs.insert((side, near_dialog.key.clone()), id);
        self.invites_in.insert((side, key.clone()), id);
        self.clients
            .insert((far, out_key.clone()), Client::Invite(id));
        let mut legs = [Leg::default(), Leg::default()];
        legs[side.index()].dialog = Some(near_dialog);
        legs[far.index()].last_sdp = Some(offer.sdp);
        self.events.push_back(B2buaEvent::CallStarted {
            call: id,
            from: side,
            caller: req.headers.from.uri.clone(),
            callee,
            sip_call_id: req.headers.call_id.clone(),
        });
        self.counters.calls_started += 1;
        tracing::info!(call = %id, from = %side, "call started");
        self.calls.insert(
            id,
            Call {
                id,
                origin: side,
                origin_reliable: source.transport.is_reliable(),
                phase: Phase::Early,
                legs,
                local_tag,
                invite_in: req,
                invite_in_key: key,
                invite_out,
                invite_out_key: out_key,
                auth_tried: false,
                early_answer: None,
                cancel_wanted: false,
                media_live: true,
                ok_retx: None,
                reinvite: None,
            },
        );
    }

    /// The called side answered the call's INVITE (`side` is the called side).
    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        side: Side,
        id: CallId,
        resp: Response,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            if (200..300).contains(&resp.status) {
                self.stray_2xx(now, side, &resp, true);
            }
            return;
        };
        let status = resp.status;
        let phase = call.phase;
        if phase == Phase::Early
            && matches!(status, 401 | 407)
            && self.retry_with_credentials(now, id, &resp)
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match (phase, status) {
            (_, 100) => {}
            (Phase::Early, 101..=199) => self.relay_provisional(now, id, &resp, media),
            (Phase::Cancelling { .. }, 101..=199) if call.cancel_wanted => {
                // The provisional RFC 3261 §9.1 waits for: the deferred CANCEL goes now.
                let key = call.invite_out_key.clone();
                if let Ok(Some(k)) = self.endpoints[side.index()].cancel(now, &key) {
                    *self.counters.sides[side.index()]
                        .requests_out
                        .entry("CANCEL".to_owned())
                        .or_default() += 1;
                    self.clients.insert((side, k), Client::Fire);
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.cancel_wanted = false;
                    }
                }
            }
            (Phase::Early, 200..=299) => self.answered(now, id, resp, media),
            (Phase::Cancelling { .. }, 200..=299) => {
                // Answered anyway after our CANCEL: ACK and BYE it (the caller already has 487).
                self.remove_call(id);
                self.stray_2xx(now, side, &resp, true);
            }
            (Phase::Early, _) if status >= 300 => {
                let origin = call.origin;
                let (key, req, tag) = (
                    call.invite_in_key.clone(),
                    call.invite_in.clone(),
                    call.local_tag.clone(),
                );
                let extra: Vec<Header> = resp
                    .headers
                    .other
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("Retry-After"))
                    .cloned()
                    .collect();
                self.respond(now, origin, &key, &req, status, Some(&tag), None, extra);
                self.finish(id, EndReason::Rejected { status }, media);
                self.remove_call(id);
            }
            (Phase::Cancelling { .. }, _) if status >= 300 => self.remove_call(id),
            _ => {}
        }
    }

    /// A 180/183 for the caller, with XCC's early-media answer when the called side sent SDP.
    fn relay_provisional(
        &mut self,
        now: Instant,
        id: CallId,
        resp: &Response,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let body = match compose::sdp_body(&resp.headers, &resp.body) {
            Some(Ok(sdp)) if call.early_answer.is_none() => match media.answer(id, &sdp) {
                Ok(answer) => {
                    call.early_answer = Some(answer.clone());
                    Some(answer)
                }
                Err(refusal) => {
                    tracing::info!(call = %id, %refusal, "early-media SDP refused; relaying without");
                    None
                }
            },
            Some(Ok(_)) => call.early_answer.clone(),
            _ => None,
        };
        let (origin, key, req, tag) = (
            call.origin,
            call.invite_in_key.clone(),
            call.invite_in.clone(),
            call.local_tag.clone(),
        );
        if body.is_some() {
            call.leg_mut(origin).last_sdp.clone_from(&body);
        }
        self.respond(
            now,
            origin,
            &key,
            &req,
            resp.status,
            Some(&tag),
            body.as_deref(),
            Vec::new(),
        );
    }

    /// The called side's 2xx: ACK it, answer the caller with XCC's SDP, confirm the call.
    fn answered(
        &mut self,
        now: Instant,
        id: CallId,
        resp: Response,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let called = call.called();
        let contact = compose::contact(match called {
            Side::Server => &self.cfg.server,
            Side::Pbx => &self.cfg.pbx,
        });
        let mut for_dialog = resp.clone();
        if for_dialog.headers.contact.is_empty() {
            // No Contact: in-dialog requests go where the INVITE went.
            for_dialog.headers.contact.push(NameAddr {
                display: None,
                uri: call.invite_out.uri.clone(),
                params: Vec::new(),
            });
        }
        let Some(dialog) = Dialog::uac(&call.invite_out, &for_dialog, contact) else {
            // No To tag: not a dialog we can ACK; the called side will give up on its own.
            let (origin, key, req, tag) = (
                call.origin,
                call.invite_in_key.clone(),
                call.invite_in.clone(),
                call.local_tag.clone(),
            );
            self.respond(now, origin, &key, &req, 502, Some(&tag), None, Vec::new());
            self.finish(id, EndReason::Rejected { status: 502 }, media);
            self.remove_call(id);
            return;
        };
        let answer = match call.early_answer.clone() {
            Some(a) => Ok(a),
            None => match compose::sdp_body(&resp.headers, &resp.body) {
                Some(Ok(sdp)) => media.answer(id, &sdp).map_err(|r| r.to_string()),
                _ => Err("the 2xx carries no SDP answer".to_owned()),
            },
        };
        let dest = compose::dialog_peer(&dialog, self.side_cfg(called).peer);
        let via = self.new_via(called);
        let ack = dialog.ack(resp.headers.cseq.seq, via, Bytes::new());
        let remote_tag = dialog.key.remote_tag.clone();
        self.dialogs.insert((called, dialog.key.clone()), id);
        self.invites_in.retain(|_, c| *c != id);
        self.send_ack(now, called, ack, dest, &remote_tag);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.leg_mut(called).dialog = Some(dialog);
        let (origin, key, req, tag) = (
            call.origin,
            call.invite_in_key.clone(),
            call.invite_in.clone(),
            call.local_tag.clone(),
        );
        let answer = match answer {
            Ok(a) => a,
            Err(reason) => {
                tracing::info!(call = %id, %reason, "answer refused; hanging up the called side");
                let extra = vec![warning(&reason)];
                self.respond(now, origin, &key, &req, 488, Some(&tag), None, extra);
                self.bye_call(now, id, Some(origin), EndReason::MediaRefused, media);
                return;
            }
        };
        let reliable = call.origin_reliable;
        call.phase = Phase::Confirmed;
        call.leg_mut(origin).last_sdp = Some(answer.clone());
        let extra = vec![header("Allow", compose::ALLOW)];
        if let Some(sent) = self.respond(
            now,
            origin,
            &key,
            &req,
            200,
            Some(&tag),
            Some(&answer),
            extra,
        ) {
            self.arm_ok(now, id, origin, key, sent, reliable);
        }
        self.counters.calls_answered += 1;
        self.events.push_back(B2buaEvent::CallAnswered { call: id });
        self.dirty.insert(id);
    }

    /// Starts retransmitting a 2xx to `side` until its ACK.
    pub(super) fn arm_ok(
        &mut self,
        now: Instant,
        id: CallId,
        side: Side,
        key: TransactionKey,
        response: Response,
        reliable: bool,
    ) {
        let t = self.cfg.timers;
        if let Some(call) = self.calls.get_mut(&id) {
            call.ok_retx = Some(OkRetransmit {
                side,
                key,
                response,
                next: (!reliable).then(|| now + t.t1),
                interval: t.t1,
                give_up: now + t.t1x64(),
            });
        }
        self.schedule_call(id);
    }

    /// Answers a 401/407 from the called side once with the configured credentials; false when
    /// there are none, they were already tried, or the challenge is unusable.
    fn retry_with_credentials(&mut self, now: Instant, id: CallId, resp: &Response) -> bool {
        let Some(call) = self.calls.get(&id) else {
            return false;
        };
        let called = call.called();
        let Some(creds) = self.side_cfg(called).credentials.clone() else {
            return false;
        };
        if call.auth_tried {
            return false;
        }
        let cnonce = compose::token(&mut self.rng);
        let answer = match auth::answer(&call.invite_out, resp, &creds, &cnonce, 1) {
            Ok(h) => h,
            Err(e) => {
                tracing::info!(call = %id, error = %e, "cannot answer the challenge");
                return false;
            }
        };
        let invite_out_key = call.invite_out_key.clone();
        let mut invite = call.invite_out.clone();
        invite
            .headers
            .other
            .retain(|h| !h.name.eq_ignore_ascii_case(&answer.name));
        invite.headers.other.push(answer);
        invite.headers.cseq.seq = invite.headers.cseq.seq.saturating_add(1);
        if let Some(via) = invite.headers.via.first_mut() {
            via.set_param("branch", Some(generate_branch(&mut self.rng)));
        }
        // Where the challenged INVITE went (a reload may have moved the side's peer since).
        let dest = self
            .endpoints
            .get(called.index())
            .and_then(|ep| ep.peer(&invite_out_key))
            .unwrap_or(self.side_cfg(called).peer);
        let Some(key) = self.send(now, called, invite.clone(), dest) else {
            return false;
        };
        self.clients
            .insert((called, key.clone()), Client::Invite(id));
        if let Some(call) = self.calls.get_mut(&id) {
            call.invite_out = invite;
            call.invite_out_key = key;
            call.auth_tried = true;
        }
        true
    }

    /// The call's INVITE got no answer (`status` 408: timer B/C) or could not be sent (503).
    pub(super) fn on_invite_failure(
        &mut self,
        now: Instant,
        id: CallId,
        status: u16,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.phase != Phase::Early {
            if matches!(call.phase, Phase::Cancelling { .. }) {
                self.remove_call(id);
            }
            return;
        }
        let (origin, key, req, tag) = (
            call.origin,
            call.invite_in_key.clone(),
            call.invite_in.clone(),
            call.local_tag.clone(),
        );
        let extra = if status == 503 {
            vec![self.retry_after()]
        } else {
            Vec::new()
        };
        self.respond(now, origin, &key, &req, status, Some(&tag), None, extra);
        let reason = if status == 503 {
            EndReason::Unreachable
        } else {
            EndReason::Timeout
        };
        self.finish(id, reason, media);
        self.remove_call(id);
    }

    /// Ends a ringing call from the caller's side (CANCEL, BYE on the early dialog, daemon
    /// hang-up): 487 to the caller, CANCEL to the called side (now, or once a provisional
    /// allows it), media released; the call lingers until the called side's INVITE ends.
    pub(super) fn cancel_call(
        &mut self,
        now: Instant,
        id: CallId,
        reason: EndReason,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.phase != Phase::Early {
            return;
        }
        let (origin, called, key, req, tag, out_key) = (
            call.origin,
            call.called(),
            call.invite_in_key.clone(),
            call.invite_in.clone(),
            call.local_tag.clone(),
            call.invite_out_key.clone(),
        );
        self.respond(now, origin, &key, &req, 487, Some(&tag), None, Vec::new());
        let sent = match self.endpoints[called.index()].cancel(now, &out_key) {
            Ok(Some(k)) => {
                *self.counters.sides[called.index()]
                    .requests_out
                    .entry("CANCEL".to_owned())
                    .or_default() += 1;
                self.clients.insert((called, k), Client::Fire);
                true
            }
            _ => false,
        };
        self.finish(id, reason, media);
        let until = now + self.cfg.timers.t1x64();
        if let Some(call) = self.calls.get_mut(&id) {
            call.cancel_wanted = !sent;
            call.phase = Phase::Cancelling { until };
        }
        self.schedule_call(id);
    }

    /// A call timer fired: 2xx retransmission or its give-up, or the end of a cancelled call's
    /// wait for the called side.
    pub(super) fn call_timeout(
        &mut self,
        now: Instant,
        id: CallId,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Phase::Cancelling { until } = call.phase {
            if until <= now {
                self.remove_call(id);
            }
            return;
        }
        let t2 = self.cfg.timers.t2;
        let Some(retx) = call.ok_retx.as_mut() else {
            return;
        };
        if retx.give_up <= now {
            call.ok_retx = None;
            tracing::info!(call = %id, "no ACK for our 2xx; hanging up");
            self.bye_call(now, id, None, EndReason::AckTimeout, media);
            return;
        }
        if retx.next.is_some_and(|n| n <= now) {
            retx.interval = (retx.interval * 2).min(t2);
            retx.next = Some(now + retx.interval);
            let (side, key, resp) = (retx.side, retx.key.clone(), retx.response.clone());
            if self.endpoints[side.index()]
                .send_response(now, &key, resp)
                .is_err()
                && let Some(r) = self.calls.get_mut(&id).and_then(|c| c.ok_retx.as_mut())
            {
                // The transaction is gone (timer L): nothing left to retransmit through.
                r.next = None;
            }
        }
    }

    /// The call is over for the daemon: media released once, `CallEnded` once, dialogs
    /// forgotten (later requests on them get 481).
    pub(super) fn finish(&mut self, id: CallId, reason: EndReason, media: &mut impl MediaSessions) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.ok_retx = None;
        if !call.media_live {
            return;
        }
        call.media_live = false;
        media.release(id);
        for side in [Side::Server, Side::Pbx] {
            if let Some(d) = &call.legs[side.index()].dialog {
                self.dialogs.remove(&(side, d.key.clone()));
            }
        }
        self.counters.calls_ended += 1;
        tracing::info!(call = %id, ?reason, "call ended");
        self.events
            .push_back(B2buaEvent::CallEnded { call: id, reason });
    }

    /// Forgets the call entirely (after [`B2bua::finish`]).
    pub(super) fn remove_call(&mut self, id: CallId) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        for side in [Side::Server, Side::Pbx] {
            if let Some(d) = &call.legs[side.index()].dialog {
                self.dialogs.remove(&(side, d.key.clone()));
            }
        }
        self.invites_in.remove(&(call.origin, call.invite_in_key));
    }
}

/// `Warning: 399 xcc "text"` (RFC 3261 §20.43), quotes in the text replaced.
pub(super) fn warning(text: &str) -> Header {
    header(
        "Warning",
        &format!("399 xcc \"{}\"", text.replace(['"', '\\'], "'")),
    )
}
