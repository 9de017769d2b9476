//! `Store::get_shared`'s cache of open files: one description per version, reused, and
//! dropped the moment the version's file is unlinked, so the cache never holds the space of
//! a replaced or deleted version.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{disk_only_config, open, open_temp, put, read_file, two_tiers};

/// How many of this process's fds point at an unlinked file under `dir`.
fn deleted_files_held(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.starts_with(&*dir.to_string_lossy()) && t.ends_with(" (deleted)")
        })
        .count()
}

#[test]
fn one_description_per_version_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, b"k", b"first");
    let a = store.get_shared(b"k").unwrap().unwrap();
    let b = store.get_shared(b"k").unwrap().unwrap();
    assert!(Arc::ptr_eq(&a.file, &b.file), "the second get opened again");
    assert_eq!(read_file(&a.file), b"first");
    // A private description of the same version, with its own offset.
    let private = store.reopen(&a).unwrap().expect("version still there");
    assert_eq!(read_file(&private), b"first");
}

#[test]
fn replaced_and_deleted_versions_leave_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, b"k", b"old bytes");
    drop(store.get_shared(b"k").unwrap().unwrap());
    assert_eq!(deleted_files_held(tmp.path()), 0);

    put(&store, b"k", b"new bytes");
    assert_eq!(
        deleted_files_held(tmp.path()),
        0,
        "the cache still holds the replaced version's file"
    );
    let new = store.get_shared(b"k").unwrap().unwrap();
    assert_eq!(read_file(&new.file), b"new bytes");

    // A caller that still holds the old version's file keeps its snapshot, as with any fd;
    // reopening it privately is no longer possible.
    assert!(store.delete(b"k").unwrap());
    assert_eq!(
        deleted_files_held(tmp.path()),
        1,
        "only our own Arc holds it"
    );
    assert_eq!(read_file(&new.file), b"new bytes");
    assert!(store.reopen(&new).unwrap().is_none());
    drop(new);
    assert_eq!(deleted_files_held(tmp.path()), 0);
    assert!(store.get_shared(b"k").unwrap().is_none());
}

/// How many of this process's fds point at an object file (`XX/<hash>-<version>`) under
/// `dir` (not at `dir` or its subdirectories, which the store and its orphan sweep open).
fn files_held(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            t.starts_with(&dir)
                && t.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains('-'))
        })
        .count()
}

#[test]
fn the_cache_holds_at_most_open_files_max_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_only_config(tmp.path());
    cfg.open_files_max = 2;
    cfg.sweep_orphans_on_open = false;
    let store = objmapper_store::Store::open(cfg).unwrap();
    let objects = tmp.path().join("objects");
    for i in 0..5u8 {
        put(&store, &[b'k', i], &[i; 10]);
    }
    for i in 0..5u8 {
        let o = store.get_shared(&[b'k', i]).unwrap().unwrap();
        assert_eq!(read_file(&o.file), [i; 10]);
    }
    assert_eq!(files_held(&objects), 2);
}

#[test]
fn a_promoted_version_leaves_the_disk_tiers_cache() {
    let (tmp, store) = open_temp(two_tiers, |c| c.mem_capacity_bytes = 1 << 20);
    let disk = tmp.path().join("data");
    let version = put(&store, b"k", b"bytes on disk").version;
    store.wait_idle(std::time::Duration::from_secs(10));
    store.demote(b"k").unwrap();
    // Read on disk: the disk copy's file enters its tier's cache, and a private
    // description is a reopen of it (the read may also queue a promotion).
    let obj = store.get_shared(b"k").unwrap().unwrap();
    assert_eq!(obj.meta.version, version);
    let private = store.get(b"k").unwrap().unwrap();
    assert_eq!(read_file(&private.file), b"bytes on disk");
    drop((obj, private));
    // Promoted (by that queued job or here): reads find the memory copy, so the disk
    // copy's file is let go.
    store.wait_idle(std::time::Duration::from_secs(10));
    store.promote(b"k").unwrap();
    assert_eq!(
        store.head(b"k").unwrap().tier,
        objmapper_store::Tier::Both,
        "promoted"
    );
    assert_eq!(
        files_held(&disk),
        0,
        "a promoted version's disk file is still cached"
    );
    let obj = store.get_shared(b"k").unwrap().unwrap();
    assert_eq!(read_file(&obj.file), b"bytes on disk");
    assert_eq!(files_held(&disk), 0);
}
