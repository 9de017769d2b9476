//! Helpers for the CLI tests: run `objmapper serve` as a child process in a private temp
//! directory, and run client commands against it.
#![allow(dead_code)] // each test file uses a different subset

pub mod netns;
pub mod pki;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_objmapper");

#[allow(unused_imports)] // not every test file uses it
pub use objmapper_testkit::pattern;

/// What `serve` logs once it is serving.
pub const READY: &str = concat!("objmapper ", env!("CARGO_PKG_VERSION"), " ready");

/// `objmapper` with a clean environment: no inherited OBJMAPPER_* variables or RUST_LOG,
/// and an empty config file (so a machine's /etc/objmapper/objmapper.toml stays out).
pub fn objmapper() -> Command {
    let mut c = Command::new(BIN);
    c.env("OBJMAPPER_CONFIG", "/dev/null");
    for v in [
        "RUST_LOG",
        // A test server must not report to the service manager the tests run under.
        "NOTIFY_SOCKET",
        "OBJMAPPER_TIMEOUT",
        "OBJMAPPER_LOG_FORMAT",
        "OBJMAPPER_SOCKET_MODE",
        "OBJMAPPER_SOCKET_GROUP",
        "OBJMAPPER_TCP",
        "OBJMAPPER_UDP",
        "OBJMAPPER_SHARE_FDS",
        "OBJMAPPER_WORKERS",
        "OBJMAPPER_MAX_OBJECT_SIZE",
        "OBJMAPPER_PROMOTE_AFTER_HITS",
        "OBJMAPPER_ADMIN_SOCKET",
        "OBJMAPPER_ADMIN_TCP",
        "OBJMAPPER_NO_ADMIN",
        "OBJMAPPER_ADMIN",
        "OBJMAPPER_SOCKET",
        "OBJMAPPER_DATA_DIR",
        "OBJMAPPER_LOG",
        "OBJMAPPER_MEM_DIR",
        "OBJMAPPER_MEM_CAPACITY",
        "OBJMAPPER_MEM_MAX_OBJECTS",
        "OBJMAPPER_DISK_CAPACITY",
        "OBJMAPPER_DISK_MAX_OBJECTS",
        "OBJMAPPER_DIRECT_TO_DISK_THRESHOLD",
        "OBJMAPPER_UDP_MAX_RESPONSE",
        "OBJMAPPER_AUTO_FD_THRESHOLD",
        "OBJMAPPER_ADMIN",
        "OBJMAPPER_ADMIN_SOCKET",
        "OBJMAPPER_ALLOW_UID",
        "OBJMAPPER_ALLOW_GID",
        "OBJMAPPER_TCP_PERMISSIONS",
        "OBJMAPPER_MAX_CONNECTIONS",
        "OBJMAPPER_MAX_PIPELINE_DEPTH",
        "OBJMAPPER_MAX_STAGED_PUTS",
        "OBJMAPPER_MAX_STAGED_PUTS_TOTAL",
        "OBJMAPPER_MAX_STAGED_BYTES_PER_CONN",
        "OBJMAPPER_MAX_STAGED_BYTES_TOTAL",
        "OBJMAPPER_MAX_KEY_LEN",
        "OBJMAPPER_MAX_META_LEN",
        "OBJMAPPER_HEADER_TIMEOUT",
        "OBJMAPPER_FRAME_TIMEOUT",
        "OBJMAPPER_IDLE_TIMEOUT",
        "OBJMAPPER_TLS_CERT",
        "OBJMAPPER_TLS_KEY",
        "OBJMAPPER_TLS_CLIENT_CA",
        "OBJMAPPER_TCP_TOKEN_FILE",
        "OBJMAPPER_TLS_CA",
        "OBJMAPPER_TLS_CLIENT_CERT",
        "OBJMAPPER_TLS_CLIENT_KEY",
        "OBJMAPPER_TLS_SERVER_NAME",
        "OBJMAPPER_TOKEN_FILE",
    ] {
        c.env_remove(v);
    }
    c
}

/// A running `objmapper serve`, killed (SIGKILL) on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// A fresh temp dir and the socket and data paths a server started in it uses.
    pub fn fresh_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("objmapper-cli-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("s.sock");
        let data = dir.path().join("data");
        (dir, socket, data)
    }

    /// Starts a server in a fresh temp dir and waits until its socket accepts.
    pub fn start(extra: &[&str]) -> Daemon {
        let (dir, socket, data) = Daemon::fresh_dir();
        Daemon::start_at(dir, socket, data, extra)
    }

    /// Like [`Daemon::start`], with extra environment variables for `serve`.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let (dir, socket, data) = Daemon::fresh_dir();
        Daemon::spawn(dir, socket, data, extra, env)
    }

    /// Starts a server on the given paths (used to restart on the same data). The memory
    /// tier lives in `data` + `.mem`, inside the temp dir, unless `extra` names one.
    pub fn start_at(
        dir: tempfile::TempDir,
        socket: PathBuf,
        data: PathBuf,
        extra: &[&str],
    ) -> Daemon {
        Daemon::spawn(dir, socket, data, extra, &[])
    }

    /// Starts a server on the given paths with extra environment variables (a restart
    /// on the same data after a crash).
    pub fn spawn_env_at(
        dir: tempfile::TempDir,
        socket: PathBuf,
        data: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::spawn(dir, socket, data, extra, env)
    }

    fn spawn(
        dir: tempfile::TempDir,
        socket: PathBuf,
        data: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mem_in_env = env.iter().any(|(k, _)| *k == "OBJMAPPER_MEM_DIR");
        let mut cmd = objmapper();
        cmd.envs(env.iter().copied())
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(&data)
            .args(["--log-level", "info"])
            .args(if extra.contains(&"--mem-dir") || mem_in_env {
                vec![]
            } else {
                vec![
                    "--mem-dir".into(),
                    data.with_extension("mem").into_os_string(),
                ]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Daemon::spawn_cmd(dir, socket, data, cmd)
    }

    /// A daemon reading `conf_text` as its config file, with only the socket and the
    /// directories (and `extra`) as flags, in a directory other uids can traverse.
    /// Returns the config file's path too, for reload tests.
    pub fn with_config(conf_text: &str, extra: &[&str]) -> (Daemon, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("objmapper-cfg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("s.sock");
        let data = dir.path().join("data");
        let conf = dir.path().join("objmapper.toml");
        std::fs::write(&conf, conf_text).unwrap();
        let mut cmd = serve_on(&socket, dir.path());
        cmd.arg("--config").arg(&conf).args(extra);
        (Daemon::spawn_cmd(dir, socket, data, cmd), conf)
    }

    /// Runs `cmd` (an `objmapper serve` with every setting it needs, its memory tier in
    /// `dir`; stdin and stdout as the caller set them) and waits until `socket` accepts.
    pub fn spawn_cmd(
        dir: tempfile::TempDir,
        socket: PathBuf,
        data: PathBuf,
        mut cmd: Command,
    ) -> Daemon {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn objmapper serve");
        // Drain stderr so the server never blocks on a full pipe; keep it for messages.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut d = Daemon {
            child: Some(child),
            dir,
            socket,
            data,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&d.socket).is_err() {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "objmapper serve exited with {st} before listening:\n{}",
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The object socket is bound a moment before the management API turns ready:
        // wait that moment out, so a test's first admin call does not meet `not_ready`.
        let admin = {
            let mut p = d.socket.clone().into_os_string();
            p.push(".admin");
            PathBuf::from(p)
        };
        while admin_not_ready(&admin) {
            assert!(
                Instant::now() < deadline,
                "the management API stayed not_ready:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until the log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 30 s) until `needle` occurs `n` times in the log; returns the log.
    pub fn wait_log_count(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear {n} times in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().unwrap())
    }

    /// The TCP address the server logged (when started with `--tcp 127.0.0.1:0`).
    pub fn tcp_addr(&self) -> String {
        self.logged_addr("tcp")
    }

    /// The UDP address the server logged (when started with `--udp 127.0.0.1:0`).
    pub fn udp_addr(&self) -> String {
        self.logged_addr("udp")
    }

    /// The address after "listening on PROTO " in the server's log, waiting for it.
    fn logged_addr(&self, proto: &str) -> String {
        let marker = format!("listening on {proto} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(rest) = log.split(&marker).nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {proto} address in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` and waits (up to 30 s) for the server to exit.
    pub fn stop_with(&mut self, sig: rustix::process::Signal) -> ExitStatus {
        rustix::process::kill_process(self.pid(), sig).unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit after {sig:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and hands back its directory (to restart on the same data).
    pub fn into_parts(mut self) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let st = self.stop_with(rustix::process::Signal::TERM);
        assert!(st.success(), "serve exited with {st}:\n{}", self.log());
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::mem::replace(&mut self.dir, tmp);
        (dir, self.socket.clone(), self.data.clone())
    }

    /// `objmapper <args> --socket <this server's socket>`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = objmapper();
        c.args(args).arg("--socket").arg(&self.socket);
        c
    }

    /// Runs a command against this server.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a command with `input` on stdin (through a pipe).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_stdin(self.cmd(args), input)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        check_ok(args, self.run(args))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

pub fn check_ok(args: &[&str], out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "objmapper {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until `f` holds, checking every 50 ms, at most `within`; returns how long it
/// took.
pub fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// `objmapper serve` on `socket`, with its data and memory directories in `dir`
/// (`data`, `mem`); more flags can follow.
pub fn serve_on(socket: &Path, dir: &Path) -> Command {
    let mut c = objmapper();
    c.arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--mem-dir")
        .arg(dir.join("mem"));
    c
}

/// `objmapper serve --print-config` with `args` and `env` (and a data dir, so nothing
/// depends on $HOME).
pub fn print_config_output(args: &[&str], env: &[(&str, &str)]) -> Output {
    objmapper()
        .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// What `objmapper serve --print-config` prints; it must succeed.
pub fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = print_config_output(args, env);
    assert!(
        out.status.success(),
        "print-config failed: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `key = ...` in printed config text.
pub fn printed_value(text: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .to_string()
}

/// Asserts that `out` exited with `code` and that its stderr contains `needle`.
#[track_caller]
pub fn assert_fails_with(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

/// Asserts that `out` exited with `code` and that its stderr starts with `prefix`.
#[track_caller]
pub fn assert_fails_starting(out: &Output, code: i32, prefix: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert!(stderr(out).starts_with(prefix), "{}", stderr(out));
}

/// The regular files below `dir` that are `len` bytes long.
pub fn files_of_len(dir: &Path, len: u64) -> Vec<PathBuf> {
    objmapper_testkit::files_under(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).unwrap().len() == len)
        .collect()
}

pub fn write_file(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// Whether the tests run as root (needed to run clients under other uids).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A copy of the objmapper binary any uid can run, in the (world-traversable) test dir.
pub fn public_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("objmapper-client");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs `objmapper ARGS --socket SOCKET` as uid/gid with no supplementary groups
/// (setpriv; needs root).
pub fn run_as(uid: u32, gid: u32, bin: &Path, d: &Daemon, args: &[&str]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(bin)
        .args(args)
        .arg("--socket")
        .arg(&d.socket)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

/// Whether the management API on the Unix socket `admin` (when there is one) answers
/// `GET /readyz` with `not_ready` (the store still opening, or the server a moment
/// from ready). Any other answer, or no such socket, is not "not ready".
fn admin_not_ready(admin: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = UnixStream::connect(admin) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("not_ready")
}
