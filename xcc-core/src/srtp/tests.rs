//! Published test vectors: RFC 3711 Appendix B.2 (AES-CM keystream) and RFC 7714 §16-17 (AES-GCM
//! SRTP and SRTCP). The B.3 key derivation vector sits with the KDF in `kdf.rs`.

use super::context::SrtpContext;
use super::session::CmSession;
use super::{KeyingMaterial, SrtpPolicy, SrtpSuite};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn array<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

/// RFC 3711 B.2: with SSRC 0 and index 0 the IV is the shifted salt, and the keystream over a
/// zero payload is the AES-CM keystream table, first three and last three blocks.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let session = CmSession::from_session_keys(
        &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
        &[0; 20],
        array("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
    );
    let mut stream = vec![0u8; 65282 * 16];
    session.apply_keystream(0, 0, &mut stream);
    let head = hex(
        "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
         41E95B3BB0A2E8DD477901E4FCA894C0",
    );
    let tail = hex(
        "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
         6A2CC3787889374FBEB4C81B17BA6C44",
    );
    assert_eq!(stream[..48], head[..]);
    assert_eq!(stream[0xFEFF * 16..], tail[..]);
    // The IV carries the SSRC and the index: changing either changes the keystream.
    let mut other = [0u8; 16];
    session.apply_keystream(1, 0, &mut other);
    assert_ne!(other[..], head[..16]);
    session.apply_keystream(0, 1 << 16, &mut other);
    assert_ne!(other[..], head[..16]);
}

const GCM_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo".
const GCM_SALT: &str = "517569642070726f2071756f";

/// RFC 7714 §16: 12-byte header, SSRC 0x5501a0b2, seq 0xf17b, "Gallia est omnis divisa in partes tres".
const RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
                   69736120 696e2070 61727465 73207472 6573";

/// RFC 7714 §17 (the packet the vectors operate on): SR from SSRC "Mars".
const RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
                    deadbeef deadbeef deadbeef deadbeef deadbeef";

fn gcm(suite: SrtpSuite, key: &str, policy: SrtpPolicy) -> SrtpContext {
    SrtpContext::with_gcm_session_keys(suite, policy, &hex(key), array(GCM_SALT))
}

fn check_srtp_vector(suite: SrtpSuite, key: &str, expected: &str) {
    let (plain, expected) = (hex(RTP), hex(expected));
    let mut buf = plain.clone();
    buf.resize(plain.len() + 16, 0);
    let len = gcm(suite, key, SrtpPolicy::default())
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    assert_eq!(buf[..len], expected[..], "{suite:?} protect");

    let mut rx = gcm(suite, key, SrtpPolicy::default());
    let len = rx.unprotect_rtp(&mut buf, expected.len()).unwrap();
    assert_eq!(buf[..len], plain[..], "{suite:?} unprotect");

    let mut tampered = expected.clone();
    tampered[20] ^= 1;
    let mut rx = gcm(suite, key, SrtpPolicy::default());
    let len = tampered.len();
    assert_eq!(
        rx.unprotect_rtp(&mut tampered, len),
        Err(super::SrtpError::AuthFailed)
    );
}

/// RFC 7714 §16: SRTP with AEAD_AES_128_GCM, protect and unprotect.
#[test]
fn rfc7714_16_srtp_aead_aes_128_gcm() {
    check_srtp_vector(
        SrtpSuite::AeadAes128Gcm,
        GCM_KEY_128,
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
         0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
    );
}

/// RFC 7714 §16: SRTP with AEAD_AES_256_GCM.
#[test]
fn rfc7714_16_srtp_aead_aes_256_gcm() {
    check_srtp_vector(
        SrtpSuite::AeadAes256Gcm,
        GCM_KEY_256,
        "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
         9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
    );
}

/// The vectors use SRTCP index 0x5d4: protect counts from 1, so run the sender up to it.
fn check_srtcp_vector(suite: SrtpSuite, key: &str, policy: SrtpPolicy, expected: &str) {
    let (plain, expected) = (hex(RTCP), hex(expected));
    let mut rx = gcm(suite, key, policy);
    let mut buf = expected.clone();
    let len = rx.unprotect_rtcp(&mut buf, expected.len()).unwrap();
    assert_eq!(buf[..len], plain[..], "{suite:?} unprotect");

    let mut tx = gcm(suite, key, policy);
    let mut buf = vec![0u8; plain.len() + 20];
    for _ in 0..0x5d4 {
        buf[..plain.len()].copy_from_slice(&plain);
        let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(len, expected.len());
    }
    assert_eq!(buf[..], expected[..], "{suite:?} protect");

    let mut tampered = expected.clone();
    tampered[30] ^= 8;
    let mut rx = gcm(suite, key, policy);
    let len = tampered.len();
    assert_eq!(
        rx.unprotect_rtcp(&mut tampered, len),
        Err(super::SrtpError::AuthFailed)
    );
}

/// RFC 7714 §17: SRTCP with AEAD_AES_128_GCM, protect and unprotect.
#[test]
fn rfc7714_17_srtcp_aead_aes_128_gcm() {
    check_srtcp_vector(
        SrtpSuite::AeadAes128Gcm,
        GCM_KEY_128,
        SrtpPolicy::default(),
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
         c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4",
    );
}

/// RFC 7714 §17: SRTCP with AEAD_AES_256_GCM.
#[test]
fn rfc7714_17_srtcp_aead_aes_256_gcm() {
    check_srtcp_vector(
        SrtpSuite::AeadAes256Gcm,
        GCM_KEY_256,
        SrtpPolicy::default(),
        "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
         a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4",
    );
}

/// RFC 7714 §17, tag-only SRTCP (`UNENCRYPTED_SRTCP`): E flag clear, the whole packet is AAD.
#[test]
fn rfc7714_17_srtcp_tag_only() {
    check_srtcp_vector(
        SrtpSuite::AeadAes128Gcm,
        GCM_KEY_128,
        SrtpPolicy {
            encrypt_rtcp: false,
            ..SrtpPolicy::default()
        },
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
         deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4",
    );
}

/// libsrtp's known-answer packet (`srtp_driver`): header 800f1234 decafbad cafebabe, 16 x 0xab,
/// keyed through the KDF from a master key, so the whole path from master key to wire is pinned.
fn check_known_answer(suite: SrtpSuite, key: &str, salt: &str, expected: &str) {
    let km = KeyingMaterial::new(suite, &hex(key), &hex(salt)).unwrap();
    let plain = hex("800f1234 decafbad cafebabe abababab abababab abababab abababab");
    let expected = hex(expected);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 10, 0);
    let len = SrtpContext::new(&km, SrtpPolicy::default())
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    assert_eq!(buf[..len], expected[..], "{suite:?} protect");
    let len = SrtpContext::new(&km, SrtpPolicy::default())
        .unprotect_rtp(&mut buf, len)
        .unwrap();
    assert_eq!(buf[..len], plain[..], "{suite:?} unprotect");
}

#[test]
fn libsrtp_known_answer_aes_cm_128_hmac_sha1_80() {
    check_known_answer(
        SrtpSuite::AesCm128HmacSha1_80,
        "e1f97a0d3e018be0d64fa32c06de4139",
        "0ec675ad498afeebb6960b3aabe6",
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc 99ea179b 8dbb",
    );
}

#[test]
fn libsrtp_known_answer_aes_256_cm_hmac_sha1_80() {
    check_known_answer(
        SrtpSuite::AesCm256HmacSha1_80,
        "f0f04914b513f2763a1b1fa130f10e29 98f6f6e43e4309d1e622a0e332b9f1b6",
        "3b04803de51ee7c96423ab5b78d2",
        "800f1234 decafbad cafebabe f1d9de17 ff251ff1 aa007774 b0b4b40d a08d9d9a 5b3a55d8 873b",
    );
}
