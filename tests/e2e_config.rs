//! xccd's configuration handling, end to end through the binary: exit codes and messages.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xcc-e2e-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn xccd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xccd"))
        .args(args)
        .output()
        .unwrap()
}

fn write(name: &str, text: &str) -> (PathBuf, String) {
    let dir = temp_dir(name);
    let path = dir.join("xcc.toml");
    std::fs::write(&path, text).unwrap();
    let s = path.to_str().unwrap().to_owned();
    (dir, s)
}

#[test]
fn check_config_accepts_defaults_and_a_valid_file() {
    assert_eq!(xccd(&["check-config"]).status.code(), Some(0));
    let (dir, path) = write("valid", "[media]\nport_min = 41000\nport_max = 41099\n");
    let out = xccd(&["--config", &path, "check-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_refuses_a_reversed_range_with_64_naming_the_key() {
    let (dir, path) = write("reversed", "[media]\nport_min = 41099\nport_max = 41000\n");
    let out = xccd(&["--config", &path, "check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("media.port_min"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_refuses_an_unknown_key_with_64_naming_it() {
    let (dir, path) = write("unknown", "[control]\nlisten_addr = \"127.0.0.1:3280\"\n");
    let out = xccd(&["--config", &path, "check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn printed_default_config_is_valid_and_equals_the_defaults() {
    let out = xccd(&["print-default-config"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = xcc::config::Config::parse(&text, std::path::Path::new("stdout")).unwrap();
    assert_eq!(parsed, xcc::config::Config::default());
    let (dir, path) = write("printed", &text);
    assert_eq!(
        xccd(&["--config", &path, "check-config"]).status.code(),
        Some(0)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn non_loopback_control_without_tls_is_refused_with_64() {
    let (dir, path) = write("insecure", "[control]\nlisten = \"0.0.0.0:3299\"\n");
    let child = Command::new(env!("CARGO_BIN_EXE_xccd"))
        .args(["--config", &path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test spawned and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("xccd kept running with an insecure non-loopback control port");
        }
    };
    let status = out.status;
    assert_eq!(status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("control.listen") && stderr.contains("allow_insecure_control"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn packaged_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/xcc.toml.example");
    let out = xccd(&["--config", path, "check-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
