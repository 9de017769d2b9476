//! A reader holding an fd keeps its snapshot across replace and delete.

mod common;

use common::*;

#[test]
fn replace_keeps_old_readers_bytes() {
    let (_dir, store) = temp_store();
    let old = pattern(1, 300_000);
    put(&store, b"k", &old);
    let reader = store.get(b"k").unwrap().unwrap();
    for i in 0..3 {
        put(&store, b"k", &pattern(10 + i, 1000));
    }
    assert_eq!(read(&reader), old);
    assert_eq!(get_bytes(&store, b"k").unwrap(), pattern(12, 1000));
    // The old version's name is gone; the reader holds the only reference.
    assert!(!store.object_path(b"k", reader.meta.version).exists());
}

#[test]
fn delete_keeps_readers_bytes() {
    let (_dir, store) = temp_store();
    put(&store, b"k", b"still here");
    let reader = store.get(b"k").unwrap().unwrap();
    assert!(store.delete(b"k").unwrap());
    assert!(store.get(b"k").unwrap().is_none());
    assert_eq!(read(&reader), b"still here");
    // Survives the store itself going away.
    store.close().unwrap();
    assert_eq!(read(&reader), b"still here");
}
