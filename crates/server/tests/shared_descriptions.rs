//! Shared descriptions by agreement (docs/PROTOCOL.md, "Shared descriptions"): a client
//! that promises POSITIONAL_READS in its HELLO gets one cached file description per
//! version for its fd-mode GETs, shared with every other client that promised the same;
//! every other client (V1, or V2 without the promise) gets a private description per GET
//! and never shares an offset or status flags with anyone.

mod util;

use objmapper_proto::hello::caps;
use objmapper_proto::*;
use std::os::fd::OwnedFd;
use util::wire::{pattern, Wire};
use util::*;

const PROMISE: u32 = caps::FD_PASSING | caps::POSITIONAL_READS;
const BYTES: &[u8] = b"0123456789abcdef";

fn offset_of(fd: &OwnedFd) -> u64 {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).unwrap()
}

/// read(2): the call that uses (and moves) the description's offset.
fn read_some(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    let got = rustix::io::read(fd, &mut b).unwrap();
    b.truncate(got);
    b
}

fn nonblocking(fd: &OwnedFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

/// A V2 session that made the promise, and was granted it.
fn promising(ts: &TestServer) -> Wire {
    let mut w = Wire::unix(&ts.socket());
    let g = w.hello(PROMISE, 1);
    assert_eq!(
        g.capabilities, PROMISE,
        "the promise is granted with FD_PASSING"
    );
    w
}

fn fd_get(w: &mut Wire, key: &[u8]) -> OwnedFd {
    let r = w.get(key, Mode::Fd, 0, 0);
    assert_status(&r, Status::Ok);
    r.fd.expect("an fd")
}

#[test]
fn hello_grants_positional_reads_only_where_fds_travel() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    // Unix: echoed with FD_PASSING, alone or with every feature.
    for asked in [PROMISE, caps::KNOWN | caps::POSITIONAL_READS] {
        let g = Wire::unix(&ts.socket()).hello(asked, 4);
        assert_eq!(g.capabilities, asked, "asked {asked:#x}");
    }
    // Without FD_PASSING there is no descriptor to share: not granted.
    let asked = caps::PIPELINE | caps::POSITIONAL_READS;
    let g = Wire::unix(&ts.socket()).hello(asked, 4);
    assert_eq!(g.capabilities, caps::PIPELINE);
    // TCP never passes fds: not granted there either.
    let g = Wire::tcp(ts.server().tcp_addr().unwrap()).hello(caps::DEFINED, 4);
    assert_eq!(g.capabilities, caps::PIPELINE | caps::OUT_OF_ORDER);
    // Asking for every feature makes no promise.
    assert_eq!(caps::KNOWN & caps::POSITIONAL_READS, 0);
    let g = Wire::unix(&ts.socket()).hello(caps::KNOWN, 4);
    assert_eq!(g.capabilities & caps::POSITIONAL_READS, 0);
}

#[test]
fn promising_clients_share_one_description_per_version() {
    let ts = TestServer::start();
    let mut a = promising(&ts);
    let mut b = promising(&ts);
    assert_status(&a.put(b"k", Mode::Copy, BYTES), Status::Ok);
    let a1 = fd_get(&mut a, b"k");
    let a2 = fd_get(&mut a, b"k");
    let b1 = fd_get(&mut b, b"k");
    // Two GETs on one connection, and a GET on another: one description. A read()
    // through one moves the offset all of them see.
    assert_eq!(read_some(&a1, 4), b"0123");
    assert_eq!((offset_of(&a2), offset_of(&b1)), (4, 4));
    assert_eq!(
        read_some(&b1, 2),
        b"45",
        "b's read() continues where a's stopped"
    );
    assert_eq!(offset_of(&a1), 6);
    // Status flags are shared too.
    rustix::fs::fcntl_setfl(&a1, rustix::fs::OFlags::NONBLOCK).unwrap();
    assert!(nonblocking(&b1));
    rustix::fs::fcntl_setfl(&a1, rustix::fs::OFlags::empty()).unwrap();
    // What the promise allows is unaffected by any of it: pread reads the right bytes.
    assert_eq!(read_fd(&b1), BYTES);
    // Still read-only.
    let fl = rustix::fs::fcntl_getfl(&b1).unwrap();
    assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::RDONLY);
    assert!(rustix::io::write(&b1, b"x").is_err());
    // An auto-mode GET that resolves to an fd shares it too.
    let big = pattern(64 << 10, 3);
    assert_status(&a.put(b"big", Mode::Copy, &big), Status::Ok);
    let r = a.get(b"big", Mode::Auto, 0, 0);
    assert_eq!(r.header.mode, Mode::Fd);
    let auto = r.fd.unwrap();
    let again = fd_get(&mut b, b"big");
    rustix::fs::seek(&auto, rustix::fs::SeekFrom::Start(100)).unwrap();
    assert_eq!(offset_of(&again), 100);
}

#[test]
fn a_client_that_did_not_promise_never_shares_an_offset() {
    let ts = TestServer::start();
    let mut sharer = promising(&ts);
    assert_status(&sharer.put(b"k", Mode::Copy, BYTES), Status::Ok);
    // The promising client holds the cached description, twice.
    let s1 = fd_get(&mut sharer, b"k");
    let s2 = fd_get(&mut sharer, b"k");

    // V2 with FD_PASSING but no promise, and V1 (no HELLO at all).
    let mut v2 = Wire::unix(&ts.socket());
    assert_eq!(
        v2.hello(caps::KNOWN, 4).capabilities & caps::POSITIONAL_READS,
        0
    );
    let mut v1 = Wire::unix(&ts.socket());
    for (who, w) in [("v2 without the promise", &mut v2), ("v1", &mut v1)] {
        rustix::fs::seek(&s1, rustix::fs::SeekFrom::Start(0)).unwrap();
        let p1 = fd_get(w, b"k");
        let p2 = fd_get(w, b"k");
        assert_eq!((offset_of(&p1), offset_of(&p2)), (0, 0), "{who}");
        // read() on the private fd moves neither the sharers' offset nor its own
        // other GET's.
        assert_eq!(read_some(&p1, 5), b"01234", "{who}");
        assert_eq!(
            offset_of(&s1),
            0,
            "{who}: a private read moved the shared offset"
        );
        assert_eq!(offset_of(&p2), 0, "{who}: two GETs shared an offset");
        // And the sharers' read() does not move the private one.
        assert_eq!(read_some(&s2, 3), b"012", "{who}");
        assert_eq!(offset_of(&s1), 3, "{who}");
        assert_eq!(
            offset_of(&p1),
            5,
            "{who}: a shared read moved a private offset"
        );
        assert_eq!(read_some(&p2, 16), BYTES, "{who}");
        // Status flags stay private as well.
        rustix::fs::fcntl_setfl(&s1, rustix::fs::OFlags::NONBLOCK).unwrap();
        assert!(
            !nonblocking(&p1),
            "{who}: the sharers' flags reached a private fd"
        );
        rustix::fs::fcntl_setfl(&p1, rustix::fs::OFlags::NONBLOCK).unwrap();
        rustix::fs::fcntl_setfl(&s1, rustix::fs::OFlags::empty()).unwrap();
        assert!(
            !nonblocking(&s2),
            "{who}: a private fd's flags reached the sharers"
        );
        assert!(!nonblocking(&p2), "{who}");
    }
}

#[test]
fn the_promise_holds_for_the_connection_that_made_it_only() {
    let ts = TestServer::start();
    let mut sharer = promising(&ts);
    assert_status(&sharer.put(b"k", Mode::Copy, BYTES), Status::Ok);
    let s = fd_get(&mut sharer, b"k");
    // A second connection from the same process, without the promise, is private.
    let mut other = Wire::unix(&ts.socket());
    other.hello(caps::FD_PASSING, 1);
    let p = fd_get(&mut other, b"k");
    rustix::fs::seek(&s, rustix::fs::SeekFrom::Start(7)).unwrap();
    assert_eq!(offset_of(&p), 0);
    // Once the promising connection is gone, the next one that promises still shares
    // the cached description (it belongs to the store, not to a connection).
    drop(sharer);
    let mut next = promising(&ts);
    let n = fd_get(&mut next, b"k");
    assert_eq!(offset_of(&n), 7);
}

#[test]
fn the_server_answers_the_positional_hello_vector_byte_for_byte() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    w.send_bytes(&objmapper_testkit::protocol_vector(
        "hello-positional-request",
    ));
    let r = w.recv();
    let mut got = Vec::new();
    encode_response(&r.header, &r.message, &[], &mut got);
    got.extend_from_slice(&r.body);
    assert_eq!(
        got,
        objmapper_testkit::protocol_vector("hello-positional-response")
    );
}

fn fd_replies(ts: &TestServer, description: &str) -> u64 {
    let want = format!("objmapper_fd_replies_total{{description=\"{description}\"}} ");
    let text = ts.server().metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("no {want} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_metrics_count_shared_and_private_fd_replies() {
    let ts = TestServer::start();
    assert_eq!(
        (fd_replies(&ts, "shared"), fd_replies(&ts, "private")),
        (0, 0)
    );
    let mut promised = promising(&ts);
    let mut plain = Wire::unix(&ts.socket());
    assert_status(&plain.put(b"k", Mode::Copy, BYTES), Status::Ok);
    for _ in 0..3 {
        fd_get(&mut promised, b"k");
    }
    for _ in 0..2 {
        fd_get(&mut plain, b"k");
    }
    // Neither a miss, nor bytes sent inline, nor a PUT's staging memfd is counted.
    assert_status(&plain.get(b"absent", Mode::Fd, 0, 0), Status::NotFound);
    assert_status(&promised.get(b"k", Mode::Copy, 0, 0), Status::Ok);
    let staged = plain.call(Op::Put, Mode::Fd, b"staged", b"", |_| {});
    assert_status(&staged, Status::Ok);
    let memfd = std::fs::File::from(staged.fd.expect("a staging memfd"));
    std::io::Write::write_all(&mut &memfd, BYTES).unwrap();
    let c = plain.call(Op::Commit, Mode::None, b"", b"", |h| {
        h.handle = staged.header.handle;
        h.length = BYTES.len() as u64;
    });
    assert_status(&c, Status::Ok);
    assert_eq!(fd_replies(&ts, "shared"), 3);
    assert_eq!(fd_replies(&ts, "private"), 2);
}
