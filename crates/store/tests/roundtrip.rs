//! PUT/GET/HEAD/DELETE roundtrips with metadata, in copy and fd mode.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use objmapper_store::{PutMeta, PutOptions, StoreError, MAX_KEY_LEN};
use xxhash_rust::xxh3::xxh3_64;

#[test]
fn put_get_roundtrip_with_metadata() {
    let (_dir, store) = temp_store();
    assert!(store.is_empty());
    let data = pattern(1, 1_000_003);
    let meta = PutMeta {
        content_type: Some("application/octet-stream".into()),
        custom: vec![
            ("cache-control".into(), b"max-age=60".to_vec()),
            ("bin".into(), vec![0, 255, 10]),
        ],
        ..Default::default()
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let m = put_with(&store, b"k1", &data, meta.clone(), true);
    assert_eq!(&*m.key, b"k1");
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(m.checksum, xxh3_64(&data));
    assert!(m.version >= 1);
    assert!(m.mtime_ns >= before);
    assert_eq!(m.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(m.custom_value("cache-control"), Some(&b"max-age=60"[..]));
    assert_eq!(m.custom_value("bin"), Some(&[0, 255, 10][..]));
    assert_eq!(m.custom.len(), 2);

    let obj = store.get(b"k1").unwrap().unwrap();
    assert_eq!(obj.meta, m);
    assert_eq!(read(&obj), data);
    assert_eq!(obj.file.metadata().unwrap().len(), data.len() as u64);
    assert_eq!(store.head(b"k1").unwrap(), m);
    assert_eq!(store.len(), 1);
    assert_eq!(store.bytes(), data.len() as u64);

    // Each get is its own file description with its own offset.
    let a = store.get(b"k1").unwrap().unwrap();
    let b = store.get(b"k1").unwrap().unwrap();
    (&a.file).seek(SeekFrom::Start(100)).unwrap();
    assert_eq!((&b.file).stream_position().unwrap(), 0);

    assert!(store.get(b"nope").unwrap().is_none());
    assert!(store.head(b"nope").is_none());
    let st = store.stats();
    assert_eq!((st.puts, st.hits, st.misses, st.objects), (1, 3, 1, 1));
}

#[test]
fn fd_mode_and_empty_objects() {
    let (_dir, store) = temp_store();
    // A client writes through (a dup of) the staging fd.
    let s = store.begin_put(b"fd").unwrap();
    let mut client = std::fs::File::from(s.fd().unwrap().try_clone_to_owned().unwrap());
    client.write_all(b"written by client").unwrap();
    assert_eq!(s.len().unwrap(), 17);
    assert_eq!(s.key(), b"fd");
    s.commit(17, PutMeta::default(), PutOptions::default())
        .unwrap();
    assert_eq!(get_bytes(&store, b"fd").unwrap(), b"written by client");

    let s = store.begin_put(b"empty").unwrap();
    let m = s
        .commit(
            0,
            PutMeta::default(),
            PutOptions {
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(m.size, 0);
    assert_eq!(get_bytes(&store, b"empty").unwrap(), b"");
}

#[test]
fn replace_and_delete() {
    let (dir, store) = temp_store();
    let v1 = put(&store, b"k", b"one");
    let v2 = put(&store, b"k", b"two!");
    assert!(v2.version > v1.version);
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"two!");
    assert_eq!(store.len(), 1);
    assert_eq!(store.bytes(), 4);
    // The superseded file is gone.
    assert!(!store.object_path(b"k", v1.version).exists());
    assert!(store.object_path(b"k", v2.version).exists());

    assert!(store.delete(b"k").unwrap());
    assert!(!store.delete(b"k").unwrap());
    assert!(store.get(b"k").unwrap().is_none());
    assert!(store.is_empty());
    assert_eq!(store.bytes(), 0);
    assert!(object_files(dir.path()).is_empty());
    assert_eq!(store.stats().deletes, 1);
}

#[test]
fn invalid_keys_are_rejected() {
    let (_dir, store) = temp_store();
    let long = vec![b'x'; MAX_KEY_LEN + 1];
    for key in [&b""[..], &long[..]] {
        assert!(matches!(store.get(key), Err(StoreError::InvalidKey { .. })));
        assert!(matches!(
            store.begin_put(key),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.delete(key),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(store.head(key).is_none());
    }
    let max = vec![0xffu8; MAX_KEY_LEN];
    put(&store, &max, b"max key");
    assert_eq!(get_bytes(&store, &max).unwrap(), b"max key");
    let e = store.begin_put(b"").unwrap_err();
    assert!(e.to_string().contains("1..=4096"), "{e}");
}

#[test]
fn close_then_reopen_in_same_process() {
    let (dir, store) = temp_store();
    put(&store, b"a", b"1");
    assert_eq!(store.data_dir(), dir.path());
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"a").unwrap(), b"1");
}
