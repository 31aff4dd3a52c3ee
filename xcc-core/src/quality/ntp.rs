//! NTP timestamps as RTCP carries them (RFC 3550 §4, §6.4.1).
//!
//! Sender reports carry a full 64-bit NTP timestamp; receiver reports echo only its middle 32 bits
//! (LSR) together with the delay since that SR arrived (DLSR), both in 1/65536 s. Round-trip time is
//! then `A - LSR - DLSR` in the same unit, with `A` the arrival time of the report. These helpers
//! are what an RR/SR writer and the RTT estimate share.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch.
const UNIX_TO_NTP_SECS: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 in the high word, binary fraction in the low word.
///
/// A newtype so a compact (middle 32 bits) value and a full timestamp are never mixed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP timestamp of a wall-clock instant. Times before 1970 (a broken clock) map to the
    /// Unix epoch rather than failing: an SR with a wrong wall clock still yields a correct RTT,
    /// because RTT only compares values XCC itself produced.
    pub fn from_system_time(t: SystemTime) -> Self {
        let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since_unix.as_secs().wrapping_add(UNIX_TO_NTP_SECS);
        // subsec_nanos < 1e9, so nanos << 32 fits in u64 and the quotient is < 2^32.
        let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The wall-clock instant this timestamp names (era 0, i.e. up to 2036).
    pub fn to_system_time(self) -> SystemTime {
        let secs = self.0 >> 32;
        let frac = self.0 & 0xffff_ffff;
        let nanos = (frac * 1_000_000_000) >> 32;
        let unix_secs = secs.saturating_sub(UNIX_TO_NTP_SECS);
        UNIX_EPOCH + Duration::new(unix_secs, nanos as u32)
    }

    /// The middle 32 bits: what a receiver report echoes as LSR (RFC 3550 §6.4.1).
    pub fn compact(self) -> u32 {
        // Truncation to the middle word is the point of the function.
        (self.0 >> 16) as u32
    }
}

/// A compact NTP value (16.16 fixed-point seconds, e.g. DLSR) as a duration.
pub fn compact_to_duration(v: u32) -> Duration {
    // v < 2^32, so v * 1e9 < 2^62: no overflow.
    Duration::from_nanos((u64::from(v) * 1_000_000_000) >> 16)
}

/// A duration as a compact NTP value (16.16 seconds), saturating at ~18 hours: what XCC writes as
/// DLSR in its own receiver reports.
pub fn duration_to_compact(d: Duration) -> u32 {
    let units = (d.as_nanos() << 16) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// Round-trip time per RFC 3550 §6.4.1: `arrival - lsr - dlsr`, all compact NTP (modulo 2^32).
///
/// `None` when the report carries no LSR (0: the peer has not received an SR yet) or when the
/// result is negative (clocks or reports inconsistent): a wrong RTT is worse than none.
pub fn rtt_from_compact(arrival: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // Anything above 2^31 units (~9 hours) is a negative difference that wrapped.
    if rtt > i32::MAX as u32 {
        return None;
    }
    Some(compact_to_duration(rtt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_is_ntp_2208988800() {
        let t = NtpTime::from_system_time(UNIX_EPOCH);
        assert_eq!(t.0, 2_208_988_800u64 << 32);
    }

    #[test]
    fn half_second_is_half_fraction() {
        let t = NtpTime::from_system_time(UNIX_EPOCH + Duration::from_millis(1500));
        assert_eq!(t.0 & 0xffff_ffff, 1 << 31);
        assert_eq!(t.compact(), (((2_208_988_801u64) << 16) as u32) | 0x8000);
    }

    #[test]
    fn system_time_round_trips_within_a_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let back = NtpTime::from_system_time(t).to_system_time();
        let diff = back.duration_since(t).unwrap_or_else(|e| e.duration());
        assert!(diff <= Duration::from_nanos(1), "{diff:?}");
    }

    #[test]
    fn compact_duration_round_trip() {
        assert_eq!(compact_to_duration(0x0001_0000), Duration::from_secs(1));
        assert_eq!(duration_to_compact(Duration::from_millis(250)), 0x4000);
        assert_eq!(duration_to_compact(Duration::from_secs(1 << 20)), u32::MAX);
    }

    #[test]
    fn rfc3550_rtt_example() {
        // RFC 3550 §6.4.1 figure: A = 0xb710_8000 (46864.500 s), LSR = 0xb705_2000 (46853.125 s),
        // DLSR = 0x0005_4000 (5.250 s): RTT = 6.125 s.
        let rtt = rtt_from_compact(0xb710_8000, 0xb705_2000, 0x0005_4000);
        assert_eq!(rtt, Some(Duration::from_millis(6125)));
    }

    #[test]
    fn rtt_without_lsr_or_negative_is_none() {
        assert_eq!(rtt_from_compact(1000, 0, 0), None);
        assert_eq!(rtt_from_compact(1000, 900, 200), None);
    }
}
