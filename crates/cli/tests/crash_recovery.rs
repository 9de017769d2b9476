//! kill -9 in the middle of a PUT loop, several rounds: after each restart every
//! acknowledged object is intact, and the one in flight is absent, old, or new — never torn.

mod crash;

use crash::{call, frame, Daemon};
use objmapper_proto::*;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The old tuple shape this test was written against.
fn request(
    sock: &mut UnixStream,
    op: Op,
    key: &[u8],
    body: &[u8],
    flags: u16,
) -> std::io::Result<(Status, Vec<u8>, Metadata)> {
    call(sock, &frame(op, key, body, flags)).map(|r| (r.status, r.body, r.meta))
}

fn body_for(round: u32, i: u32) -> Vec<u8> {
    let len = [0usize, 1, 4096, 70_000, 300_000][(i % 5) as usize];
    objmapper_testkit::xorshift_words((round as u64) << 32 | i as u64 | 1, len)
}

#[test]
fn kill_dash_nine_during_put_loop_loses_nothing_acknowledged_and_tears_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("objm-crash")
        .tempdir()
        .unwrap();
    let socket: PathBuf = dir.path().join("s.sock");
    let data = dir.path().join("data");
    // key -> the bodies it may legitimately hold: the last acknowledged one, plus the
    // body of a PUT that was in flight when the server died.
    let mut acked: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut in_flight: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut durable_acked = 0;

    for round in 0..4u32 {
        let mut daemon = Daemon::start(&socket, &data, &data.with_extension("mem"));
        // Verify everything from earlier rounds first.
        verify(&socket, &mut acked, &mut in_flight);
        let kill_after = Duration::from_millis(150 + 97 * round as u64);
        let started = Instant::now();
        let mut sock = UnixStream::connect(&socket).unwrap();
        let mut i = 0u32;
        loop {
            if started.elapsed() >= kill_after {
                // Send the next PUT, then kill before (or while) it is answered.
                let key = format!("k{}", i % 40).into_bytes();
                let body = body_for(round, i);
                let out = frame(Op::Put, &key, &body, 0);
                let half = out.len() / 2;
                let _ = sock.write_all(&out[..half]);
                let _ = sock.write_all(&out[half..]);
                in_flight = Some((key, body));
                daemon.kill9();
                break;
            }
            let key = format!("k{}", i % 40).into_bytes();
            let body = body_for(round, i);
            let durable = i.is_multiple_of(3);
            let flags = if durable { req_flags::DURABLE } else { 0 };
            let (st, _, meta) =
                request(&mut sock, Op::Put, &key, &body, flags).expect("server alive");
            assert_eq!(st, Status::Ok);
            assert_eq!(meta.size, Some(body.len() as u64));
            if durable {
                durable_acked += 1;
            }
            acked.insert(key, body);
            i += 1;
        }
        assert!(i > 0, "round {round} acknowledged no PUT before the kill");
    }
    let _daemon = Daemon::start(&socket, &data, &data.with_extension("mem"));
    verify(&socket, &mut acked, &mut in_flight);
    assert!(durable_acked > 0);
}

fn verify(
    socket: &Path,
    acked: &mut HashMap<Vec<u8>, Vec<u8>>,
    in_flight: &mut Option<(Vec<u8>, Vec<u8>)>,
) {
    let mut settled = None;
    let mut sock = UnixStream::connect(socket).unwrap();
    for (key, body) in acked.iter() {
        let (st, got, meta) = request(&mut sock, Op::Get, key, b"", 0).unwrap();
        let name = String::from_utf8_lossy(key);
        match in_flight {
            Some((k, new)) if k == key => {
                // The interrupted PUT: the old version or the new one, whole.
                assert_eq!(st, Status::Ok, "{name}");
                assert!(
                    got == *body || got == *new,
                    "{name} is torn ({} bytes)",
                    got.len()
                );
                settled = Some((key.clone(), got.clone()));
            }
            _ => {
                assert_eq!(st, Status::Ok, "acknowledged {name} lost");
                assert_eq!(&got, body, "{name} differs from what was acknowledged");
            }
        }
        assert_eq!(
            meta.checksum,
            Some(xxhash_rust::xxh3::xxh3_64(&got)),
            "{name} checksum"
        );
    }
    if let Some((k, got)) = settled {
        acked.insert(k, got);
    }
    if let Some((k, new)) = in_flight.take() {
        if let std::collections::hash_map::Entry::Vacant(slot) = acked.entry(k) {
            let (st, got, _) = request(&mut sock, Op::Get, slot.key(), b"", 0).unwrap();
            assert!(
                st == Status::NotFound || (st == Status::Ok && got == new),
                "in-flight object torn"
            );
            if st == Status::Ok {
                slot.insert(got);
            }
        }
    }
}
