//! The remote tier between two hosts (issue 17): two in-process servers with their own
//! data and memory directories share one bucket on a real SeaweedFS (scripts/seaweedfs).
//! Objects written on one are served by the other through read-through, in fd mode too;
//! deletes and purges on one reach the other within the poll bound; the remote tier
//! failing never hurts local hits.

mod util;

#[path = "../../remote/tests/util/mod.rs"]
mod seaweed;

use std::io::Read;
use std::time::{Duration, Instant};

use objmapper_client::{Client, PutOptions};
use objmapper_server::RemoteSettings;
use seaweed::Seaweed;
use util::http::{self, call, Target};
use util::TestServer;

/// A host: a server with the remote tier on `bucket`.
fn host(sw: &Seaweed, bucket: &str, id: &str) -> TestServer {
    host_with(sw, bucket, id, |_| {})
}

/// A test host's client of `bucket`: a 2 s timeout, polls every 500 ms.
fn client_for(sw: &Seaweed, bucket: &str, id: &str) -> objmapper_remote::Config {
    sw.config_for(bucket, id)
        .with_timeout(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(500))
}

/// Makes `c` the host `id`, with the remote tier `client` and the tests' queue bounds.
fn as_host(c: &mut objmapper_server::ServerConfig, id: &str, client: objmapper_remote::Config) {
    c.host_id = id.into();
    c.remote = Some(RemoteSettings {
        client,
        queue_max_objects: 10_000,
        queue_max_bytes: 1 << 30,
        max_fetches: 64,
    });
}

/// A host, with `f` changing its server configuration.
fn host_with(
    sw: &Seaweed,
    bucket: &str,
    id: &str,
    f: impl FnOnce(&mut objmapper_server::ServerConfig),
) -> TestServer {
    let client = client_for(sw, bucket, id);
    let id = id.to_string();
    TestServer::start_with(move |c| {
        as_host(c, &id, client);
        f(c);
    })
}

fn bucket(sw: &Seaweed, test: &str) -> String {
    let cfg = sw.config(test, "setup");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(sw, &cfg));
    cfg.bucket
}

fn admin(t: &TestServer) -> Target {
    http::unix(t.server().admin_socket_path().unwrap())
}

fn flush(t: &TestServer) {
    let r = call(
        &admin(t),
        "POST",
        "/v1/remote/flush",
        Some(r#"{"timeout_seconds":30}"#),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["drained"], true, "{:?}", r.json());
}

/// Purges `prefix` on `t` through the admin API.
fn purge(t: &TestServer, prefix: &str) {
    let body = serde_json::json!({"prefix": prefix, "confirm": true}).to_string();
    let r = call(&admin(t), "POST", "/v1/purge", Some(&body));
    assert_eq!(r.status, 200, "{:?}", r.json());
}

fn put(t: &TestServer, key: &[u8], bytes: &[u8]) {
    Client::connect(t.socket())
        .unwrap()
        .put(key, bytes, &PutOptions::default())
        .unwrap();
}

fn get(t: &TestServer, key: &[u8]) -> Option<Vec<u8>> {
    match Client::connect(t.socket()).unwrap().get(key) {
        Ok((b, _)) => Some(b),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("GET {}: {e}", key.escape_ascii()),
    }
}

/// Waits until `f` holds, at most `within`.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn a_put_on_one_host_is_read_through_on_the_other_in_fd_mode() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "read-through");
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = Client::connect(a.socket()).unwrap();
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    c.put(b"page/1", &body, &opts).unwrap();
    flush(&a);
    // fd mode on B: read-through, then the fd of the local copy.
    let mut cb = Client::connect(bh.socket()).unwrap();
    let obj = cb.get_fd(b"page/1").expect("read through");
    let mut got = Vec::new();
    std::fs::File::from(obj.fd).read_to_end(&mut got).unwrap();
    assert_eq!(got, body);
    assert_eq!(obj.meta.content_type.as_deref(), Some("text/plain"));
    // Now local on B: the info says so.
    let info = get(&bh, b"page/1");
    assert_eq!(info.as_deref(), Some(&body[..]));
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert_eq!(st["remote"]["fills"], 1, "{st}");
    // A key no host has: NOT_FOUND, quickly.
    let t = Instant::now();
    assert_eq!(get(&bh, b"nowhere"), None);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn deletes_and_purges_on_one_host_reach_the_other() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "invalidation");
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    for k in [&b"img/1"[..], b"img/2", b"doc/1"] {
        put(&a, k, b"from a");
    }
    flush(&a);
    for k in [&b"img/1"[..], b"img/2", b"doc/1"] {
        assert_eq!(
            get(&bh, k).as_deref(),
            Some(&b"from a"[..]),
            "{}",
            k.escape_ascii()
        );
    }
    // A delete on A: B's local copy goes within the poll bound.
    Client::connect(a.socket())
        .unwrap()
        .delete(b"doc/1", false)
        .unwrap();
    flush(&a);
    let took = eventually(Duration::from_secs(10), "delete reaches B", || {
        get(&bh, b"doc/1").is_none()
    });
    eprintln!("delete reached host B after {took:?}");
    // A purge by prefix on A.
    purge(&a, "img/");
    flush(&a);
    let took = eventually(Duration::from_secs(10), "purge reaches B", || {
        get(&bh, b"img/1").is_none() && get(&bh, b"img/2").is_none()
    });
    eprintln!("purge reached host B after {took:?}");
    // Neither comes back through read-through, on either host.
    assert_eq!(get(&a, b"img/1"), None);
    assert_eq!(get(&bh, b"doc/1"), None);
    let m = http::prometheus(&http::get(&admin(&bh), "/metrics").text);
    assert!(m["objmapper_remote_invalidations_received_total{kind=\"purge\"}"] >= 1.0);
}

#[test]
fn concurrent_writes_of_one_key_converge_on_the_later_commit() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "converge");
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    put(&a, b"k", b"written first, on a");
    std::thread::sleep(Duration::from_millis(5));
    put(&bh, b"k", b"written later, on b");
    flush(&bh);
    flush(&a);
    // A third host sees the later one.
    let c = host(sw, &b, "host-c");
    // (When C starts just after B's write, it applies the delete event for A's version
    // during this first read-through: that must not void the fill of B's, which is newer.)
    let got = get(&c, b"k");
    let remote = || http::get(&admin(&c), "/v1/stats").json()["remote"].clone();
    assert_eq!(
        got.as_deref(),
        Some(&b"written later, on b"[..]),
        "{}",
        remote()
    );
}

#[test]
fn a_stopped_remote_tier_does_not_slow_local_hits_and_misses_are_bounded() {
    if seaweed::skip() {
        return;
    }
    // A server of its own: this test freezes it.
    let sw = Seaweed::start();
    let b = bucket(&sw, "frozen");
    let a = host(&sw, &b, "host-a");
    put(&a, b"local", b"here");
    flush(&a);
    sw.freeze();
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(get(&a, b"local").as_deref(), Some(&b"here"[..]));
    }
    let hits = t.elapsed();
    let t = Instant::now();
    assert_eq!(get(&a, b"not-here"), None);
    let miss = t.elapsed();
    // The miss waits for the remote tier at most its timeout (2 s here), plus slack.
    assert!(miss < Duration::from_secs(5), "{miss:?}");
    assert!(hits < Duration::from_secs(2), "50 local hits took {hits:?}");
    // PUTs are acknowledged; the uploads wait.
    put(&a, b"later", b"queued");
    sw.signal("CONT");
    flush(&a);
    let st = http::get(&admin(&a), "/v1/stats").json();
    assert_eq!(st["remote"]["queue"]["objects"], 0, "{st}");
}

#[test]
fn a_tampered_remote_object_is_refused() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "tampered");
    let a = host(sw, &b, "host-a");
    put(&a, b"victim", b"the real bytes");
    flush(&a);
    // Flip bytes in the stored object itself.
    let cfg = sw.config_for(&b, "tamperer");
    let raw = sw.raw(&cfg);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let remote = objmapper_remote::Remote::new(cfg).unwrap();
    let name = remote.name_of(b"victim");
    rt.block_on(async {
        let mut bytes = seaweed::raw_bytes(&raw, &name).await;
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        seaweed::put_raw(&raw, &name, bytes).await;
    });
    let bh = host(sw, &b, "host-b");
    assert_eq!(get(&bh, b"victim"), None, "damaged bytes are never served");
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert!(
        st["remote"]["errors"]["corrupt"].as_u64().unwrap_or(0) >= 1,
        "{st}"
    );
}

#[test]
fn a_64_mib_object_goes_up_in_multipart_and_comes_back_whole_in_fd_mode() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "large");
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    let body: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put(&a, b"video/big", &body);
    flush(&a);
    // Multipart: a data object of its own next to the object's name.
    let cfg = sw.config_for(&b, "lister");
    let raw = sw.raw(&cfg);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed: Vec<(String, u64)> = rt.block_on(async {
        use futures_util::TryStreamExt;
        raw.list(None)
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap()
    });
    assert!(
        listed
            .iter()
            .any(|(n, size)| n.contains("/d/") && *size >= 64 << 20),
        "no multipart data object in {listed:?}"
    );
    // B reads it through. A fill that takes longer than the timeout answers NOT_FOUND
    // and goes on behind it; the next GET is then a local hit.
    let mut cb = Client::connect(bh.socket()).unwrap();
    let mut obj = None;
    eventually(Duration::from_secs(60), "the large object on B", || {
        match cb.get_fd(b"video/big") {
            Ok(o) => obj = Some(o),
            Err(e) if e.is_not_found() => {}
            Err(e) => panic!("{e}"),
        }
        obj.is_some()
    });
    let obj = obj.unwrap();
    let mut got = Vec::with_capacity(body.len());
    std::fs::File::from(obj.fd).read_to_end(&mut got).unwrap();
    assert!(
        got == body,
        "the bytes differ ({} of {})",
        got.len(),
        body.len()
    );
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert_eq!(st["remote"]["fills"], 1, "{st}");
    assert_eq!(st["remote"]["bytes_down"], 64u64 << 20, "{st}");
}

#[test]
fn concurrent_misses_on_one_key_make_one_remote_fetch() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "storm");
    let a = host(sw, &b, "host-a");
    // Misses remembered for 30 s (the shared test configuration remembers none).
    let bh = host_with(sw, &b, "host-b", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_miss_ttl(Duration::from_secs(30));
    });
    let body = vec![b'x'; 200_000];
    put(&a, b"hot", &body);
    flush(&a);
    let n = 16;
    let go = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                let mut c = Client::connect(bh.socket()).unwrap();
                go.wait();
                let (got, _) = c.get(b"hot").expect("every one of them is answered");
                assert!(got == body);
            });
        }
    });
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert_eq!(st["remote"]["hits"], 1, "one remote GET: {st}");
    assert_eq!(st["remote"]["fills"], 1, "{st}");
    // A storm of misses on a key nobody has is remembered: one remote request.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(get(&bh, b"cold"), None));
        }
    });
    assert_eq!(get(&bh, b"cold"), None);
    let st = http::get(&admin(&bh), "/v1/stats").json();
    let r = &st["remote"];
    let asked = r["misses"].as_u64().unwrap() - r["misses_remembered"].as_u64().unwrap();
    assert_eq!(asked, 1, "five misses, one remote request: {st}");
    assert!(r["misses_remembered"].as_u64().unwrap() >= 1, "{st}");
    let m = http::prometheus(&http::get(&admin(&bh), "/metrics").text);
    assert_eq!(
        m["objmapper_remote_misses_remembered_total"],
        r["misses_remembered"].as_u64().unwrap() as f64
    );
    // The latency histogram counts the fetches that asked the tier (the hit and the
    // one miss), not the misses answered from memory.
    assert_eq!(
        m["objmapper_remote_read_through_seconds_count"], 2.0,
        "{st}"
    );
}

#[test]
fn head_range_and_udp_read_through() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "head-range-udp");
    let a = host(sw, &b, "host-a");
    let bh = host_with(sw, &b, "host-b", |c| {
        c.udp_listen = Some("127.0.0.1:0".parse().unwrap())
    });
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let opts = PutOptions {
        content_type: Some("image/png".into()),
        ..Default::default()
    };
    let mut ca = Client::connect(a.socket()).unwrap();
    for k in [&b"h"[..], b"r"] {
        ca.put(k, &body, &opts).unwrap();
    }
    // Small enough for one UDP reply.
    let small = &body[..1000];
    ca.put(b"u", small, &opts).unwrap();
    flush(&a);
    let mut cb = Client::connect(bh.socket()).unwrap();
    // HEAD on a cold key reads it through: size and metadata, then it is local.
    let m = cb.head(b"h").expect("HEAD reads through");
    assert_eq!(m.size, Some(body.len() as u64));
    assert_eq!(m.content_type.as_deref(), Some("image/png"));
    // A range of a cold object: the whole object is fetched once, the range answered.
    let (got, m) = cb.get_range(b"r", 1000, 500).expect("range reads through");
    assert_eq!(got, &body[1000..1500]);
    assert_eq!(m.size, Some(body.len() as u64));
    assert_eq!(cb.get(b"r").unwrap().0, body);
    // UDP answers a cold miss at once and fills behind it.
    let mut u = objmapper_client::UdpClient::connect(bh.server().udp_addr().unwrap()).unwrap();
    u.set_timeout(Duration::from_secs(2));
    u.set_retries(2);
    match u.get(b"u") {
        Err(e) if e.is_not_found() => {}
        other => panic!("a cold UDP GET answers NOT_FOUND first: {other:?}"),
    }
    eventually(Duration::from_secs(10), "the UDP fill", || {
        u.get(b"u").is_ok_and(|(got, _)| got == small)
    });
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert_eq!(st["remote"]["fills"], 3, "{st}");
}

/// A TCP forwarder in front of SeaweedFS that can be taken down (connections refused:
/// the port is closed, as when the server is stopped) and brought back on the same port.
struct Gate {
    port: u16,
    target: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    fn open(target: &str) -> Gate {
        let target = target
            .trim_start_matches("http://")
            .parse()
            .expect("a loopback endpoint");
        let mut g = Gate {
            port: 0,
            target,
            stop: Default::default(),
            thread: None,
        };
        g.up();
        g
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens (again, on the same port once it has one) and forwards.
    fn up(&mut self) {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("bind the gate");
        self.port = l.local_addr().unwrap().port();
        self.stop = Default::default();
        let (stop, target) = (self.stop.clone(), self.target);
        self.thread = Some(std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in l.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(c) = c else { continue };
                let Ok(t) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (c.try_clone().unwrap(), t.try_clone().unwrap()),
                    (t.try_clone().unwrap(), c.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                conns.push((c, t));
            }
            for (c, t) in conns {
                let _ = c.shutdown(std::net::Shutdown::Both);
                let _ = t.shutdown(std::net::Shutdown::Both);
            }
        }));
    }

    /// Closes the port and every connection through it.
    fn down(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn a_remote_tier_that_is_down_does_not_hurt_the_host_and_uploads_resume_when_it_is_back() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "down");
    let mut gate = Gate::open(&sw.endpoint);
    let url = gate.url();
    let a = host_with(sw, &b, "host-a", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_endpoint(url);
    });
    put(&a, b"local", b"here");
    flush(&a);
    gate.down();
    // Refused connections: local hits as fast as ever, a cold miss bounded, PUTs
    // acknowledged at once while their uploads wait.
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(get(&a, b"local").as_deref(), Some(&b"here"[..]));
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "50 hits took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(get(&a, b"elsewhere"), None);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let t = Instant::now();
    put(&a, b"while-down", b"queued");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    eventually(Duration::from_secs(10), "the tier is seen down", || {
        http::get(&admin(&a), "/v1/stats").json()["remote"]["reachable"] == false
    });
    let st = http::get(&admin(&a), "/v1/stats").json();
    assert_eq!(st["remote"]["state"], "unreachable", "{st}");
    let q = &st["remote"]["queue"];
    let waiting = q["objects"].as_u64().unwrap() + q["running"].as_u64().unwrap();
    assert!(waiting >= 1, "the upload waits: {st}");
    // Back on the same port: the upload goes up, and another host reads it through.
    gate.up();
    flush(&a);
    assert_eq!(remote_state(&a)["state"], "ok");
    let bh = host(sw, &b, "host-b");
    assert_eq!(get(&bh, b"while-down").as_deref(), Some(&b"queued"[..]));
}

/// `POST /v1/remote/flush` answers `drained` only once every upload it waited for is on
/// the remote tier (it wakes when the last one ends, no sooner), and `drained: false`
/// when its timeout passes first.
#[test]
fn flush_answers_drained_only_once_every_upload_is_on_the_tier() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "flush");
    let mut gate = Gate::open(&sw.endpoint);
    let url = gate.url();
    let a = host_with(sw, &b, "host-a", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_endpoint(url);
    });
    let flush_within = |seconds: f64| {
        let r = call(
            &admin(&a),
            "POST",
            "/v1/remote/flush",
            Some(&format!(r#"{{"timeout_seconds":{seconds}}}"#)),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()
    };
    // The tier down: the uploads wait, and a flush gives up after its timeout.
    gate.down();
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("flush/{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&a, k, format!("bytes {i}").as_bytes());
    }
    let t = Instant::now();
    let r = flush_within(0.5);
    assert_eq!(r["drained"], false, "{r}");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Back: the flush returns drained, and at that moment every object is there.
    gate.up();
    let r = flush_within(60.0);
    assert_eq!(r["drained"], true, "{r}");
    assert_eq!(r["queue"]["objects"], 0, "{r}");
    let client = sw
        .config_for(&b, "reader")
        .with_timeout(Duration::from_secs(5));
    let remote = objmapper_remote::Remote::new(client).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for k in &keys {
        let found = rt.block_on(remote.head(k)).unwrap();
        assert!(found.is_some(), "{} not on the tier", k.escape_ascii());
    }
    // Nothing pending: a flush answers at once.
    let r = flush_within(0.0);
    assert_eq!(r["drained"], true, "{r}");
}

/// An upload of at most `multipart_threshold` bytes reads the version in one buffer:
/// from the memory tier on the upload task, from the disk tier on a blocking thread.
/// Both come back whole on another host, at the threshold and one byte past it
/// (multipart), and an empty object too.
#[test]
fn uploads_read_the_version_from_either_tier_up_to_the_threshold_and_past_it() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "readsmall");
    let threshold: usize = 5 << 20;
    let with_threshold = |c: &mut objmapper_server::ServerConfig| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_multipart_threshold(threshold as u64);
    };
    let mem = host_with(sw, &b, "host-mem", with_threshold);
    // No memory tier: every version is on disk only.
    let disk = host_with(sw, &b, "host-disk", |c| {
        with_threshold(c);
        c.store.mem_capacity_bytes = 0;
    });
    let bytes = |len: usize, seed: usize| -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7) % 251) as u8)
            .collect()
    };
    let sizes = [0usize, 1, 65536, threshold, threshold + 1];
    for (name, h) in [("mem", &mem), ("disk", &disk)] {
        for (i, &len) in sizes.iter().enumerate() {
            put(h, format!("{name}/{len}").as_bytes(), &bytes(len, i));
        }
        flush(h);
    }
    for h in [&mem, &disk] {
        let st = http::get(&admin(h), "/v1/stats").json();
        assert_eq!(st["remote"]["errors"], serde_json::json!({}), "{st}");
        let total: usize = sizes.iter().sum();
        assert_eq!(st["remote"]["bytes_up"], total as u64, "{st}");
    }
    let reader = host(sw, &b, "host-reader");
    for name in ["mem", "disk"] {
        for (i, &len) in sizes.iter().enumerate() {
            let key = format!("{name}/{len}");
            let got =
                get(&reader, key.as_bytes()).unwrap_or_else(|| panic!("{key} not read through"));
            assert!(got == bytes(len, i), "{key}: {} bytes back", got.len());
        }
    }
}

#[test]
fn a_version_larger_than_this_host_takes_is_not_downloaded() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "too-large");
    let a = host(sw, &b, "host-a");
    let body = vec![3u8; 64 << 10];
    put(&a, b"big", &body);
    put(&a, b"small", b"fits");
    flush(&a);
    // Host B takes objects of at most 16 KiB.
    let bh = host_with(sw, &b, "host-b", |c| c.store.max_object_size = 16 << 10);
    assert_eq!(
        get(&bh, b"big"),
        None,
        "NOT_FOUND: the cache goes to its origin"
    );
    assert_eq!(get(&bh, b"small").as_deref(), Some(&b"fits"[..]));
    let st = http::get(&admin(&bh), "/v1/stats").json();
    let r = &st["remote"];
    assert_eq!(r["errors"]["invalid"], 1, "{st}");
    assert_eq!(r["fills"], 1, "only the small one: {st}");
    assert_eq!(r["bytes_down"], 4, "none of the large one's bytes: {st}");
}

#[test]
fn misses_beyond_the_fetch_bound_are_answered_at_once_without_a_fetch() {
    // An endpoint that accepts connections (the kernel's backlog) and never answers:
    // every fetch waits for its timeout. No SeaweedFS needed.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = seaweed::config_at(&format!("http://{}", hole.local_addr().unwrap()), "host-a")
        .with_timeout(Duration::from_secs(5));
    let t = TestServer::start_with(move |c| {
        c.host_id = "host-a".into();
        c.remote = Some(RemoteSettings {
            client,
            queue_max_objects: 100,
            queue_max_bytes: 1 << 20,
            max_fetches: 2,
        });
    });
    let stats = || http::get(&admin(&t), "/v1/stats").json()["remote"].clone();
    std::thread::scope(|s| {
        // Two misses take both fetch slots, and wait.
        for k in [&b"a"[..], b"b"] {
            s.spawn(|| assert_eq!(get(&t, k), None));
        }
        eventually(Duration::from_secs(4), "two fetches running", || {
            stats()["fetches_running"] == 2
        });
        // A third key is answered NOT_FOUND without a fetch; the slots stay two.
        assert_eq!(get(&t, b"c"), None);
        let r = stats();
        assert_eq!(r["fetches_refused"], 1, "{r}");
        assert_eq!(r["fetches_running"], 2, "{r}");
        // A miss on a key being fetched joins that fetch: not refused.
        s.spawn(|| assert_eq!(get(&t, b"a"), None));
    });
    let r = stats();
    assert_eq!(r["fetches_refused"], 1, "{r}");
    let m = http::prometheus(&http::get(&admin(&t), "/metrics").text);
    assert_eq!(m["objmapper_remote_fetches_refused_total"], 1.0);
    eventually(Duration::from_secs(15), "the fetches end", || {
        stats()["fetches_running"] == 0
    });
    drop(hole);
}

/// The remote tier's state in `/v1/stats`.
fn remote_state(t: &TestServer) -> serde_json::Value {
    http::get(&admin(t), "/v1/stats").json()["remote"].clone()
}

/// A tier that refuses this host (a wrong key): the state says so, once, in the log,
/// `/v1/stats`, `/readyz?verbose` and the metrics, and nothing is given up meanwhile:
/// the upload and the delete made while refused wait, and once the host runs with the
/// right key they reach the tier, so another host reads the one and not the other.
#[test]
fn a_tier_that_refuses_the_host_keeps_its_work_until_the_key_is_fixed() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "refused");
    let mut a = host(sw, &b, "host-a");
    put(&a, b"doomed", b"deleted while refused");
    flush(&a);
    let data = a.data_dir();
    a.stop();
    let settings = |c: &mut objmapper_server::ServerConfig, wrong: bool| {
        let mut client = client_for(sw, &b, "host-a");
        if wrong {
            client = client.with_credentials(objmapper_remote::CredentialSource::Static(
                objmapper_remote::Credentials {
                    access_key_id: "objmapper-not-this-key".into(),
                    secret_access_key: objmapper_remote::Secret::new("wrong-secret"),
                    session_token: None,
                },
            ));
        }
        as_host(c, "host-a", client);
    };
    a.restart_with(|c| settings(c, true));
    put(&a, b"kept", b"until the key is fixed");
    assert!(Client::connect(a.socket())
        .unwrap()
        .delete(b"doomed", false)
        .unwrap());
    eventually(Duration::from_secs(10), "the refusal is seen", || {
        remote_state(&a)["state"] == "refused"
    });
    let st = remote_state(&a);
    assert_eq!(st["reachable"], true, "it answers, it refuses: {st}");
    assert!(
        st["last_error"].as_str().unwrap().contains("refused"),
        "{st}"
    );
    // Retried, not given up: after several backoffs both are still pending.
    std::thread::sleep(Duration::from_millis(1500));
    let st = remote_state(&a);
    let q = &st["queue"];
    assert_eq!(
        q["objects"].as_u64().unwrap() + q["running"].as_u64().unwrap(),
        1,
        "the upload waits: {st}"
    );
    assert_eq!(st["invalidations_pending"], 1, "the delete waits: {st}");
    assert_eq!(st["queue"]["dropped"], 0, "{st}");
    let ready = http::get(&admin(&a), "/readyz?verbose");
    assert_eq!(
        ready.status, 200,
        "a refusing remote tier does not make the host unready"
    );
    assert_eq!(ready.json()["details"]["remote"]["state"], "refused");
    let metrics = http::get(&admin(&a), "/metrics").text;
    assert!(
        metrics.contains("objmapper_remote_state{state=\"refused\"} 1"),
        "{metrics}"
    );
    // Local hits are served as usual meanwhile.
    assert_eq!(
        get(&a, b"kept").as_deref(),
        Some(&b"until the key is fixed"[..])
    );
    a.stop();
    a.restart_with(|c| settings(c, false));
    assert_eq!(a.data_dir(), data);
    flush(&a);
    assert_eq!(remote_state(&a)["state"], "ok");
    let bh = host(sw, &b, "host-b");
    assert_eq!(
        get(&bh, b"kept").as_deref(),
        Some(&b"until the key is fixed"[..])
    );
    assert_eq!(get(&bh, b"doomed"), None, "the delete reached the tier");
}

/// A bucket that does not exist: the host starts and serves, a cold miss answers
/// NOT_FOUND, and the state says `no_bucket` (with S3's reason) until the bucket is
/// created, after which the next poll finds the tier answering.
#[test]
fn a_missing_bucket_is_named_as_such_until_it_is_created() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let cfg = sw.config("no-bucket-yet", "setup");
    let a = host(sw, &cfg.bucket, "host-a");
    assert_eq!(get(&a, b"anything"), None);
    eventually(
        Duration::from_secs(10),
        "the missing bucket is seen",
        || remote_state(&a)["state"] == "no_bucket",
    );
    let st = remote_state(&a);
    assert!(
        st["last_error"].as_str().unwrap().contains("NoSuchBucket"),
        "{st}"
    );
    assert_eq!(
        st["errors"]["config"].as_u64().map(|n| n > 0),
        Some(true),
        "{st}"
    );
    let ready = http::get(&admin(&a), "/readyz?verbose");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["details"]["remote"]["state"], "no_bucket");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(sw, &cfg));
    eventually(
        Duration::from_secs(10),
        "the tier answers once the bucket exists",
        || remote_state(&a)["state"] == "ok",
    );
    assert_eq!(remote_state(&a)["last_error"], serde_json::Value::Null);
}

/// Each delete made here is sent once, however many upload tasks are awake: one
/// tombstone write and one event in the shared log per delete (every host reads every
/// event, so a duplicate costs the whole fleet).
#[test]
fn each_delete_reaches_the_event_log_once() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "once");
    let a = host_with(sw, &b, "host-a", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_upload_concurrency(8);
    });
    // Keep the upload tasks awake while the deletes arrive.
    let mut c = Client::connect(a.socket()).unwrap();
    for i in 0..40 {
        c.put(
            format!("k{i}").as_bytes(),
            &[7u8; 32 << 10],
            &PutOptions::default(),
        )
        .unwrap();
    }
    for i in 0..40 {
        assert!(c.delete(format!("k{i}").as_bytes(), false).unwrap());
    }
    flush(&a);
    let raw = sw.raw(&sw.config_for(&b, "x"));
    let events = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures_util::TryStreamExt;
        let prefix = object_store::path::Path::from("objm/test/events");
        raw.list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    assert_eq!(events.len(), 40, "one event per delete: {events:#?}");
}

/// A purge by prefix holds for every host, whenever it starts: one that joins after
/// the purge, and one restarted after later events moved its cursor past it, never read
/// a purged version through (purged versions stay in the bucket until replaced).
#[test]
fn a_purge_holds_for_hosts_that_start_after_it() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "purge-later");
    let a = host(sw, &b, "host-a");
    let mut bh = host(sw, &b, "host-b");
    put(&a, b"img/1", b"purged");
    put(&a, b"keep/1", b"kept");
    flush(&a);
    purge(&a, "img/");
    flush(&a);
    // B sees the purge, then later events move its cursor well past it.
    eventually(Duration::from_secs(10), "B reads the purge", || {
        http::get(&admin(&bh), "/v1/stats").json()["remote"]["received"]["purges"] == 1
    });
    put(&a, b"later/1", b"x");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(Client::connect(a.socket())
        .unwrap()
        .delete(b"later/1", false)
        .unwrap());
    flush(&a);
    eventually(Duration::from_secs(10), "B reads the later delete", || {
        http::get(&admin(&bh), "/v1/stats").json()["remote"]["received"]["deletes"] == 1
    });
    bh.stop();
    bh.restart_with(|c| {
        let client = client_for(sw, &b, "host-b").with_event_lookback(Duration::from_millis(100));
        as_host(c, "host-b", client);
    });
    assert_eq!(
        get(&bh, b"img/1"),
        None,
        "a restarted host forgot the purge"
    );
    let c = host(sw, &b, "host-c");
    assert_eq!(get(&c, b"img/1"), None, "a new host never saw the purge");
    assert_eq!(get(&c, b"keep/1").as_deref(), Some(&b"kept"[..]));
}

/// Two hosts write one key: whichever uploads first, both end up serving the later
/// write, not only a third host. The host whose upload loses drops its copy at once;
/// the host whose copy was replaced on the tier learns it from the event log.
#[test]
fn two_hosts_writing_one_key_both_serve_the_later_write() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "converge-local");
    // The older write uploads first: the later one replaces it on the tier, and the
    // older host hears of it within the poll interval.
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    put(&a, b"k1", b"older, on a");
    flush(&a);
    assert_eq!(get(&bh, b"k1").as_deref(), Some(&b"older, on a"[..]));
    std::thread::sleep(Duration::from_millis(5));
    put(&bh, b"k1", b"later, on b");
    flush(&bh);
    eventually(
        Duration::from_secs(10),
        "host a serves the later write",
        || get(&a, b"k1").as_deref() == Some(&b"later, on b"[..]),
    );
    // The older write uploads last (its tier was down meanwhile): its upload loses,
    // and its host serves the later write from then on.
    let mut gate = Gate::open(&sw.endpoint);
    let url = gate.url();
    let c = host_with(sw, &b, "host-c", |cfg| {
        let r = cfg.remote.as_mut().unwrap();
        r.client = r.client.clone().with_endpoint(url);
    });
    gate.down();
    put(&c, b"k2", b"older, on c");
    std::thread::sleep(Duration::from_millis(5));
    put(&bh, b"k2", b"later, on b");
    flush(&bh);
    gate.up();
    flush(&c);
    assert_eq!(get(&c, b"k2").as_deref(), Some(&b"later, on b"[..]));
    assert_eq!(get(&a, b"k2").as_deref(), Some(&b"later, on b"[..]));
}

/// Settings for a host of `bucket` whose invalidation log keeps events `retention`.
fn short_log(
    sw: &Seaweed,
    bucket: &str,
    id: &str,
    retention: Duration,
) -> impl Fn(&mut objmapper_server::ServerConfig) {
    let client = client_for(sw, bucket, id)
        .with_poll_interval(Duration::from_millis(300))
        .with_event_lookback(Duration::from_millis(100))
        .with_event_retention(retention);
    let id = id.to_string();
    move |c| as_host(c, &id, client.clone())
}

/// The remote object names under `dir` (`events`, ...) in the bucket.
fn remote_names(sw: &Seaweed, bucket: &str, dir: &str) -> Vec<String> {
    let raw = sw.raw(&sw.config_for(bucket, "x"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures_util::TryStreamExt;
        let prefix = object_store::path::Path::from(format!("objm/test/{dir}"));
        raw.list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
}

/// The invalidation log is pruned past `event_retention`, and nothing it said is lost
/// for it: a purge still holds for a host that starts afterwards (the purge set), and
/// a host that was stopped for longer than the log is kept drops, at its next start,
/// the local copies that a pruned delete or overwrite covered, so it serves neither
/// the deleted object nor the replaced version.
#[test]
fn the_event_log_is_pruned_and_a_host_away_longer_serves_nothing_stale() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "pruned");
    let retention = Duration::from_secs(3);
    let a = TestServer::start_with(short_log(sw, &b, "host-a", retention));
    let mut bh = TestServer::start_with(short_log(sw, &b, "host-b", retention));
    put(&a, b"img/1", b"purged");
    put(&a, b"doomed", b"deleted while b is away");
    put(&a, b"changed", b"first version");
    flush(&a);
    for (k, v) in [
        (&b"doomed"[..], &b"deleted while b is away"[..]),
        (b"changed", b"first version"),
    ] {
        assert_eq!(get(&bh, k).as_deref(), Some(v));
    }
    bh.stop();
    purge(&a, "img/");
    assert!(Client::connect(a.socket())
        .unwrap()
        .delete(b"doomed", false)
        .unwrap());
    put(&a, b"changed", b"second version");
    flush(&a);
    assert!(!remote_names(sw, &b, "events").is_empty());
    eventually(Duration::from_secs(15), "the log is pruned", || {
        remote_names(sw, &b, "events").is_empty()
    });
    // B comes back after the events it missed are gone.
    bh.restart_with(short_log(sw, &b, "host-b", retention));
    assert_eq!(get(&bh, b"doomed"), None, "a deleted object came back");
    assert_eq!(
        get(&bh, b"changed").as_deref(),
        Some(&b"second version"[..]),
        "a replaced version was served"
    );
    let c = TestServer::start_with(short_log(sw, &b, "host-c", retention));
    assert_eq!(get(&c, b"img/1"), None, "a purged object came back");
}

/// Hosts given different retentions: one that keeps the log longer than another
/// prunes it learns, from the mark pruning leaves, that events it never read are gone,
/// and drops what they may have covered. (It used to judge by its own retention only,
/// and served the deleted object and the replaced version for good.)
#[test]
fn a_host_with_a_longer_retention_than_the_pruning_host_serves_nothing_stale() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "mismatched");
    let a = TestServer::start_with(short_log(sw, &b, "host-a", Duration::from_secs(2)));
    let long = short_log(sw, &b, "host-b", Duration::from_secs(7 * 24 * 3600));
    let mut bh = TestServer::start_with(&long);
    put(&a, b"doomed", b"deleted while b is away");
    put(&a, b"changed", b"first version");
    put(&a, b"kept", b"never touched");
    flush(&a);
    for k in [&b"doomed"[..], b"changed", b"kept"] {
        assert!(get(&bh, k).is_some());
    }
    bh.stop();
    assert!(Client::connect(a.socket())
        .unwrap()
        .delete(b"doomed", false)
        .unwrap());
    put(&a, b"changed", b"second version");
    flush(&a);
    assert!(!remote_names(sw, &b, "events").is_empty());
    eventually(Duration::from_secs(15), "the log is pruned", || {
        remote_names(sw, &b, "events").is_empty()
    });
    bh.restart_with(&long);
    // The first poll finds the mark.
    eventually(Duration::from_secs(10), "the stale copies go", || {
        get(&bh, b"doomed").is_none()
    });
    assert_eq!(
        get(&bh, b"changed").as_deref(),
        Some(&b"second version"[..]),
        "a replaced version was served"
    );
    assert_eq!(get(&bh, b"kept").as_deref(), Some(&b"never touched"[..]));
}

/// A retention shorter than hosts need to read the log is refused at start.
#[test]
fn an_event_retention_too_short_to_read_the_log_is_refused() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "retention");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = util::config(dir.path().join("s.sock"), dir.path().join("data"));
    short_log(sw, &b, "host-a", Duration::from_millis(500))(&mut cfg);
    let e = objmapper_server::Server::start(cfg).err().expect("refused");
    assert!(e.to_string().contains("event_retention"), "{e}");
}

/// A burst of purges reaches the tier whole: every prefix in the purge set (a host
/// started afterwards knows them all) and one event each in the log.
#[test]
fn a_burst_of_purges_reaches_the_tier_whole() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "purge-burst");
    let a = host_with(sw, &b, "host-a", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_upload_concurrency(8);
    });
    put(&a, b"p7/k", b"covered");
    flush(&a);
    for i in 0..60 {
        purge(&a, &format!("p{i}/"));
    }
    flush(&a);
    assert_eq!(remote_names(sw, &b, "events").len(), 60);
    let c = host(sw, &b, "host-c");
    assert_eq!(get(&c, b"p7/k"), None);
    assert_eq!(remote_state(&c)["purges_known"], 60);
}

/// With the default poll interval, a purge made on one host is applied on another
/// within 5 s of reaching the tier (the issue's bound for cluster-wide invalidation):
/// polls start every 4 s, whatever each took.
#[test]
fn with_the_default_poll_interval_a_purge_reaches_another_host_within_5_s() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "five-seconds");
    let default_poll = |sw: &Seaweed, id: &str| {
        let client = sw.config_for(&b, id).with_timeout(Duration::from_secs(2));
        assert_eq!(client.poll_interval, Duration::from_secs(4));
        let id = id.to_string();
        TestServer::start_with(move |c| as_host(c, &id, client))
    };
    let a = default_poll(sw, "host-a");
    let bh = default_poll(sw, "host-b");
    put(&a, b"news/1", b"old story");
    flush(&a);
    assert_eq!(get(&bh, b"news/1").as_deref(), Some(&b"old story"[..]));
    purge(&a, "news/");
    flush(&a);
    let took = eventually(Duration::from_secs(5), "the purge reaches B", || {
        get(&bh, b"news/1").is_none()
    });
    eprintln!("the purge reached host B {took:?} after it reached the tier");
}

/// A purge from another host still drops the local copies when this host's ban list is
/// full: it is then applied key by key instead of as a ban.
#[test]
fn purges_from_other_hosts_apply_when_the_ban_list_is_full() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "bans-full");
    let a = host(sw, &b, "host-a");
    let bh = host_with(sw, &b, "host-b", |c| c.store.max_bans = 2);
    for i in 0..5 {
        put(&a, format!("s{i}/k").as_bytes(), b"before the purge");
    }
    flush(&a);
    for i in 0..5 {
        assert!(get(&bh, format!("s{i}/k").as_bytes()).is_some());
    }
    for i in 0..5 {
        purge(&a, &format!("s{i}/"));
    }
    flush(&a);
    eventually(Duration::from_secs(10), "every purge reaches B", || {
        (0..5).all(|i| get(&bh, format!("s{i}/k").as_bytes()).is_none())
    });
}

/// The sweep, on two daemons: a data object no pointer names (here one left by a host
/// that crashed between its multipart upload and its pointer) is deleted by one host
/// once it is older than the grace, and a version that expired is replaced by a
/// tombstone; the data object of a live multipart version stays and reads whole.
#[test]
fn one_host_sweeps_orphaned_data_and_expired_versions_out_of_the_bucket() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "swept");
    let orphan = format!(
        "objm/test/{}",
        objmapper_remote::format::data_name(
            b"crashed",
            &objmapper_remote::Stamp {
                time_ns: 1_000,
                host: objmapper_remote::HostId::new("host-z").unwrap(),
            }
        )
    );
    let raw = sw.raw(&sw.config_for(&b, "x"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::put_raw(&raw, &orphan, vec![9u8; 4096]));
    // Sweeps every 0.5 s (a quarter of the retention), a grace of 2 x 3 s + 0.1 s.
    let start = |id: &str| {
        let client = client_for(sw, &b, id)
            .with_poll_interval(Duration::from_millis(300))
            .with_event_lookback(Duration::from_millis(100))
            .with_event_retention(Duration::from_secs(2))
            .with_transfer_timeout(Duration::from_secs(3))
            .with_retire_slack(Duration::ZERO)
            .with_multipart_threshold(5 << 20)
            .with_part_size(5 << 20);
        let id = id.to_string();
        TestServer::start_with(move |c| as_host(c, &id, client))
    };
    let (a, bh) = (start("host-a"), start("host-b"));
    purge(&a, "tmp/");
    let big: Vec<u8> = (0..6u32 << 20).map(|i| (i % 253) as u8).collect();
    put(&a, b"video/1", &big);
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    Client::connect(a.socket())
        .unwrap()
        .put(
            b"short-lived",
            b"expires in two seconds",
            &PutOptions {
                expires_at: Some(soon),
                ..PutOptions::default()
            },
        )
        .unwrap();
    flush(&a);
    let short = rt.block_on(async {
        objmapper_remote::Remote::new(client_for(sw, &b, "x"))
            .unwrap()
            .name_of(b"short-lived")
    });
    let version_len = rt.block_on(seaweed::raw_bytes(&raw, &short)).len();
    let live = remote_names(sw, &b, "d/");
    assert_eq!(
        live.len(),
        2,
        "the orphan and the live version's data: {live:?}"
    );
    eventually(Duration::from_secs(60), "the orphan is swept", || {
        remote_names(sw, &b, "d/") == [live.iter().find(|n| **n != orphan).unwrap().clone()]
    });
    eventually(
        Duration::from_secs(30),
        "the expired version is reclaimed",
        || rt.block_on(seaweed::raw_bytes(&raw, &short)).len() < version_len,
    );
    let swept: Vec<serde_json::Value> = [&a, &bh]
        .iter()
        .map(|t| remote_state(t)["swept"].clone())
        .collect();
    let sum = |f: &str| swept.iter().map(|s| s[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (
            sum("orphans"),
            sum("orphan_bytes"),
            sum("reclaimed"),
            sum("reclaimed_bytes")
        ),
        (1, 4096, 1, 22),
        "one orphan and one expired version, swept once: {swept:?}"
    );
    let sweeper = if swept[0]["orphans"] == 1 { &a } else { &bh };
    let metrics = call(&admin(sweeper), "GET", "/metrics", None).text;
    assert!(
        metrics.contains("objmapper_remote_swept_orphans_total 1\n"),
        "{metrics}"
    );
    assert!(
        get(&bh, b"video/1") == Some(big),
        "the live version reads whole"
    );
    assert_eq!(get(&bh, b"short-lived"), None);
    // The purge made at the start leaves the purge set once a pass begun a horizon
    // (2 s + 2 x 3 s + 0.1 s) after it was first seen has read every name.
    eventually(Duration::from_secs(40), "the purge is retired", || {
        [&a, &bh]
            .iter()
            .map(|t| remote_state(t)["swept"]["purges_retired"].as_u64().unwrap())
            .sum::<u64>()
            == 1
    });
    let fresh = objmapper_remote::Remote::new(client_for(sw, &b, "x")).unwrap();
    rt.block_on(fresh.know_purges()).unwrap();
    assert_eq!(
        fresh.stats().purges_known,
        0,
        "the purge set is empty again"
    );
}

/// Credentials from a file are read again when the file changes: a host started with
/// a wrong key is refused, keeps its upload and its delete, and once the file is
/// rewritten with the right key (renamed over it, as an agent rotating keys does) both
/// reach the tier, with no restart. A rewrite others could read is refused and the key
/// in use kept.
#[test]
fn a_rotated_credentials_file_takes_effect_without_a_restart() {
    if seaweed::skip() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sw = Seaweed::shared();
    let b = bucket(sw, "rotated");
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("credentials");
    let write = |secret: &str, mode: u32| {
        let tmp = keys.path().join("credentials.new");
        std::fs::write(
            &tmp,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                sw.access_key
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let mut a = host(sw, &b, "host-a");
    put(&a, b"doomed", b"deleted while refused");
    flush(&a);
    a.stop();
    write("not-the-secret", 0o600);
    a.restart_with(|c| {
        let client = client_for(sw, &b, "host-a")
            .with_credentials(objmapper_remote::CredentialSource::File(file.clone()));
        as_host(c, "host-a", client);
    });
    put(&a, b"kept", b"until the key is rotated");
    assert!(Client::connect(a.socket())
        .unwrap()
        .delete(b"doomed", false)
        .unwrap());
    eventually(Duration::from_secs(10), "the refusal is seen", || {
        remote_state(&a)["state"] == "refused"
    });
    // A rotation to a file others can read is refused: still the wrong key.
    write(&sw.secret_key, 0o644);
    std::thread::sleep(Duration::from_millis(2500));
    let st = remote_state(&a);
    assert_eq!(st["state"], "refused", "{st}");
    assert_eq!(st["invalidations_pending"], 1, "{st}");
    // The right key, mode 600: taken at the next look, and what waited goes up.
    write(&sw.secret_key, 0o600);
    eventually(Duration::from_secs(20), "the tier answers again", || {
        remote_state(&a)["state"] == "ok"
    });
    flush(&a);
    let bh = host(sw, &b, "host-b");
    assert_eq!(
        get(&bh, b"kept").as_deref(),
        Some(&b"until the key is rotated"[..])
    );
    assert_eq!(get(&bh, b"doomed"), None, "the delete reached the tier");
}

/// A host's client of a fake S3 endpoint (no SeaweedFS: the fake plays a gateway that
/// passes over conditional headers).
fn fake_client(fake: &objmapper_testkit::fake_s3::FakeS3, id: &str) -> objmapper_remote::Config {
    seaweed::config_at(&fake.endpoint, id)
        .with_timeout(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(500))
}

/// A store that passes over `If-None-Match` would let an older upload replace a newer
/// version or a tombstone on another host's say-so. A host checks at start: on such a
/// store it reads nothing through (a cold miss is NOT_FOUND, without a request for the
/// name), uploads nothing (the PUT waits in the queue), says `unguarded` in its state,
/// log and metrics, and once the store honours the headers it uses it, no restart.
#[test]
fn a_store_that_ignores_conditional_writes_is_neither_read_nor_written() {
    use objmapper_testkit::fake_s3::{Conditions, FakeS3, Honour};
    let fake = FakeS3::start(Conditions::default());
    // A version another host left in the store, while it honoured the headers.
    let old = b"a version written while the store was sound".to_vec();
    {
        let client = fake_client(&fake, "host-a");
        let a = TestServer::start_with(move |c| as_host(c, "host-a", client));
        put(&a, b"old", &old);
        flush(&a);
    }
    let name = |key: &[u8]| {
        let r = objmapper_remote::Remote::new(fake_client(&fake, "x")).unwrap();
        format!("/fake/{}", r.name_of(key))
    };
    let (old_name, new_name) = (name(b"old"), name(b"new"));
    assert!(fake
        .requests()
        .iter()
        .any(|r| r == &format!("PUT {old_name}")));

    fake.set_conditions(Conditions {
        if_none_match: Honour::Ignore,
        ..Conditions::default()
    });
    let client = fake_client(&fake, "host-b");
    let b = TestServer::start_with(move |c| as_host(c, "host-b", client));
    eventually(Duration::from_secs(10), "state unguarded", || {
        remote_state(&b)["state"] == "unguarded"
    });
    let st = remote_state(&b);
    let err = st["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains("If-None-Match: * over the same name was accepted"),
        "{st}"
    );
    let seen = fake.requests().len();
    let started = Instant::now();
    assert_eq!(get(&b, b"old"), None, "nothing is read through");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    put(&b, b"new", b"written while the store is unguarded");
    std::thread::sleep(Duration::from_millis(700));
    let after: Vec<String> = fake.requests()[seen..].to_vec();
    assert!(
        !after
            .iter()
            .any(|r| r.contains(&old_name) || r.contains(&new_name)),
        "neither name was asked for or written: {after:#?}"
    );
    let st = remote_state(&b);
    assert_eq!(st["queue"]["objects"], 1, "the upload waits: {st}");
    let ready = http::get(&admin(&b), "/readyz?verbose");
    assert_eq!(
        ready.status, 200,
        "local hits are served: the host is ready"
    );
    assert_eq!(ready.json()["details"]["remote"]["state"], "unguarded");
    let text = http::get(&admin(&b), "/metrics").text;
    let m = http::prometheus(&text);
    let line: Vec<&str> = text.lines().filter(|l| l.contains("unguarded")).collect();
    assert_eq!(
        m.get(r#"objmapper_remote_state{state="unguarded"}"#),
        Some(&1.0),
        "{line:?}"
    );
    assert!(
        m.get(r#"objmapper_remote_errors_total{kind="unguarded"}"#) >= Some(&1.0),
        "{line:?}"
    );
    let f = call(
        &admin(&b),
        "POST",
        "/v1/remote/flush",
        Some(r#"{"timeout_seconds":0.2}"#),
    );
    assert_eq!(f.json()["drained"], false, "{:?}", f.json());
    assert_eq!(f.json()["state"], "unguarded", "{:?}", f.json());
    let s = call(&admin(&b), "POST", "/v1/remote/sweep", None);
    assert_eq!(s.status, 502, "{:?}", s.json());

    // Fixed (or replaced by one that honours them): checked again, used, no restart.
    fake.set_conditions(Conditions::default());
    eventually(Duration::from_secs(20), "the store used again", || {
        let st = remote_state(&b);
        st["state"] == "ok" && st["queue"]["objects"] == 0 && st["queue"]["running"] == 0
    });
    assert!(fake
        .requests()
        .iter()
        .any(|r| r == &format!("PUT {new_name}")));
    assert_eq!(get(&b, b"old"), Some(old), "read through again");
}

/// A delete, a purge and an overwrite made on a host cut off from the tier reach the
/// other hosts when they get through, however late: even a host that has read newer
/// events from a third host meanwhile (its place in the log is past the cut-off
/// host's stamps) drops its copies.
#[test]
fn invalidations_sent_late_reach_hosts_that_read_newer_events_meanwhile() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "late-events");
    let lookback = Duration::from_millis(300);
    let mut gate = Gate::open(&sw.endpoint);
    let url = gate.url();
    let a = host_with(sw, &b, "host-a", |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r
            .client
            .clone()
            .with_endpoint(url)
            .with_event_lookback(lookback);
    });
    let short = |c: &mut objmapper_server::ServerConfig| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_event_lookback(lookback);
    };
    let bh = host_with(sw, &b, "host-b", short);
    let ch = host_with(sw, &b, "host-c", short);
    for k in [&b"doomed"[..], b"dir/x", b"page", b"other"] {
        put(&ch, k, b"version 1");
    }
    flush(&ch);
    for k in [&b"doomed"[..], b"dir/x", b"page", b"other"] {
        assert_eq!(
            get(&bh, k).as_deref(),
            Some(&b"version 1"[..]),
            "B holds a copy"
        );
    }
    // A cut off: a delete, a purge and a newer version wait there.
    gate.down();
    eventually(Duration::from_secs(10), "A sees the tier down", || {
        remote_state(&a)["reachable"] == false
    });
    Client::connect(a.socket())
        .unwrap()
        .delete(b"doomed", false)
        .unwrap();
    purge(&a, "dir/");
    put(&a, b"page", b"version 2");
    // Meanwhile B reads a newer event, from C, well past the lookback.
    std::thread::sleep(lookback * 3);
    assert!(Client::connect(ch.socket())
        .unwrap()
        .delete(b"other", false)
        .unwrap());
    flush(&ch);
    eventually(Duration::from_secs(10), "C's delete reaches B", || {
        get(&bh, b"other").is_none()
    });
    // A gets through: B drops each copy, and reads the newer page through.
    gate.up();
    flush(&a);
    let took = eventually(
        Duration::from_secs(10),
        "A's late invalidations reach B",
        || {
            get(&bh, b"doomed").is_none()
                && get(&bh, b"dir/x").is_none()
                && get(&bh, b"page").as_deref() == Some(&b"version 2"[..])
        },
    );
    eprintln!("late invalidations reached host B after {took:?}");
}

/// Two hosts given one host id (a cloned image's host name, say) still apply each
/// other's deletes and purges: a host cannot tell its own events from theirs by the id
/// in the stamp, so it knows its own by their names, and says when another process
/// writes with its id (`received.same_host_id`, and a `WARN`).
#[test]
fn two_hosts_given_one_host_id_still_apply_each_others_deletes_and_purges() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "same-id");
    let a = host(sw, &b, "cache");
    let bh = host(sw, &b, "cache");
    for k in [&b"img/1"[..], b"doc/1"] {
        put(&a, k, b"from a");
    }
    flush(&a);
    for k in [&b"img/1"[..], b"doc/1"] {
        assert_eq!(get(&bh, k).as_deref(), Some(&b"from a"[..]));
    }
    Client::connect(a.socket())
        .unwrap()
        .delete(b"doc/1", false)
        .unwrap();
    purge(&a, "img/");
    flush(&a);
    eventually(Duration::from_secs(10), "delete and purge reach B", || {
        get(&bh, b"doc/1").is_none() && get(&bh, b"img/1").is_none()
    });
    let same = |t: &TestServer| {
        http::get(&admin(t), "/v1/stats").json()["remote"]["received"]["same_host_id"]
            .as_u64()
            .expect("a count")
    };
    assert!(same(&bh) >= 2, "B counted {} events of its id", same(&bh));
    // A's own events are known by their names: never counted as another's.
    assert_eq!(same(&a), 0);
    let m = http::prometheus(&http::get(&admin(&bh), "/metrics").text);
    assert!(m["objmapper_remote_events_same_host_id_total"] >= 2.0);
}

/// What a host read through is another host's version, not a write made here: it is
/// never uploaded, not even after a restart, when the uploads the last run left are
/// found again in the store. (They were: the restarted host sent every object it had
/// read through again under its own id, which, sorting after the writer's, replaced
/// the writer's stamp on the tier and appended an event for each.)
#[test]
fn objects_read_through_are_not_uploaded_again_after_a_restart() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "no-reupload");
    let a = host(sw, &b, "host-a");
    let mut w = host(sw, &b, "host-w");
    for i in 0..3 {
        put(&a, format!("page/{i}").as_bytes(), b"written on a");
    }
    flush(&a);
    for i in 0..3 {
        assert_eq!(
            get(&w, format!("page/{i}").as_bytes()).as_deref(),
            Some(&b"written on a"[..])
        );
    }
    w.stop();
    w.restart_with(|c| as_host(c, "host-w", client_for(sw, &b, "host-w")));
    flush(&w);
    let st = http::get(&admin(&w), "/v1/stats").json();
    assert_eq!(st["remote"]["bytes_up"], 0, "{}", st["remote"]);
    assert_eq!(remote_names(sw, &b, "events"), Vec::<String>::new());
    // Still served here, from the local copies.
    assert_eq!(st["remote"]["fills"], 0, "{}", st["remote"]);
    assert_eq!(get(&w, b"page/0").as_deref(), Some(&b"written on a"[..]));
    let st = http::get(&admin(&w), "/v1/stats").json();
    assert_eq!(st["remote"]["fills"], 0, "a local hit, no read-through");
}

/// A ban on metadata (the VMOD's `ban_url`, `ban_tag`) stays this host's. Once the
/// lurker retires it, it still keeps what it covered from being read through here,
/// and only that: other objects older than it still come from the tier (a retired ban
/// used to refuse every older version).
#[test]
fn a_retired_metadata_ban_refuses_only_the_read_throughs_it_covers() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "kept-bans");
    let a = host(sw, &b, "host-a");
    let bh = host(sw, &b, "host-b");
    let tagged = |tag: &str| PutOptions {
        custom: vec![("tag".into(), tag.as_bytes().to_vec())],
        ..PutOptions::default()
    };
    let mut ca = Client::connect(a.socket()).unwrap();
    ca.put(b"seen", b"banned here", &tagged("t1")).unwrap();
    ca.put(b"unseen", b"banned here too", &tagged("t1"))
        .unwrap();
    ca.put(b"other", b"not banned", &tagged("t2")).unwrap();
    flush(&a);
    assert_eq!(get(&bh, b"seen").as_deref(), Some(&b"banned here"[..]));
    let body = serde_json::json!({"expr": "meta.tag == \"t1\""}).to_string();
    let r = call(&admin(&bh), "POST", "/v1/bans", Some(&body));
    assert_eq!(r.status, 201, "{:?}", r.json());
    eventually(
        Duration::from_secs(10),
        "the lurker retires the ban",
        || http::get(&admin(&bh), "/v1/bans").json()["count"] == 0,
    );
    let st = http::get(&admin(&bh), "/v1/stats").json();
    assert_eq!(st["bans"]["kept_for_fills"], 1, "{}", st["bans"]);
    assert_eq!(get(&bh, b"seen"), None);
    assert_eq!(get(&bh, b"unseen"), None);
    assert_eq!(get(&bh, b"other").as_deref(), Some(&b"not banned"[..]));
    // The other host never had the ban.
    assert_eq!(get(&a, b"unseen").as_deref(), Some(&b"banned here too"[..]));
}

/// A host that restarts without its place in the event log (its journal `REMOTE` lost,
/// emptied or damaged) cannot tell which deletes it missed meanwhile: it drops its
/// read-through copies and uploads again what it wrote, which the tier refuses for
/// what was deleted there. (It used to read the log from its start on, and serve a
/// key deleted elsewhere while it was down, for good.)
#[test]
fn a_host_that_lost_its_place_in_the_event_log_serves_nothing_deleted_meanwhile() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "lost-place");
    let a = host(sw, &b, "host-a");
    let short = |c: &mut objmapper_server::ServerConfig| {
        let client = client_for(sw, &b, "host-b").with_event_lookback(Duration::from_millis(100));
        as_host(c, "host-b", client);
    };
    let mut bh = TestServer::start_with(short);
    put(&a, b"read-through", b"v1 from a");
    put(&bh, b"written-on-b", b"v1 from b");
    put(&bh, b"kept", b"still current");
    flush(&a);
    flush(&bh);
    assert_eq!(
        get(&bh, b"read-through").as_deref(),
        Some(&b"v1 from a"[..])
    );
    for damage in ["removed", "emptied", "flipped"] {
        bh.stop();
        let journal = bh.data_dir().join("REMOTE");
        match damage {
            "removed" => std::fs::remove_file(&journal).unwrap(),
            "emptied" => std::fs::write(&journal, b"").unwrap(),
            _ => {
                let text = std::fs::read_to_string(&journal).unwrap();
                let e = text.find("\nE ").expect("an E line") + 3;
                let mut bytes = text.into_bytes();
                bytes[e] = if bytes[e] == b'9' { b'8' } else { b'9' };
                std::fs::write(&journal, bytes).unwrap();
            }
        }
        // Deleted on A while B is down, longer ago than B's lookback.
        let mut ca = Client::connect(a.socket()).unwrap();
        ca.delete(b"read-through", false).unwrap();
        ca.delete(b"written-on-b", false).unwrap();
        flush(&a);
        std::thread::sleep(Duration::from_millis(300));
        bh.restart_with(short);
        flush(&bh);
        assert_eq!(get(&bh, b"read-through"), None, "{damage}");
        assert_eq!(get(&bh, b"written-on-b"), None, "{damage}");
        assert_eq!(
            get(&bh, b"kept").as_deref(),
            Some(&b"still current"[..]),
            "{damage}"
        );
        // Written again for the next round.
        put(&a, b"read-through", b"v1 from a");
        put(&bh, b"written-on-b", b"v1 from b");
        flush(&a);
        flush(&bh);
        assert_eq!(
            get(&bh, b"read-through").as_deref(),
            Some(&b"v1 from a"[..])
        );
    }
}

/// The journal says which bucket and prefix it is about. A host moved to another one
/// and back has no place in the first one's log: it reads nothing deleted meanwhile
/// back, and what it wrote reaches the bucket it is moved to (it stayed "uploaded"
/// there without ever being sent).
#[test]
fn a_host_moved_to_another_prefix_and_back_neither_serves_stale_copies_nor_skips_uploads() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "moved");
    let a = host(sw, &b, "host-a");
    let on = |prefix: &'static str| {
        let mut client =
            client_for(sw, &b, "host-e").with_event_lookback(Duration::from_millis(100));
        client.prefix = prefix.into();
        move |c: &mut objmapper_server::ServerConfig| as_host(c, "host-e", client)
    };
    let mut e = TestServer::start_with(on("objm/test"));
    put(&a, b"shared", b"v1 from a");
    put(&e, b"mine", b"written on e");
    flush(&a);
    flush(&e);
    assert_eq!(get(&e, b"shared").as_deref(), Some(&b"v1 from a"[..]));
    e.stop();
    e.restart_with(on("objm/elsewhere"));
    flush(&e);
    let st = http::get(&admin(&e), "/v1/stats").json();
    assert!(
        st["remote"]["bytes_up"].as_u64().unwrap() > 0,
        "{}",
        st["remote"]
    );
    Client::connect(a.socket())
        .unwrap()
        .delete(b"shared", false)
        .unwrap();
    flush(&a);
    std::thread::sleep(Duration::from_millis(300));
    // Long enough on the other prefix for its place there to pass the delete.
    std::thread::sleep(Duration::from_millis(1200));
    e.stop();
    e.restart_with(on("objm/test"));
    flush(&e);
    assert_eq!(get(&e, b"shared"), None);
    assert_eq!(get(&e, b"mine").as_deref(), Some(&b"written on e"[..]));
    // What e wrote is on both prefixes: a host of the other one reads it.
    let f = host_with(sw, &b, "host-f", |c| {
        c.remote.as_mut().unwrap().client.prefix = "objm/elsewhere".into();
    });
    assert_eq!(get(&f, b"mine").as_deref(), Some(&b"written on e"[..]));
}

/// A data directory that was a host of a remote tier does not start without one: the
/// deletes made meanwhile would never reach the tier, and its older versions would be
/// read back once it was on again. Removing the journal leaves the tier for good.
#[test]
fn a_host_of_a_remote_tier_does_not_start_without_it() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "detached");
    let mut a = host(sw, &b, "host-a");
    put(&a, b"k", b"v1");
    flush(&a);
    a.stop();
    let cfg = util::config(a.socket(), a.data_dir());
    let err = match objmapper_server::Server::start(cfg) {
        Err(e) => e,
        Ok(_) => panic!("started without its remote tier"),
    };
    assert!(
        matches!(err, objmapper_server::ServerError::Config(_)),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("s3://{b}/")), "{msg}");
    assert!(msg.contains("--remote") && msg.contains("REMOTE"), "{msg}");
    std::fs::remove_file(a.data_dir().join("REMOTE")).unwrap();
    a.restart_with(|_| {});
    assert_eq!(get(&a, b"k").as_deref(), Some(&b"v1"[..]));
}

/// Host `id` of `bucket` that remembers misses (and refused fills) for a minute, with
/// `f` changing its configuration.
fn remembering_host(
    sw: &Seaweed,
    bucket: &str,
    id: &str,
    f: impl FnOnce(&mut objmapper_server::ServerConfig),
) -> TestServer {
    host_with(sw, bucket, id, |c| {
        let r = c.remote.as_mut().unwrap();
        r.client = r.client.clone().with_miss_ttl(Duration::from_secs(60));
        f(c);
    })
}

/// A version a local ban on host B covers is refused from its header: not a byte of it
/// is downloaded, whether B remembers misses or not (it was downloaded in full by every
/// GET, and thrown away, with a remote hit counted and nothing said above DEBUG). The
/// refusal is counted (`fills_refused`, its metric) and remembered like a miss.
#[test]
fn a_version_a_ban_here_covers_is_refused_from_its_header_and_never_downloaded() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "refused-by-ban");
    let a = host(sw, &b, "host-a");
    let tagged = PutOptions {
        custom: vec![("tag".into(), b"t1".to_vec())],
        ..PutOptions::default()
    };
    let body = vec![9u8; 20 << 20];
    Client::connect(a.socket())
        .unwrap()
        .put(b"banned", &body, &tagged)
        .unwrap();
    flush(&a);
    let remembering = remembering_host(sw, &b, "host-b", |_| {});
    let asking = host(sw, &b, "host-c");
    let ban = serde_json::json!({"expr": "meta.tag == \"t1\""}).to_string();
    for h in [&remembering, &asking] {
        let r = call(&admin(h), "POST", "/v1/bans", Some(&ban));
        assert_eq!(r.status, 201, "{:?}", r.json());
        for _ in 0..5 {
            assert_eq!(get(h, b"banned"), None);
        }
    }
    let r = remote_state(&remembering);
    assert_eq!(r["bytes_down"], 0, "{r}");
    assert_eq!(r["fills_refused"], 1, "{r}");
    assert_eq!(
        r["misses_remembered"], 4,
        "the other GETs asked nothing: {r}"
    );
    assert_eq!((&r["hits"], &r["fills"]), (&0.into(), &0.into()), "{r}");
    let m = http::prometheus(&http::get(&admin(&remembering), "/metrics").text);
    assert_eq!(m["objmapper_remote_fills_refused_total"], 1.0);
    // Without the memory each GET reads the header again, and only that.
    let r = remote_state(&asking);
    assert_eq!(r["bytes_down"], 0, "{r}");
    assert_eq!(r["fills_refused"], 5, "{r}");
    assert_eq!(r["hits"], 0, "{r}");
}

/// A version larger than host B's disk tier (its `disk_capacity_bytes`), and too large
/// for its memory tier, could never be kept there: it is refused from its header, not
/// downloaded by every GET, and neither counts as a PUT refused for want of room nor
/// makes B unready.
#[test]
fn a_version_larger_than_the_disk_tier_is_refused_without_being_downloaded() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "refused-too-big");
    let a = host(sw, &b, "host-a");
    put(&a, b"big", &vec![4u8; 20 << 20]);
    put(&a, b"small", b"fits");
    flush(&a);
    let bh = host_with(sw, &b, "host-b", |c| c.store.disk_capacity_bytes = 8 << 20);
    for _ in 0..3 {
        assert_eq!(get(&bh, b"big"), None);
    }
    assert_eq!(get(&bh, b"small").as_deref(), Some(&b"fits"[..]));
    let st = http::get(&admin(&bh), "/v1/stats").json();
    let r = &st["remote"];
    assert_eq!(r["bytes_down"], 4, "only the small one: {st}");
    assert_eq!(r["fills_refused"], 3, "{st}");
    assert_eq!(r["fills"], 1, "{st}");
    assert_eq!(st["no_space"], 0, "no PUT was refused: {st}");
    assert_eq!(http::get(&admin(&bh), "/readyz").status, 200);
}

/// Fails every write of an object file into the disk tier with ENOSPC while armed.
#[derive(Debug, Default)]
struct FullDisk(std::sync::atomic::AtomicBool);

impl objmapper_store::FaultInjector for FullDisk {
    fn check(&self, point: objmapper_store::FaultPoint) -> std::io::Result<()> {
        if point == objmapper_store::FaultPoint::ObjectWrite
            && self.0.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

/// A fill that finds the disk tier's filesystem full is refused once its bytes came
/// (nothing in its header says it will not fit): the host stays ready (it turned 503
/// `disk_full`, "PUTs are refused with NO_SPACE", while PUTs still succeeded, until
/// something was committed to disk), the refusal is counted, and it is remembered like
/// a miss, so the GETs after it download nothing.
#[test]
fn a_fill_that_finds_the_disk_full_leaves_the_host_ready_and_is_not_downloaded_again() {
    if seaweed::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let b = bucket(sw, "refused-fs-full");
    let a = host(sw, &b, "host-a");
    let size = 20u64 << 20;
    put(&a, b"big", &vec![5u8; size as usize]);
    flush(&a);
    let full = std::sync::Arc::new(FullDisk::default());
    let faults = full.clone();
    let bh = remembering_host(sw, &b, "host-b", move |c| c.store.faults = Some(faults));
    full.0.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(get(&bh, b"big"), None);
    }
    let ready = http::get(&admin(&bh), "/readyz");
    assert_eq!(ready.status, 200, "{:?}", ready.json());
    let st = http::get(&admin(&bh), "/v1/stats").json();
    let r = &st["remote"];
    assert_eq!(r["bytes_down"], size, "downloaded once: {st}");
    assert_eq!(r["fills_refused"], 1, "{st}");
    assert_eq!(r["fills"], 0, "{st}");
    assert_eq!(st["no_space"], 0, "{st}");
    // PUTs go on (to the memory tier), as the readiness said.
    put(&bh, b"local", b"still taken");
    assert_eq!(get(&bh, b"local").as_deref(), Some(&b"still taken"[..]));
}
