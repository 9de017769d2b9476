//! TCP beyond loopback: TLS 1.3 with client certificates or a shared token in HELLO,
//! against the real server over real sockets. The listener binds 0.0.0.0 (not loopback,
//! so the exposure rules apply) and the clients reach it through 127.0.0.1.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use objmapper_client::{
    Client, Error, GetOptions, Mode, PutOptions, Status, TlsOptions, V2Options,
};
use objmapper_server::{Server, ServerConfig, TlsConfig, Token};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use util::{config, send_until_stuck, TestServer};

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all
/// signed by the CA, written as PEM files into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = make_ca("objmapper test CA");
        write(dir.path(), "ca.pem", &ca.pem());
        let (cert, key) = make_leaf(&ca, &ca_key, ExtendedKeyUsagePurpose::ServerAuth);
        write(dir.path(), "server.pem", &cert);
        write(dir.path(), "server.key", &key);
        let (cert, key) = make_leaf(&ca, &ca_key, ExtendedKeyUsagePurpose::ClientAuth);
        write(dir.path(), "client.pem", &cert);
        write(dir.path(), "client.key", &key);
        // A second CA that the server does not trust, and a client certificate it signed.
        let (other, other_key) = make_ca("someone else's CA");
        let (cert, key) = make_leaf(&other, &other_key, ExtendedKeyUsagePurpose::ClientAuth);
        write(dir.path(), "stranger.pem", &cert);
        write(dir.path(), "stranger.key", &key);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_tls(&self, client_ca: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    fn client(&self) -> TlsOptions {
        TlsOptions::new(self.path("ca.pem"))
            .unwrap()
            .client_cert(self.path("client.pem"), self.path("client.key"))
            .unwrap()
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

fn make_leaf(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const TOKEN: &[u8] = b"0123456789abcdef-a-shared-secret";

/// A server listening on 0.0.0.0 with `tls` and `token`; returns it and the loopback
/// address its clients use.
fn exposed(tls: Option<TlsConfig>, token: Option<&[u8]>) -> (TestServer, SocketAddr) {
    let ts = TestServer::start_with(|c| {
        c.tcp_listen = Some("0.0.0.0:0".parse().unwrap());
        c.tls = tls;
        c.tcp_token = token.map(|t| Token::new(t).unwrap());
        c.header_timeout = Duration::from_secs(1);
    });
    let port = ts.server().tcp_addr().unwrap().port();
    (ts, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn start_err(f: impl FnOnce(&mut ServerConfig)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("s"), dir.path().join("d"));
    f(&mut cfg);
    match Server::start(cfg) {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

fn status_of(e: &Error) -> Option<Status> {
    e.status()
}

/// Waits (up to 10 s) until /metrics reports `n` failed TLS handshakes.
fn expect_tls_failures(ts: &TestServer, n: u64) {
    let line = format!("objmapper_tls_handshake_failures_total {n}\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = ts.server().metrics_text();
        if m.contains(&line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn beyond_loopback_tls_and_client_authentication_are_required() {
    let pki = Pki::new();
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let msg = start_err(|c| c.tcp_listen = Some(any));
    assert!(
        msg.contains("not a loopback address") && msg.contains("--tls-cert"),
        "{msg}"
    );
    // TLS without a client CA or a token: anyone could still connect.
    let msg = start_err(|c| {
        c.tcp_listen = Some(any);
        c.tls = Some(pki.server_tls(false));
    });
    assert!(
        msg.contains("--tls-client-ca") && msg.contains("--tcp-token-file"),
        "{msg}"
    );
    // A token without TLS would cross the network in the clear.
    let msg = start_err(|c| {
        c.tcp_listen = Some(any);
        c.tcp_token = Some(Token::new(TOKEN).unwrap());
    });
    assert!(msg.contains("must use TLS"), "{msg}");
    // Either authentication makes it acceptable.
    exposed(Some(pki.server_tls(true)), None);
    exposed(Some(pki.server_tls(false)), Some(TOKEN));
}

#[test]
fn unusable_certificate_files_are_named_in_the_error() {
    let pki = Pki::new();
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let with = |cert: PathBuf, key: PathBuf, ca: Option<PathBuf>| {
        start_err(|c| {
            c.tcp_listen = Some(lo);
            c.tls = Some(TlsConfig {
                cert,
                key,
                client_ca: ca,
            });
        })
    };
    let missing = pki.path("nope.pem");
    let msg = with(missing.clone(), pki.path("server.key"), None);
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    write(pki.dir.path(), "garbage.pem", "not a certificate\n");
    let msg = with(pki.path("garbage.pem"), pki.path("server.key"), None);
    assert!(msg.contains("no PEM \"CERTIFICATE\" block"), "{msg}");

    let msg = with(pki.path("server.pem"), pki.path("garbage.pem"), None);
    assert!(
        msg.contains("private key") && msg.contains("garbage.pem"),
        "{msg}"
    );

    // The client's key is a valid key, but not the server certificate's.
    let msg = with(pki.path("server.pem"), pki.path("client.key"), None);
    assert!(msg.contains("do not make a usable pair"), "{msg}");

    let msg = with(
        pki.path("server.pem"),
        pki.path("server.key"),
        Some(pki.path("garbage.pem")),
    );
    assert!(msg.contains("garbage.pem"), "{msg}");
}

#[test]
fn a_client_certificate_signed_by_the_ca_gets_in_and_every_copy_mode_works() {
    let pki = Pki::new();
    let (ts, addr) = exposed(Some(pki.server_tls(true)), None);

    // V1 over TLS.
    let mut c = Client::connect_tls(addr, &pki.client()).unwrap();
    c.put(b"k", b"over tls", &PutOptions::default()).unwrap();
    assert_eq!(c.get(b"k").unwrap().0, b"over tls");
    // fd mode cannot cross TCP, TLS or not.
    let e = c.get_fd(b"k").unwrap_err();
    assert!(matches!(e, Error::ModeUnsupported { .. }), "{e}");

    // A body far larger than the TLS and socket buffers, both ways, in both inline
    // modes: splice is served by copying through rustls, with the same bytes.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for mode in [Mode::Copy, Mode::Splice] {
        let key = format!("big-{mode}");
        c.put_inline(key.as_bytes(), &big, &PutOptions::default(), mode)
            .unwrap();
        let got = c
            .get_with(key.as_bytes(), &GetOptions::default().mode(mode))
            .unwrap()
            .into_bytes()
            .unwrap();
        if got != big {
            let at = got.iter().zip(&big).position(|(a, b)| a != b);
            let via_unix = Client::connect(ts.socket())
                .unwrap()
                .get(key.as_bytes())
                .unwrap()
                .0
                == big;
            panic!(
                "{mode}: {} bytes back, first difference at {at:?}, stored right: {via_unix}",
                got.len()
            );
        }
        let part = c
            .get_with(
                key.as_bytes(),
                &GetOptions::default().mode(mode).range(1_000_000, 10),
            )
            .unwrap()
            .into_bytes()
            .unwrap();
        assert_eq!(part, &big[1_000_000..1_000_010]);
    }

    // V2, pipelined: many requests in flight over one TLS session.
    let mut c2 = Client::connect_tls_v2(addr, &pki.client(), V2Options::default(), None).unwrap();
    let mut p = c2.pipeline();
    for i in 0..200 {
        let (k, v) = (format!("p{i}"), format!("v{i}"));
        p.submit_put(k.as_bytes(), v.as_bytes(), &PutOptions::default())
            .unwrap();
    }
    let replies = p.collect_all().unwrap();
    assert_eq!(replies.len(), 200);
    drop(p);
    for i in [0, 99, 199] {
        assert_eq!(
            c2.get(format!("p{i}").as_bytes()).unwrap().0,
            format!("v{i}").as_bytes()
        );
    }
    // The Unix socket is unaffected.
    let mut u = Client::connect(ts.socket()).unwrap();
    assert_eq!(u.get(b"k").unwrap().0, b"over tls");
}

#[test]
fn a_client_without_a_certificate_or_with_a_strangers_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let (ts, addr) = exposed(Some(pki.server_tls(true)), None);
    let no_cert = TlsOptions::new(pki.path("ca.pem")).unwrap();
    let stranger = TlsOptions::new(pki.path("ca.pem"))
        .unwrap()
        .client_cert(pki.path("stranger.pem"), pki.path("stranger.key"))
        .unwrap();
    for opts in [no_cert, stranger] {
        // TLS 1.3 finishes the client's side of the handshake before the server checks
        // the certificate, so the refusal surfaces at the first request at the latest.
        let r = Client::connect_tls(addr, &opts).and_then(|mut c| c.ping());
        let e = r.expect_err("the server must not serve this client");
        assert!(
            matches!(e, Error::Protocol(_) | Error::Closed | Error::Io(_)),
            "{e:?}"
        );
    }
    expect_tls_failures(&ts, 2);
    // The server keeps serving clients that do have a certificate.
    let mut c = Client::connect_tls(addr, &pki.client()).unwrap();
    c.ping().unwrap();
    expect_tls_failures(&ts, 2);
}

#[test]
fn a_client_that_does_not_trust_the_servers_certificate_fails_to_connect() {
    let pki = Pki::new();
    let (_ts, addr) = exposed(Some(pki.server_tls(true)), None);
    // The stranger's certificate as the only trust anchor: the server's does not chain.
    let wrong_ca = TlsOptions::new(pki.path("stranger.pem")).unwrap();
    let e = Client::connect_tls(addr, &wrong_ca).unwrap_err();
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    // A server name the certificate does not carry.
    let wrong_name = pki.client().server_name("cache.example.net").unwrap();
    let e = Client::connect_tls(addr, &wrong_name).unwrap_err();
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    // The name it does carry.
    let right_name = pki.client().server_name("localhost").unwrap();
    Client::connect_tls(addr, &right_name)
        .unwrap()
        .ping()
        .unwrap();
}

#[test]
fn the_token_must_come_in_hello_before_anything_else() {
    let pki = Pki::new();
    let (ts, addr) = exposed(Some(pki.server_tls(false)), Some(TOKEN));
    let anchors = TlsOptions::new(pki.path("ca.pem")).unwrap();
    let denied = || ts.server().denied_connections();

    // The right token: a working V2 session.
    let mut c = Client::connect_tls_v2(addr, &anchors, V2Options::default(), Some(TOKEN)).unwrap();
    c.put(b"t", b"authenticated", &PutOptions::default())
        .unwrap();
    assert_eq!(c.get(b"t").unwrap().0, b"authenticated");
    assert_eq!(denied(), 0);

    // A wrong token, no token, and a request before HELLO (V1 cannot carry a token): each
    // FORBIDDEN, counted, and the connection closed.
    type Attempt<'a> = Box<dyn Fn() -> Result<Client, Error> + 'a>;
    let attempts: [(&str, Attempt); 3] = [
        (
            "wrong token",
            Box::new(|| {
                Client::connect_tls_v2(
                    addr,
                    &anchors,
                    V2Options::default(),
                    Some(b"guess-guess-guess"),
                )
            }),
        ),
        (
            "no token",
            Box::new(|| Client::connect_tls_v2(addr, &anchors, V2Options::default(), None)),
        ),
        (
            "V1 request",
            Box::new(|| {
                let mut c = Client::connect_tls(addr, &anchors)?;
                c.get(b"t").map(|_| c)
            }),
        ),
    ];
    for (i, (what, attempt)) in attempts.iter().enumerate() {
        let e = attempt().err().unwrap_or_else(|| panic!("{what}: got in"));
        assert_eq!(status_of(&e), Some(Status::Forbidden), "{what}: {e}");
        assert_eq!(denied(), i as u64 + 1, "{what}: not counted");
    }
    // The stored object did not change, and authenticated clients go on.
    assert_eq!(c.get(b"t").unwrap().0, b"authenticated");
}

#[test]
fn a_token_also_guards_a_plain_loopback_listener() {
    let ts = TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tcp_token = Some(Token::new(TOKEN).unwrap());
    });
    let addr = ts.server().tcp_addr().unwrap();
    let e = Client::connect_tcp(addr).unwrap().ping().unwrap_err();
    assert_eq!(e.status(), Some(Status::Forbidden), "{e}");
    let mut c = Client::connect_tcp(addr).unwrap();
    c.hello_with_token(V2Options::default(), TOKEN).unwrap();
    c.ping().unwrap();
    // The Unix socket never asks for the token: peer credentials decide there.
    Client::connect(ts.socket()).unwrap().ping().unwrap();
}

#[test]
fn tokens_too_short_too_long_or_readable_by_others_are_refused() {
    assert!(Token::new(b"short".to_vec())
        .unwrap_err()
        .contains("16 to 256"));
    assert!(Token::new(vec![b'x'; 257]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, b"0123456789abcdef0123\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Token::from_file(&f).unwrap_err();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    // One trailing newline is not part of the token.
    assert_eq!(
        Token::from_file(&f).unwrap().as_bytes(),
        b"0123456789abcdef0123"
    );
    assert!(format!("{:?}", Token::from_file(&f).unwrap()).contains("redacted"));
}

#[test]
fn a_peer_that_never_finishes_the_handshake_or_speaks_plain_tcp_is_closed() {
    let pki = Pki::new();
    let (ts, addr) = exposed(Some(pki.server_tls(true)), None);
    // Connects and sends nothing: closed at the header timeout (1 s here).
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sent bytes to a silent peer");
    assert!(t.elapsed() < Duration::from_secs(15));

    // A plain-TCP objmapper client: its frame is not a TLS record.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&[0xA1; 64]).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.iter().all(|&b| b != 0xA1),
        "the server answered a plain frame: {got:?}"
    );
    // Nothing leaked: both connections are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ts.server().connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ts.server().connections(), 0);
    // Both count as failed handshakes: the timeout and the bytes that are not TLS.
    expect_tls_failures(&ts, 2);
    Client::connect_tls(addr, &pki.client())
        .unwrap()
        .ping()
        .unwrap();
}

#[test]
fn certificates_and_the_token_can_be_replaced_while_running() {
    let old = Pki::new();
    let new = Pki::new();
    let (ts, addr) = exposed(Some(old.server_tls(false)), Some(TOKEN));
    let v2 = V2Options::default();
    let trusts_old = TlsOptions::new(old.path("ca.pem")).unwrap();
    let trusts_new = TlsOptions::new(new.path("ca.pem")).unwrap();
    let mut kept = Client::connect_tls_v2(addr, &trusts_old, v2, Some(TOKEN)).unwrap();
    kept.put(b"r", b"before", &PutOptions::default()).unwrap();

    // Unusable files, or dropping every authentication on 0.0.0.0: refused, and the
    // old settings stay in force.
    write(old.dir.path(), "empty.pem", "");
    let broken = TlsConfig {
        cert: old.path("empty.pem"),
        ..old.server_tls(false)
    };
    let e = ts
        .server()
        .reload_tcp_security(Some(&broken), Some(Token::new(TOKEN).unwrap()))
        .unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let e = ts
        .server()
        .reload_tcp_security(Some(&new.server_tls(false)), None)
        .unwrap_err();
    assert!(e.to_string().contains("--tls-client-ca"), "{e}");
    Client::connect_tls_v2(addr, &trusts_old, v2, Some(TOKEN))
        .unwrap()
        .ping()
        .unwrap();

    // A new certificate from another CA and a new token.
    let token2 = b"the-rotated-token-0123456789";
    ts.server()
        .reload_tcp_security(
            Some(&new.server_tls(false)),
            Some(Token::new(&token2[..]).unwrap()),
        )
        .unwrap();
    let e = Client::connect_tls_v2(addr, &trusts_old, v2, Some(token2)).unwrap_err();
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    let e = Client::connect_tls_v2(addr, &trusts_new, v2, Some(TOKEN)).unwrap_err();
    assert_eq!(e.status(), Some(Status::Forbidden), "{e}");
    let mut c = Client::connect_tls_v2(addr, &trusts_new, v2, Some(token2)).unwrap();
    assert_eq!(c.get(b"r").unwrap().0, b"before");
    // The connection accepted before the change keeps its session.
    kept.put(b"r", b"after", &PutOptions::default()).unwrap();
    assert_eq!(c.get(b"r").unwrap().0, b"after");
}

/// VmRSS of this process (the server runs in it), in KiB.
fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_tls_client_that_never_reads_its_replies_gets_backpressure() {
    use objmapper_proto::{encode_request, Mode as WireMode, Op, RequestHeader, Version};
    let pki = Pki::new();
    let (ts, addr) = exposed(Some(pki.server_tls(false)), Some(TOKEN));
    let mut c = Client::connect_tls_v2(
        addr,
        &TlsOptions::new(pki.path("ca.pem")).unwrap(),
        V2Options::default(),
        Some(TOKEN),
    )
    .unwrap();
    c.put(b"big", &vec![7u8; 1 << 20], &PutOptions::default())
        .unwrap();
    let rss_start = rss_kb();

    // A raw rustls session: authenticate with HELLO, then pipeline 1 MiB GETs and never
    // read a byte of the replies.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"objmapper".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(config.into(), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    let mut hello = Vec::new();
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 1);
    h.length = (16 + TOKEN.len()) as u64;
    encode_request(&h, b"", b"", &mut hello);
    hello.extend_from_slice(
        &objmapper_proto::Hello {
            version: 2,
            capabilities: objmapper_proto::hello::caps::PIPELINE,
            depth: 64,
        }
        .encode(),
    );
    hello.extend_from_slice(TOKEN);
    let mut get = Vec::new();
    let mut g = RequestHeader::new(Version::V2, Op::Get, 2);
    g.mode = WireMode::Copy;
    encode_request(&g, b"big", b"", &mut get);
    let batch = get.repeat(256);
    tls.writer().write_all(&hello).unwrap();
    sock.set_nonblocking(true).unwrap();
    // More requests than every kernel buffer on the way can hold (the client's send
    // buffer and the server's receive buffer, as large as autotuning may grow them), so
    // that only the server's own backpressure can stop the sender.
    let sysctl_max = |name: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|s| s.split_whitespace().last()?.parse().ok())
            .unwrap_or(8 << 20)
    };
    let buffers = sysctl_max("tcp_rmem") + sysctl_max("tcp_wmem");
    let limit = (2 * buffers + (4 << 20)).max(100_000 * get.len());
    let sent = send_until_stuck(limit, || {
        let n = if tls.wants_write() {
            0
        } else {
            tls.writer().write(&batch).unwrap()
        };
        (n, tls.write_tls(&mut sock).map(|_| ()))
    });
    assert!(
        sent < limit,
        "the server kept reading requests it could not answer"
    );
    // Others are served meanwhile, and memory is bounded by the output high-water mark,
    // not by the gigabytes of replies requested.
    let rss = rss_kb();
    assert_eq!(c.get(b"big").unwrap().0.len(), 1 << 20);
    assert!(
        rss <= rss_start + 64 * 1024,
        "RSS {rss} kB while stuck, {rss_start} kB before"
    );
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ts.server().connections() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ts.server().connections(),
        1,
        "the stuck connection was not released"
    );
}
