//! The check a host makes before it reads or writes through the tier: that the store
//! honours `If-None-Match: *` and `If-Match` on PUT. Against SeaweedFS (it does), and a
//! fake endpoint playing the S3 gateways that do not (docs/STORAGE.md, "A store must
//! honour conditional writes").

mod util;

use objmapper_remote::{Config, Error, ErrorKind, Remote};
use objmapper_testkit::fake_s3::{Conditions, FakeS3, Honour};
use std::time::Duration;

/// A client of the store at `endpoint`, as host `host-a`.
fn config_at(endpoint: &str) -> Config {
    util::config_at(endpoint, "host-a").with_timeout(Duration::from_secs(5))
}

/// Runs the check against a fake with `c`; returns its result and the requests made.
async fn check(c: Conditions) -> (Result<(), Error>, FakeS3) {
    let fake = FakeS3::start(c);
    let r = Remote::new(config_at(&fake.endpoint))
        .unwrap()
        .check_conditional_writes()
        .await;
    (r, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_passes_the_check_and_keeps_nothing_of_it() {
    if util::skip() {
        return;
    }
    let sw = util::Seaweed::shared();
    let r = util::client(sw, "guard", "host-a").await;
    r.check_conditional_writes()
        .await
        .expect("SeaweedFS honours both headers");
    let raw = sw.raw(r.config());
    let mut left = Vec::new();
    use futures_util::StreamExt;
    let mut l = raw.list(Some(&object_store::path::Path::from("objm/test")));
    while let Some(m) = l.next().await {
        left.push(m.unwrap().location.to_string());
    }
    assert!(left.is_empty(), "the check's object is deleted: {left:?}");

    // A bucket that does not exist is named as such, and not created by the check's
    // PUTs (SeaweedFS creates a bucket on an admin's PUT).
    let missing = Remote::new(sw.config("guard-missing", "host-a")).unwrap();
    let e = missing
        .check_conditional_writes()
        .await
        .expect_err("no bucket");
    assert!(matches!(e, Error::NoBucket { .. }), "{e}");
    let e = missing
        .check_conditional_writes()
        .await
        .expect_err("still no bucket: the first check made none");
    assert!(matches!(e, Error::NoBucket { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_honours_both_headers_passes_and_the_object_goes() {
    let (r, fake) = check(Conditions::default()).await;
    r.expect("honoured");
    let reqs = fake.requests();
    let puts = reqs
        .iter()
        .filter(|r| r.starts_with("PUT /fake/p/probe/host-a-"))
        .count();
    assert_eq!(puts, 4, "{reqs:#?}");
    assert!(fake.names().is_empty(), "{:?}", fake.names());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_either_header_fails_the_check() {
    for (c, says) in [
        (
            Conditions {
                if_none_match: Honour::Ignore,
                ..Conditions::default()
            },
            "second PUT with If-None-Match: * over the same name was accepted",
        ),
        (
            Conditions {
                if_match: Honour::Ignore,
                ..Conditions::default()
            },
            "If-Match naming another ETag was accepted",
        ),
        (
            Conditions {
                if_none_match: Honour::NotImplemented,
                ..Conditions::default()
            },
            "If-None-Match: * was answered as not implemented",
        ),
        (
            Conditions {
                if_match: Honour::NotImplemented,
                ..Conditions::default()
            },
            "If-Match was answered as not implemented",
        ),
    ] {
        let (r, fake) = check(c).await;
        let e = r.expect_err(says);
        assert_eq!(e.kind(), ErrorKind::Unguarded, "{c:?}: {e}");
        assert!(e.is_tier_wide(), "kept and tried again later");
        let text = e.to_string();
        assert!(text.contains(says), "{c:?}: {text}");
        assert!(
            text.contains("reads and writes nothing until it does"),
            "says what it means for the host: {text}"
        );
        assert!(
            fake.names().is_empty(),
            "{c:?}: the object goes: {:?}",
            fake.names()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_cannot_answer_is_not_called_unguarded() {
    // Nothing listens: unreachable, not a verdict on the store.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let cfg = config_at(&format!("http://{addr}")).with_timeout(Duration::from_millis(500));
    let e = Remote::new(cfg)
        .unwrap()
        .check_conditional_writes()
        .await
        .expect_err("nothing answers");
    assert_ne!(e.kind(), ErrorKind::Unguarded, "{e}");
    assert!(e.is_transient(), "{e}");
}
