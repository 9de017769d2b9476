//! `GET /metrics` after a known workload: every counter the workload touches has exactly
//! the value the workload implies, and the format follows the Prometheus conventions.

mod util;

use objmapper_client::{Client, PutOptions, UdpClient};
use util::http::{self, get, prometheus};
use util::TestServer;

#[test]
fn counters_match_a_known_workload() {
    let t = TestServer::start_with(|c| c.udp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let a = http::unix(t.server().admin_socket_path().unwrap());
    let mut c = Client::connect(t.socket()).unwrap();
    let opts = PutOptions::default();

    // 5 PUTs, 4 hits, 3 misses, 1 HEAD, 1 PING, 2 DELETEs (one of nothing), 1 failed
    // conditional PUT, and over UDP 1 hit.
    for i in 0..5 {
        c.put(format!("w/{i}").as_bytes(), &[b'x'; 100], &opts)
            .unwrap();
    }
    for i in 0..4 {
        c.get(format!("w/{i}").as_bytes()).unwrap();
    }
    for i in 0..3 {
        assert!(c.get(format!("missing/{i}").as_bytes()).is_err());
    }
    c.head(b"w/0").unwrap();
    c.ping().unwrap();
    assert!(c.delete(b"w/4", false).unwrap());
    assert!(!c.delete(b"w/none", false).unwrap());
    let cas = PutOptions {
        if_absent: true,
        ..Default::default()
    };
    assert!(c.put(b"w/0", b"y", &cas).is_err());
    let mut u = UdpClient::connect(t.server().udp_addr().unwrap()).unwrap();
    u.set_retries(0);
    u.get(b"w/1").unwrap();

    let r = get(&a, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = prometheus(&r.text);
    let at = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k}\n{}", r.text))
    };
    let expect = [
        ("objmapper_up", 1.0),
        ("objmapper_requests_total{op=\"put\"}", 6.0),
        ("objmapper_requests_total{op=\"get\"}", 8.0),
        ("objmapper_requests_total{op=\"head\"}", 1.0),
        ("objmapper_requests_total{op=\"ping\"}", 1.0),
        ("objmapper_requests_total{op=\"delete\"}", 2.0),
        ("objmapper_errors_total{status=\"not_found\"}", 4.0),
        (
            "objmapper_errors_total{status=\"precondition_failed\"}",
            1.0,
        ),
        ("objmapper_errors_total{status=\"bad_request\"}", 0.0),
        ("objmapper_request_duration_seconds_count{op=\"get\"}", 8.0),
        (
            "objmapper_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"}",
            8.0,
        ),
        ("objmapper_request_duration_seconds_count{op=\"put\"}", 6.0),
        ("objmapper_cache_misses_total", 3.0),
        ("objmapper_objects", 4.0),
        ("objmapper_tier_objects{tier=\"memory\"}", 4.0),
        ("objmapper_tier_used_bytes{tier=\"memory\"}", 400.0),
        (
            "objmapper_tier_capacity_bytes{tier=\"memory\"}",
            (256u64 << 20) as f64,
        ),
        ("objmapper_evictions_total{tier=\"memory\"}", 0.0),
        ("objmapper_expirations_total", 0.0),
        ("objmapper_connections", 1.0),
        ("objmapper_connections_accepted_total", 1.0),
        ("objmapper_store_poisoned", 0.0),
    ];
    for (k, v) in expect {
        assert_eq!(at(k), v, "{k}");
    }
    let hits = at("objmapper_cache_hits_total{tier=\"memory\"}")
        + at("objmapper_cache_hits_total{tier=\"disk\"}");
    assert_eq!(hits, 5.0);
    // Histogram buckets are cumulative and end at the count.
    let pre = "objmapper_request_duration_seconds_bucket{op=\"get\",le=\"";
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(pre)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert_eq!(buckets.len(), 20);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 8.0));
    assert!(at("objmapper_request_duration_seconds_sum{op=\"get\"}") > 0.0);

    // Conventions: every sample is objmapper_*, counters end in _total, each family
    // has HELP and TYPE.
    for line in r.text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("objmapper_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
            assert!(r.text.contains(&format!("# HELP {name} ")), "{name}");
        } else if !line.starts_with('#') {
            assert!(line.starts_with("objmapper_"), "{line}");
        }
    }
    // The in-process text is the same exposition.
    assert!(t
        .server()
        .metrics_text()
        .contains("objmapper_requests_total{op=\"get\"} 8"));
}
