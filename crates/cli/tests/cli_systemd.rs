//! Running under systemd: socket activation (LISTEN_FDS) with the real binary, its error
//! paths, and `systemd-analyze verify` of the shipped units.

mod util;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::process::Signal;
use util::{objmapper, pattern, stderr, write_file, Daemon, BIN};

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
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
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
