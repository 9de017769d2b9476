//! Transports, modes, ranges, conditional writes and pipelining through the `objmapper`
//! binary against a real `objmapper serve`: exit codes and messages included.

mod util;

use std::time::{Duration, Instant};

use objmapper_client::{Client, GetOptions, Mode};
use util::{assert_fails_starting, objmapper, pattern, stderr, write_file, Daemon};

/// `objmapper <args>` (no --socket added), which must succeed; its stdout.
fn ok(args: &[&str]) -> Vec<u8> {
    util::check_ok(args, objmapper().args(args).output().unwrap())
}

fn version_of(d: &Daemon, key: &str) -> u64 {
    let json = String::from_utf8(d.ok(&["stat", key, "--json"])).unwrap();
    let v = json.split("\"version\":").nth(1).unwrap();
    v.split(',').next().unwrap().parse().unwrap()
}

#[test]
fn range_reads_in_every_mode_and_transport() {
    let d = Daemon::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (tcp, udp) = (d.tcp_addr(), d.udp_addr());
    let data = pattern(10_000, 11);
    let file = write_file(&d.path("in"), &data);
    d.ok(&["put", "r", &file]);
    // (An END past the end is left out: the stream server refuses it, UDP cuts it.)
    let cases: [(&str, &[u8]); 5] = [
        ("100-199", &data[100..200]),
        ("0-0", &data[..1]),
        ("9990-", &data[9990..]),
        ("9990-9999", &data[9990..]),
        ("0-", &data[..]),
    ];
    for (range, want) in cases {
        for mode in ["fd", "copy", "splice", "auto", "best"] {
            let got = d.ok(&["get", "r", "--range", range, "--mode", mode]);
            assert!(got == want, "unix {mode} {range}: bytes differ");
        }
        for mode in ["copy", "splice", "auto"] {
            let got = ok(&["get", "r", "--tcp", &tcp, "--range", range, "--mode", mode]);
            assert!(got == want, "tcp {mode} {range}: bytes differ");
        }
        let got = ok(&["get", "r", "--udp", &udp, "--range", range]);
        assert!(got == want, "udp {range}: bytes differ");
    }
    // To a file too.
    let out = d.path("part");
    d.ok(&["get", "r", "--range", "5-9", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), &data[5..10]);
    // Starting past the end: exit 1 with the server's status and message, and no output
    // file left behind. (A start exactly at the end is left out: the stream server
    // answers an empty range, UDP refuses it.)
    for extra in [
        &[][..],
        &["--mode", "copy"],
        &["--transport", "tcp", "--tcp", &tcp],
        &["--transport", "udp", "--udp", &udp],
    ] {
        let out_file = d.path("never");
        let mut args = vec![
            "get",
            "r",
            "--range",
            "20000-",
            "-o",
            out_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = objmapper()
            .args(&args)
            .arg("--socket")
            .arg(&d.socket)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with("objmapper: RANGE_NOT_SATISFIABLE: "),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!out_file.exists());
    }
    // Malformed ranges are usage errors.
    for bad in ["-5", "9-3", "x-", "5"] {
        let out = d.run(&["get", "r", "--range", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
}

#[test]
fn conditional_writes_exit_1_with_the_servers_message() {
    let d = Daemon::start(&[]);
    let v1 = write_file(&d.path("v1"), b"one");
    let v2 = write_file(&d.path("v2"), b"two");
    for mode in ["fd", "copy", "splice"] {
        let key = format!("cas-{mode}");
        // IF_ABSENT on a new key stores; on an existing one it is refused.
        d.ok(&["put", &key, &v1, "--if-absent", "--mode", mode]);
        let out = d.run(&["put", &key, &v2, "--if-absent", "--mode", mode]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("objmapper: PRECONDITION_FAILED: ")
                && err.trim_end().len() > "objmapper: PRECONDITION_FAILED: ".len(),
            "{mode}: {err}"
        );
        assert_eq!(d.ok(&["get", &key]), b"one");
        // IF_VERSION: the wrong version is refused, the right one stores.
        let v = version_of(&d, &key);
        let wrong = (v + 1000).to_string();
        let out = d.run(&["put", &key, &v2, "--if-version", &wrong, "--mode", mode]);
        assert_eq!(out.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&out).starts_with("objmapper: PRECONDITION_FAILED: "),
            "{mode}: {}",
            stderr(&out)
        );
        assert_eq!(d.ok(&["get", &key]), b"one");
        d.ok(&[
            "put",
            &key,
            &v2,
            "--if-version",
            &v.to_string(),
            "--mode",
            mode,
        ]);
        assert_eq!(d.ok(&["get", &key]), b"two");
        // rm --if-version likewise.
        let v = version_of(&d, &key);
        let out = d.run(&["rm", &key, "--if-version", &(v + 1).to_string()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).starts_with("objmapper: PRECONDITION_FAILED: "));
        d.ok(&["rm", &key, "--if-version", &v.to_string(), "--durable"]);
        assert_eq!(d.run(&["stat", &key]).status.code(), Some(1));
    }
    // Both conditions at once: a usage error, nothing sent.
    let out = d.run(&["put", "x", &v1, "--if-absent", "--if-version", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(d.run(&["stat", "x"]).status.code(), Some(1));
}

#[test]
fn impossible_transport_and_mode_combinations_fail_fast_with_exit_2() {
    // Nothing listens on these ports, and nothing must be tried.
    for (args, needles) in [
        (
            &["get", "k", "--transport", "tcp", "--mode", "fd"][..],
            &["--mode fd", "TCP"][..],
        ),
        (
            &["get", "k", "--udp", "127.0.0.1:1", "--mode", "fd"],
            &["--mode fd", "UDP"],
        ),
        (
            &["get", "k", "--transport", "udp", "--mode", "splice"],
            &["--mode splice", "UDP"],
        ),
        (
            &["stat", "k", "--transport", "udp", "--mode", "fd"],
            &["UDP"],
        ),
        (
            &["put", "k", "/dev/null", "--transport", "udp"],
            &["put is not available over UDP"],
        ),
        (
            &["rm", "k", "--udp", "127.0.0.1:1"],
            &["rm is not available over UDP"],
        ),
        (
            &["pin", "k", "--transport", "udp"],
            &["pin is not available over UDP"],
        ),
        (&["unpin", "k", "--transport", "udp"], &["unpin"]),
        (
            &["bench", "--transport", "udp", "--pipeline", "4"],
            &["--pipeline", "UDP"],
        ),
        (
            &["ping", "--tcp", "127.0.0.1:1", "--udp", "127.0.0.1:1"],
            &["--transport"],
        ),
        (
            &["ping", "--transport", "unix", "--tcp", "127.0.0.1:1"],
            &["contradict"],
        ),
        (&["get", "k", "--mode", "sideways"], &["sideways"]),
    ] {
        let t = Instant::now();
        let out = objmapper().args(args).output().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{args:?} was slow");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
        }
    }
}

#[test]
fn udp_serves_get_stat_and_ping_of_small_objects() {
    let d = Daemon::start(&["--udp", "127.0.0.1:0", "--udp-max-response", "4K"]);
    let udp = d.udp_addr();
    let small = pattern(1000, 3);
    d.ok(&["put", "small", &write_file(&d.path("s"), &small)]);
    d.ok(&["put", "big", &write_file(&d.path("b"), &pattern(8000, 4))]);
    assert!(ok(&["get", "small", "--udp", &udp]) == small);
    assert!(ok(&["get", "small", "--udp", &udp, "--mode", "auto"]) == small);
    let stat = String::from_utf8(ok(&["stat", "small", "--udp", &udp])).unwrap();
    assert!(stat.contains("size: 1000\n"), "{stat}");
    let ping = String::from_utf8(ok(&["ping", "--udp", &udp])).unwrap();
    assert!(
        ping.starts_with(&format!("ok: udp {udp} answered in ")),
        "{ping}"
    );
    // Over the server's --udp-max-response: the server's status, exit 1; a range fits.
    let out = objmapper()
        .args(["get", "big", "--udp", &udp])
        .output()
        .unwrap();
    assert_fails_starting(&out, 1, "objmapper: RESPONSE_TOO_LARGE: ");
    assert_eq!(
        ok(&["get", "big", "--udp", &udp, "--range", "0-99"]).len(),
        100
    );
    // Missing key: NOT_FOUND, exit 1.
    let out = objmapper()
        .args(["stat", "nope", "--udp", &udp])
        .output()
        .unwrap();
    assert_fails_starting(&out, 1, "objmapper: NOT_FOUND");
}

#[test]
fn serve_tcp_and_udp_flags_without_an_address_use_the_defaults() {
    // The defaults are fixed ports; skip if something else holds them.
    let free = std::net::TcpListener::bind("127.0.0.1:9999").is_ok()
        && std::net::UdpSocket::bind("127.0.0.1:9998").is_ok();
    if !free {
        eprintln!("skipped: 127.0.0.1:9999/tcp or 127.0.0.1:9998/udp is in use");
        return;
    }
    let d = Daemon::start(&["--tcp", "--udp"]);
    assert_eq!(d.tcp_addr(), "127.0.0.1:9999");
    assert_eq!(d.udp_addr(), "127.0.0.1:9998");
    // The clients' defaults are the same addresses.
    let out = String::from_utf8(ok(&["ping", "--transport", "tcp"])).unwrap();
    assert!(out.starts_with("ok: tcp 127.0.0.1:9999 "), "{out}");
    let out = String::from_utf8(ok(&["ping", "--transport", "udp"])).unwrap();
    assert!(out.starts_with("ok: udp 127.0.0.1:9998 "), "{out}");
}

#[test]
fn auto_fd_threshold_is_wired_by_flag_and_environment() {
    let by_flag = Daemon::start(&["--auto-fd-threshold", "2K"]);
    let by_env = Daemon::start_env(&[], &[("OBJMAPPER_AUTO_FD_THRESHOLD", "2K")]);
    let default = Daemon::start(&[]);
    for (d, small_is_fd) in [(&by_flag, false), (&by_env, false), (&default, false)] {
        d.ok(&["put", "small", &write_file(&d.path("s"), &pattern(1000, 1))]);
        d.ok(&["put", "mid", &write_file(&d.path("m"), &pattern(3000, 2))]);
        let mut c = Client::connect(&d.socket).unwrap();
        let auto = GetOptions::default().mode(Mode::Auto);
        assert_eq!(c.get_with(b"small", &auto).unwrap().is_fd(), small_is_fd);
        let mid_is_fd = c.get_with(b"mid", &auto).unwrap().is_fd();
        assert_eq!(
            mid_is_fd,
            !std::ptr::eq(d, &default),
            "3000 bytes vs threshold"
        );
    }
}

#[test]
fn put_and_get_in_the_new_modes_over_unix_and_tcp() {
    let d = Daemon::start(&["--tcp", "127.0.0.1:0"]);
    let tcp = d.tcp_addr();
    let data = pattern(200_000, 8);
    let file = write_file(&d.path("in"), &data);
    for put_mode in ["splice", "auto", "best"] {
        let key = format!("u-{put_mode}");
        d.ok(&["put", &key, &file, "--mode", put_mode]);
        for get_mode in ["splice", "auto", "best"] {
            assert!(
                d.ok(&["get", &key, "--mode", get_mode]) == data,
                "{put_mode}/{get_mode}"
            );
        }
    }
    for put_mode in ["copy", "splice", "auto", "best"] {
        let key = format!("t-{put_mode}");
        ok(&["put", &key, &file, "--tcp", &tcp, "--mode", put_mode]);
        for get_mode in ["copy", "splice", "auto", "best"] {
            let got = ok(&[
                "get",
                &key,
                "--transport",
                "tcp",
                "--tcp",
                &tcp,
                "--mode",
                get_mode,
            ]);
            assert!(got == data, "tcp {put_mode}/{get_mode}");
        }
    }
}

#[test]
fn bench_pipelines_over_every_transport() {
    let d = Daemon::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (tcp, udp) = (d.tcp_addr(), d.udp_addr());
    let run = |extra: &[&str]| -> String {
        let mut args = vec![
            "bench",
            "--keys",
            "20",
            "--size",
            "2K",
            "--requests",
            "400",
            "--connections",
            "2",
            "--json",
            "-q",
        ];
        args.extend_from_slice(extra);
        let out = d.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let json = String::from_utf8(out.stdout).unwrap();
        for f in [
            "\"errors\":0",
            "\"ops\":400",
            "\"connections\":2",
            "\"size\":2048",
        ] {
            assert!(json.contains(f), "{args:?}: {f} missing in {json}");
        }
        json
    };
    for mode in ["fd", "copy", "splice", "auto"] {
        let j = run(&["--pipeline", "8", "--mode", mode]);
        for f in [
            &format!("\"mode\":\"{mode}\""),
            "\"transport\":\"unix\"",
            "\"protocol\":\"v2\"",
            "\"pipeline\":8",
        ] {
            assert!(j.contains(f), "{f} missing in {j}");
        }
    }
    let j = run(&["--pipeline", "1"]);
    assert!(
        j.contains("\"pipeline\":1") && j.contains("\"protocol\":\"v2\""),
        "{j}"
    );
    let j = run(&[]);
    assert!(
        j.contains("\"pipeline\":1") && j.contains("\"protocol\":\"v1\""),
        "{j}"
    );
    assert!(j.contains("\"mode\":\"fd\""), "best on unix is fd: {j}");
    let j = run(&["--tcp", &tcp, "--pipeline", "16", "--mode", "splice"]);
    assert!(
        j.contains("\"transport\":\"tcp\"") && j.contains("\"pipeline\":16"),
        "{j}"
    );
    let j = run(&["--transport", "udp", "--udp", &udp]);
    assert!(
        j.contains("\"transport\":\"udp\"") && j.contains("\"mode\":\"copy\""),
        "{j}"
    );
    // The table names transport and pipeline too.
    let out = d.run(&[
        "bench",
        "--keys",
        "5",
        "--requests",
        "50",
        "--pipeline",
        "4",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("over Unix socket (V2, 4 in flight)"),
        "{table}"
    );
    // Benchmark objects are cleaned up.
    assert_eq!(d.run(&["stat", "objmapper-bench/0"]).status.code(), Some(1));
}
