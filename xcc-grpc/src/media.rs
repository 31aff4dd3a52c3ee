//! The media plane as the control plane sees it.
//!
//! A trait rather than `MediaControl` directly so that the gRPC layer's own logic (idempotency, drain,
//! error mapping, SDP rewriting) is unit-tested against an in-memory plane; the daemon passes the
//! real [`xcc_core::media::MediaControl`].

use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{AllocatedCall, CallSnapshot, LegConfig, MediaControl, PoolStatus};

/// What the control plane needs from the media plane; mirrors [`MediaControl`].
pub trait MediaPlane: Send + Sync + 'static {
    /// See [`MediaControl::allocate`].
    fn allocate(&self) -> xcc_core::Result<AllocatedCall>;
    /// See [`MediaControl::configure_leg`].
    fn configure_leg(&self, call: CallId, side: LegSide, config: LegConfig)
    -> xcc_core::Result<()>;
    /// See [`MediaControl::release`].
    fn release(&self, call: CallId) -> xcc_core::Result<()>;
    /// See [`MediaControl::snapshot`].
    fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot>;
    /// See [`MediaControl::calls`].
    fn calls(&self) -> Vec<CallSnapshot>;
    /// See [`MediaControl::pool_status`].
    fn pool_status(&self) -> PoolStatus;
    /// See [`MediaControl::workers`].
    fn workers(&self) -> usize;
    /// See [`MediaControl::retiring_ports`]; planes without a resizable pool have none.
    fn retiring_ports(&self) -> usize {
        0
    }
}

impl MediaPlane for MediaControl {
    fn allocate(&self) -> xcc_core::Result<AllocatedCall> {
        MediaControl::allocate(self)
    }
    fn configure_leg(
        &self,
        call: CallId,
        side: LegSide,
        config: LegConfig,
    ) -> xcc_core::Result<()> {
        MediaControl::configure_leg(self, call, side, config)
    }
    fn release(&self, call: CallId) -> xcc_core::Result<()> {
        MediaControl::release(self, call)
    }
    fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot> {
        MediaControl::snapshot(self, call)
    }
    fn calls(&self) -> Vec<CallSnapshot> {
        MediaControl::calls(self)
    }
    fn pool_status(&self) -> PoolStatus {
        MediaControl::pool_status(self)
    }
    fn workers(&self) -> usize {
        MediaControl::workers(self)
    }
    fn retiring_ports(&self) -> usize {
        MediaControl::retiring_ports(self)
    }
}
