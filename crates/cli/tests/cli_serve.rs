//! `objmapper serve` as a process: startup, socket permissions, clean shutdown on
//! SIGTERM and SIGINT (exit 0, socket removed), data surviving a restart.

mod util;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use rustix::process::Signal;
use util::{objmapper, serve_on, stderr, write_file, Daemon};

#[test]
fn sigterm_exits_0_and_removes_the_socket() {
    let mut d = Daemon::start(&[]);
    let meta = std::fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "default socket mode"
    );
    let st = d.stop_with(Signal::TERM);
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn sigint_exits_0_too() {
    let mut d = Daemon::start(&["--socket-mode", "660"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let st = d.stop_with(Signal::INT);
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn objects_survive_a_restart() {
    let d = Daemon::start(&[]);
    let file = write_file(&d.path("in"), b"persistent bytes");
    d.ok(&["put", "p", &file, "--durable"]);
    let (dir, socket, data) = d.into_parts();
    let d = Daemon::start_at(dir, socket, data, &[]);
    assert_eq!(d.ok(&["get", "p"]), b"persistent bytes");
}

#[test]
fn environment_configures_socket_and_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("env.sock");
    let data = dir.path().join("envdata");
    let mem = dir.path().join("envmem");
    let mut child = objmapper()
        .arg("serve")
        .env("OBJMAPPER_SOCKET", &socket)
        .env("OBJMAPPER_DATA_DIR", &data)
        .env("OBJMAPPER_MEM_DIR", &mem)
        .env("OBJMAPPER_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(std::time::Instant::now() < deadline, "no socket from env");
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let guard = Kill(child);
    assert!(data.is_dir(), "data dir from OBJMAPPER_DATA_DIR");
    assert!(mem.is_dir(), "memory tier dir from OBJMAPPER_MEM_DIR");
    let out = objmapper()
        .arg("ping")
        .env("OBJMAPPER_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(guard);
}

#[test]
fn serve_refuses_bad_flags_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().unwrap();
    for bad in [
        &["--socket-mode", "999"][..],
        &["--workers", "0"],
        &["--max-object-size", "lots"],
        &["--tcp", "not-an-address"],
        &["--socket-group", "no-such-group-hopefully"],
        &["--mem-capacity", "lots"],
        &["--mem-max-objects", "1k"],
        &["--disk-capacity", "-1"],
        &["--disk-max-objects", ""],
        &["--direct-to-disk-threshold", "16X"],
    ] {
        let out = objmapper()
            .args(["serve", "--socket", sock, "--data-dir"])
            .arg(dir.path().join("d"))
            .arg("--mem-dir")
            .arg(dir.path().join("m"))
            .args(bad)
            .output()
            .unwrap();
        // 2 when clap refuses the value itself; 78 (a configuration error, which a
        // service manager must not restart on) when it is refused once the flags, the
        // environment and the file are merged.
        let e = stderr(&out);
        match out.status.code() {
            Some(2) => {}
            Some(78) => assert!(
                e.contains("objmapper: configuration error: "),
                "{bad:?}: {e}"
            ),
            other => panic!("{bad:?}: exit {other:?}: {e}"),
        }
    }
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    std::fs::write(&path, b"precious").unwrap();
    let out = serve_on(&path, dir.path())
        .args(["--log-level", "error"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a socket"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}
