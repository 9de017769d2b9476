//! Journal compaction preserves every live object, its metadata and the
//! version high-water mark.

mod common;

use std::collections::BTreeMap;

use common::*;
use objmapper_store::{PutMeta, Store, StoreConfig};
use tempfile::TempDir;

fn cfg(dir: &std::path::Path, min: u64) -> StoreConfig {
    let mut c = StoreConfig::new(dir)
        .with_mem_dir_inside()
        .without_memory_tier();
    c.compact_min_journal_bytes = min;
    c
}

fn churn(store: &Store, rounds: u64) -> BTreeMap<Vec<u8>, (u64, Vec<u8>)> {
    let mut want = BTreeMap::new();
    for i in 0..rounds {
        let key = format!("key-{}", i % 37).into_bytes();
        let data = pattern(i, (i % 50) as usize * 100);
        let meta = PutMeta {
            content_type: Some(format!("t/{i}")),
            custom: vec![("n".into(), i.to_le_bytes().to_vec())],
            ..Default::default()
        };
        let m = put_with(store, &key, &data, meta, false);
        want.insert(key.clone(), (m.version, data));
        if i % 11 == 0 {
            store.delete(&key).unwrap();
            want.remove(&key);
        }
    }
    want
}

fn check(store: &Store, want: &BTreeMap<Vec<u8>, (u64, Vec<u8>)>) {
    assert_eq!(store.len(), want.len());
    for (key, (version, data)) in want {
        let obj = store.get(key).unwrap().expect("present");
        assert_eq!(obj.meta.version, *version);
        assert_eq!(&read(&obj), data);
        if key.starts_with(b"key-") {
            let n = obj.meta.custom_value("n").expect("custom metadata");
            let n = u64::from_le_bytes(n.try_into().unwrap());
            assert_eq!(obj.meta.content_type.as_deref(), Some(&*format!("t/{n}")));
        }
    }
}

#[test]
fn automatic_compaction_preserves_data() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(cfg(dir.path(), 8 * 1024)).unwrap();
    let want = churn(&store, 2000);
    let st = store.stats();
    assert!(st.compactions > 0, "{st:?}");
    assert!(
        st.journal_bytes <= 2 * st.journal_live_bytes + 8 * 1024,
        "{st:?}"
    );
    check(&store, &want);
    let max_version = want.values().map(|(v, _)| *v).max().unwrap();
    drop(store); // unclean

    let store = Store::open(cfg(dir.path(), 8 * 1024)).unwrap();
    check(&store, &want);
    assert!(put(&store, b"new", b"x").version > max_version);
    store.close().unwrap();
    let store = open(dir.path());
    check(&store, &{
        let mut w = want.clone();
        w.insert(
            b"new".to_vec(),
            (store.head(b"new").unwrap().version, b"x".to_vec()),
        );
        w
    });
}

#[test]
fn explicit_compaction_keeps_only_live_records() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(cfg(dir.path(), u64::MAX)).unwrap();
    let want = churn(&store, 500);
    // The highest version so far belongs to a deleted object: the compacted
    // journal holds no record of it, only the RESERVE high-water mark.
    let m = put(&store, b"doomed", b"x");
    store.delete(b"doomed").unwrap();
    let before = store.stats().journal_bytes;
    store.compact().unwrap();
    let st = store.stats();
    assert_eq!(st.journal_bytes, st.journal_live_bytes);
    assert!(st.journal_bytes < before);
    assert_eq!(
        std::fs::metadata(journal_path(dir.path())).unwrap().len(),
        st.journal_bytes
    );
    assert!(!dir.path().join("journal.compact").exists());
    check(&store, &want);
    // Appends after compaction go to the new journal.
    let after = put(&store, b"after", b"compaction");
    drop(store);

    let store = open(dir.path());
    check(&store, &{
        let mut w = want.clone();
        w.insert(b"after".to_vec(), (after.version, b"compaction".to_vec()));
        w
    });
    assert!(put(&store, b"next", b"y").version > m.version);
}

#[test]
fn compaction_at_open() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(cfg(dir.path(), u64::MAX)).unwrap();
    let want = churn(&store, 1000);
    let before = store.stats().journal_bytes;
    store.close().unwrap();

    let store = Store::open(cfg(dir.path(), 1024)).unwrap();
    let st = store.stats();
    assert_eq!(st.compactions, 1);
    assert!(st.journal_bytes < before / 2, "{st:?} vs {before}");
    check(&store, &want);
}
