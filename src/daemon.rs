//! The running daemon: media plane, control API, readiness and drain.
//!
//! [`run`] takes an already-bound control listener and a command channel (the binary turns signals
//! into [`Command`]s), so tests and the binary drive it the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use xcc_core::media::MediaEngine;
use xcc_grpc::control::ControlState;
use xcc_grpc::events::{EventHub, spawn_media_forwarder};
use xcc_grpc::service::ControlPlane;
use xcc_grpc::session::{Advertised, SessionTable};

use crate::config::Validated;
use crate::error::{Error, Result};
use crate::netif;
use crate::notify::Notifier;
use crate::reload::DrainGrace;

/// What the outside world (signals) asks of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// SIGTERM: refuse new sessions, let calls finish within the grace period, then exit.
    Drain,
    /// SIGINT: exit now; running calls end with reason SHUTDOWN.
    Stop,
    /// SIGHUP: re-read the configuration file and apply what can change live.
    Reload,
}

/// The addresses XCC advertises, chosen per `[nat]` with the reason logged.
pub fn advertised_addresses(v: &Validated) -> Advertised {
    let c = &v.config;
    let interfaces = if c.nat.public_address.is_none() || c.nat.pbx_address.is_none() {
        netif::interface_addresses().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "getifaddrs failed; falling back to loopback");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let bind = c.media.bind_address;
    let (client, why_client) = netif::choose(c.nat.public_address, bind, &interfaces);
    let (pbx, why_pbx) = netif::choose(c.nat.pbx_address, bind, &interfaces);
    tracing::info!(address = %client, reason = %why_client, "client leg advertises");
    tracing::info!(address = %pbx, reason = %why_pbx, "PBX leg advertises");
    Advertised { client, pbx }
}

/// Runs until a [`Command::Stop`], a finished drain, or the command channel closing. `reload`
/// says where the configuration came from, for SIGHUP and `Satellite.Reload`.
pub async fn run(
    v: Validated,
    control: tokio::net::TcpListener,
    notifier: Notifier,
    mut commands: mpsc::Receiver<Command>,
    reload: crate::reload::Source,
) -> Result<()> {
    let started = Instant::now();
    let advertised = advertised_addresses(&v);
    let (health_reporter, health_server) = tonic_health::server::health_reporter();
    let state = Arc::new(ControlState::new(started, health_reporter));
    state.publish().await;

    if let Some(turn) = &v.turn {
        tracing::info!(
            server = %turn.server,
            name = %turn.server_name,
            spares = turn.spares,
            lifetime_secs = turn.lifetime.as_secs(),
            "client legs relayed through XCC's own TURN allocations"
        );
    }
    let relay = v.turn.as_ref().map(|t| t.relay_config());
    let (engine, media_events) = MediaEngine::start_restoring(v.config.media.clone(), relay)?;
    let media = engine.control();
    if let Some(turn) = &v.turn {
        let m = media.clone();
        state.set_turn(xcc_grpc::nat::TurnSource {
            server: turn.server,
            status: Box::new(move || m.relay_status()),
        });
    }
    let (store, inbox) = crate::store::StoreHandle::channel();
    let sessions = Arc::new(SessionTable::new(
        Arc::new(crate::store::Persisting {
            inner: media.clone(),
            store: store.clone(),
        }),
        advertised,
        v.offer_suites.clone(),
    ));
    // Before the control port serves: resumed calls keep their ids and ports.
    // `resumed.signalling` holds the SIP layer's dialog blobs of the resumed calls: `start_sip`
    // re-creates their dialogs (docs/ops.md, "SIP hook").
    let (resumed, store_writer) = crate::store::start(&v.config.state, inbox, &media, &sessions);
    // Only now may TURN spares take ports: a spare on a stored call's port would drop that call.
    media.restore_done();
    let grace = DrainGrace::new(v.config.control.drain_grace_secs);
    let reloader = crate::reload::start_reload(reload, &v, &media, &grace);
    state.set_reloader(reloader.clone());
    let hub = EventHub::new();
    spawn_media_forwarder(media_events, hub.clone(), sessions.clone()).map_err(|source| {
        Error::Runtime {
            what: "event thread",
            source,
        }
    })?;
    let discovery = crate::public_address::start_public_address(
        &v,
        advertised.client,
        crate::public_address::Sinks {
            sessions: sessions.clone(),
            state: state.clone(),
            hub: hub.clone(),
        },
        &reloader,
    );
    state.set_log_hook(Box::new(crate::logging::apply_level));
    // Subsystems add their collectors to `metrics` (`metrics.register(..)`) before it is served;
    // see docs/metrics.md "Plugging in a subsystem".
    let metrics = crate::metrics::daemon_registry(media.clone(), state.clone(), &hub);
    crate::public_address::register_metrics(&metrics, media.clone(), state.clone());
    if v.turn.is_some() {
        crate::metrics::register_turn(&metrics, state.clone());
    }
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    crate::metrics::start(v.config.metrics.address()?, metrics.clone(), async {
        let _ = metrics_stopped.await;
    })
    .await;
    let plane = ControlPlane {
        sessions: sessions.clone(),
        state: state.clone(),
        hub: hub.clone(),
    };

    let control_addr = control.local_addr().map_err(|source| Error::Runtime {
        what: "control listener",
        source,
    })?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let tls = v.tls.clone();
    let mut server = tokio::spawn(async move {
        let shutdown = async {
            let _ = server_stopped.await;
        };
        xcc_grpc::server::serve(plane, health_server, control, tls.as_ref(), shutdown).await
    });

    let sip = match &v.sip {
        Some(settings) => Some(crate::sip::start_sip(
            settings,
            advertised,
            sessions.clone(),
            state.clone(),
            hub.clone(),
            &metrics,
            crate::sip::StoredCalls {
                store: store.clone(),
                resumed: &resumed,
            },
        )?),
        None => None,
    };
    if let Some(sip) = &sip {
        reloader.register(sip.peers_applier());
    }

    state.set_ready().await;
    tracing::info!(control = %control_addr, tls = v.tls.is_some(), workers = media.workers(), "xccd ready");
    notifier.notify_or_log(&format!("READY=1\nSTATUS=serving on {control_addr}"));
    let watchdog = crate::watchdog::spawn(
        crate::watchdog::interval_from_env(),
        media.clone(),
        notifier.clone(),
    );

    let drain = Drain {
        media: &media,
        hub: &hub,
        state: &state,
        grace: &grace,
        reloader: &reloader,
    };
    // `graceful`: let in-flight control requests finish (drain); a stop ends them at once.
    let (outcome, graceful) = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Reload) => crate::reload::run_blocking(&reloader).await,
                Some(Command::Drain) => {
                    state.drain_and_exit().await;
                    notifier.notify_or_log("STOPPING=1\nSTATUS=draining");
                    break (Ok(()), drain.wait(&mut commands).await);
                }
                Some(Command::Stop) | None => break (Ok(()), false),
            },
            _ = state.exit_requested() => {
                notifier.notify_or_log("STOPPING=1\nSTATUS=draining");
                break (Ok(()), drain.wait(&mut commands).await);
            }
            result = &mut server => break (match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Control(e)),
                Err(join) => Err(Error::Runtime { what: "control server task", source: std::io::Error::other(join) }),
            }, false),
        }
    };

    notifier.notify_or_log("STOPPING=1\nSTATUS=stopping");
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(d) = discovery {
        d.abort();
    }
    if let Some(sip) = sip {
        sip.stop().await;
    }
    hub.close();
    let _ = stop_server.send(());
    let _ = stop_metrics.send(());
    if !graceful {
        server.abort();
    } else if !server.is_finished() {
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "control server stopped with an error"),
            Err(_) => {
                tracing::warn!("control server did not stop within 5 s; aborting it");
                server.abort();
            }
            _ => {}
        }
    }
    // A fast stop keeps the stored calls (they resume on the next start); after a drain the calls
    // the engine ends now are deleted from the store by a final sync.
    // Joining threads blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || {
        if !graceful {
            crate::store::stop(&store, false);
            join_writer(store_writer);
            engine.shutdown();
        } else {
            engine.shutdown();
            crate::store::stop(&store, true);
            join_writer(store_writer);
        }
    })
    .await;
    tracing::info!("xccd stopped");
    outcome
}

fn join_writer(writer: Option<std::thread::JoinHandle<()>>) {
    if let Some(w) = writer
        && w.join().is_err()
    {
        tracing::error!("the call store writer panicked");
    }
}

/// What a drain watches.
struct Drain<'a> {
    media: &'a xcc_core::media::MediaControl,
    hub: &'a EventHub,
    state: &'a ControlState,
    grace: &'a DrainGrace,
    reloader: &'a Arc<crate::reload::Reloader>,
}

impl Drain<'_> {
    /// Waits until no call is left, the grace period ends (a reload may move it), or a Stop
    /// arrives (then returns false: stop fast). Woken by call-ended events rather than polling;
    /// the remaining count and deadline are in `Satellite.Status` meanwhile.
    async fn wait(&self, commands: &mut mpsc::Receiver<Command>) -> bool {
        let mut events = self.hub.subscribe();
        let started = Instant::now();
        let mut logged = None;
        let finished = loop {
            let grace = self.grace.get();
            let deadline = started + grace;
            self.state.set_drain_deadline(Some(deadline));
            let left = self.media.calls().len();
            if left == 0 {
                tracing::info!("drain complete: no calls left");
                break true;
            }
            if logged != Some(left) {
                tracing::info!(calls = left, "draining");
                logged = Some(left);
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = self.grace.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    tracing::warn!(calls = left, grace_secs = grace.as_secs(), "drain grace expired; ending remaining calls");
                    break true;
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Stop) | None => {
                        tracing::info!(calls = left, "stop requested while draining");
                        break false;
                    }
                    Some(Command::Reload) => crate::reload::run_blocking(self.reloader).await,
                    Some(Command::Drain) => {}
                },
            }
        };
        self.state.set_drain_deadline(None);
        finished
    }
}
