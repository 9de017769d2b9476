//! The "larger stamp wins" rule against a model, with no SeaweedFS: object_store's
//! in-memory store (which honours `If-None-Match` and `If-Match` as S3 does), many
//! concurrent writers, random stamps and orders. Whatever the interleaving, the key
//! ends at the largest stamp offered (version or tombstone).

mod util;

use std::sync::Arc;

use object_store::memory::InMemory;
use objmapper_remote::{Config, CredentialSource, HostId, Outcome, Remote};
use util::{record, stamp};

fn client(store: &Arc<InMemory>, host: &str) -> Remote {
    let cfg = Config::from_url("s3://model/p")
        .unwrap()
        .with_credentials(CredentialSource::Anonymous)
        .with_host(HostId::new(host).unwrap())
        .with_miss_ttl(std::time::Duration::ZERO);
    Remote::with_store(cfg, store.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_and_deletes_end_at_the_largest_stamp() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20 {
        let store = Arc::new(InMemory::new());
        let hosts: Vec<Arc<Remote>> = ["h0", "h1", "h2"]
            .iter()
            .map(|h| Arc::new(client(&store, h)))
            .collect();
        // Distinct stamps: one stamp is one version (or one delete) by definition.
        let mut ops = Vec::new();
        let mut used = std::collections::HashSet::new();
        while ops.len() < 24 {
            let h = (rnd() % 3) as usize;
            let t = rnd() % 50;
            let delete = rnd() % 4 == 0;
            if used.insert((h, t)) {
                ops.push((h, t, delete));
            }
        }
        let best = ops
            .iter()
            .map(|&(h, t, d)| (stamp(t, &format!("h{h}")), d))
            .max_by(|a, b| a.0.cmp(&b.0))
            .unwrap();
        let mut tasks = Vec::new();
        for (h, t, delete) in ops {
            let r = hosts[h].clone();
            tasks.push(tokio::spawn(async move {
                let st = stamp(t, &format!("h{h}"));
                if delete {
                    r.delete(b"key", &st).await.unwrap()
                } else {
                    let body = format!("{t}@h{h}").into_bytes();
                    r.put(&record(b"key", &body), &st, &body[..]).await.unwrap()
                }
            }));
        }
        let mut stored = 0;
        for t in tasks {
            if t.await.unwrap() == Outcome::Stored {
                stored += 1;
            }
        }
        assert!(stored >= 1);
        for r in &hosts {
            let mut f = util::tmpfile();
            let got = r.get(b"key", &f).await.unwrap();
            if best.1 {
                assert_eq!(got, None, "round {round}: the newest is a delete {best:?}");
            } else {
                let got = got.unwrap_or_else(|| panic!("round {round}: lost {best:?}"));
                assert_eq!(got.stamp, best.0, "round {round}");
                assert_eq!(
                    util::read_all(&mut f),
                    format!("{}@{}", best.0.time_ns, best.0.host).into_bytes()
                );
            }
        }
    }
}

#[tokio::test]
async fn misses_are_remembered_for_the_ttl() {
    let store = Arc::new(InMemory::new());
    let cfg = Config::from_url("s3://model/p")
        .unwrap()
        .with_credentials(CredentialSource::Anonymous)
        .with_host(HostId::new("a").unwrap())
        .with_miss_ttl(std::time::Duration::from_secs(60));
    let a = Remote::with_store(cfg, store.clone());
    let b = client(&store, "b");
    assert_eq!(a.head(b"k").await.unwrap(), None);
    b.put(&record(b"k", b"v"), &stamp(1, "b"), &b"v"[..])
        .await
        .unwrap();
    // a remembers the miss (another host's upload is not seen until the TTL ends)...
    assert_eq!(a.head(b"k").await.unwrap(), None);
    assert_eq!(a.stats().cached_misses, 1);
    // ...but its own upload clears it.
    a.put(&record(b"k", b"w"), &stamp(2, "a"), &b"w"[..])
        .await
        .unwrap();
    assert!(a.head(b"k").await.unwrap().is_some());
}

#[tokio::test]
async fn events_written_late_are_found_within_the_lookback() {
    use objmapper_remote::{EventCursor, EventKind};
    let store = Arc::new(InMemory::new());
    let a = client(&store, "a");
    let b = client(&store, "b");
    let s = 1_000_000_000u64; // one second, in ns
    let mut cursor = EventCursor::since(0);
    a.purge_prefix(b"x", &stamp(100 * s, "a")).await.unwrap();
    assert_eq!(b.poll_events(&mut cursor).await.unwrap().len(), 1);
    assert_eq!(cursor.watermark_ns(), 100 * s);
    // A host whose clock lags 30 s (or whose write was slow) appends an event stamped
    // before the watermark: still found (lookback 60 s), once.
    a.purge_prefix(b"y", &stamp(70 * s, "a")).await.unwrap();
    // One older than the lookback is not.
    a.purge_prefix(b"z", &stamp(10 * s, "a")).await.unwrap();
    let evs = b.poll_events(&mut cursor).await.unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Purge(b"y".to_vec()));
    assert!(b.poll_events(&mut cursor).await.unwrap().is_empty());
    assert_eq!(b.stats().events, 2);
}
