//! The event feed: media-plane events and session milestones fanned out to gRPC watchers.
//!
//! The media engine has one crossbeam receiver; a dedicated thread drains it (blocking `recv`, no
//! polling) into a tokio broadcast channel, so watchers never slow the media plane: a watcher that
//! falls behind loses the oldest events and is told how many.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use xcc_core::ids::CallId;
use xcc_core::media::{EndReason, MediaEvent};

use crate::pb;
use crate::service::{call_to_pb, side_to_pb};
use crate::session::{Advertised, SessionTable};

/// Events buffered per watcher before it counts as lagging.
pub const EVENT_BUFFER: usize = 1024;

/// Fan-out point for `xcc.v1.Event`.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<pb::Event>,
    /// Set at shutdown so long-lived watch streams end and graceful shutdown can finish.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no watchers.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
            closed: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends every watcher's stream (at shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`EventHub::close`] has been called.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// A new watcher, receiving events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::Event> {
        self.tx.subscribe()
    }

    /// Sends to every watcher; no watcher is not an error.
    pub fn publish(&self, call: CallId, kind: pb::event::Kind) {
        let _ = self.tx.send(pb::Event {
            call_id: call.0,
            unix_ms: unix_ms(SystemTime::now()),
            kind: Some(kind),
        });
    }
}

/// Milliseconds since the Unix epoch (0 for clocks set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wire form of one media event; `None` for events the proto has no message for yet
/// (quality crossings).
pub fn media_event_to_pb(
    event: &MediaEvent,
    advertised: &Advertised,
) -> Option<(CallId, pb::event::Kind)> {
    Some(match event {
        MediaEvent::Latched { call, side, addr } => (
            *call,
            pb::event::Kind::Latched(pb::LegLatched {
                side: side_to_pb(*side) as i32,
                address: addr.to_string(),
            }),
        ),
        MediaEvent::Ended {
            call, reason, last, ..
        } => {
            let reason = match reason {
                EndReason::Released => pb::call_ended::Reason::Released,
                EndReason::MediaTimeout => pb::call_ended::Reason::MediaTimeout,
                EndReason::Shutdown => pb::call_ended::Reason::Shutdown,
            };
            (
                *call,
                pb::event::Kind::Ended(pb::CallEnded {
                    reason: reason as i32,
                    last: Some(call_to_pb(last, advertised)),
                }),
            )
        }
        // Logged by the media worker; the feed gains it when the proto does.
        MediaEvent::Quality { .. } => return None,
    })
}

/// Drains the media engine's events into `hub` on a thread of its own until the engine drops its
/// sender. Ended calls are forgotten by `sessions` so their ids stop resolving.
pub fn spawn_media_forwarder(
    events: crossbeam_channel::Receiver<MediaEvent>,
    hub: EventHub,
    sessions: Arc<SessionTable>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xcc-events".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                // Read per event: discovery may have changed the client address.
                let advertised = sessions.advertised();
                if let MediaEvent::Ended { call, reason, .. } = &event {
                    tracing::info!(%call, ?reason, "call ended");
                    sessions.forget(*call);
                }
                if let Some((call, kind)) = media_event_to_pb(&event, &advertised) {
                    hub.publish(call, kind);
                }
            }
            tracing::debug!("media event channel closed");
        })
}
