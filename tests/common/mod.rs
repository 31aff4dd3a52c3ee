//! The harness every end-to-end test shares: a real xccd process on its own control port, media
//! pool and directory, ready when it says READY=1 on an sd_notify socket.
//!
//! Each test binary uses a subset, hence `allow(dead_code)`.
#![allow(dead_code)]

pub mod call;
pub mod coturn;
pub mod phone;
pub mod sipp;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long xccd may take to say READY=1 (a debug build on a loaded 2-core machine).
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// What a test's xccd looks like. Pools sit below the kernel's ephemeral range (32768-60999), so
/// no test's own socket can hold one of their ports; each test file owns a port range (see
/// README "Tests").
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Names the directory, so a failed test's files are easy to find.
    pub name: String,
    /// First media port (even).
    pub pool_min: u16,
    /// Number of media ports.
    pub pool_len: u16,
    /// Extra `[media]` keys, one `key = value` per line, each ending in a newline.
    pub media_extra: String,
    /// Extra `[control]` keys.
    pub control_extra: String,
    /// Extra `[nat]` keys.
    pub nat_extra: String,
    /// Drain grace period.
    pub grace_secs: u64,
    /// `[log] level`.
    pub log_level: String,
    /// Whole further sections appended verbatim (e.g. a `[sip]` table).
    pub sections: String,
    /// `[media] bind_address` (default 127.0.0.1).
    pub bind_address: String,
    /// `[nat] public_address`; `None` leaves it out (then `[stun]` or the fallback decide).
    pub public_address: Option<String>,
    /// `[nat] pbx_address`.
    pub pbx_address: String,
    /// Network namespace (by `ip netns` name) xccd runs in; `None`: the test's own. The control
    /// port is then on that namespace's loopback, reachable only from a thread inside it.
    pub netns: Option<String>,
    /// `[metrics] listen`; `""` (the default here) disables the endpoint so concurrent daemons
    /// never compete for one port.
    pub metrics_listen: String,
}

impl DaemonConfig {
    /// Loopback everything, one worker, quarantine 1 s, debug logs.
    pub fn new(name: &str, pool_min: u16, pool_len: u16) -> Self {
        DaemonConfig {
            name: name.to_owned(),
            pool_min,
            pool_len,
            media_extra: String::new(),
            control_extra: String::new(),
            nat_extra: String::new(),
            grace_secs: 30,
            log_level: "debug".to_owned(),
            sections: String::new(),
            bind_address: "127.0.0.1".to_owned(),
            public_address: Some("127.0.0.1".to_owned()),
            pbx_address: "127.0.0.1".to_owned(),
            netns: None,
            metrics_listen: String::new(),
        }
    }

    /// The TOML for this config with the control port `control`.
    pub fn toml(&self, control: std::net::SocketAddr) -> String {
        format!(
            "[media]\n{}bind_address = \"{}\"\nport_min = {}\nport_max = {}\nquarantine_secs = 1\n\
             workers = 1\n\n[control]\n{}listen = \"{control}\"\ndrain_grace_secs = {}\n\n\
             [nat]\n{}{}pbx_address = \"{}\"\n\n[log]\nlevel = \"{}\"\n\n\
             [metrics]\nlisten = \"{}\"\n\n{}",
            self.media_extra,
            self.bind_address,
            self.pool_min,
            self.pool_min + self.pool_len - 1,
            self.control_extra,
            self.grace_secs,
            self.nat_extra,
            self.public_address
                .as_ref()
                .map(|a| format!("public_address = \"{a}\"\n"))
                .unwrap_or_default(),
            self.pbx_address,
            self.log_level,
            self.metrics_listen,
            self.sections,
        )
    }
}

/// A running xccd, killed on drop if a test fails before it exits. Its directory (config, log,
/// notify socket, state) is removed on drop unless the test is panicking.
pub struct Daemon {
    child: Option<Child>,
    /// `http://ADDR` of the gRPC control port.
    pub endpoint: String,
    /// The control port's address.
    pub control: std::net::SocketAddr,
    /// The daemon's directory: `xcc.toml`, `stderr.log`, `notify.sock`.
    pub dir: PathBuf,
    notify: UnixDatagram,
    netns: Option<String>,
}

impl Daemon {
    /// Starts xccd with media ports `pool_min..pool_min + pool_len` and waits for READY=1.
    pub fn start(name: &str, pool_min: u16, pool_len: u16) -> Daemon {
        Self::start_config(&DaemonConfig::new(name, pool_min, pool_len))
    }

    /// Starts xccd from `cfg` in a fresh directory and waits for READY=1.
    pub fn start_config(cfg: &DaemonConfig) -> Daemon {
        let dir = std::env::temp_dir().join(format!("xcc-e2e-{}-{}", cfg.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let control = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut text = cfg.toml(control);
        if !cfg.sections.contains("[state]") {
            // Never the system's /var/lib/xcc: each daemon keeps its calls in its own directory.
            text.push_str(&format!(
                "\n[state]\ndir = \"{}\"\n",
                dir.join("state").display()
            ));
        }
        std::fs::write(dir.join("xcc.toml"), text).unwrap();
        Self::spawn_in(dir, control, cfg.netns.clone())
    }

    /// Starts xccd again in this daemon's directory with the same config (after it exited or was
    /// killed): the way systemd restarts it.
    pub fn restart(mut self) -> Daemon {
        self.restart_in_place();
        self
    }

    /// [`Daemon::restart`] for a daemon held in a field (a test's world): the new process takes
    /// this one's place.
    pub fn restart_in_place(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let fresh = Self::spawn_in(self.dir.clone(), self.control, self.netns.clone());
        let mut old = std::mem::replace(self, fresh);
        // The directory is the new process's now: the old handle's drop must not remove it.
        old.dir = PathBuf::new();
    }

    fn spawn_in(dir: PathBuf, control: std::net::SocketAddr, netns: Option<String>) -> Daemon {
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        // `ip netns exec` execs xccd in place: the child's pid is xccd's.
        let mut command = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_xccd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_xccd")),
        };
        let child = command
            .arg("--config")
            .arg(dir.join("xcc.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            endpoint: format!("http://{control}"),
            control,
            dir,
            notify,
            netns,
        };
        let ready = d.next_notification(READY_WITHIN);
        assert!(
            ready.starts_with("READY=1"),
            "first notification was {ready:?}"
        );
        d
    }

    /// The call store's directory (`[state] dir`): one `<call>.call` file per stored call.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("state").join("calls")
    }

    /// The JSON body of stored call `call` (`<store>/<call>.call` after its header line), once
    /// a complete record is in place.
    pub fn stored_call(&self, call: u64) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.store_dir().join(format!("{call}.call"))).ok()?;
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        serde_json::from_slice(&bytes[nl + 1..]).ok()
    }

    /// The config file, for tests that edit it and reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("xcc.toml")
    }

    /// The next sd_notify datagram; fails the test (with xccd's log) if none arrives in time or
    /// xccd exits first.
    pub fn next_notification(&mut self, within: Duration) -> String {
        self.notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 512];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(len) => return String::from_utf8_lossy(&buf[..len]).into_owned(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "xccd exited with {status} before notifying; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no sd_notify within {within:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// Everything xccd wrote to stderr (all runs in this directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`; fails with the log otherwise.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A gRPC channel to the control port.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to xccd.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own unreaped child.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// Whether xccd is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL and reap: a crash, as far as xccd's state is concerned.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits (bounded) for xccd to exit, on a thread so the wait is an event, not a poll.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait()));
        match rx.recv_timeout(within) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // SAFETY: kill(2) on our own child, still unreaped (its waiter thread holds it).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("xccd did not exit within {within:?}; log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() && self.dir != Path::new("") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Skips a test whose tools or privileges are missing, saying why; under CI (`CI` set, as
/// `.ci/run` is run) a skip is a failure, because CI installs everything the tests need.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// One set of gRPC clients on the daemon's control channel, as the controlling server holds them.
pub struct Clients {
    pub sessions: xcc_grpc::pb::sessions_client::SessionsClient<tonic::transport::Channel>,
    pub calls: xcc_grpc::pb::calls_client::CallsClient<tonic::transport::Channel>,
    pub satellite: xcc_grpc::pb::satellite_client::SatelliteClient<tonic::transport::Channel>,
    pub health: tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
}

/// Connects [`Clients`] to `d`'s control port.
pub async fn clients(d: &Daemon) -> Clients {
    let ch = d.channel().await;
    Clients {
        sessions: xcc_grpc::pb::sessions_client::SessionsClient::new(ch.clone()),
        calls: xcc_grpc::pb::calls_client::CallsClient::new(ch.clone()),
        satellite: xcc_grpc::pb::satellite_client::SatelliteClient::new(ch.clone()),
        health: tonic_health::pb::health_client::HealthClient::new(ch),
    }
}

/// Runs xccctl (this build's binary) with `args` and returns what it did.
pub fn xccctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .args(args)
        .output()
        .expect("run xccctl")
}

/// xccctl's `--json` output; fails the test with both streams when it is not JSON.
pub fn stdout_json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}
