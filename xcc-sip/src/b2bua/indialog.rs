//! Requests inside an established call: BYE, re-INVITE (hold/resume, new SDP), INFO/MESSAGE
//! relay, OPTIONS/UPDATE answered locally, ACKs; and hanging up both dialogs.

use std::time::Instant;

use bytes::Bytes;

use super::call::{Phase, ReInvite};
use super::compose;
use super::setup::warning;
use super::{B2bua, Client, EndReason, MediaSessions, Side, header};
use crate::dialog::DialogKey;
use crate::endpoint::Peer;
use crate::message::{Header, Method, Request, Response};
use crate::transaction::TransactionKey;
use xcc_core::ids::CallId;

impl B2bua {
    /// A request on one of call `id`'s dialogs, from `side`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn in_dialog(
        &mut self,
        now: Instant,
        side: Side,
        id: CallId,
        key: TransactionKey,
        req: Request,
        source: Peer,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            self.respond(now, side, &key, &req, 481, None, None, Vec::new());
            return;
        };
        // The peer's CSeq (and maybe our own, relaying) moves: the stored state follows.
        self.dirty.insert(id);
        let phase = call.phase;
        let checked = match call.leg_mut(side).dialog.as_mut() {
            Some(d) => d.handle_request(&req),
            None => Ok(()),
        };
        if let Err(e) = checked {
            tracing::debug!(call = %id, %side, error = %e, "in-dialog request refused");
            self.respond(
                now,
                side,
                &key,
                &req,
                500,
                None,
                None,
                vec![self.retry_after()],
            );
            return;
        }
        match (&req.method, phase) {
            (Method::Bye, Phase::Early) => {
                // A BYE on the early dialog (RFC 3261 §15): the caller gives up, like CANCEL.
                self.respond(now, side, &key, &req, 200, None, None, Vec::new());
                self.cancel_call(now, id, EndReason::Cancelled, media);
            }
            (Method::Bye, _) => {
                self.respond(now, side, &key, &req, 200, None, None, Vec::new());
                self.bye_call(now, id, Some(side), EndReason::Bye { from: side }, media);
            }
            (Method::Invite, Phase::Confirmed) => {
                self.reinvite(now, side, id, key, req, source, media);
            }
            (Method::Invite, _) => {
                self.respond(now, side, &key, &req, 491, None, None, Vec::new());
            }
            (Method::Options, _) => {
                let extra = vec![
                    header("Allow", compose::ALLOW),
                    header("Accept", "application/sdp"),
                ];
                self.respond(now, side, &key, &req, 200, None, None, extra);
            }
            (Method::Update, _) if req.body.is_empty() => {
                self.respond(now, side, &key, &req, 200, None, None, Vec::new());
            }
            (Method::Update, _) => {
                // Offers in UPDATE are not relayed; re-INVITE does that.
                let extra = vec![warning("SDP in UPDATE is not supported; use re-INVITE")];
                self.respond(now, side, &key, &req, 488, None, None, extra);
            }
            (Method::Info | Method::Other(_), Phase::Confirmed)
                if matches!(&req.method, Method::Info) || req.method.as_str() == "MESSAGE" =>
            {
                self.relay(now, side, id, key, req);
            }
            (Method::Info, _) => {
                self.respond(now, side, &key, &req, 481, None, None, Vec::new());
            }
            _ => {
                let extra = vec![header("Allow", compose::ALLOW)];
                self.respond(now, side, &key, &req, 405, None, None, extra);
            }
        }
    }

    /// Relays INFO/MESSAGE to the other dialog; its final response comes back to `side`.
    fn relay(&mut self, now: Instant, side: Side, id: CallId, key: TransactionKey, req: Request) {
        let other = side.other();
        let Some(dialog) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.leg_mut(other).dialog.as_mut())
        else {
            self.respond(now, side, &key, &req, 481, None, None, Vec::new());
            return;
        };
        let default_peer = super::config::side_of(&self.cfg, other).peer;
        let via = compose::via(super::config::side_of(&self.cfg, other), &mut self.rng);
        let mut out = dialog.new_request(req.method.clone(), via, req.body.clone());
        out.headers
            .content_type
            .clone_from(&req.headers.content_type);
        out.headers.other.extend(
            req.headers
                .other
                .iter()
                .filter(|h| {
                    ["Info-Package", "Content-Disposition"]
                        .iter()
                        .any(|n| h.name.eq_ignore_ascii_case(n))
                })
                .cloned(),
        );
        let dest = compose::dialog_peer(dialog, default_peer);
        match self.send(now, other, out, dest) {
            Some(k) => {
                self.clients.insert(
                    (other, k),
                    Client::Relay {
                        from: side,
                        server: key,
                        request: Box::new(req),
                    },
                );
            }
            None => {
                self.respond(now, side, &key, &req, 500, None, None, Vec::new());
            }
        }
    }

    /// A re-INVITE from `side` on a confirmed call.
    #[allow(clippy::too_many_arguments)]
    fn reinvite(
        &mut self,
        now: Instant,
        side: Side,
        id: CallId,
        key: TransactionKey,
        req: Request,
        source: Peer,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.reinvite.is_some() || call.ok_retx.is_some() {
            // Glare (RFC 3261 §14.2), or the previous 2xx is not ACKed yet.
            self.respond(now, side, &key, &req, 491, None, None, Vec::new());
            return;
        }
        let reliable = source.transport.is_reliable();
        let sdp = match compose::sdp_body(&req.headers, &req.body) {
            None => {
                // No offer (a session refresh): answer with what this side already has.
                let Some(last) = call.leg(side).last_sdp.clone() else {
                    let extra = vec![warning("no SDP to offer")];
                    self.respond(now, side, &key, &req, 488, None, None, extra);
                    return;
                };
                if let Some(sent) =
                    self.respond(now, side, &key, &req, 200, None, Some(&last), Vec::new())
                {
                    self.arm_ok(now, id, side, key, sent, reliable);
                }
                return;
            }
            Some(Err(())) => {
                let extra = vec![header("Accept", "application/sdp")];
                self.respond(now, side, &key, &req, 415, None, None, extra);
                return;
            }
            Some(Ok(sdp)) => sdp,
        };
        let offer = match media.reoffer(id, side, &sdp) {
            Ok(o) => o,
            Err(refusal) => {
                tracing::info!(call = %id, %side, %refusal, "re-offer refused; media unchanged");
                let extra = vec![warning(&refusal.to_string())];
                self.respond(now, side, &key, &req, refusal.status(), None, None, extra);
                return;
            }
        };
        let other = side.other();
        let via = self.new_via(other);
        let default_peer = self.side_cfg(other).peer;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(dialog) = call.leg_mut(other).dialog.as_mut() else {
            media.abandon_offer(id);
            self.respond(now, side, &key, &req, 500, None, None, Vec::new());
            return;
        };
        let out = dialog.new_request(Method::Invite, via, Bytes::from(offer.clone()));
        let dest = compose::dialog_peer(dialog, default_peer);
        call.leg_mut(other).last_sdp = Some(offer);
        let Some(client) = self.send(now, other, out, dest) else {
            media.abandon_offer(id);
            self.respond(now, side, &key, &req, 500, None, None, Vec::new());
            return;
        };
        self.clients.insert((other, client), Client::ReInvite(id));
        if let Some(call) = self.calls.get_mut(&id) {
            call.reinvite = Some(ReInvite {
                from: side,
                server: key,
                request: req,
                reliable,
            });
        }
    }

    /// The other side answered a relayed re-INVITE (`side` is the side it was sent to).
    pub(super) fn on_reinvite_response(
        &mut self,
        now: Instant,
        side: Side,
        id: CallId,
        resp: Response,
        media: &mut impl MediaSessions,
    ) {
        let status = resp.status;
        self.dirty.insert(id);
        let Some(call) = self.calls.get_mut(&id) else {
            if (200..300).contains(&status) {
                // The call ended meanwhile (BYE already sent): only stop the retransmissions.
                self.stray_2xx(now, side, &resp, false);
            }
            return;
        };
        if status < 200 {
            return;
        }
        let Some(rv) = call.reinvite.take() else {
            if (200..300).contains(&status) {
                // The sender cancelled this re-INVITE but the far side accepted it anyway
                // (RFC 3261 §9.1 race): complete its transaction; media stays as negotiated
                // before (the offer was abandoned at the CANCEL).
                self.ack_reinvite_2xx(now, side, id, &resp);
            }
            return;
        };
        if (200..300).contains(&status) {
            self.ack_reinvite_2xx(now, side, id, &resp);
            let answer = match compose::sdp_body(&resp.headers, &resp.body) {
                Some(Ok(sdp)) => media.answer(id, &sdp).map_err(|r| r.to_string()),
                _ => Err("the 2xx to the re-INVITE carries no SDP".to_owned()),
            };
            match answer {
                Ok(answer) => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.leg_mut(rv.from).last_sdp = Some(answer.clone());
                    }
                    if let Some(sent) = self.respond(
                        now,
                        rv.from,
                        &rv.server,
                        &rv.request,
                        200,
                        None,
                        Some(&answer),
                        Vec::new(),
                    ) {
                        self.arm_ok(now, id, rv.from, rv.server, sent, rv.reliable);
                    }
                }
                Err(reason) => {
                    tracing::info!(call = %id, %reason, "re-INVITE answer refused; hanging up");
                    self.refuse_reinvite(now, id, &rv, 500, vec![warning(&reason)], media);
                    self.bye_call(now, id, None, EndReason::MediaRefused, media);
                }
            }
            return;
        }
        self.refuse_reinvite(now, id, &rv, status, Vec::new(), media);
        if status == 481 || status == 408 {
            // RFC 3261 §14.1: the dialog is gone on the other side.
            self.bye_call(now, id, None, EndReason::ReInviteFailed { status }, media);
        }
    }

    /// ACKs a 2xx to a re-INVITE XCC sent on `side` and takes its Contact as the new remote
    /// target (RFC 3261 §12.2.1.2).
    fn ack_reinvite_2xx(&mut self, now: Instant, side: Side, id: CallId, resp: &Response) {
        let cfg = super::config::side_of(&self.cfg, side);
        let (default_peer, via) = (cfg.peer, compose::via(cfg, &mut self.rng));
        let Some(dialog) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.leg_mut(side).dialog.as_mut())
        else {
            return;
        };
        if let Some(c) = resp.headers.contact.first() {
            dialog.remote_target = c.uri.clone();
        }
        let dest = compose::dialog_peer(dialog, default_peer);
        let ack = dialog.ack(resp.headers.cseq.seq, via, Bytes::new());
        let remote_tag = dialog.key.remote_tag.clone();
        self.send_ack(now, side, ack, dest, &remote_tag);
    }

    /// A CANCEL for a re-INVITE XCC is relaying (`side` sent both): 487 to it, the re-offer
    /// abandoned (the session stays as it was, RFC 3261 §14.1), and CANCEL to the other side
    /// when its re-INVITE is in Proceeding (otherwise its final response is simply absorbed).
    pub(super) fn cancel_reinvite(
        &mut self,
        now: Instant,
        side: Side,
        invite: &TransactionKey,
        media: &mut impl MediaSessions,
    ) {
        let Some(id) = self
            .calls
            .values()
            .find(|c| {
                c.reinvite
                    .as_ref()
                    .is_some_and(|r| r.from == side && r.server == *invite)
            })
            .map(|c| c.id)
        else {
            return;
        };
        let Some(rv) = self.calls.get_mut(&id).and_then(|c| c.reinvite.take()) else {
            return;
        };
        media.abandon_offer(id);
        self.respond(
            now,
            side,
            &rv.server,
            &rv.request,
            487,
            None,
            None,
            Vec::new(),
        );
        let other = side.other();
        let relayed = self
            .clients
            .iter()
            .find(|((s, _), c)| *s == other && matches!(c, Client::ReInvite(x) if *x == id))
            .map(|((_, k), _)| k.clone());
        if let Some(k) = relayed
            && let Ok(Some(ck)) = self.endpoints[other.index()].cancel(now, &k)
        {
            *self.counters.sides[other.index()]
                .requests_out
                .entry("CANCEL".to_owned())
                .or_default() += 1;
            self.clients.insert((other, ck), Client::Fire);
        }
    }

    /// A relayed re-INVITE timed out (408) or could not be sent (503): RFC 3261 §14.1 ends the
    /// dialog.
    pub(super) fn on_reinvite_failure(
        &mut self,
        now: Instant,
        id: CallId,
        status: u16,
        media: &mut impl MediaSessions,
    ) {
        let Some(rv) = self.calls.get_mut(&id).and_then(|c| c.reinvite.take()) else {
            return;
        };
        self.refuse_reinvite(now, id, &rv, status, Vec::new(), media);
        self.bye_call(now, id, None, EndReason::ReInviteFailed { status }, media);
    }

    /// Ends a relayed re-INVITE without a new session: the offer it made is abandoned (the call
    /// keeps its old media) and its sender gets `status`.
    fn refuse_reinvite(
        &mut self,
        now: Instant,
        id: CallId,
        rv: &ReInvite,
        status: u16,
        extra: Vec<Header>,
        media: &mut impl MediaSessions,
    ) {
        media.abandon_offer(id);
        self.respond(
            now,
            rv.from,
            &rv.server,
            &rv.request,
            status,
            None,
            None,
            extra,
        );
    }

    /// An ACK for a 2xx XCC sent: stops that 2xx's retransmission.
    pub(super) fn on_ack(&mut self, side: Side, req: &Request) {
        let Some(dk) = DialogKey::for_incoming(req) else {
            return;
        };
        let Some(id) = self.dialogs.get(&(side, dk)).copied() else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&id)
            && call.ok_retx.as_ref().is_some_and(|r| {
                r.side == side && r.response.headers.cseq.seq == req.headers.cseq.seq
            })
        {
            call.ok_retx = None;
        }
    }

    /// Ends a confirmed call: BYE on every dialog but `except` (the side that sent BYE), any
    /// pending re-INVITE answered 487, media released, call forgotten.
    pub(super) fn bye_call(
        &mut self,
        now: Instant,
        id: CallId,
        except: Option<Side>,
        reason: EndReason,
        media: &mut impl MediaSessions,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let pending = call.reinvite.take();
        let mut byes = Vec::new();
        for side in [Side::Server, Side::Pbx] {
            if Some(side) == except {
                continue;
            }
            let cfg = match side {
                Side::Server => &self.cfg.server,
                Side::Pbx => &self.cfg.pbx,
            };
            if let Some(d) = call.legs[side.index()].dialog.as_mut() {
                let via = compose::via(cfg, &mut self.rng);
                let bye = d.new_request(Method::Bye, via, Bytes::new());
                byes.push((side, bye, compose::dialog_peer(d, cfg.peer)));
            }
        }
        if let Some(rv) = pending {
            self.respond(
                now,
                rv.from,
                &rv.server,
                &rv.request,
                487,
                None,
                None,
                Vec::new(),
            );
        }
        for (side, bye, dest) in byes {
            if let Some(k) = self.send(now, side, bye, dest) {
                self.clients.insert((side, k), Client::Fire);
            }
        }
        self.finish(id, reason, media);
        self.remove_call(id);
    }
}
