//! What the client puts on the wire, seen by a fake S3 endpoint on loopback: every
//! request is signed (SigV4), and bodies go as `UNSIGNED-PAYLOAD` (no SHA-256 pass over
//! the bytes: the object's own xxh3 and header, checked on every read, and TLS off
//! loopback, protect them).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use objmapper_remote::{Config, CredentialSource, Credentials, Outcome, Remote, Secret};
use util::{record, stamp};

/// Answers every request on `l` (404 to a GET, 200 with an ETag to anything else) and
/// records each one's request line and headers, lowercased.
fn fake_s3(l: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { return };
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            loop {
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&lower);
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let get = head.starts_with("get ");
                seen.lock().unwrap().push(head);
                let answer = if get {
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n\
                     Content-Length: 0\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 0\r\n\r\n"
                };
                if w.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_signed_and_bodies_go_unsigned() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || fake_s3(l, s));
    let cfg = Config::from_url("s3://fake/p")
        .unwrap()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
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
