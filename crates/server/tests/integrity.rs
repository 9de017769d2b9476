//! Damaged object files through a real server over real sockets (DESIGN.md guarantee 7,
//! docs/STORAGE.md "Faults"): a flipped byte is never served in copy or splice mode, a
//! truncated file never gets a header announcing more than is sent (nor an fd shorter
//! than SIZE), another store's memory tier is not served, and a lost memory tier sends
//! reads and PUTs to disk.

mod util;

use objmapper_proto::*;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use util::wire::{pattern, pread_fd, Wire};
use util::*;

/// What a GET got, read off the socket by hand so that a short body shows up as such.
#[derive(Debug)]
enum Got {
    /// A whole reply: status and body.
    Reply(Status, Vec<u8>),
    /// A header announcing `announced` body bytes, then EOF after `got` of them.
    Cut { announced: u64, got: Vec<u8> },
}

fn raw_get(sock: &Path, key: &[u8], mode: Mode) -> Got {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut h = RequestHeader::new(Version::V1, Op::Get, 1);
    h.mode = mode;
    let mut frame = Vec::new();
    encode_request(&h, key, b"", &mut frame);
    std::io::Write::write_all(&mut s, &frame).unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if let Decoded::Complete(r, n) = decode_response(&buf).expect("a valid frame") {
            let announced = r.header.body_len();
            let status = r.header.status;
            let want = n + announced as usize;
            while buf.len() < want {
                let k = s.read(&mut chunk).unwrap();
                if k == 0 {
                    return Got::Cut {
                        announced,
                        got: buf[n..].to_vec(),
                    };
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            return Got::Reply(status, buf[n..want].to_vec());
        }
        let k = s.read(&mut chunk).unwrap();
        assert!(k > 0, "EOF inside a response header");
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn disk_only() -> TestServer {
    TestServer::start_with(|c| c.store.mem_capacity_bytes = 0)
}

fn put(ts: &TestServer, key: &[u8], data: &[u8]) -> u64 {
    let mut w = Wire::unix(&ts.socket());
    let r = w.put(key, Mode::Copy, data);
    assert_status(&r, Status::Ok);
    r.meta.version.unwrap()
}

fn flip_byte(path: &Path, at: u64) {
    objmapper_testkit::flip_bits(path, at, 0x01);
}

fn metric(ts: &TestServer, line_start: &str) -> u64 {
    let text = ts.server().metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Never the flipped bytes: NOT_FOUND, or a reply cut short (the header announced the
/// object, the connection closed before its last byte).
fn assert_not_served(got: &Got, data: &[u8], what: &str) {
    match got {
        Got::Reply(Status::NotFound, _) => {}
        Got::Cut { announced, got } => {
            assert_eq!(*announced, data.len() as u64, "{what}");
            assert!(got.len() < data.len(), "{what}");
        }
        Got::Reply(st, body) => panic!(
            "{what}: {st:?} with {} bytes (the damaged object served: {})",
            body.len(),
            body != data
        ),
    }
}

#[test]
fn a_flipped_byte_is_never_served_in_copy_or_splice_mode() {
    let mut ts = disk_only();
    let small = pattern(100_000, 1);
    let big = pattern(3 << 20, 2);
    let mut paths = Vec::new();
    for (key, data) in [
        (&b"small-copy"[..], &small),
        (b"small-splice", &small),
        (b"big-copy", &big),
        (b"big-splice", &big),
        (b"big-auto", &big),
    ] {
        let v = put(&ts, key, data);
        paths.push(ts.server().store().object_path(key, v));
    }
    let intact = pattern(50_000, 3);
    put(&ts, b"neighbour", &intact);
    ts.stop();
    for p in &paths {
        let len = std::fs::metadata(p).unwrap().len();
        flip_byte(p, len - 10);
    }
    ts.restart_with(|c| c.store.mem_capacity_bytes = 0);
    let sock = ts.socket();
    for (key, mode, data) in [
        (&b"small-copy"[..], Mode::Copy, &small),
        (b"small-splice", Mode::Splice, &small),
        (b"big-copy", Mode::Copy, &big),
        (b"big-splice", Mode::Splice, &big),
        (b"big-auto", Mode::Copy, &big),
    ] {
        let what = format!("{} {mode:?}", key.escape_ascii());
        assert_not_served(&raw_get(&sock, key, mode), data, &what);
        // Dropped: every mode answers NOT_FOUND from now on, fd mode included.
        for m in [Mode::Copy, Mode::Splice, Mode::Fd] {
            assert!(
                matches!(raw_get(&sock, key, m), Got::Reply(Status::NotFound, _)),
                "{what} then {m:?}"
            );
        }
    }
    assert_eq!(
        metric(&ts, "objmapper_corrupt_objects_total{reason=\"checksum\"}"),
        5
    );
    // The damage cost only the damaged objects.
    match raw_get(&sock, b"neighbour", Mode::Copy) {
        Got::Reply(Status::Ok, body) => assert!(body == intact),
        other => panic!("{other:?}"),
    }
    // And it stays dropped across a restart.
    ts.stop();
    ts.restart_with(|c| c.store.mem_capacity_bytes = 0);
    assert!(matches!(
        raw_get(&ts.socket(), b"big-copy", Mode::Copy),
        Got::Reply(Status::NotFound, _)
    ));
}

#[test]
fn a_truncated_file_is_not_found_in_every_mode() {
    // share_fds: the reader promised POSITIONAL_READS, so fd GETs get the shared
    // description.
    for share_fds in [false, true] {
        let mut ts = TestServer::start_with(|c| {
            c.store.mem_capacity_bytes = 0;
        });
        let data = pattern(400_000, 4);
        let modes = [Mode::Copy, Mode::Splice, Mode::Fd, Mode::Auto];
        let mut paths = Vec::new();
        for m in modes {
            let key = format!("{m:?}");
            let v = put(&ts, key.as_bytes(), &data);
            paths.push(ts.server().store().object_path(key.as_bytes(), v));
        }
        ts.stop();
        for p in &paths {
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(133_333)
                .unwrap();
        }
        ts.restart_with(|c| {
            c.store.mem_capacity_bytes = 0;
        });
        let mut w = Wire::unix(&ts.socket());
        if share_fds {
            let asked = hello::caps::FD_PASSING | hello::caps::POSITIONAL_READS;
            assert_eq!(w.hello(asked, 1).capabilities, asked);
        }
        for m in modes {
            let key = format!("{m:?}");
            // Through the client's wire: a cut reply would panic inside `get`.
            let r = w.get(key.as_bytes(), m, 0, 0);
            assert_status(&r, Status::NotFound);
            assert!(
                r.fd.is_none(),
                "share_fds={share_fds} {m:?}: an fd for a damaged file"
            );
        }
        assert_eq!(
            metric(&ts, "objmapper_corrupt_objects_total{reason=\"size\"}"),
            4,
            "share_fds={share_fds}"
        );
    }
}

#[test]
fn another_stores_mem_dir_is_not_served_or_imported() {
    let dir = tempfile::tempdir().unwrap();
    let mem: PathBuf = dir.path().join("shared-mem");
    let start = |name: &str, mem: &Path| {
        let mut cfg = config(
            dir.path().join(format!("{name}.sock")),
            dir.path().join(name),
        );
        cfg.store.mem_dir = Some(mem.to_path_buf());
        objmapper_server::Server::start(cfg).expect("starts")
    };
    let a = start("a", &mem);
    let mut w = Wire::unix(a.socket_path());
    assert_status(&w.put(b"k", Mode::Copy, b"store A's object"), Status::Ok);
    drop(w);
    a.shutdown().unwrap();

    let b = start("b", &mem);
    let mut w = Wire::unix(b.socket_path());
    for m in [Mode::Copy, Mode::Fd, Mode::Splice] {
        assert_status(&w.get(b"k", m, 0, 0), Status::NotFound);
    }
    assert_status(&w.head(b"k"), Status::NotFound);
    drop(w);
    b.shutdown().unwrap();
    // Nothing of A's was written behind into B's disk tier.
    let b = start("b", &dir.path().join("b-own-mem"));
    let mut w = Wire::unix(b.socket_path());
    assert_status(&w.get(b"k", Mode::Copy, 0, 0), Status::NotFound);
    drop(w);
    b.shutdown().unwrap();
    // A still has its object (from its disk).
    let a = start("a", &dir.path().join("a-new-mem"));
    let mut w = Wire::unix(a.socket_path());
    let r = w.get(b"k", Mode::Copy, 0, 0);
    assert_status(&r, Status::Ok);
    assert_eq!(r.body, b"store A's object");
    drop(w);
    a.shutdown().unwrap();
}

#[test]
fn a_lost_memory_copy_or_tier_falls_back_to_disk() {
    let ts = TestServer::start();
    let data = pattern(20_000, 5);
    let mut versions = Vec::new();
    for k in [&b"one"[..], b"two", b"three"] {
        versions.push(put(&ts, k, &data));
    }
    assert!(ts.server().store().wait_idle(Duration::from_secs(10)));
    let store = ts.server().store();
    // One memory file removed.
    std::fs::remove_file(store.mem_object_path(b"one", versions[0])).unwrap();
    let mut w = Wire::unix(&ts.socket());
    let r = w.get(b"one", Mode::Copy, 0, 0);
    assert_status(&r, Status::Ok);
    assert!(r.body == data);
    // The whole memory tier removed (once the promotion that read may queue is done:
    // a file created meanwhile would make the removal fail).
    assert!(store.wait_idle(Duration::from_secs(10)));
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(ts.mem_dir()) {
        tries += 1;
        assert!(tries < 50, "removing the memory tier: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = w.get(b"two", Mode::Fd, 0, 0);
    assert_status(&r, Status::Ok);
    assert!(pread_fd(r.fd.as_ref().unwrap(), 0, data.len() as u64) == data);
    let r = w.get(b"three", Mode::Splice, 0, 0);
    assert_status(&r, Status::Ok);
    assert!(r.body == data);
    // Default PUTs still succeed, on disk.
    let fresh = pattern(30_000, 6);
    assert_status(&w.put(b"fresh", Mode::Copy, &fresh), Status::Ok);
    let r = w.get(b"fresh", Mode::Copy, 0, 0);
    assert_status(&r, Status::Ok);
    assert!(r.body == fresh);
    assert_eq!(r.meta.tier, Some(objmapper_proto::Tier::Disk));
    assert_eq!(
        metric(&ts, "objmapper_corrupt_objects_total{reason=\"missing\"}"),
        3
    );
}

#[test]
fn journal_damage_is_counted_and_its_objects_come_back_from_their_labels() {
    let mut ts = disk_only();
    let objs: Vec<(Vec<u8>, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("j{i}").into_bytes(),
                pattern(3000 + i * 100, i as u64),
            )
        })
        .collect();
    let versions: Vec<u64> = objs.iter().map(|(k, v)| put(&ts, k, v)).collect();
    assert_eq!(metric(&ts, "objmapper_journal_damage{tier=\"disk\"} "), 0);
    ts.stop();
    // A flipped byte in the middle of the journal (a PUT record: they make up most of it).
    let journal = ts.data_dir().join("journal");
    let len = std::fs::metadata(&journal).unwrap().len();
    flip_byte(&journal, len / 2);
    ts.restart_with(|c| c.store.mem_capacity_bytes = 0);
    assert!(metric(&ts, "objmapper_journal_damage{tier=\"disk\"} ") >= 1);
    let mut w = Wire::unix(&ts.socket());
    for ((k, v), ver) in objs.iter().zip(&versions) {
        for m in [Mode::Copy, Mode::Fd, Mode::Splice] {
            let r = w.get(k, m, 0, 0);
            assert_status(&r, Status::Ok);
            assert_eq!(r.meta.version, Some(*ver), "same version, so the same ETag");
            if m != Mode::Fd {
                assert_eq!(&r.body, v);
            }
        }
    }
    drop(w);
    // The journal is gone as well: every object comes back from its label.
    ts.stop();
    std::fs::remove_file(&journal).unwrap();
    ts.restart_with(|c| c.store.mem_capacity_bytes = 0);
    assert_eq!(metric(&ts, "objmapper_readmitted{tier=\"disk\"} "), 6);
    assert_eq!(metric(&ts, "objmapper_unlabelled_total{tier=\"disk\"} "), 0);
    let mut w = Wire::unix(&ts.socket());
    for (k, v) in &objs {
        let r = w.get(k, Mode::Copy, 0, 0);
        assert_status(&r, Status::Ok);
        assert_eq!(&r.body, v);
    }
}
