//! A remote tier that fails, as a proxy between real daemons and SeaweedFS showed:
//! PUTs answered `503 SlowDown`, every request `403`. A host against the fake S3
//! endpoint (crates/testkit) backs off, for each item and for the tier as a whole.

mod util;

#[path = "../../remote/tests/util/mod.rs"]
mod seaweed;

use std::time::{Duration, Instant};

use objmapper_client::{Client, PutOptions};
use objmapper_server::RemoteSettings;
use objmapper_testkit::fake_s3::{Conditions, Failure, FakeS3, Faults};
use util::http::{self, call, Target};
use util::TestServer;

/// A host `id` of the fake endpoint: a 2 s timeout, polls every 500 ms, the default 32
/// upload tasks.
fn host(fake: &FakeS3, id: &str) -> TestServer {
    let client = seaweed::config_at(&fake.endpoint, id)
        .with_timeout(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(500));
    let id = id.to_string();
    TestServer::start_with(move |c| {
        c.host_id = id;
        c.remote = Some(RemoteSettings {
            client,
            queue_max_objects: 10_000,
            queue_max_bytes: 1 << 30,
            max_fetches: 64,
        });
    })
}

fn admin(t: &TestServer) -> Target {
    http::unix(t.server().admin_socket_path().unwrap())
}

fn remote_state(t: &TestServer) -> serde_json::Value {
    http::get(&admin(t), "/v1/stats").json()["remote"].clone()
}

/// Flushes with `timeout_seconds`; the answer.
fn flush(t: &TestServer, seconds: f64) -> serde_json::Value {
    let body = format!(r#"{{"timeout_seconds":{seconds}}}"#);
    let r = call(&admin(t), "POST", "/v1/remote/flush", Some(&body));
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()
}

fn put(t: &TestServer, key: &[u8], bytes: &[u8]) {
    Client::connect(t.socket())
        .unwrap()
        .put(key, bytes, &PutOptions::default())
        .unwrap();
}

fn delete(t: &TestServer, key: &[u8]) {
    Client::connect(t.socket())
        .unwrap()
        .delete(key, false)
        .unwrap();
}

/// The path the fake sees for `key`'s name object.
fn name_path(fake: &FakeS3, key: &[u8]) -> String {
    let r = objmapper_remote::Remote::new(seaweed::config_at(&fake.endpoint, "x")).unwrap();
    format!("/fake/{}", r.name_of(key))
}

/// The PUTs of `path` among the requests from `from` on.
fn puts_of(fake: &FakeS3, from: usize, path: &str) -> usize {
    let line = format!("PUT {path}");
    fake.requests()[from..]
        .iter()
        .filter(|r| **r == line)
        .count()
}

/// A host with one version uploaded: the tier checked, answering, `ok`.
fn started(fake: &FakeS3) -> TestServer {
    let a = host(fake, "host-a");
    put(&a, b"seed", b"on the tier before anything breaks");
    assert_eq!(flush(&a, 30.0)["drained"], true);
    assert_eq!(remote_state(&a)["state"], "ok");
    a
}

/// Uploads and deletes that fail are tried again after a backoff that grows, for the
/// item and for the tier: not at once by another of the 32 upload tasks (7 PUTs a
/// second went out under a steady `503 SlowDown`, 10 requests a second under `403`).
/// A flush told to give up returns at once meanwhile, and the tier is used again within
/// the backoff once it answers.
#[test]
fn a_failing_tier_is_retried_with_backoff_not_at_once() {
    for (faults, most) in [
        (
            Faults {
                all: Some(Failure::Forbidden),
                ..Faults::default()
            },
            12,
        ),
        // The S3 client retries a 503 twice itself: three PUTs an attempt.
        (
            Faults {
                put: Some(Failure::SlowDown),
                ..Faults::default()
            },
            30,
        ),
    ] {
        let fake = FakeS3::start(Conditions::default());
        let a = started(&fake);
        fake.set_faults(faults);
        let from = fake.requests().len();
        put(&a, b"up", b"waits for the tier");
        delete(&a, b"seed");
        std::thread::sleep(Duration::from_secs(8));
        let (up, seed) = (name_path(&fake, b"up"), name_path(&fake, b"seed"));
        let sent = puts_of(&fake, from, &up) + puts_of(&fake, from, &seed);
        assert!(sent >= 2, "{faults:?}: both were tried");
        assert!(
            sent <= most,
            "{faults:?}: {sent} PUTs in 8 s: {:#?}",
            &fake.requests()[from..]
        );
        let t = Instant::now();
        assert_eq!(flush(&a, 0.3)["drained"], false);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        fake.set_faults(Faults::default());
        let t = Instant::now();
        assert_eq!(flush(&a, 40.0)["drained"], true, "{faults:?}");
        // The backoff reached by then is a few seconds (at most 30 s ever).
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{faults:?}: used again after {:?}",
            t.elapsed()
        );
    }
}

/// While every request fails, the upload tasks back off together: past the first
/// tries (those sent before the tier was known to fail), one request goes per backoff
/// between all the uploads, not one per upload.
#[test]
fn many_failing_uploads_send_one_request_per_backoff_between_them() {
    let fake = FakeS3::start(Conditions::default());
    let a = started(&fake);
    fake.set_faults(Faults {
        all: Some(Failure::Forbidden),
        ..Faults::default()
    });
    let from = fake.requests().len();
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("many/{i}").into_bytes()).collect();
    for k in &keys {
        put(&a, k, b"waits for the tier");
    }
    let sent = |from: usize| -> usize {
        keys.iter()
            .map(|k| puts_of(&fake, from, &name_path(&fake, k)))
            .sum()
    };
    std::thread::sleep(Duration::from_secs(3));
    let half = fake.requests().len();
    std::thread::sleep(Duration::from_secs(3));
    // The first tries (those taken before the first failure), then about 5 backoffs.
    let all = sent(from);
    assert!(
        (1..=keys.len() + 8).contains(&all),
        "{all} PUTs in 6 s for {} uploads",
        keys.len()
    );
    // By then the backoff is above half a second: at most a few in the next 3 s.
    let late = sent(half);
    assert!(late <= 4, "{late} PUTs in the last 3 s");
    fake.set_faults(Faults::default());
    assert_eq!(flush(&a, 40.0)["drained"], true);
}
