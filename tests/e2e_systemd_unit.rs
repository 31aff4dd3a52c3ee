//! The packaged systemd files, checked by systemd's own tools: `systemd-analyze verify` (syntax,
//! every key known, ExecStart executable), `systemd-analyze security` (exposure <= 2.0) and
//! `systemd-sysusers --dry-run`. Skipped, with the reason printed, only when the tools are absent.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::skip;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A copy of the unit whose Exec lines run the xccd this build produced, in a fresh temp dir.
fn unit_copy(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("xcc-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo("systemd/xccd.service")).unwrap();
    assert!(
        text.contains("/usr/bin/xccd"),
        "the unit runs /usr/bin/xccd"
    );
    let text = text.replace("/usr/bin/xccd", env!("CARGO_BIN_EXE_xccd"));
    let unit = dir.join("xccd.service");
    std::fs::write(&unit, text).unwrap();
    (dir, unit)
}

#[test]
fn unit_passes_systemd_analyze_verify_without_a_warning() {
    if !have("systemd-analyze") {
        skip("systemd-analyze not installed (Debian package `systemd`)");
        return;
    }
    let (dir, unit) = unit_copy("verify");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    // Unknown keys are only warnings (exit 0): any output at all fails the check.
    assert!(
        stderr.trim().is_empty() && out.stdout.is_empty(),
        "verify warned: {stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unit_exposure_is_at_most_2_0() {
    if !have("systemd-analyze") {
        skip("systemd-analyze not installed (Debian package `systemd`)");
        return;
    }
    let (dir, unit) = unit_copy("security");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // --threshold is in tenths: a non-zero exit means the exposure is above 2.0.
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for xccd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{stdout}"));
    assert!(score <= 2.0, "exposure {score}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sysusers_file_parses_and_creates_the_xcc_user() {
    if !have("systemd-sysusers") {
        skip("systemd-sysusers not installed (Debian package `systemd`)");
        return;
    }
    let out = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(repo("systemd/xccd.sysusers.conf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // On a host where the user already exists there is nothing to create; otherwise it must be xcc.
    assert!(
        stderr.contains("Creating user 'xcc'") || stderr.trim().is_empty(),
        "{stderr}"
    );
    assert!(!stderr.contains("Failed"), "{stderr}");
}
