//! `Store::begin_put_buffered`: the in-memory staging path for small copy-mode PUTs keeps
//! every guarantee of the memfd path (exact length, size limit, metadata, nothing visible
//! before commit, nothing left behind by an abort).

mod common;

use common::{disk_only_config, files_under, get_bytes, open};
use objmapper_store::{CommitError, PutMeta, PutOptions};

#[test]
fn a_buffered_put_commits_its_bytes_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut p = store.begin_put_buffered(b"k", 8).unwrap();
    p.write_all(b"hello ").unwrap();
    p.write_all(b"world").unwrap();
    assert_eq!(p.len().unwrap(), 11);
    assert!(store.head(b"k").is_none(), "visible before commit");
    let meta = PutMeta {
        content_type: Some("text/plain".into()),
        custom: vec![("lang".into(), b"en".to_vec())],
        expires_at: None,
    };
    let m = p.commit(11, meta, PutOptions::default()).unwrap();
    assert_eq!(m.size, 11);
    assert_eq!(m.checksum, xxhash_rust::xxh3::xxh3_64(b"hello world"));
    assert_eq!(m.content_type.as_deref(), Some("text/plain"));
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"hello world");
}

#[test]
fn a_wrong_length_or_an_oversized_buffer_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_only_config(tmp.path());
    cfg.max_object_size = 16;
    let store = objmapper_store::Store::open(cfg).unwrap();

    let mut p = store.begin_put_buffered(b"k", 0).unwrap();
    p.write_all(b"12345").unwrap();
    match p.commit(6, PutMeta::default(), PutOptions::default()) {
        Err(CommitError::LengthMismatch {
            expected: 6,
            actual: 5,
        }) => {}
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
    assert!(store.head(b"k").is_none());

    let mut p = store.begin_put_buffered(b"k", 0).unwrap();
    p.write_all(&[0; 16]).unwrap();
    let e = p.write_all(b"x").unwrap_err();
    assert!(e.to_string().contains("maximum object size of 16"), "{e}");

    // An abandoned PUT leaves no file behind.
    drop(p);
    let objects = files_under(&tmp.path().join("objects"));
    assert!(objects.is_empty(), "{objects:?}");
    assert!(store.head(b"k").is_none());
}

#[test]
fn an_invalid_key_is_refused_before_any_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert!(store.begin_put_buffered(b"", 0).is_err());
}
