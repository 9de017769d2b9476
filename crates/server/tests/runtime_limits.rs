//! Changing the allowlist and the limits of a running server (`Server::set_access`,
//! `Server::set_limits`, what the CLI's SIGHUP reload calls): new connections and new
//! requests get the new values, connections already open keep the permissions they were
//! admitted with, and an unusable value changes nothing.

mod util;

use objmapper_proto::*;
use objmapper_server::{AccessConfig, Perms, ServerError};
use std::time::{Duration, Instant};
use util::*;

#[test]
fn a_new_allowlist_applies_to_new_connections_and_open_ones_keep_theirs() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let admin = ts.server().admin_socket_path().unwrap().to_path_buf();
    let mut before = ts.raw();
    assert_status(&before.put_copy(b"k", b"v"), Status::Ok);
    assert_eq!(ts.server().access(), AccessConfig::default());

    // Our own uid loses everything, TCP peers too.
    let me = rustix::process::geteuid().as_raw();
    ts.server().set_access(AccessConfig {
        uids: vec![format!("{me}=none").parse().unwrap()],
        gids: Vec::new(),
        tcp: Perms::NONE,
    });
    assert_eq!(ts.server().access().tcp, Perms::NONE);
    let mut after = ts.raw();
    let r = after.get_copy(b"k");
    assert_status(&r, Status::Forbidden);
    assert!(after.is_closed());
    let mut t = wire::Wire::tcp(ts.server().tcp_addr().unwrap());
    assert_status(&t.get(b"k", Mode::Copy, 0, 0), Status::Forbidden);
    let a = http::get(&http::unix(&admin), "/v1/stats");
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(ts.server().denied_connections(), 3);
    // The connection admitted before keeps its permissions.
    assert_eq!(before.get_copy(b"k").body, b"v");
    assert_status(&before.put_copy(b"k2", b"w"), Status::Ok);

    // Read only: new connections read, and cannot write.
    ts.server().set_access(AccessConfig {
        uids: vec![format!("{me}=read").parse().unwrap()],
        gids: Vec::new(),
        tcp: Perms::READ,
    });
    let mut ro = ts.raw();
    assert_eq!(ro.get_copy(b"k2").body, b"w");
    assert_status(&ro.put_copy(b"k3", b"x"), Status::Forbidden);
    let mut t = wire::Wire::tcp(ts.server().tcp_addr().unwrap());
    assert_eq!(t.get(b"k", Mode::Copy, 0, 0).body, b"v");
    assert_eq!(http::get(&http::unix(&admin), "/v1/stats").status, 403);

    // Back to the default.
    ts.server().set_access(AccessConfig::default());
    assert_status(&ts.raw().put_copy(b"k3", b"x"), Status::Ok);
    assert_eq!(http::get(&http::unix(&admin), "/v1/stats").status, 200);
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
