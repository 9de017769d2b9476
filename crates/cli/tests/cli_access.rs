//! The allowlist, end to end: `objmapper serve` with a world-writable socket (0666, so
//! the file mode lets everyone connect and only the allowlist can refuse), and clients run
//! under other uids with setpriv(1). Needs root (to change uid); skipped with a message
//! otherwise.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use util::*;

fn start(extra: &[&str]) -> (Daemon, PathBuf) {
    let mut args = vec!["--socket-mode", "666"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = public_binary(d.dir.path());
    (d, bin)
}

#[test]
fn a_uid_not_on_the_allowlist_is_refused_with_forbidden_and_logged() {
    if !is_root() {
        eprintln!("SKIPPED: changing uid needs root; run the suite as root (CI does)");
        return;
    }
    let (d, bin) = start(&[]);
    let file = write_file(&d.path("in"), b"secret");
    d.ok(&["put", "k", &file]);

    for args in [&["get", "k"][..], &["ping"], &["put", "k2", "/dev/null"]] {
        let out = run_as(65534, 65534, &bin, &d, args);
        assert!(!out.status.success(), "{args:?} as nobody succeeded");
        let err = stderr(&out);
        assert!(err.contains("FORBIDDEN"), "{args:?}: {err}");
        assert!(
            err.contains("uid 65534"),
            "the message names the peer: {err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));
    }
    // Logged with pid, uid and gid.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused a connection") && l.contains("uid=65534"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        line.contains("pid=") && line.contains("gid=65534"),
        "{line}"
    );
    // Our own uid still does everything, and nothing changed.
    assert_eq!(d.ok(&["get", "k"]), b"secret");
    assert!(d.run(&["get", "k2"]).status.code() == Some(1));
}

#[test]
fn grants_per_uid_and_per_gid_allow_exactly_their_ops() {
    if !is_root() {
        eprintln!("SKIPPED: changing uid needs root; run the suite as root (CI does)");
        return;
    }
    let (d, bin) = start(&[
        "--allow-uid",
        "65533=read",
        "--allow-gid",
        "65532=read,write",
    ]);
    let file = write_file(&d.path("in"), b"v1");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.ok(&["put", "k", &file]);

    // read only: GET and HEAD work, PUT and DELETE are FORBIDDEN, the connection lives on.
    let out = run_as(65533, 65533, &bin, &d, &["get", "k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"v1");
    assert!(run_as(65533, 65533, &bin, &d, &["stat", "k"])
        .status
        .success());
    for args in [&["put", "k", &file][..], &["rm", "k"], &["pin", "k"]] {
        let out = run_as(65533, 65533, &bin, &d, args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("FORBIDDEN") && err.contains("write"), "{err}");
    }
    assert_eq!(d.ok(&["get", "k"]), b"v1", "nothing changed");

    // By primary gid: read and write.
    let out = run_as(65531, 65532, &bin, &d, &["put", "k", "/dev/null"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.ok(&["get", "k"]), b"");
    // The same uid in another group has nothing.
    let out = run_as(65531, 65530, &bin, &d, &["get", "k"]);
    assert!(stderr(&out).contains("FORBIDDEN"));
}

#[test]
fn our_own_uid_can_be_restricted_and_a_bad_grant_is_a_usage_error() {
    let out = objmapper()
        .args([
            "serve",
            "--allow-uid",
            "1000=execute",
            "--socket",
            "/nonexistent/x",
        ])
        .output()
        .unwrap();
    assert_fails_with(&out, 2, "unknown permission");

    let me = rustix::process::geteuid().as_raw().to_string();
    let grant = format!("{me}=read");
    let d = Daemon::start(&["--allow-uid", &grant]);
    let file = write_file(&d.path("in"), b"x");
    let out = d.run(&["put", "k", &file]);
    assert_fails_with(&out, 1, "FORBIDDEN");
    assert_eq!(
        d.run(&["get", "k"]).status.code(),
        Some(1),
        "not found, not forbidden"
    );
    assert!(!stderr(&d.run(&["get", "k"])).contains("FORBIDDEN"));
}

#[test]
fn tcp_beyond_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_on(&dir.path().join("s"), dir.path())
        .args(["--tcp", "0.0.0.0:0"])
        .output()
        .unwrap();
    // A configuration error (exit 78): restarting will not help.
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not a loopback address") && err.contains("TLS"),
        "{err}"
    );
}
