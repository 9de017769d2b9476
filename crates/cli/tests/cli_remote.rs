//! The remote tier's settings from the outside: a bad URL or an unsafe credentials file
//! is a configuration error (exit 78) with a message that says what to fix, and no
//! secret ever reaches `--print-config` or the log.

mod util;

#[path = "../../remote/tests/util/mod.rs"]
mod seaweed;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use util::{objmapper, stderr, Daemon};

#[test]
fn a_bad_remote_url_is_a_configuration_error() {
    for (url, why) in [("http://bucket/p", "s3://"), ("s3://", "bucket")] {
        let out = objmapper()
            .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
            .args(["--remote", url])
            .output()
            .unwrap();
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{url}: {e}");
        assert!(e.contains("configuration error: remote"), "{url}: {e}");
        assert!(e.contains(why), "{url}: {e}");
    }
}

#[test]
fn a_plain_http_endpoint_off_this_host_is_a_configuration_error() {
    for (endpoint, ok) in [
        ("http://10.1.2.3:8333", false),
        ("http://localhost.example.com:9000", false),
        ("s3.example.net", false),
        ("http://127.0.0.1:8333", true),
        ("https://10.1.2.3:8443", true),
    ] {
        let out = objmapper()
            .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
            .args(["--remote", "s3://bucket/p", "--remote-endpoint", endpoint])
            .output()
            .unwrap();
        let e = stderr(&out);
        if ok {
            assert!(out.status.success(), "{endpoint}: {e}");
            continue;
        }
        assert_eq!(out.status.code(), Some(78), "{endpoint}: {e}");
        assert!(e.contains("configuration error: remote"), "{endpoint}: {e}");
        assert!(e.contains("https://"), "{endpoint}: {e}");
    }
}

#[test]
fn print_config_shows_the_remote_settings_and_never_a_secret() {
    let out = objmapper()
        .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
        .args([
            "--remote",
            "s3://cache/objm",
            "--remote-endpoint",
            "http://127.0.0.1:8333",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
        .env("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("\n[remote]\nurl = \"s3://cache/objm\"\n"), "{t}");
    assert!(t.contains("endpoint = \"http://127.0.0.1:8333\""), "{t}");
    assert!(!t.contains("very-secret-value-123"), "{t}");
    assert!(!t.contains("AKIAEXAMPLEKEYID"), "{t}");
}

/// `--remote-timeout` (and its variable and key) takes a bound below a second, as a
/// cache's own client timeout may be (Varnish's 0.25 s, nginx's 500 ms), and prints it
/// back so that it reads again; zero stays refused, and the remote tier's other
/// durations stay whole seconds.
#[test]
fn the_remote_timeout_can_be_below_a_second() {
    let remote = ["--remote", "s3://cache/objm"];
    let t = util::print_config(&[&remote[..], &["--remote-timeout", "250ms"]].concat(), &[]);
    assert_eq!(util::printed_value(&t, "timeout"), "\"250ms\"", "{t}");
    let t = util::print_config(&remote, &[("OBJMAPPER_REMOTE_TIMEOUT", "500ms")]);
    assert_eq!(util::printed_value(&t, "timeout"), "\"500ms\"", "{t}");
    let t = util::print_config(
        &[&remote[..], &["--remote-transfer-timeout", "1500ms"]].concat(),
        &[],
    );
    assert_eq!(
        util::printed_value(&t, "transfer_timeout"),
        "\"1500ms\"",
        "{t}"
    );
    // The printed file reads back.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("objmapper.toml");
    std::fs::write(
        &conf,
        "[remote]\nurl = \"s3://cache/objm\"\ntimeout = \"250ms\"\n",
    )
    .unwrap();
    let t = util::print_config(&["--config", conf.to_str().unwrap()], &[]);
    assert_eq!(util::printed_value(&t, "timeout"), "\"250ms\"", "{t}");
    for (flag, value, want) in [
        ("--remote-timeout", "0ms", "is zero: give at least 1ms"),
        ("--remote-timeout", "0", "is zero"),
        ("--remote-poll-interval", "500ms", "is not a duration"),
    ] {
        let out = util::print_config_output(&[&remote[..], &[flag, value]].concat(), &[]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {e}");
        assert!(e.contains(want), "{flag} {value}: {e}");
    }
}

/// Remote tier settings without a URL would leave the tier off without a word: a
/// `[remote]` table without `url`, or a `--remote-*` flag or variable without
/// `--remote`, is a configuration error (exit 78) that names them, before the store is
/// opened; `--print-config` of a server without the tier leaves `[remote]` out, so its
/// output reads back.
#[test]
fn remote_settings_without_a_url_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("objmapper.toml");
    let c = conf.to_str().unwrap();
    std::fs::write(
        &conf,
        "[remote]\nendpoint = \"http://127.0.0.1:8333\"\ncredentials_file = \"/etc/k\"\n",
    )
    .unwrap();
    for (args, env, want) in [
        (
            &["--config", c][..],
            &[][..],
            "[remote] endpoint (--remote-endpoint",
        ),
        (
            &["--config", c],
            &[],
            "credentials_file (--remote-credentials-file",
        ),
        (
            &["--remote-timeout", "2s"],
            &[],
            "[remote] timeout (--remote-timeout",
        ),
        (&[], &[("OBJMAPPER_REMOTE_MAX_FETCHES", "8")], "max_fetches"),
    ] {
        let out = util::print_config_output(args, env);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {e}");
        assert!(e.contains(want) && e.contains("no url"), "{args:?}: {e}");
    }
    // serve refuses it before the store is opened: no data directory is made.
    let out = objmapper()
        .args(["serve", "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--config", c])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(!dir.path().join("data").exists());
    // With the URL, from any layer, the same table is taken.
    let t = util::print_config(&["--config", c, "--remote", "s3://cache/objm"], &[]);
    assert!(t.contains("endpoint = \"http://127.0.0.1:8333\""), "{t}");
    // Without the tier, the printed configuration has no [remote] and reads back.
    let t = util::print_config(&[], &[]);
    assert!(!t.contains("\n[remote]"), "{t}");
    assert!(t.contains("# The remote tier is off"), "{t}");
    std::fs::write(&conf, &t).unwrap();
    assert_eq!(util::print_config(&["--config", c], &[]), t);
}

/// The remote tier's bounds have no meaning at zero: `--remote-max-fetches`,
/// `--remote-queue-max-objects` and `--remote-queue-max-bytes` of 0, from the flag, the
/// variable or the file, are refused with their range; 1 is taken.
#[test]
fn zero_remote_bounds_are_refused_with_their_range() {
    let remote = ["--remote", "s3://cache/objm"];
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("objmapper.toml");
    let c = conf.to_str().unwrap();
    for (flag, env, key, range) in [
        (
            "--remote-max-fetches",
            "OBJMAPPER_REMOTE_MAX_FETCHES",
            "max_fetches",
            "at least 1",
        ),
        (
            "--remote-queue-max-objects",
            "OBJMAPPER_REMOTE_QUEUE_MAX_OBJECTS",
            "queue_max_objects",
            "at least 1",
        ),
        (
            "--remote-queue-max-bytes",
            "OBJMAPPER_REMOTE_QUEUE_MAX_BYTES",
            "queue_max_bytes",
            "1 to 1024T",
        ),
    ] {
        for (args, vars) in [(vec![flag, "0"], vec![]), (vec![], vec![(env, "0")])] {
            let out = util::print_config_output(&[&remote[..], &args].concat(), &vars);
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{flag}: {e}");
            assert!(e.contains("0 is ") && e.contains(range), "{flag}: {e}");
        }
        std::fs::write(
            &conf,
            format!("[remote]\nurl = \"s3://cache/objm\"\n{key} = 0\n"),
        )
        .unwrap();
        let out = util::print_config_output(&["--config", c], &[]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{key}: {e}");
        assert!(
            e.contains(&format!(
                "[remote]: {key} = 0 is out of range: give {range}"
            )),
            "{key}: {e}"
        );
        let t = util::print_config(&[&remote[..], &[flag, "1"]].concat(), &[]);
        assert_eq!(util::printed_value(&t, key).trim_matches('"'), "1", "{t}");
    }
}

/// An event retention too short for the poll interval is refused when the settings
/// are checked: by `--print-config` as by `serve`, which refuses it before it opens the
/// store (no data directory is made); the message says what to give.
#[test]
fn a_too_short_event_retention_is_refused_before_the_store_opens() {
    let remote = [
        "--remote",
        "s3://cache/objm",
        "--remote-event-retention",
        "1s",
    ];
    let out = util::print_config_output(&remote, &[]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    assert!(
        e.contains("configuration error: remote: event_retention 1s is shorter")
            && e.contains("give at least 128s"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = serve_in(dir.path())
        .args(["--remote-event-retention", "1s"])
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    assert!(e.contains("event_retention 1s is shorter"), "{e}");
    assert!(
        !dir.path().join("data").exists(),
        "the store was not opened"
    );
    // Long enough for the poll interval given: taken.
    let t = util::print_config(
        &[
            "--remote",
            "s3://cache/objm",
            "--remote-event-retention",
            "3m",
            "--remote-poll-interval",
            "1s",
        ],
        &[],
    );
    assert_eq!(util::printed_value(&t, "event_retention"), "\"3m\"", "{t}");
}

/// A bad duration under `[remote]` is named as `[remote] key`, the section it is in.
#[test]
fn a_bad_remote_duration_in_the_file_names_the_remote_section() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("objmapper.toml");
    let c = conf.to_str().unwrap();
    for (key, value, want) in [
        (
            "timeout",
            "\"0\"",
            "[remote] timeout: timeout \"0\" is zero",
        ),
        (
            "poll_interval",
            "0",
            "[remote] poll_interval = 0: a timeout must be",
        ),
        (
            "transfer_timeout",
            "\"soon\"",
            "[remote] transfer_timeout: \"soon\"",
        ),
        (
            "event_retention",
            "-1",
            "[remote] event_retention = -1: a timeout cannot",
        ),
        (
            "timeout",
            "true",
            "expected a duration for [remote] timeout",
        ),
    ] {
        let text = format!("[remote]\nurl = \"s3://cache/objm\"\n{key} = {value}\n");
        std::fs::write(&conf, &text).unwrap();
        let out = util::print_config_output(&["--config", c], &[]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{text}: {e}");
        assert!(
            e.contains(&format!("config file {c}, line 3, column")) && e.contains(want),
            "{text}:\n{e}\nwants {want:?}"
        );
        assert!(!e.contains("[limits]"), "{e}");
    }
}

/// `objmapper serve` of a daemon in `dir` with the remote tier on a loopback endpoint
/// nothing answers, and none of the environment's AWS credentials.
fn serve_in(dir: &std::path::Path) -> std::process::Command {
    let mut c = objmapper();
    c.arg("serve")
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--mem-dir")
        .arg(dir.join("mem"))
        .args(["--remote", "s3://cache/objm"])
        .args(["--remote-endpoint", "http://127.0.0.1:1"]);
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn a_credentials_file_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("s3-credentials");
    std::fs::write(
        &creds,
        "access_key_id = AKIAEXAMPLEKEYID\nsecret_access_key = very-secret-value-123\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = serve_in(dir.path())
        .arg("--remote-credentials-file")
        .arg(&creds)
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    assert!(e.contains("chmod 600"), "{e}");
    assert!(!e.contains("very-secret-value-123"), "{e}");
    assert!(
        !dir.path().join("s.sock").exists(),
        "nothing left listening"
    );
}

/// A credentials file as `serve --help` and objmapper.example.toml describe it starts
/// the server: AWS's form (a reused `~/.aws/credentials`, `[default]` and comments
/// included) and the same keys without `aws_`; the help names AWS's keys.
#[test]
fn a_credentials_file_written_as_the_docs_say_starts_the_server() {
    let help = objmapper().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("`aws_access_key_id = ...`") && help.contains("aws_secret_access_key"),
        "{help}"
    );
    for text in [
        "# from ~/.aws/credentials\n[default]\naws_access_key_id = AKIAEXAMPLEKEYID\n\
         aws_secret_access_key = very-secret-value-123\n[other]\naws_access_key_id = NO\n",
        "access_key_id = AKIAEXAMPLEKEYID\nsecret_access_key = very-secret-value-123\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let creds = creds_file(dir.path(), text);
        let mut cmd = serve_in(dir.path());
        cmd.arg("--remote-credentials-file").arg(&creds);
        let (socket, data) = (dir.path().join("s.sock"), dir.path().join("data"));
        let d = Daemon::spawn_cmd(dir, socket, data, cmd);
        let log = d.wait_log("remote tier attached");
        assert!(!log.contains("very-secret-value-123"), "{log}");
    }
}

/// A credentials file that disappears under a running server (deleted, or renamed
/// away) is said once in a WARN, not at every request, and the key read before stays in
/// use; when a file is back and goes again, that is said again.
#[test]
fn a_credentials_file_that_disappears_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(
        dir.path(),
        "aws_access_key_id = A\naws_secret_access_key = s\n",
    );
    let mut cmd = serve_in(dir.path());
    cmd.arg("--remote-credentials-file")
        .arg(&creds)
        .args(["--remote-poll-interval", "1s"]);
    let (socket, data) = (dir.path().join("s.sock"), dir.path().join("data"));
    let d = Daemon::spawn_cmd(dir, socket, data, cmd);
    let gone = "the credentials file is gone";
    std::fs::remove_file(&creds).unwrap();
    let log = d.wait_log(gone);
    assert!(
        log.contains("WARN") && log.contains("s3-credentials"),
        "{log}"
    );
    // Requests go on (polls every second), each looking at most once a second.
    std::thread::sleep(Duration::from_secs(4));
    let log = d.log();
    assert_eq!(log.matches(gone).count(), 1, "{log}");
    // Back, then renamed away: said again.
    let back = d.dir.path().join("s3-credentials.new");
    std::fs::write(&back, "aws_access_key_id = B\naws_secret_access_key = s\n").unwrap();
    std::fs::set_permissions(&back, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&back, &creds).unwrap();
    d.wait_log("read the changed credentials file");
    std::fs::rename(&creds, d.dir.path().join("elsewhere")).unwrap();
    d.wait_log_count(gone, 2);
}

/// With `--remote-credentials instance`, a metadata service that refuses this host is
/// named in the WARN's advice (the instance profile), not the variables or the file
/// this host does not use.
#[test]
fn a_failing_metadata_service_is_named_in_the_advice() {
    let imds = seaweed::fake_http(|_| ("403 Forbidden", String::new(), String::new()));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_in(dir.path());
    cmd.args(["--remote-credentials", "instance"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
    let (socket, data) = (dir.path().join("s.sock"), dir.path().join("data"));
    let d = Daemon::spawn_cmd(dir, socket, data, cmd);
    let log = d.wait_log("refuses this host's requests");
    let line = log
        .lines()
        .find(|l| l.contains("refuses this host's requests"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("EC2 instance profile") && line.contains("instance metadata service"),
        "{line}"
    );
    assert!(!line.contains("AWS_SECRET_ACCESS_KEY"), "{line}");
    assert!(!line.contains("--remote-credentials-file"), "{line}");
}

/// The key's source: an unknown one, or a file and the instance profile at once, is a
/// configuration error; no key at all refuses the start with every way to give one;
/// `instance` starts without any variable (the metadata service is asked per request).
#[test]
fn the_credentials_source_is_checked_and_a_missing_key_names_every_way_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), "access_key_id = A\nsecret_access_key = s\n");
    let serve = |extra: &[&std::ffi::OsStr]| {
        let mut c = serve_in(dir.path());
        c.args(extra);
        c
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let out = serve(&[os("--remote-credentials"), os("vault")])
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    assert!(e.contains("neither `env` nor `instance`"), "{e}");
    let out = serve(&[
        os("--remote-credentials"),
        os("instance"),
        os("--remote-credentials-file"),
        creds.as_os_str(),
    ])
    .output()
    .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    assert!(e.contains("two sources"), "{e}");
    let out = serve(&[]).output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{e}");
    for way in [
        "AWS_ACCESS_KEY_ID",
        "web identity",
        "credentials file",
        "instance profile",
    ] {
        assert!(e.contains(way), "{way}: {e}");
    }
    let out = objmapper()
        .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
        .args([
            "--remote",
            "s3://cache/objm",
            "--remote-credentials",
            "instance",
        ])
        .output()
        .unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("credentials = \"instance\""), "{t}");
}

/// kill -9 with uploads pending (the endpoint frozen), restart: the uploads finish once
/// the endpoint is back, from the queue rebuilt out of the store and the REMOTE journal;
/// a delete made before the crash reaches the bucket too.
#[test]
fn uploads_pending_at_a_kill_9_finish_after_the_restart() {
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::start();
    let cfg = sw.config("kill9", "setup");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(&sw, &cfg));
    let url = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
    let args = [
        "--remote",
        &url,
        "--remote-endpoint",
        &sw.endpoint,
        "--host-id",
        "host-a",
        "--remote-timeout",
        "1s",
    ];
    let env = [
        ("AWS_ACCESS_KEY_ID", sw.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", sw.secret_key.as_str()),
    ];
    let mut d = Daemon::start_env(&args, &env);
    // One object that reaches the bucket before the freeze, to delete later.
    d.run_with_stdin(&["put", "/gone", "-"], b"delete me");
    d.ok(&["remote", "flush", "--wait", "30"]);
    sw.freeze();
    for i in 0..5 {
        let o = d.run_with_stdin(
            &["put", &format!("/k{i}"), "-"],
            format!("value {i}").as_bytes(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    d.ok(&["rm", "/gone"]);
    std::thread::sleep(Duration::from_millis(300));
    let st = d.stop_with(rustix::process::Signal::KILL);
    assert!(!st.success());
    let log = d.log();
    assert!(
        !log.contains(sw.secret_key.as_str()),
        "no secret in the log"
    );
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let (socket, data) = (d.socket.clone(), d.data.clone());
    drop(d);
    sw.signal("CONT");
    let d = Daemon::spawn_env_at(dir, socket, data, &args, &env);
    d.wait_log("resuming the write-behind");
    d.ok(&["remote", "flush", "--wait", "60"]);
    let remote = objmapper_remote::Remote::new(sw.config_for(&cfg.bucket, "checker")).unwrap();
    rt.block_on(async {
        for i in 0..5 {
            let key = format!("/k{i}");
            let f = remote.head(key.as_bytes()).await.unwrap();
            let f = f.unwrap_or_else(|| panic!("{key} was not uploaded after the restart"));
            assert_eq!(f.record.size, format!("value {i}").len() as u64);
            assert_eq!(f.stamp.host.as_str(), "host-a");
        }
        assert!(
            remote.head(b"/gone").await.unwrap().is_none(),
            "the delete reached the bucket"
        );
    });
    let out = d.ok(&["remote", "check"]);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("checked 5: 5 the same"), "{out}");
}

/// `objmapper remote sweep` on a daemon: a version purged on this host is replaced by a
/// tombstone in the bucket, the slices of names go on from one another until every
/// name was read, and the answer says what was done; a live version stays.
#[test]
fn remote_sweep_reclaims_purged_versions_slice_by_slice() {
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::shared();
    let (d, cfg) = daemon_on_fresh_bucket(sw, "cli-sweep");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for k in ["/img/a", "/img/b", "/keep"] {
        d.run_with_stdin(&["put", k, "-"], b"seven b");
    }
    d.ok(&["remote", "flush", "--wait", "30"]);
    d.ok(&["purge", "--prefix", "/img/", "--yes"]);
    d.ok(&["remote", "flush", "--wait", "30"]);
    let out = d.ok(&["remote", "sweep", "--names", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["read"], 3, "{v}");
    assert_eq!(v["reclaimed"], 2, "{v}");
    assert_eq!(v["reclaimed_bytes"], 14, "{v}");
    let out = String::from_utf8(d.ok(&["remote", "sweep"])).unwrap();
    assert!(out.contains("3 names read, 0 expired or purged"), "{out}");
    let remote = objmapper_remote::Remote::new(sw.config_for(&cfg.bucket, "checker")).unwrap();
    rt.block_on(async {
        assert!(remote.head(b"/keep").await.unwrap().is_some());
        for k in ["/img/a", "/img/b"] {
            let raw = sw.raw(&cfg);
            let name = remote.name_of(k.as_bytes());
            let left = seaweed::raw_bytes(&raw, &name).await;
            assert!(left.len() < 200, "{k}: a tombstone, not the version");
        }
    });
}

/// `objmapper --help` names every `remote` action, sweep included.
#[test]
fn the_help_summary_of_remote_names_flush_check_and_sweep() {
    let out = objmapper().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let line = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("remote "))
        .take_while(|l| !l.trim_start().starts_with("top "))
        .collect::<Vec<_>>()
        .join(" ");
    for action in ["`flush`", "`check`", "`sweep`"] {
        assert!(line.contains(action), "{action}: {line}");
    }
}

/// `objmapper info KEY` on a server with a remote tier shows whether the version waits
/// for its upload (here it does: nothing answers at the endpoint); without a tier it
/// shows no such row.
#[test]
fn info_shows_whether_the_upload_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_a_silent_tier(dir);
    d.run_with_stdin(&["put", "/waits", "-"], b"for the tier");
    let out = String::from_utf8(d.ok(&["info", "/waits"])).unwrap();
    let row = out
        .lines()
        .find(|l| l.starts_with("remote upload pending"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.ends_with("true"), "{out}");
    let plain = Daemon::start(&[]);
    plain.run_with_stdin(&["put", "/local", "-"], b"only here");
    let out = String::from_utf8(plain.ok(&["info", "/local"])).unwrap();
    assert!(!out.contains("remote"), "{out}");
}

/// `objmapper remote check` lists the keys missing on the tier readably, bytes that are
/// not printable escaped (as `ls` shows keys), with the API's hex after each.
#[test]
fn remote_check_lists_missing_keys_readably() {
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::shared();
    let (d, cfg) = daemon_on_fresh_bucket(sw, "cli-check");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = "/odd\tkey";
    d.run_with_stdin(&["put", key, "-"], b"gone from the bucket");
    // And more than the 100 keys a check lists: the count says all of them.
    let many: Vec<String> = (0..101).map(|i| format!("/many/{i}")).collect();
    for k in &many {
        d.run_with_stdin(&["put", k, "-"], b"gone too");
    }
    d.ok(&["remote", "flush", "--wait", "30"]);
    // Deleted from the bucket behind the host's back: missing there, and not queued.
    let remote = objmapper_remote::Remote::new(sw.config_for(&cfg.bucket, "checker")).unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        for k in many.iter().map(String::as_str).chain([key]) {
            let name = remote.name_of(k.as_bytes());
            sw.raw(&cfg)
                .delete(&object_store::path::Path::from(name.as_str()))
                .await
                .unwrap();
        }
    });
    let out = d.run(&["remote", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(", 102 missing there,"), "{text}");
    assert!(text.contains("missing: ... and 2 more"), "{text}");
    assert!(err.contains("102 object(s) missing"), "{err}");
    let out = d.run(&["remote", "check", "--prefix", "/odd"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("missing: /odd\\tkey (hex 2f6f6464096b6579)"),
        "{text}"
    );
}

/// `objmapper stat KEY` says whether the object is uploaded to the remote tier, asked of
/// the management API next to the socket (the object protocol does not say): pending
/// while the tier does not answer, uploaded once flushed (SeaweedFS), nothing on a
/// server without a tier, and "unknown" with the reason when the API cannot be asked.
#[test]
fn stat_says_whether_the_object_is_uploaded() {
    // A tier that does not answer: the upload waits.
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_a_silent_tier(dir);
    d.run_with_stdin(&["put", "/waits", "-"], b"for the tier");
    let out = String::from_utf8(d.ok(&["stat", "/waits"])).unwrap();
    assert!(out.contains("\nremote: upload pending\n"), "{out}");
    let json = String::from_utf8(d.ok(&["stat", "/waits", "--json"])).unwrap();
    assert!(
        json.contains("\"remote\":{\"upload_pending\":true}"),
        "{json}"
    );
    d.run_with_stdin(&["put", "/eph", "-", "--ephemeral"], b"RAM only");
    let out = String::from_utf8(d.ok(&["stat", "/eph"])).unwrap();
    assert!(
        out.contains("\nremote: not uploaded (ephemeral)\n"),
        "{out}"
    );

    // No tier: no remote line. No management API: said, with why.
    let plain = Daemon::start(&[]);
    plain.run_with_stdin(&["put", "/local", "-"], b"only here");
    let out = String::from_utf8(plain.ok(&["stat", "/local"])).unwrap();
    assert!(!out.contains("remote"), "{out}");
    let json = String::from_utf8(plain.ok(&["stat", "/local", "--json"])).unwrap();
    assert!(json.contains("\"remote\":\"off\""), "{json}");
    let closed = Daemon::start(&["--no-admin"]);
    closed.run_with_stdin(&["put", "/k", "-"], b"v");
    let out = String::from_utf8(closed.ok(&["stat", "/k"])).unwrap();
    assert!(
        out.contains("\nremote: unknown (cannot reach the management API at "),
        "{out}"
    );

    // Flushed to a tier that answers: uploaded.
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::shared();
    let (d, _) = daemon_on_fresh_bucket(sw, "cli-stat");
    d.run_with_stdin(&["put", "/up", "-"], b"to the tier");
    d.ok(&["remote", "flush", "--wait", "30"]);
    let out = String::from_utf8(d.ok(&["stat", "/up"])).unwrap();
    assert!(out.contains("\nremote: uploaded ("), "{out}");
}

/// An upload being sent is not on the tier yet: from the PUT until the tier has the
/// version, `stat` says the upload is pending (it said "uploaded" while the upload
/// ran) and `remote check` counts it pending (it counted it missing, and failed).
#[test]
fn an_upload_being_sent_is_pending_in_stat_and_remote_check() {
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::shared();
    let (d, cfg) = daemon_on_fresh_bucket(sw, "cli-sending");
    let remote = objmapper_remote::Remote::new(sw.config_for(&cfg.bucket, "checker")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Large enough that its upload takes a while.
    d.run_with_stdin(&["put", "/big", "-"], &vec![7u8; 40 << 20]);
    let started = std::time::Instant::now();
    let mut pending = 0;
    loop {
        let stat = String::from_utf8(d.ok(&["stat", "/big"])).unwrap();
        let out = d.run(&["remote", "check"]);
        let check = String::from_utf8_lossy(&out.stdout).to_string();
        // Asked after both: a version the tier has now may have been pending in them.
        let there = rt.block_on(remote.head(b"/big")).unwrap().is_some();
        assert!(
            out.status.success() && check.contains(", 0 missing there,"),
            "counted missing while its upload ran: {check}{}",
            stderr(&out)
        );
        if stat.contains("\nremote: upload pending\n") {
            // Or uploaded between the two.
            let settled = check.contains(": 1 the same on the remote tier,");
            assert!(check.contains(", 1 pending upload,") || settled, "{check}");
            pending += 1;
        } else {
            assert!(
                there && stat.contains("\nremote: uploaded ("),
                "said uploaded before the tier had it: {stat}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not uploaded within 60 s"
        );
    }
    assert!(
        pending > 0,
        "the upload ended before the first stat: the test saw nothing (use a larger object)"
    );
}

/// A daemon whose remote tier is a fresh bucket of `sw` (named after `test`), its key
/// from the environment; and the bucket's configuration.
fn daemon_on_fresh_bucket(sw: &seaweed::Seaweed, test: &str) -> (Daemon, objmapper_remote::Config) {
    let cfg = sw.config(test, "setup");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(sw, &cfg));
    let url = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
    let args = ["--remote", &url, "--remote-endpoint", &sw.endpoint];
    let env = [
        ("AWS_ACCESS_KEY_ID", sw.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", sw.secret_key.as_str()),
    ];
    (Daemon::start_env(&args, &env), cfg)
}

/// A credentials file `s3-credentials` of mode 600 in `dir`, holding `text`.
fn creds_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let creds = dir.join("s3-credentials");
    std::fs::write(&creds, text).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    creds
}

/// A daemon in `dir` whose remote tier never answers (`serve_in`'s endpoint), with a
/// key in its environment: its uploads wait.
fn daemon_with_a_silent_tier(dir: tempfile::TempDir) -> Daemon {
    let mut cmd = serve_in(dir.path());
    cmd.env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
        .env("AWS_SECRET_ACCESS_KEY", "s");
    let (socket, data) = (dir.path().join("s.sock"), dir.path().join("data"));
    Daemon::spawn_cmd(dir, socket, data, cmd)
}

/// libfaketime's preload library (scripts/test-admin installs it).
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (scripts/test-admin installs it: apt-get install faketime)")
}

/// A host whose clock runs 90 s ahead of the store's (more than the 60 s lookback)
/// still applies another host's delete: the event log is named and read in the
/// store's time, measured at start. (It listed from its own clock less the lookback,
/// past every other host's events, and served the deleted object for good.)
#[test]
fn a_host_whose_clock_runs_ahead_still_applies_other_hosts_deletes() {
    if seaweed::skip() {
        return;
    }
    let sw = seaweed::Seaweed::shared();
    let cfg = sw.config("clock-ahead", "setup");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(sw, &cfg));
    let url = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
    let host = |id: &'static str| {
        vec![
            "--remote".to_string(),
            url.clone(),
            "--remote-endpoint".into(),
            sw.endpoint.clone(),
            "--host-id".into(),
            id.into(),
            "--remote-poll-interval".into(),
            "1s".into(),
        ]
    };
    let env = [
        ("AWS_ACCESS_KEY_ID", sw.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", sw.secret_key.as_str()),
    ];
    let a_args = host("host-a");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = Daemon::start_env(&a_args, &env);
    let (dir, socket, data) = Daemon::fresh_dir();
    let mut cmd = util::serve_on(&socket, dir.path());
    cmd.args(host("host-g"))
        .envs(env)
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "+90s");
    let g = Daemon::spawn_cmd(dir, socket, data, cmd);
    g.wait_log("ahead if positive");
    a.run_with_stdin(&["put", "/k", "-"], b"v1");
    a.ok(&["remote", "flush", "--wait", "30"]);
    assert_eq!(g.ok(&["get", "/k"]), b"v1");
    a.ok(&["rm", "/k"]);
    a.ok(&["remote", "flush", "--wait", "30"]);
    util::eventually(
        Duration::from_secs(15),
        "the delete reaches the host ahead",
        || !g.run(&["get", "/k"]).status.success(),
    );
}
