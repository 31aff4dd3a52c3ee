//! A zero-allocation STUN (RFC 8489) codec for the few messages XCC reads and writes.
//!
//! STUN arrives on media ports interleaved with RTP, so it is parsed by the worker thread that owns
//! the port: [`Message::parse`] borrows the datagram and records where the attributes XCC cares
//! about sit, walking the TLVs once; [`Writer`] encodes into a caller buffer. Neither allocates,
//! logs or panics on any input. stun-rs, which allocates a vector per message, is the independent
//! oracle the tests check this codec against.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The fixed value in every STUN header since RFC 5389; it tells STUN from classic RFC 3489 and
/// from RTP on a shared port.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length.
pub const HEADER_LEN: usize = 20;
/// XORed into the CRC-32 of FINGERPRINT so that the value differs from other protocols' CRCs.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// HMAC-SHA1 output length carried by MESSAGE-INTEGRITY.
const INTEGRITY_LEN: usize = 20;

/// Binding request (RFC 8489 §18.2: method 0x001, class request).
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding indication: a keepalive that needs no answer (RFC 6263 §4.1).
pub const BINDING_INDICATION: u16 = 0x0011;
/// Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response.
pub const BINDING_ERROR: u16 = 0x0111;

/// STUN attribute types XCC reads or writes.
pub mod attr {
    /// RFC 3489 plain address, still sent by old servers instead of XOR-MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 5780: asks the server to answer from its other IP and/or port.
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// `ufrag:ufrag` for ICE checks.
    pub const USERNAME: u16 = 0x0006;
    /// HMAC-SHA1 over the message up to this attribute.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// Error class and number.
    pub const ERROR_CODE: u16 = 0x0009;
    /// TURN: allocation or permission lifetime in seconds.
    pub const LIFETIME: u16 = 0x000D;
    /// TURN: the peer a Send/Data indication or permission is about.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// TURN: application data in Send/Data indications.
    pub const DATA: u16 = 0x0013;
    /// Long-term credentials: the server's realm.
    pub const REALM: u16 = 0x0014;
    /// Long-term credentials: the server's nonce.
    pub const NONCE: u16 = 0x0015;
    /// TURN: the relayed transport address of an allocation.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// TURN: protocol of the allocation (17 = UDP).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// Where the server saw the request come from, XORed so NATs do not rewrite it.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// ICE candidate priority of the sender's peer-reflexive candidate.
    pub const PRIORITY: u16 = 0x0024;
    /// The controlling agent nominates this pair.
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// Implementation name.
    pub const SOFTWARE: u16 = 0x8022;
    /// CRC-32 over the message, to demultiplex STUN from media.
    pub const FINGERPRINT: u16 = 0x8028;
    /// The sender believes it is the controlled agent (with its tie-breaker).
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// The sender believes it is the controlling agent (with its tie-breaker).
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RFC 5780: the address the response was sent from.
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// RFC 5780: the server's alternate address (other IP and port) for NAT behaviour tests.
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

/// Why a datagram is not a STUN message XCC can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("stun: {len} bytes, shorter than the header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The two top bits are set or the magic cookie is wrong (RTP, RTCP, DTLS or noise).
    #[error("stun: not a STUN message")]
    NotStun,
    /// The header's length field disagrees with the datagram or is not a multiple of 4.
    #[error("stun: length field {declared} does not fit a {len}-byte datagram")]
    BadLength {
        /// Message length from the header.
        declared: usize,
        /// Datagram length.
        len: usize,
    },
    /// An attribute runs past the end of the message.
    #[error("stun: attribute {attr_type:#06x} truncated")]
    TruncatedAttribute {
        /// Its type.
        attr_type: u16,
    },
    /// An attribute follows FINGERPRINT (RFC 8489 §14.7 requires FINGERPRINT last).
    #[error("stun: attribute after FINGERPRINT")]
    AfterFingerprint,
    /// MESSAGE-INTEGRITY or FINGERPRINT has the wrong length.
    #[error("stun: attribute {attr_type:#06x} has length {len}")]
    BadAttributeLength {
        /// Its type.
        attr_type: u16,
        /// Its length.
        len: usize,
    },
    /// The output buffer cannot hold the message being written.
    #[error("stun: output buffer of {capacity} bytes too small")]
    BufferTooSmall {
        /// Capacity of the caller's buffer.
        capacity: usize,
    },
}

/// The 96-bit transaction id: matches responses to requests and keys XOR-MAPPED-ADDRESS (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh id from the caller's RNG (RFC 8489 §6: uniformly random, so off-path attackers
    /// cannot forge responses).
    pub fn random(rng: &mut impl rand::RngCore) -> Self {
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        TransactionId(id)
    }
}

/// RFC 7983 demultiplexing: whether a datagram on a media port is STUN (first byte 0-3, magic
/// cookie present). Cheap enough to call on every packet before RTP handling.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0] < 4
        && u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) == MAGIC_COOKIE
}

/// A borrowed, structurally validated STUN message with the positions of the attributes XCC uses.
///
/// Only the first occurrence of each attribute counts (RFC 8489 §14); attributes after
/// MESSAGE-INTEGRITY other than FINGERPRINT are ignored, as the RFC requires, because they are not
/// covered by the integrity check.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The whole message (header + attributes), exactly the length the header declares.
    bytes: &'a [u8],
    /// Class and method bits.
    msg_type: u16,
    /// Offset (in `bytes`) of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset of the FINGERPRINT attribute header.
    fingerprint: Option<usize>,
    /// USERNAME value.
    username: Option<&'a [u8]>,
    /// XOR-MAPPED-ADDRESS value.
    xor_mapped: Option<&'a [u8]>,
    /// MAPPED-ADDRESS value.
    mapped: Option<&'a [u8]>,
    /// OTHER-ADDRESS value.
    other_address: Option<&'a [u8]>,
    /// RESPONSE-ORIGIN value.
    response_origin: Option<&'a [u8]>,
    /// ERROR-CODE value.
    error_code: Option<&'a [u8]>,
    /// REALM value.
    realm: Option<&'a [u8]>,
    /// NONCE value.
    nonce: Option<&'a [u8]>,
    /// XOR-RELAYED-ADDRESS value.
    xor_relayed: Option<&'a [u8]>,
    /// XOR-PEER-ADDRESS value.
    xor_peer: Option<&'a [u8]>,
    /// DATA value.
    data: Option<&'a [u8]>,
    /// LIFETIME in seconds.
    lifetime: Option<u32>,
    /// PRIORITY value.
    priority: Option<u32>,
    /// USE-CANDIDATE present.
    use_candidate: bool,
    /// ICE-CONTROLLING tie-breaker.
    ice_controlling: Option<u64>,
    /// ICE-CONTROLLED tie-breaker.
    ice_controlled: Option<u64>,
}

impl<'a> Message<'a> {
    /// Validates the header and every attribute's framing. Trailing bytes after the declared
    /// length are refused (a STUN datagram carries exactly one message).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StunError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunError::TooShort { len: bytes.len() });
        }
        if !is_stun(bytes) {
            return Err(StunError::NotStun);
        }
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if declared % 4 != 0 || HEADER_LEN + declared != bytes.len() {
            return Err(StunError::BadLength {
                declared,
                len: bytes.len(),
            });
        }
        let mut msg = Message {
            bytes,
            msg_type: u16::from_be_bytes([bytes[0], bytes[1]]),
            integrity: None,
            fingerprint: None,
            username: None,
            xor_mapped: None,
            mapped: None,
            other_address: None,
            response_origin: None,
            error_code: None,
            realm: None,
            nonce: None,
            xor_relayed: None,
            xor_peer: None,
            data: None,
            lifetime: None,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
        };
        let mut pos = HEADER_LEN;
        while pos < bytes.len() {
            if msg.fingerprint.is_some() {
                return Err(StunError::AfterFingerprint);
            }
            // The loop condition and 4-byte alignment leave at least 4 bytes for the TLV header.
            let attr_type = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            let start = pos + 4;
            let end = start + len;
            let padded = start + len.div_ceil(4) * 4;
            if padded > bytes.len() {
                return Err(StunError::TruncatedAttribute { attr_type });
            }
            let value = &bytes[start..end];
            if attr_type == attr::FINGERPRINT {
                if len != 4 {
                    return Err(StunError::BadAttributeLength { attr_type, len });
                }
                msg.fingerprint = Some(pos);
            } else if msg.integrity.is_some() {
                // Not covered by MESSAGE-INTEGRITY: ignored (RFC 8489 §14.5).
            } else {
                msg.record(attr_type, value, pos)?;
            }
            pos = padded;
        }
        Ok(msg)
    }

    /// Remembers the first occurrence of an attribute XCC understands.
    fn record(&mut self, attr_type: u16, value: &'a [u8], pos: usize) -> Result<(), StunError> {
        let len = value.len();
        match attr_type {
            attr::MESSAGE_INTEGRITY => {
                if len != INTEGRITY_LEN {
                    return Err(StunError::BadAttributeLength { attr_type, len });
                }
                self.integrity = Some(pos);
            }
            attr::USERNAME => {
                self.username.get_or_insert(value);
            }
            attr::XOR_MAPPED_ADDRESS => {
                self.xor_mapped.get_or_insert(value);
            }
            attr::MAPPED_ADDRESS => {
                self.mapped.get_or_insert(value);
            }
            attr::OTHER_ADDRESS => {
                self.other_address.get_or_insert(value);
            }
            attr::RESPONSE_ORIGIN => {
                self.response_origin.get_or_insert(value);
            }
            attr::ERROR_CODE => {
                self.error_code.get_or_insert(value);
            }
            attr::PRIORITY => {
                if let Ok(v) = <[u8; 4]>::try_from(value) {
                    self.priority.get_or_insert(u32::from_be_bytes(v));
                }
            }
            attr::REALM => {
                self.realm.get_or_insert(value);
            }
            attr::NONCE => {
                self.nonce.get_or_insert(value);
            }
            attr::XOR_RELAYED_ADDRESS => {
                self.xor_relayed.get_or_insert(value);
            }
            attr::XOR_PEER_ADDRESS => {
                self.xor_peer.get_or_insert(value);
            }
            attr::DATA => {
                self.data.get_or_insert(value);
            }
            attr::LIFETIME => {
                if let Ok(v) = <[u8; 4]>::try_from(value) {
                    self.lifetime.get_or_insert(u32::from_be_bytes(v));
                }
            }
            attr::USE_CANDIDATE => self.use_candidate = true,
            attr::ICE_CONTROLLING => {
                if let Ok(v) = <[u8; 8]>::try_from(value) {
                    self.ice_controlling.get_or_insert(u64::from_be_bytes(v));
                }
            }
            attr::ICE_CONTROLLED => {
                if let Ok(v) = <[u8; 8]>::try_from(value) {
                    self.ice_controlled.get_or_insert(u64::from_be_bytes(v));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Class and method (e.g. [`BINDING_REQUEST`]).
    pub fn msg_type(&self) -> u16 {
        self.msg_type
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.bytes[8..20]);
        TransactionId(id)
    }

    /// The message length on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a parsed message has at least its header. Present for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// USERNAME as raw bytes (compared byte-wise; ICE ufrags are ASCII).
    pub fn username(&self) -> Option<&'a [u8]> {
        self.username
    }

    /// Whether MESSAGE-INTEGRITY is present (checked with [`Message::verify_integrity`]).
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether FINGERPRINT is present (checked with [`Message::verify_fingerprint`]).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// XOR-MAPPED-ADDRESS, decoded.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.xor_mapped
            .and_then(|v| decode_address(v, Some(&self.bytes[8..20])))
    }

    /// MAPPED-ADDRESS, decoded (old servers).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped.and_then(|v| decode_address(v, None))
    }

    /// OTHER-ADDRESS (RFC 5780), decoded.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.other_address.and_then(|v| decode_address(v, None))
    }

    /// RESPONSE-ORIGIN (RFC 5780), decoded.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.response_origin.and_then(|v| decode_address(v, None))
    }

    /// ERROR-CODE as a number (e.g. 401, 487).
    pub fn error_code(&self) -> Option<u16> {
        let v = self.error_code?;
        if v.len() < 4 {
            return None;
        }
        Some(u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
    }

    /// REALM (long-term credentials).
    pub fn realm(&self) -> Option<&'a [u8]> {
        self.realm
    }

    /// NONCE (long-term credentials).
    pub fn nonce(&self) -> Option<&'a [u8]> {
        self.nonce
    }

    /// XOR-RELAYED-ADDRESS (TURN), decoded.
    pub fn xor_relayed_address(&self) -> Option<SocketAddr> {
        self.xor_relayed
            .and_then(|v| decode_address(v, Some(&self.bytes[8..20])))
    }

    /// XOR-PEER-ADDRESS (TURN), decoded.
    pub fn xor_peer_address(&self) -> Option<SocketAddr> {
        self.xor_peer
            .and_then(|v| decode_address(v, Some(&self.bytes[8..20])))
    }

    /// DATA (TURN), borrowed from the datagram.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.data
    }

    /// LIFETIME (TURN) in seconds.
    pub fn lifetime(&self) -> Option<u32> {
        self.lifetime
    }

    /// PRIORITY.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// USE-CANDIDATE present.
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// ICE-CONTROLLING tie-breaker.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.ice_controlling
    }

    /// ICE-CONTROLLED tie-breaker.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.ice_controlled
    }

    /// Checks MESSAGE-INTEGRITY with `key` (for short-term credentials, the password itself;
    /// RFC 8489 §9.1.1). Constant-time comparison; false when the attribute is absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(pos) = self.integrity else {
            return false;
        };
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        // Length as if MESSAGE-INTEGRITY were the last attribute (RFC 8489 §14.5). `pos + 24` is
        // within the 16-bit length field because the whole message is.
        let covered = (pos + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&covered.to_be_bytes());
        let mut mac = hmac_sha1(key);
        mac.update(&header);
        mac.update(&self.bytes[HEADER_LEN..pos]);
        let expected = mac.finalize().into_bytes();
        let got = &self.bytes[pos + 4..pos + 4 + INTEGRITY_LEN];
        bool::from(expected.as_slice().ct_eq(got))
    }

    /// Checks FINGERPRINT; false when absent.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(pos) = self.fingerprint else {
            return false;
        };
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        // FINGERPRINT is last, so the header length already covers it.
        let mut crc = Crc32::new();
        crc.update(&header);
        crc.update(&self.bytes[HEADER_LEN..pos]);
        let expected = crc.finish() ^ FINGERPRINT_XOR;
        let got = &self.bytes[pos + 4..pos + 8];
        expected.to_be_bytes() == got
    }
}

/// HMAC-SHA1 keyed with `key`; HMAC accepts keys of every length, so this cannot fail.
fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC pads or hashes any key length: `new_from_slice` never errs for it.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Decodes a (XOR-)MAPPED-ADDRESS style value; `xor_id` is the transaction id when XORed.
fn decode_address(value: &[u8], xor_id: Option<&[u8]>) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor_id.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match (value[1], value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&value[4..8]);
            if xor_id.is_some() {
                for (b, k) in ip.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            if let Some(id) = xor_id {
                let key = cookie.iter().chain(id.iter());
                for (b, k) in ip.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encodes one STUN message into a caller buffer, attribute by attribute, without allocating.
///
/// Call [`Writer::integrity`] and then [`Writer::fingerprint`] last, in that order, as RFC 8489
/// requires; [`Writer::finish`] returns the length written.
pub struct Writer<'b> {
    /// The caller's buffer.
    buf: &'b mut [u8],
    /// Bytes written so far.
    len: usize,
}

impl<'b> Writer<'b> {
    /// Starts a message of `msg_type` with transaction id `id`.
    pub fn new(buf: &'b mut [u8], msg_type: u16, id: TransactionId) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::BufferTooSmall {
                capacity: buf.len(),
            });
        }
        buf[0..2].copy_from_slice(&msg_type.to_be_bytes());
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(&id.0);
        let mut w = Writer {
            buf,
            len: HEADER_LEN,
        };
        w.set_length();
        Ok(w)
    }

    /// Writes the header's length field for what has been written so far.
    fn set_length(&mut self) {
        // `reserve` refuses any attribute that would take the body past u16::MAX.
        let body = (self.len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }

    /// Reserves an attribute of `value_len` bytes (plus padding) and returns its value slice.
    fn reserve(&mut self, attr_type: u16, value_len: usize) -> Result<&mut [u8], StunError> {
        let padded = value_len.div_ceil(4) * 4;
        let end = self.len + 4 + padded;
        if end > self.buf.len() || end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(StunError::BufferTooSmall {
                capacity: self.buf.len(),
            });
        }
        let start = self.len;
        self.buf[start..start + 2].copy_from_slice(&attr_type.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(value_len as u16).to_be_bytes());
        self.buf[start + 4 + value_len..end].fill(0);
        self.len = end;
        self.set_length();
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    /// Appends an attribute with a raw value.
    pub fn attribute(&mut self, attr_type: u16, value: &[u8]) -> Result<(), StunError> {
        self.reserve(attr_type, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends XOR-MAPPED-ADDRESS for `addr`.
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), StunError> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS, addr)
    }

    /// Appends an XOR-encoded address attribute (XOR-MAPPED, XOR-PEER, XOR-RELAYED-ADDRESS).
    pub fn xor_address(&mut self, attr_type: u16, addr: SocketAddr) -> Result<(), StunError> {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..20]);
        let cookie = MAGIC_COOKIE.to_be_bytes();
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        match addr.ip() {
            IpAddr::V4(ip) => {
                let v = self.reserve(attr_type, 8)?;
                v[0] = 0;
                v[1] = 0x01;
                v[2..4].copy_from_slice(&port.to_be_bytes());
                for (i, (b, k)) in ip.octets().iter().zip(cookie).enumerate() {
                    v[4 + i] = b ^ k;
                }
            }
            IpAddr::V6(ip) => {
                let v = self.reserve(attr_type, 20)?;
                v[0] = 0;
                v[1] = 0x02;
                v[2..4].copy_from_slice(&port.to_be_bytes());
                let key = cookie.iter().chain(id.iter());
                for (i, (b, k)) in ip.octets().iter().zip(key).enumerate() {
                    v[4 + i] = b ^ k;
                }
            }
        }
        Ok(())
    }

    /// Appends ERROR-CODE with an RFC 8489 reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), StunError> {
        let v = self.reserve(attr::ERROR_CODE, 4 + reason.len())?;
        v[0] = 0;
        v[1] = 0;
        v[2] = (code / 100) as u8;
        v[3] = (code % 100) as u8;
        v[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` over everything written so far.
    pub fn integrity(&mut self, key: &[u8]) -> Result<(), StunError> {
        let start = self.len;
        self.reserve(attr::MESSAGE_INTEGRITY, INTEGRITY_LEN)?;
        let mut mac = hmac_sha1(key);
        mac.update(&self.buf[..start]);
        let tag = mac.finalize().into_bytes();
        self.buf[start + 4..start + 4 + INTEGRITY_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// Appends FINGERPRINT over everything written so far; must be the last attribute.
    pub fn fingerprint(&mut self) -> Result<(), StunError> {
        let start = self.len;
        self.reserve(attr::FINGERPRINT, 4)?;
        let mut crc = Crc32::new();
        crc.update(&self.buf[..start]);
        let value = crc.finish() ^ FINGERPRINT_XOR;
        self.buf[start + 4..start + 8].copy_from_slice(&value.to_be_bytes());
        Ok(())
    }

    /// Length of the encoded message.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// CRC-32 (ISO-HDLC, the zlib polynomial) as FINGERPRINT needs, table-driven.
struct Crc32(u32);

/// Byte-wise lookup table of the reflected polynomial 0xEDB88320, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1 sample request (short-term credentials).
    pub(crate) const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// RFC 5769 §2.2 sample IPv4 response.
    const RFC5769_RESPONSE_V4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 §2.3 sample IPv6 response.
    const RFC5769_RESPONSE_V6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn rfc5769_request_verifies() {
        let msg = Message::parse(&RFC5769_REQUEST).expect("vector parses");
        assert_eq!(msg.msg_type(), BINDING_REQUEST);
        assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(msg.priority(), Some(0x6e0001ff));
        assert_eq!(msg.ice_controlled(), Some(0x932ff9b151263b36));
        assert!(msg.verify_fingerprint());
        assert!(msg.verify_integrity(RFC5769_PASSWORD));
        assert!(!msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    }

    #[test]
    fn rfc5769_responses_decode_addresses() {
        let v4 = Message::parse(&RFC5769_RESPONSE_V4).expect("vector parses");
        assert!(v4.verify_fingerprint() && v4.verify_integrity(RFC5769_PASSWORD));
        assert_eq!(
            v4.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        let v6 = Message::parse(&RFC5769_RESPONSE_V6).expect("vector parses");
        assert!(v6.verify_fingerprint() && v6.verify_integrity(RFC5769_PASSWORD));
        assert_eq!(
            v6.xor_mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
    }

    #[test]
    fn tampered_byte_fails_integrity_and_fingerprint() {
        let mut bytes = RFC5769_REQUEST;
        bytes[30] ^= 1; // inside SOFTWARE
        let msg = Message::parse(&bytes).expect("still well framed");
        assert!(!msg.verify_integrity(RFC5769_PASSWORD));
        assert!(!msg.verify_fingerprint());
    }

    #[test]
    fn writer_reproduces_rfc5769_v4_response() {
        let mut buf = [0u8; 128];
        let id = Message::parse(&RFC5769_RESPONSE_V4)
            .unwrap()
            .transaction_id();
        let mut w = Writer::new(&mut buf, BINDING_SUCCESS, id).unwrap();
        w.attribute(attr::SOFTWARE, b"test vector").unwrap();
        w.xor_mapped_address("192.0.2.1:32853".parse().unwrap())
            .unwrap();
        w.integrity(RFC5769_PASSWORD).unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        // The RFC pads SOFTWARE with 0x20; this writer pads with zeros, as RFC 8489 recommends,
        // so compare everything but that pad byte and the two checksums it changes.
        assert_eq!(len, RFC5769_RESPONSE_V4.len());
        assert_eq!(buf[..35], RFC5769_RESPONSE_V4[..35]);
        assert_eq!(buf[36..52], RFC5769_RESPONSE_V4[36..52]);
        let msg = Message::parse(&buf[..len]).unwrap();
        assert!(msg.verify_integrity(RFC5769_PASSWORD) && msg.verify_fingerprint());
    }

    #[test]
    fn garbage_of_every_length_is_refused_without_panic() {
        let mut bytes = [0u8; 200];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        for len in 0..bytes.len() {
            assert!(Message::parse(&bytes[..len]).is_err());
            // Every prefix of a valid request is refused as well.
            if len < RFC5769_REQUEST.len() {
                assert!(Message::parse(&RFC5769_REQUEST[..len]).is_err());
            }
        }
    }

    #[test]
    fn attribute_length_past_the_end_is_refused() {
        let mut bytes = RFC5769_REQUEST;
        bytes[22..24].copy_from_slice(&0x0100u16.to_be_bytes()); // SOFTWARE claims 256 bytes
        assert_eq!(
            Message::parse(&bytes).unwrap_err(),
            StunError::TruncatedAttribute {
                attr_type: attr::SOFTWARE
            }
        );
    }
}
