//! contrib/grafana/objmapper-dashboard.json: valid JSON, every panel has a query, and every
//! metric it queries is one a live server exports on /metrics.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use util::Daemon;

fn dashboard() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/grafana/objmapper-dashboard.json");
    let text = std::fs::read_to_string(&p).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `expr` in the dashboard, with its panel's title.
fn exprs(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The `objmapper_*` names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("objmapper_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// GET /metrics on the management socket; returns the body.
fn scrape(admin: &Path) -> String {
    let mut s = UnixStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: objmapper\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let d = Daemon::start(&[]);
    // Traffic, so the per-op series (the latency histogram) exist.
    let f = util::write_file(&d.path("in"), b"x");
    d.ok(&["put", "k", &f]);
    d.ok(&["get", "k"]);
    let mut admin = d.socket.as_os_str().to_owned();
    admin.push(".admin");
    let body = scrape(Path::new(&admin));

    // name -> type, from the "# TYPE" lines.
    let mut exported = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    assert!(exported.contains("objmapper_up"), "{body}");

    let dash = dashboard();
    let all = exprs(&dash);
    assert!(all.len() >= 10, "{all:?}");
    let mut used = BTreeSet::new();
    for (title, e) in &all {
        let names = metric_names(e);
        assert!(
            !names.is_empty(),
            "{title}: {e} queries no objmapper metric"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "{title}: {n} is not exported:\n{body}"
            );
            used.insert(n);
        }
    }
    // The metrics the issue names are all on the dashboard.
    for m in [
        "objmapper_requests_total",
        "objmapper_errors_total",
        "objmapper_request_duration_seconds_bucket",
        "objmapper_cache_hits_total",
        "objmapper_cache_misses_total",
        "objmapper_tier_used_bytes",
        "objmapper_tier_capacity_bytes",
        "objmapper_tier_objects",
        "objmapper_evictions_total",
        "objmapper_promotions_total",
        "objmapper_flushes_total",
        "objmapper_expirations_total",
        "objmapper_connections",
        "objmapper_connections_accepted_total",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
    // Every query goes through the data source and instance variables.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    for (title, e) in &all {
        assert!(e.contains("$instance"), "{title}: {e} ignores $instance");
    }
}
