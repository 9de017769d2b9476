//! Requests sent right behind a HELLO, before its answer was read (docs/PROTOCOL.md,
//! "HELLO": "Requests behind the HELLO"): the server handles the HELLO before it reads
//! the next frame, so they run in the session it grants; its answer goes out before
//! theirs; a client that sends more than the granted depth is slowed down, not failed;
//! and a refused HELLO is answered alone before the connection closes. Non-blocking
//! clients (libobjmapper's `objm_client_send_hello()`, the nginx module) rely on it.
//! Every test writes the HELLO and the requests behind it in one write(2).

mod util;

use objmapper_proto::hello::caps;
use objmapper_proto::*;
use std::os::fd::OwnedFd;
use std::time::Duration;
use util::wire::Wire;
use util::*;

const PROMISE: u32 = caps::FD_PASSING | caps::POSITIONAL_READS;

/// A HELLO frame asking for `version`, `capabilities` and `depth`.
fn hello_frame(version: u8, capabilities: u32, depth: u16) -> Vec<u8> {
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
    h.length = 16;
    let mut f = Vec::new();
    encode_request(&h, b"", b"", &mut f);
    f.extend_from_slice(
        &Hello {
            version,
            capabilities,
            depth,
        }
        .encode(),
    );
    f
}

/// A connection that has written `hello` and then `requests` (V2 frames) in one write,
/// without reading anything; returns their ids.
fn hello_and(ts: &TestServer, hello: Vec<u8>, requests: &[(Op, Mode, &[u8])]) -> (Wire, Vec<u32>) {
    let mut w = Wire::unix(&ts.socket());
    w.version = Version::V2;
    let mut bytes = hello;
    let mut ids = Vec::new();
    for (op, mode, key) in requests {
        let (id, f) = w.frame(*op, *mode, key, b"", |_| {});
        bytes.extend_from_slice(&f);
        ids.push(id);
    }
    w.send_bytes(&bytes);
    (w, ids)
}

/// The grant in the first reply, which must be the HELLO's answer.
fn granted(w: &mut Wire) -> Hello {
    let r = w.recv();
    assert_status(&r, Status::Ok);
    assert_eq!(r.header.request_id, 0, "the HELLO's answer comes first");
    assert_eq!(r.header.version, Version::V2);
    Hello::decode(&r.body).expect("a HELLO body")
}

fn offset_of(fd: &OwnedFd) -> u64 {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).unwrap()
}

/// Whether two fds share one open file description (moving one's offset moves the
/// other's; the test breaks the promise on purpose, to see it).
fn same_description(a: &OwnedFd, b: &OwnedFd) -> bool {
    rustix::fs::seek(a, rustix::fs::SeekFrom::Start(0)).unwrap();
    rustix::fs::seek(b, rustix::fs::SeekFrom::Start(0)).unwrap();
    rustix::fs::seek(a, rustix::fs::SeekFrom::Start(3)).unwrap();
    offset_of(b) == 3
}

#[test]
fn requests_behind_the_hello_run_in_the_session_it_grants() {
    let ts = TestServer::start();
    let mut setup = ts.raw();
    assert_status(&setup.put_copy(b"k", b"0123456789"), Status::Ok);

    let reqs: &[(Op, Mode, &[u8])] = &[
        (Op::Get, Mode::Fd, b"k"),
        (Op::Get, Mode::Copy, b"k"),
        (Op::Ping, Mode::None, b""),
    ];
    let mut fds = Vec::new();
    for _ in 0..2 {
        let (mut w, ids) = hello_and(&ts, hello_frame(2, PROMISE, 1), reqs);
        let g = granted(&mut w);
        assert_eq!((g.version, g.capabilities, g.depth), (2, PROMISE, 1));
        let fd_get = w.recv();
        assert_status(&fd_get, Status::Ok);
        assert_eq!(fd_get.header.request_id, ids[0]);
        assert_eq!(fd_get.header.version, Version::V2);
        let fd = fd_get.fd.expect("fd mode: FD_PASSING was granted");
        assert_eq!(util::wire::pread_fd(&fd, 0, 10), b"0123456789");
        let copy = w.recv();
        assert_status(&copy, Status::Ok);
        assert_eq!(
            (copy.header.request_id, &copy.body[..]),
            (ids[1], &b"0123456789"[..])
        );
        let ping = w.recv();
        assert_status(&ping, Status::Ok);
        assert_eq!(ping.header.request_id, ids[2]);
        fds.push(fd);
    }
    assert!(
        same_description(&fds[0], &fds[1]),
        "the fd GETs sent behind a HELLO that made the promise share the cached description"
    );
}

#[test]
fn behind_a_hello_without_fd_passing_fd_mode_is_refused() {
    let ts = TestServer::start();
    let mut setup = ts.raw();
    assert_status(&setup.put_copy(b"k", b"bytes"), Status::Ok);
    // POSITIONAL_READS alone is no promise (it goes with FD_PASSING only).
    let (mut w, ids) = hello_and(
        &ts,
        hello_frame(2, caps::POSITIONAL_READS, 1),
        &[(Op::Get, Mode::Fd, b"k"), (Op::Get, Mode::Copy, b"k")],
    );
    assert_eq!(granted(&mut w).capabilities, 0);
    let r = w.recv();
    assert_status(&r, Status::ModeUnsupported);
    assert_eq!(r.header.request_id, ids[0]);
    assert!(r.fd.is_none());
    let r = w.recv();
    assert_status(&r, Status::Ok);
    assert_eq!((r.header.request_id, &r.body[..]), (ids[1], &b"bytes"[..]));
    assert_eq!(w.stray_fds(), 0);
}

#[test]
fn more_requests_behind_the_hello_than_the_granted_depth_are_slowed_not_failed() {
    let ts = TestServer::start_with(|c| c.max_pipeline_depth = 2);
    let mut setup = ts.raw();
    let keys: Vec<Vec<u8>> = (0..12).map(|i| format!("key{i}").into_bytes()).collect();
    for k in &keys {
        assert_status(&setup.put_copy(k, k), Status::Ok);
    }
    let reqs: Vec<(Op, Mode, &[u8])> = keys
        .iter()
        .map(|k| (Op::Get, Mode::Copy, k.as_slice()))
        .collect();
    // Asks for 16 with out-of-order replies, is granted 2, and sent 12 before knowing.
    let asked = caps::PIPELINE | caps::OUT_OF_ORDER | PROMISE;
    let (mut w, ids) = hello_and(&ts, hello_frame(2, asked, 16), &reqs);
    let g = granted(&mut w);
    assert_eq!((g.capabilities, g.depth), (asked, 2));
    let mut answered = Vec::new();
    for _ in &ids {
        let r = w.recv();
        assert_status(&r, Status::Ok);
        let i = ids
            .iter()
            .position(|&id| id == r.header.request_id)
            .unwrap();
        assert_eq!(r.body, keys[i]);
        answered.push(r.header.request_id);
    }
    answered.sort_unstable();
    assert_eq!(answered, ids);
}

#[test]
fn a_refused_hello_is_answered_alone_and_the_connection_closes() {
    let ts = TestServer::start();
    // Version 1: VERSION_UNSUPPORTED. The requests behind it are never answered.
    let (mut w, _) = hello_and(
        &ts,
        hello_frame(1, PROMISE, 1),
        &[(Op::Ping, Mode::None, b""), (Op::Get, Mode::Fd, b"k")],
    );
    let r = w.recv();
    assert_status(&r, Status::VersionUnsupported);
    assert_eq!((r.header.request_id, r.header.version), (0, Version::V2));
    if let util::wire::Sock::Unix(s) = &w.sock {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    assert!(
        w.try_recv().is_none(),
        "nothing after the refusal but the close"
    );
    assert_eq!(w.stray_fds(), 0);

    // A HELLO refused by the allowlist: the same.
    let ts = TestServer::start_with(|c| {
        c.access.uids = vec![objmapper_server::Grant {
            id: rustix::process::geteuid().as_raw(),
            perms: objmapper_server::Perms::NONE,
        }]
    });
    let (mut w, _) = hello_and(
        &ts,
        hello_frame(2, PROMISE, 1),
        &[(Op::Ping, Mode::None, b"")],
    );
    let r = w.recv();
    assert_status(&r, Status::Forbidden);
    assert_eq!(r.header.request_id, 0);
    assert!(
        w.try_recv().is_none(),
        "nothing after the refusal but the close"
    );
}
