//! The systemd notification protocol (sd_notify(3)), spoken directly: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET`. No libsystemd.

use std::os::unix::net::UnixDatagram;

/// Where notifications go, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifier {
    /// Not started by systemd (or a test that does not listen): notifications are dropped.
    Disabled,
    /// Filesystem socket path.
    Path(std::path::PathBuf),
    /// Linux abstract socket (`@name` in the variable).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the value of `NOTIFY_SOCKET` (`None` when unset or empty).
    pub fn from_env_value(value: Option<std::ffi::OsString>) -> Self {
        use std::os::unix::ffi::OsStrExt;
        match value {
            None => Notifier::Disabled,
            Some(v) if v.is_empty() => Notifier::Disabled,
            Some(v) => match v.as_bytes().strip_prefix(b"@") {
                Some(name) => Notifier::Abstract(name.to_vec()),
                None => Notifier::Path(v.into()),
            },
        }
    }

    /// Reads `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Self::from_env_value(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`). Returns false when disabled.
    pub fn notify(&self, state: &str) -> std::io::Result<bool> {
        let sock = match self {
            Notifier::Disabled => return Ok(false),
            _ => UnixDatagram::unbound()?,
        };
        match self {
            Notifier::Disabled => return Ok(false),
            Notifier::Path(path) => sock.send_to(state.as_bytes(), path)?,
            Notifier::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        Ok(true)
    }

    /// Like [`Notifier::notify`] but only logs failures: a missing systemd must not stop XCC.
    pub fn notify_or_log(&self, state: &str) {
        match self.notify(state) {
            Ok(true) => tracing::debug!(state, "sd_notify sent"),
            Ok(false) => {}
            Err(e) => tracing::warn!(state, error = %e, "sd_notify failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_is_disabled() {
        assert_eq!(Notifier::from_env_value(None), Notifier::Disabled);
        assert_eq!(
            Notifier::from_env_value(Some("".into())),
            Notifier::Disabled
        );
        assert!(!Notifier::Disabled.notify("READY=1").unwrap());
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("xcc-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_env_value(Some(path.clone().into()));
        assert!(n.notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("xcc-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_env_value(Some(format!("@{name}").into()));
        assert!(n.notify("STOPPING=1").unwrap());
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }
}
