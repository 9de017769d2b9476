//! `objmapper put --recursive DIR PREFIX` against a real daemon: a nested tree stored and
//! read back byte for byte, symbolic links and special files skipped, and the error paths
//! (missing DIR, DIR not a directory, files that fail).

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use util::{assert_fails_with, pattern, stderr, Daemon};

/// Builds a nested tree under `root`; returns relative path -> contents.
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let files: &[(&str, usize)] = &[
        ("index.html", 1234),
        ("empty", 0),
        ("one", 1),
        ("a/b/c/deep.bin", 100_000),
        ("a/b/sibling", 4096),
        ("a/large.bin", 2 << 20),
        ("with space/and-dash_.txt", 77),
        ("0/1/2/3/4/5/6/7", 9000),
    ];
    let mut out = BTreeMap::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let body = pattern(*len, i as u64 + 11);
        std::fs::write(&p, &body).unwrap();
        out.insert(rel.to_string(), body);
    }
    std::fs::create_dir_all(root.join("an/empty/dir")).unwrap();
    out
}

fn summary_field(stdout: &str, after: &str) -> u64 {
    // "stored N files, B bytes in S s (X MB/s); K skipped, E failed"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.trim_end_matches(',') == after)
        .unwrap();
    words[i - 1].parse().unwrap()
}

#[test]
fn a_nested_tree_is_stored_under_the_prefix_and_reads_back() {
    let d = Daemon::start(&[]);
    let root = d.path("tree");
    let tree = make_tree(&root);
    // Never followed: a link to a file outside the tree, a link to a directory, a FIFO.
    let outside = d.path("outside.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/link-out")).unwrap();
    std::os::unix::fs::symlink(d.path("tree/a"), root.join("dirlink")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();

    let out = d.run(&[
        "put",
        "--recursive",
        root.to_str().unwrap(),
        "site/",
        "--jobs",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        summary_field(&stdout, "files"),
        tree.len() as u64,
        "{stdout}"
    );
    let total: usize = tree.values().map(Vec::len).sum();
    assert_eq!(summary_field(&stdout, "bytes"), total as u64, "{stdout}");
    assert_eq!(summary_field(&stdout, "skipped"), 3, "{stdout}");
    assert_eq!(summary_field(&stdout, "failed"), 0, "{stdout}");
    let err = stderr(&out);
    for skipped in [
        "a/link-out (a symbolic link",
        "dirlink (a symbolic link",
        "fifo (a FIFO",
    ] {
        assert!(err.contains(skipped), "no warning for {skipped}: {err}");
    }

    for (rel, body) in &tree {
        let key = format!("site/{rel}");
        assert_eq!(&d.ok(&["get", &key]), body, "{key}");
    }
    for never in ["site/a/link-out", "site/dirlink/large.bin", "site/fifo"] {
        assert_eq!(d.run(&["get", never]).status.code(), Some(1), "{never}");
    }
}

#[test]
fn copy_mode_over_tcp_and_an_empty_prefix() {
    let d = Daemon::start(&["--tcp", "127.0.0.1:0"]);
    let root = d.path("tree");
    let tree = make_tree(&root);
    let tcp = d.tcp_addr();
    let out = d.run(&["put", "-r", root.to_str().unwrap(), "", "--tcp", &tcp]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (rel, body) in &tree {
        assert_eq!(&d.ok(&["get", rel]), body, "{rel}");
    }
}

#[test]
fn failing_files_are_named_and_the_rest_is_stored() {
    use std::os::unix::fs::PermissionsExt;
    // Permissions do not stop root, so as root the client runs as nobody (setpriv), with
    // the socket, the allowlist and the tree opened up to it; only the one file stays
    // unreadable.
    let root_user = rustix::process::geteuid().is_root();
    let d = Daemon::start(&[
        "--max-object-size",
        "64K",
        "--socket-mode",
        "666",
        "--allow-uid",
        "65534=read,write",
    ]);
    let tree = d.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("ok1"), b"fine").unwrap();
    std::fs::write(tree.join("sub/too-big"), pattern(100_000, 1)).unwrap();
    std::fs::write(tree.join("sub/ok2"), b"also fine").unwrap();
    let unreadable = tree.join("unreadable");
    std::fs::write(&unreadable, b"x").unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    let failing = ["sub/too-big: OBJECT_TOO_LARGE", "unreadable: cannot open"];

    let args = ["put", "-r", tree.to_str().unwrap(), "p/", "-j", "2"];
    let out = if root_user {
        let open = std::fs::Permissions::from_mode(0o755);
        for p in [d.dir.path(), &tree, &tree.join("sub")] {
            std::fs::set_permissions(p, open.clone()).unwrap();
        }
        for f in ["ok1", "sub/too-big", "sub/ok2"] {
            std::fs::set_permissions(tree.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            util::BIN,
        ]);
        for (k, v) in util::objmapper().get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.args(args)
            .arg("--socket")
            .arg(&d.socket)
            .output()
            .unwrap()
    } else {
        d.run(&args)
    };
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for f in &failing {
        assert!(
            err.contains(&format!("failed: {}/{f}", tree.display())),
            "{f}: {err}"
        );
    }
    assert!(err.contains("2 of 4 files failed"), "{err}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(summary_field(&stdout, "files"), 2, "{stdout}");
    assert_eq!(summary_field(&stdout, "failed"), 2, "{stdout}");
    assert_eq!(d.ok(&["get", "p/ok1"]), b"fine");
    assert_eq!(d.ok(&["get", "p/sub/ok2"]), b"also fine");
    assert_eq!(d.run(&["get", "p/sub/too-big"]).status.code(), Some(1));
    assert_eq!(d.run(&["get", "p/unreadable"]).status.code(), Some(1));
}

#[test]
fn a_missing_or_non_directory_dir_is_an_error() {
    let d = Daemon::start(&[]);
    let missing = d.path("no-such-dir");
    let out = d.run(&["put", "-r", missing.to_str().unwrap(), "p/"]);
    assert_fails_with(
        &out,
        1,
        &format!("cannot read directory {}", missing.display()),
    );

    let file = util::write_file(&d.path("plain"), b"x");
    let out = d.run(&["put", "-r", &file, "p/"]);
    assert_fails_with(&out, 2, "is not one");

    // No server: refused before the tree is walked, with the hint.
    let out = util::objmapper()
        .args([
            "put",
            "-r",
            d.dir.path().to_str().unwrap(),
            "p/",
            "--socket",
        ])
        .arg(d.path("nobody-here.sock"))
        .output()
        .unwrap();
    assert_fails_with(&out, 1, "is the server running?");
    assert!(out.stdout.is_empty(), "no summary without a server");

    // --jobs only makes sense with --recursive; --if-version not at all with it.
    let out = d.run(&["put", "k", &file, "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = d.run(&[
        "put",
        "-r",
        d.path("").to_str().unwrap(),
        "p/",
        "--if-version",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
