//! The control API in-process over loopback, against a media plane with no calls: drain and health,
//! error codes that need no SDP, reflection.

use std::sync::Arc;
use std::time::Instant;

use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{AllocatedCall, CallSnapshot, LegConfig, PoolStatus};
use xcc_grpc::control::ControlState;
use xcc_grpc::events::EventHub;
use xcc_grpc::media::MediaPlane;
use xcc_grpc::pb;
use xcc_grpc::server::serve;
use xcc_grpc::service::ControlPlane;
use xcc_grpc::session::{Advertised, SessionTable};

/// A media plane with no calls and a full pool.
struct Idle;

impl MediaPlane for Idle {
    fn allocate(&self) -> xcc_core::Result<AllocatedCall> {
        Err(xcc_core::Error::PoolExhausted { free: 0, needed: 4 })
    }
    fn configure_leg(&self, call: CallId, _: LegSide, _: LegConfig) -> xcc_core::Result<()> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn release(&self, call: CallId) -> xcc_core::Result<()> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn calls(&self) -> Vec<CallSnapshot> {
        Vec::new()
    }
    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            total: 100,
            free: 100,
            used: 0,
            quarantined: 0,
        }
    }
    fn workers(&self) -> usize {
        3
    }
}

async fn start_with_hub() -> (Channel, Arc<ControlState>, EventHub) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let state = Arc::new(ControlState::new(Instant::now(), reporter));
    state.publish().await;
    let advertised = Advertised {
        client: [127, 0, 0, 1].into(),
        pbx: [127, 0, 0, 1].into(),
    };
    let sessions = Arc::new(SessionTable::new(Arc::new(Idle), advertised, Vec::new()));
    let hub = EventHub::new();
    let plane = ControlPlane {
        sessions,
        state: state.clone(),
        hub: hub.clone(),
    };
    tokio::spawn(async move { serve(plane, health, listener, None, std::future::pending()).await });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, state, hub)
}

async fn start() -> (Channel, Arc<ControlState>) {
    let (channel, state, _) = start_with_hub().await;
    (channel, state)
}

async fn health(ch: &Channel) -> i32 {
    let req = HealthCheckRequest {
        service: String::new(),
    };
    HealthClient::new(ch.clone())
        .check(req)
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn health_is_not_serving_until_ready_and_while_draining() {
    let (ch, state) = start().await;
    assert_eq!(
        health(&ch).await,
        ServingStatus::NotServing as i32,
        "starting"
    );
    state.set_ready().await;
    assert_eq!(health(&ch).await, ServingStatus::Serving as i32);

    let mut satellite = pb::satellite_client::SatelliteClient::new(ch.clone());
    satellite.drain(pb::DrainRequest::default()).await.unwrap();
    assert_eq!(health(&ch).await, ServingStatus::NotServing as i32);
    let status = satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.draining);
    assert_eq!(
        (status.ports_total, status.ports_free, status.workers),
        (100, 100, 3)
    );
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));

    let mut sessions = pb::sessions_client::SessionsClient::new(ch.clone());
    let req = pb::CreateSessionRequest {
        idempotency_key: "k".into(),
        offer_from: pb::Side::Pbx as i32,
        sdp: "v=0".into(),
    };
    let err = sessions.create_session(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    satellite.resume(pb::ResumeRequest {}).await.unwrap();
    assert_eq!(health(&ch).await, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_missing_ids_invalid() {
    let (ch, state) = start().await;
    state.set_ready().await;
    let mut calls = pb::calls_client::CallsClient::new(ch.clone());
    let err = calls
        .hang_up(pb::HangUpRequest { call_id: 42 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("call_id"), "{}", err.message());
    let err = calls
        .get_call(pb::GetCallRequest { call_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("call_id"), "{}", err.message());
    let mut sessions = pb::sessions_client::SessionsClient::new(ch);
    let err = sessions
        .get_session(pb::GetSessionRequest { session_id: 42 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let req = pb::CreateSessionRequest {
        idempotency_key: "k".into(),
        offer_from: 0,
        sdp: "v=0".into(),
    };
    let err = sessions.create_session(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("offer_from"), "{}", err.message());
}

#[tokio::test]
async fn reflection_lists_the_xcc_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (ch, _) = start().await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "xcc.v1.Sessions",
        "xcc.v1.Calls",
        "xcc.v1.Satellite",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn watchers_get_published_events_and_end_when_the_hub_closes() {
    let (ch, state, hub) = start_with_hub().await;
    state.set_ready().await;
    let mut calls = pb::calls_client::CallsClient::new(ch);
    let mut events = calls
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The subscription exists once the response headers arrived; publish, then close.
    hub.publish(CallId(5), pb::event::Kind::Answered(pb::CallAnswered {}));
    let e = events.message().await.unwrap().expect("event");
    assert_eq!(e.call_id, 5);
    assert!(matches!(e.kind, Some(pb::event::Kind::Answered(_))));
    hub.close();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), events.message()).await;
    assert!(
        matches!(end, Ok(Ok(None))),
        "stream ends at shutdown: {end:?}"
    );
}

#[tokio::test]
async fn status_shows_the_turn_relay_only_when_one_is_installed() {
    let (ch, state) = start().await;
    let mut satellite = pb::satellite_client::SatelliteClient::new(ch);
    let status = satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.turn_server, "", "no [turn]: no server");
    assert_eq!(status.turn_ready, None);
    let server: std::net::SocketAddr = "198.51.100.7:3478".parse().unwrap();
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let read = ready.clone();
    state.set_turn(xcc_grpc::nat::TurnSource {
        server,
        status: Box::new(move || {
            Some(xcc_core::media::RelayStatus {
                server,
                ready: read.load(std::sync::atomic::Ordering::Relaxed),
                pending: 1,
                allocated_total: 4,
                failed_total: 0,
                last_error: None,
                last_success: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(2)),
            })
        }),
    });
    let status = satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.turn_server, "198.51.100.7:3478");
    assert_eq!(
        (
            status.turn_ready,
            status.turn_pending,
            status.turn_allocated_total
        ),
        (Some(3), Some(1), Some(4))
    );
    assert_eq!(status.turn_failed_total, Some(0));
    assert_eq!(status.turn_last_success_unix_ms, Some(2000));
    // Read at request time: the relay's counters move without anyone publishing them.
    ready.store(0, std::sync::atomic::Ordering::Relaxed);
    let status = satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.turn_ready, Some(0));
}
