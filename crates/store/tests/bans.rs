//! Bans in the store: what a ban hides, across tiers, restarts and the lurker.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{get_bytes, open_temp, put, put_with, staged};
use objmapper_store::{Condition, PutMeta, PutOptions, Store, StoreConfig, StoreError, MAX_BANS};

fn cfg(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir.join("d"));
    c.mem_dir = Some(dir.join("m"));
    // Tests run the lurker by hand.
    c.ban_lurker_interval = Duration::from_secs(3600);
    c
}

fn meta(pairs: &[(&str, &[u8])]) -> PutMeta {
    PutMeta {
        custom: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        ..Default::default()
    }
}

fn put_opts(store: &Store, key: &[u8], data: &[u8], opts: PutOptions) -> Result<(), String> {
    let s = staged(store, key, data);
    s.commit(data.len() as u64, PutMeta::default(), opts)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn a_ban_hides_older_matching_objects_in_every_read() {
    let (_dir, store) = open_temp(cfg, |_| {});
    let old = put(&store, b"varnish:example.com/a\nGET", b"one");
    put(&store, b"varnish:example.com/ab", b"two");
    put_with(&store, b"/disk", b"big", meta(&[("url", b"/b/x")]), true);
    let eph = staged(&store, b"eph", b"e");
    eph.commit(
        1,
        meta(&[("tags", b"a, product-42 b")]),
        PutOptions {
            ephemeral: true,
            ..Default::default()
        },
    )
    .unwrap();

    let b1 = store.ban(br#"key ^ "varnish:example.com/a\n""#).unwrap();
    assert!(b1.stamp > old.mtime_ns);
    assert!(store.get(b"varnish:example.com/a\nGET").unwrap().is_none());
    assert!(store
        .get_shared(b"varnish:example.com/a\nGET")
        .unwrap()
        .is_none());
    assert!(store.head(b"varnish:example.com/a\nGET").is_none());
    assert!(store.info(b"varnish:example.com/a\nGET").unwrap().is_none());
    assert_eq!(
        get_bytes(&store, b"varnish:example.com/ab").unwrap(),
        b"two"
    );

    // Metadata regex (a durable object on disk) and a `has` token (memory only).
    let shared = store.get_shared(b"/disk").unwrap().unwrap();
    store.ban(br#"meta.url ~ "^/b/""#).unwrap();
    assert!(store.get(b"/disk").unwrap().is_none());
    assert!(store.reopen(&shared).unwrap().is_none());
    store
        .ban(br#"meta.tags has "product-42" && key ^ "e""#)
        .unwrap();
    assert!(store.head(b"eph").is_none());

    let keys: Vec<Vec<u8>> = store
        .list(b"", None, 100)
        .objects
        .iter()
        .map(|o| o.meta.key.to_vec())
        .collect();
    assert_eq!(keys, vec![b"varnish:example.com/ab".to_vec()]);

    // Conditional writes see the banned object as missing.
    assert!(put_opts(
        &store,
        b"/disk",
        b"x",
        PutOptions {
            condition: Condition::IfVersion(shared.meta.version),
            ..Default::default()
        }
    )
    .unwrap_err()
    .contains("there is no object"));
    put_opts(
        &store,
        b"/disk",
        b"new",
        PutOptions {
            condition: Condition::IfAbsent,
            ..Default::default()
        },
    )
    .unwrap();
    // Committed after the ban: served.
    assert_eq!(get_bytes(&store, b"/disk").unwrap(), b"new");
    assert!(!store.set_pinned(b"eph", true).unwrap());
    assert!(!store.delete(b"varnish:example.com/a\nGET").unwrap());
    assert_eq!(store.stats().bans_active, 3);
    store.close().unwrap();
}

#[test]
fn bans_survive_restart_and_crash_and_the_lurker_retires_them() {
    let (dir, store) = open_temp(cfg, |_| {});
    for i in 0..50u32 {
        put_with(
            &store,
            format!("p/{i}").as_bytes(),
            b"x",
            PutMeta::default(),
            true,
        );
    }
    put(&store, b"q/1", b"keep");
    let ban = store.ban(br#"key ^ "p/""#).unwrap();
    // A crash (no close): the ban is in force after recovery.
    drop(store);
    let store = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(store.bans().len(), 1);
    assert_eq!(store.bans()[0].stamp, ban.stamp);
    assert!(store.get(b"p/3").unwrap().is_none());
    assert_eq!(get_bytes(&store, b"q/1").unwrap(), b"keep");
    // The clock resumed above the ban: a new commit of a banned key is served.
    let m = put(&store, b"p/3", b"again");
    assert!(m.mtime_ns > ban.stamp);
    assert_eq!(get_bytes(&store, b"p/3").unwrap(), b"again");
    store.close().unwrap();

    let store = Store::open(cfg(dir.path())).unwrap();
    assert!(store.get(b"p/4").unwrap().is_none());
    assert_eq!(store.lurk_bans().unwrap(), 1);
    assert!(store.bans().is_empty());
    let st = store.stats();
    assert_eq!((st.bans_active, st.ban_removals), (0, 49));
    assert_eq!(get_bytes(&store, b"p/3").unwrap(), b"again");
    // Retired and removed durably: after a crash nothing comes back.
    drop(store);
    let store = Store::open(cfg(dir.path())).unwrap();
    assert!(store.bans().is_empty());
    assert!(store.get(b"p/4").unwrap().is_none());
    assert_eq!(store.len(), 2);
    store.close().unwrap();
}

#[test]
fn removing_a_banned_memory_version_never_uncovers_an_older_disk_version() {
    let (_dir, store) = open_temp(cfg, |c| c.write_behind_delay = Duration::from_secs(3600));
    put_with(&store, b"k", b"old", meta(&[("v", b"1")]), true);
    put_with(&store, b"k", b"new", meta(&[("v", b"2")]), false);
    store.ban(br#"meta.v == "2""#).unwrap();
    assert!(store.get(b"k").unwrap().is_none());
    store.lurk_bans().unwrap();
    assert!(store.get(b"k").unwrap().is_none());
    store.close().unwrap();
}

#[test]
fn a_damaged_ban_file_refuses_the_open() {
    let (dir, store) = open_temp(cfg, |_| {});
    put(&store, b"k", b"v");
    store.ban(br#"key == "k""#).unwrap();
    store.close().unwrap();
    let f = dir.path().join("d/BANS");
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 12] ^= 1;
    std::fs::write(&f, b).unwrap();
    let e = Store::open(cfg(dir.path())).unwrap_err().to_string();
    assert!(e.contains("ban file is damaged"), "{e}");
}

#[test]
fn bad_expressions_and_the_limit() {
    let (_dir, store) = open_temp(cfg, |c| c.max_bans = 20);
    let e = store.ban(b"key == nope").unwrap_err();
    assert!(matches!(e, StoreError::InvalidBan(_)));
    assert!(e.to_string().contains("at byte 7"), "{e}");
    for i in 0..20 {
        store
            .ban(format!("key == \"{i}\"").as_bytes())
            .unwrap_or_else(|e| panic!("ban {i}: {e}"));
    }
    let e = store.ban(br#"key == "one more""#).unwrap_err();
    assert!(matches!(e, StoreError::TooManyBans { .. }), "{e}");
    assert_eq!(store.lurk_bans().unwrap(), 20);
    assert_eq!(MAX_BANS, 10_000);
    store.ban(br#"key == "one more""#).unwrap();
    store.close().unwrap();
}
