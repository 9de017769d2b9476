//! Shared helpers: an in-process server on a temp dir and unique socket, and a raw
//! protocol connection for sending exactly the bytes a test wants.
#![allow(dead_code)]

pub mod http;
mod inbox;
pub mod wire;

pub use inbox::Inbox;
#[allow(unused_imports)] // not every test file uses them
pub use objmapper_testkit::{files_under, wait_for};

use objmapper_proto::*;
use objmapper_server::{Server, ServerConfig};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server in a temp dir of its own. Fields drop in order: the server shuts down
/// (writing its clean-shutdown markers) before its directory is removed, so nothing is
/// left behind in /tmp.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("objm-test")
            .tempdir()
            .unwrap();
        let mut cfg = config(dir.path().join("objm.sock"), dir.path().join("data"));
        f(&mut cfg);
        let server = Server::start(cfg).expect("server starts");
        TestServer {
            dir,
            server: Some(server),
        }
    }

    /// Starts a new server on the same directory (after `stop`).
    pub fn restart(&mut self) {
        assert!(self.server.is_none());
        self.restart_with(|_| {});
    }

    /// Starts a new server on the same directory (after `stop`), configured by `f`.
    pub fn restart_with(&mut self, f: impl FnOnce(&mut ServerConfig)) {
        assert!(self.server.is_none());
        let mut cfg = config(self.socket(), self.data_dir());
        f(&mut cfg);
        self.server = Some(Server::start(cfg).expect("server restarts"));
    }

    pub fn stop(&mut self) {
        self.server
            .take()
            .expect("running")
            .shutdown()
            .expect("clean shutdown");
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("objm.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn mem_dir(&self) -> PathBuf {
        self.dir.path().join("data.mem")
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(&self.socket())
    }
}

/// `ServerConfig::new` with the memory tier in `data` + `.mem` (next to the data dir,
/// inside the test's temp dir) instead of under /dev/shm, so nothing outlives the test.
pub fn config(socket: impl Into<PathBuf>, data: impl Into<PathBuf>) -> ServerConfig {
    let data = data.into();
    let mut cfg = ServerConfig::new(socket, &data);
    cfg.store.mem_dir = Some(data.with_extension("mem"));
    cfg
}

/// The bytes of a bare request: `op` with id `id` in `version`, no key, no metadata.
pub fn bare_frame(version: Version, op: Op, id: u32) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_request(&RequestHeader::new(version, op, id), b"", b"", &mut frame);
    frame
}

/// Sends with `send` until `limit` bytes went out or it has been stuck (WouldBlock) for
/// 2 s; returns the bytes sent. `send` returns what it sent and how the write went.
pub fn send_until_stuck(
    limit: usize,
    mut send: impl FnMut() -> (usize, std::io::Result<()>),
) -> usize {
    let mut sent = 0usize;
    let mut stuck_since: Option<Instant> = None;
    while sent < limit {
        let (n, r) = send();
        sent += n;
        match r {
            Ok(()) => stuck_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let t = *stuck_since.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    sent
}

/// A decoded response with owned parts and the fd, if one arrived.
#[derive(Debug)]
pub struct Reply {
    pub header: ResponseHeader,
    pub message: String,
    pub meta: Metadata,
    pub body: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

pub struct Raw {
    pub sock: UnixStream,
    inbox: Inbox,
    next_id: u32,
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        let sock = UnixStream::connect(path).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            sock,
            inbox: Inbox::default(),
            next_id: 1,
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.sock.write_all(b).expect("send");
    }

    /// Sends one request with no metadata and the header as `op` and `mode` make it;
    /// returns its id.
    pub fn request(&mut self, op: Op, mode: Mode, key: &[u8]) -> u32 {
        self.send(op, mode, key, &Metadata::default(), |_| {})
    }

    /// Sends one request; returns its id.
    pub fn send(
        &mut self,
        op: Op,
        mode: Mode,
        key: &[u8],
        meta: &Metadata,
        f: impl FnOnce(&mut RequestHeader),
    ) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut h = RequestHeader::new(Version::V1, op, id);
        h.mode = mode;
        f(&mut h);
        let mut out = Vec::new();
        encode_request(&h, key, &meta.to_bytes().unwrap(), &mut out);
        self.send_bytes(&out);
        id
    }

    /// Reads one response. Panics on EOF before a whole response.
    pub fn recv(&mut self) -> Reply {
        self.inbox.recv(&self.sock)
    }

    /// Reads one response, or None on a clean EOF.
    pub fn try_recv(&mut self) -> Option<Reply> {
        self.inbox.try_recv(&self.sock)
    }

    /// True if the server closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.sock.read(&mut b), Ok(0) | Err(_))
    }

    pub fn put_copy(&mut self, key: &[u8], body: &[u8]) -> Reply {
        self.put_copy_meta(key, body, &Metadata::default())
    }

    pub fn put_copy_meta(&mut self, key: &[u8], body: &[u8], meta: &Metadata) -> Reply {
        self.send(Op::Put, Mode::Copy, key, meta, |h| {
            h.length = body.len() as u64
        });
        self.send_bytes(body);
        self.recv()
    }

    pub fn get_copy(&mut self, key: &[u8]) -> Reply {
        self.send(Op::Get, Mode::Copy, key, &Metadata::default(), |_| {});
        self.recv()
    }

    pub fn get_fd(&mut self, key: &[u8]) -> Reply {
        self.send(Op::Get, Mode::Fd, key, &Metadata::default(), |_| {});
        self.recv()
    }

    pub fn ping(&mut self) -> Reply {
        self.send(Op::Ping, Mode::None, b"", &Metadata::default(), |_| {});
        self.recv()
    }
}

/// Reads every byte of an fd from offset 0 with pread.
pub fn read_fd(fd: &OwnedFd) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd.try_clone().unwrap());
    let len = f.metadata().unwrap().len() as usize;
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0).unwrap();
    v
}

/// Asserts a server-side error status and that the message is non-empty.
pub fn assert_status(r: &Reply, st: Status) {
    assert_eq!(r.header.status, st, "message: {}", r.message);
    if st != Status::Ok {
        assert!(!r.message.is_empty(), "{st} came without a message");
    }
}
