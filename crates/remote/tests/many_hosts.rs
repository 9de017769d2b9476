//! Many hosts, one truth: the larger stamp wins whatever the order of uploads,
//! tombstones beat older uploads, and purges reach other hosts through the
//! invalidation log.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use objmapper_remote::{EventCursor, EventKind, Outcome, Remote};
use util::{record, stamp, Seaweed};

async fn body_of(r: &Remote, key: &[u8]) -> Option<Vec<u8>> {
    let mut f = util::tmpfile();
    r.get(key, &f).await.unwrap()?;
    Some(util::read_all(&mut f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_converge_on_the_larger_stamp_in_either_order() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    for (round, newer_first) in [false, true].into_iter().enumerate() {
        let a = util::client(sw, &format!("conv{round}"), "host-a").await;
        let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
        let (old, new) = (b"from a, older".as_slice(), b"from b, newer".as_slice());
        let (st_old, st_new) = (stamp(100, "host-a"), stamp(200, "host-b"));
        if newer_first {
            assert_eq!(
                b.put(&record(b"k", new), &st_new, new).await.unwrap(),
                Outcome::Stored
            );
            assert_eq!(
                a.put(&record(b"k", old), &st_old, old).await.unwrap(),
                Outcome::Superseded(st_new.clone())
            );
        } else {
            a.put(&record(b"k", old), &st_old, old).await.unwrap();
            assert_eq!(
                b.put(&record(b"k", new), &st_new, new).await.unwrap(),
                Outcome::Stored
            );
        }
        assert_eq!(body_of(&a, b"k").await.unwrap(), new);
        assert_eq!(body_of(&b, b"k").await.unwrap(), new);
        // Same time: the host id breaks the tie ("host-b" > "host-a").
        let tie_a = b"tie a";
        assert!(matches!(
            a.put(&record(b"k", tie_a), &stamp(200, "host-a"), &tie_a[..])
                .await
                .unwrap(),
            Outcome::Superseded(_)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_converge() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = Arc::new(util::client(sw, "race", "host-a").await);
    let b = Arc::new(Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap());
    // 16 versions, alternately from a and b, uploaded all at once in shuffled order.
    let mut tasks = Vec::new();
    for i in [3u64, 11, 0, 7, 14, 1, 9, 5, 12, 2, 15, 6, 10, 4, 13, 8] {
        let (r, host) = if i % 2 == 0 {
            (a.clone(), "host-a")
        } else {
            (b.clone(), "host-b")
        };
        tasks.push(tokio::spawn(async move {
            let body = format!("version {i}").into_bytes();
            r.put(&record(b"hot", &body), &stamp(1000 + i, host), &body[..])
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == Outcome::Stored {
            stored += 1;
        }
    }
    assert!(stored >= 1);
    let conflicts = a.stats().conflicts + b.stats().conflicts;
    eprintln!(
        "{stored} of 16 stored, {conflicts} lost conditional writes retried, {} superseded",
        a.stats().superseded + b.stats().superseded
    );
    assert_eq!(body_of(&a, b"hot").await.unwrap(), b"version 15");
    assert_eq!(body_of(&b, b"hot").await.unwrap(), b"version 15");
    assert_eq!(
        b.head(b"hot").await.unwrap().unwrap().stamp,
        stamp(1015, "host-b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_upload_after_a_newer_tombstone_loses() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "tomb", "host-a").await;
    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let v1 = b"v1";
    a.put(&record(b"k", v1), &stamp(10, "host-a"), &v1[..])
        .await
        .unwrap();
    // b deletes at 30; a's pending upload of a version committed at 20 arrives late.
    assert_eq!(
        b.delete(b"k", &stamp(30, "host-b")).await.unwrap(),
        Outcome::Stored
    );
    let v2 = b"v2, committed before the delete";
    assert_eq!(
        a.put(&record(b"k", v2), &stamp(20, "host-a"), &v2[..])
            .await
            .unwrap(),
        Outcome::Superseded(stamp(30, "host-b"))
    );
    assert_eq!(body_of(&a, b"k").await, None);
    assert_eq!(a.head(b"k").await.unwrap(), None);
    // An older delete does not undo a newer version either.
    let v3 = b"v3, after the delete";
    assert_eq!(
        a.put(&record(b"k", v3), &stamp(40, "host-a"), &v3[..])
            .await
            .unwrap(),
        Outcome::Stored
    );
    assert!(matches!(
        b.delete(b"k", &stamp(35, "host-b")).await.unwrap(),
        Outcome::Superseded(_)
    ));
    assert_eq!(body_of(&b, b"k").await.unwrap(), v3);
    // Large (multipart) uploads lose to tombstones the same way.
    b.delete(b"big", &stamp(60, "host-b")).await.unwrap();
    // Past the default multipart threshold (32 MiB).
    let big = vec![7u8; (32 << 20) + 1];
    assert_eq!(
        a.put(&record(b"big", &big), &stamp(50, "host-a"), &big[..])
            .await
            .unwrap(),
        Outcome::Superseded(stamp(60, "host-b"))
    );
    assert_eq!(body_of(&a, b"big").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_and_deletes_reach_a_second_host() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "purge", "host-a").await;
    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let mut cursor_b = EventCursor::since(0);
    assert!(b.poll_events(&mut cursor_b).await.unwrap().is_empty());

    for (k, t) in [
        (&b"/img/1.png"[..], 10),
        (b"/img/2.png", 50),
        (b"/css/x", 10),
    ] {
        b.put(&record(k, b"data"), &stamp(t, "host-b"), &b"data"[..])
            .await
            .unwrap();
    }
    let started = Instant::now();
    a.purge_prefix(b"/img/", &stamp(30, "host-a"))
        .await
        .unwrap();
    a.delete(b"/css/x", &stamp(31, "host-a")).await.unwrap();
    // The purging host applies its own purge at once: the version older than the
    // purge is gone, the newer one stays.
    assert_eq!(body_of(&a, b"/img/1.png").await, None);
    assert!(body_of(&a, b"/img/2.png").await.is_some());

    // b polls as a host would (every 4 s by default; here as fast as it likes).
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(b.poll_events(&mut cursor_b).await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(5), "{seen:?}");
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].kind, EventKind::Purge(b"/img/".to_vec()));
    assert_eq!(seen[0].stamp, stamp(30, "host-a"));
    assert_eq!(seen[1].kind, EventKind::Delete(b"/css/x".to_vec()));
    // What b's local tiers would drop:
    assert!(seen[0].covers(b"/img/1.png", &stamp(10, "host-b")));
    assert!(!seen[0].covers(b"/img/2.png", &stamp(50, "host-b")));
    // And b's remote reads and uploads now honour the purge too.
    assert_eq!(body_of(&b, b"/img/1.png").await, None);
    assert!(body_of(&b, b"/img/2.png").await.is_some());
    assert!(matches!(
        b.put(
            &record(b"/img/3.png", b"old"),
            &stamp(20, "host-b"),
            &b"old"[..]
        )
        .await
        .unwrap(),
        Outcome::Superseded(_)
    ));
    // Not returned twice.
    assert!(b.poll_events(&mut cursor_b).await.unwrap().is_empty());
    // A fresh cursor from before them sees them again; one from after does not.
    assert_eq!(
        b.poll_events(&mut EventCursor::since(0))
            .await
            .unwrap()
            .len(),
        2
    );
    // A third host that starts later knows the purge before its first read, from the
    // purge set, without polling the log.
    let c = Remote::new(sw.config_for(&a.config().bucket, "host-c")).unwrap();
    assert_eq!(body_of(&c, b"/img/1.png").await, None);
    assert!(body_of(&c, b"/img/2.png").await.is_some());
    // Pruning.
    assert_eq!(a.prune_events(u64::MAX).await.unwrap(), 2);
    assert!(c
        .poll_events(&mut EventCursor::since(0))
        .await
        .unwrap()
        .is_empty());
}

/// Purges made at once on two hosts all land in the purge set (conditional writes,
/// retried on conflict), and a client made afterwards, which never polled the log,
/// knows every one of them before its first read: the purged versions, still in the
/// bucket, are absent to it, and what no purge covers is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_made_after_purges_knows_them_all() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = Arc::new(util::client(sw, "purge-set", "host-a").await);
    let b = Arc::new(Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap());
    let keys: Vec<Vec<u8>> = (0..8)
        .flat_map(|i| {
            [
                format!("a{i}/k").into_bytes(),
                format!("b{i}/k").into_bytes(),
            ]
        })
        .chain([b"kept/k".to_vec()])
        .collect();
    for k in &keys {
        a.put(&record(k, b"v"), &stamp(100, "host-a"), &b"v"[..])
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        for (c, h) in [(a.clone(), "host-a"), (b.clone(), "host-b")] {
            tasks.push(tokio::spawn(async move {
                let prefix = format!("{}{i}/", &h[5..]);
                c.purge_prefix(prefix.as_bytes(), &stamp(200 + i, h))
                    .await
                    .unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = Remote::new(sw.config_for(&a.config().bucket, "host-c")).unwrap();
    for k in &keys[..16] {
        assert!(
            c.head(k).await.unwrap().is_none(),
            "{} is purged",
            k.escape_ascii()
        );
    }
    assert!(c.head(b"kept/k").await.unwrap().is_some());
    assert_eq!(c.stats().purges_known, 16);
    // A version written after its prefix's purge is not covered by it.
    a.put(&record(b"a0/k", b"new"), &stamp(300, "host-a"), &b"new"[..])
        .await
        .unwrap();
    assert_eq!(body_of(&c, b"a0/k").await.as_deref(), Some(&b"new"[..]));
}

/// A damaged purge set stops reads and uploads (a client that cannot know every purge
/// could serve a purged version) and is not overwritten by a purge (that would lose the
/// purges it held): every such call fails, as a failure of the tier as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_purge_set_stops_reads_and_uploads() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "purge-set-damaged", "host-a").await;
    a.put(&record(b"k", b"v"), &stamp(100, "host-a"), &b"v"[..])
        .await
        .unwrap();
    a.purge_prefix(b"img/", &stamp(200, "host-a"))
        .await
        .unwrap();
    let raw = sw.raw(a.config());
    let name = format!("{}/purges", a.config().prefix);
    let mut bytes = util::raw_bytes(&raw, &name).await;
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    util::put_raw(&raw, &name, bytes.clone()).await;
    let c = Remote::new(sw.config_for(&a.config().bucket, "host-c")).unwrap();
    let errors = [
        c.head(b"k").await.unwrap_err(),
        c.put(&record(b"j", b"v"), &stamp(300, "host-c"), &b"v"[..])
            .await
            .unwrap_err(),
        c.purge_prefix(b"css/", &stamp(300, "host-c"))
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        assert!(
            matches!(e, objmapper_remote::Error::PurgeSetDamaged { .. }),
            "{e}"
        );
        assert!(e.is_tier_wide(), "{e}");
    }
    // Left as it was, for a person to restore: the purge did not overwrite it.
    assert_eq!(util::raw_bytes(&raw, &name).await, bytes);
    assert_eq!(a.stats().purges_known, 1);
}

/// Pruning leaves a mark: a host that had read the events pruned hears nothing of it
/// (a quiet log's last event, read long before, is no loss), and one that had not
/// learns that events it never read are gone, and up to when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_tells_only_the_hosts_that_had_not_read_what_it_took() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "pruned-mark", "host-a").await;
    let cfg = sw
        .config_for(&a.config().bucket, "host-b")
        .with_event_lookback(Duration::from_millis(100));
    let b = Remote::new(cfg).unwrap();
    let now = objmapper_remote::now_ns();
    let mut read_all = EventCursor::since(now);
    let mut behind = EventCursor::since(now);
    a.delete(b"k1", &stamp(now, "host-a")).await.unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got = b.poll_events(&mut read_all).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A poll after which the one event is behind `read_all` by more than the lookback.
    assert!(b.poll_events(&mut read_all).await.unwrap().is_empty());
    assert_eq!(a.prune_events(objmapper_remote::now_ns()).await.unwrap(), 1);
    assert!(b.poll_events(&mut read_all).await.unwrap().is_empty());
    assert_eq!(read_all.missed(), None, "it had read what was pruned");
    assert!(b.poll_events(&mut behind).await.unwrap().is_empty());
    let missed = behind.missed().expect("it had not");
    assert!(missed >= now, "{missed} < {now}");
    assert_eq!(behind.missed(), None, "told once");
}
