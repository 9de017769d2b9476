//! Running under systemd: socket activation (LISTEN_FDS) with the real binary, its error
//! paths, and `systemd-analyze verify` of the shipped units.

mod util;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::process::Signal;
use util::{assert_fails_with, objmapper, pattern, serve_on, stderr, write_file, Daemon, BIN};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("objmapper-sd-")
        .tempdir()
        .unwrap()
}

/// `program` with objmapper()'s clean environment.
fn with_clean_env(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, v) in objmapper().get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// `objmapper serve ARGS` started the way a service manager does it: `listener` as
/// descriptor 3, LISTEN_FDS=`fds` and LISTEN_PID = the server's own pid. A shell sets the
/// pid ($$ survives `exec`) and moves the socket from stdin to descriptor 3.
fn activated(listener: OwnedFd, fds: &str, args: &[&Path]) -> Command {
    let mut sh = with_clean_env("sh");
    sh.arg("-c")
        .arg(format!(
            "export LISTEN_PID=$$ LISTEN_FDS={fds} LISTEN_FDNAMES=objmapper; \
             exec \"$0\" serve \"$@\" 3<&0 0</dev/null"
        ))
        .arg(BIN)
        .args(args)
        .stdin(Stdio::from(listener))
        .stdout(Stdio::null());
    sh
}

#[test]
fn serves_the_socket_it_is_handed() {
    let dir = tempdir();
    let public = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&public).unwrap();
    let unused = dir.path().join("flag.sock");
    let data = dir.path().join("data");
    let mem = dir.path().join("mem");
    let cmd = activated(
        OwnedFd::from(listener),
        "1",
        &[
            Path::new("--socket"),
            &unused,
            Path::new("--data-dir"),
            &data,
            Path::new("--mem-dir"),
            &mem,
        ],
    );
    let mut d = Daemon::spawn_cmd(dir, public.clone(), data, cmd);
    // The line comes once the server is up (the socket itself accepted from the start).
    d.wait_log(&format!(
        "listening on {} (socket activation)",
        public.display()
    ));
    let admin = dir_path_admin(&public);
    assert!(
        admin.exists(),
        "the management socket is the served socket's sibling"
    );
    let body = pattern(100_000, 7);
    let f = write_file(&d.path("in"), &body);
    d.ok(&["put", "activated/key", &f]);
    assert_eq!(d.ok(&["get", "activated/key"]), body);
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
    assert!(
        public.exists(),
        "the service manager's socket file must be left alone"
    );
    assert!(!unused.exists(), "--socket is not bound under activation");
    assert!(
        !admin.exists(),
        "the server removes its own management socket"
    );
}

fn dir_path_admin(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".admin");
    PathBuf::from(s)
}

/// Runs an activated server that must fail at startup; returns its stderr.
fn activated_failure(fd3: OwnedFd, fds: &str) -> String {
    let dir = tempdir();
    let data = dir.path().join("data");
    let mem = dir.path().join("mem");
    let sock = dir.path().join("s.sock");
    let out = activated(
        fd3,
        fds,
        &[
            Path::new("--socket"),
            &sock,
            Path::new("--data-dir"),
            &data,
            Path::new("--mem-dir"),
            &mem,
        ],
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    // A configuration error: not worth restarting (the unit's RestartPreventExitStatus=).
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(!sock.exists(), "it must not fall back to binding --socket");
    stderr(&out)
}

#[test]
fn a_passed_descriptor_that_is_not_a_listening_unix_socket_is_refused() {
    let dir = tempdir();
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let e = activated_failure(file.into(), "1");
    assert!(e.contains("socket activation: fd 3 is not a socket"), "{e}");

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = activated_failure(tcp.into(), "1");
    assert!(e.contains("fd 3 is not a Unix socket"), "{e}");

    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = activated_failure(a.into(), "1");
    assert!(e.contains("not listening"), "{e}");

    let l = UnixListener::bind(dir.path().join("two.sock")).unwrap();
    let e = activated_failure(l.into(), "2");
    assert!(e.contains("2 descriptors passed"), "{e}");
}

#[test]
fn listen_fds_meant_for_another_process_are_ignored() {
    // An environment inherited from a socket-activated parent: LISTEN_PID is not ours.
    let d = Daemon::start_env(&[], &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")]);
    d.ok(&["ping"]);
    assert!(!d.log().contains("socket activation"), "{}", d.log());
}

#[test]
fn systemd_socket_activate_starts_the_server_on_first_connection() {
    let Some(tool) = which("systemd-socket-activate") else {
        eprintln!("SKIPPED: systemd-socket-activate is not installed (Debian: systemd)");
        return;
    };
    let dir = tempdir();
    let public = dir.path().join("sd.sock");
    let data = dir.path().join("data");
    let mut cmd = with_clean_env(tool);
    cmd.arg("-l")
        .arg(&public)
        .arg(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--mem-dir")
        .arg(dir.path().join("mem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // The tool binds the socket, and execs objmapper (same pid) on the first connection,
    // which Daemon::spawn_cmd makes while it waits for the socket.
    let mut d = Daemon::spawn_cmd(dir, public.clone(), data, cmd);
    d.wait_log(util::READY);
    d.ok(&["put", "k", &write_file(&d.path("in"), b"activated")]);
    assert_eq!(d.ok(&["get", "k"]), b"activated");
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    let Some(tool) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian: systemd)");
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let dir = tempdir();
    for unit in ["objmapper.socket", "objmapper.service"] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        // verify checks that ExecStart= is executable: point it at the built binary.
        let text = text.replace("/usr/local/bin/objmapper", BIN);
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new(tool)
        .current_dir(dir.path())
        .args(["verify", "./objmapper.socket", "./objmapper.service"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// The notifications received on `rx` until one contains `until` (each waited for at
/// most 30 s), in order.
fn notifications_until(rx: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    rx.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {until:?} notification ({e}); got {got:?}"));
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = m.contains(until);
        got.push(m);
        if done {
            return got;
        }
    }
}

#[test]
fn tells_the_service_manager_when_it_is_ready_reloading_and_stopping() {
    let dir = tempdir();
    let notify = dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let sock = dir.path().join("s.sock");
    let conf = dir.path().join("objmapper.toml");
    std::fs::write(&conf, "[log]\nlevel = \"info\"\n").unwrap();
    let mut cmd = objmapper();
    cmd.env("NOTIFY_SOCKET", &notify)
        .arg("serve")
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&sock)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--mem-dir")
        .arg(dir.path().join("mem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let data = dir.path().join("data");
    let mut d = Daemon::spawn_cmd(dir, sock.clone(), data, cmd);

    // Startup: a status while the store opens, then READY=1 once it serves.
    let got = notifications_until(&rx, "READY=1");
    assert!(
        got[0].starts_with("STATUS=starting: opening the store in "),
        "{got:?}"
    );
    assert_eq!(
        got.last().unwrap(),
        &format!("READY=1\nSTATUS=serving {}\n", sock.display())
    );
    d.wait_log(util::READY);
    d.ok(&["ping"]);

    // `objmapper reload`: RELOADING=1 with the clock, then READY=1; the command returns
    // once the change is in force.
    std::fs::write(&conf, "[log]\nlevel = \"debug\"\n").unwrap();
    let out = String::from_utf8(d.ok(&["reload"])).unwrap();
    assert!(out.contains("reloaded: changed log.level"), "{out}");
    let got = notifications_until(&rx, "READY=1");
    assert!(
        got[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{got:?}"
    );
    assert!(
        got.last().unwrap().ends_with("configuration reloaded\n"),
        "{got:?}"
    );
    assert!(d
        .log()
        .contains("log.level changed from \"info\" to \"debug\""));

    // A file that does not parse: `objmapper reload` fails with the reason, READY=1 says
    // the old settings stay.
    std::fs::write(&conf, "[log\nlevel = \"info\"\n").unwrap();
    let out = d.run(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("RELOAD_FAILED"), "{e}");
    assert!(
        e.contains(&format!("config file {}", conf.display())),
        "{e}"
    );
    assert!(e.contains("the running configuration is unchanged"), "{e}");
    let got = notifications_until(&rx, "READY=1");
    assert!(got[0].starts_with("RELOADING=1\n"), "{got:?}");
    assert!(
        got.last()
            .unwrap()
            .contains("last reload refused, old settings kept"),
        "{got:?}"
    );

    // SIGHUP goes the same way.
    std::fs::write(&conf, "[log]\nlevel = \"info\"\n").unwrap();
    rustix::process::kill_process(d.pid(), Signal::HUP).unwrap();
    let got = notifications_until(&rx, "READY=1");
    assert!(got[0].starts_with("RELOADING=1\n"), "{got:?}");
    assert!(
        got.last().unwrap().ends_with("configuration reloaded\n"),
        "{got:?}"
    );

    // SIGTERM: STOPPING=1 before the shutdown.
    let st = d.stop_with(Signal::TERM);
    assert!(st.success(), "{}", d.log());
    let got = notifications_until(&rx, "STOPPING=1");
    assert!(got.last().unwrap().starts_with("STOPPING=1\n"), "{got:?}");
}

#[test]
fn a_missing_config_file_is_a_configuration_error_exit_78() {
    let dir = tempdir();
    let out = serve_on(&dir.path().join("s.sock"), dir.path())
        .env("OBJMAPPER_CONFIG", dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.starts_with("objmapper: configuration error: "), "{e}");
    assert!(e.contains("absent.toml: it does not exist"), "{e}");
    assert!(!dir.path().join("s.sock").exists());
}

#[test]
fn reload_of_an_unchanged_file_and_of_no_server() {
    // The server was started with OBJMAPPER_CONFIG=/dev/null (util::objmapper), an empty
    // file: re-read, nothing changes, and the command says so.
    let d = Daemon::start(&[]);
    let out = d.run(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No server: the message says the management API cannot be reached.
    let dir = tempdir();
    let out = objmapper()
        .args(["reload", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_fails_with(&out, 1, "cannot reach the management API");
}

#[test]
fn a_client_of_a_server_that_never_answers_times_out_with_a_clear_message() {
    // A socket whose server never accepts: what a socket-activated service that cannot
    // start looks like to a client (the kernel completes connect() from the backlog).
    let dir = tempdir();
    let sock = dir.path().join("stuck.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    for args in [
        &["--timeout", "1", "ping"][..],
        &["get", "--timeout", "1500ms", "some/key"],
    ] {
        let t = std::time::Instant::now();
        let out = objmapper()
            .args(args)
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap();
        let took = t.elapsed();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains("did not answer"), "{args:?}: {e}");
        assert!(e.contains("--timeout"), "{args:?}: {e}");
        assert!(
            took >= std::time::Duration::from_millis(900) && took.as_secs() < 10,
            "{args:?}: gave up after {took:?}"
        );
    }
    // OBJMAPPER_TIMEOUT does the same; the admin commands honour it too.
    let t = std::time::Instant::now();
    let admin = dir.path().join("stuck.sock.admin");
    let _admin = UnixListener::bind(&admin).unwrap();
    let out = objmapper()
        .env("OBJMAPPER_TIMEOUT", "1")
        .args(["stats", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not answer"), "{}", stderr(&out));
    assert!(t.elapsed().as_secs() < 10);
    // A bad value is a usage error.
    let out = objmapper()
        .args(["ping", "--timeout", "soon", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
