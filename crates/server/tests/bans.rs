//! BAN over real sockets: what a ban hides (GET in every mode, HEAD, the listing,
//! conditional PUTs, PIN), the VMOD's expression shapes, permissions, bad expressions,
//! restarts, the ban lurker, and the admin endpoints and metrics.

mod util;

use objmapper_proto::*;
use std::time::{Duration, Instant};
use util::http::{self, Target};
use util::wire::Wire;
use util::*;

fn admin(t: &TestServer) -> Target {
    http::unix(t.server().admin_socket_path().expect("admin socket"))
}

fn ban(w: &mut Wire, expr: &[u8]) -> Reply {
    w.call(Op::Ban, Mode::None, expr, b"", |_| {})
}

fn put_meta(t: &TestServer, key: &[u8], body: &[u8], pairs: &[(&str, &[u8])]) {
    let md = Metadata {
        custom: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        ..Default::default()
    };
    assert_status(&t.raw().put_copy_meta(key, body, &md), Status::Ok);
}

fn listed(t: &TestServer) -> Vec<String> {
    let v = http::get(&admin(t), "/v1/objects").json();
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key_hex"].as_str().unwrap().to_string())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn absent_everywhere(w: &mut Wire, key: &[u8]) {
    for mode in [Mode::Fd, Mode::Copy, Mode::Splice, Mode::Auto] {
        let r = w.get(key, mode, 0, 0);
        assert_status(&r, Status::NotFound);
        assert!(r.fd.is_none(), "{mode}: no fd for a banned object");
    }
    assert_status(&w.head(key), Status::NotFound);
    assert_status(
        &w.call(Op::Pin, Mode::None, key, b"", |_| {}),
        Status::NotFound,
    );
}

fn no_lurker(c: &mut objmapper_server::ServerConfig) {
    c.store.ban_lurker_interval = Duration::from_secs(3600);
}

#[test]
fn a_banned_object_is_absent_to_every_read_and_a_later_commit_is_served() {
    // share_fds: the reader promised POSITIONAL_READS, so fd GETs get the shared
    // description.
    for share_fds in [false, true] {
        let ts = TestServer::start_with(no_lurker);
        let mut w = Wire::unix(&ts.socket());
        if share_fds {
            let asked = hello::caps::FD_PASSING | hello::caps::POSITIONAL_READS;
            assert_eq!(w.hello(asked, 1).capabilities, asked);
        }
        let key = b"varnish:example.com/a\nGET";
        assert_status(&w.put(key, Mode::Copy, b"old"), Status::Ok);
        let old_version = w.head(key).meta.version.unwrap();
        assert_status(
            &w.put(
                b"varnish:example.com/ab\nGET",
                Mode::Copy,
                &util::wire::pattern(20000, 1),
            ),
            Status::Ok,
        );
        // Warm the fd cache (shared descriptions) before the ban.
        assert_status(&w.get(key, Mode::Fd, 0, 0), Status::Ok);

        let r = ban(&mut w, br#"key ^ "varnish:example.com/a\n""#);
        assert_status(&r, Status::Ok);
        let stamp = r.meta.version.expect("the stamp in VERSION");
        assert!(stamp > 0);

        absent_everywhere(&mut w, key);
        assert_eq!(listed(&ts), vec![hex(b"varnish:example.com/ab\nGET")]);
        let other = w.get(b"varnish:example.com/ab\nGET", Mode::Auto, 0, 0);
        assert_status(&other, Status::Ok);

        // Conditional PUTs see a missing object.
        let r = w.put_with(key, Mode::Copy, b"x", |h| {
            h.flags = req_flags::IF_VERSION;
            h.offset = old_version;
        });
        assert_status(&r, Status::PreconditionFailed);
        assert!(r.message.contains("no object"), "{}", r.message);
        let r = w.put_with(key, Mode::Copy, b"new", |h| h.flags = req_flags::IF_ABSENT);
        assert_status(&r, Status::Ok);
        // Committed after the ban: served in every mode.
        for mode in [Mode::Fd, Mode::Copy, Mode::Splice, Mode::Auto] {
            let g = w.get(key, mode, 0, 0);
            assert_status(&g, Status::Ok);
            let bytes = match g.fd {
                Some(fd) => read_fd(&fd),
                None => g.body,
            };
            assert_eq!(bytes, b"new", "{mode}");
        }
    }
}

#[test]
fn the_vmod_shapes_meta_regex_has_token_and_conjunctions() {
    let ts = TestServer::start_with(no_lurker);
    let mut w = Wire::unix(&ts.socket());
    put_meta(&ts, b"varnish:h/b/1", b"1", &[("url", b"/b/1")]);
    put_meta(&ts, b"varnish:h/c/1", b"2", &[("url", b"/c/1")]);
    put_meta(
        &ts,
        b"varnish:p42",
        b"3",
        &[("tags", b"product-41, product-42")],
    );
    put_meta(&ts, b"other:p42", b"4", &[("tags", b"product-42")]);
    put_meta(&ts, b"exact", b"5", &[]);

    assert_status(&ban(&mut w, br#"meta.url ~ "^/b/""#), Status::Ok);
    absent_everywhere(&mut w, b"varnish:h/b/1");
    assert_status(&w.head(b"varnish:h/c/1"), Status::Ok);

    assert_status(
        &ban(&mut w, br#"meta.tags has "product-42" && key ^ "varnish:""#),
        Status::Ok,
    );
    absent_everywhere(&mut w, b"varnish:p42");
    assert_status(&w.head(b"other:p42"), Status::Ok);

    assert_status(&ban(&mut w, br#"key == "exact""#), Status::Ok);
    absent_everywhere(&mut w, b"exact");
    assert_eq!(
        http::get(&admin(&ts), "/v1/bans").json()["count"].as_u64(),
        Some(3)
    );
}

#[test]
fn bad_expressions_are_bad_request_and_ban_needs_write_permission() {
    let ts = TestServer::start_with(|c| {
        no_lurker(c);
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.access.tcp = objmapper_server::Perms::READ;
    });
    let mut w = Wire::unix(&ts.socket());
    for (expr, want) in [
        (&br#"key == nope"#[..], "at byte 7"),
        (br#"host == "x""#, "unknown subject"),
        (br#"meta.url ~ "(""#, "invalid regex"),
        (br#"key == "a\q""#, "unknown escape"),
    ] {
        let r = ban(&mut w, expr);
        assert_status(&r, Status::BadRequest);
        assert!(r.message.contains(want), "{}: {}", want, r.message);
    }
    // BAN takes no mode, flags or body: validated like every op.
    let r = w.call(Op::Ban, Mode::None, b"key == \"a\"", b"", |h| {
        h.flags = req_flags::DURABLE
    });
    assert_status(&r, Status::BadRequest);
    assert_status(&ban(&mut w, b""), Status::BadRequest);
    // The stream stays in sync.
    assert_status(&ban(&mut w, br#"key == "a""#), Status::Ok);

    let mut t = Wire::tcp(ts.server().tcp_addr().unwrap());
    let r = ban(&mut t, br#"key == "a""#);
    assert_status(&r, Status::Forbidden);
    assert!(r.message.contains("write"), "{}", r.message);
}

#[test]
fn bans_survive_a_restart_and_the_lurker_retires_them() {
    let mut ts = TestServer::start_with(no_lurker);
    let mut w = Wire::unix(&ts.socket());
    for i in 0..20 {
        let k = format!("p/{i}");
        let r = w.put_with(k.as_bytes(), Mode::Copy, b"x", |h| {
            h.flags = req_flags::DURABLE
        });
        assert_status(&r, Status::Ok);
    }
    assert_status(&w.put(b"q", Mode::Copy, b"keep"), Status::Ok);
    assert_status(&ban(&mut w, br#"key ^ "p/""#), Status::Ok);
    drop(w);
    ts.stop();
    ts.restart_with(|c| c.store.ban_lurker_interval = Duration::from_millis(50));
    let mut w = Wire::unix(&ts.socket());
    absent_everywhere(&mut w, b"p/7");
    assert_status(&w.put(b"p/8", Mode::Copy, b"again"), Status::Ok);
    assert_eq!(w.get(b"p/8", Mode::Copy, 0, 0).body, b"again");

    // The lurker removes what the ban covers, then retires it.
    let a = admin(&ts);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bans = http::get(&a, "/v1/bans").json();
        if bans["count"].as_u64() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ban was never retired: {bans}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = http::get(&a, "/v1/stats").json();
    assert_eq!(st["bans"]["active"], 0);
    assert_eq!(st["bans"]["added"], 0, "counted since this start");
    assert!(
        st["bans"]["objects_removed"].as_u64().unwrap() >= 19,
        "{st}"
    );
    assert_eq!(st["objects"], 2, "{st}");
    assert_eq!(w.get(b"p/8", Mode::Copy, 0, 0).body, b"again");
    assert_eq!(w.get(b"q", Mode::Copy, 0, 0).body, b"keep");
}

#[test]
fn admin_endpoints_and_metrics() {
    let ts = TestServer::start_with(no_lurker);
    let a = admin(&ts);
    put_meta(&ts, b"/x", b"1", &[("url", b"/b/x")]);
    let r = http::call(
        &a,
        "POST",
        "/v1/bans",
        Some(r#"{"expr": "meta.url ~ \"^/b/\""}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let stamp = r.json()["stamp"].as_u64().unwrap();
    assert_status(&ts.raw().get_copy(b"/x"), Status::NotFound);

    let r = http::call(&a, "POST", "/v1/bans", Some(r#"{"expr": "key ~ \"[\""}"#));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "bad_ban");
    assert!(r.text.contains("at byte 6"), "{}", r.text);
    let r = http::call(&a, "POST", "/v1/bans", Some(r#"{"exp": "key == \"a\""}"#));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = http::call(&a, "DELETE", "/v1/bans", None);
    assert_eq!(r.status, 405);

    let v = http::get(&a, "/v1/bans").json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["bans"][0]["expr"], "meta.url ~ \"^/b/\"");
    assert_eq!(v["bans"][0]["stamp"].as_u64(), Some(stamp));
    assert!(v["bans"][0]["added"].as_u64().unwrap() > 1_600_000_000);

    // The lazy removal by the read above is counted.
    ts.server().store().wait_idle(Duration::from_secs(5));
    let m = http::prometheus(&http::get(&a, "/metrics").text);
    assert_eq!(m["objmapper_bans_active"], 1.0);
    assert_eq!(m["objmapper_bans_added_total"], 1.0);
    assert_eq!(m["objmapper_ban_removals_total"], 1.0);
    assert_eq!(http::get(&a, "/v1/stats").json()["bans"]["active"], 1);
}

#[test]
fn udp_refuses_ban_like_delete() {
    let ts = TestServer::start_with(|c| {
        c.udp_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = ts.server().udp_addr().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = vec![7, 0, 0, 0, 0, 0, 1, 0];
    let expr = br#"key == "a""#;
    encode_request(
        &RequestHeader::new(Version::V1, Op::Ban, 7),
        expr,
        b"",
        &mut frame,
    );
    sock.send_to(&frame, addr).unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap();
    let Decoded::Complete(r, _) = decode_response(&buf[8..n]).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(r.header.status, Status::OpUnsupported);
}
