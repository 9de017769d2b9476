//! Failed and aborted PUTs publish and leave nothing.

mod common;

use std::io::Write;

use common::*;
use objmapper_store::{CommitError, PutMeta, PutOptions, Store, MAX_META_LEN};

fn assert_nothing_left(store: &Store, key: &[u8]) {
    assert!(store.get(key).unwrap().is_none());
    assert!(store.head(key).is_none());
    assert!(object_files(store.data_dir()).is_empty());
    assert!(staging_files(store.data_dir()).is_empty());
}

#[test]
fn length_mismatch_publishes_nothing() {
    let (dir, store) = temp_store();
    let s = staged(&store, b"k", b"12345");
    match s.commit(
        6,
        PutMeta::default(),
        PutOptions {
            durable: true,
            ..Default::default()
        },
    ) {
        Err(CommitError::LengthMismatch {
            expected: 6,
            actual: 5,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_nothing_left(&store, b"k");

    // A previous version stays current.
    put(&store, b"k", b"old");
    let s = staged(&store, b"k", b"new!");
    assert!(s
        .commit(3, PutMeta::default(), PutOptions::default())
        .is_err());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"old");
    assert_eq!(object_files(dir.path()).len(), 1);
}

#[test]
fn too_large_publishes_nothing() {
    let (_dir, store) = open_temp(disk_only_config, |cfg| cfg.max_object_size = 1000);

    // Copy mode refuses early.
    let mut s = store.begin_put(b"k").unwrap();
    s.write_all(&[0; 1000]).unwrap();
    assert!(s.write_all(&[0; 1]).is_err());
    drop(s);

    // fd mode: the client can write more; commit refuses.
    let s = store.begin_put(b"k").unwrap();
    let mut client = std::fs::File::from(s.fd().unwrap().try_clone_to_owned().unwrap());
    client.write_all(&[7; 1001]).unwrap();
    let e = s
        .commit(1001, PutMeta::default(), PutOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            CommitError::TooLarge {
                size: 1001,
                max: 1000
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("1000"));
    assert_nothing_left(&store, b"k");

    // Exactly the maximum is fine.
    let mut s = store.begin_put(b"k").unwrap();
    s.write_all(&[1; 1000]).unwrap();
    s.commit(1000, PutMeta::default(), PutOptions::default())
        .unwrap();
}

#[test]
fn oversized_metadata_publishes_nothing() {
    let (_dir, store) = temp_store();
    let s = staged(&store, b"k", b"x");
    let meta = PutMeta {
        content_type: None,
        custom: vec![("h".into(), vec![0; MAX_META_LEN])],
        ..Default::default()
    };
    assert!(matches!(
        s.commit(1, meta, PutOptions::default()),
        Err(CommitError::MetaTooLarge { .. })
    ));
    assert_nothing_left(&store, b"k");
}

#[test]
fn dropped_staging_leaves_nothing() {
    let (dir, store) = temp_store();
    for i in 0..10u8 {
        let s = staged(&store, &[i], &pattern(i.into(), 100_000));
        if i % 2 == 0 {
            s.seal().unwrap();
        }
        drop(s);
    }
    assert!(store.is_empty());
    assert_eq!(store.stats().puts, 0);
    assert_nothing_left(&store, &[0]);
    store.close().unwrap();
    let store = open(dir.path());
    assert!(store.is_empty());
}
