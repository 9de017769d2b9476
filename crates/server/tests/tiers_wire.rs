//! The two-tier store on the wire: placement flags (DURABLE, EPHEMERAL, PIN), the PIN and
//! UNPIN ops, EXPIRES, and the TIER / STATE metadata the server reports.

mod util;

use objmapper_proto::*;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use util::*;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn expiring(at: u64) -> Metadata {
    Metadata {
        expires_at: Some(at),
        ..Default::default()
    }
}

/// Copy-mode PUT with request flags.
fn put_flags(c: &mut Raw, key: &[u8], body: &[u8], flags: u16, meta: &Metadata) -> Reply {
    c.send(Op::Put, Mode::Copy, key, meta, |h| {
        h.length = body.len() as u64;
        h.flags = flags;
    });
    c.send_bytes(body);
    c.recv()
}

fn head(c: &mut Raw, key: &[u8]) -> Reply {
    c.request(Op::Head, Mode::None, key);
    c.recv()
}

fn keyed(c: &mut Raw, op: Op, key: &[u8]) -> Reply {
    c.send(op, Mode::None, key, &Metadata::default(), |_| {});
    c.recv()
}

fn state(r: &Reply) -> ObjectState {
    r.meta.state.expect("STATE in every object response")
}

fn tier(r: &Reply) -> Tier {
    r.meta.tier.expect("TIER in every object response")
}

/// An fd-mode PUT + COMMIT with separate flags and metadata on each frame. The PUT must
/// succeed; returns both replies.
fn put_fd(
    c: &mut Raw,
    key: &[u8],
    body: &[u8],
    (put_flags, put_meta): (u16, &Metadata),
    (commit_flags, commit_meta): (u16, &Metadata),
) -> (Reply, Reply) {
    c.send(Op::Put, Mode::Fd, key, put_meta, |h| h.flags = put_flags);
    let mut s = c.recv();
    assert_status(&s, Status::Ok);
    let fd = s.fd.take().unwrap();
    std::fs::File::from(fd).write_all(body).unwrap();
    c.send(Op::Commit, Mode::None, b"", commit_meta, |h| {
        h.handle = s.header.handle;
        h.length = body.len() as u64;
        h.flags = commit_flags;
    });
    let r = c.recv();
    (s, r)
}

#[test]
fn every_object_response_reports_tier_and_state() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let put = c.put_copy(b"plain", b"bytes");
    assert_status(&put, Status::Ok);
    let st = state(&put);
    assert!(!st.pinned() && !st.ephemeral(), "{st:?}");
    // Default placement: the memory tier, written behind to disk. Dirty means "not on
    // disk yet", so a dirty object is in memory only.
    if st.dirty() {
        assert_eq!(tier(&put), Tier::Memory);
    }
    assert_eq!(put.meta.expires_at, None);
    let h = head(&mut c, b"plain");
    assert_status(&h, Status::Ok);
    assert!(h.meta.tier.is_some() && h.meta.state.is_some());
    let g = c.get_copy(b"plain");
    assert_eq!(g.body, b"bytes");
    assert!(g.meta.tier.is_some() && g.meta.state.is_some());
    let g = c.get_fd(b"plain");
    assert!(g.meta.tier.is_some() && g.meta.state.is_some());
}

#[test]
fn flags_round_trip_into_head_metadata() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let none = Metadata::default();

    // PIN: pinned from the first response on.
    let r = put_flags(&mut c, b"pinned", b"p", req_flags::PIN, &none);
    assert_status(&r, Status::Ok);
    assert!(state(&r).pinned());
    assert!(state(&head(&mut c, b"pinned")).pinned());

    // EPHEMERAL: memory only, and it stays that way.
    let r = put_flags(&mut c, b"eph", b"e", req_flags::EPHEMERAL, &none);
    assert_status(&r, Status::Ok);
    assert!(state(&r).ephemeral() && !state(&r).pinned());
    assert_eq!(tier(&r), Tier::Memory);
    let h = head(&mut c, b"eph");
    assert!(state(&h).ephemeral());
    assert_eq!(tier(&h), Tier::Memory);

    // EPHEMERAL|PIN together.
    let r = put_flags(
        &mut c,
        b"eph-pin",
        b"ep",
        req_flags::EPHEMERAL | req_flags::PIN,
        &none,
    );
    assert_status(&r, Status::Ok);
    let st = state(&head(&mut c, b"eph-pin"));
    assert!(st.ephemeral() && st.pinned(), "{st:?}");

    // DURABLE: on disk (and so not dirty) by the time the reply arrives.
    let r = put_flags(&mut c, b"durable", b"d", req_flags::DURABLE, &none);
    assert_status(&r, Status::Ok);
    assert!(tier(&r).on_disk(), "{:?}", tier(&r));
    assert!(!state(&r).dirty() && !state(&r).ephemeral());
    let h = head(&mut c, b"durable");
    assert!(tier(&h).on_disk() && !state(&h).dirty());

    // EXPIRES comes back as sent, on PUT, HEAD and GET.
    let at = unix_now() + 3600;
    let r = c.put_copy_meta(b"ttl", b"t", &expiring(at));
    assert_status(&r, Status::Ok);
    assert_eq!(r.meta.expires_at, Some(at));
    assert_eq!(head(&mut c, b"ttl").meta.expires_at, Some(at));
    assert_eq!(c.get_copy(b"ttl").meta.expires_at, Some(at));
    // Replacing the object replaces its expiry (here: with none).
    assert_status(&c.put_copy(b"ttl", b"t2"), Status::Ok);
    assert_eq!(head(&mut c, b"ttl").meta.expires_at, None);
}

#[test]
fn fd_mode_ors_the_flags_of_put_and_commit() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let none = Metadata::default();
    let at = unix_now() + 3600;
    // PIN on the PUT, EPHEMERAL on the COMMIT: both apply. The PUT's metadata is kept
    // because the COMMIT sends none.
    let (s, r) = put_fd(
        &mut c,
        b"split",
        b"body",
        (req_flags::PIN, &expiring(at)),
        (req_flags::EPHEMERAL, &none),
    );
    assert_status(&s, Status::Ok);
    assert_status(&r, Status::Ok);
    let st = state(&r);
    assert!(st.pinned() && st.ephemeral(), "{st:?}");
    assert_eq!(r.meta.expires_at, Some(at));
    assert_eq!(tier(&r), Tier::Memory);

    // Non-empty COMMIT metadata replaces the PUT's whole: content type in, expiry out.
    let ct = Metadata {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let (_, r) = put_fd(&mut c, b"replace", b"x", (0, &expiring(at)), (0, &ct));
    assert_status(&r, Status::Ok);
    assert_eq!(r.meta.expires_at, None);
    assert_eq!(r.meta.content_type.as_deref(), Some("text/plain"));

    // EPHEMERAL on the PUT and DURABLE on the COMMIT contradict: BAD_REQUEST at COMMIT,
    // nothing published, the handle consumed.
    c.send(Op::Put, Mode::Fd, b"clash", &none, |h| {
        h.flags = req_flags::EPHEMERAL
    });
    let s = c.recv();
    assert_status(&s, Status::Ok);
    std::fs::File::from(s.fd.unwrap()).write_all(b"zz").unwrap();
    c.send(Op::Commit, Mode::None, b"", &none, |h| {
        h.handle = s.header.handle;
        h.length = 2;
        h.flags = req_flags::DURABLE;
    });
    let r = c.recv();
    assert_status(&r, Status::BadRequest);
    assert!(r.message.contains("contradict"), "{}", r.message);
    assert_status(&c.get_copy(b"clash"), Status::NotFound);
    c.send(Op::Abort, Mode::None, b"", &none, |h| {
        h.handle = s.header.handle
    });
    assert_status(&c.recv(), Status::UnknownHandle);
}

#[test]
fn pin_and_unpin() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    for op in [Op::Pin, Op::Unpin] {
        let r = keyed(&mut c, op, b"missing");
        assert_status(&r, Status::NotFound);
    }
    assert_status(&c.put_copy(b"k", b"v"), Status::Ok);
    let version = head(&mut c, b"k").meta.version;
    assert!(!state(&head(&mut c, b"k")).pinned());
    let r = keyed(&mut c, Op::Pin, b"k");
    assert_status(&r, Status::Ok);
    assert!(r.meta.is_empty() && r.fd.is_none());
    let h = head(&mut c, b"k");
    assert!(state(&h).pinned());
    assert_eq!(h.meta.version, version, "pinning is not a new version");
    // Idempotent both ways.
    assert_status(&keyed(&mut c, Op::Pin, b"k"), Status::Ok);
    assert_status(&keyed(&mut c, Op::Unpin, b"k"), Status::Ok);
    assert!(!state(&head(&mut c, b"k")).pinned());
    assert_status(&keyed(&mut c, Op::Unpin, b"k"), Status::Ok);
    // Gone after DELETE.
    c.request(Op::Delete, Mode::None, b"k");
    assert_status(&c.recv(), Status::Ok);
    assert_status(&keyed(&mut c, Op::Pin, b"k"), Status::NotFound);
    assert_status(&c.ping(), Status::Ok);
}

#[test]
fn durable_with_ephemeral_is_bad_request_and_the_stream_stays_in_sync() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let both = req_flags::DURABLE | req_flags::EPHEMERAL;
    let r = put_flags(&mut c, b"k", b"body bytes", both, &Metadata::default());
    assert_status(&r, Status::BadRequest);
    assert!(r.message.contains("contradict"), "{}", r.message);
    // The body was skipped: the next frame is understood.
    assert_status(&c.ping(), Status::Ok);
    assert_status(&c.get_copy(b"k"), Status::NotFound);
    c.send(Op::Put, Mode::Fd, b"k", &Metadata::default(), |h| {
        h.flags = both
    });
    assert_status(&c.recv(), Status::BadRequest);
    c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = 1;
        h.flags = both;
    });
    assert_status(&c.recv(), Status::BadRequest);
    assert_status(&c.ping(), Status::Ok);
}

#[test]
fn flags_on_ops_that_take_none_are_bad_request() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"k", b"v"), Status::Ok);
    let cases: [(Op, Mode, u16); 5] = [
        (Op::Get, Mode::Copy, req_flags::PIN),
        (Op::Head, Mode::None, req_flags::DURABLE),
        (Op::Pin, Mode::None, req_flags::DURABLE),
        (Op::Delete, Mode::None, req_flags::EPHEMERAL),
        (Op::Delete, Mode::None, req_flags::PIN),
    ];
    for (op, mode, flags) in cases {
        c.send(op, mode, b"k", &Metadata::default(), |h| h.flags = flags);
        let r = c.recv();
        assert_status(&r, Status::BadRequest);
        assert!(r.message.contains("do not apply"), "{op}: {}", r.message);
    }
    // Nothing happened to the object.
    assert_eq!(c.get_copy(b"k").body, b"v");
    assert!(!state(&head(&mut c, b"k")).pinned());
}

#[test]
fn expires_in_the_past_is_bad_request() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let now = unix_now();
    for at in [0, now - 10, now] {
        let r = c.put_copy_meta(b"old", b"body", &expiring(at));
        assert_status(&r, Status::BadRequest);
        assert!(r.message.contains("EXPIRES"), "{}", r.message);
        assert_status(&c.ping(), Status::Ok);
    }
    assert_status(&c.get_copy(b"old"), Status::NotFound);
    // fd mode: refused on the PUT, and on a COMMIT that brings its own.
    c.send(Op::Put, Mode::Fd, b"old", &expiring(now - 1), |_| {});
    assert_status(&c.recv(), Status::BadRequest);
    let (_, r) = put_fd(
        &mut c,
        b"old",
        b"x",
        (0, &Metadata::default()),
        (0, &expiring(now - 1)),
    );
    assert_status(&r, Status::BadRequest);
    assert_status(&c.get_copy(b"old"), Status::NotFound);
    // Server-only tags are still refused.
    let bad = Metadata {
        tier: Some(Tier::Disk),
        ..Default::default()
    };
    let r = c.put_copy_meta(b"old", b"x", &bad);
    assert_status(&r, Status::BadRequest);
    assert!(r.message.contains("TIER"), "{}", r.message);
}

/// Waits until the wall clock is early in a second, so that "now + 1" leaves most of a
/// second of margin.
fn start_of_a_second() -> u64 {
    loop {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if d.subsec_millis() < 100 {
            return d.as_secs();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_expired_object_answers_not_found() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let at = start_of_a_second() + 1;
    assert_status(
        &c.put_copy_meta(b"short", b"lived", &expiring(at)),
        Status::Ok,
    );
    // Served until then, in both modes.
    let g = c.get_copy(b"short");
    assert_status(&g, Status::Ok);
    assert_eq!(g.body, b"lived");
    let held = c.get_fd(b"short");
    assert_status(&held, Status::Ok);
    assert_eq!(head(&mut c, b"short").meta.expires_at, Some(at));

    while unix_now() < at + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_status(&c.get_copy(b"short"), Status::NotFound);
    assert_status(&c.get_fd(b"short"), Status::NotFound);
    assert_status(&head(&mut c, b"short"), Status::NotFound);
    assert_status(&keyed(&mut c, Op::Pin, b"short"), Status::NotFound);
    assert_status(&keyed(&mut c, Op::Delete, b"short"), Status::NotFound);
    // An fd handed out before the expiry still reads its snapshot.
    assert_eq!(read_fd(held.fd.as_ref().unwrap()), b"lived");
    // The key can be stored again.
    assert_status(&c.put_copy(b"short", b"again"), Status::Ok);
    assert_eq!(c.get_copy(b"short").body, b"again");
}

#[test]
fn large_objects_go_straight_to_disk() {
    let ts = TestServer::start_with(|c| c.store.direct_to_disk_threshold = 64 << 10);
    let mut c = ts.raw();
    let big = vec![7u8; 256 << 10];
    let r = c.put_copy(b"big", &big);
    assert_status(&r, Status::Ok);
    assert_eq!(tier(&r), Tier::Disk);
    assert!(!state(&r).dirty());
    assert_eq!(c.get_copy(b"big").body, big);
    let r = c.put_copy(b"small", &big[..1024]);
    assert!(tier(&r).in_memory(), "{:?}", tier(&r));
}

#[test]
fn no_space_when_nothing_can_be_evicted() {
    let ts = TestServer::start_with(|c| {
        c.store.mem_capacity_bytes = 256 << 10;
        c.store.direct_to_disk_threshold = 1 << 20;
    });
    let mut c = ts.raw();
    // An ephemeral object larger than the whole memory tier can never fit.
    let r = put_flags(
        &mut c,
        b"huge",
        &vec![1u8; 512 << 10],
        req_flags::EPHEMERAL,
        &Metadata::default(),
    );
    assert_status(&r, Status::NoSpace);
    assert_status(&c.get_copy(b"huge"), Status::NotFound);
    assert_status(&c.ping(), Status::Ok);

    // Fill the memory tier with pinned ephemeral objects until it refuses.
    let chunk = vec![2u8; 32 << 10];
    let flags = req_flags::EPHEMERAL | req_flags::PIN;
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..64u32 {
        let key = format!("pinned/{i}").into_bytes();
        let r = put_flags(&mut c, &key, &chunk, flags, &Metadata::default());
        match r.header.status {
            Status::Ok => stored.push(key),
            Status::NoSpace => {
                refused = Some((key, r.message));
                break;
            }
            st => panic!("{st}: {}", r.message),
        }
    }
    let (key, msg) = refused.expect("the memory tier fills up");
    assert!(!msg.is_empty());
    assert!(!stored.is_empty());
    assert_status(&c.get_copy(&key), Status::NotFound);
    // Everything pinned is still there.
    for k in &stored {
        assert_eq!(c.get_copy(k).body, chunk);
    }
    // Unpinning one makes room again.
    assert_status(&keyed(&mut c, Op::Unpin, &stored[0]), Status::Ok);
    let r = put_flags(&mut c, &key, &chunk, flags, &Metadata::default());
    assert_status(&r, Status::Ok);
}

#[test]
fn pin_ephemeral_and_expiry_survive_a_server_restart() {
    let mut ts = TestServer::start();
    let at = unix_now() + 3600;
    {
        let mut c = ts.raw();
        let flags = req_flags::EPHEMERAL | req_flags::PIN;
        assert_status(
            &put_flags(&mut c, b"eph", b"e", flags, &expiring(at)),
            Status::Ok,
        );
        assert_status(&c.put_copy(b"plain", b"p"), Status::Ok);
        assert_status(&keyed(&mut c, Op::Pin, b"plain"), Status::Ok);
    }
    // A clean shutdown writes dirty objects to disk; the memory tier's directory (here
    // in the test's temp dir, normally on /dev/shm) outlives the process.
    ts.stop();
    ts.restart();
    let mut c = ts.raw();
    let h = head(&mut c, b"eph");
    assert_status(&h, Status::Ok);
    let st = state(&h);
    assert!(st.ephemeral() && st.pinned(), "{st:?}");
    assert_eq!(h.meta.expires_at, Some(at));
    assert_eq!(tier(&h), Tier::Memory);
    let h = head(&mut c, b"plain");
    assert!(state(&h).pinned() && !state(&h).dirty());
    assert!(tier(&h).on_disk(), "{:?}", tier(&h));
}

#[test]
fn a_put_expiry_that_passes_before_commit_is_bad_request() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let at = start_of_a_second() + 1;
    c.send(Op::Put, Mode::Fd, b"late", &expiring(at), |_| {});
    let mut s = c.recv();
    assert_status(&s, Status::Ok);
    std::fs::File::from(s.fd.take().unwrap())
        .write_all(b"zz")
        .unwrap();
    while unix_now() < at {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The COMMIT sends no metadata, so the PUT's (now past) EXPIRES would apply.
    c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = s.header.handle;
        h.length = 2;
    });
    let r = c.recv();
    assert_status(&r, Status::BadRequest);
    assert!(r.message.contains("EXPIRES"), "{}", r.message);
    assert_status(&c.get_copy(b"late"), Status::NotFound);
}
