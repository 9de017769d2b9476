//! Damage to real files (DESIGN.md guarantee 7, docs/STORAGE.md "Faults"): bit rot and
//! truncation of object files in either tier, a memory copy or a whole memory tier lost
//! while running, and another store's memory tier. Damaged bytes are never served,
//! the damage costs only the damaged version, and it is counted.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use objmapper_store::{OpenError, PutOptions, SharedObject, Store, StoreConfig, Tier};
use tempfile::TempDir;

fn cfg(data: &Path, mem: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(data);
    c.mem_dir = Some(mem.to_path_buf());
    c
}

fn disk_only(dir: &Path) -> StoreConfig {
    disk_only_config(&dir.join("data"))
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn flip_byte(path: &Path, at: u64) {
    objmapper_testkit::flip_bits(path, at, 0x20);
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn shared_bytes(o: &SharedObject) -> Vec<u8> {
    read_file(&o.file)
}

#[test]
fn a_truncated_disk_file_is_never_handed_out_and_stays_dropped() {
    let dir = TempDir::new().unwrap();
    let data = body(400_000, 1);
    let store = Store::open(disk_only(dir.path())).unwrap();
    let v = put_opts(&store, b"k", &data, DURABLE).version;
    put_opts(&store, b"neighbour", b"intact", DURABLE);
    let path = store.object_path(b"k", v);
    store.close().unwrap();
    truncate(&path, 133_333);

    let store = Store::open(disk_only(dir.path())).unwrap();
    // A clean open trusts the files; the first read checks the size.
    assert!(store.head(b"k").is_some());
    assert!(
        store.get(b"k").unwrap().is_none(),
        "a short fd under a longer SIZE"
    );
    assert!(store.head(b"k").is_none(), "dropped from the index");
    assert!(store.get_shared(b"k").unwrap().is_none());
    assert_eq!(store.stats().corrupt_size, 1);
    assert_eq!(get_bytes(&store, b"neighbour").unwrap(), b"intact");
    // The damaged file is kept for a person to look at, out of objects/.
    assert!(!path.exists());
    let kept = dir
        .path()
        .join("data/lost+found")
        .join(path.file_name().unwrap());
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 133_333);
    store.close().unwrap();

    // The drop was journaled like a delete: the version does not come back.
    let store = Store::open(disk_only(dir.path())).unwrap();
    assert!(store.head(b"k").is_none());
    assert_eq!(get_bytes(&store, b"neighbour").unwrap(), b"intact");
}

#[test]
fn every_read_path_checks_the_size() {
    for path_kind in ["get", "get_shared", "get_verified"] {
        let dir = TempDir::new().unwrap();
        let store = Store::open(disk_only(dir.path())).unwrap();
        let v = put_opts(&store, b"k", &body(10_000, 2), DURABLE).version;
        let path = store.object_path(b"k", v);
        store.close().unwrap();
        // Longer is as wrong as shorter.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"extra", 10_000)
            .unwrap();
        let store = Store::open(disk_only(dir.path())).unwrap();
        let found = match path_kind {
            "get" => store.get(b"k").unwrap().is_some(),
            "get_shared" => store.get_shared(b"k").unwrap().is_some(),
            _ => store.get_verified(b"k").unwrap().is_some(),
        };
        assert!(!found, "{path_kind}");
        assert_eq!(store.stats().corrupt_size, 1, "{path_kind}");
    }
}

#[test]
fn a_flipped_byte_on_disk_is_never_served_by_a_verified_read() {
    let dir = TempDir::new().unwrap();
    let data = body(300_000, 3);
    let store = Store::open(disk_only(dir.path())).unwrap();
    let v = put_opts(&store, b"k", &data, DURABLE).version;
    let path = store.object_path(b"k", v);
    store.close().unwrap();
    flip_byte(&path, 200_001);

    let store = Store::open(disk_only(dir.path())).unwrap();
    assert!(store.get_verified(b"k").unwrap().is_none());
    assert_eq!(store.stats().corrupt_checksum, 1);
    assert!(store.head(b"k").is_none());
    store.close().unwrap();
    let store = Store::open(disk_only(dir.path())).unwrap();
    assert!(store.head(b"k").is_none(), "the drop is durable");

    // An intact object verifies once; later reads cost nothing more.
    put_opts(&store, b"ok", &data, DURABLE);
    let o = store.get_verified(b"ok").unwrap().unwrap();
    assert!(o.verified());
    assert_eq!(shared_bytes(&o), data);
    assert!(store.get_shared(b"ok").unwrap().unwrap().verified());
}

/// Puts `key` with the default placement, waits for the write-behind, closes the store:
/// a clean memory copy and a disk copy of one version.
fn both_tiers(
    dir: &Path,
    key: &[u8],
    data: &[u8],
) -> (u64, std::path::PathBuf, std::path::PathBuf) {
    let store = Store::open(two_tiers(dir)).unwrap();
    let v = put_opts(&store, key, data, PutOptions::default()).version;
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert_eq!(store.head(key).unwrap().tier, Tier::Both);
    let paths = (store.mem_object_path(key, v), store.object_path(key, v));
    store.close().unwrap();
    (v, paths.0, paths.1)
}

#[test]
fn a_damaged_memory_copy_falls_back_to_the_intact_disk_copy() {
    // Bit rot in the memory copy: a verified read drops it and serves disk's.
    let dir = TempDir::new().unwrap();
    let data = body(5000, 4);
    let (_, mem, _) = both_tiers(dir.path(), b"k", &data);
    flip_byte(&mem, 17);
    let store = Store::open(two_tiers(dir.path())).unwrap();
    let o = store.get_verified(b"k").unwrap().expect("the disk copy");
    assert_eq!(shared_bytes(&o), data);
    assert_eq!(store.stats().corrupt_checksum, 1);
    // Served from disk (and perhaps promoted again, from the intact disk copy).
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert_eq!(
        shared_bytes(&store.get_verified(b"k").unwrap().unwrap()),
        data
    );
    assert_eq!(store.stats().corrupt_checksum, 1);
    drop(store);

    // Truncation of the memory copy: even the fd path falls back.
    let dir = TempDir::new().unwrap();
    let (_, mem, _) = both_tiers(dir.path(), b"k", &data);
    truncate(&mem, 100);
    let store = Store::open(two_tiers(dir.path())).unwrap();
    let o = store.get(b"k").unwrap().expect("the disk copy");
    assert_eq!(read(&o), data);
    assert_eq!(store.stats().corrupt_size, 1);
}

#[test]
fn a_rotten_disk_copy_never_reaches_the_memory_tier() {
    // Bit rot on disk is found when a move reads it: here the memory copy is gone too,
    // so the promotion reads the rotten disk copy, which must not reach the memory tier.
    let dir = TempDir::new().unwrap();
    let data = body(5000, 5);
    let (_, mem, disk) = both_tiers(dir.path(), b"k", &data);
    std::fs::remove_file(&mem).unwrap();
    flip_byte(&disk, 4000);
    let mut c = two_tiers(dir.path());
    c.promote_after_hits = 1;
    let store = Store::open(c).unwrap();
    // The fd path cannot verify (zero copy): it falls back to the disk copy's fd.
    for _ in 0..3 {
        let _ = store.get(b"k").unwrap();
    }
    assert!(store.wait_idle(Duration::from_secs(10)));
    let st = store.stats();
    assert_eq!(st.corrupt_missing, 1, "{st:?}");
    assert_eq!(
        st.corrupt_checksum, 1,
        "the promotion found the rot: {st:?}"
    );
    assert!(store.head(b"k").is_none());
    assert!(store.get_verified(b"k").unwrap().is_none());
}

#[test]
fn a_memory_copy_removed_while_running_falls_back_to_disk() {
    let (_dir, store) = open_temp(two_tiers, |_| {});
    let data = body(3000, 6);
    let v = put_opts(&store, b"k", &data, PutOptions::default()).version;
    assert!(store.wait_idle(Duration::from_secs(10)));
    std::fs::remove_file(store.mem_object_path(b"k", v)).unwrap();
    assert_eq!(read(&store.get(b"k").unwrap().expect("disk copy")), data);
    assert_eq!(store.stats().corrupt_missing, 1);
    // The shared path too.
    let v2 = put_opts(&store, b"k2", &data, PutOptions::default()).version;
    assert!(store.wait_idle(Duration::from_secs(10)));
    std::fs::remove_file(store.mem_object_path(b"k2", v2)).unwrap();
    assert_eq!(
        shared_bytes(&store.get_verified(b"k2").unwrap().expect("disk copy")),
        data
    );
}

#[test]
fn a_lost_dirty_copy_never_brings_back_the_version_it_replaced() {
    let (_dir, store) = open_temp(two_tiers, |c| {
        c.write_behind_delay = Duration::from_secs(3600)
    });
    put_opts(&store, b"k", b"old", DURABLE);
    let v2 = put_opts(&store, b"k", b"new", PutOptions::default()).version;
    assert!(store.head(b"k").unwrap().dirty);
    std::fs::remove_file(store.mem_object_path(b"k", v2)).unwrap();
    assert!(
        store.get(b"k").unwrap().is_none(),
        "never the replaced version"
    );
    assert!(store.head(b"k").is_none());
    assert_eq!(store.stats().corrupt_missing, 1);
}

#[test]
fn a_memory_tier_removed_while_running_sends_reads_and_puts_to_disk() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    let data = body(2000, 7);
    for i in 0..5u8 {
        put_opts(&store, &[b'k', i], &data, PutOptions::default());
    }
    assert!(store.wait_idle(Duration::from_secs(10)));
    std::fs::remove_dir_all(dir.path().join("mem")).unwrap();

    for i in 0..5u8 {
        assert_eq!(
            read(&store.get(&[b'k', i]).unwrap().expect("disk copy")),
            data
        );
    }
    assert_eq!(store.stats().corrupt_missing, 5);
    // Default PUTs still succeed: on disk.
    let m = {
        let s = staged(&store, b"new", b"after");
        s.commit(5, Default::default(), PutOptions::default())
            .unwrap()
    };
    assert_eq!(m.tier, Tier::Disk);
    assert_eq!(get_bytes(&store, b"new").unwrap(), b"after");
    assert!(store.stats().mem_write_fallbacks >= 1);
    // Ephemeral objects need the memory tier: refused with an error, nothing published.
    let s = staged(&store, b"eph", b"x");
    assert!(s.commit(1, Default::default(), EPHEMERAL).is_err());
    assert!(store.head(b"eph").is_none());
    store.close().unwrap();

    // A restart rebuilds the memory tier; nothing was lost.
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(get_bytes(&store, b"new").unwrap(), b"after");
    for i in 0..5u8 {
        assert_eq!(get_bytes(&store, &[b'k', i]).unwrap(), data);
    }
    put_opts(&store, b"m", b"mem", PutOptions::default());
    assert_eq!(store.head(b"m").unwrap().tier, Tier::Memory);
}

#[test]
fn another_stores_memory_tier_is_never_imported() {
    let dir = TempDir::new().unwrap();
    let (a, b, mem) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("m"),
    );
    let store = Store::open(cfg(&a, &mem)).unwrap();
    put_opts(&store, b"k", b"a's object", PutOptions::default());
    put_opts(&store, b"e", b"a's ephemeral", EPHEMERAL);
    store.close().unwrap();

    // B, started with A's memory tier (A shut down cleanly): it is discarded.
    let store = Store::open(cfg(&b, &mem)).unwrap();
    assert!(store.head(b"k").is_none());
    assert!(store.get_shared(b"k").unwrap().is_none());
    assert!(store.head(b"e").is_none());
    assert_eq!(store.len(), 0);
    assert!(store.wait_idle(Duration::from_secs(10)));
    store.close().unwrap();
    let store = Store::open(cfg(&b, &dir.path().join("m2"))).unwrap();
    assert_eq!(store.len(), 0, "nothing of A's reached B's disk");
    store.close().unwrap();

    // A keeps what is on its disk (its ephemeral object was in the discarded tier).
    let store = Store::open(cfg(&a, &dir.path().join("m3"))).unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"a's object");
    assert!(store.head(b"e").is_none());
    assert_eq!(
        std::fs::read(a.join("STORE_ID")).unwrap(),
        std::fs::read(dir.path().join("m3/STORE_ID")).unwrap()
    );
}

#[test]
fn another_stores_unclean_memory_tier_refuses_the_open() {
    let dir = TempDir::new().unwrap();
    let (a, b, mem) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("m"),
    );
    let mut ca = cfg(&a, &mem);
    ca.write_behind_delay = Duration::from_secs(3600);
    let store = Store::open(ca.clone()).unwrap();
    put_opts(
        &store,
        b"k",
        b"only in A's memory tier",
        PutOptions::default(),
    );
    drop(store); // a crash: no clean shutdown, the object is dirty

    match Store::open(cfg(&b, &mem)) {
        Err(e @ OpenError::ForeignTier { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("another store"), "{msg}");
        }
        other => panic!("expected ForeignTier, got {other:?}"),
    }
    // Nothing was touched: A gets its object back and writes it to its disk.
    ca.write_behind_delay = Duration::ZERO;
    let store = Store::open(ca).unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"only in A's memory tier");
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert_eq!(store.head(b"k").unwrap().tier, Tier::Both);
}

#[test]
fn stores_from_before_identities_adopt_one() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    put_opts(&store, b"d", b"on disk", DURABLE);
    let mut c = two_tiers(dir.path());
    c.write_behind_delay = Duration::from_secs(3600);
    drop(store);
    let store = Store::open(c).unwrap();
    put_opts(&store, b"m", b"dirty in memory", PutOptions::default());
    drop(store);
    std::fs::remove_file(dir.path().join("data/STORE_ID")).unwrap();
    std::fs::remove_file(dir.path().join("mem/STORE_ID")).unwrap();

    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(get_bytes(&store, b"d").unwrap(), b"on disk");
    assert_eq!(get_bytes(&store, b"m").unwrap(), b"dirty in memory");
    let id = std::fs::read(dir.path().join("data/STORE_ID")).unwrap();
    assert_eq!(id.len(), 33);
    assert_eq!(std::fs::read(dir.path().join("mem/STORE_ID")).unwrap(), id);
    store.close().unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(std::fs::read(dir.path().join("data/STORE_ID")).unwrap(), id);
    assert_eq!(store.len(), 2);
}

#[test]
fn a_wiped_data_directory_does_not_import_the_old_memory_tier() {
    // The common way to meet a foreign memory tier: the data directory was removed and
    // the default memory tier (named after its path) was left behind.
    let (dir, store) = open_temp(two_tiers, |_| {});
    put_opts(&store, b"k", b"old store", PutOptions::default());
    store.close().unwrap();
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert!(store.head(b"k").is_none());
    assert_eq!(store.len(), 0);
}
