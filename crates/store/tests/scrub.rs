//! The scrubber and `Store::verify_all` (docs/STORAGE.md, "The scrubber"): bit rot in
//! an object only ever read through fds (whose bytes the store never reads) is found by
//! re-reading every object, dropped like any damaged version, and counted; intact
//! neighbours are untouched; a rate of 0 scrubs nothing.

mod common;

use std::fs::OpenOptions;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use objmapper_store::{Store, StoreConfig};
use tempfile::TempDir;

fn disk_only(dir: &Path, rate: u64) -> StoreConfig {
    let mut c = disk_only_config(&dir.join("data"));
    c.scrub_rate_bytes = rate;
    c.scrub_start_delay = Duration::ZERO;
    c
}

fn flip_byte(path: &Path, at: u64) {
    objmapper_testkit::flip_bits(path, at, 0x20);
}

/// Waits (up to 20 s) for `f` to hold.
fn wait_for(what: &str, f: impl FnMut() -> bool) {
    objmapper_testkit::wait_for(what, Duration::from_secs(20), Duration::from_millis(20), f);
}

#[test]
fn the_scrubber_finds_rot_in_an_object_only_read_through_fds() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(disk_only(dir.path(), 1 << 30)).unwrap();
    let rotten = put(&store, b"rotten", &pattern(1, 300_000));
    put(&store, b"neighbour", &pattern(2, 300_000));
    // fd mode: the store hands out a description and never reads the bytes.
    assert_eq!(read(&store.get(b"rotten").unwrap().unwrap()).len(), 300_000);
    wait_for("both objects scrubbed", || store.stats().scrub_objects >= 2);
    assert_eq!(store.stats().scrub_damage, 0);
    let path = store.object_path(b"rotten", rotten.version);
    flip_byte(&path, 123_456);
    // The size is right, so an fd-mode GET still hands it out until a scrub finds it.
    wait_for("the scrubber to find the rot", || {
        store.stats().scrub_damage == 1
    });
    let s = store.stats();
    assert_eq!(s.corrupt_checksum, 1);
    assert!(s.scrub_objects >= 3 && s.scrub_bytes >= 900_000, "{s:?}");
    assert!(s.scrub_last_pass_secs > 0);
    assert!(
        store.get(b"rotten").unwrap().is_none(),
        "dropped, never served"
    );
    assert_eq!(
        get_bytes(&store, b"neighbour").unwrap(),
        pattern(2, 300_000)
    );
    // Kept for a person to look at.
    assert!(dir
        .path()
        .join("data/lost+found")
        .join(path.file_name().unwrap())
        .exists());
    // Later passes find nothing new.
    let passes = store.stats().scrub_passes;
    wait_for("another pass", || store.stats().scrub_passes > passes + 1);
    assert_eq!(store.stats().scrub_damage, 1);
    store.close().unwrap();
    // The drop is durable.
    let store = Store::open(disk_only(dir.path(), 0)).unwrap();
    assert!(store.head(b"rotten").is_none());
}

#[test]
fn a_rate_of_zero_scrubs_nothing_and_verify_all_does_it_on_demand() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(disk_only(dir.path(), 0)).unwrap();
    let a = put(&store, b"p/a", &pattern(3, 70_000));
    let b = put(&store, b"p/b", &pattern(4, 70_000));
    let c = put(&store, b"q/c", &pattern(5, 70_000));
    for (k, m) in [(&b"p/a"[..], &a), (b"p/b", &b), (b"q/c", &c)] {
        flip_byte(&store.object_path(k, m.version), 1);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let s = store.stats();
    assert_eq!((s.scrub_objects, s.scrub_passes, s.scrub_damage), (0, 0, 0));
    assert!(store.head(b"p/a").is_some(), "nothing scrubbed");

    // On demand, under a prefix: only p/ is read.
    let r = store.verify_all(Some(b"p/")).unwrap();
    assert_eq!(r.objects, 2);
    let mut keys: Vec<_> = r.damaged.iter().map(|d| d.key.to_vec()).collect();
    keys.sort();
    assert_eq!(keys, [b"p/a".to_vec(), b"p/b".to_vec()]);
    assert!(r
        .damaged
        .iter()
        .all(|d| d.reason == "checksum" && d.tier == "disk"));
    assert!(store.head(b"q/c").is_some());
    let s = store.stats();
    assert_eq!(
        (s.scrub_damage, s.corrupt_checksum, s.scrub_passes),
        (2, 2, 0)
    );

    // A truncated file is size damage; intact objects are read and kept.
    put(&store, b"ok", b"intact");
    OpenOptions::new()
        .write(true)
        .open(store.object_path(b"q/c", c.version))
        .unwrap()
        .set_len(10)
        .unwrap();
    let r = store.verify_all(None).unwrap();
    assert_eq!(r.objects, 2);
    assert_eq!(r.damaged.len(), 1);
    assert_eq!(
        (&*r.damaged[0].key, r.damaged[0].reason),
        (&b"q/c"[..], "size")
    );
    assert_eq!(r.bytes, 6);
    assert_eq!(get_bytes(&store, b"ok").unwrap(), b"intact");
    store.close().unwrap();
}

#[test]
fn the_scrubber_stops_promptly_at_close() {
    let dir = TempDir::new().unwrap();
    // 1 byte per second: one object takes ~forever to scrub.
    let store = Store::open(disk_only(dir.path(), 1)).unwrap();
    put(&store, b"k", &pattern(6, 1 << 20));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    store.close().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
