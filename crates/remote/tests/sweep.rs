//! Data objects that no pointer names (a crash between a multipart upload and its
//! pointer, a replaced pointer whose old data object was not deleted) are collected,
//! and nothing a pointer names is touched; one host per round sweeps.

mod util;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use objmapper_remote::format::data_name;
use objmapper_remote::{Outcome, Remote};
use util::{record, stamp, Seaweed};

/// What the test bucket's prefix holds at `rel` (a name relative to the prefix).
fn at(rel: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("objm/test/{rel}"))
}

async fn exists(raw: &Arc<dyn object_store::ObjectStore>, rel: &str) -> bool {
    match raw.head(&at(rel)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("HEAD {rel}: {e}"),
    }
}

fn big(seed: u8) -> Vec<u8> {
    (0..6 << 20).map(|i: u32| (i % 251) as u8 ^ seed).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_objects_no_pointer_names_are_collected_and_named_ones_kept() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let cfg = sw
        .config("sweep", "host-a")
        .with_multipart_threshold(5 << 20)
        .with_part_size(5 << 20);
    util::create_bucket(sw, &cfg).await;
    let raw = sw.raw(&cfg);
    let a = Remote::new(cfg).unwrap();

    // A multipart version a pointer names: kept, and still read whole.
    let live = big(1);
    let st_live = stamp(2_000, "host-a");
    a.put(&record(b"live", &live), &st_live, &live[..])
        .await
        .unwrap();
    let named = data_name(b"live", &st_live);
    assert!(
        exists(&raw, &named).await,
        "a multipart upload writes {named}"
    );

    // Orphans of every kind: an older data object of the same key (its pointer was
    // replaced), one of a key the tier never got a pointer for (a crash before the
    // pointer), one under a tombstone, one under an inline version.
    let small = b"a small inline version".to_vec();
    a.put(
        &record(b"small", &small),
        &stamp(2_000, "host-a"),
        &small[..],
    )
    .await
    .unwrap();
    assert_eq!(
        a.delete(b"gone", &stamp(3_000, "host-a")).await.unwrap(),
        Outcome::Stored
    );
    let orphans = [
        data_name(b"live", &stamp(1_000, "host-a")),
        data_name(b"crashed", &stamp(1_000, "host-b")),
        data_name(b"gone", &stamp(1_000, "host-a")),
        data_name(b"small", &stamp(1_000, "host-b")),
    ];
    for o in &orphans {
        raw.put(&at(o), vec![7u8; 1000].into()).await.unwrap();
    }
    // A name whose object is damaged: what it points to cannot be told, so its data
    // object stays.
    let damaged_key = b"damaged";
    let damaged_data = data_name(damaged_key, &stamp(1_000, "host-a"));
    raw.put(&at(&damaged_data), vec![1u8; 10].into())
        .await
        .unwrap();
    // What a host that died during a check of conditional writes leaves.
    let probe = "probe/host-c-00000000000000aa";
    raw.put(&at(probe), b"left".to_vec().into()).await.unwrap();
    let hash = damaged_data.split('/').nth(1).unwrap().to_owned();
    raw.put(&at(&format!("o/{hash}")), b"not a header".to_vec().into())
        .await
        .unwrap();

    // Younger than the grace: nothing goes.
    let s = a.sweep_orphans(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((s.listed, s.deleted), (6, 0), "{s:?}");
    for o in orphans.iter().map(String::as_str).chain([probe]) {
        assert!(exists(&raw, o).await, "{o} is younger than the grace");
    }

    // Older than the grace (zero, a second later): the orphans go, nothing else.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = a.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!((s.listed, s.deleted, s.bytes), (6, 4, 4000), "{s:?}");
    for o in &orphans {
        assert!(!exists(&raw, o).await, "{o} is named by no pointer");
    }
    assert!(!exists(&raw, probe).await, "a check's leftover goes");
    assert!(
        exists(&raw, &named).await,
        "{named} is named by its pointer"
    );
    assert!(exists(&raw, &damaged_data).await);
    let mut f = util::tmpfile();
    a.get(b"live", &f).await.unwrap().expect("live");
    assert!(
        util::read_all(&mut f) == live,
        "the live version reads whole"
    );

    // Nothing left to do.
    let s = a.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!((s.listed, s.deleted), (2, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_per_round_claims_the_sweep_and_the_claim_keeps_the_cursor() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "claim", "host-a").await;
    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let raw = sw.raw(a.config());
    let hour = Duration::from_secs(3600);
    let claim = a
        .claim_sweep(hour)
        .await
        .unwrap()
        .expect("the first claim wins");
    assert_eq!(claim.cursor, "", "a first round starts at the first name");
    assert!(
        b.claim_sweep(hour).await.unwrap().is_none(),
        "claimed within the hour"
    );
    assert!(
        a.claim_sweep(hour).await.unwrap().is_none(),
        "claimed within the hour"
    );
    let text = String::from_utf8(util::raw_bytes(&raw, "objm/test/swept").await).unwrap();
    assert!(text.contains(" host-a "), "{text:?}");
    let cursor = "ab".repeat(32);
    a.finish_sweep(&claim, &cursor).await.unwrap();

    // A round later, the next host to look claims it, and goes on from the cursor.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = b
        .claim_sweep(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(next.cursor, cursor);
    assert!(a
        .claim_sweep(Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    // A host whose claim was overtaken records nothing over the newer one.
    a.finish_sweep(&claim, "").await.unwrap();
    let text = String::from_utf8(util::raw_bytes(&raw, "objm/test/swept").await).unwrap();
    assert!(text.contains(" host-b "), "{text:?}");

    // A claim from a clock a day ahead, or a damaged one, does not stop sweeps.
    let ahead = objmapper_remote::now_ns() + 86_400 * 1_000_000_000;
    for body in [format!("{ahead} host-z \n"), "garbage".to_string()] {
        util::put_raw(&raw, "objm/test/swept", body.into_bytes()).await;
        let c = a.claim_sweep(hour).await.unwrap().expect("claimable");
        assert_eq!(c.cursor, "");
        assert!(b.claim_sweep(hour).await.unwrap().is_none());
    }
}

/// Versions no host may read (expired, purged) are replaced by tombstones, a slice of
/// the names per round; live ones, and versions newer than a purge, stay; an older
/// upload still loses to the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_purged_versions_are_reclaimed_and_nothing_else() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let cfg = sw
        .config("reclaim", "host-a")
        .with_event_lookback(Duration::from_secs(1))
        .with_multipart_threshold(5 << 20)
        .with_part_size(5 << 20);
    util::create_bucket(sw, &cfg).await;
    let raw = sw.raw(&cfg);
    let a = Remote::new(cfg).unwrap();
    let now_s = objmapper_remote::now_ns() / 1_000_000_000;
    let expired = |key: &[u8], body: &[u8]| {
        let mut r = record(key, body);
        r.expires_at = Some(now_s - 10);
        r
    };
    let small = b"small".to_vec();
    let large = big(3);
    a.put(
        &expired(b"old", &small),
        &stamp(1_000, "host-a"),
        &small[..],
    )
    .await
    .unwrap();
    a.put(
        &expired(b"old-large", &large),
        &stamp(1_000, "host-a"),
        &large[..],
    )
    .await
    .unwrap();
    let data = data_name(b"old-large", &stamp(1_000, "host-a"));
    for k in [&b"img/1"[..], b"img/2", b"keep"] {
        a.put(&record(k, &small), &stamp(1_000, "host-a"), &small[..])
            .await
            .unwrap();
    }
    let mut later = record(b"img/new", &small);
    later.expires_at = Some(now_s + 3600);
    a.put(&later, &stamp(3_000, "host-a"), &small[..])
        .await
        .unwrap();
    a.purge_prefix(b"img/", &stamp(2_000, "host-a"))
        .await
        .unwrap();

    // Two names a round: three rounds read the six names, a fourth finds the end.
    let mut cursor = String::new();
    let mut total = (0, 0, 0);
    for round in 0.. {
        let r = a.reclaim(&cursor, 2).await.unwrap();
        total = (total.0 + r.read, total.1 + r.reclaimed, total.2 + r.bytes);
        cursor = r.cursor;
        if cursor.is_empty() {
            assert_eq!(round, 3, "six names, two a round");
            break;
        }
    }
    assert_eq!(
        total,
        (6, 4, 3 * 5 + (6 << 20)),
        "old, old-large, img/1, img/2"
    );
    assert!(
        !exists(&raw, &data).await,
        "the reclaimed pointer's data went with it"
    );
    for k in [&b"keep"[..], b"img/new"] {
        assert!(a.head(k).await.unwrap().is_some(), "{k:?} stays");
    }
    for k in [&b"old"[..], b"old-large", b"img/1", b"img/2"] {
        assert!(a.head(k).await.unwrap().is_none());
        let name = a.name_of(k);
        let left = util::raw_bytes(&raw, &name).await;
        assert!(
            left.len() < 200,
            "{k:?}: a tombstone is left, not the version"
        );
    }
    // An upload older than the tombstone loses to it, as it would have to the version.
    assert!(matches!(
        a.put(&record(b"old", &small), &stamp(500, "host-b"), &small[..])
            .await
            .unwrap(),
        Outcome::Superseded(_)
    ));
    // A second pass finds nothing more to do.
    let r = a.reclaim("", 100).await.unwrap();
    assert_eq!((r.read, r.reclaimed, r.cursor.as_str()), (6, 0, ""));
}

/// One round as a host runs it: claim, read the purge set again, reclaim, retire
/// purges if the pass ended, record where it stopped. Returns what the reclaim did and
/// how many purges went.
async fn round(r: &Remote) -> (objmapper_remote::Reclaim, u64) {
    let c = r
        .claim_sweep(Duration::from_nanos(1))
        .await
        .unwrap()
        .expect("a claim older than a nanosecond is taken");
    r.track_purges().await.unwrap();
    let done = r.reclaim(&c.cursor, 1000).await.unwrap();
    assert!(done.cursor.is_empty(), "a small bucket is one round");
    let retired = r.retire_purges(c.pass_started_ns).await.unwrap();
    r.finish_sweep(&c, &done.cursor).await.unwrap();
    (done, retired)
}

/// The purge set does not only grow: a purge goes once a whole reclaim pass, which
/// started a horizon (event retention, twice the transfer timeout, the lookback)
/// after the purge was first seen, has read every name knowing it. What it covered
/// stays unreadable (a tombstone now), and a purge added later stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_is_retired_after_a_whole_pass_begun_past_the_horizon() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let short = |c: objmapper_remote::Config| {
        c.with_event_retention(Duration::from_millis(300))
            .with_transfer_timeout(Duration::from_secs(2))
            .with_event_lookback(Duration::from_millis(100))
            .with_retire_slack(Duration::ZERO)
    };
    let cfg = short(sw.config("retire", "host-a"));
    util::create_bucket(sw, &cfg).await;
    let a = Remote::new(cfg.clone()).unwrap();
    let horizon = a.retire_horizon();
    assert_eq!(horizon, Duration::from_millis(4400));
    // Host B knew the purge set before the purge, and reads no event: its round still
    // knows the purge, since a round reads the set first.
    let b = Remote::new(short(sw.config_for(&cfg.bucket, "host-b"))).unwrap();
    b.know_purges().await.unwrap();
    let v = b"covered".to_vec();
    a.put(&record(b"img/1", &v), &stamp(1_000, "host-a"), &v[..])
        .await
        .unwrap();
    a.purge_prefix(b"img/", &stamp(2_000, "host-a"))
        .await
        .unwrap();
    let (done, retired) = round(&b).await;
    assert_eq!(done.reclaimed, 1, "B knew the purge: {done:?}");
    assert_eq!(
        retired, 0,
        "a pass begun before the horizon retires nothing"
    );

    tokio::time::sleep(horizon + Duration::from_millis(200)).await;
    a.purge_prefix(b"doc/", &stamp(3_000, "host-a"))
        .await
        .unwrap();
    let (_, retired) = round(&a).await;
    assert_eq!(
        retired, 1,
        "img/ goes; doc/, first seen in this pass, stays"
    );

    let fresh = Remote::new(short(sw.config_for(&cfg.bucket, "host-c"))).unwrap();
    fresh.know_purges().await.unwrap();
    assert_eq!(fresh.stats().purges_known, 1, "only doc/ is in the set");
    assert_eq!(
        fresh.head(b"img/1").await.unwrap(),
        None,
        "what the retired purge covered stays unreadable"
    );
    let (_, retired) = round(&a).await;
    assert_eq!(retired, 0, "doc/ was first seen less than a horizon ago");
}
