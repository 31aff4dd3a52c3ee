//! [`SrtpContext`]: one direction of one leg, protecting or unprotecting RTP and RTCP in place.

use super::kdf::Prf;
use super::packet::{RTCP_CLEAR_HEADER, RtpHeader, parse_rtcp, parse_rtp};
use super::session::{CmSession, GCM_TAG_LEN, GcmSession};
use super::stream::{
    MAX_SRTCP_INDEX, MAX_SRTP_INDEX, ReplayWindow, SsrcTable, Stale, estimate_index,
};
use super::{KeyingMaterial, SrtpError, SrtpSuite};
use crate::prefetch::prefetch;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// A checkpoint of an SRTP index is taken whenever the index crosses a multiple of
/// `2^RTP_CHECKPOINT_BITS` (every ROC change included): a context resumed from it is then less
/// than 2^14 packets behind, well inside the ±2^15 that the RFC 3711 §3.3.1 index estimate
/// tolerates, so the ROC is always guessed right.
pub const RTP_CHECKPOINT_BITS: u32 = 14;
/// The same for SRTCP indices (one RTCP packet every few seconds: a checkpoint every 64).
pub const RTCP_CHECKPOINT_BITS: u32 = 6;

/// One stream's position: its SSRC and the highest packet index (48-bit SRTP, 31-bit SRTCP)
/// accepted or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StreamIndex {
    /// The stream.
    pub ssrc: u32,
    /// Highest index; for SRTP, ROC in bits 16.. and the sequence number in bits ..16.
    pub index: u64,
}

/// Where one context stands, enough to resume it after a restart without reusing keystream
/// (sending side) or misjudging the ROC (receiving side). Only the most recently used SSRC of
/// each kind is kept: a leg normally carries one per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContextProgress {
    /// SRTP stream.
    pub rtp: Option<StreamIndex>,
    /// SRTCP stream.
    pub rtcp: Option<StreamIndex>,
}

impl ContextProgress {
    /// The progress rounded down to its checkpoint ([`RTP_CHECKPOINT_BITS`],
    /// [`RTCP_CHECKPOINT_BITS`]): it changes rarely (every 16384 RTP packets, every ROC change, a
    /// new SSRC), so a store can persist it on change without writing per packet.
    pub fn checkpoint(&self) -> Self {
        let floor = |s: StreamIndex, bits: u32| StreamIndex {
            ssrc: s.ssrc,
            index: s.index >> bits << bits,
        };
        Self {
            rtp: self.rtp.map(|s| floor(s, RTP_CHECKPOINT_BITS)),
            rtcp: self.rtcp.map(|s| floor(s, RTCP_CHECKPOINT_BITS)),
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

    /// Progress of the sending side (protect): what [`resume_send`](Self::resume_send) takes.
    pub fn send_progress(&self) -> ContextProgress {
        ContextProgress {
            rtp: self.send_rtp.most_recent().map(|(ssrc, w)| StreamIndex {
                ssrc,
                index: w.highest,
            }),
            rtcp: self.send_rtcp.most_recent().map(|(ssrc, i)| StreamIndex {
                ssrc,
                index: u64::from(i),
            }),
        }
    }

    /// Progress of the receiving side (unprotect): what [`resume_recv`](Self::resume_recv) takes.
    pub fn recv_progress(&self) -> ContextProgress {
        let of = |t: &SsrcTable<ReplayWindow>| {
            t.most_recent().map(|(ssrc, w)| StreamIndex {
                ssrc,
                index: w.highest,
            })
        };
        ContextProgress {
            rtp: of(&self.recv_rtp),
            rtcp: of(&self.recv_rtcp),
        }
    }

    /// Resumes the sending side of a fresh context from a checkpoint taken before a restart.
    ///
    /// SRTP: the index estimate continues from the checkpoint, so the sequence numbers that follow
    /// get the ROC the receiver expects. SRTCP: indices jump one checkpoint step past it, beyond
    /// any index sent before the restart, so none is reused.
    pub fn resume_send(&mut self, p: &ContextProgress) {
        if let Some(s) = p.rtp.filter(|s| s.index <= MAX_SRTP_INDEX) {
            self.send_rtp
                .insert(s.ssrc, ReplayWindow::starting_at(s.index));
        }
        if let Some(s) = p.rtcp {
            let next = s.index.saturating_add(1 << RTCP_CHECKPOINT_BITS);
            let next = u32::try_from(next)
                .unwrap_or(MAX_SRTCP_INDEX)
                .min(MAX_SRTCP_INDEX);
            self.send_rtcp.insert(s.ssrc, next);
        }
    }

    /// Resumes the receiving side of a fresh context from a checkpoint: the ROC estimate starts
    /// where the peer's stream was (not at 0), and older indices are refused as replays.
    pub fn resume_recv(&mut self, p: &ContextProgress) {
        if let Some(s) = p.rtp.filter(|s| s.index <= MAX_SRTP_INDEX) {
            self.recv_rtp
                .insert(s.ssrc, ReplayWindow::starting_at(s.index));
        }
        if let Some(s) = p.rtcp.filter(|s| s.index <= u64::from(MAX_SRTCP_INDEX)) {
            self.recv_rtcp
                .insert(s.ssrc, ReplayWindow::starting_at(s.index));
        }
    }

    /// Hints the state that the next RTP packet (`rtcp` false) or RTCP packet in one direction
    /// will touch: that session's keys and the direction's stream table (see
    /// [`crate::prefetch`]).
    pub(crate) fn prefetch(&self, inbound: bool, rtcp: bool) {
        match (&self.sessions, rtcp) {
            (Sessions::Cm { rtp, .. }, false) => rtp.prefetch(),
            (Sessions::Cm { rtcp, .. }, true) => rtcp.prefetch(),
            (Sessions::Gcm { rtp, .. }, false) => rtp.prefetch(),
            (Sessions::Gcm { rtcp, .. }, true) => rtcp.prefetch(),
        }
        match (inbound, rtcp) {
            (true, false) => prefetch(&self.recv_rtp),
            (false, false) => prefetch(&self.send_rtp),
            (true, true) => prefetch(&self.recv_rtcp),
            (false, true) => prefetch(&self.send_rtcp),
        }
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

    fn rtp(seq: u16) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe]);
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[12..20].copy_from_slice(&seq.to_be_bytes().repeat(4));
        p
    }

    /// Protects packets `seqs` with `tx` and unprotects them with `rx`; returns how many failed.
    fn relay(tx: &mut SrtpContext, rx: &mut SrtpContext, seqs: impl Iterator<Item = u16>) -> usize {
        let mut failed = 0;
        for seq in seqs {
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(&rtp(seq));
            let len = tx.protect_rtp(&mut buf, 32).unwrap();
            match rx.unprotect_rtp(&mut buf, len) {
                Ok(n) => assert_eq!(buf[..n], rtp(seq)),
                Err(_) => failed += 1,
            }
        }
        failed
    }

    /// Two full wraps: ROC 2 at the checkpoint.
    fn to_roc_2(tx: &mut SrtpContext, rx: &mut SrtpContext) {
        let seqs = (0..2u32 * 65536 + 1000).map(|i| i as u16);
        assert_eq!(relay(tx, rx, seqs), 0);
    }

    #[test]
    fn resumed_sender_keeps_the_roc_the_receiver_expects() {
        let km = KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80);
        let policy = SrtpPolicy::default();
        let (mut tx, mut rx) = (SrtpContext::new(&km, policy), SrtpContext::new(&km, policy));
        to_roc_2(&mut tx, &mut rx);
        let cp = tx.send_progress().checkpoint();
        assert_eq!(cp.rtp.map(|s| s.index >> 16), Some(2), "{cp:?}");
        // A restart: a fresh sender resumed from the checkpoint continues the stream.
        let mut resumed = SrtpContext::new(&km, policy);
        resumed.resume_send(&cp);
        assert_eq!(relay(&mut resumed, &mut rx, 1100..1200), 0);
        // Without the checkpoint the sender would start at ROC 0: the receiver refuses all.
        let mut fresh = SrtpContext::new(&km, policy);
        assert_eq!(relay(&mut fresh, &mut rx, 1300..1400), 100);
    }

    #[test]
    fn resumed_receiver_keeps_the_senders_roc_and_refuses_old_indices() {
        let km = KeyingMaterial::generate(SrtpSuite::AeadAes128Gcm);
        let policy = SrtpPolicy::default();
        let (mut tx, mut rx) = (SrtpContext::new(&km, policy), SrtpContext::new(&km, policy));
        to_roc_2(&mut tx, &mut rx);
        let cp = rx.recv_progress().checkpoint();
        let mut resumed = SrtpContext::new(&km, policy);
        resumed.resume_recv(&cp);
        let mut fresh = SrtpContext::new(&km, policy);
        // The same packets to both: only the resumed receiver guesses ROC 2.
        let mut ok = [0usize; 2];
        for seq in 1100..1200u16 {
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(&rtp(seq));
            let len = tx.protect_rtp(&mut buf, 32).unwrap();
            let copy = buf;
            ok[0] += usize::from(resumed.unprotect_rtp(&mut buf, len).is_ok());
            let mut buf = copy;
            ok[1] += usize::from(fresh.unprotect_rtp(&mut buf, len).is_ok());
        }
        assert_eq!(ok, [100, 0]);
    }

    #[test]
    fn resumed_srtcp_sender_never_reuses_an_index() {
        let km = KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80);
        let policy = SrtpPolicy::default();
        let mut tx = SrtpContext::new(&km, policy);
        let mut rx = SrtpContext::new(&km, policy);
        let rr = [
            0x81u8, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        let mut send = |tx: &mut SrtpContext| {
            let mut buf = [0u8; 96];
            buf[..32].copy_from_slice(&rr);
            let len = tx.protect_rtcp(&mut buf, 32).unwrap();
            rx.unprotect_rtcp(&mut buf, len).is_ok()
        };
        for _ in 0..100 {
            assert!(send(&mut tx));
        }
        let cp = tx.send_progress().checkpoint();
        // 100 sent, checkpoint floored to 64: more were sent after it than it says.
        assert_eq!(cp.rtcp.map(|s| s.index), Some(64));
        let mut resumed = SrtpContext::new(&km, policy);
        resumed.resume_send(&cp);
        assert!(
            send(&mut resumed),
            "the next index is beyond every index sent before"
        );
    }
}
