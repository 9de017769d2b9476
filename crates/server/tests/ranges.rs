//! Range reads (GET `offset` + `length`, length 0 = to the end) in every mode and on both
//! stream transports: the bytes are exactly the slice, fd mode states the range in the
//! response's `offset`/`length`, SIZE stays the whole object's size, and a range outside
//! the object is RANGE_NOT_SATISFIABLE with a message naming the object's size.

mod util;

use objmapper_proto::*;
use util::wire::{pattern, pread_fd, Wire};
use util::*;

fn start() -> TestServer {
    TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()))
}

fn tcp(ts: &TestServer) -> Wire {
    Wire::tcp(ts.server().tcp_addr().unwrap())
}

/// The content a GET reply delivers: the body, or `length` bytes of the fd at `offset`.
fn content(r: &Reply) -> Vec<u8> {
    match &r.fd {
        Some(fd) => pread_fd(fd, r.header.offset, r.header.length),
        None => {
            assert!(r.header.has_body());
            assert_eq!(r.body.len() as u64, r.header.length);
            r.body.clone()
        }
    }
}

/// Satisfiable ranges of an object of `size` bytes, with the slice each one selects
/// (HTTP semantics: a range running past the end is cut at the end).
fn good_ranges(size: u64) -> Vec<(u64, u64, std::ops::Range<usize>)> {
    let s = size as usize;
    let mut v = vec![(0, 0, 0..s), (0, size + 1, 0..s)];
    if size > 0 {
        v.push((size - 1, 2, s - 1..s));
        v.push((0, 1, 0..1));
        v.push((size - 1, 1, s - 1..s));
        v.push((size - 1, 0, s - 1..s));
        v.push((0, size, 0..s));
    }
    if size > 1 {
        v.push((1, u64::MAX, 1..s));
    }
    if size > 10_000 {
        v.push((1234, 5000, 1234..6234));
        v.push((size / 2, 0, s / 2..s));
        v.push((7, size - 7, 7..s));
    }
    if size > 800_000 {
        // Larger than the copy path's inline buffer: streamed from an offset.
        v.push((300_001, 500_000, 300_001..800_001));
    }
    v
}

/// Ranges that start at or past the end (offset 0 is always the whole object).
fn bad_ranges(size: u64) -> Vec<(u64, u64)> {
    let mut v = vec![(size + 1, 0), (size + 1, 1), (u64::MAX, 1)];
    if size > 0 {
        v.push((size, 0));
        v.push((size, 1));
    }
    v
}

fn check_modes(w: &mut Wire, modes: &[Mode], key: &[u8], data: &[u8]) {
    let size = data.len() as u64;
    for &mode in modes {
        for (off, len, slice) in good_ranges(size) {
            let r = w.get(key, mode, off, len);
            assert_status(&r, Status::Ok);
            let what = format!("{mode} range {off}+{len} of {size}");
            assert_eq!(
                r.meta.size,
                Some(size),
                "{what}: SIZE is the whole object's"
            );
            assert_eq!(r.header.offset, off, "{what}");
            assert_eq!(r.header.length, slice.len() as u64, "{what}");
            match r.header.mode {
                Mode::Fd => {
                    let fd = r.fd.as_ref().expect("fd mode attaches the fd");
                    // The fd covers the whole object.
                    assert_eq!(read_fd(fd), data, "{what}");
                }
                Mode::Copy | Mode::Splice => assert!(r.fd.is_none()),
                m => panic!("{what}: answered in mode {m}"),
            }
            if mode != Mode::Auto {
                assert_eq!(r.header.mode, mode, "{what}");
            }
            assert!(content(&r) == data[slice], "{what}: wrong bytes");
        }
        for (off, len) in bad_ranges(size) {
            let r = w.get(key, mode, off, len);
            assert_status(&r, Status::RangeNotSatisfiable);
            assert!(r.fd.is_none() && r.body.is_empty());
            assert!(
                r.message.contains(&format!("{size} bytes")),
                "{mode} {off}+{len}: message does not name the size: {}",
                r.message
            );
        }
        // The connection is still in sync after the refusals.
        assert_eq!(content(&w.get(key, mode, 0, 0)), data);
    }
}

#[test]
fn ranges_over_unix_in_every_mode() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    for (key, size) in [
        (&b"big"[..], 1 << 20),
        (b"mid", 100_000),
        (b"one", 1),
        (b"empty", 0),
    ] {
        let data = pattern(size, size as u64);
        assert_status(&w.put(key, Mode::Copy, &data), Status::Ok);
        check_modes(
            &mut w,
            &[Mode::Fd, Mode::Copy, Mode::Splice, Mode::Auto],
            key,
            &data,
        );
    }
}

#[test]
fn ranges_over_tcp_in_copy_splice_and_auto() {
    let ts = start();
    let mut w = tcp(&ts);
    for (key, size) in [(&b"big"[..], 1 << 20), (b"mid", 100_000), (b"empty", 0)] {
        let data = pattern(size, size as u64 + 1);
        assert_status(&w.put(key, Mode::Copy, &data), Status::Ok);
        check_modes(&mut w, &[Mode::Copy, Mode::Splice, Mode::Auto], key, &data);
    }
}

#[test]
fn ranges_in_a_v2_session() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    w.hello(hello::caps::KNOWN, 8);
    let data = pattern(100_000, 9);
    assert_status(&w.put(b"k", Mode::Splice, &data), Status::Ok);
    check_modes(
        &mut w,
        &[Mode::Fd, Mode::Copy, Mode::Splice, Mode::Auto],
        b"k",
        &data,
    );
}

#[test]
fn a_range_of_a_missing_object_is_not_found() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    assert_status(&w.get(b"nope", Mode::Copy, 5, 5), Status::NotFound);
    assert_status(&w.get(b"nope", Mode::Splice, 0, 0), Status::NotFound);
}

#[test]
fn range_fields_on_other_ops_are_still_bad_request() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    assert_status(&w.put(b"k", Mode::Copy, b"abc"), Status::Ok);
    let r = w.call(Op::Head, Mode::None, b"k", b"", |h| h.offset = 1);
    assert_status(&r, Status::BadRequest);
    let r = w.call(Op::Delete, Mode::None, b"k", b"", |h| h.offset = 1);
    assert_status(&r, Status::BadRequest);
    assert_eq!(w.get(b"k", Mode::Copy, 1, 1).body, b"b");
}
