//! Why a load run failed. Kept apart from the daemon's error type: the load generator is a client
//! of xccd and its failures (a refused session, a non-loopback address) are not the daemon's.

use std::net::SocketAddr;

/// A load run's failure; each variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad combination of arguments (clap checks the rest); exit status 2.
    #[error("invalid arguments: {reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// Could not reach xccd's control API.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: String,
        /// Transport error.
        source: tonic::transport::Error,
    },
    /// xccd answered an RPC with an error.
    #[error("{rpc} for call {call}: {status}")]
    Rpc {
        /// Which RPC.
        rpc: &'static str,
        /// Call index within the run.
        call: u32,
        /// What xccd said.
        status: Box<tonic::Status>,
    },
    /// A SIP call did not set up (or was refused); the reason names the response or timer.
    #[error("call {call}: SIP: {reason}")]
    Sip {
        /// Call index within the run.
        call: u32,
        /// What happened.
        reason: String,
    },
    /// XCC's SDP could not be used.
    #[error("call {call}: unusable SDP from XCC: {reason}")]
    Sdp {
        /// Call index within the run.
        call: u32,
        /// What is missing or malformed.
        reason: String,
    },
    /// XCC (or the forwarder) gave a media address that is not loopback; the run sends only to
    /// loopback.
    #[error("call {call}: refusing to send to non-loopback address {addr}")]
    NotLoopback {
        /// Call index within the run.
        call: u32,
        /// The address offered.
        addr: SocketAddr,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading `/proc/PID` failed (wrong pid, or it exited).
    #[error("/proc/{pid}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// `/proc/PID/stat` did not have the expected fields.
    #[error("/proc/{pid}/stat: unexpected format")]
    ProcFormat {
        /// The process.
        pid: u32,
    },
    /// sched_setaffinity refused.
    #[error("cannot pin to CPU {cpu}: {source}")]
    Affinity {
        /// The CPU asked for.
        cpu: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bare forwarder child did not start.
    #[error("forwarder: {reason}")]
    Forwarder {
        /// What went wrong.
        reason: String,
    },
}

impl LoadError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> LoadError {
        move |source| LoadError::Io { what, source }
    }
}
