//! SRTP key derivation (RFC 3711 §4.3.1; RFC 6188 for AES-256; RFC 7714 §11 for GCM), run once per
//! context with a key derivation rate of 0, as SDES negotiates it.

use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use aes::{Aes128, Aes256};

/// Key derivation labels (RFC 3711 §4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Label {
    /// SRTP encryption key.
    RtpEncryption = 0,
    /// SRTP authentication key.
    RtpAuthentication = 1,
    /// SRTP salt.
    RtpSalt = 2,
    /// SRTCP encryption key.
    RtcpEncryption = 3,
    /// SRTCP authentication key.
    RtcpAuthentication = 4,
    /// SRTCP salt.
    RtcpSalt = 5,
}

/// The AES-CM pseudo-random function keyed with the master key.
#[expect(
    clippy::large_enum_variant,
    reason = "a short-lived local of context construction; boxing would only add an allocation"
)]
pub(super) enum Prf {
    /// 128-bit master key.
    Aes128(Aes128),
    /// 256-bit master key (RFC 6188, RFC 7714).
    Aes256(Aes256),
}

impl Prf {
    /// Keys the PRF; `master_key` is 16 or 32 bytes (checked by `KeyingMaterial`).
    pub fn new(master_key: &[u8]) -> Self {
        // Invariant: 16 or 32 bytes, checked by `KeyingMaterial::new`, so `from_slice` cannot panic.
        if master_key.len() == 32 {
            Prf::Aes256(Aes256::new(GenericArray::from_slice(master_key)))
        } else {
            Prf::Aes128(Aes128::new(GenericArray::from_slice(master_key)))
        }
    }

    /// Fills `out` with the session key, auth key or salt for `label`.
    ///
    /// x = (label << 48) XOR master_salt; output = AES-CM keystream with IV x * 2^16. A 12-byte GCM
    /// salt is zero-extended to the 112 bits the KDF works on.
    pub fn derive(&self, master_salt: &[u8], label: Label, out: &mut [u8]) {
        let mut x = [0u8; 16];
        x[..master_salt.len()].copy_from_slice(master_salt);
        x[7] ^= label as u8;
        for (counter, chunk) in out.chunks_mut(16).enumerate() {
            // Outputs are at most a few blocks long: the 16-bit counter never wraps.
            x[14..].copy_from_slice(&(counter as u16).to_be_bytes());
            let mut block = GenericArray::from(x);
            match self {
                Prf::Aes128(c) => c.encrypt_block(&mut block),
                Prf::Aes256(c) => c.encrypt_block(&mut block),
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let prf = Prf::new(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        prf.derive(&salt, Label::RtpEncryption, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut ssalt = [0u8; 14];
        prf.derive(&salt, Label::RtpSalt, &mut ssalt);
        assert_eq!(ssalt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        prf.derive(&salt, Label::RtpAuthentication, &mut auth);
        let expected = hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
        );
        assert_eq!(auth.to_vec(), expected);
    }

    /// RFC 6188 §7.2: the AES_256_CM PRF.
    #[test]
    fn rfc6188_7_2_aes_256_key_derivation() {
        let prf = Prf::new(&hex(
            "f0f04914b513f2763a1b1fa130f10e29 98f6f6e43e4309d1e622a0e332b9f1b6",
        ));
        let salt = hex("3b04803de51ee7c96423ab5b78d2");
        let mut key = [0u8; 32];
        prf.derive(&salt, Label::RtpEncryption, &mut key);
        assert_eq!(
            key.to_vec(),
            hex("5ba1064e30ec51613cad926c5a28ef73 1ec7fb397f70a960653caf06554cd8c4")
        );
        let mut ssalt = [0u8; 14];
        prf.derive(&salt, Label::RtpSalt, &mut ssalt);
        assert_eq!(ssalt.to_vec(), hex("fa31791685ca444a9e07c6c64e93"));
        let mut auth = [0u8; 20];
        prf.derive(&salt, Label::RtpAuthentication, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")
        );
    }
}
