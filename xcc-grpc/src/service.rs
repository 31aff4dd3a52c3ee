//! The `xcc.v1` services: request validation, proto mapping, and calls into the session table and
//! the media plane. Status codes come only from [`crate::error`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{CallSnapshot, Direction, LegCounters, LegSnapshot};

use crate::control::ControlState;
use crate::error::Error;
use crate::events::{EventHub, unix_ms};
use crate::pb;
use crate::record::quality_to_pb;
use crate::session::{Advertised, Outcome, SessionTable, SessionView, State};

/// Everything the three services share; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    /// gRPC sessions and, through it, the media plane.
    pub sessions: Arc<SessionTable>,
    /// Ready / drain state and health.
    pub state: Arc<ControlState>,
    /// Event fan-out.
    pub hub: EventHub,
}

/// Proto side to core side; `field` names the request field for the error.
pub fn side_from_pb(value: i32, field: &'static str) -> Result<LegSide, Error> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Client) => Ok(LegSide::Client),
        Ok(pb::Side::Pbx) => Ok(LegSide::Pbx),
        _ => Err(Error::InvalidArgument {
            field,
            reason: format!("must be SIDE_CLIENT or SIDE_PBX, got {value}"),
        }),
    }
}

/// Core side to proto side.
pub fn side_to_pb(side: LegSide) -> pb::Side {
    match side {
        LegSide::Client => pb::Side::Client,
        LegSide::Pbx => pb::Side::Pbx,
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "sendonly",
        Direction::RecvOnly => "recvonly",
        Direction::Inactive => "inactive",
    }
}

fn opt_addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

/// The wire form of a leg's traffic counters.
pub fn counters_to_pb(c: &LegCounters) -> pb::LegCounters {
    pb::LegCounters {
        packets_in: c.packets_in,
        bytes_in: c.bytes_in,
        packets_out: c.packets_out,
        bytes_out: c.bytes_out,
        rtcp_in: c.rtcp_in,
        rtcp_out: c.rtcp_out,
        drop_auth_failure: c.drops.auth_failure,
        drop_replay: c.drops.replay,
        drop_stranger: c.drops.stranger,
        drop_malformed: c.drops.malformed,
        drop_no_route: c.drops.no_route,
        drop_stray: c.drops.stray,
        rtcp_malformed: c.rtcp_malformed,
        drop_send_error: c.drops.send_error,
    }
}

fn leg_to_pb(leg: &LegSnapshot, advertised: &Advertised) -> pb::Leg {
    pb::Leg {
        side: side_to_pb(leg.side) as i32,
        advertised_address: advertised.for_side(leg.side).to_string(),
        rtp_port: leg.ports.rtp.into(),
        rtcp_port: leg.ports.rtcp.into(),
        signalled: opt_addr(leg.signalled),
        latched: opt_addr(leg.latched),
        latched_rtcp: opt_addr(leg.latched_rtcp),
        srtp_suite: leg
            .srtp_suite
            .map(|s| s.sdes_name().to_owned())
            .unwrap_or_default(),
        direction: direction_name(leg.direction).to_owned(),
        counters: Some(counters_to_pb(&leg.counters)),
        quality: Some(quality_to_pb(&leg.quality)),
        punch_probes_sent: leg.counters.punch_sent,
        punch_answers: leg.counters.punch_answered,
    }
}

/// The wire form of a call snapshot.
pub fn call_to_pb(call: &CallSnapshot, advertised: &Advertised) -> pb::Call {
    pb::Call {
        call_id: call.call.0,
        created_unix_ms: unix_ms(call.created),
        idle_ms: u64::try_from(call.idle.as_millis()).unwrap_or(u64::MAX),
        client: Some(leg_to_pb(&call.legs[LegSide::Client.index()], advertised)),
        pbx: Some(leg_to_pb(&call.legs[LegSide::Pbx.index()], advertised)),
    }
}

impl ControlPlane {
    fn session_to_pb(&self, view: &SessionView) -> pb::Session {
        let advertised = self.sessions.advertised();
        let snapshot = self.sessions.media().snapshot(view.call).ok();
        let leg = |side: LegSide| match &snapshot {
            Some(s) => leg_to_pb(&s.legs[side.index()], &advertised),
            None => pb::Leg {
                side: side_to_pb(side) as i32,
                advertised_address: advertised.for_side(side).to_string(),
                rtp_port: view.ports[side.index()].rtp.into(),
                rtcp_port: view.ports[side.index()].rtcp.into(),
                ..Default::default()
            },
        };
        pb::Session {
            session_id: view.call.0,
            idempotency_key: view.idempotency_key.clone(),
            state: match view.state {
                State::AwaitingAnswer => pb::session::State::AwaitingAnswer,
                State::Active => pb::session::State::Active,
            } as i32,
            offer_from: side_to_pb(view.offer_from) as i32,
            sdp: view.sdp.clone(),
            sdp_for: side_to_pb(view.sdp_for) as i32,
            client: Some(leg(LegSide::Client)),
            pbx: Some(leg(LegSide::Pbx)),
        }
    }

    fn announce(&self, view: &SessionView, outcome: Outcome) {
        match outcome {
            Outcome::Started => self.hub.publish(
                view.call,
                pb::event::Kind::Started(pb::CallStarted {
                    offer_from: side_to_pb(view.offer_from) as i32,
                }),
            ),
            Outcome::Answered => self
                .hub
                .publish(view.call, pb::event::Kind::Answered(pb::CallAnswered {})),
            Outcome::Replayed | Outcome::Updated => {}
        }
    }
}

/// The span every control-plane log line about one call runs in: text logs read
/// `call{id=7}: ...`, JSON logs carry `"span":{"id":7,"name":"call"}`, so `grep 'call{id=7}'` or a
/// journald field match finds a call's whole story. The media plane and SIP use the same name.
pub fn call_span(call: CallId) -> tracing::Span {
    tracing::info_span!("call", id = call.0)
}

fn session_id(id: u64) -> Result<CallId, Error> {
    if id == 0 {
        return Err(Error::InvalidArgument {
            field: "session_id",
            reason: "required".into(),
        });
    }
    Ok(CallId(id))
}

fn call_id(id: u64) -> Result<CallId, Error> {
    if id == 0 {
        return Err(Error::InvalidArgument {
            field: "call_id",
            reason: "required".into(),
        });
    }
    Ok(CallId(id))
}

#[tonic::async_trait]
impl pb::sessions_server::Sessions for ControlPlane {
    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = req.into_inner();
        if self.state.is_draining() {
            return Err(Error::Draining.into());
        }
        let from = side_from_pb(req.offer_from, "offer_from")?;
        let (view, outcome) = self.sessions.create(&req.idempotency_key, from, &req.sdp)?;
        self.announce(&view, outcome);
        Ok(Response::new(self.session_to_pb(&view)))
    }

    async fn answer_session(
        &self,
        req: Request<pb::AnswerSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = req.into_inner();
        let call = session_id(req.session_id)?;
        let _span = call_span(call).entered();
        let (view, outcome) = self.sessions.answer(call, &req.sdp)?;
        self.announce(&view, outcome);
        Ok(Response::new(self.session_to_pb(&view)))
    }

    async fn update_session(
        &self,
        req: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = req.into_inner();
        let call = session_id(req.session_id)?;
        let _span = call_span(call).entered();
        let from = side_from_pb(req.offer_from, "offer_from")?;
        let (view, outcome) = self.sessions.update(call, from, &req.sdp)?;
        self.announce(&view, outcome);
        Ok(Response::new(self.session_to_pb(&view)))
    }

    async fn delete_session(
        &self,
        req: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let call = session_id(req.into_inner().session_id)?;
        let _span = call_span(call).entered();
        self.sessions.delete(call)?;
        tracing::info!("session deleted over gRPC");
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let view = self
            .sessions
            .get(session_id(req.into_inner().session_id)?)?;
        Ok(Response::new(self.session_to_pb(&view)))
    }

    async fn list_sessions(
        &self,
        _req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self
            .sessions
            .list()
            .iter()
            .map(|v| self.session_to_pb(v))
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }
}

/// Stream of events for one watcher.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::calls_server::Calls for ControlPlane {
    async fn list_calls(
        &self,
        _req: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let advertised = self.sessions.advertised();
        let mut calls: Vec<_> = self
            .sessions
            .media()
            .calls()
            .iter()
            .map(|c| call_to_pb(c, &advertised))
            .collect();
        calls.sort_by_key(|c| c.call_id);
        Ok(Response::new(pb::ListCallsResponse { calls }))
    }

    async fn get_call(
        &self,
        req: Request<pb::GetCallRequest>,
    ) -> Result<Response<pb::Call>, Status> {
        let call = call_id(req.into_inner().call_id)?;
        let snapshot = self
            .sessions
            .media()
            .snapshot(call)
            .map_err(|e| Error::about_call("call_id", call, e))?;
        Ok(Response::new(call_to_pb(
            &snapshot,
            &self.sessions.advertised(),
        )))
    }

    async fn hang_up(
        &self,
        req: Request<pb::HangUpRequest>,
    ) -> Result<Response<pb::HangUpResponse>, Status> {
        let call = call_id(req.into_inner().call_id)?;
        let _span = call_span(call).entered();
        self.sessions
            .media()
            .release(call)
            .map_err(|e| Error::about_call("call_id", call, e))?;
        self.sessions.forget(call);
        tracing::info!("hung up over gRPC");
        Ok(Response::new(pb::HangUpResponse {}))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        _req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let rx = self.hub.subscribe();
        let closed = self.hub.closed();
        let stream = futures::stream::unfold((rx, closed), |(mut rx, mut closed)| async move {
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = closed.wait_for(|c| *c) => return None,
            };
            let event = match next {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => pb::Event {
                    call_id: 0,
                    unix_ms: unix_ms(std::time::SystemTime::now()),
                    kind: Some(pb::event::Kind::Lagged(pb::Lagged { missed })),
                },
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (rx, closed)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl pb::satellite_server::Satellite for ControlPlane {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let media = self.sessions.media();
        let pool = media.pool_status();
        let mut status = pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.state.uptime(Instant::now()).as_secs(),
            calls: media.calls().len() as u64,
            ports_total: pool.total as u64,
            ports_free: pool.free as u64,
            ports_used: pool.used as u64,
            ports_quarantined: pool.quarantined as u64,
            workers: media.workers() as u64,
            draining: self.state.is_draining(),
            ports_retiring: media.retiring_ports() as u64,
            exit_when_idle: self.state.exit_when_idle(),
            drain_grace_left_secs: self
                .state
                .drain_grace_left(Instant::now())
                .map_or(0, |d| d.as_secs()),
            ..Default::default()
        };
        match self.state.public_address() {
            Some(public) => crate::nat::fill_status(&mut status, &public),
            None => status.public_address = self.sessions.advertised().client.to_string(),
        }
        if let Some((server, relay)) = self.state.turn() {
            crate::nat::fill_turn_status(&mut status, server, relay.as_ref());
        }
        Ok(Response::new(status))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        if req.into_inner().exit_when_idle {
            self.state.drain_and_exit().await;
        } else {
            self.state.drain().await;
        }
        Ok(Response::new(pb::DrainResponse {
            calls: self.sessions.media().calls().len() as u64,
        }))
    }

    async fn resume(
        &self,
        _req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        if self.state.exit_when_idle() {
            return Err(Error::Exiting.into());
        }
        self.state.resume().await;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn set_log_level(
        &self,
        req: Request<pb::SetLogLevelRequest>,
    ) -> Result<Response<pb::SetLogLevelResponse>, Status> {
        let level = req.into_inner().level;
        self.state.set_log_level(level.trim())?;
        Ok(Response::new(pb::SetLogLevelResponse {
            level: level.trim().to_owned(),
        }))
    }

    async fn reload(
        &self,
        _req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let Some(reloader) = self.state.reloader() else {
            return Err(Error::ReloadUnavailable.into());
        };
        let outcome = tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .map_err(|e| Error::ReloadRefused {
                reason: format!("reload task failed: {e}"),
            })?;
        let report = outcome.map_err(|reason| Error::ReloadRefused { reason })?;
        Ok(Response::new(pb::ReloadResponse {
            applied: report.applied,
            restart_required: report.restart_required,
            path: report
                .path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }))
    }
}
