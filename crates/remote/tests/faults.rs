//! The remote tier failing costs a bounded time, never a hang: an endpoint that is
//! down, and a server that stops answering (SIGSTOP).

mod util;

use std::time::{Duration, Instant};

use objmapper_remote::{ErrorKind, Remote};
use util::{record, stamp, Seaweed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_fails_within_the_timeout() {
    // A loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bound = Duration::from_millis(800);
    let cfg = objmapper_remote::Config::from_url("s3://down/p")
        .unwrap()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_credentials(objmapper_remote::CredentialSource::Static(
            objmapper_remote::Credentials {
                access_key_id: "id".into(),
                secret_access_key: objmapper_remote::Secret::new("secret"),
                session_token: None,
            },
        ))
        .with_timeout(bound);
    let r = Remote::new(cfg).unwrap();
    let f = util::tmpfile();
    let t = Instant::now();
    let e = r.get(b"k", &f).await.unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(took <= bound + Duration::from_millis(500), "took {took:?}");
    let e = r.head(b"k").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = r
        .put(&record(b"k", b"x"), &stamp(1, "h"), &b"x"[..])
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_times_out_within_the_bound() {
    if util::skip() {
        return;
    }
    // A server of its own: this test freezes it.
    let sw = Seaweed::start();
    let bound = Duration::from_millis(1000);
    let cfg = sw.config("frozen", "h");
    util::create_bucket(&sw, &cfg).await;
    let r = Remote::new(cfg.with_timeout(bound)).unwrap();
    let body = b"before the freeze";
    r.put(&record(b"k", body), &stamp(1, "h"), &body[..])
        .await
        .unwrap();
    let f = util::tmpfile();
    assert!(r.get(b"k", &f).await.unwrap().is_some());

    sw.freeze();
    for what in [
        "get",
        "head",
        "get-missing",
        "poll",
        "put",
        "delete",
        "purge",
    ] {
        let t = Instant::now();
        let e = match what {
            "get" => r.get(b"k", &f).await.unwrap_err(),
            "head" => r.head(b"k").await.unwrap_err(),
            "get-missing" => r.get(b"other", &f).await.unwrap_err(),
            "put" => r
                .put(&record(b"k2", b"y"), &stamp(2, "h"), &b"y"[..])
                .await
                .unwrap_err(),
            "delete" => r.delete(b"k", &stamp(3, "h")).await.unwrap_err(),
            "purge" => r.purge_prefix(b"", &stamp(3, "h")).await.unwrap_err(),
            _ => r
                .poll_events(&mut objmapper_remote::EventCursor::since(0))
                .await
                .unwrap_err(),
        };
        let took = t.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{what}: {e}");
        assert!(
            took >= bound - Duration::from_millis(50) && took <= bound + Duration::from_millis(500),
            "{what} took {took:?}"
        );
    }
    sw.signal("CONT");
    // Back to normal once it answers again.
    let found = r.get(b"k", &f).await.unwrap().unwrap();
    assert_eq!(found.record.size, body.len() as u64);
}

/// A wrong key and a missing bucket are told apart from an endpoint that does not
/// answer, on every kind of request (the client library reports a refused list as a
/// generic error, a missing bucket on a GET as not found): both are the tier as a whole
/// refusing this host, which a queue keeps its work for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_a_missing_bucket_are_refusals_not_outages() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let cfg = sw.config("refusals", "h");
    util::create_bucket(sw, &cfg).await;
    let wrong = Remote::new(cfg.clone().with_credentials(
        objmapper_remote::CredentialSource::Static(objmapper_remote::Credentials {
            access_key_id: "objmapper-not-this-key".into(),
            secret_access_key: objmapper_remote::Secret::new("wrong"),
            session_token: None,
        }),
    ))
    .unwrap();
    let f = util::tmpfile();
    let errors = [
        wrong.get(b"k", &f).await.unwrap_err(),
        wrong.head(b"k").await.unwrap_err(),
        wrong
            .put(&record(b"k", b"x"), &stamp(1, "h"), &b"x"[..])
            .await
            .unwrap_err(),
        wrong
            .poll_events(&mut objmapper_remote::EventCursor::since(0))
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.is_tier_wide() && !e.is_transient(), "{e}");
    }
    // The bucket named was never created.
    let missing = Remote::new(sw.config("never-created", "h")).unwrap();
    let errors = [
        missing.get(b"k", &f).await.unwrap_err(),
        missing.head(b"k").await.unwrap_err(),
        missing
            .poll_events(&mut objmapper_remote::EventCursor::since(0))
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        assert!(matches!(e, objmapper_remote::Error::NoBucket { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.is_tier_wide(), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
    // The right key on the right bucket: a plain miss.
    let right = Remote::new(cfg).unwrap();
    assert!(right.get(b"k", &f).await.unwrap().is_none());
}

/// A loopback endpoint answering every request `200 OK` with the given head, then two
/// 64 KiB writes, then (with `endless`) 64 KiB chunks until the client goes.
fn lying_endpoint(head: &'static str, endless: bool) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                // The request head (bodies are small or absent here: not read).
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let chunk = vec![b'x'; 64 << 10];
                let mut out = format!("HTTP/1.1 200 OK\r\n{head}\r\n").into_bytes();
                if endless {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(&chunk);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&chunk);
                }
                if w.write_all(&out).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
                loop {
                    let mut piece = Vec::new();
                    if endless {
                        piece.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        piece.extend_from_slice(&chunk);
                        piece.extend_from_slice(b"\r\n");
                    } else {
                        piece.extend_from_slice(&chunk);
                    }
                    if w.write_all(&piece).is_err() || !endless {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A store (or a proxy on the way) answering with a `Content-Length` of 100 GB: the
/// client used to size a buffer by it before the bytes came, the allocation failed,
/// and the process aborted (an event-log poll took the host down; a purge set read so
/// kept it from starting). Now each such read fails, and the process lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_content_length_is_an_error_not_an_allocation() {
    let url = lying_endpoint("Content-Length: 100000000000\r\nETag: \"e\"\r\n", false);
    let cfg = util::config_at(&url, "host-a").with_timeout(Duration::from_secs(3));
    let r = Remote::new(cfg).unwrap();
    let mut cursor = objmapper_remote::EventCursor::now();
    assert!(r.poll_events(&mut cursor).await.is_err(), "the LIST");
    assert!(r.know_purges().await.is_err(), "the purge set");
    assert!(r.head(b"k").await.is_err(), "a name object's header");
}

/// An endless LIST answer is cut off at a bound, not buffered until the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_listing_is_cut_off() {
    let url = lying_endpoint("Transfer-Encoding: chunked\r\n", true);
    let cfg = util::config_at(&url, "host-a").with_timeout(Duration::from_secs(20));
    let r = Remote::new(cfg).unwrap();
    let mut cursor = objmapper_remote::EventCursor::now();
    let t = Instant::now();
    let e = r.poll_events(&mut cursor).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "{e}: {:?}",
        t.elapsed()
    );
    assert!(e.to_string().contains("longer than"), "{e}");
}
