//! The management CLI commands (`ls`, `info`, `stats`, `migrate`, `purge`, `verify`, `config`,
//! `top`) against a real `objmapper serve`, over its management socket.

mod util;

use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use util::{assert_fails_with, stderr, Daemon};

/// Waits until the management socket accepts (the server binds it before the object socket;
/// this also covers a test that moves it).
fn wait_admin(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "no management socket at {path:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn daemon(extra: &[&str]) -> Daemon {
    let d = Daemon::start(extra);
    wait_admin(&d.path("s.sock.admin"));
    d
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

fn json(b: Vec<u8>) -> Value {
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b)))
}

/// Column start offsets of a table's header line, checked against every row: each
/// left-aligned column starts at the same offset on every line.
fn assert_aligned(table: &str, left_cols: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in left_cols {
        let at = header
            .find(col)
            .unwrap_or_else(|| panic!("no {col} in {header:?}"));
        for l in table.lines().skip(1) {
            let before = &l[..at.min(l.len())];
            assert!(
                before.ends_with("  ") || at == 0,
                "column {col} not aligned in:\n{table}"
            );
        }
    }
}

#[test]
fn ls_info_stats_with_tables_and_json() {
    let d = daemon(&[]);
    d.run_with_stdin(&["put", "/img/a.png", "-"], b"0123456789");
    d.run_with_stdin(&["put", "/img/b.png", "-", "--pin"], b"abc");
    d.run_with_stdin(&["put", "/css/site.css", "-", "--ttl", "1h"], b"body{}");
    d.ok(&["get", "/img/a.png"]);

    let out = text(d.ok(&["ls"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("KEY"), "{out}");
    assert!(lines[0].contains("SIZE") && lines[0].contains("LAST ACCESS"));
    assert_aligned(&out, &["TIER", "PINNED", "EXPIRES"]);
    // Sorted by key.
    assert!(lines[1].starts_with("/css/site.css"));
    assert!(lines[3].starts_with("/img/b.png") && lines[3].contains(" yes "));

    let out = text(d.ok(&["ls", "/img/"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    let v = json(d.ok(&["ls", "/img/", "--json"]));
    let objs = v["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 2);
    let a = objs.iter().find(|o| o["key"] == "/img/a.png").unwrap();
    assert_eq!(a["size"], 10);
    assert!(a["last_access"].as_u64().is_some(), "read once");
    assert_eq!(text(d.ok(&["ls", "--limit", "1"])).lines().count(), 2);

    let out = text(d.ok(&["info", "/img/b.png"]));
    assert!(out.contains("pinned        true"), "{out}");
    assert!(out.contains("size          3"), "{out}");
    let v = json(d.ok(&["info", "/css/site.css", "--json"]));
    assert!(v["expires_at"].as_u64().is_some());
    assert_eq!(v["size"], 6);

    let out = text(d.ok(&["stats"]));
    assert!(out.contains("3 objects"), "{out}");
    assert!(out.contains("hit ratio 1.000 (1 hits, 0 misses)"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("memory ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("GET ")), "{out}");
    let v = json(d.ok(&["stats", "--json"]));
    assert_eq!(v["objects"], 3);
    assert_eq!(v["requests"]["get"], 1);

    let o = d.run(&["info", "/nothing"]);
    assert_fails_with(&o, 1, "NOT_FOUND: no object under key");
}

#[test]
fn migrate_purge_and_config_change_the_server() {
    let d = daemon(&[]);
    for i in 0..4 {
        d.run_with_stdin(&["put", &format!("/t/{i}"), "-"], b"x");
    }
    let out = text(d.ok(&["migrate", "demote", "/t/0"]));
    assert_eq!(out, "demote: 1 matched, 1 changed, 0 skipped\n");
    assert_eq!(json(d.ok(&["info", "/t/0", "--json"]))["tier"], "disk");
    d.ok(&["migrate", "promote", "/t/0"]);
    assert_eq!(json(d.ok(&["info", "/t/0", "--json"]))["tier"], "both");
    let out = text(d.ok(&["migrate", "pin", "/t/", "--prefix"]));
    assert_eq!(out, "pin: 4 matched, 4 changed, 0 skipped\n");
    // The object-protocol pin/unpin still work alongside.
    d.ok(&["unpin", "/t/1"]);
    assert_eq!(json(d.ok(&["info", "/t/1", "--json"]))["pinned"], false);

    let o = d.run(&["purge", "--prefix", "/t/"]);
    assert_eq!(o.status.code(), Some(2), "needs --yes");
    assert!(stderr(&o).contains("--yes"));
    assert_eq!(text(d.ok(&["purge", "/t/3"])), "deleted 1\n");
    assert_eq!(
        text(d.ok(&["purge", "--prefix", "/t/", "--yes"])),
        "deleted 3\n"
    );
    assert_eq!(text(d.ok(&["ls"])).lines().count(), 1, "header only");

    let out = text(d.ok(&["config", "get"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with("memory.capacity_bytes") && l.ends_with(" 268435456")),
        "{out}"
    );
    assert_eq!(
        text(d.ok(&["config", "get", "disk.eviction.small_ratio"])),
        "0.1\n"
    );
    let out = text(d.ok(&[
        "config",
        "set",
        "memory.capacity_bytes=64M",
        "disk.eviction.small_ratio=0.2",
    ]));
    assert_eq!(
        out,
        "changed: memory.capacity_bytes, disk.eviction.small_ratio\n"
    );
    assert_eq!(
        text(d.ok(&["config", "get", "memory.capacity_bytes"])),
        "67108864\n"
    );
    let o = d.run(&["config", "set", "memory.eviction.small_ratio=5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("INVALID_VALUE: invalid memory.eviction.small_ratio: 5 is out of range"),
        "{}",
        stderr(&o)
    );
    let o = d.run(&["config", "set", "memory.colour=blue"]);
    assert_fails_with(&o, 2, "unknown field");
}

#[test]
fn top_draws_one_plain_frame_when_not_a_terminal() {
    let d = daemon(&[]);
    d.run_with_stdin(&["put", "/k", "-"], b"v");
    d.ok(&["get", "/k"]);
    let out = text(d.ok(&["top", "--once"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    for k in [
        "ops_per_s=",
        "hit_ratio=1.000",
        "mem_fill_pct=",
        "disk_fill_pct=",
        "evictions_per_s=0.0",
    ] {
        assert!(out.contains(k), "{k} in {out}");
    }
    let out = text(d.ok(&["top", "--iterations", "2", "--interval", "0.1", "--json"]));
    let frames: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2);
    assert!(frames[1]["ops_per_second"].as_f64().is_some());
    let o = d.run(&["top", "--once", "--interval", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn admin_endpoint_follows_socket_or_admin_flag() {
    // A management socket elsewhere: the sibling of --socket is not there, --admin finds it.
    let d = Daemon::start(&["--no-admin"]);
    assert!(!d.path("s.sock.admin").exists());
    let o = d.run(&["ls"]);
    assert_eq!(o.status.code(), Some(1));
    drop(d);
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("mgmt.sock");
    let d = Daemon::start(&[
        "--admin-socket",
        admin.to_str().unwrap(),
        "--admin-tcp",
        "127.0.0.1:0",
    ]);
    wait_admin(&admin);
    let o = d.run(&["stats"]);
    assert_fails_with(&o, 1, "cannot reach the management API");
    d.ok(&["stats", "--admin", admin.to_str().unwrap()]);
    // The loopback TCP listener, found in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let log = d.log();
        if let Some(rest) = log.split("management API on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(10));
    };
    d.ok(&["stats", "--admin", &addr]);

    // Non-loopback TCP is refused at start.
    let o = util::objmapper()
        .args(["serve", "--socket"])
        .arg(dir.path().join("x.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("xdata"))
        .arg("--mem-dir")
        .arg(dir.path().join("xmem"))
        .args(["--admin-tcp", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("loopback"), "{}", stderr(&o));
}

#[test]
fn top_draws_the_full_screen_view_on_a_terminal() {
    // util-linux's script(1) (Debian: bsdutils, an essential package) gives the command
    // a pseudo-terminal, so stdout is a TTY and top draws its ratatui view.
    let d = daemon(&[]);
    d.run_with_stdin(&["put", "/k", "-"], b"v");
    let cmd = format!(
        "stty cols 100 rows 30; {} top --once --socket {}",
        util::BIN,
        d.socket.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    assert!(o.status.success(), "{}", stderr(&o));
    let screen = String::from_utf8_lossy(&o.stdout);
    // Words are placed by cursor moves: drop the escape sequences, then look for them.
    let mut plain = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
            plain.push(' ');
        } else {
            plain.push(c);
        }
    }
    let words: Vec<&str> = plain.split(|c: char| !c.is_alphanumeric()).collect();
    for want in [
        "objmapper",
        "top",
        "memory",
        "disk",
        "tier",
        "ratio",
        "requests",
        "PUT",
    ] {
        assert!(words.contains(&want), "{want} missing from:\n{screen}");
    }
    // The alternate screen is entered and left again.
    assert!(screen.contains("\x1b[?1049h") && screen.contains("\x1b[?1049l"));
}

/// The one object file under `data/objects` that is `len` bytes long.
fn object_file_of_len(data: &Path, len: u64) -> std::path::PathBuf {
    let mut found = util::files_of_len(&data.join("objects"), len);
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

#[test]
fn verify_reports_and_drops_a_rotten_object_read_only_through_fds() {
    use std::os::unix::fs::FileExt;
    let d = daemon(&["--mem-capacity", "0", "--scrub-rate", "0"]);
    let rotten = util::pattern(12_345, 1);
    d.run_with_stdin(&["put", "/v/rotten", "-"], &rotten);
    d.run_with_stdin(&["put", "/v/fine", "-"], b"intact neighbour");
    d.run_with_stdin(&["put", "/w/other", "-"], b"elsewhere");
    // fd mode: the server hands out the descriptor and never reads the bytes.
    assert_eq!(d.ok(&["get", "/v/rotten", "--mode", "fd"]), rotten);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(object_file_of_len(&d.data, 12_345))
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, 999).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], 999).unwrap();

    let out = d.run(&["verify", "--prefix", "/v/"]);
    assert_eq!(out.status.code(), Some(1), "damage found: exit 1");
    let o = text(out.stdout.clone());
    assert!(o.contains("verified 2 objects"), "{o}");
    assert!(o.contains("1 damaged"), "{o}");
    assert!(
        o.lines()
            .any(|l| l.contains("/v/rotten") && l.contains("disk") && l.contains("checksum")),
        "{o}"
    );
    assert!(stderr(&out).contains("lost+found"), "{}", stderr(&out));
    // Dropped: NOT_FOUND (exit 1) in fd mode too; the neighbours are untouched.
    assert_eq!(
        d.run(&["get", "/v/rotten", "--mode", "fd"]).status.code(),
        Some(1)
    );
    assert_eq!(
        d.ok(&["get", "/v/fine", "--mode", "fd"]),
        b"intact neighbour"
    );
    // A second verify finds nothing (exit 0); --json gives the API's answer.
    let j = json(d.ok(&["verify", "--json"]));
    assert_eq!(j["damaged"].as_array().unwrap().len(), 0, "{j}");
    assert_eq!(j["objects"], 2);
    let st = json(d.ok(&["stats", "--json"]));
    assert_eq!(st["scrub"]["damage"], 1, "{st}");
    assert_eq!(
        st["scrub"]["passes"], 0,
        "--scrub-rate 0: no background pass"
    );
}
