//! Concurrent puts, gets and deletes from several threads stay consistent.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use objmapper_store::{PutMeta, Store};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use xxhash_rust::xxh3::xxh3_64;

const KEYS: u64 = 32;

/// Self-describing content: "key|writer|seq|" followed by pseudo-random bytes.
fn content(key: &[u8], writer: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{}|{writer}|{seq}|", String::from_utf8_lossy(key)).into_bytes();
    v.extend_from_slice(&pattern(writer << 32 | seq, len));
    v
}

fn check_content(key: &[u8], data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    let mut parts = text.splitn(4, '|');
    let k = parts.next().unwrap();
    assert_eq!(k.as_bytes(), key, "object of another key served");
    let writer: u64 = parts.next().unwrap().parse().unwrap();
    let seq: u64 = parts.next().unwrap().parse().unwrap();
    let header = format!("{k}|{writer}|{seq}|").len();
    assert_eq!(
        data,
        &content(key, writer, seq, data.len() - header)[..],
        "torn or mixed object"
    );
}

#[test]
fn concurrent_operations_stay_consistent() {
    let dir = TempDir::new().unwrap();
    let mut cfg = disk_only_config(dir.path());
    cfg.compact_min_journal_bytes = 64 * 1024; // compact under contention too
    let store = Arc::new(Store::open(cfg).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for seq in 0..400u64 {
                    let key = format!("key{}", rng.gen_range(0..KEYS)).into_bytes();
                    match rng.gen_range(0..10) {
                        0..=3 => {
                            let len = rng.gen_range(0..40_000);
                            let data = content(&key, t, seq, len);
                            let m = put_with(
                                &store,
                                &key,
                                &data,
                                PutMeta::default(),
                                rng.gen_bool(0.1),
                            );
                            assert_eq!(m.checksum, xxh3_64(&data));
                        }
                        4 => {
                            store.delete(&key).unwrap();
                        }
                        5 => {
                            if let Some(m) = store.head(&key) {
                                assert_eq!(&*m.key, &key[..]);
                            }
                        }
                        _ => {
                            if let Some(obj) = store.get(&key).unwrap() {
                                let data = read(&obj);
                                assert_eq!(data.len() as u64, obj.meta.size);
                                assert_eq!(xxh3_64(&data), obj.meta.checksum);
                                check_content(&key, &data);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Arc::into_inner(store).unwrap();

    // Final state: index, files and counters agree.
    let mut state = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("key{k}").into_bytes();
        if let Some(obj) = store.get(&key).unwrap() {
            check_content(&key, &read(&obj));
            assert_eq!(store.head(&key).unwrap().version, obj.meta.version);
            state.insert(key, obj.meta.clone());
        }
    }
    assert_eq!(store.len(), state.len());
    assert_eq!(object_files(dir.path()).len(), state.len());
    assert_eq!(store.bytes(), state.values().map(|m| m.size).sum::<u64>());
    assert!(staging_files(dir.path()).is_empty());

    // And the journal says the same thing.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.len(), state.len());
    for (key, meta) in &state {
        assert_eq!(&store.head(key).unwrap(), meta);
    }
}
