//! The blocking client: one connection, one request at a time (protocol V1).

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use objmapper_proto::{req_flags, Metadata, Mode, Op, RequestHeader, Status, Version, MAX_KEY_LEN};

use crate::conn::{Conn, Reply, Sock};
use crate::Error;

/// The kind of socket a [`Client`] talks over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A Unix stream socket: fd mode and copy mode.
    Unix,
    /// TCP: copy mode only (descriptors cannot cross hosts).
    Tcp,
}

impl Transport {
    /// Whether this client can use `mode` over this transport.
    ///
    /// Unix sockets support [`Mode::Fd`] and [`Mode::Copy`]; TCP supports [`Mode::Copy`].
    /// [`Mode::Splice`] and [`Mode::Auto`] are not offered: the server answers them with
    /// MODE_UNSUPPORTED until protocol V2, so this returns `false` for them everywhere.
    pub fn supports(self, mode: Mode) -> bool {
        matches!(
            (self, mode),
            (Transport::Unix, Mode::Fd | Mode::Copy) | (Transport::Tcp, Mode::Copy)
        )
    }

    /// "Unix socket" or "TCP", for messages.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "Unix socket",
            Transport::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for PUT and COMMIT.
///
/// By default the server places a new object in its memory tier and writes it to disk in
/// the background (objects over its direct-to-disk threshold go straight to disk).
/// `durable` and `ephemeral` contradict each other; the server refuses both together
/// (and so does this client, before sending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Acknowledge only once the object is fsynced to disk. Default = false.
    pub durable: bool,
    /// Keep the object in the memory tier only: never written to disk, lost on eviction
    /// or reboot (not on a server restart). Default = false.
    pub ephemeral: bool,
    /// Publish the object pinned: it is never evicted (see [`Client::unpin`]).
    /// Default = false.
    pub pinned: bool,
    /// Absolute expiry in Unix seconds; from then on the object answers NOT_FOUND. Must
    /// lie in the future (the server answers BAD_REQUEST otherwise). Default = none
    /// (never expires). See [`PutOptions::with_ttl`].
    pub expires_at: Option<u64>,
    /// Content type, at most 255 bytes. Default = none.
    pub content_type: Option<String>,
    /// Custom name/value pairs (names 1..=255 bytes of UTF-8). Default = none.
    pub custom: Vec<(String, Vec<u8>)>,
}

impl PutOptions {
    /// Sets `expires_at` to now + `ttl`, rounded up to the next whole second (so the
    /// object lives at least `ttl`).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at = now.saturating_add(ttl);
        let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
        self.expires_at = Some(secs);
        self
    }

    /// The request flags these options ask for.
    fn flags(&self) -> Result<u16, Error> {
        if self.durable && self.ephemeral {
            return Err(Error::InvalidArgument(
                "durable and ephemeral contradict each other: an ephemeral object is never \
                 written to disk"
                    .into(),
            ));
        }
        let bit = |on: bool, b: u16| if on { b } else { 0 };
        Ok(bit(self.durable, req_flags::DURABLE)
            | bit(self.ephemeral, req_flags::EPHEMERAL)
            | bit(self.pinned, req_flags::PIN))
    }

    /// Only the flags, no metadata (what `put_fd` sends with its COMMIT).
    fn flags_only(&self) -> PutOptions {
        PutOptions {
            durable: self.durable,
            ephemeral: self.ephemeral,
            pinned: self.pinned,
            ..PutOptions::default()
        }
    }

    /// The encoded metadata section, checked against the protocol's limits.
    fn meta_bytes(&self) -> Result<Vec<u8>, Error> {
        let m = Metadata {
            content_type: self.content_type.clone(),
            custom: self.custom.clone(),
            expires_at: self.expires_at,
            ..Metadata::default()
        };
        m.to_bytes()
            .map_err(|e| Error::InvalidArgument(format!("metadata: {e}")))
    }
}

/// An object received in fd mode: a read-only descriptor and where in it the object lies.
///
/// The descriptor is a snapshot: replacing or deleting the object later does not change
/// what it reads. It is close-on-exec and is closed when this value is dropped.
#[derive(Debug)]
pub struct FdObject {
    /// Read-only descriptor holding the object's bytes.
    pub fd: OwnedFd,
    /// Where in `fd` the object starts.
    pub offset: u64,
    /// How many bytes of `fd`, from `offset`, make up the object.
    pub length: u64,
    /// The object's metadata.
    pub meta: Metadata,
}

impl FdObject {
    /// Reads the whole object into a new buffer with `pread` (the fd's own offset is
    /// not moved).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_into(&mut v)?;
        Ok(v)
    }

    /// Reads the whole object into `buf`, replacing its contents and reusing its
    /// allocation. Fails with `UnexpectedEof` if the fd holds fewer bytes than announced.
    pub fn read_into(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let len = usize::try_from(self.length)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "object too large"))?;
        // Reuse what is there: every byte below `len` is overwritten by pread.
        if buf.len() > len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        let mut done = 0;
        while done < len {
            match rustix::io::pread(&self.fd, &mut buf[done..], self.offset + done as u64) {
                Ok(0) => {
                    buf.truncate(done);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object fd ended after {done} of {len} bytes"),
                    ));
                }
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    buf.truncate(done);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

impl AsFd for FdObject {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A staged fd-mode PUT: write the object into `fd`, then [`Client::commit`] or
/// [`Client::abort`] with `handle` on the same client.
#[derive(Debug)]
pub struct Staging {
    /// Writable staging descriptor (a memfd on the server), close-on-exec.
    pub fd: OwnedFd,
    /// The handle naming this staged PUT on this connection.
    pub handle: u64,
}

/// A blocking connection to an objmapper server, speaking protocol V1: one request at a
/// time, each answered before the next is sent.
///
/// After an error that leaves the stream unusable ([`Error::Protocol`], [`Error::Io`],
/// [`Error::Closed`], or a server status after which the server closes the connection),
/// every later call returns [`Error::Closed`]; connect again.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    broken: bool,
}

impl Client {
    /// Connects to the server's Unix socket at `path`. Both fd and copy mode work.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        let path = path.as_ref();
        let s = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(Client::from_unix_stream(s))
    }

    /// Connects over TCP (with TCP_NODELAY). Only copy mode works; fd-mode calls are
    /// refused locally with [`Error::ModeUnsupported`].
    pub fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|source| Error::ConnectTcp {
                addr: "(unresolved address)".into(),
                source,
            })?
            .collect();
        let shown = addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for a in &addrs {
            match TcpStream::connect(a) {
                Ok(s) => return Client::from_tcp_stream(s),
                Err(e) => last = e,
            }
        }
        Err(Error::ConnectTcp {
            addr: shown,
            source: last,
        })
    }

    /// Wraps an already connected Unix stream (for instance one end of a socketpair).
    pub fn from_unix_stream(stream: UnixStream) -> Client {
        Client {
            conn: Conn::new(Sock::Unix(stream)),
            broken: false,
        }
    }

    /// Wraps an already connected TCP stream, setting TCP_NODELAY.
    pub fn from_tcp_stream(stream: TcpStream) -> Result<Client, Error> {
        stream.set_nodelay(true)?;
        Ok(Client {
            conn: Conn::new(Sock::Tcp(stream)),
            broken: false,
        })
    }

    /// The transport this client talks over.
    pub fn transport(&self) -> Transport {
        self.conn.sock().transport()
    }

    /// Limits how long a call waits for the server to send or answer. Default = none
    /// (wait forever). A call that times out fails with [`Error::Io`] (kind `TimedOut`)
    /// and leaves the connection unusable.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        match self.conn.sock() {
            Sock::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
            }
            Sock::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
            }
        }
        Ok(())
    }

    /// False once an error has made the connection unusable.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Checks the server is alive and answering.
    pub fn ping(&mut self) -> Result<(), Error> {
        let h = RequestHeader::new(Version::V1, Op::Ping, 0);
        let r = self.call(h, b"", b"", b"")?;
        self.check(expect_plain(r).map(drop))
    }

    /// Fetches an object's bytes inline (copy mode) with its metadata.
    pub fn get(&mut self, key: &[u8]) -> Result<(Vec<u8>, Metadata), Error> {
        check_key(key)?;
        let mut h = RequestHeader::new(Version::V1, Op::Get, 0);
        h.mode = Mode::Copy;
        let r = self.call(h, key, b"", b"")?;
        let res = match r {
            Reply {
                fd: None,
                body: Some(body),
                meta,
                ..
            } => Ok((body, meta)),
            _ => Err(Error::Protocol(
                "copy-mode GET answered OK without an inline body".into(),
            )),
        };
        self.check(res)
    }

    /// Fetches an object as a read-only descriptor (fd mode; Unix sockets only).
    pub fn get_fd(&mut self, key: &[u8]) -> Result<FdObject, Error> {
        self.require(Mode::Fd)?;
        check_key(key)?;
        let mut h = RequestHeader::new(Version::V1, Op::Get, 0);
        h.mode = Mode::Fd;
        let r = self.call(h, key, b"", b"")?;
        let res = match r {
            Reply {
                fd: Some(fd),
                body: None,
                header,
                meta,
                ..
            } => Ok(FdObject {
                fd,
                offset: header.offset,
                length: header.length,
                meta,
            }),
            _ => Err(Error::Protocol(
                "fd-mode GET answered OK without an fd".into(),
            )),
        };
        self.check(res)
    }

    /// Fetches an object's metadata only.
    pub fn head(&mut self, key: &[u8]) -> Result<Metadata, Error> {
        check_key(key)?;
        let h = RequestHeader::new(Version::V1, Op::Head, 0);
        let r = self.call(h, key, b"", b"")?;
        self.check(expect_plain(r))
    }

    /// Stores `bytes` under `key` in one round trip (copy mode). Returns the committed
    /// object's metadata.
    pub fn put(&mut self, key: &[u8], bytes: &[u8], opts: &PutOptions) -> Result<Metadata, Error> {
        check_key(key)?;
        let meta = opts.meta_bytes()?;
        let mut h = RequestHeader::new(Version::V1, Op::Put, 0);
        h.mode = Mode::Copy;
        h.flags = opts.flags()?;
        h.length = bytes.len() as u64;
        let res = self.call(h, key, &meta, bytes);
        if res.as_ref().err().and_then(Error::status) == Some(Status::ObjectTooLarge) {
            // After a copy PUT the server closes the connection: it will not read the body.
            self.broken = true;
        }
        let r = res?;
        self.check(expect_plain(r))
    }

    /// Stores an object through a staging descriptor (fd mode): PUT, then `writer` writes
    /// the bytes into the staging file, then COMMIT with `len`. If `writer` fails, the PUT
    /// is aborted and its error returned as [`Error::Writer`]. A `len` different from what
    /// `writer` wrote gets LENGTH_MISMATCH and nothing is published.
    ///
    /// The metadata in `opts` (content type, custom pairs, expiry) travels with the PUT;
    /// the flags (`durable`, `ephemeral`, `pinned`) travel with both frames (the server
    /// or-s them).
    pub fn put_fd<F>(
        &mut self,
        key: &[u8],
        len: u64,
        opts: &PutOptions,
        writer: F,
    ) -> Result<Metadata, Error>
    where
        F: FnOnce(&mut File) -> io::Result<()>,
    {
        let staging = self.begin_put(key, len, opts)?;
        let handle = staging.handle;
        let mut file = File::from(staging.fd);
        let written = writer(&mut file);
        drop(file);
        if let Err(e) = written {
            // Best effort: a broken connection drops the staged PUT anyway.
            let _ = self.abort(handle);
            return Err(Error::Writer(e));
        }
        self.commit(handle, len, &opts.flags_only())
    }

    /// Starts an fd-mode PUT: returns a writable staging descriptor and its handle.
    /// `size_hint` may be 0 (unknown). Finish with [`Client::commit`] or
    /// [`Client::abort`]. A connection may hold at most 16 staged PUTs (BUSY beyond).
    ///
    /// The flags in `opts` are remembered by the server and or-ed with the COMMIT's; its
    /// metadata is used unless the COMMIT carries metadata of its own.
    pub fn begin_put(
        &mut self,
        key: &[u8],
        size_hint: u64,
        opts: &PutOptions,
    ) -> Result<Staging, Error> {
        self.require(Mode::Fd)?;
        check_key(key)?;
        let meta = opts.meta_bytes()?;
        let mut h = RequestHeader::new(Version::V1, Op::Put, 0);
        h.mode = Mode::Fd;
        h.flags = opts.flags()?;
        h.length = size_hint;
        let r = self.call(h, key, &meta, b"")?;
        let res = match r {
            Reply {
                fd: Some(fd),
                body: None,
                header,
                ..
            } if header.handle != 0 => Ok(Staging {
                fd,
                handle: header.handle,
            }),
            _ => Err(Error::Protocol(
                "fd-mode PUT answered OK without a staging fd and handle".into(),
            )),
        };
        self.check(res)
    }

    /// Publishes a staged PUT of exactly `len` bytes. Non-empty metadata in `opts`
    /// (content type, custom pairs, expiry) replaces what the PUT carried as a whole; the
    /// flags are or-ed with the PUT's. The handle is consumed whether or not this succeeds.
    pub fn commit(&mut self, handle: u64, len: u64, opts: &PutOptions) -> Result<Metadata, Error> {
        check_handle(handle)?;
        let meta = opts.meta_bytes()?;
        let mut h = RequestHeader::new(Version::V1, Op::Commit, 0);
        h.flags = opts.flags()?;
        h.handle = handle;
        h.length = len;
        let r = self.call(h, b"", &meta, b"")?;
        self.check(expect_plain(r))
    }

    /// Discards a staged PUT.
    pub fn abort(&mut self, handle: u64) -> Result<(), Error> {
        check_handle(handle)?;
        let mut h = RequestHeader::new(Version::V1, Op::Abort, 0);
        h.handle = handle;
        let r = self.call(h, b"", b"", b"")?;
        self.check(expect_plain(r).map(drop))
    }

    /// Removes the object under `key`. Returns `false` if there was nothing to remove
    /// (the server said NOT_FOUND). With `durable`, returns once the removal is on disk.
    pub fn delete(&mut self, key: &[u8], durable: bool) -> Result<bool, Error> {
        check_key(key)?;
        let mut h = RequestHeader::new(Version::V1, Op::Delete, 0);
        if durable {
            h.flags = req_flags::DURABLE;
        }
        match self.call(h, key, b"", b"") {
            Ok(r) => self.check(expect_plain(r).map(|_| true)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pins the object under `key`: it is never evicted until [`Client::unpin`]. Returns
    /// `false` if there is no live object under `key` (the server said NOT_FOUND).
    pub fn pin(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.keyed_op(Op::Pin, key)
    }

    /// Unpins the object under `key`, so it may be evicted again. Returns `false` if there
    /// is no live object under `key`.
    pub fn unpin(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.keyed_op(Op::Unpin, key)
    }

    /// A key-only op answered OK (true) or NOT_FOUND (false).
    fn keyed_op(&mut self, op: Op, key: &[u8]) -> Result<bool, Error> {
        check_key(key)?;
        let h = RequestHeader::new(Version::V1, op, 0);
        match self.call(h, key, b"", b"") {
            Ok(r) => self.check(expect_plain(r).map(|_| true)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn require(&self, mode: Mode) -> Result<(), Error> {
        let transport = self.transport();
        if transport.supports(mode) {
            Ok(())
        } else {
            Err(Error::ModeUnsupported { mode, transport })
        }
    }

    /// One round trip. Non-OK statuses become [`Error::Server`]; errors that break the
    /// stream mark the client unusable.
    fn call(
        &mut self,
        h: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<Reply, Error> {
        if self.broken {
            return Err(Error::Closed);
        }
        let res = self.conn.call(h, key, meta, body).and_then(|r| {
            if r.header.status == Status::Ok {
                Ok(r)
            } else {
                Err(Error::Server {
                    status: r.header.status,
                    message: r.message,
                })
            }
        });
        self.check(res)
    }

    /// Marks the client broken if `res` is an error after which the stream is unusable.
    fn check<T>(&mut self, res: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &res {
            if e.breaks_connection() {
                self.broken = true;
            }
        }
        res
    }
}

/// An OK reply that must carry neither fd nor body; returns its metadata.
fn expect_plain(r: Reply) -> Result<Metadata, Error> {
    if r.fd.is_some() || r.body.is_some() {
        return Err(Error::Protocol(format!(
            "unexpected {} in a response that carries no content",
            if r.fd.is_some() { "fd" } else { "body" }
        )));
    }
    Ok(r.meta)
}

fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("the key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn check_handle(handle: u64) -> Result<(), Error> {
    if handle == 0 {
        return Err(Error::InvalidArgument(
            "staging handle 0 is never valid".into(),
        ));
    }
    Ok(())
}
