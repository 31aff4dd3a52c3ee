//! SDES (RFC 4568) `a=crypto` attributes: parsing what phones send, generating XCC's own.
