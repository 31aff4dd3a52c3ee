//! The systemd watchdog end to end: the real xccd with `WATCHDOG_USEC` set sends `WATCHDOG=1`
//! repeatedly on its `NOTIFY_SOCKET`, and stops when told to stop.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// xccd under a fake "systemd": a notify socket, killed on drop.
struct Supervised {
    child: Child,
    notify: UnixDatagram,
    dir: std::path::PathBuf,
}

impl Supervised {
    fn start(name: &str, watchdog_usec: &str, watchdog_pid: Option<&str>) -> Supervised {
        let dir = std::env::temp_dir().join(format!("xcc-e2e-wd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let control = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = format!(
            "[media]\nbind_address = \"127.0.0.1\"\nport_min = 20600\nport_max = 20699\nworkers = 2\n\
             [control]\nlisten = \"{control}\"\n[nat]\npublic_address = \"127.0.0.1\"\n"
        );
        let config_path = dir.join("xcc.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xccd"));
        cmd.arg("--config")
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", watchdog_usec)
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        if let Some(pid) = watchdog_pid {
            cmd.env("WATCHDOG_PID", pid);
        }
        let child = cmd.spawn().unwrap();
        Supervised { child, notify, dir }
    }

    /// Every datagram until `want` of them satisfied `pred`, or the deadline (then the test fails
    /// with xccd's log).
    fn collect_until(
        &mut self,
        within: Duration,
        want: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while seen.iter().filter(|s: &&String| pred(s)).count() < want {
            match self.notify.recv(&mut buf) {
                Ok(len) => seen.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "xccd exited with {status}; seen {seen:?}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "only {seen:?} within {within:?}; log:\n{}",
                self.log()
            );
        }
        seen
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn watchdog_pings_arrive_repeatedly_after_ready() {
    // 400 ms: a ping every 200 ms, each earned by both workers ticking (every 50 ms).
    let mut d = Supervised::start("pings", "400000", None);
    let seen = d.collect_until(Duration::from_secs(20), 3, |s| s == "WATCHDOG=1");
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    assert!(d.log().contains("systemd watchdog enabled"), "{}", d.log());
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    // WATCHDOG_PID names a process that is not xccd (ours): xccd must not take the watchdog.
    let other = std::process::id().to_string();
    let mut d = Supervised::start("otherpid", "400000", Some(&other));
    let seen = d.collect_until(Duration::from_secs(20), 1, |s| s.starts_with("READY=1"));
    assert!(!seen.iter().any(|s| s == "WATCHDOG=1"), "{seen:?}");
    // Stop it and read everything it sent: still no ping.
    // SAFETY: kill(2) on the pid of our own unreaped child.
    assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGINT) }, 0);
    let seen = d.collect_until(Duration::from_secs(20), 1, |s| {
        s.contains("STATUS=stopping")
    });
    assert!(!seen.iter().any(|s| s == "WATCHDOG=1"), "{seen:?}");
    assert!(!d.log().contains("systemd watchdog enabled"), "{}", d.log());
}
