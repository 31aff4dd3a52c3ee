//! [`SrtpContext`]: one direction of one leg, protecting or unprotecting RTP and RTCP in place.

use super::kdf::Prf;
use super::packet::{RTCP_CLEAR_HEADER, RtpHeader, parse_rtcp, parse_rtp};
use super::session::{CmSession, GCM_TAG_LEN, GcmSession};
use super::stream::{
    MAX_SRTCP_INDEX, MAX_SRTP_INDEX, ReplayWindow, SsrcTable, Stale, estimate_index,
};
use super::{KeyingMaterial, SrtpError, SrtpSuite};

/// SRTCP trailer word: E flag and 31-bit SRTCP index (RFC 3711 §3.4).
const SRTCP_TRAILER_LEN: usize = 4;
/// The E flag in the SRTCP trailer word: set when the payload is encrypted.
const E_FLAG: u32 = 1 << 31;
/// SRTCP tag length with the HMAC suites: 80 bits even for the _32 suites (RFC 4568 §6.2).
const SRTCP_HMAC_TAG_LEN: usize = 10;

/// Which parts of the transform a session uses, from the RFC 4568 session parameters
/// `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP` and `UNAUTHENTICATED_SRTP` (each one clears a flag).
///
/// SRTCP is always authenticated (RFC 3711 §3.4). The AEAD suites always authenticate RTP too;
/// without encryption they authenticate the whole packet as associated data, as RFC 7714 does for
/// tag-only SRTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpPolicy {
    /// Encrypt RTP payloads (cleared by `UNENCRYPTED_SRTP`).
    pub encrypt_rtp: bool,
    /// Encrypt RTCP payloads, signalled per packet by the E flag (cleared by `UNENCRYPTED_SRTCP`).
    pub encrypt_rtcp: bool,
    /// Append an authentication tag to RTP (cleared by `UNAUTHENTICATED_SRTP`; HMAC suites only).
    pub authenticate_rtp: bool,
}

impl Default for SrtpPolicy {
    /// Everything on: what SDES negotiates unless a session parameter says otherwise.
    fn default() -> Self {
        Self {
            encrypt_rtp: true,
            encrypt_rtcp: true,
            authenticate_rtp: true,
        }
    }
}

/// Session keys per suite family, derived once at construction.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per context; boxing would add a pointer chase to every packet"
)]
enum Sessions {
    /// AES-CM with HMAC-SHA1 (RFC 3711, RFC 6188).
    Cm {
        /// SRTP keys.
        rtp: CmSession,
        /// SRTCP keys.
        rtcp: CmSession,
    },
    /// AEAD AES-GCM (RFC 7714).
    Gcm {
        /// SRTP keys.
        rtp: GcmSession,
        /// SRTCP keys.
        rtcp: GcmSession,
    },
}

/// SRTP/SRTCP transform for one direction of one leg.
///
/// Keys are derived and expanded in [`new`](Self::new); after that no call allocates, locks or
/// logs, so a worker can run it on every packet. Per-SSRC state (ROC, replay windows, SRTCP index)
/// lives in fixed tables of 8 streams each, least recently used evicted; receive state changes only
/// once a packet has authenticated, so forged packets cannot disturb it.
///
/// A context is meant for one direction: protect on the sending side, unprotect on the receiving
/// side. Both sides keep separate state, so using one context both ways (as tests do) also works.
///
/// ```
/// use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy, SrtpSuite};
///
/// let key = KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80);
/// let (mut tx, mut rx) = (SrtpContext::new(&key, SrtpPolicy::default()), SrtpContext::new(&key, SrtpPolicy::default()));
/// // A receive buffer: the packet, then room for the tag.
/// let mut buf = [0u8; 1500];
/// let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4];
/// buf[..rtp.len()].copy_from_slice(&rtp);
/// let len = tx.protect_rtp(&mut buf, rtp.len())?;
/// assert_eq!(len, rtp.len() + 10);
/// let len = rx.unprotect_rtp(&mut buf, len)?;
/// assert_eq!(buf[..len], rtp);
/// # Ok::<(), xcc_core::srtp::SrtpError>(())
/// ```
pub struct SrtpContext {
    /// Negotiated suite.
    suite: SrtpSuite,
    /// Negotiated session parameters.
    policy: SrtpPolicy,
    /// Expanded session keys.
    sessions: Sessions,
    /// Bytes of RTP tag: the suite's, or 0 for HMAC suites with `UNAUTHENTICATED_SRTP`.
    rtp_tag_len: usize,
    /// Bytes of SRTCP tag (80-bit HMAC or 128-bit GCM).
    rtcp_tag_len: usize,
    /// Sent SRTP indices per SSRC: tracks the ROC and refuses to reuse an index (keystream reuse).
    send_rtp: SsrcTable<ReplayWindow>,
    /// Received SRTP indices per SSRC: ROC estimation and replay protection.
    recv_rtp: SsrcTable<ReplayWindow>,
    /// Last SRTCP index sent per SSRC.
    send_rtcp: SsrcTable<u32>,
    /// Received SRTCP indices per SSRC: replay protection.
    recv_rtcp: SsrcTable<ReplayWindow>,
}

impl std::fmt::Debug for SrtpContext {
    /// Never prints keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 §4.3, key derivation rate 0) and expands them.
    pub fn new(key: &KeyingMaterial, policy: SrtpPolicy) -> Self {
        let suite = key.suite;
        let prf = Prf::new(key.key());
        let (key_len, salt) = (key.key().len(), key.salt());
        let sessions = match suite {
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => Sessions::Gcm {
                rtp: GcmSession::new(&prf, key_len, salt, false),
                rtcp: GcmSession::new(&prf, key_len, salt, true),
            },
            SrtpSuite::AesCm128HmacSha1_80
            | SrtpSuite::AesCm128HmacSha1_32
            | SrtpSuite::AesCm256HmacSha1_80
            | SrtpSuite::AesCm256HmacSha1_32 => Sessions::Cm {
                rtp: CmSession::new(&prf, key_len, salt, false),
                rtcp: CmSession::new(&prf, key_len, salt, true),
            },
        };
        Self::with_sessions(suite, policy, sessions)
    }

    /// A context around already derived session keys.
    fn with_sessions(suite: SrtpSuite, policy: SrtpPolicy, sessions: Sessions) -> Self {
        let (rtp_tag_len, rtcp_tag_len) = match sessions {
            Sessions::Gcm { .. } => (GCM_TAG_LEN, GCM_TAG_LEN),
            Sessions::Cm { .. } if policy.authenticate_rtp => {
                (suite.rtp_overhead(), SRTCP_HMAC_TAG_LEN)
            }
            Sessions::Cm { .. } => (0, SRTCP_HMAC_TAG_LEN),
        };
        Self {
            suite,
            policy,
            sessions,
            rtp_tag_len,
            rtcp_tag_len,
            send_rtp: SsrcTable::new(),
            recv_rtp: SsrcTable::new(),
            send_rtcp: SsrcTable::new(),
            recv_rtcp: SsrcTable::new(),
        }
    }

    /// A GCM context keyed with session keys directly, for the RFC 7714 vectors (which give
    /// session keys, not master keys). Same keys for SRTP and SRTCP, as the vectors use.
    #[cfg(test)]
    pub(super) fn with_gcm_session_keys(
        suite: SrtpSuite,
        policy: SrtpPolicy,
        key: &[u8],
        salt: [u8; 12],
    ) -> Self {
        let sessions = Sessions::Gcm {
            rtp: GcmSession::from_session_keys(key, salt),
            rtcp: GcmSession::from_session_keys(key, salt),
        };
        Self::with_sessions(suite, policy, sessions)
    }

    /// The suite the context was keyed for.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// The session parameters in force.
    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    /// Bytes `protect_rtp` appends under this policy: the suite's tag, or 0 for an HMAC suite with
    /// `UNAUTHENTICATED_SRTP`. Never more than `suite().rtp_overhead()`.
    pub fn rtp_overhead(&self) -> usize {
        self.rtp_tag_len
    }

    /// Bytes `protect_rtcp` appends: SRTCP index word and tag (`suite().rtcp_overhead()`).
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_TRAILER_LEN + self.rtcp_tag_len
    }

    /// Turns the RTP packet in `buf[..len]` into SRTP in place; returns the new length.
    ///
    /// Needs `buf.len() >= len + suite.rtp_overhead()`. Refuses ([`SrtpError::Replay`]) to protect
    /// a packet index already used with this key, since that would reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let hdr = parse_rtp(buf.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let out_len = len + self.rtp_tag_len;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let slot = self.send_rtp.find(hdr.ssrc);
        let index = match slot {
            None => u64::from(hdr.seq),
            Some(i) => {
                let sent = self.send_rtp.state(i);
                let est = estimate_index(sent.highest, hdr.seq);
                match sent.check(est) {
                    Ok(()) => est,
                    Err(Stale::Duplicate) => return Err(SrtpError::Replay),
                    // The source's sequence numbers jumped by more than 2^15: moving on keeps
                    // indices unique, which going back could not.
                    Err(Stale::TooOld) => est + (1 << 16),
                }
            }
        };
        if index > MAX_SRTP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let roc = (index >> 16) as u32;
        match &self.sessions {
            Sessions::Cm { rtp, .. } => {
                if self.policy.encrypt_rtp {
                    rtp.apply_keystream(hdr.ssrc, index, &mut buf[hdr.len..len]);
                }
                if self.rtp_tag_len > 0 {
                    let tag = rtp.tag(&buf[..len], &roc.to_be_bytes());
                    buf[len..out_len].copy_from_slice(&tag[..self.rtp_tag_len]);
                }
            }
            Sessions::Gcm { rtp, .. } => {
                let nonce = rtp.nonce(hdr.ssrc, index);
                let aad_len = if self.policy.encrypt_rtp {
                    hdr.len
                } else {
                    len
                };
                let (aad, body) = buf.split_at_mut(aad_len);
                let tag = rtp.seal(&nonce, aad, &mut body[..len - aad_len])?;
                buf[len..out_len].copy_from_slice(&tag);
            }
        }
        match slot {
            Some(i) => self.send_rtp.use_mut(i).accept(index),
            None => {
                self.send_rtp
                    .insert(hdr.ssrc, ReplayWindow::starting_at(index));
            }
        }
        Ok(out_len)
    }

    /// Turns the SRTP packet in `buf[..len]` back into RTP in place; returns the new length.
    ///
    /// On error the packet must be dropped; `buf` may have been partly rewritten.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let hdr = parse_rtp(buf.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        if len < hdr.len + self.rtp_tag_len {
            return Err(SrtpError::TooShort);
        }
        let slot = self.recv_rtp.find(hdr.ssrc);
        let seq = u64::from(hdr.seq);
        // Candidate indices, most likely first, and the verdict if none authenticates.
        let (first, second, verdict) = match slot {
            // A new stream starts with ROC 0 (RFC 3711 §3.3.1) unless its first packets were lost
            // across a wrap (a sender starting near 65535): then only ROC 1 authenticates.
            None => (seq, Some((1 << 16) | seq), SrtpError::AuthFailed),
            Some(i) => {
                let window = self.recv_rtp.state(i);
                let est = estimate_index(window.highest, hdr.seq);
                match window.check(est) {
                    Ok(()) => (est, None, SrtpError::AuthFailed),
                    Err(Stale::Duplicate) => return Err(SrtpError::Replay),
                    // Older than the window by the RFC estimate, or the sender jumped more than
                    // 2^15 ahead (same ROC): only the jump can still be accepted, if it
                    // authenticates. Otherwise it is the stale packet the estimate says.
                    Err(Stale::TooOld) => (est + (1 << 16), None, SrtpError::Replay),
                }
            }
        };
        let index = if self.open_rtp(buf, &hdr, len, first) {
            first
        } else if let Some(second) = second.filter(|&s| self.open_rtp(buf, &hdr, len, s)) {
            second
        } else {
            return Err(verdict);
        };
        match slot {
            Some(i) => self.recv_rtp.use_mut(i).accept(index),
            None => {
                self.recv_rtp
                    .insert(hdr.ssrc, ReplayWindow::starting_at(index));
            }
        }
        Ok(len - self.rtp_tag_len)
    }

    /// Authenticates `buf[..len]` as packet `index` and decrypts it in place. Leaves `buf` untouched
    /// and returns false when the tag does not verify, so another index can be tried.
    fn open_rtp(&self, buf: &mut [u8], hdr: &RtpHeader, len: usize, index: u64) -> bool {
        if index > MAX_SRTP_INDEX {
            return false;
        }
        let body_end = len - self.rtp_tag_len;
        match &self.sessions {
            Sessions::Cm { rtp, .. } => {
                let roc = (index >> 16) as u32;
                if self.rtp_tag_len > 0
                    && !rtp.verify(&buf[..body_end], &roc.to_be_bytes(), &buf[body_end..len])
                {
                    return false;
                }
                if self.policy.encrypt_rtp {
                    rtp.apply_keystream(hdr.ssrc, index, &mut buf[hdr.len..body_end]);
                }
                true
            }
            Sessions::Gcm { rtp, .. } => {
                let nonce = rtp.nonce(hdr.ssrc, index);
                let mut tag = [0u8; GCM_TAG_LEN];
                tag.copy_from_slice(&buf[body_end..len]);
                let aad_len = if self.policy.encrypt_rtp {
                    hdr.len
                } else {
                    body_end
                };
                let (aad, body) = buf.split_at_mut(aad_len);
                rtp.open(&nonce, aad, &mut body[..body_end - aad_len], &tag)
            }
        }
    }

    /// Turns the RTCP compound packet in `buf[..len]` into SRTCP in place; returns the new length.
    ///
    /// Needs `buf.len() >= len + suite.rtcp_overhead()`. Every packet takes the next SRTCP index
    /// of its SSRC, starting at 1.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let ssrc = parse_rtcp(buf.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let out_len = len + SRTCP_TRAILER_LEN + self.rtcp_tag_len;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let slot = self.send_rtcp.find(ssrc);
        let index = slot.map_or(1, |i| self.send_rtcp.state(i).saturating_add(1));
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let encrypt = self.policy.encrypt_rtcp;
        let trailer = (if encrypt { E_FLAG | index } else { index }).to_be_bytes();
        match &self.sessions {
            Sessions::Cm { rtcp, .. } => {
                if encrypt {
                    rtcp.apply_keystream(ssrc, index.into(), &mut buf[RTCP_CLEAR_HEADER..len]);
                }
                let auth_end = len + SRTCP_TRAILER_LEN;
                buf[len..auth_end].copy_from_slice(&trailer);
                let tag = rtcp.tag(&buf[..auth_end], &[]);
                buf[auth_end..out_len].copy_from_slice(&tag[..SRTCP_HMAC_TAG_LEN]);
            }
            Sessions::Gcm { rtcp, .. } => {
                let nonce = rtcp.nonce(ssrc, index.into());
                let tag = if encrypt {
                    // RFC 7714 §9: AAD = first 8 octets || E flag and index.
                    let mut aad = [0u8; RTCP_CLEAR_HEADER + SRTCP_TRAILER_LEN];
                    aad[..RTCP_CLEAR_HEADER].copy_from_slice(&buf[..RTCP_CLEAR_HEADER]);
                    aad[RTCP_CLEAR_HEADER..].copy_from_slice(&trailer);
                    rtcp.seal(&nonce, &aad, &mut buf[RTCP_CLEAR_HEADER..len])?
                } else {
                    // RFC 7714 §9, tag-only: AAD = the whole packet || E flag and index, no plaintext.
                    // The trailer is put right after the packet to make the AAD contiguous,
                    // then moved behind the tag.
                    buf[len..len + SRTCP_TRAILER_LEN].copy_from_slice(&trailer);
                    rtcp.seal(&nonce, &buf[..len + SRTCP_TRAILER_LEN], &mut [])?
                };
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&trailer);
            }
        }
        match slot {
            Some(i) => *self.send_rtcp.use_mut(i) = index,
            None => {
                self.send_rtcp.insert(ssrc, index);
            }
        }
        Ok(out_len)
    }

    /// Turns the SRTCP packet in `buf[..len]` back into RTCP in place; returns the new length.
    ///
    /// Follows the packet's (authenticated) E flag for decryption. On error the packet must be
    /// dropped; `buf` may have been partly rewritten.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let pkt = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let overhead = SRTCP_TRAILER_LEN + self.rtcp_tag_len;
        if len < RTCP_CLEAR_HEADER + overhead {
            return Err(SrtpError::TooShort);
        }
        let ssrc = parse_rtcp(pkt)?;
        let out_len = len - overhead;
        // HMAC suites: packet || trailer || tag. GCM: packet+ciphertext || tag || trailer.
        let trailer_at = match self.sessions {
            Sessions::Cm { .. } => out_len,
            Sessions::Gcm { .. } => len - SRTCP_TRAILER_LEN,
        };
        let mut trailer = [0u8; SRTCP_TRAILER_LEN];
        trailer.copy_from_slice(&buf[trailer_at..trailer_at + SRTCP_TRAILER_LEN]);
        let word = u32::from_be_bytes(trailer);
        let encrypted = word & E_FLAG != 0;
        let index = word & MAX_SRTCP_INDEX;
        let slot = self.recv_rtcp.find(ssrc);
        if let Some(i) = slot
            && self.recv_rtcp.state(i).check(index.into()).is_err()
        {
            return Err(SrtpError::Replay);
        }
        let authentic = match &self.sessions {
            Sessions::Cm { rtcp, .. } => {
                let auth_end = out_len + SRTCP_TRAILER_LEN;
                let ok = rtcp.verify(&buf[..auth_end], &[], &buf[auth_end..len]);
                if ok && encrypted {
                    rtcp.apply_keystream(ssrc, index.into(), &mut buf[RTCP_CLEAR_HEADER..out_len]);
                }
                ok
            }
            Sessions::Gcm { rtcp, .. } => {
                let nonce = rtcp.nonce(ssrc, index.into());
                let mut tag = [0u8; GCM_TAG_LEN];
                tag.copy_from_slice(&buf[out_len..out_len + GCM_TAG_LEN]);
                if encrypted {
                    let mut aad = [0u8; RTCP_CLEAR_HEADER + SRTCP_TRAILER_LEN];
                    aad[..RTCP_CLEAR_HEADER].copy_from_slice(&buf[..RTCP_CLEAR_HEADER]);
                    aad[RTCP_CLEAR_HEADER..].copy_from_slice(&trailer);
                    rtcp.open(&nonce, &aad, &mut buf[RTCP_CLEAR_HEADER..out_len], &tag)
                } else {
                    buf[out_len..out_len + SRTCP_TRAILER_LEN].copy_from_slice(&trailer);
                    rtcp.open(&nonce, &buf[..out_len + SRTCP_TRAILER_LEN], &mut [], &tag)
                }
            }
        };
        if !authentic {
            return Err(SrtpError::AuthFailed);
        }
        match slot {
            Some(i) => self.recv_rtcp.use_mut(i).accept(index.into()),
            None => {
                self.recv_rtcp
                    .insert(ssrc, ReplayWindow::starting_at(index.into()));
            }
        }
        Ok(out_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers own contexts and may be handed them from the control plane.
    #[test]
    fn context_is_send_and_fixed_size() {
        fn assert_send<T: Send>() {}
        assert_send::<SrtpContext>();
        // Everything lives inline (no heap): keep an eye on the footprint per direction.
        assert!(
            std::mem::size_of::<SrtpContext>() < 8 * 1024,
            "{}",
            std::mem::size_of::<SrtpContext>()
        );
    }

    #[test]
    fn overheads_follow_suite_and_policy() {
        let unauth = SrtpPolicy {
            authenticate_rtp: false,
            ..SrtpPolicy::default()
        };
        for suite in SrtpSuite::ALL {
            let km = KeyingMaterial::generate(suite);
            let ctx = SrtpContext::new(&km, SrtpPolicy::default());
            assert_eq!(ctx.rtp_overhead(), suite.rtp_overhead(), "{suite:?}");
            assert_eq!(ctx.rtcp_overhead(), suite.rtcp_overhead(), "{suite:?}");
            // UNAUTHENTICATED_SRTP drops the HMAC tag; AEAD always has one.
            let ctx = SrtpContext::new(&km, unauth);
            let expected = if suite.rtp_overhead() == GCM_TAG_LEN {
                GCM_TAG_LEN
            } else {
                0
            };
            assert_eq!(ctx.rtp_overhead(), expected, "{suite:?}");
            assert_eq!(ctx.rtcp_overhead(), suite.rtcp_overhead(), "{suite:?}");
        }
    }
}
