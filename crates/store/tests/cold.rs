//! The cold-tier seam (crate::cold): what the store tells a cold tier, and what it
//! refuses to take back from one. A fill must never bring back what was deleted, banned
//! or superseded here, and never publish bytes other than the ones recorded.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use objmapper_store::{
    BanInfo, ColdTier, CommitError, ObjectHasher, ObjectMeta, Origin, PutMeta, PutOptions, Store,
    StoreError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Committed(Vec<u8>, u64),
    Deleted(Vec<u8>, u64),
    Banned(Vec<u8>, u64),
    Purged(Vec<u8>, u64),
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Heard>>);

impl ColdTier for Recorder {
    fn committed(&self, meta: &Arc<ObjectMeta>) {
        self.0
            .lock()
            .unwrap()
            .push(Heard::Committed(meta.key.to_vec(), meta.mtime_ns));
    }
    fn deleted(&self, key: &[u8], stamp_ns: u64) {
        self.0
            .lock()
            .unwrap()
            .push(Heard::Deleted(key.to_vec(), stamp_ns));
    }
    fn banned(&self, ban: &BanInfo) {
        self.0
            .lock()
            .unwrap()
            .push(Heard::Banned(ban.expr.to_vec(), ban.stamp));
    }
    fn purged(&self, prefix: &[u8], stamp_ns: u64) {
        self.0
            .lock()
            .unwrap()
            .push(Heard::Purged(prefix.to_vec(), stamp_ns));
    }
}

impl Recorder {
    fn take(&self) -> Vec<Heard> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn with_cold(dir: &std::path::Path) -> (Store, Arc<Recorder>) {
    let store = open(dir);
    let rec = Arc::new(Recorder::default());
    assert!(store.attach_cold(rec.clone()));
    assert!(
        !store.attach_cold(Arc::new(Recorder::default())),
        "a second cold tier is refused"
    );
    (store, rec)
}

fn sum(bytes: &[u8]) -> u64 {
    let mut h = ObjectHasher::new();
    h.update(bytes);
    h.digest()
}

fn fill(
    store: &Store,
    key: &[u8],
    bytes: &[u8],
    meta: PutMeta,
    origin: Origin,
) -> Result<Arc<ObjectMeta>, CommitError> {
    let mut s = store.begin_fill(key).unwrap();
    s.write_all(bytes).unwrap();
    s.commit_fill(bytes.len() as u64, meta, origin)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn precondition(r: Result<Arc<ObjectMeta>, CommitError>) -> String {
    match r {
        Err(CommitError::Store(StoreError::PreconditionFailed(m))) => m,
        other => panic!("expected a refused precondition, got {other:?}"),
    }
}

#[test]
fn persistent_commits_deletes_and_bans_are_reported_fills_and_ephemeral_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = with_cold(dir.path());
    let m = put(&store, b"a", b"one");
    assert_eq!(
        rec.take(),
        vec![Heard::Committed(b"a".to_vec(), m.mtime_ns)]
    );

    // The deleted key had a version; the other never existed here: both are reported,
    // so another host's copy dies too.
    assert!(store.delete(b"a").unwrap());
    assert!(!store.delete(b"never-here").unwrap());
    let heard = rec.take();
    assert_eq!(heard.len(), 2);
    let stamps: Vec<u64> = heard
        .iter()
        .map(|h| match h {
            Heard::Deleted(_, s) => *s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(stamps[0] > m.mtime_ns && stamps[1] > stamps[0]);
    assert_eq!(
        store.tombstones().0,
        2,
        "remembered until the cold tier settles them"
    );
    store.settle_tombstone(b"a", stamps[0]);
    store.settle_tombstone(b"never-here", stamps[1]);
    assert_eq!(store.tombstones().0, 0);

    // A ban the tier can hold is reported as what it is there: a purge, a delete (and
    // remembered as one); any other as a ban of this host.
    let ban = store.ban(br#"key ^ "img/""#).unwrap();
    assert_eq!(rec.take(), vec![Heard::Purged(b"img/".to_vec(), ban.stamp)]);
    let ban = store.ban(br#"key == "one""#).unwrap();
    assert_eq!(rec.take(), vec![Heard::Deleted(b"one".to_vec(), ban.stamp)]);
    assert_eq!(store.tombstones().0, 1);
    store.settle_tombstone(b"one", ban.stamp);
    let ban = store.ban(br#"key ^ "img/" && meta.tag == "t""#).unwrap();
    assert_eq!(
        rec.take(),
        vec![Heard::Banned(
            br#"key ^ "img/" && meta.tag == "t""#.to_vec(),
            ban.stamp
        )]
    );

    let origin = Origin {
        stamp_ns: now_ns(),
        checksum: sum(b"filled"),
    };
    fill(&store, b"f", b"filled", PutMeta::default(), origin).unwrap();
    assert_eq!(rec.take(), vec![], "a fill came from the cold tier");
    store.close().unwrap();

    // Without a cold tier, deletes remember nothing.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, b"a", b"one");
    store.delete(b"a").unwrap();
    assert_eq!(store.tombstones().0, 0);
}

#[test]
fn an_ephemeral_commit_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(objmapper_store::StoreConfig::new(dir.path().join("d")).with_mem_dir_inside())
            .unwrap();
    let rec = Arc::new(Recorder::default());
    store.attach_cold(rec.clone());
    let s = staged(&store, b"e", b"tmp");
    s.commit(
        3,
        PutMeta::default(),
        PutOptions {
            ephemeral: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rec.take(), vec![]);
}

/// An ephemeral write over a key whose older version the tier holds keeps that version
/// from being read back here once the ephemeral one has expired (it was: nothing of the
/// ephemeral write reaches the tier).
#[test]
fn an_expired_ephemeral_write_keeps_the_version_it_replaced_out() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(objmapper_store::StoreConfig::new(dir.path().join("d")).with_mem_dir_inside())
            .unwrap();
    store.attach_cold(Arc::new(Recorder::default()));
    let before = now_ns() - 1_000_000_000;
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    staged(&store, b"k", b"v2")
        .commit(
            2,
            PutMeta {
                expires_at: Some(soon),
                ..Default::default()
            },
            PutOptions {
                ephemeral: true,
                ..Default::default()
            },
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(store.get(b"k").unwrap().is_none(), "expired");
    let v1 = Origin {
        stamp_ns: before,
        checksum: sum(b"v1"),
    };
    precondition(fill(&store, b"k", b"v1", PutMeta::default(), v1));
}

#[test]
fn a_fill_keeps_its_origin_and_is_an_ordinary_local_object() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let stamp = now_ns() - 5_000_000_000;
    let meta = PutMeta {
        content_type: Some("text/plain".into()),
        custom: vec![("etag".into(), b"\"abc\"".to_vec())],
        expires_at: None,
    };
    let m = fill(
        &store,
        b"k",
        b"from afar",
        meta,
        Origin {
            stamp_ns: stamp,
            checksum: sum(b"from afar"),
        },
    )
    .unwrap();
    assert_eq!(
        m.mtime_ns, stamp,
        "the original commit stamp, not the fill's time"
    );
    let got = store.get(b"k").unwrap().unwrap();
    assert_eq!(read(&got), b"from afar");
    assert_eq!(got.meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.meta.custom_value("etag"), Some(&b"\"abc\""[..]));
    assert_eq!(got.meta.mtime_ns, stamp);

    // It survives a restart as any local object does.
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"from afar");
    assert_eq!(store.head(b"k").unwrap().mtime_ns, stamp);
}

#[test]
fn a_fill_is_refused_for_wrong_bytes_a_live_version_a_later_delete_or_ban_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let origin = |bytes: &[u8], stamp_ns: u64| Origin {
        stamp_ns,
        checksum: sum(bytes),
    };

    // Bytes other than the recorded ones.
    let r = fill(
        &store,
        b"k",
        b"tampered",
        PutMeta::default(),
        origin(b"original", now_ns()),
    );
    assert!(
        matches!(r, Err(CommitError::ChecksumMismatch { .. })),
        "{r:?}"
    );
    assert!(store.get(b"k").unwrap().is_none());
    assert!(staging_files(dir.path()).is_empty());
    assert_eq!(object_files(dir.path()).len(), 0, "nothing left behind");

    // A live local version wins over any fill.
    put(&store, b"live", b"local");
    let m = precondition(fill(
        &store,
        b"live",
        b"remote",
        PutMeta::default(),
        origin(b"remote", now_ns()),
    ));
    assert!(m.contains("already exists"), "{m}");
    assert_eq!(get_bytes(&store, b"live").unwrap(), b"local");

    // Deleted here after the version was written: it stays deleted.
    let old = now_ns();
    put(&store, b"gone", b"v1");
    store.delete(b"gone").unwrap();
    let m = precondition(fill(
        &store,
        b"gone",
        b"v1",
        PutMeta::default(),
        origin(b"v1", old),
    ));
    assert!(m.contains("deleted here"), "{m}");
    assert!(store.get(b"gone").unwrap().is_none());
    // A version written after the delete may come in.
    fill(
        &store,
        b"gone",
        b"v2",
        PutMeta::default(),
        origin(b"v2", now_ns()),
    )
    .unwrap();
    assert_eq!(get_bytes(&store, b"gone").unwrap(), b"v2");

    // Banned here after it was written.
    let before_ban = now_ns();
    store.ban(br#"key ^ "img/""#).unwrap();
    let m = precondition(fill(
        &store,
        b"img/1",
        b"x",
        PutMeta::default(),
        origin(b"x", before_ban),
    ));
    assert!(m.contains("ban"), "{m}");
    fill(
        &store,
        b"img/2",
        b"y",
        PutMeta::default(),
        origin(b"y", now_ns()),
    )
    .unwrap();

    // Expired.
    let meta = PutMeta {
        expires_at: Some(1),
        ..Default::default()
    };
    let m = precondition(fill(&store, b"old", b"z", meta, origin(b"z", now_ns())));
    assert!(m.contains("expired"), "{m}");
    assert!(store.get(b"old").unwrap().is_none());
}

#[test]
fn another_hosts_delete_removes_older_versions_only_and_blocks_older_fills() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = with_cold(dir.path());
    put(&store, b"old", b"1");
    let cut = now_ns();
    put(&store, b"new", b"2");
    rec.take();
    assert!(store.apply_cold_delete(b"old", cut).unwrap());
    assert!(
        !store.apply_cold_delete(b"new", cut).unwrap(),
        "committed after the delete"
    );
    assert!(store.get(b"old").unwrap().is_none());
    assert_eq!(get_bytes(&store, b"new").unwrap(), b"2");
    assert_eq!(
        rec.take(),
        vec![],
        "it came from the cold tier: not reported back"
    );
    let r = fill(
        &store,
        b"old",
        b"1",
        PutMeta::default(),
        Origin {
            stamp_ns: cut - 1,
            checksum: sum(b"1"),
        },
    );
    precondition(r);
}

#[test]
fn another_hosts_ban_keeps_its_stamp_and_order_and_is_added_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = with_cold(dir.path());
    put(&store, b"a/1", b"1");
    let cut = now_ns();
    put(&store, b"a/2", b"2");
    let local = store.ban(br#"key == "zzz""#).unwrap();
    rec.take();
    let info = store.apply_cold_ban(br#"key ^ "a/""#, cut).unwrap();
    assert_eq!(info.stamp, cut);
    let again = store.apply_cold_ban(br#"key ^ "a/""#, cut).unwrap();
    assert_eq!(again.stamp, cut);
    let bans = store.bans();
    assert_eq!(bans.len(), 2, "added once");
    assert!(
        bans.windows(2).all(|w| w[0].stamp <= w[1].stamp),
        "stamp order"
    );
    assert_eq!(bans[1].stamp, local.stamp);
    assert!(
        store.get(b"a/1").unwrap().is_none(),
        "committed before the ban"
    );
    assert_eq!(
        get_bytes(&store, b"a/2").unwrap(),
        b"2",
        "committed after it"
    );
    assert_eq!(rec.take(), vec![]);
    // It is durable like any ban.
    store.close().unwrap();
    let store = open(dir.path());
    assert!(store.get(b"a/1").unwrap().is_none());
    assert_eq!(get_bytes(&store, b"a/2").unwrap(), b"2");
}

#[test]
fn a_purge_by_prefix_is_reported_once_and_blocks_older_fills_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = with_cold(dir.path());
    for k in [&b"p/\"q\\1"[..], b"p/\"q\\2", b"p/\"q\\3", b"other"] {
        put(&store, k, b"x");
    }
    let before = now_ns();
    rec.take();
    assert_eq!(store.purge_prefix(b"p/\"q\\").unwrap(), 3);
    let heard = rec.take();
    assert_eq!(heard.len(), 1, "one report, not one per key: {heard:?}");
    let Heard::Purged(prefix, stamp) = &heard[0] else {
        panic!("{heard:?}")
    };
    assert_eq!(prefix, b"p/\"q\\");
    assert!(*stamp > before);
    assert_eq!(store.tombstones().0, 0, "the ban stands for the keys");
    assert!(get_bytes(&store, b"p/\"q\\1").is_none());
    assert_eq!(get_bytes(&store, b"other").unwrap(), b"x");
    // The ban that stands for the purge matches exactly the prefix (quotes and
    // backslashes escaped).
    let bans = store.bans();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].stamp, *stamp);
    let r = fill(
        &store,
        b"p/\"q\\9",
        b"y",
        PutMeta::default(),
        Origin {
            stamp_ns: before,
            checksum: sum(b"y"),
        },
    );
    precondition(r);
    let after = Origin {
        stamp_ns: now_ns(),
        checksum: sum(b"y"),
    };
    fill(&store, b"p/\"q\\9", b"y", PutMeta::default(), after).unwrap();
    fill(
        &store,
        b"p/other",
        b"y",
        PutMeta::default(),
        Origin {
            stamp_ns: before,
            checksum: sum(b"y"),
        },
    )
    .unwrap();

    // Without a cold tier it is a plain delete of each key: no ban.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, b"p/1", b"x");
    assert_eq!(store.purge_prefix(b"p/").unwrap(), 1);
    assert!(store.bans().is_empty());
}

#[test]
fn a_fill_into_memory_is_renamed_from_staging_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = two_tiers(dir.path());
    cfg.direct_to_disk_threshold = 64 * 1024;
    let store = Store::open(cfg).unwrap();
    let (mem, data) = (dir.path().join("mem"), dir.path().join("data"));
    let origin = |bytes: &[u8]| Origin {
        stamp_ns: now_ns() - 1_000,
        checksum: sum(bytes),
    };

    // Staged in the memory tier's staging/, and no longer there once published.
    let small = pattern(1, 5000);
    let mut s = store.begin_fill(b"small").unwrap();
    s.write_all(&small).unwrap();
    assert_eq!(staging_files(&mem).len(), 1, "staged in the memory tier");
    let m = s
        .commit_fill(small.len() as u64, PutMeta::default(), origin(&small))
        .unwrap();
    assert_eq!(m.tier, objmapper_store::Tier::Memory);
    assert!(staging_files(&mem).is_empty());
    assert_eq!(object_files(&mem).len(), 1);
    assert_eq!(get_bytes(&store, b"small").unwrap(), small);

    // Larger than direct_to_disk_threshold: copied to disk, the staged file removed.
    let big = pattern(2, 100_000);
    let m = fill(&store, b"big", &big, PutMeta::default(), origin(&big)).unwrap();
    assert_eq!(m.tier, objmapper_store::Tier::Disk);
    assert!(staging_files(&mem).is_empty() && staging_files(&data).is_empty());
    assert_eq!(get_bytes(&store, b"big").unwrap(), big);

    // Refused (wrong bytes), dropped unfinished, or shorter than announced: nothing
    // published, nothing left in either tier's staging/ or objects/ beyond the two.
    let r = fill(
        &store,
        b"bad",
        b"tampered",
        PutMeta::default(),
        origin(b"original"),
    );
    assert!(
        matches!(r, Err(CommitError::ChecksumMismatch { .. })),
        "{r:?}"
    );
    let mut s = store.begin_fill(b"dropped").unwrap();
    s.write_all(b"half").unwrap();
    drop(s);
    let mut s = store.begin_fill(b"short").unwrap();
    s.write_all(b"abc").unwrap();
    let r = s.commit_fill(4, PutMeta::default(), origin(b"abcd"));
    assert!(
        matches!(r, Err(CommitError::LengthMismatch { .. })),
        "{r:?}"
    );
    for k in [&b"bad"[..], b"dropped", b"short"] {
        assert!(store.get(k).unwrap().is_none());
    }
    assert!(staging_files(&mem).is_empty() && staging_files(&data).is_empty());
    assert_eq!(object_files(&mem).len(), 1);

    // The renamed fill is an ordinary memory object: written behind, and back after a
    // restart.
    store.close().unwrap();
    let mut cfg = two_tiers(dir.path());
    cfg.direct_to_disk_threshold = 64 * 1024;
    let store = Store::open(cfg).unwrap();
    assert_eq!(get_bytes(&store, b"small").unwrap(), small);
    assert_eq!(get_bytes(&store, b"big").unwrap(), big);
}

/// The inode of the only file in `files`.
fn inode_of(files: &[std::path::PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::metadata(&files[0]).unwrap().ino()
}

/// A fill whose size is known is staged in the tier its commit places it in and
/// renamed there, never copied: in memory when small, on disk (not in RAM) when larger
/// than `direct_to_disk_threshold` or when there is no memory tier.
#[test]
fn a_fill_of_known_size_is_staged_in_the_tier_it_lands_in_and_renamed_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = two_tiers(dir.path());
    cfg.direct_to_disk_threshold = 64 * 1024;
    let store = Store::open(cfg).unwrap();
    let (mem, data) = (dir.path().join("mem"), dir.path().join("data"));
    let origin = |bytes: &[u8]| Origin {
        stamp_ns: now_ns() - 1_000,
        checksum: sum(bytes),
    };
    for (key, len, tier) in [
        (&b"small"[..], 5000, objmapper_store::Tier::Memory),
        (b"large", 100_000, objmapper_store::Tier::Disk),
    ] {
        let bytes = pattern(len as u64, len);
        let mut s = store.begin_fill_sized(key, len as u64).unwrap();
        s.write_all(&bytes).unwrap();
        let (here, there) = match tier {
            objmapper_store::Tier::Memory => (&mem, &data),
            _ => (&data, &mem),
        };
        assert!(staging_files(there).is_empty(), "{len}: staged in one tier");
        let staged = inode_of(&staging_files(here));
        let before = object_files(here).len();
        let m = s
            .commit_fill(len as u64, PutMeta::default(), origin(&bytes))
            .unwrap();
        assert_eq!(m.tier, tier, "{len}");
        assert!(staging_files(here).is_empty(), "{len}");
        let after = object_files(here);
        assert_eq!(after.len(), before + 1, "{len}");
        let landed = after
            .iter()
            .filter(|p| inode_of(std::slice::from_ref(p)) == staged)
            .count();
        assert_eq!(landed, 1, "{len}: the staged file itself, renamed");
        assert_eq!(get_bytes(&store, key).unwrap(), bytes);
    }
    // A staged fill dropped or refused leaves nothing in the disk tier's staging/.
    let mut s = store.begin_fill_sized(b"dropped", 100_000).unwrap();
    s.write_all(b"part").unwrap();
    assert_eq!(staging_files(&data).len(), 1);
    drop(s);
    let big = pattern(9, 100_000);
    let mut s = store.begin_fill_sized(b"bad", 100_000).unwrap();
    s.write_all(&big).unwrap();
    let r = s.commit_fill(100_000, PutMeta::default(), origin(b"other bytes"));
    assert!(
        matches!(r, Err(CommitError::ChecksumMismatch { .. })),
        "{r:?}"
    );
    assert!(staging_files(&data).is_empty() && staging_files(&mem).is_empty());
    assert!(store.get(b"bad").unwrap().is_none());
    store.close().unwrap();

    // Without a memory tier: on disk, renamed, and back after a restart.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(disk_only_config(dir.path())).unwrap();
    let bytes = pattern(3, 5000);
    let mut s = store.begin_fill_sized(b"k", 5000).unwrap();
    s.write_all(&bytes).unwrap();
    let staged = inode_of(&staging_files(dir.path()));
    let m = s
        .commit_fill(5000, PutMeta::default(), origin(&bytes))
        .unwrap();
    assert_eq!(m.tier, objmapper_store::Tier::Disk);
    assert_eq!(inode_of(&object_files(dir.path())), staged);
    store.close().unwrap();
    let store = Store::open(disk_only_config(dir.path())).unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), bytes);
}

#[test]
fn a_fill_is_staged_in_a_memfd_when_the_memory_tier_has_no_room_for_the_largest_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = two_tiers(dir.path());
    // No filesystem here has 2^60 bytes free.
    cfg.max_object_size = 1 << 60;
    let store = Store::open(cfg).unwrap();
    let mut s = store.begin_fill(b"k").unwrap();
    s.write_all(b"bytes").unwrap();
    assert!(staging_files(&dir.path().join("mem")).is_empty(), "a memfd");
    let origin = Origin {
        stamp_ns: now_ns() - 1_000,
        checksum: sum(b"bytes"),
    };
    let m = s.commit_fill(5, PutMeta::default(), origin).unwrap();
    assert_eq!(m.tier, objmapper_store::Tier::Memory);
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"bytes");
}

#[test]
fn a_fill_its_writer_hashed_is_published_unread_and_its_length_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(two_tiers(dir.path())).unwrap();
    let bytes = pattern(3, 20_000);
    let origin = Origin {
        stamp_ns: now_ns() - 1_000,
        checksum: sum(&bytes),
    };
    let mut s = store.begin_fill(b"k").unwrap();
    s.write_all(&bytes).unwrap();
    let m = s
        .commit_fill_hashed(bytes.len() as u64, PutMeta::default(), origin)
        .unwrap();
    assert_eq!(
        (m.tier, m.checksum),
        (objmapper_store::Tier::Memory, sum(&bytes))
    );
    assert_eq!(get_bytes(&store, b"k").unwrap(), bytes);
    // The file is what the record says: a full verify finds nothing wrong.
    let report = store.verify_all(None).unwrap();
    assert!(
        report.objects >= 1 && report.damaged.is_empty(),
        "{report:?}"
    );

    let mut s = store.begin_fill(b"short").unwrap();
    s.write_all(&bytes[..100]).unwrap();
    let r = s.commit_fill_hashed(bytes.len() as u64, PutMeta::default(), origin);
    assert!(
        matches!(r, Err(CommitError::LengthMismatch { .. })),
        "{r:?}"
    );
    assert!(store.get(b"short").unwrap().is_none());
    assert!(staging_files(&dir.path().join("mem")).is_empty());
}

/// A fill fetched from before an invalidation here lands after it only to be refused,
/// whatever the store still remembers of the invalidation by then: a delete the cold
/// tier has since recorded (the store forgets it), a purge whose ban was retired (the
/// lurker found nothing to remove), a write here whose version has since expired. Each
/// of these let the stale version in before fences (found from outside: a host served
/// a deleted, purged or replaced object until it restarted).
#[test]
fn a_fill_fenced_before_an_invalidation_is_refused_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let old = Origin {
        stamp_ns: now_ns() - 1_000_000_000,
        checksum: sum(b"v1"),
    };
    let fenced_fill = |fence: &objmapper_store::FillFence| {
        let mut s = store.begin_fill_fenced(fence, 2).unwrap();
        s.write_all(b"v1").unwrap();
        s.commit_fill(2, PutMeta::default(), old)
    };

    // A delete here (of nothing stored yet), then recorded by the cold tier.
    let fence = store.fence_fill(b"del").unwrap();
    assert!(!store.delete(b"del").unwrap());
    let (pending, _) = store.tombstones();
    assert_eq!(pending, 1);
    store.settle_tombstone(b"del", now_ns());
    assert_eq!(store.tombstones().0, 0, "the store forgot the delete");
    assert!(fence.is_void());
    let why = precondition(fenced_fill(&fence));
    assert!(why.contains("while that version was fetched"), "{why}");
    assert!(store.get(b"del").unwrap().is_none());

    // A purge from another host, its ban retired before the fill lands.
    let fence = store.fence_fill(b"img/1").unwrap();
    let other = store.fence_fill(b"doc/1").unwrap();
    store.apply_cold_purge(b"img/", now_ns()).unwrap();
    store.lurk_bans().unwrap();
    assert!(store.bans().is_empty(), "the lurker retired the ban");
    precondition(fenced_fill(&fence));
    assert!(!other.is_void(), "a purge voids only the fills it covers");

    // A write here, expired before the fill of the older version lands.
    let fence = store.fence_fill(b"ttl").unwrap();
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    put_with(
        &store,
        b"ttl",
        b"v2",
        PutMeta {
            expires_at: Some(soon),
            ..Default::default()
        },
        false,
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(store.get(b"ttl").unwrap().is_none(), "v2 expired");
    precondition(fenced_fill(&fence));
    assert!(store.get(b"ttl").unwrap().is_none(), "v1 stays out");

    // A delete from another host, recorded and then forgotten as the bound drops it:
    // the fence alone keeps the fill out.
    let fence = store.fence_fill(b"remote-del").unwrap();
    store.apply_cold_delete(b"remote-del", now_ns()).unwrap();
    precondition(fenced_fill(&fence));

    // Untouched, a fenced fill lands; the fence of a fill that landed stays out of
    // the way.
    let fence = store.fence_fill(b"fine").unwrap();
    store.delete(b"other-key").unwrap();
    let m = fenced_fill(&fence).expect("lands");
    assert_eq!(m.mtime_ns, old.stamp_ns);
    assert!(m.filled);
    drop(fence);
    store.delete(b"fine").unwrap();
}

/// Another host's delete or purge voids a fenced fill only of what it covers: a version
/// stamped after it is the newer write, and lands. (Found from outside: a host that
/// started while a write replaced another host's version applied the delete event for
/// the replaced one during its first read-through, and refused the newer version it had
/// just fetched: a miss for the key until the next GET.)
#[test]
fn another_hosts_invalidation_voids_only_the_fills_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let t = now_ns() - 1_000_000_000;
    let fenced_fill = |fence: &objmapper_store::FillFence, stamp_ns: u64| {
        let mut s = store.begin_fill_fenced(fence, 2).unwrap();
        s.write_all(b"v2").unwrap();
        let origin = Origin {
            stamp_ns,
            checksum: sum(b"v2"),
        };
        s.commit_fill(2, PutMeta::default(), origin)
    };

    // The delete of the version a write at `t` replaced (stamped a nanosecond before
    // it): the write's version lands; one as old as the delete does not.
    let newer = store.fence_fill(b"k").unwrap();
    let older = store.fence_fill(b"k").unwrap();
    store.apply_cold_delete(b"k", t - 1).unwrap();
    assert!(newer.is_void(), "the fence saw the delete");
    let m = fenced_fill(&newer, t).expect("the newer version lands");
    assert_eq!(m.mtime_ns, t);
    store.delete(b"k").unwrap();
    let fence = store.fence_fill(b"k2").unwrap();
    store.apply_cold_delete(b"k2", t - 1).unwrap();
    precondition(fenced_fill(&fence, t - 1));
    drop(older);

    // A purge at `t` covers versions stamped before it, not at or after it.
    let before = store.fence_fill(b"p/1").unwrap();
    let after = store.fence_fill(b"p/2").unwrap();
    store.apply_cold_purge(b"p/", t).unwrap();
    store.lurk_bans().unwrap();
    precondition(fenced_fill(&before, t - 1));
    fenced_fill(&after, t).expect("a version stamped at the purge lands");

    // A delete here voids every fill of the key, whatever its stamp.
    let fence = store.fence_fill(b"here").unwrap();
    store.delete(b"here").unwrap();
    precondition(fenced_fill(&fence, now_ns() + 1_000_000_000));
}

/// A ban the tier cannot hold (on metadata, a regex) stays this host's, and the lurker
/// retires it once nothing local is under it; the tier still holds the versions it
/// covered. The retired ban is kept for fills, durably: what it covers is never read
/// through here, and what it does not cover still is. (A local ban used to last until
/// the lurker's next pass, after which the next GET read the banned version back; then
/// its retirement raised a floor that refused every older version, matching or not,
/// which left a host that bans often with little of the shared tier.)
#[test]
fn a_retired_local_ban_keeps_what_it_covered_out_of_fills() {
    let dir = tempfile::tempdir().unwrap();
    let before = now_ns() - 1_000_000_000;
    let old = |bytes: &[u8]| Origin {
        stamp_ns: before,
        checksum: sum(bytes),
    };
    let tagged = |tag: &str| PutMeta {
        custom: vec![("tag".into(), tag.as_bytes().to_vec())],
        ..Default::default()
    };
    {
        let (store, _rec) = with_cold(dir.path());
        store.ban(br#"meta.tag == "t1""#).unwrap();
        store.ban(br#"key ~ "^re/[0-9]+$""#).unwrap();
        store.lurk_bans().unwrap();
        assert!(store.bans().is_empty(), "retired: nothing local matched");
        assert_eq!(store.stats().bans_kept_for_fills, 2);
        let why = precondition(fill(&store, b"m/k", b"v1", tagged("t1"), old(b"v1")));
        assert!(why.contains("retired"), "{why}");
        precondition(fill(
            &store,
            b"re/12",
            b"v1",
            PutMeta::default(),
            old(b"v1"),
        ));
        // What the bans do not cover is read through, however old.
        fill(&store, b"m/other", b"v1", tagged("t2"), old(b"v1")).expect("not covered");
        fill(&store, b"re/x", b"v1", PutMeta::default(), old(b"v1")).expect("not covered");
        // A version written after the ban is read through.
        let new = Origin {
            stamp_ns: now_ns(),
            checksum: sum(b"v2"),
        };
        fill(&store, b"m/k", b"v2", tagged("t1"), new).expect("newer than the ban");
    }
    // Across a restart.
    {
        let (store, _rec) = with_cold(dir.path());
        assert_eq!(store.stats().bans_kept_for_fills, 2);
        precondition(fill(&store, b"again", b"v1", tagged("t1"), old(b"v1")));
        fill(&store, b"again2", b"v1", tagged("t3"), old(b"v1")).expect("not covered");
    }
    // Damaged: the store opens, and takes its start as the floor.
    let kept = dir.path().join("FILLBANS");
    assert!(kept.exists(), "kept beside the ban file");
    let mut bytes = std::fs::read(&kept).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&kept, &bytes).unwrap();
    let written = now_ns();
    let (store, _rec) = with_cold(dir.path());
    assert_eq!(store.stats().bans_kept_for_fills, 0);
    let recent = Origin {
        stamp_ns: written,
        checksum: sum(b"v3"),
    };
    let why = precondition(fill(&store, b"late", b"v3", tagged("t9"), recent));
    assert!(why.contains("older than a ban here"), "{why}");
    let after = Origin {
        stamp_ns: now_ns(),
        checksum: sum(b"v4"),
    };
    fill(&store, b"later", b"v4", tagged("t1"), after).expect("newer than the start");
}

/// Beyond `MAX_FILL_BANS` retired bans the oldest go, and the fill floor rises to the
/// newest of those: a version older than a dropped ban is refused, whatever it matches;
/// one between the dropped and the kept bans is matched against those kept.
#[test]
fn retired_bans_beyond_the_bound_raise_the_fill_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let oldest = now_ns();
    store.ban(br#"meta.tag == "first""#).unwrap();
    let between = now_ns();
    for i in 0..objmapper_store::MAX_FILL_BANS {
        store
            .ban(format!(r#"meta.tag == "t{i}""#).as_bytes())
            .unwrap();
    }
    store.lurk_bans().unwrap();
    assert_eq!(
        store.stats().bans_kept_for_fills,
        objmapper_store::MAX_FILL_BANS as u64
    );
    let at = |stamp_ns: u64| Origin {
        stamp_ns,
        checksum: sum(b"v"),
    };
    let why = precondition(fill(&store, b"a", b"v", PutMeta::default(), at(oldest)));
    assert!(why.contains("older than a ban here"), "{why}");
    let first = PutMeta {
        custom: vec![("tag".into(), b"first".to_vec())],
        ..Default::default()
    };
    fill(&store, b"b", b"v", first, at(between)).expect("the dropped ban is older");
    let kept = PutMeta {
        custom: vec![("tag".into(), b"t5".to_vec())],
        ..Default::default()
    };
    precondition(fill(&store, b"c", b"v", kept, at(between)));
}

/// Without a cold tier nothing comes back by a fill, and a retired ban is not kept.
#[test]
fn without_a_cold_tier_a_retired_ban_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ban(br#"meta.tag == "t1""#).unwrap();
    store.lurk_bans().unwrap();
    assert_eq!(store.stats().bans_kept_for_fills, 0);
    assert!(!dir.path().join("FILLBANS").exists() && !dir.path().join("FILLFLOOR").exists());
}

/// A cold tier whose uploads never happen: every version written here stays pending.
#[derive(Debug, Default)]
struct Stuck(Mutex<Vec<(Vec<u8>, u64)>>);

impl ColdTier for Stuck {
    fn committed(&self, _meta: &Arc<ObjectMeta>) {}
    fn deleted(&self, _key: &[u8], _stamp_ns: u64) {}
    fn banned(&self, _ban: &BanInfo) {}
    fn purged(&self, _prefix: &[u8], _stamp_ns: u64) {}
    fn unsent(&self, _key: &[u8], _version: u64) -> bool {
        true
    }
    fn lost_before_upload(&self, key: &[u8], stamp_ns: u64) {
        self.0.lock().unwrap().push((key.to_vec(), stamp_ns));
    }
}

/// A version evicted before its upload (the tier slow, the store full) is remembered
/// as a delete at its stamp, which the cold tier is told to send: the older version
/// the tier still holds is not read back here (it was, once the newer one was gone),
/// and goes on the other hosts too.
#[test]
fn a_version_evicted_before_its_upload_becomes_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = disk_only_config(dir.path());
    c.disk_max_objects = 5;
    let store = Store::open(c).unwrap();
    let stuck = Arc::new(Stuck::default());
    assert!(store.attach_cold(stuck.clone()));
    let v2 = put(&store, b"k", b"v2, written here");
    for i in 0..20u64 {
        put(&store, format!("other{i}").as_bytes(), b"churn");
    }
    assert!(store.get(b"k").unwrap().is_none(), "evicted");
    let lost = stuck.0.lock().unwrap().clone();
    assert!(lost.contains(&(b"k".to_vec(), v2.mtime_ns)), "{lost:?}");
    // The tier still has the version v2 replaced: it is not read back.
    let v1 = Origin {
        stamp_ns: v2.mtime_ns - 1_000,
        checksum: sum(b"v1"),
    };
    let why = precondition(fill(&store, b"k", b"v1", PutMeta::default(), v1));
    assert!(why.contains("deleted here"), "{why}");
}

/// A delete made here stays remembered once the cold tier has it (as other hosts'
/// deletes are, bounded): a store that answered 200 to the tombstone's write and
/// dropped it would otherwise have this host read its deleted version back.
#[test]
fn a_delete_made_here_is_remembered_after_the_cold_tier_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let old = Origin {
        stamp_ns: now_ns() - 1_000_000_000,
        checksum: sum(b"v1"),
    };
    assert!(!store.delete(b"k").unwrap());
    store.settle_tombstone(b"k", now_ns());
    assert_eq!(store.tombstones().0, 0, "settled");
    let why = precondition(fill(&store, b"k", b"v1", PutMeta::default(), old));
    assert!(why.contains("deleted here"), "{why}");
}

/// Stamps follow what the store hears of (a Lamport clock): a write here after
/// another host's delete, ban or version stamped ahead of this clock is later than
/// it, so it is neither removed by it nor superseded. Another host's stamp is followed
/// at most 15 minutes ahead; this store's own earlier clock (from a journal), all the
/// way. (A host whose clock was set back between runs re-applied its own earlier delete
/// to the write it had just acknowledged: found from outside.)
#[test]
fn a_write_after_a_delete_heard_of_is_later_than_it_whatever_the_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = with_cold(dir.path());
    let minute = 60_000_000_000u64;
    let ahead = now_ns() + 5 * minute;
    store.apply_cold_delete(b"k", ahead).unwrap();
    let m = put(&store, b"k", b"v2");
    assert!(m.mtime_ns > ahead, "{} <= {ahead}", m.mtime_ns);
    // Heard again (the same event read once more): the write stands.
    store.apply_cold_delete(b"k", ahead).unwrap();
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"v2");

    // A purge from a host ahead.
    let ahead = now_ns() + 6 * minute;
    store.apply_cold_purge(b"p/", ahead).unwrap();
    let m = put(&store, b"p/1", b"v");
    assert!(m.mtime_ns > ahead);
    assert_eq!(get_bytes(&store, b"p/1").unwrap(), b"v");

    // A fill of a version stamped ahead.
    let ahead = now_ns() + 7 * minute;
    let origin = Origin {
        stamp_ns: ahead,
        checksum: sum(b"filled"),
    };
    fill(&store, b"f", b"filled", PutMeta::default(), origin).unwrap();
    assert!(put(&store, b"f", b"mine").mtime_ns > ahead);

    // Another host's clock an hour ahead is followed no further than 15 minutes.
    let far = now_ns() + 60 * minute;
    store.apply_cold_delete(b"far", far).unwrap();
    let m = put(&store, b"other", b"v");
    assert!(m.mtime_ns < now_ns() + 16 * minute, "followed too far");

    // This store's own clock from an earlier run, all the way.
    let own = now_ns() + 90 * minute;
    store.resume_clock(own);
    assert!(put(&store, b"after", b"v").mtime_ns > own);
}

/// `check_fill` answers from a version's record what its commit would refuse, with the
/// commit's own reason (one check serves both): before its bytes are fetched, so that a
/// host does not download what it will throw away. It only looks: nothing is counted,
/// evicted or staged, and a version nothing refuses passes.
#[test]
fn check_fill_refuses_from_the_record_what_the_commit_would_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A damaged fill floor is taken as the start of this store: older versions are
    // refused.
    std::fs::create_dir_all(dir.path()).unwrap();
    let before_open = now_ns();
    std::fs::write(dir.path().join("FILLFLOOR"), "damaged\n").unwrap();
    let mut c = disk_only_config(dir.path());
    c.disk_capacity_bytes = 1 << 20;
    let store = Store::open(c).unwrap();
    assert!(store.attach_cold(Arc::new(Recorder::default())));
    let at = |stamp_ns: u64| Origin {
        stamp_ns,
        checksum: sum(b"v"),
    };
    let tagged = |tag: &str| PutMeta {
        custom: vec![("tag".into(), tag.as_bytes().to_vec())],
        ..Default::default()
    };
    let check = |key: &[u8], meta: &PutMeta, origin: Origin, size: u64| {
        let fence = store.fence_fill(key).unwrap();
        store.check_fill(&fence, meta, origin, size)
    };
    let refused = |r: Result<(), StoreError>| match r {
        Err(StoreError::PreconditionFailed(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Each reason, checked and then committed: the same words.
    let both = |key: &[u8], meta: PutMeta, origin: Origin| {
        let early = refused(check(key, &meta, origin, 1));
        let late = precondition(fill(&store, key, b"v", meta, origin));
        assert_eq!(early, late);
        early
    };
    let why = both(b"floor", PutMeta::default(), at(before_open));
    assert!(why.contains("older than a ban here"), "{why}");
    let old = now_ns();
    put(&store, b"gone", b"here");
    store.delete(b"gone").unwrap();
    let why = both(b"gone", PutMeta::default(), at(old));
    assert!(why.contains("deleted here"), "{why}");
    store.ban(br#"meta.tag == "t1""#).unwrap();
    let why = both(b"banned", tagged("t1"), at(old));
    assert_eq!(why, "a ban here covers that version");
    store.lurk_bans().unwrap();
    assert!(store.bans().is_empty(), "retired, and kept for fills");
    let why = both(b"retired", tagged("t1"), at(old));
    assert!(why.contains("retired"), "{why}");
    let expired = PutMeta {
        expires_at: Some(1),
        ..Default::default()
    };
    let why = both(b"expired", expired, at(now_ns()));
    assert!(why.contains("expired"), "{why}");
    // A fence voided since it went up.
    let fence = store.fence_fill(b"fenced").unwrap();
    store.delete(b"fenced").unwrap();
    let why = refused(store.check_fill(&fence, &PutMeta::default(), at(now_ns()), 1));
    assert!(why.contains("while that version was fetched"), "{why}");
    // Larger than the disk tier (the only tier) can ever hold.
    match check(b"huge", &PutMeta::default(), at(now_ns()), 2 << 20) {
        Err(StoreError::NoSpace(m)) => assert!(m.contains("capacity"), "{m}"),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    // What nothing refuses passes, and the checks changed nothing.
    check(b"fresh", &tagged("t1"), at(now_ns()), 1 << 20).expect("nothing refuses it");
    let st = store.stats();
    assert_eq!(st.no_space, 0, "a check is not a PUT refused");
    assert!(!store.disk_full());
    assert!(staging_files(dir.path()).is_empty());
    assert!(store.get(b"fresh").unwrap().is_none());
}

/// Fails every write of an object file into the disk tier with ENOSPC while armed.
#[derive(Debug, Default)]
struct FullDisk(std::sync::atomic::AtomicBool);

impl objmapper_store::FaultInjector for FullDisk {
    fn check(&self, point: objmapper_store::FaultPoint) -> std::io::Result<()> {
        if point == objmapper_store::FaultPoint::ObjectWrite
            && self.0.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

/// A fill is optional: one that finds no room, in the tier's capacity or on its
/// filesystem, is refused with NoSpace but neither marks the disk tier full (which
/// makes `/readyz` say PUTs are refused) nor counts as a PUT refused for want of room.
/// A PUT's failing still does both.
#[test]
fn a_fill_that_finds_no_room_neither_marks_the_disk_full_nor_counts_as_a_put_refused() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FullDisk::default());
    let mut c = disk_only_config(dir.path());
    c.disk_capacity_bytes = 1 << 20;
    c.faults = Some(faults.clone());
    let store = Store::open(c).unwrap();
    assert!(store.attach_cold(Arc::new(Recorder::default())));
    let origin = |bytes: &[u8]| Origin {
        stamp_ns: now_ns(),
        checksum: sum(bytes),
    };
    let no_space = |r: Result<Arc<ObjectMeta>, CommitError>| match r {
        Err(CommitError::Store(StoreError::NoSpace(m))) => m,
        other => panic!("expected NoSpace, got {other:?}"),
    };
    // Beyond the tier's capacity.
    let big = vec![7u8; (1 << 20) + 1];
    let m = no_space(fill(&store, b"big", &big, PutMeta::default(), origin(&big)));
    assert!(m.contains("capacity"), "{m}");
    // The filesystem full.
    faults.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let m = no_space(fill(&store, b"k", b"v", PutMeta::default(), origin(b"v")));
    assert!(m.contains("filesystem is full"), "{m}");
    let st = store.stats();
    assert!(!store.disk_full(), "a fill's failure is not the tier's");
    assert_eq!(st.no_space, 0, "{st:?}");
    assert_eq!(
        st.disk.full_errors, 1,
        "counted as a write the filesystem refused"
    );
    assert!(staging_files(dir.path()).is_empty());
    // A PUT's failures still mark it and count.
    let e = try_put(&store, b"k", b"v", PutOptions::default()).unwrap_err();
    assert!(e.to_string().contains("filesystem is full"), "{e}");
    assert!(store.disk_full());
    faults.0.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(try_put(&store, b"big", &big, PutOptions::default()).is_err());
    assert_eq!(store.stats().no_space, 1);
}
