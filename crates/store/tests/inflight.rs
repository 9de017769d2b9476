//! Readers never see a partial object.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use objmapper_store::PutMeta;
use objmapper_store::PutOptions;
use tempfile::TempDir;
use xxhash_rust::xxh3::xxh3_64;

#[test]
fn get_during_inflight_put_sees_previous_version_or_none() {
    let (_dir, store) = temp_store();

    // No previous version: not found while the PUT is in flight.
    let mut s = staged(&store, b"new", b"partial");
    assert!(store.get(b"new").unwrap().is_none());
    assert!(store.head(b"new").is_none());
    s.write_all(b" and the rest").unwrap();
    assert!(store.get(b"new").unwrap().is_none());
    s.commit(20, PutMeta::default(), PutOptions::default())
        .unwrap();
    assert_eq!(get_bytes(&store, b"new").unwrap(), b"partial and the rest");

    // Previous version: served unchanged until commit.
    let m1 = put(&store, b"k", b"version one");
    let s = staged(&store, b"k", b"version two, longer");
    let obj = store.get(b"k").unwrap().unwrap();
    assert_eq!(obj.meta.version, m1.version);
    assert_eq!(read(&obj), b"version one");
    s.seal().unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"version one");
    s.commit(19, PutMeta::default(), PutOptions::default())
        .unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"version two, longer");
}

/// Self-describing content: 8-byte seed followed by pseudo-random bytes.
fn content(seed: u64) -> Vec<u8> {
    let len = 8 + (seed as usize * 997) % 300_000;
    let mut data = pattern(seed, len);
    data[..8].copy_from_slice(&seed.to_le_bytes());
    data
}

#[test]
fn concurrent_readers_only_see_whole_versions() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(dir.path()));
    put(&store, b"k", &content(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let obj = store.get(b"k").unwrap().expect("always present");
                    let data = read(&obj);
                    assert_eq!(data.len() as u64, obj.meta.size);
                    assert_eq!(xxh3_64(&data), obj.meta.checksum);
                    // The first 8 bytes name the version written by the loop below.
                    let seed = u64::from_le_bytes(data[..8].try_into().unwrap());
                    assert_eq!(data, content(seed));
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 1..200u64 {
        put(&store, b"k", &content(i));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
