//! Hostile clients against the real server (in-process, real sockets). For each attack:
//! a well-behaved client keeps working throughout, every stored object is unchanged
//! afterwards, and the process's fd count and RSS come back to their baseline (the test
//! process is also the server, so the measures are of both; each attack runs alone).

mod util;

use objmapper_proto::*;
use rand::{Rng, RngCore, SeedableRng};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

/// The attacks share the process's fd table and RSS: one at a time.
static ALONE: Mutex<()> = Mutex::new(());

/// RSS the process may gain over an attack (allocator caches, thread stacks): far less
/// than the attacks would cost if the server buffered what they send or cannot drain.
const RSS_SLACK_KB: u64 = 64 * 1024;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Witness {
    key: Vec<u8>,
    sum: u64,
    version: u64,
}

/// Runs `attack` against a fresh server while a good client works, then checks the
/// invariants.
fn under_attack(name: &str, attack: impl FnOnce(&TestServer)) {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let ts = TestServer::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut c = ts.raw();
    let mut witnesses = Vec::new();
    for i in 0..16 {
        let mut body = vec![0u8; rng.gen_range(0..200_000)];
        rng.fill_bytes(&mut body);
        let key = format!("witness/{i}").into_bytes();
        let r = c.put_copy(&key, &body);
        assert_status(&r, Status::Ok);
        witnesses.push(Witness {
            key,
            sum: xxhash_rust::xxh3::xxh3_64(&body),
            version: r.meta.version.unwrap(),
        });
    }
    drop(c);
    let witnesses = Arc::new(witnesses);

    // The good client: GETs the witnesses, PUTs and DELETEs its own keys.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let good = {
        let (stop, ops, w, path) = (stop.clone(), ops.clone(), witnesses.clone(), ts.socket());
        std::thread::spawn(move || {
            let mut c = Raw::connect(&path);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) || i < 50 {
                let wi = &w[i % w.len()];
                let r = c.get_copy(&wi.key);
                assert_status(&r, Status::Ok);
                assert_eq!(xxhash_rust::xxh3::xxh3_64(&r.body), wi.sum);
                let own = format!("good/{}", i % 8);
                assert_status(&c.put_copy(own.as_bytes(), own.as_bytes()), Status::Ok);
                if i.is_multiple_of(3) {
                    c.request(Op::Delete, Mode::None, own.as_bytes());
                    assert_status(&c.recv(), Status::Ok);
                }
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    while ops.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let fds_before = fd_count();
    let rss_before = rss_kb();
    let ops_before = ops.load(Ordering::Relaxed);

    attack(&ts);

    // The good client made progress during and after the attack.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ops.load(Ordering::Relaxed) < ops_before + 20 {
        assert!(Instant::now() < deadline, "{name}: the good client stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    good.join()
        .unwrap_or_else(|_| panic!("{name}: the good client failed"));

    // Every attacker connection is gone: the fd count returns to the baseline.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fd_count() > fds_before {
        assert!(
            Instant::now() < deadline,
            "{name}: {} fds open, {fds_before} before the attack",
            fd_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss = rss_kb();
    assert!(
        rss <= rss_before + RSS_SLACK_KB,
        "{name}: RSS {rss} kB, {rss_before} kB before the attack"
    );
    // No stored object changed.
    let mut c = ts.raw();
    for w in witnesses.iter() {
        let r = c.get_copy(&w.key);
        assert_status(&r, Status::Ok);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(&r.body),
            w.sum,
            "{name}: content"
        );
        assert_eq!(r.meta.version, Some(w.version), "{name}: version");
    }
    assert_eq!(ts.server().staged(), (0, 0), "{name}: staging left behind");
}

#[test]
fn random_bytes() {
    under_attack("random bytes", |ts| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for i in 0..300 {
            let mut s = std::os::unix::net::UnixStream::connect(ts.socket()).unwrap();
            let mut junk = vec![0u8; rng.gen_range(1..8192)];
            rng.fill_bytes(&mut junk);
            if i % 2 == 0 {
                // Half of them behind a valid magic byte, to get past the first check.
                junk[0] = if i % 4 == 0 {
                    MAGIC_REQ_V1
                } else {
                    MAGIC_REQ_V2
                };
            }
            let _ = s.write_all(&junk);
        }
    });
}

#[test]
fn frames_split_at_every_byte_boundary() {
    under_attack("split frames", |ts| {
        let body = b"split body".repeat(10);
        let mut frame = Vec::new();
        let mut h = RequestHeader::new(Version::V1, Op::Put, 1);
        h.mode = Mode::Copy;
        h.length = body.len() as u64;
        let meta = Metadata {
            content_type: Some("text/plain".into()),
            ..Metadata::default()
        };
        encode_request(&h, b"split/key", &meta.to_bytes().unwrap(), &mut frame);
        frame.extend_from_slice(&body);
        let mut get = Vec::new();
        let mut g = RequestHeader::new(Version::V1, Op::Get, 2);
        g.mode = Mode::Copy;
        encode_request(&g, b"split/key", b"", &mut get);
        let mut c = ts.raw();
        for cut in 1..frame.len() {
            c.send_bytes(&frame[..cut]);
            std::thread::sleep(Duration::from_micros(300));
            c.send_bytes(&frame[cut..]);
            assert_status(&c.recv(), Status::Ok);
        }
        for cut in 1..get.len() {
            c.send_bytes(&get[..cut]);
            std::thread::sleep(Duration::from_micros(300));
            c.send_bytes(&get[cut..]);
            let r = c.recv();
            assert_status(&r, Status::Ok);
            assert_eq!(r.body, body);
        }
        c.request(Op::Delete, Mode::None, b"split/key");
        assert_status(&c.recv(), Status::Ok);
    });
}

#[test]
fn huge_declared_lengths_with_no_body() {
    under_attack("huge lengths", |ts| {
        // A body far over the largest object: refused and closed at once.
        let mut c = ts.raw();
        c.send(Op::Put, Mode::Copy, b"huge", &Metadata::default(), |h| {
            h.length = 1 << 50
        });
        assert_status(&c.recv(), Status::ObjectTooLarge);
        assert!(c.is_closed());
        // The largest allowed body, never sent: its reservation ends with the connection.
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut c = ts.raw();
            c.send(Op::Put, Mode::Copy, b"huge", &Metadata::default(), |h| {
                h.length = 1 << 30
            });
            c.send_bytes(&[1u8; 1000]);
            conns.push(c);
        }
        // A header that declares the longest key and metadata, and never sends them.
        let mut head = [0u8; REQUEST_HEADER_LEN];
        let mut h = RequestHeader::new(Version::V1, Op::Get, 3);
        h.mode = Mode::Copy;
        h.key_len = MAX_KEY_LEN as u16;
        h.meta_len = MAX_META_LEN as u32;
        h.encode(&mut head);
        for _ in 0..50 {
            let mut c = ts.raw();
            c.send_bytes(&head);
            conns.push(c);
        }
        let mut other = ts.raw();
        assert_status(&other.ping(), Status::Ok);
        drop(conns);
        wait_for(
            "the reservations to be returned",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || ts.server().staged().1 == 0,
        );
    });
}

#[test]
fn thousands_of_connect_disconnect_cycles() {
    under_attack("connect/disconnect", |ts| {
        let frame = bare_frame(Version::V1, Op::Ping, 1);
        for i in 0..3000 {
            let mut s = std::os::unix::net::UnixStream::connect(ts.socket()).unwrap();
            match i % 3 {
                0 => {}
                1 => {
                    let _ = s.write_all(&frame[..frame.len() / 2]);
                }
                _ => {
                    let _ = s.write_all(&frame);
                }
            }
        }
    });
}

#[test]
fn a_client_that_never_reads_its_replies() {
    under_attack("never reads", |ts| {
        let rss_start = rss_kb();
        let mut c = ts.raw();
        assert_status(&c.put_copy(b"big", &vec![9u8; 1 << 20]), Status::Ok);
        let mut get = Vec::new();
        let mut g = RequestHeader::new(Version::V1, Op::Get, 1);
        g.mode = Mode::Copy;
        encode_request(&g, b"big", b"", &mut get);
        let batch = get.repeat(256);
        // Pipeline 1 MiB GETs without reading, until the server stops taking requests
        // (its output is backed up, so it reads no more): the socket then stays full.
        c.sock.set_nonblocking(true).unwrap();
        let limit = 100_000 * get.len();
        let sent = send_until_stuck(limit, || match c.sock.write(&batch) {
            Ok(n) => (n, Ok(())),
            Err(e) => (0, Err(e)),
        });
        assert!(
            sent < limit,
            "the server kept reading requests it could not answer"
        );
        let rss = rss_kb();
        let mut other = ts.raw();
        assert_status(&other.ping(), Status::Ok);
        assert_eq!(other.get_copy(b"big").body.len(), 1 << 20);
        other.request(Op::Delete, Mode::None, b"big");
        assert_status(&other.recv(), Status::Ok);
        // Measured while the client is still connected and stuck, with gigabytes of
        // replies requested: bounded by the output high-water mark, not by the requests.
        assert!(
            rss <= rss_start + RSS_SLACK_KB,
            "RSS {rss} kB while stuck, {rss_start} kB before"
        );
        drop(c);
    });
}

#[test]
fn a_client_that_passes_fds_to_the_server() {
    under_attack("fds to the server", |ts| {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let frame = bare_frame(Version::V1, Op::Ping, 1);
        let mut c = ts.raw();
        for _ in 0..500 {
            let fds = [r.as_fd(), r.as_fd(), w.as_fd()];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut cmsg = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(cmsg.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            rustix::net::sendmsg(
                &c.sock,
                &[std::io::IoSlice::new(&frame)],
                &mut cmsg,
                rustix::net::SendFlags::empty(),
            )
            .unwrap();
            assert_status(&c.recv(), Status::Ok);
        }
        drop(c);
        // Had the server kept any copy of the read end, the pipe would still have a
        // reader. Ours closed, writing must fail with EPIPE once the server has dropped
        // the connection (no descriptor of it survives in the server).
        drop(r);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rustix::io::write(&w, b"x") {
                Err(rustix::io::Errno::PIPE) => break,
                _ => {
                    assert!(Instant::now() < deadline, "the server kept a passed fd");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    });
}

#[test]
fn a_commit_for_someone_elses_handle() {
    under_attack("foreign handle", |ts| {
        let mut a = ts.raw();
        let mut b = ts.raw();
        a.request(Op::Put, Mode::Fd, b"witness/0");
        let r = a.recv();
        let handle = r.header.handle;
        let mut f = std::fs::File::from(r.fd.unwrap());
        f.write_all(b"overwritten").unwrap();
        // b guesses a's handle (and every nearby one): never its object.
        for h in handle.saturating_sub(5).max(1)..handle + 5 {
            b.send(Op::Commit, Mode::None, b"", &Metadata::default(), |x| {
                x.handle = h;
                x.length = 11;
            });
            assert_status(&b.recv(), Status::UnknownHandle);
            b.send(Op::Abort, Mode::None, b"", &Metadata::default(), |x| {
                x.handle = h
            });
            assert_status(&b.recv(), Status::UnknownHandle);
        }
        // a's handle is intact: a aborts it (committing would change the witness).
        a.send(Op::Abort, Mode::None, b"", &Metadata::default(), |x| {
            x.handle = handle
        });
        assert_status(&a.recv(), Status::Ok);
    });
}
