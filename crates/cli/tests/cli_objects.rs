//! put / get / stat / rm / ping / bench through the `objmapper` binary against a real
//! `objmapper serve`, in fd and copy mode, with exit codes and error messages.

mod util;

use std::time::{Duration, Instant};

use util::{
    assert_fails_starting, assert_fails_with, objmapper, pattern, stderr, write_file, Daemon,
};

#[test]
fn put_get_roundtrip_in_every_mode_combination() {
    let d = Daemon::start(&[]);
    let data = pattern(10_000, 1);
    let file = write_file(&d.path("in"), &data);
    for put_mode in ["fd", "copy"] {
        let key = format!("obj-{put_mode}");
        d.ok(&["put", &key, &file, "--mode", put_mode]);
        for get_mode in ["fd", "copy"] {
            let got = d.ok(&["get", &key, "--mode", get_mode]);
            assert!(got == data, "put {put_mode} / get {get_mode}: bytes differ");
        }
    }
    // The default mode on a Unix socket is fd; it must work without --mode too.
    assert!(d.ok(&["get", "obj-copy"]) == data);
}

#[test]
fn three_mib_file_both_modes_and_output_file() {
    let d = Daemon::start(&[]);
    let data = pattern(3 << 20, 2);
    let file = write_file(&d.path("big"), &data);
    for mode in ["fd", "copy"] {
        let key = format!("big-{mode}");
        d.ok(&["put", &key, &file, "--mode", mode]);
        assert!(
            d.ok(&["get", &key, "--mode", mode]) == data,
            "{mode}: stdout differs"
        );
        let out = d.path(&format!("out-{mode}"));
        d.ok(&["get", &key, "--mode", mode, "-o", out.to_str().unwrap()]);
        assert!(
            std::fs::read(&out).unwrap() == data,
            "{mode}: -o file differs"
        );
        let stat = String::from_utf8(d.ok(&["stat", &key])).unwrap();
        assert!(stat.contains(&format!("size: {}\n", 3 << 20)), "{stat}");
    }
}

#[test]
fn stdin_input_through_a_pipe_and_a_redirect() {
    let d = Daemon::start(&[]);
    for (mode, len) in [
        ("fd", 1_500_000),
        ("copy", 1_500_000),
        ("fd", 0),
        ("copy", 7),
    ] {
        let data = pattern(len, len as u64 + 3);
        let key = format!("stdin-{mode}-{len}");
        let out = d.run_with_stdin(&["put", &key, "-", "--mode", mode], &data);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(d.ok(&["get", &key]) == data, "{mode} {len}: bytes differ");
    }
    // stdin redirected from a regular file (not a pipe).
    let data = pattern(200_000, 9);
    let file = d.path("redirect");
    std::fs::write(&file, &data).unwrap();
    let out = d
        .cmd(&["put", "redir", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.ok(&["get", "redir", "--mode", "copy"]) == data);
}

#[test]
fn stat_shows_size_and_all_metadata() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"hello");
    for mode in ["fd", "copy"] {
        let key = format!("meta-{mode}");
        d.ok(&[
            "put",
            &key,
            &file,
            "--mode",
            mode,
            "--content-type",
            "text/plain",
            "--meta",
            "lang=en",
            "--meta",
            "etag=\"x=1\"",
            "--durable",
        ]);
        let stat = String::from_utf8(d.ok(&["stat", &key])).unwrap();
        let lines: Vec<&str> = stat.lines().collect();
        assert!(lines.contains(&"size: 5"), "{stat}");
        assert!(
            lines.contains(&"content-type: text/plain"),
            "{mode}: {stat}"
        );
        assert!(lines.contains(&"meta.lang: en"), "{mode}: {stat}");
        assert!(lines.contains(&"meta.etag: \"x=1\""), "{mode}: {stat}");
        for field in ["version: ", "mtime: ", "mtime_ns: ", "checksum: xxh3-64:"] {
            assert!(
                lines.iter().any(|l| l.starts_with(field)),
                "{field} missing: {stat}"
            );
        }
        let mtime = lines.iter().find(|l| l.starts_with("mtime: ")).unwrap();
        assert!(mtime.ends_with('Z') && mtime.contains('T'), "{mtime}");
        let json = String::from_utf8(d.ok(&["stat", &key, "--json"])).unwrap();
        assert!(json.contains("\"size\":5"), "{json}");
        assert!(json.contains("\"content_type\":\"text/plain\""), "{json}");
        assert!(
            json.contains("{\"name\":\"lang\",\"value\":\"en\"}"),
            "{json}"
        );
    }
}

#[test]
fn missing_key_exits_1_with_the_servers_message() {
    let d = Daemon::start(&[]);
    for args in [
        &["get", "nope"][..],
        &["get", "nope", "--mode", "copy"],
        &["stat", "nope"],
    ] {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("objmapper: NOT_FOUND: "), "{args:?}: {err}");
        assert!(
            err.trim_end().len() > "objmapper: NOT_FOUND: ".len(),
            "no message: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    // No output file is left behind for a missing key.
    let out_file = d.path("never");
    let out = d.run(&["get", "nope", "-o", out_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_file.exists());
}

#[test]
fn rm_removes_and_reports_missing() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"x");
    d.ok(&["put", "gone", &file]);
    d.ok(&["rm", "gone"]);
    let out = d.run(&["get", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    let out = d.run(&["rm", "gone", "--durable"]);
    assert_fails_starting(&out, 1, "objmapper: NOT_FOUND");
}

#[test]
fn keys_are_opaque_bytes() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"secret");
    d.ok(&["put", "../../etc/passwd", &file]);
    assert_eq!(d.ok(&["get", "../../etc/passwd"]), b"secret");
    assert!(!d.data.join("etc").exists());
    let long = "k".repeat(4097);
    let out = d.run(&["get", &long]);
    assert_fails_with(&out, 1, "4096");
}

#[test]
fn usage_errors_exit_2() {
    let out = objmapper().args(["get", "k", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = objmapper().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = objmapper()
        .args(["bench", "--size", "12Q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn fd_mode_over_tcp_fails_fast_and_clearly() {
    // Port 1 on localhost: nothing listens, and nothing must be tried.
    for args in [
        &["get", "k", "--tcp", "127.0.0.1:1", "--mode", "fd"][..],
        &[
            "put",
            "k",
            "/dev/null",
            "--tcp",
            "127.0.0.1:1",
            "--mode",
            "fd",
        ],
        &["ping", "--tcp", "127.0.0.1:1", "--mode", "fd"],
    ] {
        let t = Instant::now();
        let out = objmapper().args(args).output().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("--mode fd") && err.contains("TCP"), "{err}");
    }
}

#[test]
fn copy_mode_over_tcp() {
    let d = Daemon::start(&["--tcp", "127.0.0.1:0"]);
    let addr = d.tcp_addr();
    let data = pattern(300_000, 5);
    let file = write_file(&d.path("in"), &data);
    let tcp = |args: &[&str]| -> Vec<u8> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--tcp", &addr]);
        let out = objmapper().args(&all).output().unwrap();
        util::check_ok(&all, out)
    };
    tcp(&["put", "t", &file]); // copy is the default over TCP
    assert!(tcp(&["get", "t"]) == data);
    assert!(tcp(&["get", "t", "--mode", "copy"]) == data);
    assert!(
        d.ok(&["get", "t"]) == data,
        "fd mode on the Unix socket sees it too"
    );
    tcp(&["ping"]);
    tcp(&["rm", "t"]);
}

#[test]
fn connection_failure_names_the_socket_and_suggests_serve() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody-home.sock");
    let out = objmapper()
        .args(["get", "k", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&*sock.to_string_lossy()), "{err}");
    assert!(err.contains("objmapper serve"), "{err}");
    // The environment variable is honoured too.
    let out = objmapper()
        .args(["ping"])
        .env("OBJMAPPER_SOCKET", &sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&*sock.to_string_lossy()));
}

#[test]
fn ping_and_env_socket() {
    let d = Daemon::start(&[]);
    let out = objmapper()
        .arg("ping")
        .env("OBJMAPPER_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"));
}

#[test]
fn bench_runs_and_reports_json() {
    let d = Daemon::start(&[]);
    for mode in ["fd", "copy"] {
        let out = d.run(&[
            "bench",
            "--mode",
            mode,
            "--keys",
            "20",
            "--size",
            "8K",
            "--requests",
            "500",
            "--connections",
            "2",
            "--json",
            "-q",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json = String::from_utf8(out.stdout).unwrap();
        for field in [
            "\"ops_per_sec\":",
            "\"mb_per_sec\":",
            "\"p50_us\":",
            "\"p99_us\":",
            "\"p999_us\":",
            "\"max_us\":",
            "\"duration_s\":",
            "\"connections\":2",
            "\"size\":8192",
            "\"errors\":0",
            "\"ops\":500",
        ] {
            assert!(json.contains(field), "{field} missing: {json}");
        }
        assert!(json.contains(&format!("\"mode\":\"{mode}\"")), "{json}");
    }
    // Benchmark objects are cleaned up unless --keep.
    assert_eq!(d.run(&["stat", "objmapper-bench/0"]).status.code(), Some(1));
    // The human table.
    let out = d.run(&["bench", "--keys", "5", "--duration", "0.3", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("ops/s") && table.contains("p99"), "{table}");
}
