//! The API over HTTPS (issue 24): a node serving TLS from a certificate and key, the command line
//! speaking HTTPS through rustls and trusting a self-signed certificate only when told to.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{stdout_json, NodeProc, BIN};

/// A self-signed certificate for localhost and 127.0.0.1, made by OpenSSL (`cert.pem`,
/// `key.pem` in `dir`).
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server's own certificate, not a CA's (rustls refuses a CA certificate as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (./scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

fn cli(args: &[&str], ca: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("GRIDMESH_CA_CERT");
    if let Some(ca) = ca {
        c.env("GRIDMESH_CA_CERT", ca);
    }
    c.output().unwrap()
}

#[test]
fn the_api_is_served_over_https_and_the_cli_trusts_only_what_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "api");
    // This process's own client (waiting for the node) trusts the certificate too.
    std::env::set_var("GRIDMESH_CA_CERT", &cert);
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let url = node.url.clone();

    // Trusted: the CLI reads and writes over HTTPS.
    let status = stdout_json(&cli(
        &["query", "status", "--node", &url, "--json"],
        Some(&cert),
    ));
    assert_eq!(status["chain_id"], "gridmesh-dev");
    let faucet = data.join("faucet.key");
    let out = cli(
        &[
            "tx",
            "transfer",
            "--key",
            faucet.to_str().unwrap(),
            "--to",
            &"ab".repeat(32),
            "--amount",
            "1.5",
            "--new-recipient",
            "--node",
            &url,
        ],
        Some(&cert),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account = stdout_json(&cli(
        &[
            "query",
            "account",
            &"ab".repeat(32),
            "--node",
            &url,
            "--json",
        ],
        Some(&cert),
    ));
    assert_eq!(account["balance"], "1.5");

    // Not trusted: the system's roots do not know a self-signed certificate, nor another one.
    let out = cli(&["query", "status", "--node", &url], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let (other, _) = self_signed(dir.path(), "other");
    let out = cli(&["query", "status", "--node", &url], Some(&other));
    assert!(!out.status.success());
    // A CA file that is not there is named.
    let out = cli(
        &["query", "status", "--node", &url],
        Some("/no/such/ca.pem"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GRIDMESH_CA_CERT") && err.contains("/no/such/ca.pem"),
        "{err}"
    );
    // Nothing is served in plain HTTP on the TLS port.
    let plain = url.replace("https://", "http://");
    assert!(ureq::get(&format!("{plain}/v1/status")).call().is_err());

    // A key that does not go with the certificate, or half of the pair: refused by name.
    let (_, other_key) = self_signed(dir.path(), "third");
    let out = cli(
        &[
            "node",
            "--data-dir",
            dir.path().join("d2").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &other_key,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not go with the certificate"), "{err}");
    let out = cli(
        &[
            "node",
            "--data-dir",
            dir.path().join("d3").to_str().unwrap(),
            "--tls-cert",
            &cert,
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("both --tls-cert and --tls-key"));
}
