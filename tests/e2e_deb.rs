//! The Debian package: `cargo deb` packs the binaries this test run built (no second build) and
//! `dpkg-deb` lists what the package would install. Skipped, with the reason printed, only when
//! cargo-deb or dpkg-deb is absent (`cargo install cargo-deb`).

use std::path::Path;
use std::process::Command;

mod common;
use common::skip;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn deb_holds_binaries_unit_sysusers_and_commented_config() {
    for tool in ["cargo-deb", "dpkg-deb"] {
        if !have(tool) {
            skip(&format!("{tool} not installed"));
            return;
        }
    }
    // The binaries under test: target/<debug>/xccd, next to which cargo-deb looks for the dev profile.
    let xccd = Path::new(env!("CARGO_BIN_EXE_xccd"));
    let xccctl = Path::new(env!("CARGO_BIN_EXE_xccctl"));
    assert!(xccd.exists() && xccctl.exists());
    let dir = std::env::temp_dir().join(format!("xcc-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let deb = dir.join("xcc.deb");
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "deb",
            "--no-build",
            // Strip and compress fast: the debug binaries are 100+ MB each.
            "--strip",
            "--fast",
            "--profile",
            "dev",
            "-p",
            "xcc",
            "-o",
        ])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    let has = |path: &str, mode: &str| {
        list.lines()
            .any(|l| l.starts_with(mode) && l.ends_with(&format!(" ./{path}")))
    };
    for (path, mode) in [
        ("usr/bin/xccd", "-rwxr-xr-x"),
        ("usr/bin/xccctl", "-rwxr-xr-x"),
        ("usr/lib/systemd/system/xccd.service", "-rw-r--r--"),
        ("usr/lib/sysusers.d/xccd.conf", "-rw-r--r--"),
        ("etc/xcc/xcc.toml", "-rw-r--r--"),
    ] {
        assert!(has(path, mode), "{path} ({mode}) missing from:\n{list}");
    }

    // The configuration is a conffile (kept across upgrades) and the user is created at install.
    let ctl = dir.join("control");
    let st = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctl)
        .status()
        .unwrap();
    assert!(st.success());
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/xcc/xcc.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(
        postinst.contains("systemd-sysusers xccd.conf"),
        "{postinst}"
    );

    // The packaged configuration is the commented example, and it is valid.
    let x = dir.join("x");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let conf = x.join("etc/xcc/xcc.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 10,
        "{text}"
    );
    let check = Command::new(xccd)
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
