//! XCC control plane: the `xcc.v1` gRPC API, health and reflection.
//!
//! The daemon builds a [`server::ControlPlane`] around a [`media::MediaPlane`] (the media engine's
//! handle), hands it an already-bound listener and a shutdown future, and drives drain through the
//! shared [`control::ControlState`]. Media events reach subscribers through [`events::EventHub`].
//! Every `xcc_core::Error` becomes a `tonic::Status` in one place: [`error`].

pub mod control;
pub mod error;
pub mod events;
pub mod media;
pub mod record;
pub mod server;
pub mod service;
pub mod session;

/// Generated `xcc.v1` messages, server traits and clients (used by `xccctl` and tests too).
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("xcc.v1");

    /// Encoded descriptors of `xcc.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("xcc_v1_descriptor");
}

pub use error::{Error, Result};
