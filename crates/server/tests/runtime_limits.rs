//! Changing the allowlist and the limits of a running server (`Server::set_access`,
//! `Server::set_limits`, what the CLI's SIGHUP reload calls): new connections and new
//! requests get the new values, connections already open see a new allowlist at their next
//! request, and an unusable value changes nothing.

mod util;

use objmapper_proto::*;
use objmapper_server::{AccessConfig, Perms, ServerError};
use std::time::{Duration, Instant};
use util::*;

#[test]
fn a_new_allowlist_reaches_new_connections_and_open_ones_at_their_next_request() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let admin = ts.server().admin_socket_path().unwrap().to_path_buf();
    let mut before = ts.raw();
    assert_status(&before.put_copy(b"k", b"v"), Status::Ok);
    let mut tcp_before = wire::Wire::tcp(ts.server().tcp_addr().unwrap());
    assert_eq!(tcp_before.get(b"k", Mode::Copy, 0, 0).body, b"v");
    let mut admin_before = KeepAlive::open(&admin);
    assert_eq!(admin_before.get("/v1/stats"), 200);
    assert_eq!(ts.server().access(), AccessConfig::default());

    // Read only: the open connection can still read, and can no longer write.
    let me = rustix::process::geteuid().as_raw();
    ts.server().set_access(AccessConfig {
        uids: vec![format!("{me}=read").parse().unwrap()],
        gids: Vec::new(),
        tcp: Perms::READ,
    });
    assert_eq!(before.get_copy(b"k").body, b"v");
    assert_status(&before.put_copy(b"k2", b"w"), Status::Forbidden);
    // A peer with some permission left keeps its connection.
    assert_eq!(before.get_copy(b"k").body, b"v");
    let mut ro = ts.raw();
    assert_eq!(ro.get_copy(b"k").body, b"v");
    assert_status(&ro.put_copy(b"k3", b"x"), Status::Forbidden);
    // The management API's keep-alive connection lost `admin`: 403, then closed.
    assert_eq!(admin_before.get("/v1/stats"), 403);
    assert!(admin_before.is_closed());
    assert_eq!(http::get(&http::unix(&admin), "/v1/stats").status, 403);

    // Our own uid and TCP peers lose everything: new connections are refused, and open
    // ones get FORBIDDEN at their next request and are closed.
    ts.server().set_access(AccessConfig {
        uids: vec![format!("{me}=none").parse().unwrap()],
        gids: Vec::new(),
        tcp: Perms::NONE,
    });
    assert_eq!(ts.server().access().tcp, Perms::NONE);
    let denied = ts.server().denied_connections();
    let r = before.get_copy(b"k");
    assert_status(&r, Status::Forbidden);
    assert!(
        r.message.contains("no longer has any permission"),
        "{}",
        r.message
    );
    assert!(before.is_closed());
    assert_status(&tcp_before.get(b"k", Mode::Copy, 0, 0), Status::Forbidden);
    let mut after = ts.raw();
    assert_status(&after.get_copy(b"k"), Status::Forbidden);
    assert!(after.is_closed());
    assert_eq!(ts.server().denied_connections(), denied + 3);

    // Back to the default: a new connection writes again.
    ts.server().set_access(AccessConfig::default());
    assert_status(&ts.raw().put_copy(b"k3", b"x"), Status::Ok);
    assert_eq!(http::get(&http::unix(&admin), "/v1/stats").status, 200);
}

/// One HTTP/1.1 keep-alive connection to the management socket.
struct KeepAlive(std::os::unix::net::UnixStream);

impl KeepAlive {
    fn open(path: &std::path::Path) -> KeepAlive {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        KeepAlive(s)
    }

    /// GET `path` on this connection; returns the status code.
    fn get(&mut self, path: &str) -> u16 {
        use std::io::{Read, Write};
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: objmapper\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(self.0.read(&mut byte).unwrap(), 1, "the connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        head[9..12].parse().unwrap()
    }

    fn is_closed(&mut self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0))
    }
}

#[test]
fn new_limits_apply_to_the_next_request_and_bad_ones_change_nothing() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"123456789", b"x"), Status::Ok);
    let start = ts.server().limits();
    assert_eq!(start.max_key_len, MAX_KEY_LEN);

    let mut l = start;
    l.max_key_len = 8;
    l.max_meta_len = 16;
    ts.server().set_limits(&l).unwrap();
    assert_eq!(ts.server().limits(), l);
    // The same connection: its next request sees the new limits.
    let r = c.get_copy(b"123456789");
    assert_status(&r, Status::KeyTooLong);
    assert!(r.message.contains("limit of 8"), "{}", r.message);
    let meta = Metadata {
        content_type: Some("x".repeat(20)),
        ..Metadata::default()
    };
    assert_status(
        &c.put_copy_meta(b"k", b"x", &meta),
        Status::MetadataTooLarge,
    );

    // Out of range: refused as a whole, nothing changes.
    for bad in [
        objmapper_server::RuntimeLimits {
            max_key_len: 0,
            max_meta_len: 100,
            ..l
        },
        objmapper_server::RuntimeLimits {
            max_key_len: 100,
            header_timeout: Duration::ZERO,
            ..l
        },
        objmapper_server::RuntimeLimits {
            max_pipeline_depth: 0,
            ..l
        },
    ] {
        let e = ts.server().set_limits(&bad).unwrap_err();
        assert!(matches!(e, ServerError::Config(_)), "{e}");
        assert_eq!(ts.server().limits(), l);
    }
    assert_status(&c.get_copy(b"123456789"), Status::KeyTooLong);

    ts.server().set_limits(&start).unwrap();
    assert_eq!(c.get_copy(b"123456789").body, b"x");
}

#[test]
fn an_idle_timeout_set_at_runtime_closes_idle_connections() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.ping(), Status::Ok);
    let mut l = ts.server().limits();
    assert_eq!(l.idle_timeout, None);
    l.idle_timeout = Some(Duration::from_secs(1));
    ts.server().set_limits(&l).unwrap();
    // The sweep runs once a second: closed within about two.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ts.server().connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle connection was not closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.is_closed());
}

#[test]
fn a_lower_pipeline_depth_applies_to_the_next_hello() {
    let ts = TestServer::start();
    let mut first = wire::Wire::unix(&ts.socket());
    assert_eq!(first.hello(hello::caps::PIPELINE, 64).depth, 64);
    let mut l = ts.server().limits();
    l.max_pipeline_depth = 4;
    ts.server().set_limits(&l).unwrap();
    let mut second = wire::Wire::unix(&ts.socket());
    assert_eq!(second.hello(hello::caps::PIPELINE, 64).depth, 4);
}
