//! Serving the control API on an already-bound listener until a shutdown future completes.
//!
//! The daemon binds (so tests can bind port 0 and so binding errors surface before readiness), builds
//! the [`ControlPlane`], and passes both here together with health and optional TLS.

use std::future::Future;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::error::Error;
use crate::pb;
use crate::service::ControlPlane;

/// PEM material for mutual TLS on the control port.
#[derive(Clone)]
pub struct TlsMaterial {
    /// Server certificate chain.
    pub cert_pem: Vec<u8>,
    /// Server private key.
    pub key_pem: Vec<u8>,
    /// CA that client certificates must chain to; clients without one are refused.
    pub client_ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// rustls configuration requiring and verifying a client certificate.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(false)
    }
}

/// Serves `xcc.v1`, `grpc.health.v1` and reflection (v1 and v1alpha) on `listener` until `shutdown`
/// resolves, then stops accepting and finishes in-flight requests.
pub async fn serve<H, F>(
    plane: ControlPlane,
    health: HealthServer<H>,
    listener: tokio::net::TcpListener,
    tls: Option<&TlsMaterial>,
    shutdown: F,
) -> crate::Result<()>
where
    H: Health,
    F: Future<Output = ()> + Send,
{
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|source| Error::Reflection { source })?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|source| Error::Reflection { source })?;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|source| Error::Transport { source })?;
    }
    builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::sessions_server::SessionsServer::new(plane.clone()))
        .add_service(pb::calls_server::CallsServer::new(plane.clone()))
        .add_service(pb::satellite_server::SatelliteServer::new(plane))
        // Nagle off: each control RPC is a small request waiting on a small answer; with Nagle and
        // delayed ACKs every session setup took ~20 ms more (measured with xcc-load, docs/load.md).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|source| Error::Transport { source })
}
