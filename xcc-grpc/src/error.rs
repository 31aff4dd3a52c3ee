//! The control plane's one error type and its single mapping onto `tonic::Status`.

use xcc_core::ids::CallId;

/// Why a control request failed, structured so [`tonic::Status`] codes are chosen in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; `field` is the proto field name.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Proto field name, e.g. `sdp` or `offer_from`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No session or call with this id.
    #[error("{field}: no call {call}")]
    NotFound {
        /// Proto field that carried the id.
        field: &'static str,
        /// The id asked for.
        call: CallId,
    },
    /// XCC is draining and takes no new sessions.
    #[error("draining: XCC accepts no new sessions (send Resume to undo)")]
    Draining,
    /// The session is not in a state that accepts this request.
    #[error("session {call}: {reason}")]
    WrongState {
        /// The session.
        call: CallId,
        /// What state it is in and what it expected.
        reason: &'static str,
    },
    /// The media plane refused; `field` names the request field whose content led there, if any.
    #[error("{}{source}", field.map(|f| format!("{f}: ")).unwrap_or_default())]
    Media {
        /// Request field at fault (`sdp` for SDP/crypto errors), `None` for server-side failures.
        field: Option<&'static str>,
        /// The media-plane error.
        #[source]
        source: xcc_core::Error,
    },
    /// The operation is not available in this process's configuration (e.g. the log level is
    /// pinned by `RUST_LOG`).
    #[error("{reason}")]
    Unavailable {
        /// Why, for the operator.
        reason: &'static str,
    },
    /// An exit-when-idle drain (or SIGTERM) is under way: it cannot be undone by Resume.
    #[error("xccd is stopping once its calls end (drain with exit); Resume cannot undo that")]
    Exiting,
    /// A configuration reload was refused (invalid file, unreadable file, a value that cannot be
    /// applied live); the running configuration stays. The reason names the key.
    #[error("reload refused, running configuration kept: {reason}")]
    ReloadRefused {
        /// Why, naming the key or the file.
        reason: String,
    },
    /// This process has no reload wiring (an embedded control plane without a configuration file).
    #[error("reload is not available in this process")]
    ReloadUnavailable,
    /// The gRPC transport failed (TLS material rejected, listener error).
    #[error("control transport: {source}")]
    Transport {
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The compiled-in descriptor set was refused by reflection: a build defect.
    #[error("reflection descriptors: {source}")]
    Reflection {
        /// tonic-reflection's error.
        #[source]
        source: tonic_reflection::server::Error,
    },
}

impl Error {
    /// A media-plane error caused by the request field `field` (an SDP it could not use).
    pub fn in_field(field: &'static str, source: xcc_core::Error) -> Self {
        Error::Media {
            field: Some(field),
            source,
        }
    }
}

impl Error {
    /// A media-plane error about the call the request field `field` named: an unknown call becomes
    /// NOT_FOUND naming that field, anything else stays a server-side media error.
    pub fn about_call(field: &'static str, call: CallId, source: xcc_core::Error) -> Self {
        match source {
            xcc_core::Error::UnknownCall(_) => Error::NotFound { field, call },
            source => Error::Media {
                field: None,
                source,
            },
        }
    }
}

impl From<xcc_core::Error> for Error {
    fn from(source: xcc_core::Error) -> Self {
        Error::Media {
            field: None,
            source,
        }
    }
}

/// Result alias for the control plane.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place where XCC errors become gRPC status codes.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        use xcc_core::Error as Core;
        let code = match &e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::Draining
            | Error::Exiting
            | Error::WrongState { .. }
            | Error::Unavailable { .. }
            | Error::ReloadRefused { .. } => Code::FailedPrecondition,
            Error::ReloadUnavailable => Code::Unimplemented,
            Error::Transport { .. } | Error::Reflection { .. } => Code::Internal,
            Error::Media { source, field } => match source {
                Core::PoolExhausted { .. } => Code::ResourceExhausted,
                Core::UnknownCall(_) => Code::NotFound,
                Core::Stopped => Code::Unavailable,
                // No TURN allocation ready yet (server unreachable, credentials refused, a burst
                // beyond the spares): transient, the client retries later or elsewhere.
                Core::RelayUnavailable { .. } => Code::Unavailable,
                // Anything else the media plane refused because of request content (SDP, a=crypto).
                _ if field.is_some() => Code::InvalidArgument,
                _ => Code::Internal,
            },
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "control request failed");
        }
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn pool_exhausted_is_resource_exhausted() {
        let s: tonic::Status =
            Error::from(xcc_core::Error::PoolExhausted { free: 0, needed: 4 }).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }

    #[test]
    fn bad_sdp_is_invalid_argument_naming_the_field() {
        let s: tonic::Status = Error::in_field(
            "sdp",
            xcc_core::Error::KeyLength {
                suite: "AES_CM_128_HMAC_SHA1_80",
                expected: 30,
                got: 3,
            },
        )
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("sdp: "), "{}", s.message());
    }

    #[test]
    fn draining_is_failed_precondition() {
        let s: tonic::Status = Error::Draining.into();
        assert_eq!(s.code(), Code::FailedPrecondition);
    }

    #[test]
    fn unknown_call_is_not_found_naming_the_field() {
        let s: tonic::Status = Error::NotFound {
            field: "call_id",
            call: CallId(7),
        }
        .into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("call_id"));
        let s: tonic::Status = Error::from(xcc_core::Error::UnknownCall(CallId(7))).into();
        assert_eq!(s.code(), Code::NotFound);
    }

    #[test]
    fn relay_unavailable_is_unavailable_naming_the_server() {
        let s: tonic::Status = Error::from(xcc_core::Error::RelayUnavailable {
            server: "198.51.100.7:3478".parse().unwrap(),
            reason: "allocations still being made".into(),
        })
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("198.51.100.7:3478"), "{}", s.message());
    }
}
