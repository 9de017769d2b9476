//! Writes whose conditional PUT keeps being refused, and batches sent again after a
//! failure, cost the shared event log one event each, not one per attempt: every host
//! reads every event. The store here is object_store's in-memory one behind a gateway
//! that can answer GETs with ETags `If-Match` refuses (some gateways rewrite ETags), and
//! fail chosen event writes.

mod util;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use objmapper_remote::{Config, CredentialSource, ErrorKind, HostId, Outcome, Remote};
use util::{record, stamp};

/// The in-memory store behind a gateway.
struct Gateway {
    inner: InMemory,
    /// GETs of name objects answer an ETag that `If-Match` refuses.
    rewrite_etags: AtomicBool,
    /// Event writes to refuse (as a 503 would be), after letting `pass_events` through.
    fail_events: AtomicU32,
    pass_events: AtomicU32,
}

impl Gateway {
    fn new() -> Arc<Gateway> {
        Arc::new(Gateway {
            inner: InMemory::new(),
            rewrite_etags: AtomicBool::new(false),
            fail_events: AtomicU32::new(0),
            pass_events: AtomicU32::new(0),
        })
    }

    /// Lets `pass` event writes through, then refuses `fail`.
    fn refuse_events(&self, pass: u32, fail: u32) {
        self.pass_events.store(pass, Ordering::SeqCst);
        self.fail_events.store(fail, Ordering::SeqCst);
    }

    /// Whether this event write is refused.
    fn refuse_event(&self) -> bool {
        let down = |a: &AtomicU32| {
            a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        self.fail_events.load(Ordering::SeqCst) > 0
            && !down(&self.pass_events)
            && down(&self.fail_events)
    }

    /// The events in the log.
    async fn events(&self) -> Vec<String> {
        use futures_util::StreamExt;
        let dir = Path::from("p/events");
        self.inner
            .list(Some(&dir))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gateway({})", self.inner)
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gateway({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gateway {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().contains("/events/") && self.refuse_event() {
            return Err(object_store::Error::Generic {
                store: "gateway",
                source: "503 Service Unavailable: SlowDown".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut r = self.inner.get_opts(location, options).await?;
        let named = location.as_ref().contains("/o/") || location.as_ref().contains("/probe/");
        if named && self.rewrite_etags.load(Ordering::SeqCst) {
            r.meta.e_tag = r.meta.e_tag.map(|e| format!("gw-{e}"));
        }
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn client(gw: &Arc<Gateway>, host: &str) -> Remote {
    let cfg = Config::from_url("s3://gateway/p")
        .unwrap()
        .with_credentials(CredentialSource::Anonymous)
        .with_host(HostId::new(host).unwrap());
    Remote::with_store(cfg, gw.clone())
}

/// Behind a gateway whose GETs answer ETags that `If-Match` refuses, every write over a
/// live version loses all its attempts. Each attempt used to append the "write over a
/// live version" delete event again, and so did every retry of the whole upload: 4,389
/// events for one key in 75 s, each read by every host. Now the event for one (key,
/// stamp) goes to the log once, and the error says what to look at.
#[tokio::test]
async fn a_write_over_a_live_version_that_keeps_losing_appends_its_event_once() {
    let gw = Gateway::new();
    let a = client(&gw, "host-a");
    let v1 = b"first";
    assert_eq!(
        a.put(&record(b"k", v1), &stamp(10, "host-a"), &v1[..])
            .await
            .unwrap(),
        Outcome::Stored
    );
    assert!(gw.events().await.is_empty(), "a new key appends nothing");

    gw.rewrite_etags.store(true, Ordering::SeqCst);
    let v2 = b"second";
    // The upload task retries the whole put after each failure.
    for round in 0..4 {
        let e = a
            .put(&record(b"k", v2), &stamp(20, "host-a"), &v2[..])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Precondition, "round {round}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("ETag") && msg.contains("If-Match"),
            "the error names the likely cause: {msg}"
        );
        let events = gw.events().await;
        assert_eq!(events.len(), 1, "round {round}: {events:#?}");
    }
    assert!(a.stats().conflicts >= 16, "{:?}", a.stats());

    // A delete of the key loses the same way; its event follows its tombstone, so
    // none is appended while the tombstone cannot be written.
    let e = a.delete(b"k", &stamp(30, "host-a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Precondition, "{e}");
    assert_eq!(gw.events().await.len(), 1);

    // The gateway fixed: the write goes through, still without a second event (the
    // one appended covers every version before the write).
    gw.rewrite_etags.store(false, Ordering::SeqCst);
    assert_eq!(a.stats().replaced, 0);
    assert_eq!(
        a.put(&record(b"k", v2), &stamp(20, "host-a"), &v2[..])
            .await
            .unwrap(),
        Outcome::Stored
    );
    assert_eq!(gw.events().await.len(), 1);
    assert_eq!(a.stats().replaced, 1, "If-Match was taken: counted");
    // Another client (a restart) knows nothing of it: one more event is the bound.
    let b = client(&gw, "host-a");
    let v3 = b"third";
    b.put(&record(b"k", v3), &stamp(40, "host-a"), &v3[..])
        .await
        .unwrap();
    assert_eq!(
        gw.events().await.len(),
        2,
        "a write over v2 appends its own"
    );
}

/// A batch of purges is sent again whole after a failure (the upload task cannot tell
/// which of its events went up): the events already appended are not appended again.
/// So is a delete whose event failed after its tombstone was written.
#[tokio::test]
async fn invalidations_sent_again_after_a_failure_append_each_event_once() {
    let gw = Gateway::new();
    let a = client(&gw, "host-a");
    let purges: Vec<(Vec<u8>, _)> = (0..3)
        .map(|i| (format!("p{i}/").into_bytes(), stamp(100 + i, "host-a")))
        .collect();
    // The first event goes up, the second fails.
    gw.refuse_events(1, 1);
    assert!(a.purge_prefixes(&purges).await.is_err());
    assert_eq!(gw.events().await.len(), 1);
    a.purge_prefixes(&purges).await.unwrap();
    assert_eq!(gw.events().await.len(), 3, "{:#?}", gw.events().await);

    // A delete: tombstone written, event refused; sent again, one event.
    let body = b"v";
    a.put(&record(b"d", body), &stamp(1, "host-a"), &body[..])
        .await
        .unwrap();
    gw.refuse_events(0, 1);
    assert!(a.delete(b"d", &stamp(200, "host-a")).await.is_err());
    assert_eq!(gw.events().await.len(), 3);
    assert_eq!(
        a.delete(b"d", &stamp(200, "host-a")).await.unwrap(),
        Outcome::AlreadyThere
    );
    assert_eq!(gw.events().await.len(), 4);
    // Sent a third time (the queue retried after an error elsewhere): nothing more.
    a.delete(b"d", &stamp(200, "host-a")).await.unwrap();
    assert_eq!(gw.events().await.len(), 4);
}

/// The check of conditional writes makes its last `If-Match` with the ETag a read of
/// its object reports, as writes over a version do: a gateway that rewrites the ETags
/// of reads is found at start (the tier stays shut, `unguarded`), not by the first
/// write over an existing key losing every attempt.
#[tokio::test]
async fn a_gateway_whose_read_etags_if_match_refuses_is_found_by_the_check() {
    let gw = Gateway::new();
    let a = client(&gw, "host-a");
    a.check_conditional_writes()
        .await
        .expect("a plain store passes");
    gw.rewrite_etags.store(true, Ordering::SeqCst);
    let e = a.check_conditional_writes().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unguarded, "{e}");
    assert!(e.to_string().contains("as a HEAD of it reports it"), "{e}");
}
