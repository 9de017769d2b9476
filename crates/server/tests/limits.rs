//! Every configurable limit: hitting it gets its distinct status (BUSY server-wide,
//! TOO_MANY_REQUESTS per connection, OBJECT_TOO_LARGE, KEY_TOO_LONG, METADATA_TOO_LARGE,
//! PROTOCOL_ERROR for the header timeout), never a hang, and the server goes on serving.
//! Also the allowlist in-process (a thread that changes its own uid) and its counter.

mod util;

use objmapper_proto::*;
use objmapper_server::ServerConfig;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use util::*;

/// Waits (up to 10 s) until the server's staged `(puts, bytes)` satisfy `done`.
fn wait_staged(ts: &TestServer, what: &str, done: impl Fn((u64, u64)) -> bool) {
    wait_for(
        what,
        Duration::from_secs(10),
        Duration::from_millis(10),
        || done(ts.server().staged()),
    );
}

/// `r` has status `st` and a message that contains `says`.
fn assert_refused(r: &Reply, st: Status, says: &str) {
    assert_status(r, st);
    assert!(r.message.contains(says), "{}", r.message);
}

fn put_fd(c: &mut Raw, key: &[u8]) -> Reply {
    c.request(Op::Put, Mode::Fd, key);
    c.recv()
}

#[test]
fn max_connections_answers_busy_then_closes_and_frees_on_close() {
    let ts = TestServer::start_with(|c| c.max_connections = 2);
    let mut a = ts.raw();
    let mut b = ts.raw();
    assert_status(&a.ping(), Status::Ok);
    assert_status(&b.ping(), Status::Ok);
    let mut c = ts.raw();
    let r = c.ping();
    assert_refused(&r, Status::Busy, "connection limit (2)");
    assert!(c.is_closed());
    assert_eq!(ts.server().over_limit_connections(), 1);
    assert_status(&a.ping(), Status::Ok /* the others are unaffected */);
    drop(b);
    // Once the server has seen the close, a new connection is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = ts.raw();
        let r = d.ping();
        if r.header.status == Status::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn staged_puts_in_total_answer_busy_per_connection_too_many_requests() {
    let ts = TestServer::start_with(|c| {
        c.max_staged_puts = 2;
        c.max_staged_puts_total = 3;
    });
    let mut a = ts.raw();
    let mut b = ts.raw();
    let h1 = put_fd(&mut a, b"a1").header.handle;
    assert_status(&put_fd(&mut a, b"a2"), Status::Ok);
    assert_status(&put_fd(&mut a, b"a3"), Status::TooManyRequests);
    assert_status(&put_fd(&mut b, b"b1"), Status::Ok);
    let r = put_fd(&mut b, b"b2");
    assert_refused(&r, Status::Busy, "max_staged_puts_total");
    assert_eq!(ts.server().staged().0, 3);
    a.send(Op::Abort, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = h1
    });
    assert_status(&a.recv(), Status::Ok);
    assert_status(&put_fd(&mut b, b"b2"), Status::Ok);
    // A closed connection gives its slots back.
    drop(a);
    wait_staged(&ts, "the slots to be returned", |(n, _)| n == 2);
}

#[test]
fn staged_bytes_per_connection_count_fd_staging_files_and_copy_bodies() {
    let ts = TestServer::start_with(|c| c.max_staged_bytes_per_conn = 1000);
    let mut c = ts.raw();
    // A copy PUT over the limit: refused, its body skipped, the connection lives on.
    let r = c.put_copy(b"big", &[7u8; 1500]);
    assert_refused(&r, Status::TooManyRequests, "max_staged_bytes_per_conn");
    assert_status(&c.ping(), Status::Ok);
    assert_status(&c.put_copy(b"small", &[1u8; 900]), Status::Ok);
    // An fd-mode staging file counts as what has been written to it.
    let r = put_fd(&mut c, b"f");
    let mut f = std::fs::File::from(r.fd.unwrap());
    f.write_all(&[3u8; 950]).unwrap();
    assert_status(&c.put_copy(b"more", &[1u8; 100]), Status::TooManyRequests);
    assert_status(&c.put_copy(b"more", &[1u8; 40]), Status::Ok);
    assert_eq!(c.get_copy(b"small").body, vec![1u8; 900]);
    assert_status(&c.get_copy(b"big"), Status::NotFound);
}

#[test]
fn staged_bytes_in_total_answer_busy_while_a_body_is_in_flight() {
    let ts = TestServer::start_with(|c| c.max_staged_bytes_total = 1000);
    let mut a = ts.raw();
    let mut b = ts.raw();
    // a: PUT of 800 bytes, only half the body sent: 800 bytes are reserved.
    a.send(Op::Put, Mode::Copy, b"a", &Metadata::default(), |h| {
        h.length = 800
    });
    a.send_bytes(&[5u8; 400]);
    wait_staged(&ts, "the reservation to be seen", |(_, n)| n == 800);
    let r = b.put_copy(b"b", &[6u8; 300]);
    assert_refused(&r, Status::Busy, "max_staged_bytes_total");
    assert_status(&b.ping(), Status::Ok);
    a.send_bytes(&[5u8; 400]);
    assert_status(&a.recv(), Status::Ok);
    assert_status(&b.put_copy(b"b", &[6u8; 300]), Status::Ok);
    assert_eq!(ts.server().staged().1, 0);
    assert_eq!(b.get_copy(b"a").body, vec![5u8; 800]);
}

#[test]
fn a_body_holds_the_total_budget_as_it_arrives_not_by_its_declared_length() {
    const MIB: u64 = 1 << 20;
    let ts = TestServer::start_with(|c| c.max_staged_bytes_total = 3 * MIB);
    // Declares 100 MiB and sends 1000 bytes: it holds one step (1 MiB), not 100 MiB.
    let mut a = ts.raw();
    a.send(Op::Put, Mode::Copy, b"a", &Metadata::default(), |h| {
        h.length = 100 * MIB
    });
    a.send_bytes(&[5u8; 1000]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ts.server().staged().1 != MIB {
        assert!(
            Instant::now() < deadline,
            "reservation: {:?}",
            ts.server().staged()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // So others still get through, with bodies larger than one step.
    let mut b = ts.raw();
    let body = vec![6u8; (MIB + MIB / 2) as usize];
    assert_status(&b.put_copy(b"b", &body), Status::Ok);
    assert_eq!(ts.server().staged().1, MIB);
    // A body that really would take the total past the limit gets BUSY in mid-flight;
    // the rest of it is skipped and the connection stays usable.
    let r = b.put_copy(b"c", &vec![7u8; (5 * MIB) as usize]);
    assert_refused(&r, Status::Busy, "max_staged_bytes_total");
    assert_status(&b.ping(), Status::Ok);
    assert_status(&b.get_copy(b"c"), Status::NotFound);
    assert_eq!(b.get_copy(b"b").body, body);
    // The same in splice mode, where the body moves socket -> pipe -> memfd.
    let mut v2 = objmapper_client::Client::connect_v2(ts.socket(), Default::default()).unwrap();
    let opts = objmapper_client::PutOptions::default();
    let e = v2
        .put_inline(b"d", &vec![8u8; (5 * MIB) as usize], &opts, Mode::Splice)
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::Busy), "{e}");
    v2.ping().unwrap();
    let small = vec![9u8; (MIB + 7) as usize];
    v2.put_inline(b"d", &small, &opts, Mode::Splice).unwrap();
    assert_eq!(v2.get(b"d").unwrap().0, small);
    drop(a);
    wait_staged(&ts, "the reservations to be returned", |(_, n)| n == 0);
}

#[test]
fn key_metadata_and_object_size_limits_have_their_statuses_and_keep_the_connection() {
    let ts = TestServer::start_with(|c| {
        c.max_key_len = 8;
        c.max_meta_len = 32;
        c.store.max_object_size = 100;
    });
    let mut c = ts.raw();
    let r = c.put_copy(b"123456789", b"x");
    assert_refused(&r, Status::KeyTooLong, "limit of 8");
    assert_status(&c.get_copy(b"123456789"), Status::KeyTooLong);
    let meta = Metadata {
        content_type: Some("x".repeat(40)),
        ..Metadata::default()
    };
    let r = c.put_copy_meta(b"k", b"x", &meta);
    assert_refused(&r, Status::MetadataTooLarge, "limit of 32");
    assert_status(&c.ping(), Status::Ok);
    // OBJECT_TOO_LARGE: an fd PUT's COMMIT (the connection stays usable).
    let r = put_fd(&mut c, b"k");
    let handle = r.header.handle;
    let mut f = std::fs::File::from(r.fd.unwrap());
    let _ = f.write_all(&[0u8; 200]);
    c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = handle;
        h.length = 200;
    });
    assert_status(&c.recv(), Status::ObjectTooLarge);
    assert_status(&c.put_copy(b"12345678", b"ok"), Status::Ok);
    assert_eq!(c.get_copy(b"12345678").body, b"ok");
}

/// A metadata section within the wire's 65536 bytes whose stored form is larger (a
/// custom entry takes one byte more stored than on the wire, and the counts four) is
/// refused METADATA_TOO_LARGE at COMMIT, saying so, and the connection stays: it was
/// IO_ERROR, which says storage failed.
#[test]
fn metadata_whose_stored_form_is_over_the_limit_is_metadata_too_large() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    // One custom entry: 4 (tag, length) + 1 (name length) + 1 (name) + the value.
    let meta = |value_len: usize| Metadata {
        custom: vec![("n".into(), vec![b'v'; value_len])],
        ..Metadata::default()
    };
    let r = c.put_copy_meta(b"k", b"x", &meta(65536 - 6));
    assert_refused(&r, Status::MetadataTooLarge, "stored");
    assert_status(&c.ping(), Status::Ok);
    // Ten bytes fewer (its stored form is 65536 bytes): stored.
    assert_status(&c.put_copy_meta(b"k", b"x", &meta(65536 - 16)), Status::Ok);
    assert_eq!(c.get_copy(b"k").body, b"x");
}

#[test]
fn a_header_trickled_in_byte_by_byte_is_cut_off_at_the_header_timeout() {
    let ts = TestServer::start_with(|c| c.header_timeout = Duration::from_secs(1));
    let frame = bare_frame(Version::V1, Op::Ping, 9);
    let mut slow = ts.raw();
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut other = ts.raw();
    // One byte at a time, each well inside the header timeout: progress never resets it.
    let mut reply = None;
    for b in &frame[..frame.len() - 1] {
        if slow.sock.write_all(&[*b]).is_err() {
            break;
        }
        assert_status(&other.ping(), Status::Ok);
        if let Some(r) = try_reply(&mut slow) {
            reply = Some(r);
            break;
        }
    }
    let r = reply.or_else(|| {
        slow.sock
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        slow.try_recv()
    });
    let r = r.expect("a PROTOCOL_ERROR reply");
    assert_refused(&r, Status::ProtocolError, "header");
    assert!(slow.is_closed());
}

/// A reply if one arrives within the socket's read timeout.
fn try_reply(c: &mut Raw) -> Option<Reply> {
    let mut b = [0u8; 1];
    match rustix::net::recv(&c.sock, &mut b, rustix::net::RecvFlags::PEEK) {
        Ok((n, _)) if n > 0 => c.try_recv(),
        _ => None,
    }
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout_a_busy_one_is_not() {
    let ts = TestServer::start_with(|c| c.idle_timeout = Some(Duration::from_secs(1)));
    let mut idle = ts.raw();
    assert_status(&idle.ping(), Status::Ok);
    let mut busy = ts.raw();
    let start = Instant::now();
    // The idle one is closed (EOF, no reply); the one that keeps talking is not.
    let mut b = [0u8; 1];
    idle.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        assert_status(&busy.ping(), Status::Ok);
        match std::io::Read::read(&mut idle.sock, &mut b) {
            Ok(0) => break,
            Ok(_) => panic!("unexpected bytes on an idle connection"),
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never closed");
    }
    assert_status(&busy.ping(), Status::Ok);
}

#[test]
fn the_nofile_limit_is_sized_from_the_limits_or_the_start_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("s"), dir.path().join("d"));
    cfg.max_connections = 50_000_000; // beyond any nr_open
    let err = objmapper_server::Server::start(cfg).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("RLIMIT_NOFILE") && msg.contains("max_connections"),
        "{msg}"
    );
    assert!(!dir.path().join("s").exists(), "nothing bound");
    // The defaults fit: the soft limit ends up at least what they need.
    let ts = TestServer::start();
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let d = ServerConfig::new("x", "y");
    assert!(soft >= d.max_connections as u64 + d.max_staged_puts_total as u64);
    drop(ts);
}

/// Runs `f` on a thread that first gives up root for `uid`/`gid` (the thread only: the
/// raw setresuid syscall is per thread), as a client of another user would.
fn as_user<T: Send + 'static>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        use rustix::process::{Gid, Uid};
        use rustix::thread::{set_thread_res_gid, set_thread_res_uid};
        let g = Gid::from_raw(gid);
        set_thread_res_gid(g, g, g).expect("setresgid");
        let u = Uid::from_raw(uid);
        set_thread_res_uid(u, u, u).expect("setresuid");
        f()
    })
    .join()
    .unwrap()
}

/// Connects as `uid`/`gid` ([`as_user`]).
fn connect_as(uid: u32, gid: u32, path: std::path::PathBuf) -> Raw {
    as_user(uid, gid, move || Raw::connect(&path))
}

/// A server whose socket (mode 0666, in a 0755 directory) other users can reach, with
/// `access` added to its config; None (SKIPPED) unless we are root, who can be them.
fn server_for_others(access: impl FnOnce(&mut ServerConfig)) -> Option<TestServer> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: changing uid needs root; run the suite as root (CI does)");
        return None;
    }
    let ts = TestServer::start_with(|c| {
        c.socket_mode = 0o666;
        access(c);
    });
    std::fs::set_permissions(ts.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(ts)
}

#[test]
fn a_denied_peer_gets_forbidden_is_closed_and_counted_a_read_only_peer_cannot_write() {
    let Some(ts) = server_for_others(|c| {
        c.access.uids.push("65533=read".parse().unwrap());
    }) else {
        return;
    };
    let mut me = ts.raw();
    assert_status(&me.put_copy(b"k", b"v"), Status::Ok);

    let mut nobody = connect_as(65534, 65534, ts.socket());
    let r = nobody.get_copy(b"k");
    assert_refused(&r, Status::Forbidden, "uid 65534");
    assert!(nobody.is_closed());
    assert_eq!(ts.server().denied_connections(), 1);

    // V2 too: the HELLO is answered FORBIDDEN (in V2).
    let mut v2 = wire_as(65534, &ts);
    let r = v2.recv();
    assert_eq!(r.header.version, Version::V2);
    assert_status(&r, Status::Forbidden);
    assert_eq!(ts.server().denied_connections(), 2);

    let mut reader = connect_as(65533, 65533, ts.socket());
    assert_eq!(reader.get_copy(b"k").body, b"v");
    let r = reader.put_copy(b"k", b"changed");
    assert_refused(&r, Status::Forbidden, "write");
    reader.request(Op::Delete, Mode::None, b"k");
    assert_status(&reader.recv(), Status::Forbidden);
    assert_eq!(
        reader.get_copy(b"k").body,
        b"v",
        "connection alive, nothing changed"
    );
    // A GET fd given to a reader is read-only.
    let r = reader.get_fd(b"k");
    let fd = r.fd.expect("an fd");
    let fl = rustix::fs::fcntl_getfl(&fd).unwrap();
    assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::RDONLY);
    assert!(std::fs::File::from(fd).write_all(b"x").is_err());
    assert_eq!(ts.server().denied_connections(), 2);
}

/// A V2 connection from uid `uid` that has sent its HELLO.
fn wire_as(uid: u32, ts: &TestServer) -> Raw {
    let mut c = connect_as(uid, uid, ts.socket());
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 1);
    h.length = hello::HELLO_LEN as u64;
    let mut out = Vec::new();
    encode_request(&h, b"", b"", &mut out);
    out.extend_from_slice(
        &Hello {
            version: 2,
            capabilities: 0,
            depth: 1,
        }
        .encode(),
    );
    c.send_bytes(&out);
    c
}

#[test]
fn a_refused_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let ts = TestServer::start_with(|c| {
        c.max_connections = 1;
        c.header_timeout = Duration::from_secs(1);
    });
    let mut a = ts.raw();
    assert_status(&a.ping(), Status::Ok);
    let mut silent = ts.raw();
    assert!(silent.is_closed(), "closed without a request to answer");
    assert_eq!(ts.server().over_limit_connections(), 1);
    assert_status(&a.ping(), Status::Ok);
}

/// One management API request from a thread running as `uid`/`gid`.
fn admin_call_as(uid: u32, gid: u32, sock: std::path::PathBuf, path: &str) -> http::Answer {
    let path = path.to_string();
    as_user(uid, gid, move || {
        http::call(&http::unix(&sock), "GET", &path, None)
    })
}

#[test]
fn the_management_api_needs_the_admin_permission() {
    let Some(ts) = server_for_others(|c| {
        c.access.uids.push("65533=read,write".parse().unwrap());
        c.access.gids.push("65532=admin".parse().unwrap());
    }) else {
        return;
    };
    let admin = ts.dir.path().join("objm.sock.admin");
    // Our own uid: admin by default.
    let a = http::get(&http::unix(&admin), "/v1/stats");
    assert_eq!(a.status, 200, "{}", a.text);
    // Nobody, and a reader/writer without admin: 403 forbidden, logged and counted.
    for (uid, gid) in [(65534, 65534), (65533, 65533)] {
        let a = admin_call_as(uid, gid, admin.clone(), "/v1/stats");
        assert_eq!(a.status, 403, "{}", a.text);
        assert_eq!(a.code(), "forbidden");
        assert!(a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {uid}")));
    }
    // Admin through a gid grant.
    let a = admin_call_as(65531, 65532, admin.clone(), "/v1/stats");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(ts.server().denied_connections(), 2);
    let m = http::prometheus(&http::get(&http::unix(&admin), "/metrics").text);
    assert_eq!(m["objmapper_connections_denied_total"], 2.0);
}

#[test]
fn tcp_peers_get_the_tcp_grant_and_tcp_beyond_loopback_is_refused() {
    let ts = TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.access.tcp = objmapper_server::Perms::READ;
    });
    assert_status(&ts.raw().put_copy(b"k", b"v"), Status::Ok);
    let mut t = wire::Wire::tcp(ts.server().tcp_addr().unwrap());
    let r = t.get(b"k", Mode::Copy, 0, 0);
    assert_status(&r, Status::Ok);
    assert_eq!(r.body, b"v");
    let r = t.put(b"k", Mode::Copy, b"changed");
    assert_status(&r, Status::Forbidden);
    assert!(
        r.message.contains("TCP") || r.message.contains("write"),
        "{}",
        r.message
    );
    assert_eq!(t.get(b"k", Mode::Copy, 0, 0).body, b"v");

    // No grant at all: refused like an unlisted uid.
    let ts2 = TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.access.tcp = objmapper_server::Perms::NONE;
    });
    let mut t = wire::Wire::tcp(ts2.server().tcp_addr().unwrap());
    assert_status(&t.get(b"k", Mode::Copy, 0, 0), Status::Forbidden);
    assert_eq!(ts2.server().denied_connections(), 1);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("s"), dir.path().join("d"));
    cfg.tcp_listen = Some("0.0.0.0:0".parse().unwrap());
    let msg = objmapper_server::Server::start(cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("not a loopback address") && msg.contains("TLS"),
        "{msg}"
    );
}
