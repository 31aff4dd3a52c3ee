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

/// What the outside world (signals) asks of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// SIGTERM: refuse new sessions, let calls finish within the grace period, then exit.
    Drain,
    /// SIGINT: exit now; running calls end with reason SHUTDOWN.
    Stop,
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

/// Runs until a [`Command::Stop`], a finished drain, or the command channel closing.
pub async fn run(
    v: Validated,
    control: tokio::net::TcpListener,
    notifier: Notifier,
    mut commands: mpsc::Receiver<Command>,
) -> Result<()> {
    let started = Instant::now();
    let advertised = advertised_addresses(&v);
    let (health_reporter, health_server) = tonic_health::server::health_reporter();
    let state = Arc::new(ControlState::new(started, health_reporter));
    state.publish().await;

    let (engine, media_events) = MediaEngine::start(v.config.media.clone())?;
    let media = engine.control();
    let sessions = Arc::new(SessionTable::new(
        Arc::new(media.clone()),
        advertised,
        v.offer_suites.clone(),
    ));
    let hub = EventHub::new();
    spawn_media_forwarder(media_events, hub.clone(), sessions.clone()).map_err(|source| {
        Error::Runtime {
            what: "event thread",
            source,
        }
    })?;
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
        )?),
        None => None,
    };

    state.set_ready().await;
    tracing::info!(control = %control_addr, tls = v.tls.is_some(), workers = media.workers(), "xccd ready");
    notifier.notify_or_log(&format!("READY=1\nSTATUS=serving on {control_addr}"));
    let watchdog = crate::watchdog::spawn(
        crate::watchdog::interval_from_env(),
        media.clone(),
        notifier.clone(),
    );

    let grace = Duration::from_secs(v.config.control.drain_grace_secs);
    // `graceful`: let in-flight control requests finish (drain); a stop ends them at once.
    let (outcome, graceful) = tokio::select! {
        cmd = commands.recv() => {
            let graceful = if cmd == Some(Command::Drain) {
                state.drain().await;
                notifier.notify_or_log("STOPPING=1\nSTATUS=draining");
                wait_drained(&media, &hub, grace, &mut commands).await
            } else {
                false
            };
            (Ok(()), graceful)
        }
        result = &mut server => (match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Control(e)),
            Err(join) => Err(Error::Runtime { what: "control server task", source: std::io::Error::other(join) }),
        }, false),
    };

    notifier.notify_or_log("STOPPING=1\nSTATUS=stopping");
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(sip) = sip {
        sip.stop().await;
    }
    hub.close();
    let _ = stop_server.send(());
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
    // Joining worker threads blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    tracing::info!("xccd stopped");
    outcome
}

/// Waits until no call is left, the grace period ends, or a Stop arrives (then returns false: stop
/// fast). Woken by call-ended events rather than polling.
async fn wait_drained(
    media: &xcc_core::media::MediaControl,
    hub: &EventHub,
    grace: Duration,
    commands: &mut mpsc::Receiver<Command>,
) -> bool {
    let mut events = hub.subscribe();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let left = media.calls().len();
        if left == 0 {
            tracing::info!("drain complete: no calls left");
            return true;
        }
        tracing::info!(calls = left, "draining");
        tokio::select! {
            _ = events.recv() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(calls = left, grace_secs = grace.as_secs(), "drain grace expired; ending remaining calls");
                return true;
            }
            cmd = commands.recv() => match cmd {
                Some(Command::Stop) | None => {
                    tracing::info!(calls = left, "stop requested while draining");
                    return false;
                }
                Some(Command::Drain) => {}
            },
        }
    }
}
