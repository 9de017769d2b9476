//! The management API (docs/ADMIN.md) against an in-process server, over its real Unix
//! socket (and loopback TCP): every endpoint, and each error case with its status and code.

mod util;

use objmapper_client::{Client, PutOptions};
use objmapper_server::{RuntimeConfigPatch, ServerConfig, TierPatch};
use objmapper_store::{FaultInjector, FaultPoint};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use util::http::{self, call, get, Target};
use util::TestServer;

fn admin(t: &TestServer) -> Target {
    http::unix(
        t.server()
            .admin_socket_path()
            .expect("admin socket on by default"),
    )
}

fn put(t: &TestServer, key: &[u8], bytes: &[u8], opts: &PutOptions) {
    let mut c = Client::connect(t.socket()).unwrap();
    c.put(key, bytes, opts).unwrap();
}

/// `n` objects `{prefix}0`, `{prefix}1`…, each the byte `x`.
fn put_xs(t: &TestServer, prefix: &str, n: usize) {
    for i in 0..n {
        put(
            t,
            format!("{prefix}{i}").as_bytes(),
            b"x",
            &PutOptions::default(),
        );
    }
}

/// `r` is an error answer: `status`, `code`, and a message that contains `says`.
fn assert_error(r: &http::Answer, status: u16, code: &str, says: &str) {
    assert_eq!((r.status, r.code()), (status, code.into()));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains(says));
}

/// `POST /v1/migrate` with the JSON `body`.
fn migrate(a: &Target, body: &str) -> http::Answer {
    call(a, "POST", "/v1/migrate", Some(body))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn socket_is_the_0600_sibling_of_the_object_socket() {
    let t = TestServer::start();
    let p = t.server().admin_socket_path().unwrap().to_path_buf();
    assert_eq!(p, t.dir.path().join("objm.sock.admin"));
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let a = admin(&t);
    let r = get(&a, "/healthz");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = get(&a, "/readyz");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ready"})));
    drop(t); // shutdown removes the admin socket too
    assert!(!p.exists());
}

#[test]
fn admin_can_be_moved_disabled_or_put_on_loopback_tcp_only() {
    let t = TestServer::start_with(|c| c.admin_enabled = false);
    assert!(t.server().admin_socket_path().is_none());
    assert!(!t.dir.path().join("objm.sock.admin").exists());

    let t = TestServer::start_with(|c| {
        c.admin_socket = Some(c.socket_path.with_file_name("elsewhere.sock"));
        c.admin_tcp = Some("127.0.0.1:0".parse().unwrap());
    });
    assert_eq!(
        t.server().admin_socket_path().unwrap(),
        t.dir.path().join("elsewhere.sock")
    );
    let addr = t.server().admin_tcp_addr().unwrap();
    assert_eq!(get(&Target::Tcp(addr), "/healthz").status, 200);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = util::config(dir.path().join("s.sock"), dir.path().join("data"));
    cfg.admin_tcp = Some("0.0.0.0:0".parse().unwrap());
    let e = objmapper_server::Server::start(cfg).err().expect("refused");
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(!dir.path().join("s.sock").exists());
}

#[test]
fn every_method_an_endpoint_does_not_list_is_405_with_its_allow_even_head() {
    let t = TestServer::start();
    let a = admin(&t);
    for (method, path, allow) in [
        ("HEAD", "/healthz", "GET"),
        ("HEAD", "/metrics", "GET"),
        ("HEAD", "/v1/config", "GET, PATCH"),
        ("OPTIONS", "/v1/bans", "GET, POST"),
        ("GET", "/v1/purge", "POST"),
        ("PUT", "/v1/objects/k", "GET, DELETE"),
    ] {
        let r = call(&a, method, path, None);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
        if method != "HEAD" {
            assert_eq!(r.code(), "method_not_allowed", "{method} {path}");
        }
    }
    let r = call(&a, "HEAD", "/v2/nothing", None);
    assert_eq!(r.status, 404);
    // The empty key is a bad key, not an unknown route.
    let r = get(&a, "/v1/objects/");
    assert_eq!((r.status, r.code()), (400, "bad_key".into()));
}

#[test]
fn unknown_routes_methods_and_bodies_get_json_errors() {
    let t = TestServer::start();
    let a = admin(&t);
    let r = get(&a, "/v2/nothing");
    assert_eq!((r.status, r.code()), (404, "no_such_route".into()));
    let r = call(&a, "POST", "/v1/stats", None);
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".into()));
    assert_eq!(r.headers["allow"], "GET");
    let r = call(&a, "PUT", "/v1/config", Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, PATCH");
    let r = call(&a, "POST", "/v1/purge", Some("{not json"));
    assert_eq!((r.status, r.code()), (400, "bad_json".into()));
    let big = format!("{{\"key\":\"{}\"}}", "x".repeat(70 * 1024));
    let r = call(&a, "POST", "/v1/purge", Some(&big));
    assert_eq!((r.status, r.code()), (413, "body_too_large".into()));
    let r = call(&a, "POST", "/v1/purge", Some(r#"{"key":"a","prefix":"b"}"#));
    assert_eq!((r.status, r.code()), (400, "bad_request".into()));
    let r = get(&a, &format!("/v1/objects/{}", "k".repeat(4097)));
    assert_eq!((r.status, r.code()), (400, "bad_key".into()));
}

#[test]
fn listing_paginates_with_an_opaque_cursor_and_filters_by_prefix() {
    // A memory tier of 10 objects: most end up on disk only.
    let t = TestServer::start_with(|c| c.store.mem_max_objects = 10);
    let opts = PutOptions::default();
    for i in 0..25 {
        put(&t, format!("p/{i:02}").as_bytes(), b"12345", &opts);
    }
    for i in 0..5 {
        put(&t, format!("q/{i}").as_bytes(), b"x", &opts);
    }
    let a = admin(&t);
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = get(
            &a,
            &format!("/v1/objects?prefix=p%2F&limit=10&cursor={cursor}"),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        let objs = v["objects"].as_array().unwrap();
        assert!(objs.len() <= 10);
        for o in objs {
            let k = o["key"].as_str().unwrap().to_string();
            assert!(k.starts_with("p/"));
            assert_eq!(o["key_hex"], json!(hex(k.as_bytes())));
            assert_eq!(o["size"], 5);
            assert!(["memory", "both", "disk"].contains(&o["tier"].as_str().unwrap()));
            assert_eq!(o["pinned"], false);
            assert_eq!(o["expires_at"], Value::Null);
            assert!(o["version"].as_u64().unwrap() >= 1);
            assert!(o.get("last_access").is_some());
            assert!(seen.insert(k), "listed twice");
        }
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(pages >= 3);
    let all = get(&a, "/v1/objects?limit=1000").json();
    assert_eq!(all["objects"].as_array().unwrap().len(), 30);
    assert_eq!(all["next_cursor"], Value::Null);

    for bad in ["zz", "m:", "d:x", "m:1:2", "%FF"] {
        let r = get(&a, &format!("/v1/objects?cursor={bad}"));
        assert_eq!((r.status, r.code()), (400, "bad_cursor".into()), "{bad}");
    }
    for bad in ["0", "1001", "-1", "ten"] {
        let r = get(&a, &format!("/v1/objects?limit={bad}"));
        assert_eq!((r.status, r.code()), (400, "bad_limit".into()), "{bad}");
    }
    let r = get(&a, "/v1/objects?colour=red");
    assert_eq!((r.status, r.code()), (400, "bad_request".into()));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn one_object_full_metadata_binary_keys_last_access_and_delete() {
    let t = TestServer::start();
    let a = admin(&t);
    let key = b"bin\xff\x00/../k";
    // One expiry, read once: two reads of the clock can straddle a second.
    let expires_at = now() + 3600;
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        custom: vec![("owner".into(), b"ops".to_vec())],
        pinned: true,
        expires_at: Some(expires_at),
        ..Default::default()
    };
    put(&t, key, b"hello", &opts);
    let path = "/v1/objects/bin%FF%00%2F..%2Fk";
    let o = get(&a, path).json();
    assert_eq!(o["key"], Value::Null, "not UTF-8");
    assert_eq!(o["key_hex"], json!(hex(key)));
    assert_eq!(o["size"], 5);
    assert_eq!(o["pinned"], true);
    assert_eq!(o["content_type"], "text/plain");
    assert_eq!(o["custom"], json!({"owner": "ops"}));
    assert_eq!(o["expires_at"], json!(expires_at));
    assert_eq!(o["last_access"], Value::Null, "never read yet");
    assert!(o["checksum"].as_str().unwrap().len() == 16);

    let before = now();
    let mut c = Client::connect(t.socket()).unwrap();
    assert_eq!(c.get(key).unwrap().0, b"hello");
    let o = get(&a, path).json();
    let la = o["last_access"].as_u64().expect("set by the GET");
    assert!(la >= before && la <= now(), "{la}");

    let r = get(&a, "/v1/objects/nope");
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    let r = call(&a, "DELETE", path, None);
    assert_eq!((r.status, r.json()), (200, json!({"deleted": true})));
    let r = call(&a, "DELETE", path, None);
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    assert!(c.head(key).is_err());
}

#[test]
fn purge_by_key_and_by_prefix_needs_confirmation() {
    let t = TestServer::start();
    let a = admin(&t);
    put_xs(&t, "tmp/", 12);
    put(&t, b"keep", b"y", &PutOptions::default());

    let r = call(&a, "POST", "/v1/purge", Some(r#"{"prefix":"tmp/"}"#));
    assert_eq!((r.status, r.code()), (400, "confirmation_required".into()));
    assert_eq!(t.server().store().len(), 13, "nothing deleted");

    let r = call(&a, "POST", "/v1/purge", Some(r#"{"key":"tmp/0"}"#));
    assert_eq!((r.status, r.json()), (200, json!({"deleted": 1})));
    let r = call(&a, "POST", "/v1/purge", Some(r#"{"key":"tmp/0"}"#));
    assert_eq!((r.status, r.code()), (404, "not_found".into()));

    let body = json!({"prefix_hex": hex(b"tmp/"), "confirm": true}).to_string();
    let r = call(&a, "POST", "/v1/purge", Some(&body));
    assert_eq!((r.status, r.json()), (200, json!({"deleted": 11})));
    assert_eq!(t.server().store().len(), 1);
    assert!(t.server().store().head(b"keep").is_some());
}

#[test]
fn migrate_moves_pins_and_reports_what_it_did() {
    let t = TestServer::start();
    let a = admin(&t);
    put(&t, b"m/a", b"aaaa", &PutOptions::default());
    put(&t, b"m/b", b"bbbb", &PutOptions::default());
    put(
        &t,
        b"m/eph",
        b"e",
        &PutOptions {
            ephemeral: true,
            ..Default::default()
        },
    );
    let tier = |k: &str| get(&a, &format!("/v1/objects/{k}")).json()["tier"].clone();
    assert!(tier("m%2Fa") == "memory" || tier("m%2Fa") == "both");

    let r = migrate(&a, r#"{"key":"m/a","action":"demote"}"#);
    assert_eq!(r.json(), json!({"matched": 1, "changed": 1, "skipped": 0}));
    assert_eq!(tier("m%2Fa"), "disk");

    let r = migrate(&a, r#"{"key":"m/a","action":"promote"}"#);
    assert_eq!(r.json(), json!({"matched": 1, "changed": 1, "skipped": 0}));
    assert_eq!(tier("m%2Fa"), "both");
    let r = migrate(&a, r#"{"key":"m/a","action":"promote"}"#);
    assert_eq!(r.json()["changed"], 0, "already in memory");
    let mut c = Client::connect(t.socket()).unwrap();
    assert_eq!(c.get(b"m/a").unwrap().0, b"aaaa");

    let r = migrate(&a, r#"{"prefix":"m/","action":"demote"}"#);
    assert_eq!(r.json()["matched"], 3);
    assert_eq!(r.json()["skipped"], 1, "the ephemeral object stays");
    assert_eq!(tier("m%2Feph"), "memory");

    let r = migrate(&a, r#"{"prefix":"m/","action":"pin"}"#);
    assert_eq!(r.json(), json!({"matched": 3, "changed": 3, "skipped": 0}));
    assert_eq!(get(&a, "/v1/objects/m%2Fb").json()["pinned"], true);
    let r = migrate(&a, r#"{"key":"m/b","action":"unpin"}"#);
    assert_eq!(r.json()["changed"], 1);
    assert_eq!(get(&a, "/v1/objects/m%2Fb").json()["pinned"], false);

    let r = migrate(&a, r#"{"key":"m/a","action":"teleport"}"#);
    assert_eq!((r.status, r.code()), (422, "invalid_value".into()));
    assert_eq!(r.json()["error"]["field"], "action");
    let r = migrate(&a, r#"{"key":"none","action":"pin"}"#);
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
}

#[test]
fn config_reads_patches_all_or_nothing_and_names_bad_fields() {
    let t = TestServer::start();
    let a = admin(&t);
    let c = get(&a, "/v1/config").json();
    assert_eq!(c["memory"]["capacity_bytes"], 256 << 20);
    assert_eq!(c["disk"]["eviction"]["small_ratio"], 0.1);
    assert_eq!(c["memory"]["eviction"]["ghost_main_evictions"], true);

    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"memory":{"max_objects":3},"disk":{"eviction":{"small_ratio":0.25}}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["changed"],
        json!(["memory.max_objects", "disk.eviction.small_ratio"])
    );
    let rc = t.server().runtime_config();
    assert_eq!(rc.memory.max_objects, 3);
    assert_eq!(rc.disk.eviction.small_ratio, 0.25);
    assert_eq!(get(&a, "/v1/config").json()["memory"]["max_objects"], 3);

    // The new capacity holds: the memory tier evicts down to 3 objects.
    put_xs(&t, "c/", 6);
    assert!(t.server().store().stats().memory.objects <= 3);
    assert_eq!(t.server().store().len(), 6);

    // Invalid: 422 naming the field, and nothing applied (not even the valid part).
    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"memory":{"capacity_bytes":1000},"disk":{"eviction":{"small_ratio":2.0}}}"#),
    );
    assert_eq!((r.status, r.code()), (422, "invalid_value".into()));
    assert_eq!(r.json()["error"]["field"], "disk.eviction.small_ratio");
    assert_eq!(t.server().runtime_config().memory.capacity_bytes, 256 << 20);
    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"memory":{"capacity_bytes":0}}"#),
    );
    assert_eq!(r.json()["error"]["field"], "memory.capacity_bytes");
    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"promote_after_hits":9}"#),
    );
    assert_eq!(r.json()["error"]["field"], "promote_after_hits");
    // Unknown fields and wrong types are refused by the parser, naming the path.
    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"memory":{"capacity":1}}"#),
    );
    assert_eq!((r.status, r.code()), (400, "bad_json".into()));
    let r = call(
        &a,
        "PATCH",
        "/v1/config",
        Some(r#"{"disk":{"max_objects":"many"}}"#),
    );
    assert_eq!((r.status, r.code()), (400, "bad_json".into()));
    assert_eq!(r.json()["error"]["field"], "disk.max_objects");

    // The in-process API is the same code.
    let applied = t
        .server()
        .set_runtime_config(&RuntimeConfigPatch {
            disk: Some(TierPatch {
                max_objects: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(applied.changed, vec!["disk.max_objects"]);
    assert_eq!(get(&a, "/v1/config").json()["disk"]["max_objects"], 1000);
}

#[test]
fn stats_and_tiers_match_the_store() {
    let t = TestServer::start();
    let a = admin(&t);
    put(&t, b"s/1", &[7u8; 1000], &PutOptions::default());
    put(&t, b"s/2", &[7u8; 24], &PutOptions::default());
    let mut c = Client::connect(t.socket()).unwrap();
    c.get(b"s/1").unwrap();
    assert!(c.get(b"s/none").is_err());
    // The put() connections are closed; wait until the workers have seen it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.server().connections() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections never settled"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let st = t.server().store().stats();
    let s = get(&a, "/v1/stats").json();
    assert_eq!(s["objects"], 2);
    assert_eq!(s["bytes"], 1024);
    assert_eq!(s["hits"], st.hits);
    assert_eq!(s["misses"], st.misses);
    assert_eq!(s["hit_ratio"], 0.5);
    assert_eq!(s["requests"]["put"], 2);
    assert_eq!(s["requests"]["get"], 2);
    assert_eq!(s["errors"]["not_found"], 1);
    assert_eq!(s["latency"]["get"]["count"], 2);
    assert!(s["connections"]["accepted"].as_u64().unwrap() >= 3);
    assert_eq!(s["connections"]["open"], 1);
    assert_eq!(s["poisoned"], false);
    let tiers = get(&a, "/v1/tiers").json();
    let m = &tiers["memory"];
    assert_eq!(m["enabled"], true);
    assert_eq!(m["objects"], st.memory.objects);
    assert_eq!(m["bytes"], st.memory.bytes);
    assert_eq!(m["capacity_bytes"], 256 << 20);
    assert_eq!(m["free_bytes"], (256 << 20) - st.memory.bytes);
    assert_eq!(
        tiers["disk"]["dir"],
        json!(t.data_dir().display().to_string())
    );
    assert_eq!(s["tiers"], tiers);
}

/// Fails every sync once armed.
#[derive(Debug, Default)]
struct FailSyncs(AtomicBool);

impl FaultInjector for FailSyncs {
    fn check(&self, point: FaultPoint) -> std::io::Result<()> {
        if point == FaultPoint::Sync && self.0.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

#[test]
fn readyz_is_503_with_the_reason_once_the_store_is_poisoned() {
    let faults = Arc::new(FailSyncs::default());
    let f = faults.clone();
    let t = TestServer::start_with(move |c: &mut ServerConfig| c.store.faults = Some(f));
    let a = admin(&t);
    assert_eq!(get(&a, "/readyz").status, 200);
    faults.0.store(true, Ordering::SeqCst);
    let mut c = Client::connect(t.socket()).unwrap();
    let durable = PutOptions {
        durable: true,
        ..Default::default()
    };
    assert!(c.put(b"d", b"x", &durable).is_err());
    assert!(t.server().store().is_poisoned());
    let r = get(&a, "/readyz");
    assert_error(&r, 503, "poisoned", "restart");
    assert_eq!(get(&a, "/healthz").status, 200, "alive, just not ready");
    let r = migrate(&a, r#"{"key":"x","action":"demote"}"#);
    assert_eq!((r.status, r.code()), (503, "read_only".into()));
    assert_eq!(get(&a, "/v1/stats").json()["poisoned"], true);
}

/// Holds every disk sync until released: recovery (which syncs the journal) waits here.
#[derive(Debug, Default)]
struct SyncGate {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    waited: AtomicBool,
}

impl FaultInjector for SyncGate {
    fn check(&self, point: FaultPoint) -> std::io::Result<()> {
        if point == FaultPoint::Sync {
            let mut open = self.open.lock().unwrap();
            while !*open {
                self.waited.store(true, Ordering::SeqCst);
                open = self.cv.wait(open).unwrap();
            }
        }
        Ok(())
    }
}

#[test]
fn healthz_answers_during_recovery_and_readyz_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let mut cfg = util::config(dir.path().join("r.sock"), dir.path().join("data"));
    cfg.store.faults = Some(gate.clone());
    let admin_path = cfg.admin_socket_path().unwrap();
    let starting = std::thread::spawn(move || objmapper_server::Server::start(cfg));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(admin_path.exists() && gate.waited.load(Ordering::SeqCst)) {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery never reached a sync"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let a = http::unix(&admin_path);
    assert_eq!(get(&a, "/healthz").status, 200);
    let r = get(&a, "/readyz");
    assert_error(&r, 503, "not_ready", "recovering");
    let r = get(&a, "/v1/stats");
    assert_eq!((r.status, r.code()), (503, "not_ready".into()));
    assert!(
        !dir.path().join("r.sock").exists(),
        "no object socket before recovery"
    );

    *gate.open.lock().unwrap() = true;
    gate.cv.notify_all();
    let server = starting.join().unwrap().expect("starts once released");
    assert_eq!(get(&a, "/readyz").status, 200);
    assert_eq!(get(&a, "/v1/stats").status, 200);
    server.shutdown().unwrap();
    assert!(!admin_path.exists());
}

#[test]
fn prefix_actions_meet_each_object_once_even_as_it_moves_tiers() {
    let t = TestServer::start();
    let a = admin(&t);
    let mut c = Client::connect(t.socket()).unwrap();
    for i in 0..1300 {
        c.put(format!("big/{i}").as_bytes(), b"x", &PutOptions::default())
            .unwrap();
    }
    t.server().store().flush().unwrap();
    let r = migrate(&a, r#"{"prefix":"big/","action":"demote"}"#);
    assert_eq!(
        r.json(),
        json!({"matched": 1300, "changed": 1300, "skipped": 0})
    );
    assert_eq!(t.server().store().stats().memory.objects, 0);
    let r = migrate(&a, r#"{"prefix":"big/","action":"promote"}"#);
    assert_eq!(
        r.json(),
        json!({"matched": 1300, "changed": 1300, "skipped": 0})
    );
    let r = call(
        &a,
        "POST",
        "/v1/purge",
        Some(r#"{"prefix":"big/","confirm":true}"#),
    );
    assert_eq!(r.json(), json!({"deleted": 1300}));
    assert!(t.server().store().is_empty());
}

#[test]
fn reload_runs_the_installed_handler_and_reports_its_outcome() {
    let t = TestServer::start();
    let a = admin(&t);
    // Embedded without a handler: nothing to re-read.
    let r = call(&a, "POST", "/v1/reload", Some("{}"));
    assert_eq!((r.status, r.code()), (501, "no_reload".into()));
    let r = get(&a, "/v1/reload");
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".into()));
    assert_eq!(r.headers["allow"], "POST");

    // The handler runs once per request, and its answer comes back.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let (r2, f2) = (runs.clone(), fail.clone());
    t.server().set_reload_handler(Arc::new(move || {
        r2.fetch_add(1, Ordering::SeqCst);
        if f2.load(Ordering::SeqCst) {
            Err("config file /x, line 1: bad".into())
        } else {
            Ok("changed access.allow_uid".into())
        }
    }));
    let r = call(&a, "POST", "/v1/reload", Some("{}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "reloaded", "message": "changed access.allow_uid"})
    );
    fail.store(true, Ordering::SeqCst);
    let r = call(&a, "POST", "/v1/reload", Some("{}"));
    assert_eq!((r.status, r.code()), (422, "reload_failed".into()));
    assert_eq!(r.json()["error"]["message"], "config file /x, line 1: bad");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// `/readyz?verbose` says where the memory tier keeps its files and warns when that is
/// not RAM; `/v1/tiers` names each tier's filesystem (issue 19).
#[test]
fn readyz_verbose_says_whether_the_memory_tier_is_in_ram() {
    let t = TestServer::start();
    let a = admin(&t);
    let seen = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(t.mem_dir())
        .output()
        .unwrap();
    let seen = String::from_utf8(seen.stdout).unwrap().trim().to_string();
    let in_ram = matches!(seen.as_str(), "tmpfs" | "ramfs" | "hugetlbfs");
    let r = get(&a, "/readyz?verbose");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ready");
    let m = &v["details"]["memory_tier"];
    assert_eq!(m["enabled"], true);
    assert_eq!(m["in_ram"], in_ram, "stat -f says {seen}: {v}");
    assert_eq!(m["dir"], json!(t.mem_dir().display().to_string()));
    let warning = m["warning"].as_str().unwrap_or("");
    assert_eq!(warning.contains("not in RAM"), !in_ram, "{v}");
    let tiers = get(&a, "/v1/tiers").json();
    assert_eq!(tiers["memory"]["in_ram"], in_ram);
    assert_eq!(tiers["memory"]["filesystem"], m["filesystem"]);
    // Without `verbose` the answer is the short one.
    assert_eq!(get(&a, "/readyz").json(), json!({"status": "ready"}));
}

/// The remote tier's controls without a remote tier: 404 `no_remote`, naming the flag;
/// a bad body (not JSON, an unknown field, a wrong type, a value out of range) is a
/// 400 first, for each of the three: never read as no body (a `check` whose prefix was
/// misspelt checked the whole store).
#[test]
fn remote_controls_without_a_remote_tier_and_bad_bodies() {
    let t = TestServer::start();
    let a = admin(&t);
    for (path, body) in [
        ("/v1/remote/flush", "{}"),
        ("/v1/remote/flush", ""),
        ("/v1/remote/check", "{}"),
        ("/v1/remote/check", r#"{"prefix":"img/","limit":5}"#),
        ("/v1/remote/sweep", ""),
        ("/v1/remote/sweep", r#"{"names":5}"#),
    ] {
        let r = call(&a, "POST", path, Some(body));
        assert_error(&r, 404, "no_remote", "serve --remote");
    }
    for (body, status, code, says) in [
        (r#"{"after":"xyz"}"#, 400, "bad_request", "64 hex digits"),
        (r#"{"names":0}"#, 400, "bad_request", "between 1 and"),
        (
            r#"{"names":5,"cursor":"x"}"#,
            400,
            "bad_json",
            "unknown field",
        ),
    ] {
        let r = call(&a, "POST", "/v1/remote/sweep", Some(body));
        assert_error(&r, status, code, says);
    }
    for (path, body, code, says) in [
        (
            "/v1/remote/check",
            r#"{"prefx":"img/"}"#,
            "bad_json",
            "unknown field",
        ),
        (
            "/v1/remote/check",
            r#"{"prefix":5}"#,
            "bad_json",
            "invalid type",
        ),
        (
            "/v1/remote/check",
            r#"{"limit":"x"}"#,
            "bad_json",
            "invalid type",
        ),
        (
            "/v1/remote/check",
            r#"{"limit":-5}"#,
            "bad_json",
            "invalid value",
        ),
        ("/v1/remote/check", "notjson", "bad_json", ""),
        (
            "/v1/remote/check",
            r#"{"limit":0}"#,
            "bad_request",
            "between 1 and",
        ),
        (
            "/v1/remote/flush",
            r#"{"timeout_seconds":"x"}"#,
            "bad_json",
            "invalid type",
        ),
        (
            "/v1/remote/flush",
            r#"{"bogus":1}"#,
            "bad_json",
            "unknown field",
        ),
        ("/v1/remote/flush", "notjson", "bad_json", ""),
        (
            "/v1/remote/flush",
            r#"{"timeout_seconds":-1}"#,
            "bad_request",
            "between 0 and",
        ),
    ] {
        let r = call(&a, "POST", path, Some(body));
        assert_error(&r, 400, code, says);
    }
}
