//! Only one Store may have a data directory open.

mod common;

use common::*;
use objmapper_store::{OpenError, PutOptions, Store, StoreConfig};
use tempfile::TempDir;

#[test]
fn second_open_is_locked() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    match Store::open(
        StoreConfig::new(dir.path())
            .with_mem_dir_inside()
            .without_memory_tier(),
    ) {
        Err(OpenError::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    let e = Store::open(
        StoreConfig::new(dir.path())
            .with_mem_dir_inside()
            .without_memory_tier(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("LOCK"), "{e}");
    // The failed opener did not disturb the store.
    put(&store, b"k", b"v");
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v");
    drop(store);
    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v");
}

#[test]
fn close_releases_lock_even_with_outstanding_staging() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let mut s = store.begin_put(b"late").unwrap();
    s.write_all(b"x").unwrap();
    store.close().unwrap();
    let store2 = open(dir.path());
    // The old store's staging can no longer commit.
    assert!(matches!(
        s.commit(1, Default::default(), PutOptions::default()),
        Err(objmapper_store::CommitError::Store(
            objmapper_store::StoreError::Closed
        ))
    ));
    assert!(store2.get(b"late").unwrap().is_none());
}
