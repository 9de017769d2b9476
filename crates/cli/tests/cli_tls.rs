//! `objmapper serve` on a non-loopback TCP address with TLS, client certificates and a
//! token, from flags and from the config file, with certificate rotation on SIGHUP; and
//! the client commands' --tls-* and --token-file flags. All against the real binary.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::process::Signal;
use util::netns::Netns;
use util::pki::pki_for;
use util::{objmapper, stderr, Daemon};

/// A CA and, signed by it, a server certificate (127.0.0.1, localhost) and a client
/// certificate, as PEM files named `<prefix>ca.pem`, `<prefix>server.pem`, ... in `dir`.
fn pki(dir: &Path, prefix: &str) {
    pki_for(dir, prefix, &[]);
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The loopback address of a server that logged `listening on tcp 0.0.0.0:PORT`.
fn loopback(d: &Daemon) -> String {
    let logged = d.tcp_addr();
    let port = logged.rsplit(':').next().unwrap();
    format!("127.0.0.1:{port}")
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn serve_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = objmapper()
        .arg("serve")
        .args(["--socket", &s(&dir.path().join("s"))])
        .args(["--data-dir", &s(&dir.path().join("d"))])
        .args(["--mem-dir", &s(&dir.path().join("m"))])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    stderr(&out)
}

/// A server on TCP `listen` with TLS and client certificates from the PKI in `dir`.
fn serve_mtls(listen: &str, dir: &Path) -> Daemon {
    let p = |n: &str| s(&dir.join(n));
    Daemon::start(&[
        "--tcp",
        listen,
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("server.key"),
        "--tls-client-ca",
        &p("ca.pem"),
    ])
}

#[test]
fn serve_refuses_a_public_tcp_address_without_tls_and_client_authentication() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), "");
    let e = serve_fails(&["--tcp", "0.0.0.0:0"]);
    assert!(
        e.contains("not a loopback address") && e.contains("must use TLS"),
        "{e}"
    );
    let (cert, key) = (
        s(&dir.path().join("server.pem")),
        s(&dir.path().join("server.key")),
    );
    let e = serve_fails(&["--tcp", "0.0.0.0:0", "--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        e.contains("--tls-client-ca") && e.contains("--tcp-token-file"),
        "{e}"
    );
    let e = serve_fails(&["--tcp", "127.0.0.1:0", "--tls-cert", &cert]);
    assert!(e.contains("tls_cert is set without tls_key"), "{e}");
    let ca = s(&dir.path().join("ca.pem"));
    let e = serve_fails(&["--tcp", "127.0.0.1:0", "--tls-client-ca", &ca]);
    assert!(e.contains("tls_client_ca is set but TLS is not"), "{e}");
    let open = dir.path().join("open-token");
    std::fs::write(&open, "0123456789abcdef0123").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = serve_fails(&["--tcp", "127.0.0.1:0", "--tcp-token-file", &s(&open)]);
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn client_certificates_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&dir.path().join(n));
    pki(dir.path(), "");
    let d = serve_mtls("0.0.0.0:0", dir.path());
    d.wait_log("TLS 1.3, client certificate required");
    let addr = loopback(&d);
    let tls = [
        "--tcp",
        &addr,
        "--tls-ca",
        &p("ca.pem"),
        "--tls-client-cert",
        &p("client.pem"),
        "--tls-client-key",
        &p("client.key"),
    ];
    std::fs::write(dir.path().join("in"), b"sent over TLS").unwrap();
    let src = p("in");
    let mut put = vec!["put", "k", &*src];
    put.extend_from_slice(&tls);
    d.ok(&put);
    let mut get = vec!["get", "k", "--mode", "splice"];
    get.extend_from_slice(&tls);
    assert_eq!(d.ok(&get), b"sent over TLS");
    // The same through environment variables.
    let out = d
        .cmd(&["get", "k", "--tcp", &addr])
        .env("OBJMAPPER_TLS_CA", p("ca.pem"))
        .env("OBJMAPPER_TLS_CLIENT_CERT", p("client.pem"))
        .env("OBJMAPPER_TLS_CLIENT_KEY", p("client.key"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"sent over TLS", "{}", stderr(&out));

    // Without a client certificate the server ends the session.
    let out = d.run(&["get", "k", "--tcp", &addr, "--tls-ca", &p("ca.pem")]);
    assert!(!out.status.success());
    // Plain TCP to a TLS listener: no answer.
    let out = d.run(&["ping", "--tcp", &addr]);
    assert!(!out.status.success());
    // A name the certificate does not carry.
    let mut wrong = tls.to_vec();
    wrong.extend_from_slice(&["--tls-server-name", "cache.example.net"]);
    let mut ping = vec!["ping"];
    ping.extend_from_slice(&wrong);
    let out = d.run(&ping);
    assert!(stderr(&out).contains("TLS handshake"), "{}", stderr(&out));
}

#[test]
fn a_token_from_the_config_file_and_certificate_rotation_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    pki(dir.path(), "old-");
    pki(dir.path(), "new-");
    // The files the server is configured with: the old certificate, rewritten in place
    // by the rotation below.
    std::fs::copy(path("old-server.pem"), path("server.pem")).unwrap();
    std::fs::copy(path("old-server.key"), path("server.key")).unwrap();
    let token = token_file(dir.path(), "token", "first-token-0123456789");
    let config = path("objmapper.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntcp = \"0.0.0.0:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             tcp_token_file = \"{}\"\n",
            s(&path("server.pem")),
            s(&path("server.key")),
            s(&token)
        ),
    )
    .unwrap();
    let d = Daemon::start(&["--config", &s(&config)]);
    d.wait_log("TLS 1.3, token in HELLO required");
    let addr = loopback(&d);
    let client = |ca: &str, tok: &Path| {
        d.run(&[
            "ping",
            "--tcp",
            &addr,
            "--tls-ca",
            &s(&path(ca)),
            "--token-file",
            &s(tok),
        ])
    };
    let out = client("old-ca.pem", &token);
    assert!(out.status.success(), "{}", stderr(&out));
    let wrong = token_file(dir.path(), "wrong", "not-the-token-0123456789");
    let out = client("old-ca.pem", &wrong);
    assert!(stderr(&out).contains("FORBIDDEN"), "{}", stderr(&out));
    // --print-config shows the keys.
    let out = objmapper()
        .args(["serve", "--config", &s(&config), "--print-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("tls_cert = ") && printed.contains("tcp_token_file = "));

    // Rotate: new certificate (another CA) and key in place, and a new token.
    std::fs::copy(path("new-server.pem"), path("server.pem")).unwrap();
    std::fs::copy(path("new-server.key"), path("server.key")).unwrap();
    let _ = token_file(dir.path(), "token", "second-token-0123456789");
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    d.wait_log("SIGHUP: re-read the TCP listener's TLS certificate and token");
    let out = client("new-ca.pem", &token);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client("old-ca.pem", &token);
    assert!(stderr(&out).contains("TLS handshake"), "{}", stderr(&out));

    // A broken certificate file on reload is refused; the listener keeps the last good one.
    std::fs::write(path("server.pem"), "garbage").unwrap();
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    d.wait_log("TLS settings were refused");
    let out = client("new-ca.pem", &token);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_client_on_another_network_stack_reaches_a_public_address_over_tls() {
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: cannot make a network namespace here ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&dir.path().join(n));
    pki_for(dir.path(), "", &[&ns.host_ip]);
    let listen = format!("{}:0", ns.host_ip);
    // Without TLS the address is refused; with it and client certificates, served.
    let e = serve_fails(&["--tcp", &listen]);
    assert!(e.contains("not a loopback address"), "{e}");
    let d = serve_mtls(&listen, dir.path());
    let addr = d.tcp_addr();
    assert!(addr.starts_with(&ns.host_ip), "{addr}");
    std::fs::write(dir.path().join("in"), b"across a veth pair").unwrap();
    let tls = [
        "--tcp",
        &*addr,
        "--tls-ca",
        &*p("ca.pem"),
        "--tls-client-cert",
        &*p("client.pem"),
        "--tls-client-key",
        &*p("client.key"),
    ];
    let input = p("in");
    let mut put = vec!["put", "remote", &*input];
    put.extend_from_slice(&tls);
    let out = ns.objmapper(&put);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut get = vec!["get", "remote"];
    get.extend_from_slice(&tls);
    let out = ns.objmapper(&get);
    assert_eq!(out.stdout, b"across a veth pair", "{}", stderr(&out));
    // From the other stack, without a client certificate: refused.
    let out = ns.objmapper(&["get", "remote", "--tcp", &addr, "--tls-ca", &p("ca.pem")]);
    assert!(!out.status.success());
    // The object arrived in the store the local socket serves.
    assert_eq!(d.ok(&["get", "remote"]), b"across a veth pair");
}
