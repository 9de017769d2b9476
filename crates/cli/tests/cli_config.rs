//! `objmapper serve`'s configuration: the config file, its precedence against the
//! environment and the flags, the shipped example, errors that name the key and line,
//! SIGHUP reloads, and the JSON log format. All against the real binary.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::Signal;
use util::{
    assert_fails_with, objmapper, print_config, print_config_output, printed_value, serve_on,
    stderr, Daemon,
};

/// The repository's example config file.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../objmapper.example.toml")
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("o.toml");
    std::fs::write(
        &file,
        "[server]\nworkers = 3\n[store]\nmem_capacity = \"32M\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // Default.
    assert_eq!(printed_value(&print_config(&[], &[]), "workers"), "2");
    // The file beats the default.
    let t = print_config(&["--config", f], &[]);
    assert_eq!(printed_value(&t, "workers"), "3");
    assert_eq!(printed_value(&t, "mem_capacity"), "\"32M\"");
    // The environment beats the file (OBJMAPPER_CONFIG names the file this time).
    let t = print_config(&[], &[("OBJMAPPER_CONFIG", f), ("OBJMAPPER_WORKERS", "4")]);
    assert_eq!(printed_value(&t, "workers"), "4");
    assert_eq!(
        printed_value(&t, "mem_capacity"),
        "\"32M\"",
        "rest of the file still applies"
    );
    // The flag beats the environment.
    let t = print_config(
        &["--workers", "5", "--config", f],
        &[("OBJMAPPER_WORKERS", "4")],
    );
    assert_eq!(printed_value(&t, "workers"), "5");
}

#[test]
fn a_server_runs_on_the_file_alone() {
    let (dir, socket, data) = Daemon::fresh_dir();
    let conf = dir.path().join("o.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nsocket = {:?}\nsocket_mode = \"640\"\n[store]\ndata_dir = {:?}\n\
             mem_dir = {:?}\n[log]\nlevel = \"info\"\n",
            socket,
            data,
            dir.path().join("mem")
        ),
    )
    .unwrap();
    let mut cmd = objmapper();
    cmd.args(["serve", "--config"]).arg(&conf);
    let d = Daemon::spawn_cmd(dir, socket.clone(), data.clone(), cmd);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "socket_mode from the file");
    assert!(data.is_dir(), "data_dir from the file");
    d.ok(&["ping"]);
    let log = d.wait_log(util::READY);
    assert!(log.contains("configuration file"), "{log}");
}

#[test]
fn the_example_file_loads_and_documents_the_defaults() {
    let ex = example();
    let ex_s = ex.to_str().unwrap();
    // As shipped (everything commented out): the defaults.
    let defaults = print_config(&[], &[]);
    assert_eq!(print_config(&["--config", ex_s], &[]), defaults);

    // Uncommented, every key must still be known and every default it states must be
    // the real one (except the lines that show a non-default example).
    let text = std::fs::read_to_string(&ex).unwrap();
    let mut uncommented = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        match line.strip_prefix('#') {
            Some(l) if l.contains(" = ") && l.starts_with(|c: char| c.is_ascii_lowercase()) => {
                keys.push(l.split(" = ").next().unwrap().to_string());
                uncommented.push_str(l);
            }
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.toml");
    std::fs::write(&all, &uncommented).unwrap();
    let t = print_config(&["--config", all.to_str().unwrap()], &[]);
    // Every setting --print-config knows is in the example, and vice versa.
    let printed: Vec<String> = t
        .lines()
        .filter(|l| l.contains(" = ") && !l.starts_with('#'))
        .map(|l| l.split(" = ").next().unwrap().to_string())
        .collect();
    for k in &printed {
        assert!(keys.contains(k), "the example does not document {k}");
    }
    let examples_only = [
        "socket",
        "socket_group",
        "tcp",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "tcp_token_file",
        "udp",
        "data_dir",
        "mem_dir",
        "allow_uid",
        "allow_gid",
        "host_id",
        // [remote]: off by default; the example shows a bucket, an endpoint and a file.
        "url",
        "endpoint",
        "credentials_file",
    ];
    // The remote tier's defaults are printed only when it is on.
    let defaults = print_config(&["--remote", "s3://my-cache-bucket/objmapper"], &[]);
    for k in &keys {
        if examples_only.contains(&k.as_str()) {
            continue;
        }
        let canon = |s: &str| s.replace('_', "");
        // mem_max_objects = 1_000_000 in the example, 1000000 printed.
        assert_eq!(
            canon(&printed_value(&t, k)),
            canon(&printed_value(&defaults, k)),
            "the example's default for {k} is not the real one"
        );
    }
    assert!(t.contains("tcp = \"127.0.0.1:9999\""), "{t}");
}

#[test]
fn unknown_keys_are_errors_naming_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[store]\nmem_capacity = \"1M\"\nmem_capactiy = \"2M\"\n",
    )
    .unwrap();
    let out = print_config_output(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("mem_capactiy"), "{e}");
    assert!(e.contains(&format!("{}, line 3", f.display())), "{e}");

    let out = print_config_output(&["--config", "/nonexistent/objmapper.toml"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read config file /nonexistent/objmapper.toml"),
        "{}",
        stderr(&out)
    );
}

/// Writes `text` to `path` through a rename, so the server never reads half a file.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_applies_the_log_level_and_reports_restart_only_changes() {
    let (mut d, conf) =
        Daemon::with_config("[log]\nlevel = \"info\"\n[server]\nworkers = 2\n", &[]);
    d.wait_log(util::READY);
    // At info, a failed request is not logged.
    assert_eq!(d.run(&["get", "missing-1"]).status.code(), Some(1));

    replace_file(&conf, "[log]\nlevel = \"debug\"\n[server]\nworkers = 3\n");
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let log = d.wait_log("need");
    assert!(
        log.contains("SIGHUP: log.level changed from \"info\" to \"debug\""),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: server.workers changed but needs a restart"),
        "{log}"
    );
    // The new level is in force: the failed request is logged now.
    assert_eq!(d.run(&["get", "missing-2"]).status.code(), Some(1));
    let log = d.wait_log("request failed");
    assert_eq!(log.matches("request failed").count(), 1, "{log}");

    // A file that no longer parses changes nothing, and says why.
    replace_file(&conf, "[log]\nlevel = \"info\"\nbogus = 1\n");
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let log = d.wait_log("the running configuration is unchanged");
    assert!(log.contains("bogus"), "{log}");
    let before = log.matches("request failed").count();
    assert_eq!(d.run(&["get", "missing-3"]).status.code(), Some(1));
    d.wait_log_count("request failed", before + 1);

    // Still serving, and stops cleanly.
    d.ok(&["ping"]);
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn a_flag_keeps_precedence_over_the_file_on_sighup() {
    let (mut d, conf) = Daemon::with_config("[log]\nlevel = \"info\"\n", &["--log-level", "warn"]);
    d.ok(&["ping"]);
    replace_file(&conf, "[log]\nlevel = \"debug\"\n[server]\nworkers = 5\n");
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    // The restart warning shows the reload happened; the level stays warn, so no debug
    // line appears and the level is not reported as changed.
    d.wait_log("server.workers changed but needs a restart");
    assert_eq!(d.run(&["get", "missing"]).status.code(), Some(1));
    let st = d.stop_with(Signal::TERM);
    assert!(st.success());
    let log = d.log();
    assert!(!log.contains("request failed"), "{log}");
    assert!(!log.contains("log.level"), "{log}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let mut d = Daemon::start(&["--log-format", "json"]);
    d.ok(&["ping"]);
    let st = d.stop_with(Signal::TERM);
    assert!(st.success());
    let log = d.log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(messages.iter().any(|m| m.contains("ready")), "{log}");
    assert!(messages.iter().any(|m| m == "stopped"), "{log}");
}

#[test]
fn rust_log_sets_the_level_when_no_flag_does() {
    let (dir, socket, data) = Daemon::fresh_dir();
    let mut cmd: Command = serve_on(&socket, dir.path());
    cmd.env("RUST_LOG", "debug");
    let d = Daemon::spawn_cmd(dir, socket, data, cmd);
    assert_eq!(d.run(&["get", "missing"]).status.code(), Some(1));
    d.wait_log("request failed");
}

/// `objmapper stat KEY`'s `tier:` line.
fn tier_of(d: &Daemon, key: &str) -> String {
    let out = String::from_utf8(d.ok(&["stat", key])).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("tier:"))
        .unwrap_or_else(|| panic!("no tier in {out}"))
        .trim()
        .to_string()
}

#[test]
fn sighup_shrinks_the_memory_tier_of_the_running_server() {
    let (mut d, conf) = Daemon::with_config("[store]\nmem_capacity = \"1M\"\n", &[]);
    let body = util::pattern(200 * 1024, 3);
    let f = util::write_file(&d.path("in"), &body);
    d.ok(&["put", "before", &f]);
    // "both" once write-behind has copied it to disk.
    let t = tier_of(&d, "before");
    assert!(
        t == "memory" || t == "both",
        "200 KiB fits a 1 MiB memory tier: {t}"
    );

    replace_file(
        &conf,
        "[store]\nmem_capacity = \"64K\"\nmem_max_objects = 1000\n",
    );
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let log = d.wait_log("SIGHUP: store.mem_max_objects changed");
    assert!(
        log.contains("SIGHUP: store.mem_capacity changed from \"1M\" to \"64K\""),
        "{log}"
    );
    d.ok(&["put", "after", &f]);
    assert_eq!(
        tier_of(&d, "after"),
        "disk",
        "200 KiB does not fit the 64 KiB memory tier any more"
    );
    assert_eq!(d.ok(&["get", "after"]), body);

    // A value the running server refuses changes nothing and says which.
    replace_file(
        &conf,
        "[store]\nmem_capacity = \"64K\"\nmem_max_objects = 0\n",
    );
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let log = d.wait_log("none of them changed");
    assert!(log.contains("memory.max_objects"), "{log}");
    // Switching the memory tier off is a restart-only change.
    replace_file(&conf, "[store]\nmem_capacity = 0\nmem_max_objects = 1000\n");
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    d.wait_log("store.mem_capacity changed but needs a restart");
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

#[test]
fn eviction_knobs_come_from_the_file_and_change_on_sighup() {
    let (mut d, conf) = Daemon::with_config(
        "[eviction.disk]\nsmall_ratio = 0.25\n",
        &["--log-level", "info"],
    );
    // In force from the start: the management API reports the file's value.
    let shown = String::from_utf8(d.ok(&["config", "get", "disk.eviction.small_ratio"])).unwrap();
    assert_eq!(shown.trim(), "0.25", "{shown}");

    replace_file(
        &conf,
        "[eviction.disk]\nsmall_ratio = 0.25\n[eviction.memory]\nghost_ratio = 2.0\n",
    );
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let log = d.wait_log("SIGHUP: eviction.memory.ghost_ratio changed from 0.9 to 2.0");
    assert!(!log.contains("restart"), "{log}");
    let shown = String::from_utf8(d.ok(&["config", "get", "memory.eviction.ghost_ratio"])).unwrap();
    assert_eq!(shown.trim(), "2.0", "{shown}");

    // Out of range: refused at startup, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[eviction.memory]\nsmall_ratio = 5.0\n").unwrap();
    let out = print_config_output(&["--config", bad.to_str().unwrap()], &[]);
    assert_fails_with(&out, 78, "[eviction.memory] small_ratio = 5");
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}
