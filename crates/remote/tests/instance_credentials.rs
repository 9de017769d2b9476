//! The EC2 instance profile as the credential source: a fake instance metadata service
//! on loopback (IMDSv2: a session token first, then the role, then its credentials)
//! hands out SeaweedFS's key, and the client writes and reads with it.

mod util;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use objmapper_remote::{CredentialSource, Outcome, Remote};
use util::{record, stamp, Seaweed};

/// IMDSv2: `PUT /latest/api/token` gives a token, and the role and its credentials
/// are answered only to requests that carry it (401 otherwise); `served` counts the
/// credential documents. Its session token is empty: SeaweedFS takes a request that
/// carries one for a session of its own STS and refuses it (EC2's always has one, which
/// S3 checks).
fn fake_imds(key: String, secret: String, served: Arc<AtomicU32>) -> String {
    util::fake_http(move |head| {
        let path = head.split(' ').nth(1).unwrap_or("");
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
        (status, String::new(), text)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_profile_signs_with_what_the_metadata_service_hands_out() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let served = Arc::new(AtomicU32::new(0));
    let imds = fake_imds(sw.access_key.clone(), sw.secret_key.clone(), served.clone());
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
