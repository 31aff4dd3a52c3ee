//! NAT traversal cores: how XCC learns its public address, classifies the NAT in front of it,
//! answers ICE connectivity checks on client legs and punches holes towards clients.
//!
//! Every core here is sans-IO: the driver passes `now` and received bytes in, and takes datagrams
//! out (`poll_transmit`) and timers (`poll_timeout`); randomness comes from a caller's RNG. The
//! control plane drives [`discovery::Discovery`] and [`nat_type::NatTypeProbe`] from its own socket;
//! a media worker owns one [`ice::IceLite`] and one [`punch::Puncher`] per client leg and calls them
//! for STUN datagrams ([`stun::is_stun`]) that arrive on the leg's RTP port. Where XCC itself sits
//! behind a firewall that lets no media in, [`turn::TurnClient`] allocates a relayed address on a
//! TURN server and wraps media in Send/Data indications.

pub mod candidate;
pub mod discovery;
pub mod ice;
pub mod nat_type;
pub mod punch;
pub mod stun;
mod transaction;
pub mod turn;

pub use transaction::Retransmission;
