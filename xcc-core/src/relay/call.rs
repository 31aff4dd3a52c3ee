//! One call, sans-IO: two legs, the forwarding entry per direction, the media timer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::ids::LegSide;
use crate::leg::{DropReason, Inbound, LatchPolicy, Leg, LocalPort, Outbound};
use crate::media::{CallQuality, Direction, LegConfig};
use crate::quality::{MonitorConfig, QualityEvent, call_score};
use crate::relay::published::{CallState, LegState};

/// What happens to media crossing the call in one direction, fixed when the legs are configured
/// so that a packet only follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Plain RTP in, plain RTP out.
    Pass,
    /// SRTP in, plain RTP out.
    Decrypt,
    /// Plain RTP in, SRTP out.
    Encrypt,
    /// SRTP in, SRTP out under the other leg's keys.
    Reencrypt,
}

impl Transform {
    /// The transform between a source leg and a destination leg given whether each speaks SRTP.
    pub fn between(src_srtp: bool, dst_srtp: bool) -> Self {
        match (src_srtp, dst_srtp) {
            (false, false) => Transform::Pass,
            (true, false) => Transform::Decrypt,
            (false, true) => Transform::Encrypt,
            (true, true) => Transform::Reencrypt,
        }
    }
}

/// Timer settings of a call, from the media config.
#[derive(Debug, Clone, Copy)]
pub struct CallTimers {
    /// No media for this long ends the call.
    pub media_timeout: Duration,
    /// The same while any leg is not sendrecv.
    pub hold_timeout: Duration,
}

/// The outcome of one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Send the first `out.len` bytes of the buffer from leg `to`'s `out.from` socket.
    pub send: Option<(LegSide, Outbound, bool)>,
    /// The receiving leg latched onto this address (report it).
    pub latched: Option<SocketAddr>,
}

/// Both legs of a call and its media timer, owned by one worker.
#[derive(Debug)]
pub struct Call {
    /// Indexed by [`LegSide::index`].
    legs: [Leg; 2],
    /// Per source side: what crosses towards the other leg.
    transforms: [Transform; 2],
    /// Last accepted media on either leg (creation time until then).
    last_media: Instant,
    /// Timer settings.
    timers: CallTimers,
    /// Learning window for plain legs.
    policy: LatchPolicy,
    /// Publication needed at the next tick: configuration, a latch, a quality evaluation,
    /// punching; what a reader may be waiting for.
    dirty: bool,
    /// Only traffic counters changed since the last publication: published when the worker says
    /// they are due ([`Call::take_dirty`]), not at every tick.
    counted: bool,
}

impl Call {
    /// A call whose legs wait for configuration, with default quality monitoring.
    pub fn new(now: Instant, timers: CallTimers, policy: LatchPolicy) -> Self {
        Self::with_quality(now, timers, policy, MonitorConfig::default())
    }

    /// A call whose legs' quality monitors use `quality` (from `MediaConfig::quality`).
    pub fn with_quality(
        now: Instant,
        timers: CallTimers,
        policy: LatchPolicy,
        quality: MonitorConfig,
    ) -> Self {
        Self {
            legs: [
                Leg::with_monitor(LegSide::Client, now, quality),
                Leg::with_monitor(LegSide::Pbx, now, quality),
            ],
            transforms: [Transform::Pass; 2],
            last_media: now,
            timers,
            policy,
            dirty: true,
            counted: false,
        }
    }

    /// Applies signalling to one leg and recomputes both directions' transforms.
    pub fn configure(&mut self, side: LegSide, config: LegConfig, now: Instant) {
        self.legs[side.index()].configure(config, self.policy, now);
        let srtp = |s: LegSide| self.legs[s.index()].config().srtp.is_some();
        for src in [LegSide::Client, LegSide::Pbx] {
            self.transforms[src.index()] = Transform::between(srtp(src), srtp(src.other()));
        }
        self.dirty = true;
    }

    /// Restores one leg's latches and SRTP progress after a restart (after [`Call::configure`]).
    pub fn resume_leg(
        &mut self,
        side: LegSide,
        latched: (Option<SocketAddr>, Option<SocketAddr>),
        srtp: &crate::media::LegSrtpProgress,
    ) {
        self.legs[side.index()].resume(latched.0, latched.1, srtp);
        self.dirty = true;
    }

    /// The transform applied to media arriving on `src`.
    pub fn transform(&self, src: LegSide) -> Transform {
        self.transforms[src.index()]
    }

    /// A leg.
    pub fn leg(&self, side: LegSide) -> &Leg {
        &self.legs[side.index()]
    }

    /// Hands a STUN datagram received on `side`'s `port` to that leg's ICE-lite responder.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        side: LegSide,
        port: LocalPort,
        from: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
    ) -> crate::leg::StunReply {
        let reply = self.legs[side.index()].handle_stun(now, port, from, pkt, out);
        if reply.latched.is_some() {
            self.dirty = true;
        } else {
            self.counted = true;
        }
        reply
    }

    /// Handles `len` bytes received on leg `side`'s `port` from `from`; on `send` the buffer holds
    /// what to transmit.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        side: LegSide,
        port: LocalPort,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Step {
        self.counted = true;
        let (src, dst) = match side {
            LegSide::Client => {
                let [c, p] = &mut self.legs;
                (c, p)
            }
            LegSide::Pbx => {
                let [c, p] = &mut self.legs;
                (p, c)
            }
        };
        let Inbound::Media { len, rtcp, latched } = src.handle_receive(now, port, from, buf, len)
        else {
            return Step {
                send: None,
                latched: None,
            };
        };
        self.last_media = now;
        // A latch is published at the next tick: signalling and the store wait for it.
        self.dirty |= latched.is_some();
        match dst.prepare_send(now, buf, len, rtcp) {
            Ok(out) => Step {
                send: Some((side.other(), out, rtcp)),
                latched,
            },
            Err(reason) => {
                src.record_drop(reason);
                Step {
                    send: None,
                    latched,
                }
            }
        }
    }

    /// Hints the state a packet arriving on `port` of leg `side` will touch, on both legs, so
    /// the worker can ask for it before it reads the datagram (see [`crate::prefetch`]).
    pub fn prefetch(&self, side: LegSide, port: LocalPort) {
        self.legs[side.index()].prefetch_receive(port);
        self.legs[side.other().index()].prefetch_send(port);
    }

    /// Records the outcome of a send decided by [`Call::handle_receive`]: `to` is the leg sent to,
    /// `from` the leg the packet came in on.
    pub fn record_send(&mut self, from: LegSide, to: LegSide, len: usize, rtcp: bool, ok: bool) {
        if ok {
            self.legs[to.index()].record_sent(len, rtcp);
        } else {
            self.legs[from.index()].record_drop(DropReason::SendError);
        }
    }

    /// Counts a drop the worker decided before the leg saw the packet (a datagram that bypassed
    /// the leg's TURN relay).
    pub fn record_drop(&mut self, side: LegSide, reason: DropReason) {
        self.legs[side.index()].record_drop(reason);
        self.counted = true;
    }

    /// The silence after which this call ends: the hold timeout while any leg is not sendrecv.
    pub fn timeout(&self) -> Duration {
        let on_hold = self
            .legs
            .iter()
            .any(|l| l.config().direction != Direction::SendRecv);
        if on_hold {
            self.timers.hold_timeout
        } else {
            self.timers.media_timeout
        }
    }

    /// Whether the media timer expired at `now`.
    pub fn is_timed_out(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_media) >= self.timeout()
    }

    /// Time since the last accepted media.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_media)
    }

    /// Runs the legs' quality evaluations that are due (once per second each); off the packet
    /// path, from the worker's tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        for leg in &mut self.legs {
            let monitor = leg.monitor_mut();
            if now >= monitor.poll_timeout() {
                monitor.handle_timeout(now);
                self.dirty = true;
            }
        }
    }

    /// Advances the client leg's hole punching (worker tick); probes then come from
    /// [`Call::poll_punch`].
    pub fn handle_punch_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        let leg = &mut self.legs[LegSide::Client.index()];
        if leg.is_punching() {
            leg.handle_punch_timeout(now, rng);
            self.dirty = true;
        }
    }

    /// The client leg's next hole-punching probe in `buf`: destination and length, to send from
    /// the client RTP socket.
    pub fn poll_punch(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.legs[LegSide::Client.index()].poll_punch(buf)
    }

    /// Next quality event of either leg (VoIP-ready limit crossed or recovered).
    pub fn poll_quality_event(&mut self) -> Option<(LegSide, QualityEvent)> {
        self.legs
            .iter_mut()
            .find_map(|l| l.monitor_mut().poll_event().map(|e| (l.side(), e)))
    }

    /// Quality per leg and for the whole call, for the call record; open limit episodes are
    /// counted up to `now`.
    pub fn quality(&self, now: Instant) -> CallQuality {
        let legs = [
            self.legs[0].monitor().summary(now),
            self.legs[1].monitor().summary(now),
        ];
        let score = call_score(&[legs[0].last, legs[1].last]);
        CallQuality {
            legs,
            mos: score.map(|s| s.mos),
            r_factor: score.map(|s| s.r_factor),
        }
    }

    /// Whether to publish now, clearing the flags when so: always after a change a reader may
    /// wait for, and after mere traffic only when `counters_due` (the worker spreads that over
    /// several ticks: publishing every call's counters every tick was ~2 % of xccd's CPU at 750
    /// calls, docs/load.md).
    pub fn take_dirty(&mut self, counters_due: bool) -> bool {
        if self.dirty || (self.counted && counters_due) {
            self.dirty = false;
            self.counted = false;
            true
        } else {
            false
        }
    }

    /// The state the control plane sees, relative to the engine's `epoch`.
    pub(crate) fn state(&self, epoch: Instant) -> CallState {
        let leg = |l: &Leg| LegState {
            counters: *l.counters(),
            latched: l.latched_rtp(),
            latched_rtcp: l.latched_rtcp(),
            quality: l.monitor().snapshot(),
            srtp: l.srtp_progress(),
        };
        CallState {
            legs: [leg(&self.legs[0]), leg(&self.legs[1])],
            last_media_nanos: u64::try_from(
                self.last_media.saturating_duration_since(epoch).as_nanos(),
            )
            .unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMERS: CallTimers = CallTimers {
        media_timeout: Duration::from_secs(60),
        hold_timeout: Duration::from_secs(3600),
    };
    const POLICY: LatchPolicy = LatchPolicy {
        learning_window: Duration::from_secs(3),
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp_pkt() -> [u8; 200] {
        let mut p = [0u8; 200];
        p[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]);
        for (i, b) in p[12..172].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    fn configured(now: Instant) -> Call {
        let mut call = Call::new(now, TIMERS, POLICY);
        call.configure(
            LegSide::Client,
            LegConfig {
                remote_rtp: Some(addr("192.0.2.10:5000")),
                ..LegConfig::default()
            },
            now,
        );
        call.configure(
            LegSide::Pbx,
            LegConfig {
                remote_rtp: Some(addr("10.0.0.1:4000")),
                ..LegConfig::default()
            },
            now,
        );
        call
    }

    #[test]
    fn plain_rtp_crosses_untouched_to_the_other_leg() {
        let t0 = Instant::now();
        let mut call = configured(t0);
        let mut p = rtp_pkt();
        let step = call.handle_receive(
            t0,
            LegSide::Client,
            LocalPort::Rtp,
            addr("192.0.2.10:5000"),
            &mut p,
            172,
        );
        let (to, out, rtcp) = step.send.unwrap();
        assert_eq!(
            (to, out.from, out.to, out.len, rtcp),
            (
                LegSide::Pbx,
                LocalPort::Rtp,
                addr("10.0.0.1:4000"),
                172,
                false
            )
        );
        assert_eq!(p, rtp_pkt(), "payload untouched");
        assert_eq!(step.latched, Some(addr("192.0.2.10:5000")));
        assert_eq!(call.transform(LegSide::Client), Transform::Pass);
    }

    /// A latch is published at the next tick; mere traffic waits for its turn, and is then
    /// published once.
    #[test]
    fn a_latch_is_published_at_once_and_traffic_when_its_turn_comes() {
        let t0 = Instant::now();
        let mut call = configured(t0);
        assert!(call.take_dirty(false), "configuration is published at once");
        assert!(!call.take_dirty(true), "nothing left");
        let packet = |call: &mut Call| {
            let mut p = rtp_pkt();
            call.handle_receive(
                t0,
                LegSide::Client,
                LocalPort::Rtp,
                addr("192.0.2.10:5000"),
                &mut p,
                172,
            )
        };
        assert!(packet(&mut call).latched.is_some());
        assert!(
            call.take_dirty(false),
            "the latch does not wait for its turn"
        );
        assert!(packet(&mut call).latched.is_none());
        assert!(!call.take_dirty(false), "counters wait for their turn");
        assert!(call.take_dirty(true), "and are published when it comes");
        assert!(!call.take_dirty(true), "once");
    }

    #[test]
    fn no_route_is_counted_on_the_receiving_leg() {
        let t0 = Instant::now();
        let mut call = Call::new(t0, TIMERS, POLICY);
        call.configure(
            LegSide::Client,
            LegConfig {
                remote_rtp: Some(addr("192.0.2.10:5000")),
                ..LegConfig::default()
            },
            t0,
        );
        let mut p = rtp_pkt();
        let step = call.handle_receive(
            t0,
            LegSide::Client,
            LocalPort::Rtp,
            addr("192.0.2.10:5000"),
            &mut p,
            172,
        );
        assert_eq!(step.send, None);
        assert_eq!(call.leg(LegSide::Client).counters().drops.no_route, 1);
        assert_eq!(call.leg(LegSide::Client).counters().packets_in, 1);
    }

    #[test]
    fn media_timer_uses_hold_timeout_when_a_leg_is_on_hold() {
        let t0 = Instant::now();
        let mut call = configured(t0);
        assert!(!call.is_timed_out(t0 + Duration::from_secs(59)));
        assert!(call.is_timed_out(t0 + Duration::from_secs(60)));
        let mut p = rtp_pkt();
        let t1 = t0 + Duration::from_secs(50);
        call.handle_receive(
            t1,
            LegSide::Pbx,
            LocalPort::Rtp,
            addr("10.0.0.1:4000"),
            &mut p,
            172,
        );
        assert!(
            !call.is_timed_out(t0 + Duration::from_secs(100)),
            "media restarts the timer"
        );
        call.configure(
            LegSide::Pbx,
            LegConfig {
                remote_rtp: Some(addr("10.0.0.1:4000")),
                direction: Direction::SendOnly,
                ..LegConfig::default()
            },
            t1,
        );
        assert!(!call.is_timed_out(t1 + Duration::from_secs(3599)));
        assert!(call.is_timed_out(t1 + Duration::from_secs(3600)));
    }

    #[test]
    fn dropped_packets_do_not_feed_the_timer() {
        let t0 = Instant::now();
        let mut call = configured(t0);
        let mut p = rtp_pkt();
        call.handle_receive(
            t0 + Duration::from_secs(59),
            LegSide::Pbx,
            LocalPort::Rtp,
            addr("203.0.113.9:1"),
            &mut p,
            172,
        );
        assert!(call.is_timed_out(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn transforms_follow_the_legs_crypto() {
        assert_eq!(Transform::between(true, false), Transform::Decrypt);
        assert_eq!(Transform::between(false, true), Transform::Encrypt);
        assert_eq!(Transform::between(true, true), Transform::Reencrypt);
        assert_eq!(Transform::between(false, false), Transform::Pass);
    }

    #[test]
    fn quality_is_evaluated_on_the_timer_and_summarised_per_leg() {
        let t0 = Instant::now();
        let mut call = configured(t0);
        // Every fourth packet from the PBX lost: 25 % over the limit for longer than the debounce.
        let mut crossed = Vec::new();
        for seq in 0..500u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(seq));
            if seq % 4 != 3 {
                let mut p = rtp_pkt();
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                call.handle_receive(
                    now,
                    LegSide::Pbx,
                    LocalPort::Rtp,
                    addr("10.0.0.1:4000"),
                    &mut p,
                    172,
                );
            }
            call.take_dirty(true);
            call.handle_timeout(now);
            while let Some(e) = call.poll_quality_event() {
                crossed.push(e);
            }
        }
        assert_eq!(crossed.len(), 1, "{crossed:?}");
        assert!(matches!(
            crossed[0],
            (
                LegSide::Pbx,
                QualityEvent::VoipReady(crate::quality::VoipEvent::LimitCrossed {
                    limit: crate::quality::Limit::Loss,
                    ..
                })
            )
        ));
        let end = t0 + Duration::from_secs(10);
        call.handle_timeout(end);
        assert!(call.take_dirty(false), "an evaluation is published at once");
        let st = call.state(t0);
        assert!(st.legs[1].quality.loss_percent > 20.0);
        assert_eq!(st.legs[0].quality.received, 0);
        let q = call.quality(end);
        assert_eq!(
            q.legs[1]
                .voip_ready
                .of(crate::quality::Limit::Loss)
                .episodes,
            1
        );
        assert_eq!(q.mos, None, "no RTT: no call MOS");
    }
}
