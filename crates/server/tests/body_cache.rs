//! The body cache (docs/STORAGE.md, "The body cache"): a small object's bytes sent
//! inline are read from its file once, checked against the record, and kept in memory,
//! so that later GETs read no file. What it must never do: answer for a version that is
//! no longer current (replaced, deleted, banned), serve bytes that failed their check,
//! or grow past its budget.

mod util;

use objmapper_proto::*;
use std::time::{Duration, Instant};
use util::wire::{pattern, Wire};
use util::*;

fn metric(ts: &TestServer, name: &str, tier: &str) -> u64 {
    let text = ts.server().metrics_text();
    let line = format!("{name}{{tier=\"{tier}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn cached(ts: &TestServer, tier: &str) -> (u64, u64) {
    (
        metric(ts, "objmapper_body_cache_objects", tier),
        metric(ts, "objmapper_body_cache_bytes", tier),
    )
}

fn put(w: &mut Wire, key: &[u8], data: &[u8]) -> u64 {
    let r = w.put(key, Mode::Copy, data);
    assert_status(&r, Status::Ok);
    r.meta.version.unwrap()
}

fn get_copy(w: &mut Wire, key: &[u8]) -> Reply {
    w.get(key, Mode::Copy, 0, 0)
}

fn assert_body(r: &Reply, want: &[u8], what: &str) {
    assert_status(r, Status::Ok);
    assert!(
        r.body == want,
        "{what}: {} bytes, not the stored ones",
        r.body.len()
    );
}

/// Waits (bounded) for the cache of `tier` to hold `objects` bodies.
fn wait_cached(ts: &TestServer, tier: &str, objects: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    while cached(ts, tier).0 != objects {
        assert!(Instant::now() < end, "{tier}: {:?}", cached(ts, tier));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_small_body_is_read_once_and_later_gets_read_no_file() {
    // Disk only, so the object's file is at a known path and write-behind moves nothing.
    let ts = TestServer::start_with(|c| c.store.mem_capacity_bytes = 0);
    let mut w = Wire::unix(&ts.socket());
    let data = pattern(4096, 1);
    let v = put(&mut w, b"k", &data);
    assert_eq!(cached(&ts, "disk"), (0, 0), "a PUT caches nothing");
    assert_body(&get_copy(&mut w, b"k"), &data, "first GET");
    assert_eq!(cached(&ts, "disk"), (1, 4096));
    // Damage the file behind the server's back: a GET that read it would refuse it
    // (checksum), so an intact answer shows the bytes came from memory.
    let path = ts.server().store().object_path(b"k", v);
    objmapper_testkit::flip_bits(&path, 100, 0x01);
    for mode in [Mode::Copy, Mode::Auto] {
        assert_body(&w.get(b"k", mode, 0, 0), &data, &format!("{mode:?}"));
    }
    // Ranges are cut from the kept bytes.
    let r = w.get(b"k", Mode::Copy, 1000, 24);
    assert_body(&r, &data[1000..1024], "range");
    assert_eq!((r.header.offset, r.header.length), (1000, 24));
    assert_status(
        &w.get(b"k", Mode::Copy, 4096, 1),
        Status::RangeNotSatisfiable,
    );
    // Counted as hits like any other GET (the unsatisfiable range opened nothing: not
    // counted, as before the cache).
    let st = http::get(
        &http::unix(ts.server().admin_socket_path().unwrap()),
        "/v1/stats",
    )
    .json();
    assert_eq!(st["hits"].as_u64(), Some(4), "{st}");
    assert_eq!(st["tiers"]["disk"]["body_cache_objects"].as_u64(), Some(1));
}

#[test]
fn a_replaced_deleted_or_banned_version_is_never_answered_from_memory() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    let (a, b) = (pattern(2000, 2), pattern(3000, 3));
    put(&mut w, b"k", &a);
    assert_body(&get_copy(&mut w, b"k"), &a, "v1");
    assert_eq!(cached(&ts, "memory"), (1, 2000));
    // A new version: served at once, and the old body is gone with the old file.
    put(&mut w, b"k", &b);
    assert_body(&get_copy(&mut w, b"k"), &b, "v2");
    wait_cached(&ts, "memory", 1);
    assert_eq!(cached(&ts, "memory"), (1, 3000));
    // DELETE.
    assert_status(
        &w.call(Op::Delete, Mode::None, b"k", b"", |_| {}),
        Status::Ok,
    );
    assert_status(&get_copy(&mut w, b"k"), Status::NotFound);
    wait_cached(&ts, "memory", 0);
    // BAN: the next GET does not find the version, cached body or not.
    put(&mut w, b"p/1", &a);
    assert_body(&get_copy(&mut w, b"p/1"), &a, "before the ban");
    let r = w.call(Op::Ban, Mode::None, br#"key ^ "p/""#, b"", |_| {});
    assert_status(&r, Status::Ok);
    for mode in [Mode::Copy, Mode::Auto, Mode::Fd] {
        assert_status(&w.get(b"p/1", mode, 0, 0), Status::NotFound);
    }
}

#[test]
fn a_body_that_fails_its_check_on_first_read_is_not_served_nor_kept() {
    let mut ts = TestServer::start_with(|c| c.store.mem_capacity_bytes = 0);
    let mut w = Wire::unix(&ts.socket());
    let data = pattern(8000, 4);
    let v = put(&mut w, b"k", &data);
    let path = ts.server().store().object_path(b"k", v);
    drop(w);
    ts.stop();
    objmapper_testkit::flip_bits(&path, 10, 0x80);
    ts.restart_with(|c| c.store.mem_capacity_bytes = 0);
    let mut w = Wire::unix(&ts.socket());
    for mode in [Mode::Copy, Mode::Auto, Mode::Copy] {
        assert_status(&w.get(b"k", mode, 0, 0), Status::NotFound);
    }
    assert_eq!(cached(&ts, "disk"), (0, 0));
}

#[test]
fn the_budget_bounds_the_cache_and_zero_turns_it_off() {
    let ts = TestServer::start_with(|c| c.store.body_cache_bytes = 10 * 1024);
    let mut w = Wire::unix(&ts.socket());
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| pattern(4096, 10 + i)).collect();
    for round in 0..3 {
        for (i, b) in bodies.iter().enumerate() {
            let key = format!("k{i}");
            if round == 0 {
                put(&mut w, key.as_bytes(), b);
            }
            assert_body(&get_copy(&mut w, key.as_bytes()), b, &key);
            let (n, bytes) = cached(&ts, "memory");
            assert!(bytes <= 10 * 1024 && n == bytes / 4096, "{n} {bytes}");
        }
    }
    assert_eq!(cached(&ts, "memory"), (2, 8192));
    // Larger than SMALL_BODY_MAX (16 KiB): read every time, never kept.
    let big = pattern(16 * 1024 + 1, 20);
    put(&mut w, b"big", &big);
    assert_body(&get_copy(&mut w, b"big"), &big, "big");
    assert_eq!(cached(&ts, "memory"), (2, 8192));

    let ts = TestServer::start_with(|c| c.store.body_cache_bytes = 0);
    let mut w = Wire::unix(&ts.socket());
    put(&mut w, b"k", &bodies[0]);
    for _ in 0..2 {
        assert_body(&get_copy(&mut w, b"k"), &bodies[0], "budget 0");
    }
    assert_eq!(cached(&ts, "memory"), (0, 0));
}

/// Kept bodies of 2 KiB and more are sent from the cache itself, after the frame (fewer
/// are copied into it): every size around that line, whole and in ranges, over Unix and
/// TCP, many replies in one batch, arrives byte for byte.
#[test]
fn kept_bodies_sent_from_the_cache_arrive_whole_in_batches() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let sizes = [1, 2047, 2048, 2049, 4096, 9000, 16 * 1024];
    let mut w = Wire::unix(&ts.socket());
    let objects: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n, n as u64)).collect();
    for (i, o) in objects.iter().enumerate() {
        put(&mut w, format!("s{i}").as_bytes(), o);
        // The first GET reads the file and keeps the bytes; later ones come from memory.
        assert_body(&get_copy(&mut w, format!("s{i}").as_bytes()), o, "first");
    }
    let tcp = Wire::tcp(ts.server().tcp_addr().unwrap());
    for mut w in [w, tcp] {
        let mut batch = Vec::new();
        let mut want = Vec::new();
        for round in 0..3 {
            for (i, o) in objects.iter().enumerate() {
                let key = format!("s{i}");
                // Whole, then a range from 100 on of at least 2 KiB where there is one.
                let (off, len) = match round {
                    1 if o.len() > 2200 => (100, o.len() - 100),
                    2 if o.len() > 4200 => (7, 4000),
                    _ => (0, 0),
                };
                let (_, b) = w.frame(Op::Get, Mode::Copy, key.as_bytes(), b"", |h| {
                    h.offset = off as u64;
                    h.length = len as u64;
                });
                batch.extend_from_slice(&b);
                want.push(if len == 0 {
                    o.clone()
                } else {
                    o[off..off + len].to_vec()
                });
            }
        }
        w.send_bytes(&batch);
        for (n, bytes) in want.iter().enumerate() {
            assert_body(&w.recv(), bytes, &format!("reply {n}"));
        }
    }
    assert_eq!(cached(&ts, "memory").0, sizes.len() as u64);
}
