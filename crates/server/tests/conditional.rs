//! Conditional writes: IF_VERSION (the expected version in `offset`) and IF_ABSENT on PUT
//! (copy, splice, fd + COMMIT) and IF_VERSION on DELETE. A failed precondition answers
//! PRECONDITION_FAILED and changes nothing; concurrent writers racing on one version have
//! exactly one winner.

mod util;

use objmapper_proto::*;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use util::wire::Wire;
use util::*;

fn version(r: &Reply) -> u64 {
    r.meta.version.expect("a VERSION")
}

/// A PUT in `mode` with `flags` and `offset` (the expected version); fd mode goes through
/// PUT + write + COMMIT, with the condition on the PUT (`on_commit` false) or the COMMIT.
fn cas_put(
    w: &mut Wire,
    mode: Mode,
    key: &[u8],
    body: &[u8],
    flags: u16,
    expect: u64,
    on_commit: bool,
) -> Reply {
    if mode != Mode::Fd {
        return w.put_with(key, mode, body, |h| {
            h.flags = flags;
            h.offset = expect;
        });
    }
    let (pf, po) = if on_commit { (0, 0) } else { (flags, expect) };
    let s = w.call(Op::Put, Mode::Fd, key, b"", |h| {
        h.flags = pf;
        h.offset = po;
    });
    assert_status(&s, Status::Ok);
    use std::io::Write;
    std::fs::File::from(s.fd.unwrap()).write_all(body).unwrap();
    let (cf, co) = if on_commit { (flags, expect) } else { (0, 0) };
    w.call(Op::Commit, Mode::None, b"", b"", |h| {
        h.handle = s.header.handle;
        h.length = body.len() as u64;
        h.flags = cf;
        h.offset = co;
    })
}

fn assert_unchanged(w: &mut Wire, key: &[u8], body: &[u8], v: u64) {
    let g = w.get(key, Mode::Copy, 0, 0);
    assert_status(&g, Status::Ok);
    assert_eq!(g.body, body);
    assert_eq!(version(&g), v);
}

/// `r` is PRECONDITION_FAILED naming the current version `v`, and `key` still holds
/// `body` at `v`.
fn assert_refused(w: &mut Wire, r: &Reply, what: &str, key: &[u8], body: &[u8], v: u64) {
    assert_status(r, Status::PreconditionFailed);
    assert!(r.message.contains(&v.to_string()), "{what}: {}", r.message);
    assert_unchanged(w, key, body, v);
}

#[test]
fn if_absent_and_if_version_on_put_in_every_mode() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    for (i, (mode, on_commit)) in [
        (Mode::Copy, false),
        (Mode::Splice, false),
        (Mode::Fd, false),
        (Mode::Fd, true),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        let key = key.as_bytes();
        let what = format!("{mode} (condition on COMMIT: {on_commit})");
        let put = |w: &mut Wire, key: &[u8], body: &[u8], flags: u16, expect: u64| {
            cas_put(w, mode, key, body, flags, expect, on_commit)
        };
        // IF_ABSENT on a fresh key wins; a second IF_ABSENT loses.
        let r = put(&mut w, key, b"one", req_flags::IF_ABSENT, 0);
        assert_status(&r, Status::Ok);
        let v1 = version(&r);
        let r = put(&mut w, key, b"two", req_flags::IF_ABSENT, 0);
        assert_refused(&mut w, &r, &what, key, b"one", v1);
        // IF_VERSION with a stale version loses, with the current one wins.
        let r = put(&mut w, key, b"two", req_flags::IF_VERSION, v1 + 1000);
        assert_refused(&mut w, &r, &what, key, b"one", v1);
        let r = put(&mut w, key, b"two", req_flags::IF_VERSION, v1);
        assert_status(&r, Status::Ok);
        let v2 = version(&r);
        assert!(v2 > v1);
        // The old version no longer matches.
        let r = put(&mut w, key, b"three", req_flags::IF_VERSION, v1);
        assert_status(&r, Status::PreconditionFailed);
        assert_unchanged(&mut w, key, b"two", v2);
        // IF_VERSION on a missing key fails.
        let r = put(&mut w, b"missing", b"x", req_flags::IF_VERSION, 1);
        assert_status(&r, Status::PreconditionFailed);
        assert_status(&w.get(b"missing", Mode::Copy, 0, 0), Status::NotFound);
    }
}

#[test]
fn a_commit_condition_replaces_the_puts() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    let v = version(&w.put(b"k", Mode::Copy, b"old"));
    // The PUT says IF_ABSENT (would fail), the COMMIT says IF_VERSION v (holds).
    let s = w.call(Op::Put, Mode::Fd, b"k", b"", |h| {
        h.flags = req_flags::IF_ABSENT
    });
    use std::io::Write;
    std::fs::File::from(s.fd.unwrap())
        .write_all(b"new")
        .unwrap();
    let r = w.call(Op::Commit, Mode::None, b"", b"", |h| {
        h.handle = s.header.handle;
        h.length = 3;
        h.flags = req_flags::IF_VERSION;
        h.offset = v;
    });
    assert_status(&r, Status::Ok);
    assert_eq!(w.get(b"k", Mode::Copy, 0, 0).body, b"new");
    // A failed conditional COMMIT consumes the handle, like any COMMIT.
    let s = w.call(Op::Put, Mode::Fd, b"k", b"", |h| {
        h.flags = req_flags::IF_ABSENT
    });
    let r = w.call(Op::Commit, Mode::None, b"", b"", |h| {
        h.handle = s.header.handle;
        h.length = 0;
    });
    assert_status(&r, Status::PreconditionFailed);
    let r = w.call(Op::Abort, Mode::None, b"", b"", |h| {
        h.handle = s.header.handle
    });
    assert_status(&r, Status::UnknownHandle);
    assert_eq!(w.get(b"k", Mode::Copy, 0, 0).body, b"new");
}

#[test]
fn if_version_on_delete() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    let v = version(&w.put(b"k", Mode::Copy, b"keep"));
    for (flags, stale) in [(0, v + 1), (req_flags::DURABLE, v.wrapping_sub(1))] {
        let r = w.call(Op::Delete, Mode::None, b"k", b"", |h| {
            h.flags = req_flags::IF_VERSION | flags;
            h.offset = stale;
        });
        assert_status(&r, Status::PreconditionFailed);
        assert!(r.message.contains(&v.to_string()), "{}", r.message);
        assert_unchanged(&mut w, b"k", b"keep", v);
    }
    let r = w.call(Op::Delete, Mode::None, b"k", b"", |h| {
        h.flags = req_flags::IF_VERSION | req_flags::DURABLE;
        h.offset = v;
    });
    assert_status(&r, Status::Ok);
    assert_status(&w.get(b"k", Mode::Copy, 0, 0), Status::NotFound);
    // Nothing there: the condition cannot hold.
    let r = w.call(Op::Delete, Mode::None, b"k", b"", |h| {
        h.flags = req_flags::IF_VERSION;
        h.offset = v;
    });
    assert_status(&r, Status::PreconditionFailed);
    // IF_ABSENT is not a DELETE flag.
    let r = w.call(Op::Delete, Mode::None, b"k", b"", |h| {
        h.flags = req_flags::IF_ABSENT
    });
    assert_status(&r, Status::BadRequest);
}

#[test]
fn conditions_work_over_v2_and_tcp() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let mut w = Wire::tcp(ts.server().tcp_addr().unwrap());
    w.hello(hello::caps::KNOWN, 16);
    let r = w.put_with(b"k", Mode::Splice, b"a", |h| h.flags = req_flags::IF_ABSENT);
    assert_status(&r, Status::Ok);
    let v = version(&r);
    let r = w.put_with(b"k", Mode::Copy, b"b", |h| {
        h.flags = req_flags::IF_VERSION | req_flags::ORDERED;
        h.offset = v + 5;
    });
    assert_status(&r, Status::PreconditionFailed);
    assert_eq!(r.header.version, Version::V2);
    assert_unchanged(&mut w, b"k", b"a", v);
}

/// Starts `n` writer threads; writer `i` connects to `ts` and returns `f(i, its
/// connection, barrier)`.
fn spawn_writers<T: Send + 'static>(
    n: usize,
    ts: &TestServer,
    barrier: &Arc<Barrier>,
    f: impl Fn(usize, Wire, &Barrier) -> T + Send + Copy + 'static,
) -> Vec<JoinHandle<T>> {
    (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let socket = ts.socket();
            std::thread::spawn(move || f(i, Wire::unix(&socket), &barrier))
        })
        .collect()
}

/// N writers on separate connections, each round: all read the current version, then all
/// PUT with IF_VERSION at once. Exactly one wins per round, and its bytes are what remains.
#[test]
fn concurrent_writers_exactly_one_winner_per_round() {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 25;
    let ts = TestServer::start_with(|c| c.workers = 3);
    let mut setup = Wire::unix(&ts.socket());
    assert_status(&setup.put(b"race", Mode::Copy, b"start"), Status::Ok);
    let barrier = Arc::new(Barrier::new(WRITERS + 1));
    let threads = spawn_writers(WRITERS, &ts, &barrier, |i, mut w, barrier| {
        let mode = [Mode::Copy, Mode::Splice, Mode::Fd][i % 3];
        let mut wins = Vec::new();
        for round in 0..ROUNDS {
            barrier.wait();
            let v = version(&w.head(b"race"));
            barrier.wait();
            let body = format!("round {round} writer {i}");
            let flags = req_flags::IF_VERSION | if i % 2 == 0 { req_flags::DURABLE } else { 0 };
            let r = cas_put(&mut w, mode, b"race", body.as_bytes(), flags, v, i % 2 == 1);
            match r.header.status {
                Status::Ok => wins.push(round),
                Status::PreconditionFailed => {}
                s => panic!("writer {i}: {s}: {}", r.message),
            }
            barrier.wait();
        }
        wins
    });
    // What the key holds at the end of each round.
    let remains: Vec<String> = (0..ROUNDS)
        .map(|_| {
            barrier.wait(); // read
            barrier.wait(); // write
            barrier.wait(); // done
            String::from_utf8(setup.get(b"race", Mode::Copy, 0, 0).body).unwrap()
        })
        .collect();
    let mut per_round = vec![0usize; ROUNDS];
    for (i, t) in threads.into_iter().enumerate() {
        for round in t.join().unwrap() {
            per_round[round] += 1;
            assert_eq!(
                remains[round],
                format!("round {round} writer {i}"),
                "the winner's bytes are what remains"
            );
        }
    }
    assert_eq!(per_round, vec![1; ROUNDS], "exactly one winner per round");
}

#[test]
fn concurrent_if_absent_has_one_winner() {
    const WRITERS: usize = 8;
    let ts = TestServer::start();
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads = spawn_writers(WRITERS, &ts, &barrier, |i, mut w, barrier| {
        w.hello(hello::caps::KNOWN, 4);
        barrier.wait();
        let r = w.put_with(b"once", Mode::Copy, format!("{i}").as_bytes(), |h| {
            h.flags = req_flags::IF_ABSENT
        });
        r.header.status
    });
    let statuses: Vec<Status> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == Status::Ok).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == Status::PreconditionFailed)
            .count(),
        WRITERS - 1
    );
}
