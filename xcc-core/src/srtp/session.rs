//! Session keys in ready-to-use form: AES key schedules expanded and HMAC keyed once at context
//! construction, so a packet only pays for the cipher and MAC work itself.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper as Ctr};
use aes::{Aes128, Aes256};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ctr::CtrCore;
use ctr::flavors::Ctr128BE;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::SrtpError;
use super::kdf::{Label, Prf};
use crate::prefetch::{prefetch, prefetch_prefix};

/// HMAC-SHA1 output length; tags are truncations of it.
pub(super) const HMAC_SHA1_LEN: usize = 20;
/// Session authentication key length for HMAC-SHA1 (RFC 3711 §4.2.1: n_a = 160).
const AUTH_KEY_LEN: usize = 20;
/// GCM authentication tag length (RFC 7714: 16 octets for both SDES suites).
pub(super) const GCM_TAG_LEN: usize = 16;

/// Bytes at the start of an expanded key that AES-NI encryption reads: enum tag (16, the round
/// keys are 16-aligned) and 15 round keys of 16 bytes (AES-256; AES-128 has 11).
const AES_NI_KEYS: usize = 16 + 15 * 16;

/// The expanded AES key of an AES-CM session.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per context; boxing would add a pointer chase to every packet"
)]
enum CtrKey {
    /// AES_CM_128 suites.
    Aes128(Aes128),
    /// AES_256_CM suites.
    Aes256(Aes256),
}

/// AES-CM + HMAC-SHA1 keys for SRTP or for SRTCP (RFC 3711 §4.1.1, §4.2.1).
pub(super) struct CmSession {
    /// Session encryption key, expanded.
    cipher: CtrKey,
    /// HMAC keyed with the session auth key; cloned per packet so the key pads are hashed once.
    mac: Hmac<Sha1>,
    /// Session salt (112 bits).
    salt: [u8; 14],
}

impl CmSession {
    /// Hints what protecting or unprotecting a packet reads: the HMAC pads, the salt and the
    /// AES-NI round keys (the tag and up to 15 round keys; the software schedule behind them is
    /// not used where AES-NI is, and not hinted).
    pub fn prefetch(&self) {
        prefetch(&self.mac);
        prefetch(&self.salt);
        prefetch_prefix(&self.cipher, AES_NI_KEYS);
    }

    /// Derives the session for SRTP (`rtcp` false) or SRTCP.
    pub fn new(prf: &Prf, master_key_len: usize, master_salt: &[u8], rtcp: bool) -> Self {
        let (enc, auth, salt_label) = if rtcp {
            (
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            )
        } else {
            (
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            )
        };
        let mut key = [0u8; 32];
        let key = &mut key[..master_key_len];
        prf.derive(master_salt, enc, key);
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        prf.derive(master_salt, auth, &mut auth_key);
        let mut salt = [0u8; 14];
        prf.derive(master_salt, salt_label, &mut salt);
        Self::from_session_keys(key, &auth_key, salt)
    }

    /// Keys the session directly with session keys (16 or 32 byte `key`); RFC test vectors are
    /// given at this level.
    pub fn from_session_keys(key: &[u8], auth_key: &[u8], salt: [u8; 14]) -> Self {
        // Invariant: `key` is 16 or 32 bytes — session keys take the master key's length, which
        // `KeyingMaterial::new` checked against the suite — so `from_slice` cannot panic.
        let cipher = if key.len() == 32 {
            CtrKey::Aes256(Aes256::new(GenericArray::from_slice(key)))
        } else {
            CtrKey::Aes128(Aes128::new(GenericArray::from_slice(key)))
        };
        // Invariant: HMAC takes keys of any length (RFC 2104 §2), so this cannot fail.
        let mac =
            <Hmac<Sha1> as Mac>::new_from_slice(auth_key).expect("HMAC accepts any key length");
        Self { cipher, mac, salt }
    }

    /// Encrypts or decrypts `data` in place for packet `index` of `ssrc`.
    ///
    /// IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) (RFC 3711 §4.1.1); `index` is the
    /// 48-bit SRTP index or the 31-bit SRTCP index.
    pub fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        // The CTR wrapper borrows the expanded key: nothing is re-expanded per packet.
        let iv = GenericArray::from_slice(&iv);
        match &self.cipher {
            CtrKey::Aes128(c) => Ctr::from_core(CtrCore::<&Aes128, Ctr128BE>::inner_iv_init(c, iv))
                .apply_keystream(data),
            CtrKey::Aes256(c) => Ctr::from_core(CtrCore::<&Aes256, Ctr128BE>::inner_iv_init(c, iv))
                .apply_keystream(data),
        }
    }

    /// HMAC-SHA1 over `data` followed by `suffix` (the ROC for SRTP, nothing for SRTCP).
    pub fn tag(&self, data: &[u8], suffix: &[u8]) -> [u8; HMAC_SHA1_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.update(suffix);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` (a truncation of the HMAC) matches, in constant time.
    pub fn verify(&self, data: &[u8], suffix: &[u8], tag: &[u8]) -> bool {
        let full = self.tag(data, suffix);
        full.get(..tag.len())
            .is_some_and(|t| bool::from(t.ct_eq(tag)))
    }
}

/// The expanded key of an AEAD session.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per context; boxing would add a pointer chase to every packet"
)]
enum GcmKey {
    /// AEAD_AES_128_GCM.
    Aes128(Aes128Gcm),
    /// AEAD_AES_256_GCM.
    Aes256(Aes256Gcm),
}

/// AEAD_AES_*_GCM keys for SRTP or SRTCP (RFC 7714).
pub(super) struct GcmSession {
    /// Session key with its AES schedule and GHASH key.
    aead: GcmKey,
    /// Session salt (96 bits), XORed into every IV.
    salt: [u8; 12],
}

impl GcmSession {
    /// Hints the whole session (cipher and GHASH key: their layout inside `aes-gcm` is not ours
    /// to rely on).
    pub fn prefetch(&self) {
        prefetch(self);
    }

    /// Derives the session for SRTP (`rtcp` false) or SRTCP (RFC 7714 §11).
    pub fn new(prf: &Prf, master_key_len: usize, master_salt: &[u8], rtcp: bool) -> Self {
        let (enc, salt_label) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpSalt)
        };
        let mut key = [0u8; 32];
        let key = &mut key[..master_key_len];
        prf.derive(master_salt, enc, key);
        let mut salt = [0u8; 12];
        prf.derive(master_salt, salt_label, &mut salt);
        Self::from_session_keys(key, salt)
    }

    /// Keys the session directly with a 16 or 32 byte session key (RFC 7714 §16-17 vectors).
    pub fn from_session_keys(key: &[u8], salt: [u8; 12]) -> Self {
        // Invariant: `key` is 16 or 32 bytes (see `CmSession::from_session_keys`).
        let aead = if key.len() == 32 {
            GcmKey::Aes256(Aes256Gcm::new(GenericArray::from_slice(key)))
        } else {
            GcmKey::Aes128(Aes128Gcm::new(GenericArray::from_slice(key)))
        };
        Self { aead, salt }
    }

    /// The 12-byte IV: `00 00 || SSRC || word || low16` XOR salt, where (word, low16) is
    /// (ROC, SEQ) for SRTP (RFC 7714 §8.1) and (0 || index high half, index low half) for SRTCP
    /// (§9.1): both are "SSRC then a 48-bit index", which is how this takes them.
    pub fn nonce(&self, ssrc: u32, index48: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index48.to_be_bytes()[2..]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        iv
    }

    /// Encrypts `data` in place and returns the tag over `aad` and the ciphertext.
    ///
    /// GCM refuses only inputs beyond 2^36 bytes, which no UDP datagram reaches; that case is
    /// reported as [`SrtpError::Malformed`] rather than assumed away.
    pub fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN], SrtpError> {
        let nonce = GenericArray::from_slice(nonce);
        let tag = match &self.aead {
            GcmKey::Aes128(c) => c.encrypt_in_place_detached(nonce, aad, data),
            GcmKey::Aes256(c) => c.encrypt_in_place_detached(nonce, aad, data),
        };
        tag.map(Into::into).map_err(|_| SrtpError::Malformed)
    }

    /// Verifies `tag` and only then decrypts `data` in place; on failure `data` is untouched.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> bool {
        let nonce = GenericArray::from_slice(nonce);
        let tag = GenericArray::from_slice(tag);
        match &self.aead {
            GcmKey::Aes128(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
            GcmKey::Aes256(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
        }
        .is_ok()
    }
}
