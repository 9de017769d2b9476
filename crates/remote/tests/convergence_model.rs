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
async fn events_are_read_by_when_they_were_appended_whatever_their_stamps() {
    use object_store::ObjectStoreExt;
    use objmapper_remote::{now_ns, Event, EventCursor, EventKind};
    let store = Arc::new(InMemory::new());
    let a = client(&store, "a");
    let b = client(&store, "b");
    let s = 1_000_000_000u64; // one second, in ns
    let mut cursor = EventCursor::since(0);
    a.purge_prefix(b"x", &stamp(100 * s, "a")).await.unwrap();
    assert_eq!(b.poll_events(&mut cursor).await.unwrap().len(), 1);
    let read_to = cursor.watermark_ns();
    assert!(
        read_to > 100 * s,
        "the cursor is at the append time, not the stamp"
    );
    // An event stamped long ago and appended now (its host was cut off from the store
    // meanwhile) is found: it is named by when it was appended.
    a.purge_prefix(b"y", &stamp(10 * s, "a")).await.unwrap();
    let evs = b.poll_events(&mut cursor).await.unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Purge(b"y".to_vec()));
    // Named by a host whose clock lags: found within the lookback (60 s), not beyond.
    let raw = |subject: &[u8], appended: u64, nonce: u64| {
        let ev = Event {
            stamp: stamp(appended, "lagging"),
            kind: EventKind::Purge(subject.to_vec()),
        };
        let name = format!("p/{}", ev.name(appended, nonce));
        let store = store.clone();
        async move {
            store
                .put(
                    &object_store::path::Path::from(name),
                    ev.encode().unwrap().into(),
                )
                .await
                .unwrap();
        }
    };
    let now = now_ns();
    raw(b"lag30", now - 30 * s, 1).await;
    raw(b"lag120", now - 120 * s, 2).await;
    let evs = b.poll_events(&mut cursor).await.unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Purge(b"lag30".to_vec()));
    // Named by a host whose clock runs an hour ahead: found, and the cursor does not
    // follow it into the future, so the events appended next are still found.
    raw(b"ahead", now_ns() + 3600 * s, 3).await;
    assert_eq!(b.poll_events(&mut cursor).await.unwrap().len(), 1);
    assert!(
        cursor.watermark_ns() <= now_ns(),
        "the cursor stays at this host's now"
    );
    a.purge_prefix(b"after", &stamp(200 * s, "a"))
        .await
        .unwrap();
    let evs = b.poll_events(&mut cursor).await.unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Purge(b"after".to_vec()));
    assert!(b.poll_events(&mut cursor).await.unwrap().is_empty());
    assert_eq!(b.stats().events, 5);
}
