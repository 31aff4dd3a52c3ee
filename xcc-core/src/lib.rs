//! XCC media plane.
//!
//! The control plane (SIP, gRPC) reaches media only through [`media::MediaControl`]: it allocates a
//! call (four ports from [`ports`]), tells each leg where its peer is and which keys it uses, and reads
//! counters from published snapshots. Packets never touch the control plane: worker threads in
//! [`relay`] own the sockets, the SRTP contexts ([`srtp`]) and the per-leg latching state ([`leg`]).
//!
//! Every per-packet decision is a pure function of (leg state, packet, now), so it is unit-tested
//! with an injected clock and no sockets.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod ids;
pub mod leg;
pub mod media;
pub mod nat;
pub mod ports;
mod prefetch;
pub mod priority;
pub mod quality;
pub mod recv_batch;
pub mod relay;
pub mod rtp;
pub mod sdes;
pub mod sdp;
pub mod socket;
pub mod srtp;

pub use error::{Error, Result};
