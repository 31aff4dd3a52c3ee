//! Digest authentication towards a PBX (RFC 3261 §22, RFC 2617 MD5 / MD5-sess, qop=auth):
//! answering a 401 `WWW-Authenticate` or 407 `Proxy-Authenticate` with configured credentials.

use std::fmt::Write as _;

use md5::{Digest, Md5};

use crate::error::Error;
use crate::header::split_list;
use crate::message::{Header, Request, Response};

/// Digest algorithm offered by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HA1 = MD5(user:realm:password).
    Md5,
    /// HA1 = MD5(MD5(user:realm:password):nonce:cnonce).
    Md5Sess,
}

/// A parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space; credentials are chosen by it.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Echoed back verbatim.
    pub opaque: Option<String>,
    /// Whether the server offered qop=auth (preferred; auth-int is not supported).
    pub qop_auth: bool,
    /// MD5 or MD5-sess.
    pub algorithm: Algorithm,
    /// The nonce expired; retrying with the same credentials is expected to work.
    pub stale: bool,
}

impl Challenge {
    /// Parses a `Digest k=v, k="v"` header value.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let bad = |reason| Error::Challenge { reason };
        let (scheme, params) = value
            .trim()
            .split_once([' ', '\t'])
            .ok_or(bad("no scheme"))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(bad("scheme is not Digest"));
        }
        let (mut realm, mut nonce, mut opaque, mut qop, mut algorithm, mut stale) =
            (None, None, None, None, Algorithm::Md5, false);
        for item in split_list(params.trim()).ok_or(bad("empty parameter"))? {
            let (k, v) = item.split_once('=').ok_or(bad("parameter without value"))?;
            let v = unquote(v.trim());
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "qop" => qop = Some(v),
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                "algorithm" => {
                    algorithm = match v.to_ascii_uppercase().as_str() {
                        "MD5" => Algorithm::Md5,
                        "MD5-SESS" => Algorithm::Md5Sess,
                        _ => return Err(bad("algorithm not MD5/MD5-sess")),
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(q) if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) => true,
            Some(_) => return Err(bad("qop offers no 'auth'")),
        };
        Ok(Self {
            realm: realm.ok_or(bad("no realm"))?,
            nonce: nonce.ok_or(bad("no nonce"))?,
            opaque,
            qop_auth,
            algorithm,
            stale,
        })
    }
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_owned(),
    }
}

fn md5_hex(s: &str) -> String {
    let mut out = String::with_capacity(32);
    for b in Md5::digest(s.as_bytes()) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Username and password configured for a trunk.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Digest username.
    pub username: String,
    /// Password; never logged (see the Debug impl).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `response=` value (RFC 2617 §3.2.2.1).
pub fn digest_response(
    ch: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let mut ha1 = md5_hex(&format!(
        "{}:{}:{}",
        creds.username, ch.realm, creds.password
    ));
    if ch.algorithm == Algorithm::Md5Sess {
        ha1 = md5_hex(&format!("{ha1}:{}:{cnonce}", ch.nonce));
    }
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    if ch.qop_auth {
        md5_hex(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", ch.nonce))
    }
}

/// The Authorization / Proxy-Authorization header answering `resp` (401 or 407) for `req`.
/// `cnonce` comes from the caller's RNG; `nc` counts uses of this nonce (1 for a fresh one).
/// The caller adds the header to a copy of `req` with a new branch and the next CSeq.
pub fn answer(
    req: &Request,
    resp: &Response,
    creds: &Credentials,
    cnonce: &str,
    nc: u32,
) -> Result<Header, Error> {
    let (challenge_name, answer_name) = match resp.status {
        401 => ("WWW-Authenticate", "Authorization"),
        407 => ("Proxy-Authenticate", "Proxy-Authorization"),
        _ => {
            return Err(Error::Challenge {
                reason: "not a 401/407",
            });
        }
    };
    let value = resp.headers.other(challenge_name).ok_or(Error::Challenge {
        reason: "no challenge header",
    })?;
    let ch = Challenge::parse(value)?;
    let method = req.method.as_str();
    let response = digest_response(&ch, creds, method, &req.uri, cnonce, nc);
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\"",
        creds.username, ch.realm, ch.nonce, req.uri
    );
    let alg = match ch.algorithm {
        Algorithm::Md5 => "MD5",
        Algorithm::Md5Sess => "MD5-sess",
    };
    // Writing to a String cannot fail.
    let _ = write!(v, ", algorithm={alg}");
    if ch.qop_auth {
        let _ = write!(v, ", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"");
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(v, ", opaque=\"{o}\"");
    }
    Ok(Header {
        name: answer_name.to_owned(),
        value: v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn mufasa() -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }
    }

    #[test]
    fn rfc2617_section_3_5_vector() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(ch.qop_auth);
        let r = digest_response(&ch, &mufasa(), "GET", "/dir/index.html", "0a4f113b", 1);
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn answers_the_folded_407_fixture() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/messages/valid/rw_407_folded.sip"
        ))
        .unwrap();
        let Message::Response(resp) = Message::parse(&raw).unwrap() else {
            panic!()
        };
        let inv = "INVITE sip:1002@pbx.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK7c1e2a\r\nFrom: <sip:xcc@192.0.2.50>;tag=a73kszlfl\r\nTo: <sip:1002@pbx.example.net>\r\nCall-ID: 3848276298220188511@192.0.2.50\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let Message::Request(req) = Message::parse(inv.as_bytes()).unwrap() else {
            panic!()
        };
        let h = answer(&req, &resp, &mufasa(), "abc123", 1).unwrap();
        assert_eq!(h.name, "Proxy-Authorization");
        let ch = Challenge::parse(resp.headers.other("Proxy-Authenticate").unwrap()).unwrap();
        let expect = digest_response(&ch, &mufasa(), "INVITE", &req.uri, "abc123", 1);
        assert!(h.value.contains(&format!("response=\"{expect}\"")));
        assert!(h.value.contains("qop=auth, nc=00000001, cnonce=\"abc123\""));
        assert!(
            h.value
                .contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"")
        );
    }

    #[test]
    fn unusable_challenges_are_typed_errors() {
        for v in [
            "Basic realm=\"x\"",
            "Digest nonce=\"n\"",
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
            "Digest",
        ] {
            assert!(
                matches!(Challenge::parse(v), Err(Error::Challenge { .. })),
                "{v}"
            );
        }
        assert!(!format!("{:?}", mufasa()).contains("Circle"));
    }
}
