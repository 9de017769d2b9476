//! kill -9 at random points of a PUT loop that mixes `durable` and default
//! (written-behind) PUTs, over several rounds. Odd rounds restart the daemon
//! with its memory tier intact (a daemon crash); even rounds also wipe the
//! memory tier first (what a reboot does to tmpfs).
//!
//! After every restart:
//! - an acknowledged `durable` object that is still the key's latest
//!   acknowledged write is there, byte-identical;
//! - after a daemon crash, every acknowledged object is there;
//! - after a "reboot", a key whose latest write was only written behind holds
//!   one of the versions acknowledged for it, or nothing — never bytes that
//!   were not written whole (checked against content and checksum).

mod crash;

use crash::{call, frame, Daemon};
use objmapper_proto::*;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The bytes of write number `n`: self-describing, so a torn or mixed-up
/// object cannot pass for a whole one.
fn body_for(n: u64) -> Vec<u8> {
    let len = [0usize, 1, 700, 4096, 65_536, 200_000][(n % 6) as usize];
    objmapper_testkit::xorshift_words(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, len)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What a key may hold: every body acknowledged for it since its last
/// durable write (that one included), its latest acknowledged body, and
/// whether that latest write was durable.
#[derive(Default, Clone)]
struct KeyModel {
    candidates: Vec<Vec<u8>>,
    latest: Option<Vec<u8>>,
    latest_durable: bool,
    /// A durable write happened: the key can never be absent again.
    ever_durable: bool,
}

#[test]
fn kill9_with_durable_and_written_behind_puts_across_daemon_crashes_and_reboots() {
    let dir = tempfile::Builder::new()
        .prefix("objm-crash-tiers")
        .tempdir()
        .unwrap();
    let socket: PathBuf = dir.path().join("s.sock");
    let data = dir.path().join("data");
    let mem = dir.path().join("mem");
    let mut model: HashMap<Vec<u8>, KeyModel> = HashMap::new();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut n = 0u64;
    let mut durable_acked = 0;
    let mut checked_durable = 0;

    for round in 0..6u32 {
        let reboot = round % 2 == 1;
        let mut daemon = Daemon::start(&socket, &data, &mem);
        let mut sock = UnixStream::connect(&socket).unwrap();
        let kill_after = Duration::from_millis(60 + rng.next() % 300);
        let started = Instant::now();
        let in_flight: Option<(Vec<u8>, Vec<u8>)>;
        loop {
            let key = format!("k{}", rng.next() % 25).into_bytes();
            let body = body_for(n);
            n += 1;
            let durable = rng.next().is_multiple_of(3);
            let flags = if durable { req_flags::DURABLE } else { 0 };
            let req = frame(Op::Put, &key, &body, flags);
            if started.elapsed() >= kill_after {
                // Kill while this PUT is on its way or being handled.
                let _ = sock.write_all(&req[..req.len() / 2]);
                in_flight = Some((key, body));
                daemon.kill9();
                break;
            }
            let r = call(&mut sock, &req).expect("server alive before the kill");
            assert_eq!(r.status, Status::Ok);
            let m = model.entry(key).or_default();
            if durable {
                m.candidates.clear();
                m.ever_durable = true;
                durable_acked += 1;
            }
            m.candidates.push(body.clone());
            m.latest = Some(body);
            m.latest_durable = durable;
        }
        drop(sock);
        if reboot {
            std::fs::remove_dir_all(&mem).unwrap();
        }

        let _daemon = Daemon::start(&socket, &data, &mem);
        let mut sock = UnixStream::connect(&socket).unwrap();
        // A first write to a new key that was in flight: absent or whole.
        if let Some((key, body)) = in_flight.as_ref().filter(|(k, _)| !model.contains_key(k)) {
            let r = call(&mut sock, &frame(Op::Get, key, b"", 0)).unwrap();
            assert!(
                r.status == Status::NotFound || (r.status == Status::Ok && &r.body == body),
                "round {round}: the in-flight first write is torn"
            );
        }
        for (key, m) in model.iter_mut() {
            let name = String::from_utf8_lossy(key).into_owned();
            let r = call(&mut sock, &frame(Op::Get, key, b"", 0)).unwrap();
            let flight = in_flight.as_ref().filter(|(k, _)| k == key).map(|(_, b)| b);
            let got = (r.status == Status::Ok).then_some(r.body);
            if let Some(g) = &got {
                assert_eq!(
                    r.meta.checksum,
                    Some(xxhash_rust::xxh3::xxh3_64(g)),
                    "{name}: checksum"
                );
            }
            // A key the model holds as absent (lost in an earlier reboot and not
            // written since) is rightly still absent.
            let is_latest = got == m.latest;
            let is_flight = got.as_ref().is_some_and(|g| Some(g) == flight);
            if !reboot || m.latest_durable {
                // Nothing acknowledged may be missing (the in-flight PUT may
                // have landed on top).
                assert!(
                    is_latest || is_flight,
                    "round {round} ({}): {name} lost its latest acknowledged write (GET \
                     answered {:?} with {:?} bytes, an older acknowledged body: {}; \
                     latest durable: {})",
                    if reboot { "reboot" } else { "daemon crash" },
                    r.status,
                    got.as_ref().map(Vec::len),
                    got.as_ref().is_some_and(|g| m.candidates.contains(g)),
                    m.latest_durable,
                );
                if m.latest_durable && is_latest {
                    checked_durable += 1;
                }
            } else {
                // Written behind and the memory tier is gone: any whole
                // version written since the last durable one, or nothing.
                let ok = match &got {
                    None => !m.ever_durable,
                    Some(g) => m.candidates.contains(g) || is_flight,
                };
                assert!(
                    ok,
                    "round {round} (reboot): {name} holds bytes nobody wrote"
                );
            }
            // What the store holds now is the key's latest write; older
            // candidates stay possible after a later reboot.
            match got {
                Some(g) => {
                    if !m.candidates.contains(&g) {
                        m.candidates.push(g.clone());
                    }
                    m.latest_durable &= is_latest;
                    m.latest = Some(g);
                }
                None => *m = KeyModel::default(),
            }
        }
    }
    assert!(
        durable_acked > 10,
        "the loop acknowledged {durable_acked} durable PUTs"
    );
    assert!(checked_durable > 0);
}
