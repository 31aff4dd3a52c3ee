//! SRTP / SRTCP (RFC 3711, RFC 7714) transforms done in place, without allocation.
//!
//! One [`SrtpContext`] protects or unprotects one direction of one leg. webrtc-srtp stays as the
//! test oracle (dev-dependency): it allocates per packet, which the hot path must not.
//!
//! A worker keeps two contexts per SRTP leg: the peer's key unprotects what arrives, XCC's key
//! protects what leaves. Every [`SrtpError`] is a counted drop, never fatal.
//!
//! Inside: `kdf` derives session keys from the master key, `session` holds them expanded (AES-CM
//! with HMAC-SHA1, or AES-GCM), `stream` keeps per-SSRC ROC and replay state in fixed tables,
//! `packet` finds the clear header, and `context` puts them together.

mod context;
mod error;
mod kdf;
mod packet;
mod session;
mod stream;
#[cfg(test)]
mod tests;

pub use context::{
    ContextProgress, RTCP_CHECKPOINT_BITS, RTP_CHECKPOINT_BITS, SrtpContext, SrtpPolicy,
    StreamIndex,
};
pub use error::SrtpError;

/// The SRTP crypto suites XCC negotiates in SDES `a=crypto` lines, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SrtpSuite {
    /// AEAD_AES_256_GCM (RFC 7714).
    AeadAes256Gcm,
    /// AEAD_AES_128_GCM (RFC 7714).
    AeadAes128Gcm,
    /// AES_256_CM_HMAC_SHA1_80 (RFC 6188).
    AesCm256HmacSha1_80,
    /// AES_256_CM_HMAC_SHA1_32 (RFC 6188).
    AesCm256HmacSha1_32,
    /// AES_CM_128_HMAC_SHA1_80 (RFC 4568): what nearly every phone offers first.
    AesCm128HmacSha1_80,
    /// AES_CM_128_HMAC_SHA1_32 (RFC 4568).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// Every suite, in XCC's order of preference.
    pub const ALL: [SrtpSuite; 6] = [
        SrtpSuite::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm256HmacSha1_80,
        SrtpSuite::AesCm256HmacSha1_32,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The name used in `a=crypto` lines.
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SrtpSuite::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// Parses an `a=crypto` suite name (case-sensitive as RFC 4568 registers them).
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.sdes_name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm
            | SrtpSuite::AesCm256HmacSha1_80
            | SrtpSuite::AesCm256HmacSha1_32 => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes (14 for AES-CM, 12 for GCM).
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm | SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes the transform appends to an RTP packet (auth tag or AEAD tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm | SrtpSuite::AeadAes128Gcm => 16,
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm256HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 | SrtpSuite::AesCm256HmacSha1_32 => 4,
        }
    }

    /// Bytes the transform appends to an RTCP packet (SRTCP index + tag; SRTCP always uses 80-bit
    /// tags with the HMAC suites).
    pub fn rtcp_overhead(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm | SrtpSuite::AeadAes128Gcm => 4 + 16,
            _ => 4 + 10,
        }
    }
}

/// Master key and salt for one direction of one leg, as carried in an `a=crypto` inline key.
///
/// Fixed-size storage so contexts can be built without touching the heap. Serialized (for the
/// call store) as the suite and the base64 key||salt, the `a=crypto` inline form; deserializing
/// checks the lengths again.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "StoredKey", try_from = "StoredKey")]
pub struct KeyingMaterial {
    /// Which transform the key is for; decides the valid lengths.
    pub suite: SrtpSuite,
    key: [u8; 32],
    salt: [u8; 14],
}

impl KeyingMaterial {
    /// Builds keying material, checking the lengths the suite requires.
    pub fn new(suite: SrtpSuite, key: &[u8], salt: &[u8]) -> crate::Result<Self> {
        if key.len() != suite.key_len() || salt.len() != suite.salt_len() {
            return Err(crate::Error::KeyLength {
                suite: suite.sdes_name(),
                expected: suite.key_len() + suite.salt_len(),
                got: key.len() + salt.len(),
            });
        }
        let mut k = [0u8; 32];
        let mut s = [0u8; 14];
        k[..key.len()].copy_from_slice(key);
        s[..salt.len()].copy_from_slice(salt);
        Ok(Self {
            suite,
            key: k,
            salt: s,
        })
    }

    /// Fresh keying material from a CSPRNG.
    pub fn generate(suite: SrtpSuite) -> Self {
        use rand::RngCore;
        let mut k = [0u8; 32];
        let mut s = [0u8; 14];
        // ThreadRng is a ChaCha CSPRNG seeded and periodically reseeded from the OS.
        let mut rng = rand::rng();
        rng.fill_bytes(&mut k[..suite.key_len()]);
        rng.fill_bytes(&mut s[..suite.salt_len()]);
        Self {
            suite,
            key: k,
            salt: s,
        }
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.suite.key_len()]
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.suite.salt_len()]
    }
}

/// [`KeyingMaterial`] as stored: suite and base64 `key || salt`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    suite: SrtpSuite,
    inline: String,
}

impl From<KeyingMaterial> for StoredKey {
    fn from(k: KeyingMaterial) -> Self {
        use base64::Engine as _;
        let mut both = Vec::with_capacity(46);
        both.extend_from_slice(k.key());
        both.extend_from_slice(k.salt());
        StoredKey {
            suite: k.suite,
            inline: base64::engine::general_purpose::STANDARD.encode(both),
        }
    }
}

impl TryFrom<StoredKey> for KeyingMaterial {
    type Error = crate::Error;
    fn try_from(s: StoredKey) -> crate::Result<Self> {
        use base64::Engine as _;
        let both = base64::engine::general_purpose::STANDARD
            .decode(s.inline.as_bytes())
            .map_err(|_| crate::Error::CryptoParse {
                reason: "stored key is not base64",
            })?;
        let split = s.suite.key_len().min(both.len());
        KeyingMaterial::new(s.suite, &both[..split], &both[split..])
    }
}

impl std::fmt::Debug for KeyingMaterial {
    /// Never prints key bytes: logs and panics must not leak media keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyingMaterial")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}
