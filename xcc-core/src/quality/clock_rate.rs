//! RTP clock rate per payload type, needed to turn jitter from timestamp units into milliseconds.
//!
//! Static payload types come from RFC 3551 §6 (G.722 runs an 8000 Hz RTP clock although it samples
//! at 16 kHz, §4.5.2). Dynamic types (96-127, e.g. Opus at 48000) are learned from `a=rtpmap` at
//! signalling time through [`ClockRates::set`].

use super::error::QualityError;

/// RFC 3551 static assignments; 0 where the type is unassigned or reserved.
const fn static_rate(pt: u8) -> u32 {
    match pt {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => 8000,
        6 => 16000,
        10 | 11 => 44100,
        16 => 11025,
        17 => 22050,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90000,
        _ => 0,
    }
}

/// Clock rate for every RTP payload type (0-127) of one leg. A flat table, so the per-packet lookup
/// is one indexed load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockRates {
    /// Hz per payload type; 0 means unknown (jitter is then not measured for that type).
    rates: [u32; 128],
}

impl Default for ClockRates {
    fn default() -> Self {
        let mut rates = [0; 128];
        let mut pt = 0;
        while pt < 128 {
            rates[pt] = static_rate(pt as u8);
            pt += 1;
        }
        Self { rates }
    }
}

impl ClockRates {
    /// The clock rate of `pt`, `None` when it is unknown (an unmapped dynamic type).
    #[inline]
    pub fn rate(&self, pt: u8) -> Option<u32> {
        match self.rates.get(usize::from(pt)) {
            Some(&r) if r > 0 => Some(r),
            _ => None,
        }
    }

    /// Records the rate from an `a=rtpmap` line (dynamic types, or a static type the SDP remaps).
    pub fn set(&mut self, pt: u8, rate: u32) -> Result<(), QualityError> {
        if rate == 0 {
            return Err(QualityError::ZeroClockRate);
        }
        let slot = self
            .rates
            .get_mut(usize::from(pt))
            .ok_or(QualityError::InvalidPayloadType { pt })?;
        *slot = rate;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_types_follow_rfc3551() {
        let r = ClockRates::default();
        assert_eq!(r.rate(0), Some(8000)); // PCMU
        assert_eq!(r.rate(8), Some(8000)); // PCMA
        assert_eq!(r.rate(9), Some(8000)); // G722: 8000 Hz RTP clock
        assert_eq!(r.rate(18), Some(8000)); // G729
        assert_eq!(r.rate(111), None); // dynamic, unmapped
        assert_eq!(r.rate(200), None);
    }

    #[test]
    fn dynamic_type_set_from_rtpmap() {
        let mut r = ClockRates::default();
        r.set(111, 48000).unwrap();
        assert_eq!(r.rate(111), Some(48000));
        assert_eq!(
            r.set(128, 8000),
            Err(QualityError::InvalidPayloadType { pt: 128 })
        );
        assert_eq!(r.set(96, 0), Err(QualityError::ZeroClockRate));
    }
}
