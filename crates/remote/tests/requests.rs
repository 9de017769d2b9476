//! What the client puts on the wire, seen by a fake S3 endpoint on loopback: every
//! request is signed (SigV4), and bodies go as `UNSIGNED-PAYLOAD` (no SHA-256 pass over
//! the bytes: the object's own xxh3 and header, checked on every read, and TLS off
//! loopback, protect them).

mod util;

use std::sync::{Arc, Mutex};

use objmapper_remote::{Config, CredentialSource, Credentials, Outcome, Remote, Secret};
use util::{record, stamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_signed_and_bodies_go_unsigned() {
    // Records every request's head; 404 to a GET (no purge set), 200 with an ETag to
    // the rest.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let endpoint = util::fake_http(move |head| {
        s.lock().unwrap().push(head.to_owned());
        if head.starts_with("get ") {
            ("404 Not Found", String::new(), String::new())
        } else {
            ("200 OK", "ETag: \"e1\"\r\n".into(), String::new())
        }
    });
    let cfg = Config::from_url("s3://fake/p")
        .unwrap()
        .with_endpoint(endpoint)
        .with_credentials(CredentialSource::Static(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("not-a-secret"),
            session_token: None,
        }));
    let r = Remote::new(cfg).unwrap();
    let body = vec![5u8; 70_000];
    let out = r
        .put(&record(b"k", &body), &stamp(1, "h"), &body[..])
        .await
        .unwrap();
    assert_eq!(out, Outcome::Stored);
    let seen = seen.lock().unwrap();
    let put = seen
        .iter()
        .find(|h| h.starts_with("put /fake/p/o/"))
        .unwrap_or_else(|| panic!("no PUT of the name object in {seen:#?}"));
    assert!(
        put.contains("authorization: aws4-hmac-sha256 credential=akidexample/"),
        "{put}"
    );
    assert!(
        put.contains("x-amz-content-sha256: unsigned-payload"),
        "{put}"
    );
    assert!(
        put.contains("if-none-match: *"),
        "a conditional create: {put}"
    );
}
