//! Reopening after clean close and after an unclean drop recovers everything.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use objmapper_store::{ObjectMeta, OpenError, PutMeta, Store};
use tempfile::TempDir;

/// Builds a store with replaced, deleted and metadata-carrying objects and
/// returns the expected state.
fn populate(store: &Store) -> BTreeMap<Vec<u8>, (Arc<ObjectMeta>, Vec<u8>)> {
    let mut want = BTreeMap::new();
    for i in 0..150u64 {
        let key = format!("key-{}", i % 100).into_bytes();
        let data = pattern(i, (i as usize * 7919) % 70_000);
        let meta = PutMeta {
            content_type: (i % 3 != 0).then(|| format!("type/{i}")),
            custom: (0..i % 4)
                .map(|j| (format!("h{j}"), pattern(i + j, j as usize * 3)))
                .collect(),
            ..Default::default()
        };
        let m = put_with(store, &key, &data, meta, i % 5 == 0);
        want.insert(key, (m, data));
    }
    for i in (0..100).step_by(7) {
        let key = format!("key-{i}").into_bytes();
        assert!(store.delete(&key).unwrap());
        want.remove(&key);
    }
    want
}

fn check(store: &Store, want: &BTreeMap<Vec<u8>, (Arc<ObjectMeta>, Vec<u8>)>) {
    assert_eq!(store.len(), want.len());
    let bytes: u64 = want.values().map(|(m, _)| m.size).sum();
    assert_eq!(store.bytes(), bytes);
    for (key, (meta, data)) in want {
        let obj = store.get(key).unwrap().expect("object recovered");
        assert_eq!(&obj.meta, meta, "metadata of {key:?}");
        assert_eq!(&read(&obj), data, "bytes of {key:?}");
    }
    for i in (0..100).step_by(7) {
        assert!(store.get(format!("key-{i}").as_bytes()).unwrap().is_none());
    }
    // Exactly one file per live object.
    assert_eq!(object_files(store.data_dir()).len(), want.len());
}

#[test]
fn reopen_after_close_is_byte_identical() {
    let (dir, store) = temp_store();
    let want = populate(&store);
    check(&store, &want);
    store.close().unwrap();
    assert!(dir.path().join("CLEAN").exists());

    let store = open(dir.path());
    assert!(!dir.path().join("CLEAN").exists(), "CLEAN removed at open");
    check(&store, &want);
    store.close().unwrap();
    let store = open(dir.path());
    check(&store, &want);
}

#[test]
fn reopen_after_unclean_drop_recovers_everything() {
    let (dir, store) = temp_store();
    let want = populate(&store);
    drop(store); // no close(): treated as a crash
    assert!(!dir.path().join("CLEAN").exists());

    let store = open(dir.path());
    check(&store, &want);
    assert_eq!(store.stats().recovery_dropped, 0);
    // And once more, after writing on top of the recovered state.
    let m = put(&store, b"after", b"crash");
    drop(store);
    let store = open(dir.path());
    check_one(&store, b"after", &m, b"crash");
}

fn check_one(store: &Store, key: &[u8], meta: &ObjectMeta, data: &[u8]) {
    let obj = store.get(key).unwrap().unwrap();
    assert_eq!(&*obj.meta, meta);
    assert_eq!(read(&obj), data);
}

#[test]
fn unclean_with_checkpoint_recovers_everything() {
    let (dir, store) = temp_store();
    let m1 = put(&store, b"before", b"checkpoint");
    store.checkpoint().unwrap();
    let m2 = put(&store, b"after", b"checkpoint");
    drop(store);
    let store = open(dir.path());
    check_one(&store, b"before", &m1, b"checkpoint");
    check_one(&store, b"after", &m2, b"checkpoint");
}

#[test]
fn foreign_formats_are_refused() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "objmapper-store 99\n").unwrap();
    match Store::open(disk_only_config(dir.path())) {
        Err(OpenError::Format { path, .. }) => assert_eq!(path, dir.path().join("FORMAT")),
        other => panic!("{other:?}"),
    }
    // Nothing was created in the foreign directory.
    assert!(!dir.path().join("objects").exists());

    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("journal"), b"").unwrap();
    let e = Store::open(disk_only_config(dir.path())).unwrap_err();
    assert!(matches!(e, OpenError::Format { .. }), "{e:?}");
    assert!(e.to_string().contains("FORMAT"), "{e}");

    let dir = TempDir::new().unwrap();
    open(dir.path()).close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("FORMAT")).unwrap(),
        b"objmapper-store 3\n"
    );
}
