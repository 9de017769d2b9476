//! A torn or corrupt journal tail is dropped; earlier records survive.

mod common;

use std::io::Write;

use common::*;
use objmapper_store::Store;

fn journal_len(store: &Store) -> u64 {
    store.stats().journal_bytes
}

#[test]
fn garbage_appended_to_journal_is_dropped() {
    let (dir, store) = temp_store();
    put(&store, b"a", b"A");
    put(&store, b"b", b"B");
    let len = journal_len(&store);
    store.close().unwrap();

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_path(dir.path()))
        .unwrap();
    f.write_all(&pattern(99, 1000)).unwrap();
    drop(f);

    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"a").unwrap(), b"A");
    assert_eq!(get_bytes(&store, b"b").unwrap(), b"B");
    assert_eq!(journal_len(&store), len, "garbage truncated");
    assert_eq!(
        std::fs::metadata(journal_path(dir.path())).unwrap().len(),
        len
    );
    // New records land right after the valid ones and survive.
    put(&store, b"c", b"C");
    drop(store);
    let store = open(dir.path());
    for (k, v) in [(b"a", b"A"), (b"b", b"B"), (b"c", b"C")] {
        assert_eq!(get_bytes(&store, k).unwrap(), v);
    }
}

#[test]
fn record_truncated_mid_way_is_dropped() {
    let (dir, store) = temp_store();
    put(&store, b"a", b"first");
    let after_a = journal_len(&store);
    let mb = put(&store, b"b", b"second");
    let b_file = store.object_path(b"b", mb.version);
    drop(store);

    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(journal_path(dir.path()))
        .unwrap();
    f.set_len(after_a + 5).unwrap();
    drop(f);

    let mut cfg = disk_only_config(dir.path());
    cfg.sweep_orphans_on_open = false;
    let store = Store::open(cfg).unwrap();
    assert_eq!(get_bytes(&store, b"a").unwrap(), b"first");
    assert!(store.get(b"b").unwrap().is_none());
    assert_eq!(journal_len(&store), after_a);
    // b's data file is now an orphan.
    assert!(b_file.exists());
    assert_eq!(store.sweep_orphans().unwrap(), 1);
    assert!(!b_file.exists());
}

#[test]
fn checksum_mismatch_costs_only_that_record() {
    let (dir, store) = temp_store();
    put(&store, b"a", b"A");
    let after_a = journal_len(&store);
    put(&store, b"b", b"B");
    put(&store, b"c", b"C");
    store.close().unwrap();

    let path = journal_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a bit in b's payload (past its 12-byte header).
    bytes[after_a as usize + 14] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // Replay resynchronises on c's record: the damage costs b's record alone, and b
    // itself comes back from its file's label (without a label its file would be kept
    // in lost+found/, see tests/journal_damage.rs).
    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"a").unwrap(), b"A");
    assert_eq!(get_bytes(&store, b"b").unwrap(), b"B");
    assert_eq!(get_bytes(&store, b"c").unwrap(), b"C");
}
