//! Leftovers of interrupted commits are removed: staging files at open,
//! orphaned object files by the sweep.

mod common;

use std::time::{Duration, Instant};

use common::*;
use objmapper_store::{Store, StoreConfig};
use tempfile::TempDir;

fn open_no_sweep(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir)
        .with_mem_dir_inside()
        .without_memory_tier();
    cfg.sweep_orphans_on_open = false;
    Store::open(cfg).unwrap()
}

#[test]
fn leftover_staging_files_are_wiped() {
    let (dir, store) = temp_store();
    put(&store, b"k", b"v");
    store.close().unwrap();
    let staging = dir.path().join("staging");
    std::fs::write(staging.join("0000000000000009.tmp"), b"half a commit").unwrap();
    std::fs::create_dir(staging.join("junk")).unwrap();
    std::fs::write(staging.join("junk/x"), b"x").unwrap();

    let store = open(dir.path());
    assert!(std::fs::read_dir(&staging).unwrap().next().is_none());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v");
}

#[test]
fn orphan_sweep_deletes_unreferenced_files() {
    let dir = TempDir::new().unwrap();
    let store = open_no_sweep(dir.path());
    let live = put(&store, b"live", b"live data");
    let replaced = put(&store, b"replaced", b"v1");
    put(&store, b"replaced", b"v2");
    let live_path = store.object_path(b"live", live.version);
    let o1 = store.object_path(b"replaced", replaced.version);
    store.close().unwrap();

    // Orphans as a crash would leave them: a superseded version whose unlink
    // never happened, and a renamed file whose PUT record never made it.
    std::fs::write(&o1, b"v1").unwrap();
    let o2 = dir.path().join("objects/00").join(format!(
        "{}-{:016x}",
        "0".repeat(32),
        live.version + 100
    ));
    std::fs::write(&o2, b"ghost").unwrap();
    // A file carrying the live version under another key's hash.
    let o3 =
        dir.path()
            .join("objects/ff")
            .join(format!("ff{}-{:016x}", "1".repeat(30), live.version));
    std::fs::write(&o3, b"impostor").unwrap();
    // Not orphans: unknown names, and versions of the current run.
    let foreign = dir.path().join("objects/00/README");
    std::fs::write(&foreign, b"not ours").unwrap();
    let future =
        dir.path()
            .join("objects/00")
            .join(format!("{}-{:016x}", "0".repeat(32), u64::MAX - 1));
    std::fs::write(&future, b"in flight").unwrap();

    let store = open_no_sweep(dir.path());
    assert_eq!(store.sweep_orphans().unwrap(), 3);
    assert!(!o1.exists() && !o2.exists() && !o3.exists());
    assert!(foreign.exists() && future.exists() && live_path.exists());
    assert_eq!(get_bytes(&store, b"live").unwrap(), b"live data");
    assert_eq!(get_bytes(&store, b"replaced").unwrap(), b"v2");
    assert_eq!(store.sweep_orphans().unwrap(), 0);
    assert_eq!(store.stats().orphans_swept, 3);
}

#[test]
fn background_sweep_runs_at_open() {
    let (dir, store) = temp_store();
    let m = put(&store, b"k", b"v");
    let orphan = store.object_path(b"gone", m.version + 1);
    store.close().unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();

    let store = open(dir.path());
    // Usable while the sweep runs.
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v");
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphan.exists() {
        assert!(Instant::now() < deadline, "background sweep did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v");
}

/// `commit_then` publishes at once and unlinks the superseded version's file only when
/// its guard drops: readers see the new version before, and the old file is gone after.
#[test]
fn superseded_files_go_when_the_guard_drops() {
    for (name, base) in [
        (
            "disk",
            disk_only_config as fn(&std::path::Path) -> StoreConfig,
        ),
        ("memory", two_tiers),
    ] {
        let (_dir, store) = open_temp(base, |_| {});
        let path = |key: &[u8], v| match name {
            "disk" => store.object_path(key, v),
            _ => store.mem_object_path(key, v),
        };
        let v1 = put(&store, b"k", b"first");
        let (v2, after) = staged(&store, b"k", b"second")
            .commit_then(6, Default::default(), Default::default())
            .unwrap();
        assert!(!after.is_empty(), "{name}");
        assert_eq!(get_bytes(&store, b"k").unwrap(), b"second", "{name}");
        assert_eq!(store.head(b"k").unwrap().version, v2.version, "{name}");
        assert!(
            path(b"k", v1.version).exists(),
            "{name}: unlinked before the drop"
        );
        assert!(path(b"k", v2.version).exists(), "{name}");
        drop(after);
        assert!(
            !path(b"k", v1.version).exists(),
            "{name}: still there after the drop"
        );
        assert_eq!(get_bytes(&store, b"k").unwrap(), b"second", "{name}");

        // A first version supersedes nothing.
        let (_, after) = staged(&store, b"new", b"x")
            .commit_then(1, Default::default(), Default::default())
            .unwrap();
        assert!(after.is_empty(), "{name}");
    }
}
