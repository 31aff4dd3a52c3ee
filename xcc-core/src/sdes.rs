//! SDES (RFC 4568) `a=crypto` attributes: parsing what phones send, generating XCC's own.
//!
//! XCC terminates SRTP on the client leg, so it never forwards a peer's key: as answerer it echoes
//! the tag and suite of the best offered attribute with a fresh key of its own ([`answer`]); as
//! offerer it offers fresh keys ([`offer`]) and checks the answer against them ([`accept_answer`]).
//!
//! Choices where RFC 4568 leaves room (see `docs/sdp.md`):
//! - exactly one `inline:` key per attribute; several (MKI-based rekeying) are refused with
//!   [`Error::MultipleKeys`] rather than silently using the first;
//! - `KDR=0` is accepted (it is the default), any other KDR is refused: the SRTP transforms derive
//!   session keys once;
//! - `WSH=`, `FEC_ORDER=` and `FEC_KEY=` are accepted and ignored (a hint, and FEC XCC does not use);
//!   unknown parameters are refused unless marked optional with a leading `-` (§6.3.7, §9.2);
//! - the inline key is accepted with or without base64 padding and always written with padding.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Error, Result};
use crate::srtp::{KeyingMaterial, SrtpPolicy, SrtpSuite};

/// Standard base64 that writes padding but reads keys whether or not the sender padded them
/// (phones differ on the 46- and 44-byte keys of the 256-bit and GCM suites).
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest key-salt text accepted before decoding: 46 bytes encode to 64 characters; anything
/// longer is malformed and is refused without decoding.
const MAX_KEY_TEXT: usize = 64;

/// Longest name kept in an error, so a hostile attribute cannot make errors (and logs) large.
const MAX_ERROR_TEXT: usize = 64;

/// Largest tag RFC 4568 allows (`1*9DIGIT`).
const MAX_TAG: u32 = 999_999_999;

/// The session parameters that change what the SRTP transform does (RFC 4568 §6.3.2-6.3.4); they
/// must be echoed in the answer, since both directions of a stream use the same setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SessionParams {
    /// `UNENCRYPTED_SRTP`: RTP payloads are authenticated but not encrypted.
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: RTCP is authenticated but not encrypted (E flag clear).
    pub unencrypted_srtcp: bool,
    /// `UNAUTHENTICATED_SRTP`: RTP carries no authentication tag.
    pub unauthenticated_srtp: bool,
}

/// A Master Key Identifier (RFC 3711 §3.1) as signalled in `|value:length`; kept so the SRTP layer
/// can expect (and strip) the MKI bytes in the peer's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mki {
    /// The MKI value carried in every packet.
    pub value: u32,
    /// Its length on the wire in bytes (1-4: XCC keeps values in a `u32`).
    pub length: u8,
}

/// One `a=crypto` attribute: a tag, a suite, one master key + salt and the session parameters.
///
/// `Debug` never prints key bytes ([`KeyingMaterial`] hides them); `Display` does, because it is
/// the SDP text that must carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Identifies the attribute within its m= section; the answer echoes it.
    pub tag: u32,
    /// The SRTP transform.
    pub suite: SrtpSuite,
    /// Master key and salt (the suite is repeated inside and always equals `suite`).
    pub key: KeyingMaterial,
    /// Packets the master key may protect before rekeying (`|2^31`); `None` when unsignalled.
    pub lifetime: Option<u64>,
    /// MKI the sender prefixes its packets' tags with, if any.
    pub mki: Option<Mki>,
    /// Transform-changing session parameters.
    pub params: SessionParams,
}

impl CryptoAttribute {
    /// Parses the value of an `a=crypto:` attribute (text after the colon), e.g.
    /// `1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4`.
    ///
    /// Never panics; a value XCC cannot use gives a typed error so callers can skip that attribute.
    pub fn parse(value: &str) -> Result<Self> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields.next().ok_or(Error::CryptoParse {
            reason: "empty value",
        })?;
        let tag = parse_tag(tag_text)?;
        let suite_name = fields.next().ok_or(Error::CryptoParse {
            reason: "missing crypto-suite",
        })?;
        let suite =
            SrtpSuite::from_sdes_name(suite_name).ok_or_else(|| Error::UnsupportedSuite {
                name: clip(suite_name),
            })?;
        let key_params = fields.next().ok_or(Error::CryptoParse {
            reason: "missing key-params",
        })?;
        let count = key_params.split(';').count();
        if count > 1 {
            return Err(Error::MultipleKeys { count });
        }
        let key_info = key_params
            .strip_prefix("inline:")
            .ok_or(Error::CryptoParse {
                reason: "key method is not inline",
            })?;
        let (key, lifetime, mki) = parse_key_info(suite, key_info)?;
        let mut params = SessionParams::default();
        for param in fields {
            parse_session_param(param, &mut params)?;
        }
        Ok(Self {
            tag,
            suite,
            key,
            lifetime,
            mki,
            params,
        })
    }

    /// A fresh attribute for XCC's side: key and salt from the CSPRNG, no lifetime, no MKI, no
    /// session parameters.
    pub fn generate(tag: u32, suite: SrtpSuite) -> Self {
        Self {
            tag,
            suite,
            key: KeyingMaterial::generate(suite),
            lifetime: None,
            mki: None,
            params: SessionParams::default(),
        }
    }
}

impl CryptoAttribute {
    /// The transform settings the session parameters ask for; both directions of the stream use
    /// them (the answer echoes the parameters).
    pub fn srtp_policy(&self) -> SrtpPolicy {
        SrtpPolicy {
            encrypt_rtp: !self.params.unencrypted_srtp,
            encrypt_rtcp: !self.params.unencrypted_srtcp,
            authenticate_rtp: !self.params.unauthenticated_srtp,
        }
    }
}

impl fmt::Display for CryptoAttribute {
    /// The attribute value as it goes after `a=crypto:`. Lifetimes that are powers of two are
    /// written as `2^n`, the form phones use; keys are written with base64 padding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 46];
        let key_len = self.key.key().len();
        let salt_len = self.key.salt().len();
        raw[..key_len].copy_from_slice(self.key.key());
        raw[key_len..key_len + salt_len].copy_from_slice(self.key.salt());
        let mut text = [0u8; MAX_KEY_TEXT];
        // 46 bytes encode to exactly 64 characters, so the buffer always fits.
        let n = KEY_BASE64
            .encode_slice(&raw[..key_len + salt_len], &mut text)
            .map_err(|_| fmt::Error)?;
        let key_text = std::str::from_utf8(&text[..n]).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite.sdes_name(),
            key_text
        )?;
        if let Some(lifetime) = self.lifetime {
            if lifetime.is_power_of_two() {
                write!(f, "|2^{}", lifetime.trailing_zeros())?;
            } else {
                write!(f, "|{lifetime}")?;
            }
        }
        if let Some(mki) = self.mki {
            write!(f, "|{}:{}", mki.value, mki.length)?;
        }
        if self.params.unencrypted_srtp {
            f.write_str(" UNENCRYPTED_SRTP")?;
        }
        if self.params.unencrypted_srtcp {
            f.write_str(" UNENCRYPTED_SRTCP")?;
        }
        if self.params.unauthenticated_srtp {
            f.write_str(" UNAUTHENTICATED_SRTP")?;
        }
        Ok(())
    }
}

/// Answerer side (RFC 4568 §7.1.2): picks the best offered suite XCC supports, in
/// [`SrtpSuite::ALL`] order, and returns (the chosen offered attribute, XCC's answer: same tag,
/// suite and session parameters, fresh key).
///
/// Attributes with an MKI are not acceptable: the peer would prefix every tag with MKI bytes and
/// XCC's SRTP transform does not parse them.
pub fn answer(offered: &[CryptoAttribute]) -> Result<(CryptoAttribute, CryptoAttribute)> {
    let chosen = SrtpSuite::ALL
        .into_iter()
        .find_map(|suite| offered.iter().find(|a| a.suite == suite && a.mki.is_none()))
        .ok_or(Error::NoCommonSuite {
            offered: offered.len(),
        })?;
    let mut ours = CryptoAttribute::generate(chosen.tag, chosen.suite);
    ours.params = chosen.params;
    Ok((chosen.clone(), ours))
}

/// Offerer side: one fresh attribute per suite, tags 1.., in the given order (the order is the
/// preference the answerer sees).
pub fn offer(suites: &[SrtpSuite]) -> Vec<CryptoAttribute> {
    (1u32..)
        .zip(suites)
        .map(|(tag, &suite)| CryptoAttribute::generate(tag, suite))
        .collect()
}

/// Offerer side, on receiving the answer: the answered attribute must carry a tag XCC offered,
/// with the suite offered under that tag (RFC 4568 §7.1.3).
pub fn accept_answer(offered: &[CryptoAttribute], answered: &CryptoAttribute) -> Result<()> {
    if offered
        .iter()
        .any(|o| o.tag == answered.tag && o.suite == answered.suite)
    {
        Ok(())
    } else {
        Err(Error::CryptoAnswerMismatch {
            tag: answered.tag,
            suite: answered.suite.sdes_name(),
        })
    }
}

/// `tag = 1*9DIGIT`.
fn parse_tag(text: &str) -> Result<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::CryptoParse {
            reason: "tag is not 1-9 digits",
        });
    }
    text.parse::<u32>()
        .ok()
        .filter(|&t| t <= MAX_TAG)
        .ok_or(Error::CryptoParse {
            reason: "tag is not 1-9 digits",
        })
}

/// `key-info = key-salt ["|" lifetime] ["|" mki]`.
fn parse_key_info(
    suite: SrtpSuite,
    key_info: &str,
) -> Result<(KeyingMaterial, Option<u64>, Option<Mki>)> {
    let mut parts = key_info.split('|');
    // `split` always yields at least one item.
    let key_text = parts.next().unwrap_or_default();
    let key = decode_key(suite, key_text)?;
    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        if mki.is_some() {
            return Err(Error::CryptoParse {
                reason: "text after the MKI",
            });
        }
        if let Some((value, length)) = part.split_once(':') {
            mki = Some(parse_mki(value, length)?);
        } else if lifetime.is_none() {
            lifetime = Some(parse_lifetime(part)?);
        } else {
            return Err(Error::CryptoParse {
                reason: "two lifetimes",
            });
        }
    }
    Ok((key, lifetime, mki))
}

/// Decodes the base64 key-salt and checks it has exactly the suite's key + salt length.
fn decode_key(suite: SrtpSuite, text: &str) -> Result<KeyingMaterial> {
    if text.is_empty() {
        return Err(Error::CryptoParse {
            reason: "empty inline key",
        });
    }
    if text.len() > MAX_KEY_TEXT {
        return Err(Error::KeyLength {
            suite: suite.sdes_name(),
            expected: suite.key_len() + suite.salt_len(),
            // Upper bound of what the text would decode to; exact enough to diagnose.
            got: text.len() * 3 / 4,
        });
    }
    let mut raw = [0u8; 48];
    let n = KEY_BASE64
        .decode_slice(text, &mut raw)
        .map_err(|_| Error::CryptoParse {
            reason: "inline key is not base64",
        })?;
    let key_len = suite.key_len();
    if n != key_len + suite.salt_len() {
        return Err(Error::KeyLength {
            suite: suite.sdes_name(),
            expected: key_len + suite.salt_len(),
            got: n,
        });
    }
    KeyingMaterial::new(suite, &raw[..key_len], &raw[key_len..n])
}

/// `lifetime = ["2^"] 1*DIGIT`; zero is meaningless and refused.
fn parse_lifetime(text: &str) -> Result<u64> {
    const BAD: Error = Error::CryptoParse {
        reason: "lifetime is not 2^n or a decimal number",
    };
    let value = if let Some(exp) = text.strip_prefix("2^") {
        let exp = parse_digits::<u32>(exp).ok_or(BAD)?;
        1u64.checked_shl(exp).filter(|_| exp < 64).ok_or(BAD)?
    } else {
        parse_digits::<u64>(text).ok_or(BAD)?
    };
    if value == 0 {
        return Err(Error::CryptoParse {
            reason: "lifetime is zero",
        });
    }
    Ok(value)
}

/// `mki = mki-value ":" mki-length`, with the length limited to what a `u32` holds.
fn parse_mki(value: &str, length: &str) -> Result<Mki> {
    let length = parse_digits::<u8>(length)
        .filter(|l| (1..=128).contains(l))
        .ok_or(Error::CryptoParse {
            reason: "MKI length is not 1-128",
        })?;
    if length > 4 {
        return Err(Error::CryptoParse {
            reason: "MKI longer than 4 bytes is not supported",
        });
    }
    let value = parse_digits::<u64>(value)
        .filter(|&v| v < 1u64 << (8 * u32::from(length)))
        .ok_or(Error::CryptoParse {
            reason: "MKI value does not fit its length",
        })?;
    // The filter above bounds the value below 2^32.
    let value = u32::try_from(value).map_err(|_| Error::CryptoParse {
        reason: "MKI value does not fit its length",
    })?;
    Ok(Mki { value, length })
}

/// Digits only: `str::parse` would also accept a leading `+`.
fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One session parameter (RFC 4568 §6.3); see the module doc for what is accepted.
fn parse_session_param(param: &str, params: &mut SessionParams) -> Result<()> {
    let unsupported = || Error::UnsupportedSessionParam { param: clip(param) };
    match param.split_once('=') {
        None => match param {
            "UNENCRYPTED_SRTP" => params.unencrypted_srtp = true,
            "UNENCRYPTED_SRTCP" => params.unencrypted_srtcp = true,
            "UNAUTHENTICATED_SRTP" => params.unauthenticated_srtp = true,
            _ if param.starts_with('-') => {}
            _ => return Err(unsupported()),
        },
        Some(("KDR", rate)) => {
            if parse_digits::<u8>(rate) != Some(0) {
                return Err(unsupported());
            }
        }
        Some(("WSH", size)) => {
            parse_digits::<u64>(size).ok_or(Error::CryptoParse {
                reason: "WSH is not a number",
            })?;
        }
        Some(("FEC_ORDER", "FEC_SRTP" | "SRTP_FEC")) | Some(("FEC_KEY", _)) => {}
        Some(_) if param.starts_with('-') => {}
        Some(_) => return Err(unsupported()),
    }
    Ok(())
}

/// Keeps at most [`MAX_ERROR_TEXT`] characters of peer-supplied text for an error.
fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 §5.1 example key (30 bytes).
    const KEY_128: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn parses_rfc_4568_example_with_lifetime_and_mki() {
        let a = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^20|1:4"
        ))
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(a.lifetime, Some(1 << 20));
        assert_eq!(
            a.mki,
            Some(Mki {
                value: 1,
                length: 4
            })
        );
        assert_eq!(a.key.key(), b"YS___semctl () {");
        assert_eq!(a.params, SessionParams::default());
    }

    #[test]
    fn decimal_lifetime_equals_power_form() {
        let a = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|1048576"
        ))
        .unwrap();
        let b = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^20"))
            .unwrap();
        assert_eq!(a, b);
        let c = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^31"))
            .unwrap();
        assert_eq!(c.lifetime, Some(1 << 31));
    }

    #[test]
    fn mki_without_lifetime() {
        let a =
            CryptoAttribute::parse(&format!("7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_128}|255:1"))
                .unwrap();
        assert_eq!(a.lifetime, None);
        assert_eq!(
            a.mki,
            Some(Mki {
                value: 255,
                length: 1
            })
        );
    }

    #[test]
    fn every_suite_generates_and_round_trips() {
        for suite in SrtpSuite::ALL {
            let a = CryptoAttribute::generate(3, suite);
            let text = a.to_string();
            assert!(
                text.starts_with(&format!("3 {} inline:", suite.sdes_name())),
                "{text}"
            );
            assert_eq!(CryptoAttribute::parse(&text).unwrap(), a, "{text}");
        }
    }

    #[test]
    fn keys_parse_with_and_without_padding() {
        for suite in SrtpSuite::ALL {
            let a = CryptoAttribute::generate(1, suite);
            let text = a.to_string();
            let unpadded = text.trim_end_matches('=');
            assert_eq!(CryptoAttribute::parse(unpadded).unwrap(), a, "{unpadded}");
        }
    }

    #[test]
    fn display_round_trips_text_with_every_field() {
        let text = format!(
            "12 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^31|3:2 UNENCRYPTED_SRTP \
             UNENCRYPTED_SRTCP UNAUTHENTICATED_SRTP"
        );
        let a = CryptoAttribute::parse(&text).unwrap();
        assert!(a.params.unencrypted_srtp && a.params.unencrypted_srtcp);
        assert!(a.params.unauthenticated_srtp);
        assert_eq!(a.to_string(), text);
    }

    #[test]
    fn srtp_policy_follows_session_params() {
        let base = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}");
        let plain = CryptoAttribute::parse(&base).unwrap();
        assert_eq!(plain.srtp_policy(), SrtpPolicy::default());
        let all = CryptoAttribute::parse(&format!(
            "{base} UNENCRYPTED_SRTCP UNAUTHENTICATED_SRTP UNENCRYPTED_SRTP"
        ))
        .unwrap();
        let policy = all.srtp_policy();
        assert!(!policy.encrypt_rtp && !policy.encrypt_rtcp && !policy.authenticate_rtp);
        let rtcp = CryptoAttribute::parse(&format!("{base} UNENCRYPTED_SRTCP")).unwrap();
        assert_eq!(
            rtcp.srtp_policy(),
            SrtpPolicy {
                encrypt_rtcp: false,
                ..SrtpPolicy::default()
            }
        );
    }

    #[test]
    fn wrong_key_length_for_suite_is_refused() {
        // A 30-byte AES_CM_128 key offered for a 256-bit suite.
        let err = CryptoAttribute::parse(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_128}"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeyLength {
                    expected: 46,
                    got: 30,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:QUJDRA").unwrap_err();
        assert!(matches!(err, Error::KeyLength { got: 4, .. }), "{err:?}");
        let long = "QUJD".repeat(20);
        let err = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{long}"))
            .unwrap_err();
        assert!(matches!(err, Error::KeyLength { .. }), "{err:?}");
    }

    #[test]
    fn multiple_inline_keys_are_refused() {
        let err = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^20|1:4;inline:{KEY_128}|2^20|2:4"
        ))
        .unwrap_err();
        assert!(matches!(err, Error::MultipleKeys { count: 2 }), "{err:?}");
    }

    #[test]
    fn kdr_zero_accepted_other_kdr_refused() {
        let ok =
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128} KDR=0"));
        assert!(ok.is_ok());
        let err = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128} KDR=23"
        ))
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedSessionParam { ref param } if param == "KDR=23"));
    }

    #[test]
    fn optional_and_ignorable_params_accepted_unknown_mandatory_refused() {
        let base = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}");
        for extra in [
            "WSH=128",
            "FEC_ORDER=FEC_SRTP",
            "FEC_KEY=inline:abc",
            "-X_VENDOR=1",
            "-FOO",
        ] {
            let a = CryptoAttribute::parse(&format!("{base} {extra}")).unwrap();
            assert_eq!(a.params, SessionParams::default(), "{extra}");
        }
        let err = CryptoAttribute::parse(&format!("{base} X_VENDOR=1")).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedSessionParam { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_values_give_typed_errors() {
        let cases = [
            "",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            "x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 AES_CM_128_HMAC_SHA1_80 uri:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!X19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^64",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|0",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|+5",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1:0",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1:5",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|256:1",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1:1|2^20",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|2^20",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz WSH=x",
        ];
        for case in cases {
            let err = CryptoAttribute::parse(case).unwrap_err();
            assert!(matches!(err, Error::CryptoParse { .. }), "{case}: {err:?}");
        }
    }

    #[test]
    fn unknown_suite_is_typed_and_clipped() {
        let name = "F8_128_HMAC_SHA1_80".repeat(10);
        let err = CryptoAttribute::parse(&format!("1 {name} inline:{KEY_128}")).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedSuite { ref name } if name.len() == 64),
            "{err:?}"
        );
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let a =
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}")).unwrap();
        let debug = format!("{a:?}");
        assert!(!debug.contains(KEY_128), "{debug}");
        assert!(!debug.contains("semctl"), "{debug}");
        assert!(!debug.contains("89, 83, 95"), "{debug}");
    }

    #[test]
    fn answer_picks_best_suite_echoes_tag_and_params_with_fresh_key() {
        let offered = [
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}")).unwrap(),
            CryptoAttribute::parse(&format!(
                "2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_128} UNENCRYPTED_SRTCP"
            ))
            .unwrap(),
            {
                let mut a = CryptoAttribute::generate(3, SrtpSuite::AeadAes128Gcm);
                a.params.unencrypted_srtcp = true;
                a
            },
        ];
        let (chosen, ours) = answer(&offered).unwrap();
        assert_eq!(chosen, offered[2]);
        assert_eq!((ours.tag, ours.suite), (3, SrtpSuite::AeadAes128Gcm));
        assert!(ours.params.unencrypted_srtcp);
        assert_ne!(ours.key, chosen.key);
        assert_eq!((ours.lifetime, ours.mki), (None, None));

        let (chosen, ours) = answer(&offered[..2]).unwrap();
        assert_eq!(
            (chosen.tag, ours.tag, ours.suite),
            (1, 1, SrtpSuite::AesCm128HmacSha1_80)
        );
    }

    #[test]
    fn answer_skips_attributes_with_mki() {
        let with_mki = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^20|1:4"
        ))
        .unwrap();
        let without =
            CryptoAttribute::parse(&format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}")).unwrap();
        let (chosen, _) = answer(&[with_mki.clone(), without]).unwrap();
        assert_eq!(chosen.tag, 2);
        assert!(matches!(
            answer(&[with_mki]),
            Err(Error::NoCommonSuite { offered: 1 })
        ));
    }

    #[test]
    fn answer_without_offer_is_no_common_suite() {
        assert!(matches!(
            answer(&[]),
            Err(Error::NoCommonSuite { offered: 0 })
        ));
    }

    #[test]
    fn offer_numbers_tags_in_order_with_distinct_keys() {
        let suites = [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes256Gcm];
        let offered = offer(&suites);
        assert_eq!(offered.len(), 2);
        assert_eq!((offered[0].tag, offered[0].suite), (1, suites[0]));
        assert_eq!((offered[1].tag, offered[1].suite), (2, suites[1]));
        assert_ne!(offered[0].key.key(), &offered[1].key.key()[..16]);
    }

    #[test]
    fn accept_answer_requires_offered_tag_and_suite() {
        let offered = offer(&[
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ]);
        let good = CryptoAttribute::generate(2, SrtpSuite::AesCm128HmacSha1_32);
        assert!(accept_answer(&offered, &good).is_ok());
        let wrong_suite = CryptoAttribute::generate(2, SrtpSuite::AesCm128HmacSha1_80);
        assert!(matches!(
            accept_answer(&offered, &wrong_suite),
            Err(Error::CryptoAnswerMismatch { tag: 2, .. })
        ));
        let wrong_tag = CryptoAttribute::generate(3, SrtpSuite::AesCm128HmacSha1_32);
        assert!(accept_answer(&offered, &wrong_tag).is_err());
    }
}
