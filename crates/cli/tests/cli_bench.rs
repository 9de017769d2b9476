//! `objmapper bench` with an op mix (`--ops`) and a key distribution (`--key-dist`),
//! against a real `objmapper serve`. No timing is asserted, only counts and flags.

mod util;

use util::{objmapper, stderr, Daemon};

/// The integer after `"name":` in a one-line JSON object.
fn field(json: &str, name: &str) -> u64 {
    let tag = format!("\"{name}\":");
    let at = json
        .find(&tag)
        .unwrap_or_else(|| panic!("{name} missing: {json}"))
        + tag.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer: {json}"))
}

#[test]
fn op_mix_and_zipf_keys_count_every_request() {
    let d = Daemon::start(&[]);
    for extra in [
        &[][..],
        &["--pipeline", "4"][..],
        // Several connections driven by fewer threads (poll loops), on V1 and pipelined.
        &["--connections", "5", "--threads", "2"][..],
        &["--connections", "4", "--threads", "1", "--pipeline", "3"][..],
    ] {
        let mut args = vec![
            "bench",
            "--ops",
            "get=50,put=30,head=10,delete=10",
            "--key-dist",
            "zipf:1.1",
            "--keys",
            "20",
            "--size",
            "3K",
            "--requests",
            "400",
            "--json",
            "-q",
        ];
        args.extend_from_slice(extra);
        let out = d.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let json = String::from_utf8(out.stdout).unwrap();
        assert_eq!(field(&json, "errors"), 0, "{json}");
        assert_eq!(field(&json, "ops"), 400, "{json}");
        let per_op: u64 = ["gets", "puts", "heads", "deletes"]
            .iter()
            .map(|f| field(&json, f))
            .sum();
        assert_eq!(per_op, 400, "{json}");
        // Every op of the mix ran (400 draws; the smallest share is 10%).
        for f in ["gets", "puts", "heads", "deletes"] {
            assert!(field(&json, f) > 0, "no {f}: {json}");
        }
        // DELETEs make later GETs/HEADs of the same key miss: counted, not errors.
        assert!(field(&json, "misses") <= 400, "{json}");
        assert!(
            json.contains("\"ops_mix\":\"get=50,put=30,head=10,delete=10\""),
            "{json}"
        );
        assert!(json.contains("\"key_dist\":\"zipf:1.1\""), "{json}");
    }
}

#[test]
fn put_only_writes_objects_of_the_given_size() {
    let d = Daemon::start(&[]);
    let out = d.run(&[
        "bench",
        "--ops",
        "put",
        "--keys",
        "10",
        "--size",
        "5000",
        "--requests",
        "200",
        "--json",
        "-q",
        "--keep",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&json, "puts"), 200, "{json}");
    assert_eq!(field(&json, "gets"), 0, "{json}");
    assert_eq!(field(&json, "errors"), 0, "{json}");
    assert!(json.contains("\"ops_mix\":\"put=100\""), "{json}");
    let got = d.ok(&["get", "objmapper-bench/3"]);
    assert_eq!(got.len(), 5000);
}

#[test]
fn stored_skips_storing_and_misses_what_is_not_there() {
    let d = Daemon::start(&[]);
    let bench = |extra: &[&str]| {
        let mut a = vec![
            "bench",
            "--keys",
            "20",
            "--size",
            "300",
            "--requests",
            "100",
        ];
        a.extend_from_slice(&["--json", "-q", "--keep"]);
        a.extend_from_slice(extra);
        let out = d.run(&a);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    // Nothing stored yet: every GET misses (counted, not an error).
    let json = bench(&["--stored"]);
    assert_eq!(field(&json, "misses"), 100, "{json}");
    assert_eq!(field(&json, "errors"), 0, "{json}");
    let json = bench(&[]);
    assert_eq!(field(&json, "misses"), 0, "{json}");
    let puts = |d: &Daemon| {
        let s = d.ok(&["stats", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        v["requests"]["put"].as_u64().unwrap()
    };
    let before = puts(&d);
    assert_eq!(before, 20);
    // Stored: all hits, and not one PUT.
    let json = bench(&["--stored"]);
    assert_eq!(
        (field(&json, "gets"), field(&json, "misses")),
        (100, 0),
        "{json}"
    );
    assert_eq!(puts(&d), before);
}

#[test]
fn bad_mix_and_distribution_flags_are_usage_errors() {
    for (args, needle) in [
        (&["bench", "--ops", "get=90"][..], "add up to 90"),
        (&["bench", "--ops", "get=50,post=50"][..], "unknown op"),
        (&["bench", "--ops", "get=50,get=50"][..], "twice"),
        (&["bench", "--key-dist", "zipf:0"][..], "Zipf exponent"),
        (&["bench", "--key-dist", "normal"][..], "uniform or zipf"),
        (
            &["bench", "--transport", "udp", "--ops", "get=90,put=10"][..],
            "GETs only",
        ),
        (
            &[
                "bench",
                "--transport",
                "udp",
                "--connections",
                "4",
                "--threads",
                "1",
            ][..],
            "needs a stream transport",
        ),
    ] {
        let out = objmapper()
            .args(args)
            .arg("--socket")
            .arg("/nonexistent/objmapper-test.sock")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
