//! The EC2 instance profile as the credential source: a fake instance metadata service
//! on loopback (IMDSv2: a session token first, then the role, then its credentials)
//! hands out SeaweedFS's key, and the client writes and reads with it.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use objmapper_remote::{CredentialSource, Outcome, Remote};
use util::{record, stamp, Seaweed};

/// Serves IMDSv2 on `l` (its session token is empty: SeaweedFS takes a request that
/// carries one for a session of its own STS and refuses it; EC2's always has one, which
/// S3 checks): `PUT /latest/api/token` gives a token, and the role and its
/// credentials are answered only to requests that carry it (401 otherwise). Counts the
/// credential documents served.
fn fake_imds(l: TcpListener, key: String, secret: String, served: Arc<AtomicU32>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { return };
        let (key, secret, served) = (key.clone(), secret.clone(), served.clone());
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
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let tokened = head.contains("x-aws-ec2-metadata-token: imds-session-token");
                let (status, text) = if head.starts_with("put ") && path == "/latest/api/token" {
                    ("200 OK", "imds-session-token".to_string())
                } else if !tokened {
                    ("401 Unauthorized", String::new())
                } else if path == "/latest/meta-data/iam/security-credentials/" {
                    ("200 OK", "cache-role".to_string())
                } else if path == "/latest/meta-data/iam/security-credentials/cache-role" {
                    served.fetch_add(1, Ordering::Relaxed);
                    (
                        "200 OK",
                        format!(
                            r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"","Expiration":"2099-01-01T00:00:00Z"}}"#
                        ),
                    )
                } else {
                    ("404 Not Found", String::new())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                if w.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_profile_signs_with_what_the_metadata_service_hands_out() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", l.local_addr().unwrap());
    let served = Arc::new(AtomicU32::new(0));
    let (k, s, n) = (sw.access_key.clone(), sw.secret_key.clone(), served.clone());
    std::thread::spawn(move || fake_imds(l, k, s, n));
    // The one variable this binary sets, before the client reads it (and the only
    // test in this binary, so no other test sees it).
    std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
    let cfg = sw.config("imds", "host-a");
    util::create_bucket(sw, &cfg).await;
    let r = Remote::new(cfg.with_credentials(CredentialSource::Instance)).unwrap();
    let body = b"signed with the instance profile's key".to_vec();
    assert_eq!(
        r.put(&record(b"k", &body), &stamp(1, "host-a"), &body[..])
            .await
            .unwrap(),
        Outcome::Stored
    );
    let mut f = util::tmpfile();
    r.get(b"k", &f).await.unwrap().expect("found");
    assert_eq!(util::read_all(&mut f), body);
    assert!(
        served.load(Ordering::Relaxed) >= 1,
        "the credentials came from the metadata service"
    );
}
