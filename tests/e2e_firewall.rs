//! `xccctl firewall` through the real binary; the nftables script is checked and loaded by the real
//! `nft` inside a network namespace this test creates (never the root namespace).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{skip, xccctl};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xcc-e2e-fw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const NON_DEFAULT: &str = "[media]\nbind_address = \"0.0.0.0\"\nport_min = 41000\nport_max = 41999\n\
    [control]\nlisten = \"0.0.0.0:3390\"\nallow_insecure_control = true\n";

/// A network namespace that exists for the guard's lifetime.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("xcc-fw-test-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            skip(&format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Some(Netns(name))
    }

    fn nft(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn can_run_nft() -> Result<(), &'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (ip netns needs CAP_SYS_ADMIN)");
    }
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("nft") {
        return Err("nft not installed");
    }
    if !found("ip") {
        return Err("ip (iproute2) not installed");
    }
    Ok(())
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("xcc.toml");
    std::fs::write(&path, NON_DEFAULT).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn nftables_output_for_a_non_default_config_loads_in_a_namespace() {
    let dir = temp_dir("nft");
    let config = write_config(&dir);
    let out = xccctl(&["firewall", "--format", "nftables", "--config", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("udp dport 41000-41999 accept"), "{script}");
    assert!(script.contains("tcp dport 3390 accept"), "{script}");
    if let Err(why) = can_run_nft() {
        skip(&format!("nft check: {why}"));
        std::fs::remove_dir_all(dir).unwrap();
        return;
    }
    let file = dir.join("xcc.nft");
    std::fs::write(&file, &script).unwrap();
    let file = file.to_str().unwrap();
    let Some(ns) = Netns::create() else {
        std::fs::remove_dir_all(dir).unwrap();
        return;
    };
    let check = ns.nft(&["-c", "-f", file]);
    assert!(
        check.status.success(),
        "nft -c refused the script: {}\n{script}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Load it for real inside the namespace and read the rules back from the kernel.
    let load = ns.nft(&["-f", file]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let list = ns.nft(&["list", "table", "inet", "filter"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("udp dport 41000-41999 accept"), "{listed}");
    assert!(listed.contains("udp sport 41000-41999 accept"), "{listed}");
    assert!(listed.contains("tcp dport 3390 accept"), "{listed}");
    assert!(listed.contains("jump xcc_in"), "{listed}");
    drop(ns);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn table_and_iptables_follow_the_file_and_an_invalid_file_exits_64() {
    let dir = temp_dir("table");
    let config = write_config(&dir);
    let out = xccctl(&["firewall", "--config", &config]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("in   udp   41000-41999 any"), "{table}");
    assert!(table.contains("in   tcp   3390"), "{table}");
    let out = xccctl(&["firewall", "--format", "iptables", "--config", &config]);
    let ipt = String::from_utf8(out.stdout).unwrap();
    assert!(
        ipt.contains("iptables -A XCC-IN -p udp -m udp --dport 41000:41999"),
        "{ipt}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[media]\nport_min = 41999\nport_max = 41000\n").unwrap();
    let out = xccctl(&["firewall", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("media.port_min"));
    std::fs::remove_dir_all(dir).unwrap();
}
