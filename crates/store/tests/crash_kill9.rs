//! Real crashes: a child process writes to the store and is killed with
//! SIGKILL at a random point; the parent reopens the store and checks that
//! every object is an acknowledged (or the single in-flight) version, intact.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use objmapper_store::{PutMeta, PutOptions, Store, StoreConfig};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use xxhash_rust::xxh3::xxh3_64;

const CHILD_ENV: &str = "OBJMAPPER_STORE_KILL9_CHILD_DIR";
const TEST_NAME: &str = "kill9_during_writes_recovers_committed_state";
const KEYS: u64 = 24;

fn content(key: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("k{key}|{seq}|").into_bytes();
    v.extend_from_slice(&pattern(seq, len));
    v
}

fn check_content(key: u64, data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(48)]).into_owned();
    let mut parts = text.splitn(3, '|');
    assert_eq!(parts.next().unwrap(), format!("k{key}"));
    let seq: u64 = parts.next().unwrap().parse().unwrap();
    let header = format!("k{key}|{seq}|").len();
    assert_eq!(
        data,
        &content(key, seq, data.len() - header)[..],
        "torn object"
    );
}

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir)
        .with_mem_dir_inside()
        .without_memory_tier();
    // Small threshold so that some kills land during compaction.
    c.compact_min_journal_bytes = 16 * 1024;
    c
}

/// The child: write until killed (or for at most 60 s).
fn child(dir: &str) {
    let store = Store::open(cfg(dir.as_ref())).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
    let mut out = std::io::stdout().lock();
    let base = u64::from(std::process::id()) << 32;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seq = 0;
    while Instant::now() < deadline {
        let key = rng.gen_range(0..KEYS);
        match rng.gen_range(0..20) {
            0..=15 => {
                seq += 1;
                let len = if rng.gen_bool(0.05) {
                    rng.gen_range(0..2_000_000)
                } else {
                    rng.gen_range(0..20_000)
                };
                let data = content(key, base | seq, len);
                writeln!(out, "BEGIN PUT {key}").unwrap();
                out.flush().unwrap();
                let mut s = store.begin_put(format!("k{key}").as_bytes()).unwrap();
                s.write_all(&data).unwrap();
                let m = s
                    .commit(
                        data.len() as u64,
                        PutMeta::default(),
                        PutOptions {
                            durable: rng.gen_bool(0.2),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                writeln!(out, "ACK PUT {key} {}", m.version).unwrap();
            }
            16..=18 => {
                writeln!(out, "BEGIN DEL {key}").unwrap();
                out.flush().unwrap();
                store.delete(format!("k{key}").as_bytes()).unwrap();
                writeln!(out, "ACK DEL {key}").unwrap();
            }
            _ => store.checkpoint().unwrap(),
        }
        out.flush().unwrap();
    }
}

#[test]
fn kill9_during_writes_recovers_committed_state() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = TempDir::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b696c6c);
    // Known committed state: key -> version (None = absent).
    let mut state: HashMap<u64, Option<u64>> = (0..KEYS).map(|k| (k, None)).collect();
    let mut max_version = 0u64;
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = rng.gen_range(5..150);
        let mut acks = 0;
        let mut pending: Option<(String, u64)> = None;
        let mut apply = |line: &str, pending: &mut Option<(String, u64)>| -> bool {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["BEGIN", op, key] => *pending = Some((op.to_string(), key.parse().unwrap())),
                ["ACK", "PUT", key, version] => {
                    let v: u64 = version.parse().unwrap();
                    assert!(v > max_version, "versions of one writer increase");
                    max_version = v;
                    state.insert(key.parse().unwrap(), Some(v));
                    *pending = None;
                    return true;
                }
                ["ACK", "DEL", key] => {
                    state.insert(key.parse().unwrap(), None);
                    *pending = None;
                    return true;
                }
                _ => {} // test harness chatter
            }
            false
        };
        for line in lines.by_ref() {
            if apply(&line.unwrap(), &mut pending) {
                acks += 1;
                if acks >= kill_after {
                    break;
                }
            }
        }
        // Let it run into the next operation, then SIGKILL.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines written before death still count.
        for line in lines {
            apply(&line.unwrap(), &mut pending);
        }

        let store = Store::open(cfg(dir.path())).unwrap();
        assert!(staging_files(dir.path()).is_empty());
        for k in 0..KEYS {
            let key = format!("k{k}");
            let actual = store.head(key.as_bytes()).map(|m| m.version);
            let known = state[&k];
            match &pending {
                Some((op, pk)) if *pk == k => {
                    let ok = actual == known
                        || (op == "PUT" && actual.is_some_and(|v| v > max_version))
                        || (op == "DEL" && actual.is_none());
                    assert!(
                        ok,
                        "round {round} k{k}: in-flight {op}, {actual:?} vs {known:?}"
                    );
                }
                _ => assert_eq!(actual, known, "round {round} k{k}"),
            }
            if let Some(v) = actual {
                max_version = max_version.max(v);
                let obj = store.get(key.as_bytes()).unwrap().expect("servable");
                let data = read(&obj);
                assert_eq!(data.len() as u64, obj.meta.size);
                assert_eq!(xxh3_64(&data), obj.meta.checksum);
                check_content(k, &data);
            }
            state.insert(k, actual);
        }
        assert_eq!(
            store.stats().recovery_dropped,
            0,
            "nothing is lost to kill -9"
        );
        store.sweep_orphans().unwrap();
        assert_eq!(object_files(dir.path()).len(), store.len());
        if round % 2 == 0 {
            store.close().unwrap();
        } else {
            drop(store);
        }
    }
}
