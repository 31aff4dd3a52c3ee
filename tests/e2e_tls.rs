//! xccd with mutual TLS on the control port, driven by the real xccctl: the configuration's TLS files
//! reach the server, a client certificate from `tls_client_ca` is served, a client without one is not.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn ca() -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xcc e2e CA");
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

fn leaf(issuer: &Issuer<'_, KeyPair>, san: &str, dir: &Path, name: &str) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![san.to_owned()])
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xccctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn mutual_tls_control_port_serves_certified_clients_only() {
    let dir = std::env::temp_dir().join(format!("xcc-e2e-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (issuer, ca_pem) = ca();
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    leaf(&issuer, "127.0.0.1", &dir, "server");
    leaf(&issuer, "xphone-server", &dir, "client");
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = dir.display();
    let config = format!(
        "[media]\nbind_address = \"127.0.0.1\"\nport_min = 25500\nport_max = 25599\nworkers = 1\n\n\
         [control]\nlisten = \"{control}\"\ntls_cert = \"{d}/server.crt\"\ntls_key = \"{d}/server.key\"\n\
         tls_client_ca = \"{d}/ca.crt\"\n"
    );
    std::fs::write(dir.join("xcc.toml"), config).unwrap();
    let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_xccd"))
        .arg("--config")
        .arg(dir.join("xcc.toml"))
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Killed(child);
    let mut buf = [0u8; 256];
    let started = Instant::now();
    let len = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(
        buf[..len].starts_with(b"READY=1"),
        "after {:?}",
        started.elapsed()
    );

    let addr = format!("https://{control}");
    let file = |n: &str| dir.join(n).display().to_string();
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let out = xccctl(&[
        "--addr", &addr, "--ca", &ca, "--cert", &cert, "--key", &key, "--json", "status",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ports_total"], 100);

    let out = xccctl(&["--addr", &addr, "--ca", &ca, "status"]);
    assert!(
        !out.status.success(),
        "a client without a certificate is refused"
    );
    let out = xccctl(&["--addr", &format!("http://{control}"), "status"]);
    assert!(!out.status.success(), "plaintext is refused");
    std::fs::remove_dir_all(&dir).unwrap();
}
