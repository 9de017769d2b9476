//! A remote tier that fails in part, as a proxy between real daemons and SeaweedFS
//! showed: a gateway whose ETags `If-Match` refuses, PUTs answered `503 SlowDown` or
//! `403`, listings answered with garbage. A host against the fake S3 endpoint
//! (crates/testkit) backs off, appends each event once, and says what is wrong without
//! flapping between states.

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

/// A miss, which reads through.
fn miss(t: &TestServer, key: &[u8]) {
    let _ = Client::connect(t.socket()).unwrap().get(key);
}

/// Waits until `f` holds, at most `within`.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path the fake sees for `key`'s name object.
fn name_path(fake: &FakeS3, key: &[u8]) -> String {
    let r = objmapper_remote::Remote::new(seaweed::config_at(&fake.endpoint, "x")).unwrap();
    format!("/fake/{}", r.name_of(key))
}

/// The events the fake holds.
fn events(fake: &FakeS3) -> Vec<String> {
    fake.names()
        .into_iter()
        .filter(|n| n.contains("/events/"))
        .collect()
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

/// Behind a gateway whose GETs answer ETags that `If-Match` refuses, a write over an
/// existing key loses every conditional PUT. The upload is retried (with backoff), and
/// the "write over a live version" event goes to the shared log once, not once per
/// attempt and retry (4,389 events for one key in 75 s, found from outside; every host
/// reads every event). The state says `conflicting` with the likely cause, as does the
/// delete of an existing key, which used to stay stuck without a word. Once the gateway
/// is fixed both go through and the state is `ok` again.
#[test]
fn a_write_the_gateway_keeps_refusing_appends_one_event_and_says_why() {
    let fake = FakeS3::start(Conditions::default());
    let a = started(&fake);
    put(&a, b"k", b"first");
    assert_eq!(flush(&a, 30.0)["drained"], true);
    assert!(events(&fake).is_empty(), "a new key appends nothing");

    fake.set_faults(Faults {
        rewrite_etags: true,
        ..Faults::default()
    });
    put(&a, b"k", b"second");
    eventually(Duration::from_secs(10), "state conflicting", || {
        remote_state(&a)["state"] == "conflicting"
    });
    let st = remote_state(&a);
    let err = st["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains("ETags") && err.contains("If-Match"),
        "the likely cause: {st}"
    );
    assert!(st["errors"]["precondition"].as_u64() >= Some(1), "{st}");
    assert_eq!(st["reachable"], true, "{st}");
    let text = http::get(&admin(&a), "/metrics").text;
    let m = http::prometheus(&text);
    assert_eq!(
        m.get(r#"objmapper_remote_state{state="conflicting"}"#),
        Some(&1.0)
    );
    // A delete of an existing key loses the same way, and says so the same way.
    delete(&a, b"seed");
    std::thread::sleep(Duration::from_secs(3));
    let st = remote_state(&a);
    assert_eq!(st["state"], "conflicting", "{st}");
    assert_eq!(st["invalidations_pending"], 1, "{st}");
    assert_eq!(events(&fake).len(), 1, "{:#?}", events(&fake));

    fake.set_faults(Faults::default());
    assert_eq!(flush(&a, 40.0)["drained"], true);
    // The write's event, appended before; the delete's, after its tombstone.
    assert_eq!(events(&fake).len(), 2, "{:#?}", events(&fake));
    assert_eq!(remote_state(&a)["state"], "ok");
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

/// When only some requests fail (every PUT, or every LIST of the event log) the state
/// says so and stays so: it used to flip to `ok` at every answer and back at every
/// failure, with a WARN and an INFO line each time. A poll of the event log failing is
/// the tier failing, whatever else answers.
#[test]
fn a_tier_failing_only_its_puts_or_its_listings_stays_unreachable() {
    for faults in [
        Faults {
            put: Some(Failure::SlowDown),
            ..Faults::default()
        },
        Faults {
            list: Some(Failure::Garbage),
            ..Faults::default()
        },
    ] {
        let fake = FakeS3::start(Conditions::default());
        let a = started(&fake);
        fake.set_faults(faults);
        let mut n = 0;
        // Traffic of every kind meanwhile: uploads, read-throughs, polls.
        let mut traffic = || {
            n += 1;
            put(&a, format!("new/{n}").as_bytes(), b"x");
            miss(&a, format!("absent/{n}").as_bytes());
            std::thread::sleep(Duration::from_millis(100));
        };
        let t = Instant::now();
        while remote_state(&a)["state"] != "unreachable" {
            assert!(t.elapsed() < Duration::from_secs(10), "{faults:?}");
            traffic();
        }
        // Settled within a couple of seconds; then it holds.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            traffic();
        }
        let mut seen = Vec::new();
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_secs(5) {
            traffic();
            seen.push(remote_state(&a)["state"].as_str().unwrap().to_owned());
        }
        assert!(
            seen.iter().all(|s| s == "unreachable"),
            "{faults:?}: {seen:?}"
        );
        let st = remote_state(&a);
        assert!(st["last_error"].as_str().is_some(), "{st}");
        fake.set_faults(Faults::default());
        eventually(Duration::from_secs(40), "ok once it answers", || {
            remote_state(&a)["state"] == "ok"
        });
    }
}
