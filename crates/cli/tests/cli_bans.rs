//! `objmapper ban` and `objmapper bans` against a real daemon, a ban that survives
//! `kill -9`, and the Rust client's `Client::ban`.

mod util;

use objmapper_client::Client;
use util::*;

fn get_fails(d: &Daemon, key: &str) -> String {
    let out = d.run(&["get", key]);
    assert!(!out.status.success(), "{key} is still served");
    stderr(&out)
}

#[test]
fn ban_and_bans_commands_and_a_ban_that_survives_kill_9() {
    let mut d = Daemon::start(&[]);
    let file = write_file(&d.path("v"), b"value");
    for k in ["varnish:a/1", "varnish:a/2", "varnish:b/1"] {
        d.ok(&["put", k, &file, "--durable"]);
    }
    d.ok(&[
        "put",
        "tagged",
        &file,
        "--durable",
        "--meta",
        "tags=x,product-42",
    ]);

    let out = String::from_utf8(d.ok(&["ban", r#"key ^ "varnish:a/""#])).unwrap();
    assert!(out.starts_with("ban added (stamp "), "{out}");
    d.ok(&["ban", r#"meta.tags has "product-42""#]);
    assert!(get_fails(&d, "varnish:a/1").contains("NOT_FOUND"));
    get_fails(&d, "tagged");
    assert_eq!(d.ok(&["get", "varnish:b/1"]), b"value");
    let ls = String::from_utf8(d.ok(&["ls"])).unwrap();
    assert!(
        ls.contains("varnish:b/1") && !ls.contains("varnish:a/"),
        "{ls}"
    );

    let bans = String::from_utf8(d.ok(&["bans"])).unwrap();
    assert!(bans.contains(r#"key ^ "varnish:a/""#), "{bans}");
    assert!(bans.contains("2 active"), "{bans}");
    let json: serde_json::Value = serde_json::from_slice(&d.ok(&["bans", "--json"])).unwrap();
    assert_eq!(json["count"], 2);

    // A bad expression: a clear error and a failing exit status.
    let out = d.run(&["ban", r#"key == "unterminated"#]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unterminated") && err.contains("at byte 7"),
        "{err}"
    );

    // kill -9: the ban is in force after the restart, and a new commit is served.
    let st = d.stop_with(rustix::process::Signal::KILL);
    assert!(!st.success());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let d = Daemon::start_at(dir, d.socket.clone(), d.data.clone(), &[]);
    get_fails(&d, "varnish:a/2");
    get_fails(&d, "tagged");
    assert_eq!(d.ok(&["get", "varnish:b/1"]), b"value");
    d.ok(&["put", "varnish:a/2", &file]);
    assert_eq!(d.ok(&["get", "varnish:a/2"]), b"value");
}

#[test]
fn the_rust_client_bans() {
    let d = Daemon::start(&[]);
    let mut c = Client::connect(&d.socket).unwrap();
    c.put(b"k\n1", b"v", &Default::default()).unwrap();
    let stamp = c.ban(br#"key ^ "k\n""#).unwrap();
    assert!(stamp > 0);
    assert!(c.head(b"k\n1").unwrap_err().is_not_found());
    let e = c.ban(b"key").unwrap_err();
    assert!(e.to_string().contains("at byte 3"), "{e}");
    assert!(c.ban(b"").is_err());
    // The connection is still usable.
    c.ping().unwrap();
}
