//! splice mode: GET bodies go file -> socket with sendfile(2), PUT bodies socket -> pipe ->
//! staging memfd with splice(2); the wire looks like copy (flag BODY), the reply's mode is
//! Splice. Pipes come from a per-worker pool: they are reused, never one per request.

mod util;

use objmapper_proto::*;
use std::time::Duration;
use util::wire::{pattern, Wire};
use util::*;

const MIB: usize = 1 << 20;

fn start() -> TestServer {
    TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// PUT in splice mode, the header first and the body only once the server has had time
/// to take the header, so the whole body is spliced.
fn put_split(w: &mut Wire, key: &[u8], body: &[u8]) -> Reply {
    let (id, frame) = w.frame(Op::Put, Mode::Splice, key, b"", |h| {
        h.length = body.len() as u64
    });
    w.send_bytes(&frame);
    std::thread::sleep(Duration::from_millis(20));
    w.send_bytes(body);
    let r = w.recv();
    assert_eq!(r.header.request_id, id);
    r
}

fn five_mib_round_trip(w: &mut Wire) {
    let data = pattern(5 * MIB, 5);
    let r = put_split(w, b"five", &data);
    assert_status(&r, Status::Ok);
    assert_eq!(r.meta.size, Some(data.len() as u64));
    // Header and body in one write as well.
    let data2 = pattern(5 * MIB, 6);
    assert_status(&w.put(b"five2", Mode::Splice, &data2), Status::Ok);
    for (key, want) in [(&b"five"[..], &data), (b"five2", &data2)] {
        let g = w.get(key, Mode::Splice, 0, 0);
        assert_status(&g, Status::Ok);
        assert_eq!(g.header.mode, Mode::Splice);
        assert!(g.header.has_body() && !g.header.fd_attached());
        assert_eq!(g.header.length, want.len() as u64);
        assert!(&g.body == want, "splice GET returned other bytes");
        // The same bytes in copy mode, and the checksum matches.
        let c = w.get(key, Mode::Copy, 0, 0);
        assert!(&c.body == want);
        assert_eq!(
            c.meta.checksum,
            Some(xxhash_rust::xxh3::xxh3_64(want)),
            "stored checksum"
        );
    }
}

#[test]
fn five_mib_over_unix() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    five_mib_round_trip(&mut w);
    assert!(ts.server().pipes_created() >= 1, "the PUT body was spliced");
}

#[test]
fn five_mib_over_tcp() {
    let ts = start();
    let mut w = Wire::tcp(ts.server().tcp_addr().unwrap());
    five_mib_round_trip(&mut w);
    assert!(ts.server().pipes_created() >= 1, "the PUT body was spliced");
}

#[test]
fn empty_and_small_objects() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    let r = w.put(b"empty", Mode::Splice, b"");
    assert_status(&r, Status::Ok);
    assert_eq!(r.meta.size, Some(0));
    let g = w.get(b"empty", Mode::Splice, 0, 0);
    assert_status(&g, Status::Ok);
    assert_eq!((g.header.length, g.body.len()), (0, 0));
    assert!(g.header.has_body());
    assert_status(&w.put(b"tiny", Mode::Splice, b"x"), Status::Ok);
    assert_eq!(w.get(b"tiny", Mode::Splice, 0, 0).body, b"x");
    assert_eq!(w.get(b"tiny", Mode::Copy, 0, 0).body, b"x");
    // Splice GET of a missing key, and the connection stays in sync.
    assert_status(&w.get(b"nope", Mode::Splice, 0, 0), Status::NotFound);
    assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
}

#[test]
fn the_pipe_pool_does_not_grow_per_request() {
    let ts = start();
    // Warm up: the first splice PUT of each worker creates its pipe.
    let mut conns: Vec<Wire> = (0..4).map(|_| Wire::unix(&ts.socket())).collect();
    let body = pattern(200 * 1024, 1);
    for w in conns.iter_mut() {
        assert_status(&w.put(b"warm", Mode::Splice, &body), Status::Ok);
    }
    let workers = 2;
    let pipes = ts.server().pipes_created();
    assert!(
        (1..=workers).contains(&pipes),
        "{pipes} pipes for {workers} workers"
    );
    let fds = open_fds();
    // 1000 splice requests: PUTs large enough that most of each body is spliced (more
    // than the server's 128 KiB read buffer), and GETs.
    for i in 0..1000usize {
        let w = &mut conns[i % 4];
        let key = format!("k{}", i % 7);
        if i % 2 == 0 {
            let r = w.put_with(key.as_bytes(), Mode::Splice, &body, |h| {
                h.flags = req_flags::EPHEMERAL
            });
            assert_status(&r, Status::Ok);
        } else {
            let r = w.get(key.as_bytes(), Mode::Splice, 0, 0);
            if r.header.status == Status::Ok {
                assert!(r.body == body);
            } else {
                assert_status(&r, Status::NotFound);
            }
        }
    }
    assert_eq!(
        ts.server().pipes_created(),
        pipes,
        "no new pipe after warm-up"
    );
    // Other tests of this binary run alongside and open fds of their own, so allow some
    // slack: a pipe per request would have left 2 x 500 fds behind.
    let after = open_fds();
    assert!(
        after < fds + 50,
        "fds in this process: {fds} before, {after} after"
    );
}

#[test]
fn a_truncated_splice_body_publishes_nothing_and_leaves_no_bytes_behind() {
    let ts = start();
    {
        let mut w = Wire::unix(&ts.socket());
        let (_, frame) = w.frame(Op::Put, Mode::Splice, b"half", b"", |h| h.length = 1 << 20);
        w.send_bytes(&frame);
        std::thread::sleep(Duration::from_millis(20));
        w.send_bytes(&pattern(300_000, 2));
        std::thread::sleep(Duration::from_millis(20));
        w.sock.shutdown_write();
        let r = w.recv();
        assert_status(&r, Status::ProtocolError);
        assert!(r.message.contains("truncated"), "{}", r.message);
        assert!(w.try_recv().is_none());
    }
    // The next splice PUT on the same workers gets exactly its own bytes.
    for _ in 0..4 {
        let mut w = Wire::unix(&ts.socket());
        let data = pattern(400_000, 3);
        assert_status(&put_split(&mut w, b"whole", &data), Status::Ok);
        assert!(w.get(b"whole", Mode::Copy, 0, 0).body == data);
        assert_status(&w.get(b"half", Mode::Copy, 0, 0), Status::NotFound);
    }
}

#[test]
fn a_splice_put_honours_flags_and_limits() {
    let ts = TestServer::start_with(|c| c.store.max_object_size = 1 << 20);
    let mut w = Wire::unix(&ts.socket());
    let r = w.put_with(b"d", Mode::Splice, &pattern(300_000, 4), |h| {
        h.flags = req_flags::DURABLE
    });
    assert_status(&r, Status::Ok);
    assert_eq!(r.meta.tier, Some(Tier::Disk));
    // Too large: refused before any body byte, and the connection closes.
    let (_, frame) = w.frame(Op::Put, Mode::Splice, b"big", b"", |h| h.length = 2 << 20);
    w.send_bytes(&frame);
    let r = w.recv();
    assert_status(&r, Status::ObjectTooLarge);
    assert!(w.try_recv().is_none());
}

#[test]
fn a_slow_splice_upload_is_not_timed_out_but_a_stalled_one_is() {
    // Gaps of a tenth of the timeout: a loaded machine stretches sleeps, not by 10x.
    let ts = TestServer::start_with(|c| c.frame_timeout = Duration::from_secs(2));
    let mut w = Wire::unix(&ts.socket());
    let (_, frame) = w.frame(Op::Put, Mode::Splice, b"slow", b"", |h| h.length = 6);
    w.send_bytes(&frame);
    for b in b"trickl" {
        std::thread::sleep(Duration::from_millis(200));
        w.send_bytes(&[*b]);
    }
    assert_status(&w.recv(), Status::Ok);
    assert_eq!(w.get(b"slow", Mode::Splice, 0, 0).body, b"trickl");
    let (_, frame) = w.frame(Op::Put, Mode::Splice, b"stall", b"", |h| h.length = 6);
    w.send_bytes(&frame);
    w.send_bytes(b"ab");
    let r = w.recv();
    assert_status(&r, Status::ProtocolError);
    assert!(r.message.contains("no progress"), "{}", r.message);
}
