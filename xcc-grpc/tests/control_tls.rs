//! The control port with mutual TLS: a client certificate signed by `client_ca` is required.

use std::sync::Arc;
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{AllocatedCall, CallSnapshot, LegConfig, PoolStatus};
use xcc_grpc::control::ControlState;
use xcc_grpc::events::EventHub;
use xcc_grpc::media::MediaPlane;
use xcc_grpc::pb;
use xcc_grpc::server::{TlsMaterial, serve};
use xcc_grpc::service::ControlPlane;
use xcc_grpc::session::{Advertised, SessionTable};

/// A media plane with no calls: enough to answer Status.
struct NoMedia;

impl MediaPlane for NoMedia {
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
            total: 8,
            free: 8,
            used: 0,
            quarantined: 0,
        }
    }
    fn workers(&self) -> usize {
        1
    }
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    rogue_client: (String, String),
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

fn leaf(issuer: &Issuer<'_, KeyPair>, san: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![san.to_owned()])
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (issuer, ca_pem) = ca("xcc test CA");
    let (rogue, _) = ca("rogue CA");
    Pki {
        server: leaf(&issuer, "localhost"),
        client: leaf(&issuer, "xphone-server"),
        rogue_client: leaf(&rogue, "xphone-server"),
        ca_pem,
    }
}

async fn start(pki: &Pki) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let state = Arc::new(ControlState::new(Instant::now(), reporter));
    let advertised = Advertised {
        client: [127, 0, 0, 1].into(),
        pbx: [127, 0, 0, 1].into(),
    };
    let sessions = Arc::new(SessionTable::new(Arc::new(NoMedia), advertised, Vec::new()));
    let plane = ControlPlane {
        sessions,
        state,
        hub: EventHub::new(),
    };
    let tls = TlsMaterial {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: pki.ca_pem.clone().into_bytes(),
    };
    tokio::spawn(async move {
        serve(plane, health, listener, Some(&tls), std::future::pending()).await
    });
    addr
}

async fn status(
    addr: std::net::SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<pb::StatusResponse, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = pb::satellite_client::SatelliteClient::new(channel);
    client
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.to_string())
}

fn client_tls(pki: &Pki, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&pki.ca_pem));
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

#[tokio::test]
async fn client_with_certificate_from_client_ca_is_served() {
    let pki = pki();
    let addr = start(&pki).await;
    let s = status(addr, Some(client_tls(&pki, Some(&pki.client))))
        .await
        .unwrap();
    assert_eq!(s.ports_total, 8);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = pki();
    let addr = start(&pki).await;
    assert!(status(addr, Some(client_tls(&pki, None))).await.is_err());
}

#[tokio::test]
async fn client_with_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let addr = start(&pki).await;
    assert!(
        status(addr, Some(client_tls(&pki, Some(&pki.rogue_client))))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let pki = pki();
    let addr = start(&pki).await;
    assert!(status(addr, None).await.is_err());
}
