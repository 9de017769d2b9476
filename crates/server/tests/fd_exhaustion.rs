//! Descriptor exhaustion (issue 15, item 4): clients that connect while the server is at
//! its RLIMIT_NOFILE wait in the listen backlog, and are accepted and served once
//! descriptors free up, without another client having to connect first; meanwhile the
//! server idles (no busy loop), `/readyz` says why, and the metric counts it.
//!
//! The server runs in a child process (this test binary run again, serving from
//! [`fd_exhaustion_child`]), so its descriptor limit can be lowered from the outside with
//! prlimit(2) while the test's own descriptors stay unlimited, as an operator's
//! `prlimit --pid` or a container's limit would.

mod util;

use objmapper_proto::{Mode, Op, Status};
use rustix::net::RecvFlags;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use util::Raw;

/// Set (to the child's directory) in the child process only.
const CHILD_ENV: &str = "OBJM_FD_EXHAUSTION_CHILD_DIR";
/// The helper "test" that is the server inside the child.
const CHILD_TEST: &str = "fd_exhaustion_child";
/// Connections the server may accept before it runs out of descriptors.
const ROOM: u64 = 12;
/// Clients that connect while the server is at its limit.
const QUEUED: usize = 4;
/// First connections closed to make room for them (more than `QUEUED`).
const FREED: usize = 6;
/// How long queued clients may take to be served once descriptors are free: a liveness
/// bound, not a timing measurement (the server retries within 100 ms).
const LIVENESS: Duration = Duration::from_secs(10);

/// Not a test on its own: the server half of the test below, run in a child process.
/// Serves until its stdin closes.
#[test]
fn fd_exhaustion_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // run as part of the suite: nothing to do
    };
    let dir = PathBuf::from(dir);
    let mut cfg = util::config(dir.join("objm.sock"), dir.join("data"));
    cfg.workers = 1;
    cfg.blocking_threads = 1;
    cfg.admin_socket = Some(dir.join("admin.sock"));
    // Nothing but the test's connections may open or close descriptors meanwhile.
    cfg.checkpoint_interval = Duration::from_secs(3600);
    cfg.idle_timeout = None;
    cfg.header_timeout = Duration::from_secs(600);
    cfg.frame_timeout = Duration::from_secs(600);
    let server = objmapper_server::Server::start(cfg).expect("the child's server starts");
    std::fs::write(dir.join("ready.tmp"), std::process::id().to_string()).unwrap();
    std::fs::rename(dir.join("ready.tmp"), dir.join("ready")).unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server
        .shutdown()
        .expect("the child's server shuts down cleanly");
}

/// The child server, killed if the test fails before it stops it.
struct ChildServer {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

impl ChildServer {
    fn start() -> ChildServer {
        let dir = tempfile::Builder::new()
            .prefix("objm-fdx")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("child.log")).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the child server");
        let stdin = child.stdin.take();
        let mut s = ChildServer { child, stdin, dir };
        let start = Instant::now();
        while !s.dir.path().join("ready").exists() {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("the child server exited ({st}):\n{}", s.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the child server never got ready:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("objm.sock")
    }

    fn admin(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("child.log")).unwrap_or_default()
    }

    /// The numbers of the descriptors the server has open now.
    fn open_fds(&self) -> Vec<u64> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read the child's /proc/PID/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// How many more descriptors the server may open under `limit`: accept(2) fails with
    /// EMFILE when no number below RLIMIT_NOFILE is free, so the gaps count, not the total.
    fn free_below(&self, limit: u64) -> u64 {
        limit - self.open_fds().iter().filter(|&&n| n < limit).count() as u64
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
        Duration::from_millis(ticks * 10)
    }

    /// Closes its stdin (it shuts down) and waits for it to exit.
    fn stop(mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "the child server failed ({st}):\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the child server did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on an open (keep-alive) connection: status and body.
fn http_get(s: &mut UnixStream, path: &str) -> (u16, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read an HTTP answer");
        assert!(n > 0, "the management API closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).expect("read an HTTP body");
        assert!(n > 0, "EOF inside an HTTP body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

/// Whether a reply has arrived on `c` (without reading it).
fn has_reply(c: &Raw) -> bool {
    let mut b = [0u8; 1];
    match rustix::net::recv(&c.sock, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((n, _)) => n > 0,
        Err(rustix::io::Errno::AGAIN) => false,
        Err(e) => panic!("recv: {e}"),
    }
}

fn ping_sent(path: &Path) -> Raw {
    let mut c = Raw::connect(path);
    c.request(Op::Ping, Mode::None, b"");
    c
}

#[test]
fn clients_queued_at_the_fd_limit_are_served_once_descriptors_free_up() {
    let server = ChildServer::start();
    let sock = server.socket();
    let mut warm = Raw::connect(&sock);
    assert_eq!(warm.ping().header.status, Status::Ok);
    // A management connection opened while descriptors are plenty, to ask /readyz later.
    let mut admin = UnixStream::connect(server.admin()).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (status, body) = http_get(&mut admin, "/readyz");
    assert_eq!(status, 200, "{body}");

    // Lower the server's soft limit to what it holds now plus ROOM (the hard limit stays,
    // and the server does not raise its limit once running).
    let limit = server.open_fds().len() as u64 + ROOM;
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    let old = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::prlimit(
        Some(pid),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: old.maximum,
        },
    )
    .expect("prlimit on the child server");

    // Connect until every descriptor the limit allows is open (each connection answered,
    // so accepted). Counting the server's free descriptors, not assuming ROOM
    // connections, keeps this right if another of its descriptors came or went meanwhile.
    let mut first = Vec::new();
    while server.free_below(limit) > 0 {
        let mut c = Raw::connect(&sock);
        assert_eq!(c.ping().header.status, Status::Ok);
        first.push(c);
        assert!(
            first.len() as u64 <= limit,
            "the server never reached its limit"
        );
    }
    assert!(first.len() >= FREED, "only {} connections fit", first.len());

    // These clients connect (the kernel queues them) and send a PING: they wait.
    let queued: Vec<Raw> = (0..QUEUED).map(|_| ping_sent(&sock)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http_get(&mut admin, "/readyz");
    assert_eq!(status, 503, "readyz while out of descriptors: {body}");
    assert!(
        body.contains("fd_exhausted") && body.contains("RLIMIT_NOFILE"),
        "{body}"
    );
    assert!(
        queued.iter().all(|c| !has_reply(c)),
        "a client was served while the server was at its limit: the test's setup is wrong"
    );

    // At its limit the server waits; it does not spin.
    let (cpu0, t0) = (server.cpu(), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu, wall) = (server.cpu() - cpu0, t0.elapsed());
    assert!(
        cpu < wall / 3,
        "the server used {cpu:?} of CPU in {wall:?} while at its descriptor limit"
    );

    // Descriptors free up. No client connects from here on: the queued ones must be
    // accepted and answered on the server's own initiative.
    first.truncate(first.len() - FREED);
    let deadline = Instant::now() + LIVENESS;
    for (i, mut c) in queued.into_iter().enumerate() {
        while !has_reply(&c) {
            assert!(
                Instant::now() < deadline,
                "queued client {i} was not served within {LIVENESS:?} after {FREED} \
                 connections closed; server log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(c.recv().header.status, Status::Ok, "queued client {i}");
        assert_eq!(
            c.ping().header.status,
            Status::Ok,
            "queued client {i} again"
        );
    }

    // Back to normal, and counted.
    let (status, body) = http_get(&mut admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    let m = util::http::prometheus(
        &util::http::get(&util::http::unix(&server.admin()), "/metrics").text,
    );
    assert!(
        m["objmapper_accept_fd_exhausted_total"] >= 1.0,
        "{:?}",
        m.get("objmapper_accept_fd_exhausted_total")
    );
    assert_eq!(m["objmapper_accept_paused"], 0.0);
    assert_eq!(warm.ping().header.status, Status::Ok);
    drop((first, warm, admin));
    server.stop();
}
