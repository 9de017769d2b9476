//! A raw protocol connection over either transport (Unix or TCP) that speaks V1 or, after
//! [`Wire::hello`], V2. Tests build exactly the frames they want and read replies in
//! whatever order the server sends them.

use super::{Inbox, Reply};
use objmapper_proto::*;
#[allow(unused_imports)] // not every test file uses it
pub use objmapper_testkit::pattern;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    pub fn try_clone(&self) -> Sock {
        match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone().unwrap()),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone().unwrap()),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Write for Sock {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(b),
            Sock::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Unix(s) => s.as_fd(),
            Sock::Tcp(s) => s.as_fd(),
        }
    }
}

pub struct Wire {
    pub sock: Sock,
    pub version: Version,
    inbox: Inbox,
    next_id: u32,
}

impl Wire {
    pub fn unix(path: &Path) -> Wire {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Wire::new(Sock::Unix(s))
    }

    pub fn tcp(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Wire::new(Sock::Tcp(s))
    }

    fn new(sock: Sock) -> Wire {
        Wire {
            sock,
            version: Version::V1,
            inbox: Inbox::default(),
            next_id: 1,
        }
    }

    /// Opens a V2 session asking for `caps` and `depth`; returns what was granted.
    pub fn hello(&mut self, caps: u32, depth: u16) -> Hello {
        let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
        h.length = 16;
        let mut frame = Vec::new();
        encode_request(&h, b"", b"", &mut frame);
        frame.extend_from_slice(
            &Hello {
                version: 2,
                capabilities: caps,
                depth,
            }
            .encode(),
        );
        self.send_bytes(&frame);
        let r = self.recv();
        assert_eq!(r.header.status, Status::Ok, "HELLO: {}", r.message);
        assert_eq!(r.header.version, Version::V2);
        self.version = Version::V2;
        Hello::decode(&r.body).expect("a HELLO body")
    }

    /// The next request id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Encodes one request (plus `body`) in this session's version; returns id and bytes.
    pub fn frame(
        &mut self,
        op: Op,
        mode: Mode,
        key: &[u8],
        body: &[u8],
        f: impl FnOnce(&mut RequestHeader),
    ) -> (u32, Vec<u8>) {
        let id = self.next_id();
        let mut h = RequestHeader::new(self.version, op, id);
        h.mode = mode;
        if !body.is_empty() {
            h.length = body.len() as u64;
        }
        f(&mut h);
        let mut out = Vec::with_capacity(64 + key.len() + body.len());
        encode_request(&h, key, b"", &mut out);
        out.extend_from_slice(body);
        (id, out)
    }

    /// Sends one request (plus `body`); returns its id.
    pub fn send(
        &mut self,
        op: Op,
        mode: Mode,
        key: &[u8],
        body: &[u8],
        f: impl FnOnce(&mut RequestHeader),
    ) -> u32 {
        let (id, bytes) = self.frame(op, mode, key, body, f);
        self.send_bytes(&bytes);
        id
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.sock.write_all(b).expect("send");
    }

    /// One request, one reply.
    pub fn call(
        &mut self,
        op: Op,
        mode: Mode,
        key: &[u8],
        body: &[u8],
        f: impl FnOnce(&mut RequestHeader),
    ) -> Reply {
        let id = self.send(op, mode, key, body, f);
        let r = self.recv();
        assert_eq!(r.header.request_id, id, "reply to another request");
        r
    }

    pub fn get(&mut self, key: &[u8], mode: Mode, offset: u64, length: u64) -> Reply {
        self.call(Op::Get, mode, key, b"", |h| {
            h.offset = offset;
            h.length = length;
        })
    }

    pub fn put(&mut self, key: &[u8], mode: Mode, body: &[u8]) -> Reply {
        self.put_with(key, mode, body, |_| {})
    }

    pub fn put_with(
        &mut self,
        key: &[u8],
        mode: Mode,
        body: &[u8],
        f: impl FnOnce(&mut RequestHeader),
    ) -> Reply {
        self.call(Op::Put, mode, key, body, |h| {
            h.length = body.len() as u64;
            f(h)
        })
    }

    pub fn head(&mut self, key: &[u8]) -> Reply {
        self.call(Op::Head, Mode::None, key, b"", |_| {})
    }

    /// Fds received but not yet claimed by a reply with FD_ATTACHED.
    pub fn stray_fds(&self) -> usize {
        self.inbox.stray_fds()
    }

    /// Reads one response. Panics on EOF before a whole response.
    pub fn recv(&mut self) -> Reply {
        self.inbox.recv(&self.sock)
    }

    /// Reads one response, or None on a clean EOF.
    pub fn try_recv(&mut self) -> Option<Reply> {
        self.inbox.try_recv(&self.sock)
    }
}

/// Reads `len` bytes of an fd at `offset` with pread.
pub fn pread_fd(fd: &OwnedFd, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd.try_clone().unwrap());
    let mut v = vec![0u8; len as usize];
    f.read_exact_at(&mut v, offset).unwrap();
    v
}
