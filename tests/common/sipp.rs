//! SIPp (Debian's `sip-tester`) as a test peer: one bounded run of one scenario from
//! `tests/sipp/`, bound to an explicit loopback address, with its statistics and per-message
//! counts parsed after it exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Whether `sipp` is installed; tests call [`super::skip`] when it is not.
pub fn available() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The path of a scenario under `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// One SIPp invocation.
#[derive(Debug, Clone)]
pub struct Sipp {
    /// Scenario file name under `tests/sipp/`.
    pub scenario: String,
    /// SIPp's own SIP address (`-i`, `-p`).
    pub local: SocketAddr,
    /// Where a UAC sends (`remote_host:port`); `None` for a UAS.
    pub remote: Option<SocketAddr>,
    /// `-mp`: SIPp's media port.
    pub media_port: u16,
    /// `-cp`: SIPp's control port (UDP), in the test's range.
    pub control_port: u16,
    /// `-m`: calls before exiting.
    pub calls: u32,
    /// `-timeout` in seconds, with `-timeout_error`: a hung run fails instead of hanging.
    pub timeout_secs: u32,
    /// `-key name value` pairs, for `[name]` in the scenario.
    pub keys: Vec<(String, String)>,
    /// Further arguments (`-d`, `-r`, `-rtp_echo`, `-t t1`...).
    pub args: Vec<String>,
}

impl Sipp {
    /// A run of `scenario` at `local`, one call, 30 s bound.
    pub fn new(scenario: &str, local: SocketAddr, media_port: u16, control_port: u16) -> Self {
        Sipp {
            scenario: scenario.to_owned(),
            local,
            remote: None,
            media_port,
            control_port,
            calls: 1,
            timeout_secs: 30,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Sets a `-key`.
    pub fn key(mut self, name: &str, value: impl ToString) -> Self {
        self.keys.push((name.to_owned(), value.to_string()));
        self
    }

    /// Adds raw arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    /// Starts SIPp with its files in `dir` (created).
    pub fn spawn(&self, dir: &Path) -> Running {
        let dir = dir.join(self.scenario.trim_end_matches(".xml"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sipp");
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        cmd.arg("-sf")
            .arg(scenario(&self.scenario))
            .args(["-i", &self.local.ip().to_string()])
            .args(["-p", &self.local.port().to_string()])
            .args(["-mi", &self.local.ip().to_string()])
            .args(["-mp", &self.media_port.to_string()])
            .args(["-cp", &self.control_port.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout_secs)])
            .arg("-timeout_error")
            .arg("-nostdin")
            .args(["-trace_stat", "-stf"])
            .arg(dir.join("stat.csv"))
            .args(["-fd", "1"])
            .arg("-trace_counts")
            .arg("-trace_msg")
            .args(["-message_file"])
            .arg(dir.join("messages.log"))
            .arg("-trace_err")
            .args(["-error_file"])
            .arg(dir.join("errors.log"))
            .arg("-trace_logs")
            .args(["-log_file"])
            .arg(dir.join("logs.log"));
        for (k, v) in &self.keys {
            cmd.args(["-key", k, v]);
        }
        cmd.args(&self.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout.log")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ));
        let child = cmd.spawn().expect("spawn sipp");
        Running {
            child: Some(child),
            dir,
            timeout: Duration::from_secs(u64::from(self.timeout_secs) + 10),
        }
    }
}

/// A SIPp process; killed on drop.
pub struct Running {
    child: Option<Child>,
    /// Its files: stat.csv, *_counts.csv, messages.log, errors.log, logs.log.
    pub dir: PathBuf,
    timeout: Duration,
}

/// What a finished run reported.
#[derive(Debug)]
pub struct Outcome {
    /// SIPp's exit status (0: every call succeeded).
    pub status: ExitStatus,
    /// The last row of the statistics file, by column name.
    pub stats: HashMap<String, String>,
    /// The last row of the per-message counts file, by column name.
    pub counts: HashMap<String, String>,
    /// The run's files.
    pub dir: PathBuf,
}

impl Outcome {
    /// A cumulative statistic (`SuccessfulCall(C)`, `FailedCall(C)`...), 0 when absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The message log, for failure messages.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.join("messages.log")).unwrap_or_default()
    }

    /// What SIPp's `<log>` actions wrote.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs.log")).unwrap_or_default()
    }

    /// Everything useful for a failed assertion.
    pub fn report(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "status {:?}\nstats {:?}\ncounts {:?}\nerrors:\n{}\nstderr:\n{}\nmessages:\n{}",
            self.status,
            self.stats,
            self.counts,
            read("errors.log"),
            read("stderr.log"),
            self.messages()
        )
    }
}

impl Running {
    /// Whether SIPp is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits (bounded by the run's own timeout plus a margin) for SIPp to exit.
    pub fn wait(mut self) -> Outcome {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sipp in {} did not exit in time", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let counts_file = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_counts.csv"));
        Outcome {
            status,
            stats: last_row(&self.dir.join("stat.csv")),
            counts: counts_file.map(|p| last_row(&p)).unwrap_or_default(),
            dir: self.dir.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `;`-separated CSV's header and last row, zipped.
fn last_row(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return HashMap::new();
    };
    let Some(last) = lines.next_back() else {
        return HashMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
