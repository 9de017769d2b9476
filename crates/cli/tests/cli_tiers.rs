//! The tier surface of the `objmapper` binary: `put --ephemeral/--pin/--durable/--ttl/
//! --expires-at`, `pin`, `unpin`, what `stat` shows, and the `serve` tier settings.

mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use util::{objmapper, pattern, stderr, write_file, Daemon};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn stat(d: &Daemon, key: &str) -> String {
    String::from_utf8(d.ok(&["stat", key])).unwrap()
}

fn line<'a>(stat: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    stat.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{stat}"))
}

#[test]
fn put_flags_show_up_in_stat_in_both_modes() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"tiered");
    for mode in ["fd", "copy"] {
        let key = format!("plain-{mode}");
        d.ok(&["put", &key, &file, "--mode", mode]);
        let s = stat(&d, &key);
        assert_eq!(line(&s, "pinned"), "no", "{s}");
        assert_eq!(line(&s, "ephemeral"), "no", "{s}");
        assert_eq!(line(&s, "expires"), "never", "{s}");
        assert!(
            ["memory", "disk", "both"].contains(&line(&s, "tier")),
            "{s}"
        );
        assert!(["yes", "no"].contains(&line(&s, "dirty")), "{s}");

        let key = format!("eph-pin-{mode}");
        d.ok(&["put", &key, &file, "--mode", mode, "--ephemeral", "--pin"]);
        let s = stat(&d, &key);
        assert_eq!(line(&s, "pinned"), "yes", "{mode}: {s}");
        assert_eq!(line(&s, "ephemeral"), "yes", "{mode}: {s}");
        assert_eq!(line(&s, "tier"), "memory", "{mode}: {s}");
        assert_eq!(d.ok(&["get", &key]), b"tiered");

        let key = format!("durable-{mode}");
        d.ok(&["put", &key, &file, "--mode", mode, "--durable"]);
        let s = stat(&d, &key);
        assert_eq!(line(&s, "dirty"), "no", "{mode}: {s}");
        assert!(["disk", "both"].contains(&line(&s, "tier")), "{mode}: {s}");

        let json =
            String::from_utf8(d.ok(&["stat", &format!("eph-pin-{mode}"), "--json"])).unwrap();
        for field in [
            "\"tier\":\"memory\"",
            "\"pinned\":true",
            "\"ephemeral\":true",
            "\"expires\":null",
            "\"expires_unix\":null",
        ] {
            assert!(json.contains(field), "{field} missing: {json}");
        }
        assert!(json.contains("\"dirty\":"), "{json}");
    }
}

#[test]
fn pin_and_unpin_commands() {
    let d = Daemon::start(&[]);
    for cmd in ["pin", "unpin"] {
        let out = d.run(&[cmd, "missing"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    }
    let file = write_file(&d.path("in"), b"x");
    d.ok(&["put", "k", &file]);
    d.ok(&["pin", "k"]);
    assert_eq!(line(&stat(&d, "k"), "pinned"), "yes");
    d.ok(&["pin", "k"]); // idempotent
    d.ok(&["unpin", "k"]);
    assert_eq!(line(&stat(&d, "k"), "pinned"), "no");
    // Over TCP too (no fds involved).
    let d = Daemon::start(&["--tcp", "127.0.0.1:0"]);
    d.ok(&["put", "t", &write_file(&d.path("t"), b"t")]);
    let tcp = d.tcp_addr();
    let out = objmapper()
        .args(["pin", "t", "--tcp", &tcp])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(line(&stat(&d, "t"), "pinned"), "yes");
}

#[test]
fn ttl_and_expires_at() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"expiring");

    let before = unix_now();
    d.ok(&["put", "hour", &file, "--ttl", "1h"]);
    let s = stat(&d, "hour");
    let at: u64 = line(&s, "expires_unix").parse().unwrap();
    assert!(
        at >= before + 3600 && at <= unix_now() + 3601,
        "{at} vs {before}: {s}"
    );
    let shown = line(&s, "expires");
    assert!(shown.ends_with('Z') && shown.contains('T'), "{s}");

    d.ok(&[
        "put",
        "fixed",
        &file,
        "--expires-at",
        "4000000000",
        "--mode",
        "copy",
    ]);
    let s = stat(&d, "fixed");
    assert_eq!(line(&s, "expires"), "2096-10-02T07:06:40Z", "{s}");
    assert_eq!(line(&s, "expires_unix"), "4000000000", "{s}");
    let json = String::from_utf8(d.ok(&["stat", "fixed", "--json"])).unwrap();
    assert!(
        json.contains("\"expires\":\"2096-10-02T07:06:40Z\",\"expires_unix\":4000000000"),
        "{json}"
    );

    // A time in the past is the server's BAD_REQUEST, in both modes.
    for mode in ["fd", "copy"] {
        let out = d.run(&["put", "past", &file, "--expires-at", "1000", "--mode", mode]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        assert!(stderr(&out).contains("BAD_REQUEST"), "{}", stderr(&out));
    }
    assert_eq!(d.run(&["get", "past"]).status.code(), Some(1));

    // A short TTL: served now, gone after it.
    d.ok(&["put", "brief", &file, "--ttl", "2s"]);
    let at: u64 = line(&stat(&d, "brief"), "expires_unix").parse().unwrap();
    assert_eq!(d.ok(&["get", "brief"]), b"expiring");
    while unix_now() < at + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [&["get", "brief"][..], &["stat", "brief"], &["pin", "brief"]] {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    }
}

#[test]
fn contradictory_or_malformed_put_flags_are_usage_errors() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"x");
    for bad in [
        &["--durable", "--ephemeral"][..],
        &["--ttl", "0"],
        &["--ttl", "soon"],
        &["--ttl", "5m", "--expires-at", "4000000000"],
        &["--expires-at", "tomorrow"],
    ] {
        let mut args = vec!["put", "k", file.as_str()];
        args.extend_from_slice(bad);
        let out = d.run(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    assert_eq!(
        d.run(&["get", "k"]).status.code(),
        Some(1),
        "nothing stored"
    );
}

#[test]
fn serve_tier_settings_by_flag() {
    let d = Daemon::start(&[
        "--mem-capacity",
        "64K",
        "--mem-max-objects",
        "100",
        "--disk-capacity",
        "1G",
        "--disk-max-objects",
        "1_000",
        "--direct-to-disk-threshold",
        "16K",
    ]);
    assert!(d.data.with_extension("mem").is_dir(), "--mem-dir used");
    // Over the direct-to-disk threshold: straight to disk.
    let big = write_file(&d.path("big"), &pattern(32 << 10, 1));
    d.ok(&["put", "big", &big]);
    assert_eq!(line(&stat(&d, "big"), "tier"), "disk");
    // Under it: the memory tier.
    let small = write_file(&d.path("small"), &pattern(1 << 10, 2));
    d.ok(&["put", "small", &small, "--ephemeral"]);
    assert_eq!(line(&stat(&d, "small"), "tier"), "memory");
    // An ephemeral object larger than the whole memory tier: NO_SPACE.
    let huge = write_file(&d.path("huge"), &pattern(100 << 10, 3));
    let out = d.run(&["put", "huge", &huge, "--ephemeral"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("NO_SPACE"), "{}", stderr(&out));
}

#[test]
fn serve_tier_settings_by_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mem = dir.path().join("env-mem");
    let d = Daemon::start_env(
        &[],
        &[
            ("OBJMAPPER_MEM_DIR", mem.to_str().unwrap()),
            ("OBJMAPPER_MEM_CAPACITY", "64K"),
            ("OBJMAPPER_DIRECT_TO_DISK_THRESHOLD", "16K"),
        ],
    );
    assert!(mem.is_dir(), "memory tier in OBJMAPPER_MEM_DIR");
    let big = write_file(&d.path("big"), &pattern(32 << 10, 4));
    d.ok(&["put", "big", &big]);
    assert_eq!(line(&stat(&d, "big"), "tier"), "disk");
    let huge = write_file(&d.path("huge"), &pattern(100 << 10, 5));
    let out = d.run(&["put", "huge", &huge, "--ephemeral"]);
    assert!(stderr(&out).contains("NO_SPACE"), "{}", stderr(&out));
}
