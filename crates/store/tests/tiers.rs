//! The two tiers: placement, capacity and eviction, promotion, pinning, TTL,
//! write-behind across restarts, and faults while persisting.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use objmapper_store::{
    CommitError, Condition, FaultInjector, FaultPoint, PutMeta, PutOptions, Store, StoreError, Tier,
};
use tempfile::TempDir;

#[test]
fn default_put_lands_in_memory_and_is_written_behind() {
    let (_dir, store) = open_temp(two_tiers, |_| {});
    let m = put(&store, b"k", b"write-behind");
    assert_eq!(m.tier, Tier::Memory);
    assert!(m.dirty);
    assert!(store.mem_object_path(b"k", m.version).exists());
    assert!(store.wait_idle(Duration::from_secs(10)));
    let h = store.head(b"k").unwrap();
    assert_eq!(h.tier, Tier::Both, "{h:?}");
    assert!(!h.dirty);
    assert!(store.object_path(b"k", m.version).exists());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"write-behind");
    assert_eq!(store.stats().flushes, 1);
    assert_eq!(store.stats().dirty, 0);
}

#[test]
fn a_key_rewritten_within_the_write_behind_delay_is_written_to_disk_once() {
    let (_dir, store) = open_temp(two_tiers, |c| {
        c.write_behind_delay = Duration::from_secs(3600)
    });
    let mut last = None;
    for i in 0..10u8 {
        last = Some(put(&store, b"k", &[i; 100]));
    }
    // Nothing is due yet: every version is still only in memory.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(store.stats().flushes, 0);
    assert_eq!(store.head(b"k").unwrap().tier, Tier::Memory);
    // wait_idle writes behind at once what the delay holds back: only the last version.
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert_eq!(store.stats().flushes, 1);
    let last = last.unwrap();
    assert!(store.object_path(b"k", last.version).exists());
    assert_eq!(store.head(b"k").unwrap().tier, Tier::Both);
    assert_eq!(get_bytes(&store, b"k").unwrap(), [9u8; 100]);
}

#[test]
fn with_no_write_behind_delay_objects_are_written_behind_at_once() {
    let (_dir, store) = open_temp(two_tiers, |c| c.write_behind_delay = Duration::ZERO);
    let m = put(&store, b"k", b"now");
    // No wait_idle (which would hurry it): the background thread writes it by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().flushes == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().flushes, 1);
    assert!(store.object_path(b"k", m.version).exists());
}

#[test]
fn durable_put_is_on_disk_when_acknowledged() {
    let (_dir, store) = open_temp(two_tiers, |_| {});
    let m = put_opts(&store, b"d", b"fsynced", DURABLE);
    assert_eq!(m.tier, Tier::Disk);
    assert!(!m.dirty);
    assert!(store.object_path(b"d", m.version).exists());
    assert_eq!(get_bytes(&store, b"d").unwrap(), b"fsynced");
}

#[test]
fn ephemeral_objects_never_reach_disk() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    // An older persistent version must not resurface either.
    let old = put_opts(&store, b"e", b"persistent", DURABLE);
    let m = put_opts(&store, b"e", b"in ram only", EPHEMERAL);
    assert!(m.ephemeral && !m.dirty);
    assert_eq!(m.tier, Tier::Memory);
    store.flush().unwrap();
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert!(!store.object_path(b"e", m.version).exists());
    assert!(!store.object_path(b"e", old.version).exists());
    assert!(object_files(&dir.path().join("data")).is_empty());
    assert_eq!(get_bytes(&store, b"e").unwrap(), b"in ram only");
    store.close().unwrap();
    // After a restart (memory tier intact) it is still served from memory.
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(get_bytes(&store, b"e").unwrap(), b"in ram only");
    assert!(object_files(&dir.path().join("data")).is_empty());
    drop(store);
    // After a "reboot" (memory tier gone) it is gone, and so is the old version.
    std::fs::remove_dir_all(dir.path().join("mem")).unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert!(store.get(b"e").unwrap().is_none());
}

#[test]
fn ephemeral_without_a_memory_tier_is_no_space() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(two_tiers(dir.path()).without_memory_tier()).unwrap();
    let e = try_put(&store, b"e", b"x", EPHEMERAL).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::NoSpace(_))),
        "{e}"
    );
    assert!(e.to_string().contains("memory tier"), "{e}");
}

#[test]
fn memory_tier_evicts_to_disk_and_readers_keep_their_bytes() {
    let (_dir, store) = open_temp(two_tiers, |c| c.mem_capacity_bytes = 10 * 1000);
    let mut fds = Vec::new();
    for i in 0..40u64 {
        let data = pattern(i, 1000);
        let m = put(&store, format!("k{i}").as_bytes(), &data);
        fds.push((
            store.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            data,
            m,
        ));
    }
    let st = store.stats();
    assert!(st.memory.bytes <= 10 * 1000, "{st:?}");
    assert!(st.memory.evictions >= 30, "{st:?}");
    // Nothing was lost: evicted dirty objects were written to disk first.
    for i in 0..40u64 {
        assert_eq!(
            get_bytes(&store, format!("k{i}").as_bytes()).unwrap(),
            pattern(i, 1000),
            "k{i}"
        );
    }
    // Every reader's fd still reads its snapshot, whatever tier it came from.
    for (obj, data, _) in &fds {
        assert_eq!(&read(obj), data);
    }
}

#[test]
fn disk_tier_evicts_as_a_cache() {
    let dir = TempDir::new().unwrap();
    let mut c = two_tiers(dir.path()).without_memory_tier();
    c.disk_max_objects = 20;
    let store = Store::open(c).unwrap();
    let held = {
        put(&store, b"first", b"one");
        store.get(b"first").unwrap().unwrap()
    };
    for i in 0..100u64 {
        put(&store, format!("k{i}").as_bytes(), &pattern(i, 100));
    }
    let st = store.stats();
    assert!(st.disk.objects <= 20, "{st:?}");
    assert_eq!(st.disk.evictions, 81, "{st:?}");
    assert_eq!(store.len(), 20);
    // Whatever survives reads back intact (which ones is the policy's call;
    // see frequently_read_objects_survive_a_scan).
    let mut survivors = 0;
    for i in 0..100u64 {
        if let Some(b) = get_bytes(&store, format!("k{i}").as_bytes()) {
            assert_eq!(b, pattern(i, 100), "k{i}");
            survivors += 1;
        }
    }
    assert!(survivors >= 19, "{survivors}");
    assert_eq!(read(&held), b"one");
}

#[test]
fn frequently_read_objects_survive_a_scan() {
    let dir = TempDir::new().unwrap();
    let mut c = two_tiers(dir.path()).without_memory_tier();
    c.disk_max_objects = 50;
    let store = Store::open(c).unwrap();
    for i in 0..10u64 {
        put(&store, format!("hot{i}").as_bytes(), b"hot");
    }
    for round in 0..5u64 {
        for i in 0..10u64 {
            assert!(store.get(format!("hot{i}").as_bytes()).unwrap().is_some());
        }
        for j in 0..40u64 {
            put(&store, format!("scan{round}-{j}").as_bytes(), b"cold");
        }
    }
    for i in 0..10u64 {
        assert!(
            store.get(format!("hot{i}").as_bytes()).unwrap().is_some(),
            "hot{i} was evicted by a one-hit scan"
        );
    }
}

#[test]
fn a_hot_disk_object_is_promoted_into_memory() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    let m = put_opts(&store, b"hot", b"read me often", DURABLE);
    // Start from disk only: drop the memory tier, as a reboot would.
    store.close().unwrap();
    std::fs::remove_dir_all(dir.path().join("mem")).unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(store.head(b"hot").unwrap().tier, Tier::Disk);
    assert_eq!(get_bytes(&store, b"hot").unwrap(), b"read me often");
    assert_eq!(get_bytes(&store, b"hot").unwrap(), b"read me often");
    assert!(store.wait_idle(Duration::from_secs(10)));
    let h = store.head(b"hot").unwrap();
    assert_eq!(h.tier, Tier::Both, "promoted after repeated reads: {h:?}");
    assert_eq!(h.version, m.version);
    assert!(store.stats().promotions >= 1);
    assert!(store.mem_object_path(b"hot", m.version).exists());
    assert_eq!(get_bytes(&store, b"hot").unwrap(), b"read me often");
    assert!(store.stats().memory.hits >= 1);
}

#[test]
fn pinned_objects_are_never_evicted_and_a_full_tier_says_no_space() {
    let dir = TempDir::new().unwrap();
    let mut c = two_tiers(dir.path()).without_memory_tier();
    c.disk_max_objects = 5;
    let store = Store::open(c).unwrap();
    for i in 0..5u64 {
        put_opts(&store, format!("p{i}").as_bytes(), b"pinned", PINNED);
    }
    let e = try_put(&store, b"one more", b"x", PutOptions::default()).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::NoSpace(_))),
        "{e}"
    );
    assert!(e.to_string().contains("pinned"), "{e}");
    assert_eq!(store.stats().no_space, 1);
    // Unpin one: now there is room, and the unpinned one is the victim.
    assert!(store.set_pinned(b"p2", false).unwrap());
    put(&store, b"one more", b"x");
    assert!(store.get(b"p2").unwrap().is_none());
    for i in [0u64, 1, 3, 4] {
        assert!(store.get(format!("p{i}").as_bytes()).unwrap().is_some());
    }
    assert!(!store.set_pinned(b"missing", true).unwrap());
    // Pins survive a restart.
    store.close().unwrap();
    let mut c = two_tiers(dir.path()).without_memory_tier();
    c.disk_max_objects = 5;
    let store = Store::open(c).unwrap();
    assert!(store.head(b"p0").unwrap().pinned);
    assert!(!store.head(b"one more").unwrap().pinned);
}

#[test]
fn an_object_larger_than_a_tier_is_no_space_or_goes_to_disk() {
    let (_dir, store) = open_temp(two_tiers, |c| {
        c.mem_capacity_bytes = 1000;
        c.disk_capacity_bytes = 5000;
    });
    // Too big for memory: straight to disk.
    let m = put(&store, b"mid", &pattern(1, 3000));
    assert_eq!(m.tier, Tier::Disk);
    // Too big for everything.
    let e = try_put(&store, b"huge", &pattern(2, 6000), PutOptions::default()).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::NoSpace(_))),
        "{e}"
    );
    assert!(store.get(b"huge").unwrap().is_none());
    let e = try_put(&store, b"eph", &pattern(3, 2000), EPHEMERAL).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::NoSpace(_))),
        "{e}"
    );
}

#[test]
fn objects_over_the_threshold_go_straight_to_disk() {
    let (_dir, store) = open_temp(two_tiers, |c| c.direct_to_disk_threshold = 1000);
    let big = put(&store, b"big", &pattern(1, 5000));
    assert_eq!(big.tier, Tier::Disk);
    assert!(!big.dirty);
    let small = put(&store, b"small", &pattern(2, 100));
    assert_eq!(small.tier, Tier::Memory);
    // A new small version of a big key supersedes the disk one.
    let v2 = put(&store, b"big", b"now small");
    assert_eq!(v2.tier, Tier::Memory);
    assert_eq!(get_bytes(&store, b"big").unwrap(), b"now small");
    store.flush().unwrap();
    assert!(!store.object_path(b"big", big.version).exists());
}

#[test]
fn expired_objects_are_never_served_and_are_swept() {
    let (_dir, store) = open_temp(two_tiers, |c| {
        c.expiry_sweep_interval = Duration::from_millis(100)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let put_exp = |key: &[u8], at: u64, opts: PutOptions| {
        let s = staged(&store, key, b"x");
        s.commit(
            1,
            PutMeta {
                expires_at: Some(at),
                ..Default::default()
            },
            opts,
        )
        .unwrap()
    };
    put_exp(b"past", now - 1, PutOptions::default());
    put_exp(b"past-disk", now - 1, DURABLE);
    let soon = put_exp(b"soon", now + 2, PutOptions::default());
    assert_eq!(soon.expires_at, Some(now + 2));
    let later = put_exp(b"later", now + 3600, PutOptions::default());
    assert!(store.get(b"past").unwrap().is_none());
    assert!(store.head(b"past").is_none());
    assert!(store.get(b"past-disk").unwrap().is_none());
    assert!(store.get(b"soon").unwrap().is_some());
    std::thread::sleep(Duration::from_millis(3100));
    assert!(
        store.get(b"soon").unwrap().is_none(),
        "expired objects are not served"
    );
    assert!(store.head(b"soon").is_none());
    // The background sweep reclaims the space.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.len(), 1);
    assert!(store.stats().expirations >= 3, "{:?}", store.stats());
    assert_eq!(store.head(b"later").unwrap().expires_at, later.expires_at);
}

#[test]
fn dirty_objects_survive_a_daemon_crash_when_the_memory_tier_does() {
    let dir = TempDir::new().unwrap();
    let mut c = two_tiers(dir.path());
    // A sweep that never runs keeps the flusher from racing the "crash".
    c.expiry_sweep_interval = Duration::from_secs(3600);
    let store = Store::open(c.clone()).unwrap();
    let mut kept = Vec::new();
    for i in 0..20u64 {
        let data = pattern(i, 2000);
        put(&store, format!("k{i}").as_bytes(), &data);
        kept.push(data);
    }
    // Crash: no close(), whatever the flusher managed is on disk, the rest
    // only in the memory tier (tmpfs survives a process crash).
    drop(store);
    let store = Store::open(c).unwrap();
    for (i, data) in kept.iter().enumerate() {
        let got = get_bytes(&store, format!("k{i}").as_bytes());
        assert_eq!(got.as_ref(), Some(data), "k{i}");
    }
    store.flush().unwrap();
    assert!(store.wait_idle(Duration::from_secs(10)));
    assert_eq!(store.stats().dirty, 0);
    store.close().unwrap();
    // Everything reached disk: even without the memory tier it is all there.
    std::fs::remove_dir_all(dir.path().join("mem")).unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    for (i, data) in kept.iter().enumerate() {
        assert_eq!(
            &get_bytes(&store, format!("k{i}").as_bytes()).unwrap(),
            data
        );
    }
}

#[test]
fn close_writes_dirty_objects_to_disk() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    for i in 0..50u64 {
        put(&store, format!("k{i}").as_bytes(), &pattern(i, 500));
    }
    store.close().unwrap();
    std::fs::remove_dir_all(dir.path().join("mem")).unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    assert_eq!(store.len(), 50);
    for i in 0..50u64 {
        assert_eq!(
            get_bytes(&store, format!("k{i}").as_bytes()).unwrap(),
            pattern(i, 500)
        );
    }
}

/// Fails the chosen disk operation while armed.
#[derive(Debug, Default)]
struct Faults {
    enospc_writes: AtomicU64,
    eio_syncs: AtomicU64,
}

impl FaultInjector for Faults {
    fn check(&self, point: FaultPoint) -> std::io::Result<()> {
        let take = |c: &AtomicU64| {
            c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        match point {
            FaultPoint::ObjectWrite if take(&self.enospc_writes) => {
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            }
            FaultPoint::Sync if take(&self.eio_syncs) => Err(std::io::Error::from_raw_os_error(5)),
            _ => Ok(()),
        }
    }
}

#[test]
fn disk_full_while_writing_behind_keeps_the_object_served_from_memory() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = two_tiers(dir.path());
    c.faults = Some(faults.clone());
    let store = Store::open(c).unwrap();
    faults.enospc_writes.store(u64::MAX, Ordering::SeqCst);
    let m = put(&store, b"k", b"survives ENOSPC");
    assert!(store.flush().is_err(), "flush reports the disk error");
    assert!(store.stats().flush_errors >= 1);
    assert!(
        !store.is_poisoned(),
        "ENOSPC on a write is not a sync failure"
    );
    let h = store.head(b"k").unwrap();
    assert!(h.dirty && h.tier == Tier::Memory, "{h:?}");
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"survives ENOSPC");
    // A durable PUT fails with a clear error and publishes nothing.
    let e = try_put(&store, b"d", b"needs disk", DURABLE).unwrap_err();
    assert!(e.to_string().contains("object file"), "{e}");
    assert!(store.get(b"d").unwrap().is_none());
    assert!(store.stats().flush_errors >= 1);
    // Once the disk has room again the background retry writes it.
    faults.enospc_writes.store(0, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.head(b"k").unwrap().dirty && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!store.head(b"k").unwrap().dirty);
    assert!(store.object_path(b"k", m.version).exists());
}

#[test]
fn a_failed_fsync_poisons_the_store_into_read_only() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = two_tiers(dir.path());
    c.faults = Some(faults.clone());
    let store = Store::open(c).unwrap();
    put_opts(&store, b"before", b"safe", DURABLE);
    faults.eio_syncs.store(1, Ordering::SeqCst);
    let e = try_put(&store, b"k", b"x", DURABLE).unwrap_err();
    assert!(e.to_string().contains("poisoned"), "{e}");
    assert!(store.is_poisoned());
    assert!(store.get(b"k").unwrap().is_none(), "nothing published");
    // Writes are refused from now on, reads keep working.
    let e = store.begin_put(b"k2").unwrap_err();
    assert!(matches!(e, objmapper_store::StoreError::Poisoned), "{e}");
    assert!(store.delete(b"before").is_err());
    assert_eq!(get_bytes(&store, b"before").unwrap(), b"safe");
    assert!(store.close().is_err());
}

#[test]
fn a_memory_tier_full_of_pinned_objects_sends_persistent_puts_to_disk() {
    let (_dir, store) = open_temp(two_tiers, |c| c.mem_max_objects = 3);
    for i in 0..3u64 {
        put_opts(&store, format!("p{i}").as_bytes(), b"pinned", PINNED);
    }
    let m = put(&store, b"more", b"goes to disk");
    assert_eq!(m.tier, Tier::Disk);
    assert_eq!(get_bytes(&store, b"more").unwrap(), b"goes to disk");
    let e = try_put(&store, b"eph", b"x", EPHEMERAL).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::NoSpace(_))),
        "{e}"
    );
    for i in 0..3u64 {
        assert!(store.head(format!("p{i}").as_bytes()).unwrap().pinned);
    }
}

#[test]
fn conditional_writes_compare_and_swap() {
    let (dir, store) = open_temp(two_tiers, |_| {});
    let only_if = |c: Condition| PutOptions {
        condition: c,
        ..Default::default()
    };
    let v1 = put_opts(&store, b"k", b"one", only_if(Condition::IfAbsent));
    let e = try_put(&store, b"k", b"again", only_if(Condition::IfAbsent)).unwrap_err();
    assert!(
        matches!(e, CommitError::Store(StoreError::PreconditionFailed(_))),
        "{e}"
    );
    let e = try_put(
        &store,
        b"k",
        b"two",
        only_if(Condition::IfVersion(v1.version + 100)),
    )
    .unwrap_err();
    assert!(e.to_string().contains(&v1.version.to_string()), "{e}");
    assert_eq!(
        get_bytes(&store, b"k").unwrap(),
        b"one",
        "a failed CAS changes nothing"
    );
    let v2 = put_opts(
        &store,
        b"k",
        b"two",
        only_if(Condition::IfVersion(v1.version)),
    );
    assert!(v2.version > v1.version);
    let e = store
        .delete_if(b"k", Condition::IfVersion(v1.version), false)
        .unwrap_err();
    assert!(
        matches!(e, objmapper_store::StoreError::PreconditionFailed(_)),
        "{e}"
    );
    assert!(store
        .delete_if(b"k", Condition::IfVersion(v2.version), false)
        .unwrap());
    assert!(store.get(b"k").unwrap().is_none());
    // No stray files from the refused PUTs.
    store.flush().unwrap();
    assert!(object_files(&dir.path().join("data")).is_empty());
    assert!(object_files(&dir.path().join("mem")).is_empty());
}

#[test]
fn concurrent_compare_and_swap_has_exactly_one_winner() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(Store::open(two_tiers(dir.path())).unwrap());
    let base = put(&store, b"counter", b"0").version;
    for round in 0..20 {
        let current = store.head(b"counter").unwrap().version;
        let winners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let store = store.clone();
                    s.spawn(move || {
                        let st = staged(&store, b"counter", format!("{round}-{t}").as_bytes());
                        let len = st.len().unwrap();
                        st.commit(
                            len,
                            PutMeta::default(),
                            PutOptions {
                                condition: Condition::IfVersion(current),
                                ..Default::default()
                            },
                        )
                        .is_ok() as usize
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1, "round {round}");
    }
    assert!(store.head(b"counter").unwrap().version > base);
}
