//! Only one Store may have a data directory open.

mod common;

use common::*;
use objmapper_store::{OpenError, PutOptions, Store};

#[test]
fn second_open_is_locked() {
    let (dir, store) = temp_store();
    match Store::open(disk_only_config(dir.path())) {
        Err(OpenError::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    let e = Store::open(disk_only_config(dir.path())).unwrap_err();
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
    let (dir, store) = temp_store();
    let s = staged(&store, b"late", b"x");
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
