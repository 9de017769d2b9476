//! The allowlist and the limits through the layered configuration: `[access]` and
//! `[limits]` in the config file, their `OBJMAPPER_*` variables, precedence, errors that
//! name the key and line, `--print-config`, and SIGHUP (the allowlist and most limits
//! change at runtime; `max_connections` and `max_staged_puts_total` need a restart). All
//! against the real binary; the tests that run a client under another uid need root
//! (setpriv) and say SKIPPED otherwise.

mod util;

use std::path::{Path, PathBuf};
use std::process::Output;

use objmapper_client::{Client, PutOptions};
use rustix::process::Signal;
use util::*;

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Writes `text` to `path` through a rename, so the server never reads half a file.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A daemon reading `conf_text` as its config file (socket, directories and log level
/// come from flags), in a directory other uids can traverse.
fn daemon_with_config(conf_text: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let args = [&["--log-level", "info"][..], extra].concat();
    Daemon::with_config(conf_text, &args)
}

fn hup(d: &Daemon) {
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
}

fn failed_with(out: &Output, status: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(status), "{}", stderr(out));
}

#[test]
fn the_file_sets_the_allowlist_and_the_limits() {
    let (d, _conf) = daemon_with_config(
        &format!(
            "[access]\nallow_uid = [\"{}=read\"]\n[limits]\nmax_key_len = 8\n",
            me()
        ),
        &[],
    );
    // Our own uid is restricted to read by the file.
    let f = write_file(&d.path("in"), b"v");
    failed_with(&d.run(&["put", "k", &f]), "FORBIDDEN");
    failed_with(&d.run(&["get", "123456789"]), "KEY_TOO_LONG");
    let out = d.run(&["get", "12345678"]);
    assert_eq!(out.status.code(), Some(1), "not found: {}", stderr(&out));
    assert!(!stderr(&out).contains("FORBIDDEN"), "{}", stderr(&out));
}

#[test]
fn the_environment_sets_them_too() {
    let grant = format!("{}=read 65533=write", me());
    let d = Daemon::start_env(
        &[],
        &[
            ("OBJMAPPER_ALLOW_UID", grant.as_str()),
            ("OBJMAPPER_MAX_KEY_LEN", "8"),
            ("OBJMAPPER_IDLE_TIMEOUT", "never"),
        ],
    );
    let f = write_file(&d.path("in"), b"v");
    failed_with(&d.run(&["put", "k", &f]), "FORBIDDEN");
    failed_with(&d.run(&["get", "123456789"]), "KEY_TOO_LONG");
}

#[test]
fn flag_beats_env_beats_file_beats_the_servers_default() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("o.toml");
    std::fs::write(
        &conf,
        "[access]\nallow_uid = [\"33=read\", \"1000=read,write,admin\"]\n\
         allow_gid = [\"50=read\"]\ntcp_permissions = \"read\"\n\
         [limits]\nmax_key_len = 100\nidle_timeout = \"1h\"\nmax_staged_bytes_total = \"2G\"\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();

    // Defaults: the server's (ServerConfig::new, AccessConfig::default).
    let t = print_config(&[], &[]);
    assert_eq!(printed_value(&t, "allow_uid"), "[]");
    assert_eq!(printed_value(&t, "allow_gid"), "[]");
    assert_eq!(printed_value(&t, "tcp_permissions"), "\"read,write\"");
    assert_eq!(printed_value(&t, "max_connections"), "16384");
    assert_eq!(printed_value(&t, "max_key_len"), "4096");
    assert_eq!(printed_value(&t, "max_meta_len"), "\"64K\"");
    assert_eq!(printed_value(&t, "header_timeout"), "\"10s\"");
    assert_eq!(printed_value(&t, "frame_timeout"), "\"30s\"");
    assert_eq!(printed_value(&t, "idle_timeout"), "\"never\"");
    assert!(
        t.contains(&format!("own uid (here {}) has read,write,admin", me())),
        "{t}"
    );

    // The file.
    let t = print_config(&["--config", c], &[]);
    assert_eq!(
        printed_value(&t, "allow_uid"),
        "[\"33=read\", \"1000=read,write,admin\"]"
    );
    assert_eq!(printed_value(&t, "tcp_permissions"), "\"read\"");
    assert_eq!(printed_value(&t, "max_key_len"), "100");
    assert_eq!(printed_value(&t, "idle_timeout"), "\"1h\"");

    // The environment replaces the file's list whole; the rest of the file stays.
    let env = [
        ("OBJMAPPER_ALLOW_UID", "34=write, admin 35=read"),
        ("OBJMAPPER_MAX_KEY_LEN", "200"),
        ("OBJMAPPER_IDLE_TIMEOUT", "never"),
        ("OBJMAPPER_TCP_PERMISSIONS", "none"),
    ];
    let t = print_config(&["--config", c], &env);
    assert_eq!(
        printed_value(&t, "allow_uid"),
        "[\"34=write,admin\", \"35=read\"]"
    );
    assert_eq!(printed_value(&t, "allow_gid"), "[\"50=read\"]");
    assert_eq!(printed_value(&t, "tcp_permissions"), "\"none\"");
    assert_eq!(printed_value(&t, "max_key_len"), "200");
    assert_eq!(printed_value(&t, "idle_timeout"), "\"never\"");
    assert_eq!(printed_value(&t, "max_staged_bytes_total"), "\"2G\"");

    // Flags replace the environment's list whole.
    let t = print_config(
        &[
            "--config",
            c,
            "--allow-uid",
            "36=read",
            "--allow-uid",
            "37=all",
            "--max-key-len",
            "300",
            "--idle-timeout",
            "90",
        ],
        &env,
    );
    assert_eq!(
        printed_value(&t, "allow_uid"),
        "[\"36=read\", \"37=read,write,admin\"]"
    );
    assert_eq!(printed_value(&t, "max_key_len"), "300");
    assert_eq!(printed_value(&t, "idle_timeout"), "\"1m30s\"");
}

#[test]
fn printed_config_is_a_config_file_that_reads_back_the_same() {
    let text = print_config(
        &[
            "--allow-uid",
            "1000=admin,read 33=read",
            "--allow-gid",
            "998=read,write",
            "--tcp-permissions",
            "read",
            "--max-connections",
            "500",
            "--max-pipeline-depth",
            "16",
            "--max-staged-puts",
            "4",
            "--max-staged-puts-total",
            "64",
            "--max-staged-bytes-per-conn",
            "256M",
            "--max-staged-bytes-total",
            "1000000",
            "--max-key-len",
            "512",
            "--max-meta-len",
            "1K",
            "--header-timeout",
            "5s",
            "--frame-timeout",
            "2m",
            "--idle-timeout",
            "1h30m",
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("printed.toml");
    std::fs::write(&conf, &text).unwrap();
    let again = print_config(&["--config", conf.to_str().unwrap()], &[]);
    assert_eq!(again, text);
    assert!(
        text.contains("[access]\n") && text.contains("[limits]\n"),
        "{text}"
    );
    assert_eq!(
        printed_value(&text, "max_staged_bytes_per_conn"),
        "\"256M\""
    );
    assert_eq!(
        printed_value(&text, "max_staged_bytes_total"),
        "\"1000000\""
    );
    assert_eq!(printed_value(&text, "idle_timeout"), "\"1h30m\"");

    // The defaults round-trip too.
    let defaults = print_config(&[], &[]);
    std::fs::write(&conf, &defaults).unwrap();
    assert_eq!(
        print_config(&["--config", conf.to_str().unwrap()], &[]),
        defaults
    );
}

#[test]
fn bad_values_are_usage_errors_naming_the_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    let c = conf.to_str().unwrap();
    let cases = [
        (
            "[access]\nallow_uid = [\"33=read\", \"33=fly\"]\n",
            "line 2, column 25: [access] allow_uid: \"33=fly\": unknown permission \"fly\"",
        ),
        (
            "[access]\nallow_gid = [\"www-data=read\"]\n",
            "line 2, column 14: [access] allow_gid: \"www-data=read\": \"www-data\" is not a \
             numeric uid/gid",
        ),
        (
            "[access]\ntcp_permissions = \"everything\"\n",
            "line 2, column 19: [access] tcp_permissions: unknown permission \"everything\"",
        ),
        (
            "[limits]\nmax_connections = 0\n",
            "line 2, column 19: [limits] max_connections = 0 is out of range: give at least 1",
        ),
        (
            "[limits]\nmax_staged_puts_total = -1\n",
            "line 2, column 25: [limits] max_staged_puts_total = -1 is out of range",
        ),
        (
            "[limits]\nmax_key_len = 5000\n",
            "line 2, column 15: [limits] max_key_len = 5000 is out of range: give 1 to 4096",
        ),
        (
            "[limits]\n\nheader_timeout = \"0s\"\n",
            "line 3, column 18: [limits] header_timeout: timeout \"0s\" is zero",
        ),
        (
            "[limits]\nidle_timeout = \"sometimes\"\n",
            "line 2, column 16: [limits] idle_timeout: \"sometimes\" is not a duration",
        ),
        (
            "[limits]\nmax_key_len = 10\nmax_keylen = 10\n",
            "line 3, column 1: unknown field `max_keylen`",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&conf, text).unwrap();
        let out = print_config_output(&["--config", c], &[]);
        assert_eq!(out.status.code(), Some(78), "{text:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains(&format!("config file {c}, {want}")),
            "{text:?}:\n{e}\nwants {want:?}"
        );
    }

    // Flags and variables: clap's usage errors, with the range.
    for (args, env, want) in [
        (
            &["--allow-uid", "33=fly"][..],
            &[][..],
            "unknown permission \"fly\"",
        ),
        (
            &[],
            &[("OBJMAPPER_ALLOW_GID", "read")][..],
            "expected ID=PERMS",
        ),
        (
            &["--max-key-len", "0"],
            &[],
            "0 is out of range: give 1 to 4096",
        ),
        (
            &[],
            &[("OBJMAPPER_MAX_CONNECTIONS", "0")],
            "give at least 1",
        ),
        (&["--max-staged-puts", "0"], &[], "give at least 1"),
        (&["--max-meta-len", "65537"], &[], "give 0 to 65536"),
        (&["--header-timeout", "0"], &[], "timeout \"0\" is zero"),
        (&[], &[("OBJMAPPER_IDLE_TIMEOUT", "0s")], "is zero"),
        (&["--max-pipeline-depth", "0"], &[], "0 is not in 1..=65535"),
    ] {
        let out = print_config_output(args, env);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(want),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn sighup_grants_a_new_uid_and_revoking_refuses_it_again() {
    if !is_root() {
        eprintln!("SKIPPED: changing uid needs root; run the suite as root (CI does)");
        return;
    }
    let conf_with = |grants: &str| {
        format!("[server]\nsocket_mode = \"666\"\n[access]\nallow_uid = [{grants}]\n")
    };
    let (mut d, conf) = daemon_with_config(&conf_with(""), &[]);
    let bin = public_binary(d.dir.path());
    let f = write_file(&d.path("in"), b"for nginx");
    d.ok(&["put", "k", &f]);
    let out = run_as(65533, 65533, &bin, &d, &["get", "k"]);
    failed_with(&out, "FORBIDDEN");

    // The operator adds the web server's uid and reloads.
    replace_file(&conf, &conf_with("\"65533=read\""));
    hup(&d);
    let log = d.wait_log("SIGHUP: access.allow_uid changed");
    assert!(
        log.contains("SIGHUP: access.allow_uid changed from [] to [\"65533=read\"]"),
        "{log}"
    );
    let out = run_as(65533, 65533, &bin, &d, &["get", "k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"for nginx");
    // read only.
    let out = run_as(65533, 65533, &bin, &d, &["put", "k", "/dev/null"]);
    failed_with(&out, "FORBIDDEN");

    // Revoked: new connections are refused again.
    replace_file(&conf, &conf_with(""));
    hup(&d);
    d.wait_log("SIGHUP: access.allow_uid changed from [\"65533=read\"] to []");
    let out = run_as(65533, 65533, &bin, &d, &["get", "k"]);
    failed_with(&out, "FORBIDDEN");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("nginx"));
    assert_eq!(
        d.ok(&["get", "k"]),
        b"for nginx",
        "our own uid is untouched"
    );
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn sighup_revoking_reaches_new_connections_and_open_ones_at_their_next_request() {
    let (mut d, conf) = daemon_with_config("[access]\nallow_uid = []\n", &[]);
    let mut open = Client::connect(&d.socket).unwrap();
    open.ping().unwrap();

    // Our own uid down to read: new connections cannot write, nor can the open one.
    replace_file(
        &conf,
        &format!("[access]\nallow_uid = [\"{}=read\"]\n", me()),
    );
    hup(&d);
    let log = d.wait_log("SIGHUP: access.allow_uid changed");
    assert!(log.contains("open ones at their next request"), "{log}");
    let f = write_file(&d.path("in"), b"new");
    failed_with(&d.run(&["put", "k", &f]), "FORBIDDEN");
    let e = open.put(b"k", b"old", &PutOptions::default()).unwrap_err();
    assert_eq!(e.status(), Some(objmapper_client::Status::Forbidden), "{e}");
    assert_eq!(
        d.run(&["get", "k"]).status.code(),
        Some(1),
        "nothing was stored"
    );
    // No admin any more: the management API refuses a new connection.
    let out = d.run(&["stats"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("has no admin permission"),
        "{}",
        stderr(&out)
    );

    // Nothing at all: refused outright, and the open connection is closed at its next
    // request.
    replace_file(
        &conf,
        &format!("[access]\nallow_uid = [\"{}=none\"]\n", me()),
    );
    hup(&d);
    d.wait_log(&format!("to [\"{}=none\"]", me()));
    failed_with(&d.run(&["ping"]), "FORBIDDEN");
    let e = open.ping().unwrap_err();
    assert_eq!(e.status(), Some(objmapper_client::Status::Forbidden), "{e}");
    assert!(open.ping().is_err(), "the revoked connection is closed");
    drop(open);
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn sighup_applies_runtime_limits_and_leaves_restart_only_ones_in_force() {
    let (mut d, conf) = daemon_with_config("[limits]\nmax_connections = 10\n", &[]);
    replace_file(
        &conf,
        "[limits]\nmax_connections = 2\nmax_key_len = 8\nidle_timeout = \"1h\"\n",
    );
    hup(&d);
    let log = d.wait_log("needs a restart");
    assert!(
        log.contains("SIGHUP: limits.max_key_len changed from 4096 to 8"),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: limits.idle_timeout changed from \"never\" to \"1h\""),
        "{log}"
    );
    assert!(
        log.contains(
            "SIGHUP: limits.max_connections changed but needs a restart to take effect \
             (limits.max_connections 10 -> 2; limits.max_connections: it sizes the open-file \
             limit (RLIMIT_NOFILE) at start); still running with the old value"
        ),
        "{log}"
    );
    // The old connection limit is in force: three connections at once are served.
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(&d.socket).unwrap())
        .collect();
    for c in &mut clients {
        c.ping().unwrap();
    }
    drop(clients);
    // The new key limit is.
    failed_with(&d.run(&["get", "123456789"]), "KEY_TOO_LONG");

    // Reloading again: still not applied, so still reported.
    hup(&d);
    d.wait_log_count("limits.max_connections changed but needs a restart", 2);
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn a_bad_value_on_sighup_changes_nothing() {
    let (mut d, conf) =
        daemon_with_config(&format!("[access]\nallow_uid = [\"{}=read\"]\n", me()), &[]);
    replace_file(
        &conf,
        &format!("[access]\nallow_uid = [\"{}=all\", \"33=fly\"]\n", me()),
    );
    hup(&d);
    let log = d.wait_log("the running configuration is unchanged");
    assert!(log.contains("line 2, column"), "{log}");
    assert!(
        log.contains("unknown permission") && log.contains("fly"),
        "{log}"
    );
    let f = write_file(&d.path("in"), b"v");
    failed_with(&d.run(&["put", "k", &f]), "FORBIDDEN");
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn a_flag_replacing_the_files_allowlist_is_reported() {
    let grant = format!("{}=all", me());
    let (mut d, conf) = daemon_with_config(
        "[access]\nallow_uid = [\"33=read\"]\n",
        &["--allow-uid", &grant],
    );
    let log = d.wait_log(READY);
    let warning = format!(
        "[access] allow_uid in {} is not used: --allow-uid or OBJMAPPER_ALLOW_UID replaces it",
        conf.display()
    );
    assert!(log.contains(&warning), "{log}");
    // Editing the file's list changes nothing while the flag is given, and says so.
    replace_file(&conf, "[access]\nallow_uid = [\"33=read\", \"34=read\"]\n");
    hup(&d);
    d.wait_log(&format!("SIGHUP: {warning}"));
    let log = d.wait_log("nothing changed");
    assert!(!log.contains("access.allow_uid changed"), "{log}");
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}
