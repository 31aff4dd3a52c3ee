//! The event feed: media-plane events and session milestones fanned out to gRPC watchers.
//!
//! The media engine has one crossbeam receiver; a dedicated thread drains it (blocking `recv`, no
//! polling) into a tokio broadcast channel, so watchers never slow the media plane: a watcher that
//! falls behind loses the oldest events and is told how many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};
use xcc_core::ids::CallId;
use xcc_core::media::MediaEvent;

use crate::pb;
use crate::record::{RecordTimes, alert_to_pb, call_record, log_record, reason_to_pb};
use crate::service::{call_span, call_to_pb, side_to_pb};
use crate::session::{Advertised, SessionTable};

/// Events buffered per watcher before it counts as lagging.
pub const EVENT_BUFFER: usize = 1024;

/// Fan-out point for `xcc.v1.Event`.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<pb::Event>,
    /// Set at shutdown so long-lived watch streams end and graceful shutdown can finish.
    closed: tokio::sync::watch::Sender<bool>,
    /// When each live call was answered (first `answered` event), for its call record; taken
    /// when the call ends. Whichever plane answers a call (gRPC or SIP) publishes `answered`.
    answered: Arc<Mutex<HashMap<CallId, SystemTime>>>,
    /// Lossless listeners for call ends (see [`EventHub::subscribe_ends`]).
    ends: Arc<Mutex<Vec<mpsc::UnboundedSender<CallEnd>>>>,
}

/// One call's end, as a signalling layer needs it to hang the call up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEnd {
    /// The call that ended.
    pub call: CallId,
    /// Why, as on the feed's `CallEnded`.
    pub reason: pb::call_ended::Reason,
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
            answered: Arc::default(),
            ends: Arc::default(),
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

    /// Every call end published from now on, never dropped: unlike [`EventHub::subscribe`] (a
    /// broadcast that drops the oldest events for a slow watcher), the queue is unbounded. For a
    /// layer that must act on each end (SIP sends BYE): one small entry per ended call, drained
    /// by its task as fast as calls end. Dropping the receiver unsubscribes.
    pub fn subscribe_ends(&self) -> mpsc::UnboundedReceiver<CallEnd> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.ends_list().push(tx);
        rx
    }

    /// Sends to every watcher; no watcher is not an error.
    pub fn publish(&self, call: CallId, kind: pb::event::Kind) {
        let now = SystemTime::now();
        match &kind {
            pb::event::Kind::Answered(_) => {
                self.answered_map().entry(call).or_insert(now);
            }
            pb::event::Kind::Ended(ended) => {
                let end = CallEnd {
                    call,
                    reason: pb::call_ended::Reason::try_from(ended.reason)
                        .unwrap_or(pb::call_ended::Reason::Unspecified),
                };
                self.ends_list().retain(|tx| tx.send(end).is_ok());
            }
            _ => {}
        }
        let _ = self.tx.send(pb::Event {
            call_id: call.0,
            unix_ms: unix_ms(now),
            kind: Some(kind),
        });
    }

    /// When `call` was first answered, forgetting it (the call ended).
    pub fn take_answered(&self, call: CallId) -> Option<SystemTime> {
        self.answered_map().remove(&call)
    }

    fn ends_list(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<CallEnd>>> {
        // Every mutation is one push or retain: a poisoned list is still consistent.
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answered_map(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, SystemTime>> {
        // Every mutation is one insert or remove: a poisoned map is still consistent.
        self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch (0 for clocks set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wire form of one media event (an ended call's record is built separately, see
/// [`spawn_media_forwarder`]).
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
        } => (
            *call,
            pb::event::Kind::Ended(pb::CallEnded {
                reason: reason_to_pb(*reason) as i32,
                last: Some(call_to_pb(last, advertised)),
            }),
        ),
        MediaEvent::Quality {
            call,
            side,
            event,
            threshold,
        } => (
            *call,
            pb::event::Kind::Quality(alert_to_pb(*side, event, *threshold)),
        ),
    })
}

/// Drains the media engine's events into `hub` on a thread of its own until the engine drops its
/// sender. Ended calls are forgotten by `sessions` so their ids stop resolving; each ended call
/// is followed on the feed by its `record`, which is also logged as one JSON line
/// ([`crate::record::CDR_TARGET`]).
pub fn spawn_media_forwarder(
    events: crossbeam_channel::Receiver<MediaEvent>,
    hub: EventHub,
    sessions: Arc<SessionTable>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xcc-events".into())
        .spawn(move || {
            // Event fan-out waits for the media workers, never the reverse.
            xcc_core::priority::lower_current_thread();
            while let Ok(event) = events.recv() {
                // Read per event: discovery may have changed the client address.
                let advertised = sessions.advertised();
                let call = match &event {
                    MediaEvent::Latched { call, .. }
                    | MediaEvent::Ended { call, .. }
                    | MediaEvent::Quality { call, .. } => *call,
                };
                let _span = call_span(call).entered();
                if let MediaEvent::Ended { reason, .. } = &event {
                    tracing::info!(?reason, "call ended");
                    sessions.forget(call);
                }
                if let Some((call, kind)) = media_event_to_pb(&event, &advertised) {
                    hub.publish(call, kind);
                }
                if let MediaEvent::Ended {
                    call,
                    reason,
                    last,
                    quality,
                } = &event
                {
                    let times = RecordTimes {
                        answered: hub.take_answered(*call),
                        ended: SystemTime::now(),
                    };
                    let record = call_record(last, *reason, quality, times);
                    log_record(&record);
                    hub.publish(*call, pb::event::Kind::Record(record));
                }
            }
            tracing::debug!("media event channel closed");
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: pb::call_ended::Reason) -> pb::event::Kind {
        pb::event::Kind::Ended(pb::CallEnded {
            reason: reason as i32,
            last: None,
        })
    }

    /// A burst of ends far beyond the broadcast's buffer, with records and quality alerts in
    /// between, while nobody reads: the broadcast watcher lags, the ends subscriber gets every
    /// end, in order, and nothing else.
    #[test]
    fn ends_subscribers_lose_no_end_when_the_feed_overflows() {
        let hub = EventHub::new();
        let mut feed = hub.subscribe();
        let mut ends = hub.subscribe_ends();
        let n = EVENT_BUFFER as u64 * 4;
        for i in 0..n {
            hub.publish(CallId(i), pb::event::Kind::Answered(pb::CallAnswered {}));
            hub.publish(CallId(i), ended(pb::call_ended::Reason::MediaTimeout));
            hub.publish(
                CallId(i),
                pb::event::Kind::Record(pb::CallRecord::default()),
            );
        }
        assert!(matches!(
            feed.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        for i in 0..n {
            assert_eq!(
                ends.try_recv(),
                Ok(CallEnd {
                    call: CallId(i),
                    reason: pb::call_ended::Reason::MediaTimeout
                })
            );
        }
        assert!(ends.try_recv().is_err(), "only ends, each once");
    }

    /// A dropped receiver is forgotten on the next end; the others still get it.
    #[test]
    fn a_dropped_ends_receiver_unsubscribes() {
        let hub = EventHub::new();
        let gone = hub.subscribe_ends();
        let mut kept = hub.subscribe_ends();
        drop(gone);
        hub.publish(CallId(7), ended(pb::call_ended::Reason::Released));
        assert_eq!(hub.ends_list().len(), 1);
        assert_eq!(kept.try_recv().map(|e| e.call), Ok(CallId(7)));
    }
}
