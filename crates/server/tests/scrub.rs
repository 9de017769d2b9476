//! The scrubber and `POST /v1/verify` through a real server over real sockets
//! (docs/STORAGE.md "The scrubber", docs/ADMIN.md): bit rot in an object only ever read
//! in fd mode is found, counted in the metrics and /v1/stats, and the object is
//! NOT_FOUND afterwards (or served from the memory tier's intact copy); neighbours are
//! untouched; a rate of 0 scrubs nothing.

mod util;

use objmapper_proto::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use util::http::{self, call, get, Target};
use util::wire::pattern;
use util::*;

fn flip_byte(path: &Path, at: u64) {
    objmapper_testkit::flip_bits(path, at, 0x01);
}

fn admin(t: &TestServer) -> Target {
    http::unix(t.server().admin_socket_path().unwrap())
}

fn metrics(t: &TestServer) -> std::collections::BTreeMap<String, f64> {
    http::prometheus(&get(&admin(t), "/metrics").text)
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    objmapper_testkit::wait_for(what, Duration::from_secs(30), Duration::from_millis(25), f);
}

fn put(raw: &mut Raw, key: &[u8], data: &[u8]) -> u64 {
    let r = raw.put_copy(key, data);
    assert_status(&r, Status::Ok);
    r.meta.version.unwrap()
}

#[test]
fn the_scrubber_finds_rot_in_an_fd_mode_object_and_the_metrics_show_it() {
    let ts = TestServer::start_with(|c| {
        c.store.mem_capacity_bytes = 0;
        c.store.scrub_rate_bytes = 1 << 30;
        c.store.scrub_start_delay = Duration::ZERO;
    });
    let mut raw = ts.raw();
    let rotten = pattern(200_000, 1);
    let intact = pattern(200_000, 2);
    let v = put(&mut raw, b"rotten", &rotten);
    put(&mut raw, b"neighbour", &intact);
    // Read in fd mode only: the server never sees these bytes.
    let r = raw.get_fd(b"rotten");
    assert_status(&r, Status::Ok);
    assert_eq!(read_fd(r.fd.as_ref().unwrap()), rotten);
    wait_for("both objects scrubbed", || {
        metrics(&ts)["objmapper_scrub_objects_total"] >= 2.0
    });
    flip_byte(&ts.server().store().object_path(b"rotten", v), 4321);
    wait_for("the scrubber to find the rot", || {
        metrics(&ts)["objmapper_scrub_damage_total"] == 1.0
    });
    let m = metrics(&ts);
    assert_eq!(
        m["objmapper_corrupt_objects_total{reason=\"checksum\"}"],
        1.0
    );
    assert!(m["objmapper_scrub_bytes_total"] >= 600_000.0);
    let s = get(&admin(&ts), "/v1/stats").json();
    assert_eq!(s["scrub"]["damage"], 1);
    assert!(s["scrub"]["passes"].as_u64().unwrap() >= 1);
    assert!(s["scrub"]["last_pass_unix"].as_u64().unwrap() > 0);
    assert!(m["objmapper_scrub_last_pass_timestamp_seconds"] > 0.0);
    // Dropped: NOT_FOUND in fd mode from now on; the neighbour is untouched.
    assert_status(&raw.get_fd(b"rotten"), Status::NotFound);
    let r = raw.get_fd(b"neighbour");
    assert_status(&r, Status::Ok);
    assert_eq!(read_fd(r.fd.as_ref().unwrap()), intact);
}

#[test]
fn verify_on_demand_reports_the_damage_and_the_memory_copy_serves() {
    let ts = TestServer::start_with(|c| c.store.scrub_rate_bytes = 0);
    let mut raw = ts.raw();
    let data = pattern(100_000, 3);
    let v = put(&mut raw, b"a/both", &data);
    put(&mut raw, b"a/ok", b"fine");
    put(&mut raw, b"b/other", b"elsewhere");
    ts.server().store().wait_idle(Duration::from_secs(10));
    let disk = ts.server().store().object_path(b"a/both", v);
    flip_byte(&disk, 7);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        metrics(&ts)["objmapper_scrub_objects_total"],
        0.0,
        "rate 0: off"
    );

    let a = call(
        &admin(&ts),
        "POST",
        "/v1/verify",
        Some(r#"{"prefix": "a/"}"#),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let r: Value = a.json();
    let damaged = r["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{r}");
    assert_eq!(damaged[0]["key"], "a/both");
    assert_eq!(damaged[0]["tier"], "disk");
    assert_eq!(damaged[0]["reason"], "checksum");
    assert_eq!(damaged[0]["version"], v);
    // The memory tier's copy is intact: it is served, and written to disk again.
    let r = raw.get_copy(b"a/both");
    assert_status(&r, Status::Ok);
    assert_eq!(r.body, data);
    let r = raw.get_fd(b"a/ok");
    assert_status(&r, Status::Ok);
    // Nothing damaged now.
    let r = call(&admin(&ts), "POST", "/v1/verify", Some("{}")).json();
    assert_eq!(r["damaged"].as_array().unwrap().len(), 0, "{r}");
    assert!(r["objects"].as_u64().unwrap() >= 3, "{r}");
    let bad = call(
        &admin(&ts),
        "POST",
        "/v1/verify",
        Some(r#"{"prefix_hex": "zz"}"#),
    );
    assert_eq!(bad.status, 400);
    let bad = call(&admin(&ts), "GET", "/v1/verify", None);
    assert_eq!(bad.status, 405);
}
