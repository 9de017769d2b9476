//! The blocking client: one connection, protocol V1 (one request at a time) or V2 (after
//! a HELLO; see [`Client::connect_v2`] and [`Client::pipeline`]).

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use objmapper_proto::hello::{caps, HELLO_LEN};
use objmapper_proto::{Hello, Metadata, Mode, Op, RequestHeader, Status, Version, MAX_KEY_LEN};

use crate::conn::{Conn, Frame, Sock};
use crate::options::{DeleteOptions, GetOptions, PutOptions, V2Options};
use crate::pipeline::Pipeline;
use crate::{Error, DEFAULT_TIMEOUT};

/// The kind of socket a client talks over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A Unix stream socket: every mode; the only transport that can pass fds.
    Unix,
    /// TCP: copy, splice and auto (which is always inline here).
    Tcp,
    /// UDP (`UdpClient`): GET, HEAD and PING of small objects; copy and auto (inline).
    Udp,
}

impl Transport {
    /// Whether `mode` can work over this transport at all:
    ///
    /// | mode | Unix | TCP | UDP |
    /// | --- | --- | --- | --- |
    /// | fd | yes | no | no |
    /// | copy | yes | yes | yes |
    /// | splice | yes | yes | no |
    /// | auto | yes (fd or inline, the server picks) | yes (= copy) | yes (= copy) |
    ///
    /// [`Mode::None`] moves no bytes and is never a transfer mode. A Unix-socket client in
    /// a V2 session without FD_PASSING cannot use fd mode either; ask
    /// [`Client::supports`], which knows the session.
    pub fn supports(self, mode: Mode) -> bool {
        match (self, mode) {
            (_, Mode::None) => false,
            (Transport::Unix, _) => true,
            (Transport::Tcp, m) => m != Mode::Fd,
            (Transport::Udp, m) => matches!(m, Mode::Copy | Mode::Auto),
        }
    }

    /// "Unix socket", "TCP" or "UDP", for messages.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "Unix socket",
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An object received in fd mode: a read-only descriptor and where in it the requested
/// bytes lie (the whole object, or the range asked for).
///
/// The descriptor is a snapshot: replacing or deleting the object later does not change
/// what it reads. It is close-on-exec and is closed when this value is dropped.
///
/// Its file description is private (its own offset and status flags), unless the
/// connection promised positional reads ([`V2Options::positional_reads`](crate::V2Options::positional_reads),
/// granted: [`Client::capabilities`] has [`caps::POSITIONAL_READS`](crate::caps::POSITIONAL_READS)):
/// then it may be shared with other processes that made the same promise, and only
/// positional use (`pread`, [`read_all`](Self::read_all), `sendfile` with an offset,
/// `mmap`) is allowed.
#[derive(Debug)]
pub struct FdObject {
    /// Read-only descriptor holding the object's bytes.
    pub fd: OwnedFd,
    /// Where in `fd` the requested bytes start.
    pub offset: u64,
    /// How many bytes of `fd`, from `offset`, were asked for (the object, or the range).
    pub length: u64,
    /// The object's metadata.
    pub meta: Metadata,
}

impl FdObject {
    /// Reads the requested bytes (`length` from `offset`) into a new buffer with `pread`
    /// (the fd's own offset is not moved).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_into(&mut v)?;
        Ok(v)
    }

    /// Reads the requested bytes into `buf`, replacing its contents and reusing its
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

/// The answer to a GET: a descriptor (fd mode, or auto when the server chose fd) or the
/// bytes inline (copy, splice, or auto when the server chose inline).
///
/// With a range, an fd still covers the whole object and [`FdObject::offset`] /
/// [`FdObject::length`] say which bytes to read; inline bytes are exactly the range.
#[derive(Debug)]
pub enum GetReply {
    /// A read-only descriptor and where in it the requested bytes are.
    Fd(FdObject),
    /// The requested bytes and the object's metadata.
    Bytes(Vec<u8>, Metadata),
}

impl GetReply {
    /// The object's metadata (SIZE is the whole object's size, even for a range).
    pub fn meta(&self) -> &Metadata {
        match self {
            GetReply::Fd(o) => &o.meta,
            GetReply::Bytes(_, m) => m,
        }
    }

    /// How many bytes were delivered (or are to be read from the fd).
    pub fn len(&self) -> u64 {
        match self {
            GetReply::Fd(o) => o.length,
            GetReply::Bytes(b, _) => b.len() as u64,
        }
    }

    /// Whether no bytes were delivered (an empty object or range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes came as a descriptor.
    pub fn is_fd(&self) -> bool {
        matches!(self, GetReply::Fd(_))
    }

    /// The bytes, reading them from the fd if one came (which is then closed).
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            GetReply::Fd(o) => o.read_all(),
            GetReply::Bytes(b, _) => Ok(b),
        }
    }
}

/// A blocking connection to an objmapper server.
///
/// It speaks protocol V1 (no handshake; one request at a time, each answered before the
/// next is sent) unless opened with [`Client::connect_v2`] / [`Client::connect_tcp_v2`]
/// (or upgraded with [`Client::hello`] before its first request): then every frame is V2
/// and, if the server granted PIPELINE, [`Client::pipeline`] keeps several requests in
/// flight. The plain methods (`get`, `put`, ...) work the same in both.
///
/// After an error that leaves the stream unusable ([`Error::Protocol`], [`Error::Io`],
/// [`Error::Closed`], or a server status after which the server closes the connection),
/// every later call returns [`Error::Closed`]; connect again.
#[derive(Debug)]
pub struct Client {
    pub(crate) conn: Conn,
    pub(crate) broken: bool,
    /// What the server granted in HELLO; `None` for a V1 session.
    session: Option<Hello>,
}

/// The connection's socket, for poll(2)/epoll in an event loop. Reading from or writing to it
/// directly would corrupt the session; use it only to wait.
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.sock().as_fd()
    }
}

impl Client {
    /// Connects to the server's Unix socket at `path` (protocol V1). Every mode works.
    /// Waits at most [`DEFAULT_TIMEOUT`] for the connection and then for each answer;
    /// see [`Client::connect_timeout`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_timeout(path, Some(DEFAULT_TIMEOUT))
    }

    /// Connects to the server's Unix socket at `path` (protocol V1), waiting at most
    /// `timeout` for the server to take the connection (a server that stopped accepting
    /// has a full listen backlog), then sets it as the connection's
    /// [`Client::set_timeout`]. `None` waits forever. A connection waiting in the backlog
    /// of a socket whose server never starts (socket activation) is accepted by the
    /// kernel at once: the first call then times out waiting for the answer.
    pub fn connect_timeout(
        path: impl AsRef<Path>,
        timeout: Option<Duration>,
    ) -> Result<Client, Error> {
        let path = path.as_ref();
        let s = unix_connect(path, timeout)?;
        let mut c = Client::from_unix_stream(s);
        c.set_timeout(timeout)?;
        Ok(c)
    }

    /// Connects to the Unix socket at `path` and opens a V2 session with `opts` (one
    /// extra round trip). See [`Client::hello`]; the timeout is [`DEFAULT_TIMEOUT`]
    /// (connect with [`Client::connect_timeout`] and call `hello` for another).
    pub fn connect_v2(path: impl AsRef<Path>, opts: V2Options) -> Result<Client, Error> {
        let mut c = Client::connect(path)?;
        c.hello(opts)?;
        Ok(c)
    }

    /// Connects over TCP (with TCP_NODELAY), protocol V1. fd mode is refused locally
    /// with [`Error::ModeUnsupported`]; copy, splice and auto (always inline) work.
    /// Waits at most [`DEFAULT_TIMEOUT`] to connect and then for each answer; see
    /// [`Client::connect_tcp_timeout`].
    pub fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        Client::connect_tcp_timeout(addr, Some(DEFAULT_TIMEOUT))
    }

    /// [`Client::connect_tcp`], waiting at most `timeout` to connect (to each address
    /// the name resolves to) and for each answer; `None` waits forever.
    pub fn connect_tcp_timeout(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
    ) -> Result<Client, Error> {
        let mut c = Client::from_tcp_stream(tcp_connect(addr, timeout)?)?;
        c.set_timeout(timeout)?;
        Ok(c)
    }

    /// Connects over TCP and runs a TLS 1.3 handshake (feature `tls`), protocol V1. For
    /// a listener that requires a token, use [`Client::connect_tls_v2`] with
    /// [`Client::hello_with_token`] instead, or [`Client::connect_tls`] then
    /// `hello_with_token`.
    #[cfg(feature = "tls")]
    /// Waits at most [`DEFAULT_TIMEOUT`] to connect and then for each answer.
    pub fn connect_tls(addr: impl ToSocketAddrs, tls: &crate::TlsOptions) -> Result<Client, Error> {
        let s = tcp_connect(addr, Some(DEFAULT_TIMEOUT))?;
        s.set_nodelay(true)?;
        let mut c = Client {
            conn: Conn::new(Sock::Tls(Box::new(tls.handshake(s)?))),
            broken: false,
            session: None,
        };
        c.set_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(c)
    }

    /// Connects over TLS (feature `tls`) and opens a V2 session with `opts`, presenting
    /// `token` in HELLO if given (see [`Client::hello_with_token`]).
    #[cfg(feature = "tls")]
    pub fn connect_tls_v2(
        addr: impl ToSocketAddrs,
        tls: &crate::TlsOptions,
        opts: V2Options,
        token: Option<&[u8]>,
    ) -> Result<Client, Error> {
        let mut c = Client::connect_tls(addr, tls)?;
        c.hello_with_token(opts, token.unwrap_or_default())?;
        Ok(c)
    }

    /// Connects over TCP and opens a V2 session with `opts` (FD_PASSING is never asked
    /// for over TCP). See [`Client::hello`].
    pub fn connect_tcp_v2(addr: impl ToSocketAddrs, opts: V2Options) -> Result<Client, Error> {
        let mut c = Client::connect_tcp(addr)?;
        c.hello(opts)?;
        Ok(c)
    }

    /// Wraps an already connected Unix stream (for instance one end of a socketpair). No
    /// timeout is set: call [`Client::set_timeout`] for one.
    pub fn from_unix_stream(stream: UnixStream) -> Client {
        Client {
            conn: Conn::new(Sock::Unix(stream)),
            broken: false,
            session: None,
        }
    }

    /// Wraps an already connected TCP stream, setting TCP_NODELAY.
    pub fn from_tcp_stream(stream: TcpStream) -> Result<Client, Error> {
        stream.set_nodelay(true)?;
        Ok(Client {
            conn: Conn::new(Sock::Tcp(stream)),
            broken: false,
            session: None,
        })
    }

    /// Opens a V2 session: sends HELLO asking for `opts` and records what the server
    /// granted (version 2, the intersection of the capabilities, the smaller depth).
    /// Every later frame on this connection is V2. Must be the connection's first
    /// request ([`Error::InvalidArgument`] otherwise). Any failure leaves the connection
    /// unusable: a server that does not speak V2 answers VERSION_UNSUPPORTED or
    /// PROTOCOL_ERROR and closes it.
    pub fn hello(&mut self, opts: V2Options) -> Result<Hello, Error> {
        self.hello_with_token(opts, &[])
    }

    /// [`Client::hello`], presenting `token` to a TCP listener that requires one (the
    /// server's `--tcp-token-file`; at most
    /// [`HELLO_TOKEN_MAX`](objmapper_proto::hello::HELLO_TOKEN_MAX) bytes). An empty token
    /// sends none. A missing or wrong token gets FORBIDDEN and the connection is closed.
    pub fn hello_with_token(&mut self, opts: V2Options, token: &[u8]) -> Result<Hello, Error> {
        let (h, body, asked) = self.hello_request(opts, token)?;
        self.conn.set_session(Version::V2, false);
        let res = self
            .call(h, b"", b"", &body)
            .and_then(|f| granted_hello(&asked, f));
        match res {
            Ok(granted) => {
                self.start_session(granted);
                Ok(granted)
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// The HELLO frame asking for `opts` (header, body with `token`) and what it asks
    /// for, after checking that a HELLO may be sent now. Sends nothing.
    pub(crate) fn hello_request(
        &self,
        opts: V2Options,
        token: &[u8],
    ) -> Result<(RequestHeader, Vec<u8>, Hello), Error> {
        if token.len() > objmapper_proto::hello::HELLO_TOKEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "the token is {} bytes; HELLO carries at most {}",
                token.len(),
                objmapper_proto::hello::HELLO_TOKEN_MAX
            )));
        }
        if self.broken {
            return Err(Error::Closed);
        }
        if self.session.is_some() || self.conn.used() {
            return Err(Error::InvalidArgument(
                "HELLO must be the first request on a connection".into(),
            ));
        }
        if opts.pipeline_depth == 0 {
            return Err(Error::InvalidArgument(
                "pipeline_depth must be at least 1".into(),
            ));
        }
        let asked = Hello {
            version: 2,
            capabilities: opts.capabilities(self.transport() == Transport::Unix),
            depth: opts.pipeline_depth,
        };
        let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
        h.length = (HELLO_LEN + token.len()) as u64;
        let mut body = asked.encode().to_vec();
        body.extend_from_slice(token);
        Ok((h, body, asked))
    }

    /// Records a granted HELLO: the session, and the reply order it allows.
    pub(crate) fn start_session(&mut self, granted: Hello) {
        self.conn
            .set_session(Version::V2, granted.capabilities & caps::OUT_OF_ORDER != 0);
        self.session = Some(granted);
    }

    /// The transport this client talks over.
    pub fn transport(&self) -> Transport {
        self.conn.sock().transport()
    }

    /// The protocol generation of this connection: V1, or V2 after a granted HELLO.
    pub fn version(&self) -> Version {
        self.conn.version()
    }

    /// The granted HELLO of a V2 session; `None` on V1.
    pub fn session(&self) -> Option<Hello> {
        self.session
    }

    /// The capability bits the server granted ([`caps`](crate::caps)); 0 on V1.
    pub fn capabilities(&self) -> u32 {
        self.session.map_or(0, |h| h.capabilities)
    }

    /// The pipeline depth the server granted; 1 on V1 and on a V2 session without
    /// PIPELINE (see [`Pipeline::with_depth`] for V1).
    pub fn depth(&self) -> u16 {
        match self.session {
            Some(h) if h.capabilities & caps::PIPELINE != 0 => h.depth.max(1),
            _ => 1,
        }
    }

    /// Whether `mode` can work on this connection: the transport allows it and, for fd
    /// mode in a V2 session, FD_PASSING was granted.
    pub fn supports(&self, mode: Mode) -> bool {
        if !self.transport().supports(mode) {
            return false;
        }
        let fd_refused = matches!(self.session, Some(h) if h.capabilities & caps::FD_PASSING == 0);
        !(mode == Mode::Fd && fd_refused)
    }

    /// The mode GET uses when none is given: [`Mode::Fd`] wherever fds can travel (a Unix
    /// socket, with FD_PASSING in a V2 session): no object byte crosses the socket, at
    /// any size. [`Mode::Copy`] everywhere else: every server offers it, and over TCP the
    /// inline bytes are what the caller needs anyway (ask for [`Mode::Splice`] explicitly
    /// to have a V2 server move large objects inside its kernel).
    pub fn best_mode(&self) -> Mode {
        if self.supports(Mode::Fd) {
            Mode::Fd
        } else {
            Mode::Copy
        }
    }

    /// Limits how long a call waits for the server to take a request or send (each part
    /// of) an answer; `None` waits forever. Default = [`DEFAULT_TIMEOUT`] for a client
    /// from `connect*`, none for one from `from_*_stream`. A call that times out fails
    /// with [`Error::Io`] of kind `TimedOut` ("the server did not answer within 30 s";
    /// [`Error::is_timeout`]) and leaves the connection unusable.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.conn.set_timeout(timeout)?;
        Ok(())
    }

    /// False once an error has made the connection unusable.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Starts a batch of pipelined requests on this connection; see [`Pipeline`]. Its
    /// depth is [`Client::depth`]; on V1 raise it with [`Pipeline::with_depth`].
    pub fn pipeline(&mut self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// Checks the server is alive and answering.
    pub fn ping(&mut self) -> Result<(), Error> {
        let h = RequestHeader::new(Version::V1, Op::Ping, 0);
        let r = self.call(h, b"", b"", b"")?;
        self.check(expect_plain(r).map(drop))
    }

    /// Fetches an object with the mode and range in `opts`. Refused locally, before
    /// anything is sent, with [`Error::ModeUnsupported`] if the mode cannot work on this
    /// connection (fd over TCP, or in a V2 session without FD_PASSING).
    pub fn get_with(&mut self, key: &[u8], opts: &GetOptions) -> Result<GetReply, Error> {
        let mode = opts.mode.unwrap_or_else(|| self.best_mode());
        let h = self.get_request(key, mode, opts.range)?;
        let r = self.call(h, key, b"", b"")?;
        self.check(get_reply(mode, opts.range, r))
    }

    /// Fetches an object's bytes inline (copy mode) with its metadata.
    pub fn get(&mut self, key: &[u8]) -> Result<(Vec<u8>, Metadata), Error> {
        match self.get_with(key, &GetOptions::default().mode(Mode::Copy))? {
            GetReply::Bytes(b, m) => Ok((b, m)),
            GetReply::Fd(_) => unreachable!("a copy-mode GET never yields an fd"),
        }
    }

    /// Fetches `length` bytes of an object from `offset` (`length` 0 = to the end), inline
    /// (copy mode). The metadata is the whole object's. RANGE_NOT_SATISFIABLE if `offset`
    /// lies past the end.
    pub fn get_range(
        &mut self,
        key: &[u8],
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, Metadata), Error> {
        let opts = GetOptions::default().mode(Mode::Copy).range(offset, length);
        match self.get_with(key, &opts)? {
            GetReply::Bytes(b, m) => Ok((b, m)),
            GetReply::Fd(_) => unreachable!("a copy-mode GET never yields an fd"),
        }
    }

    /// Fetches an object as a read-only descriptor (fd mode; Unix sockets only).
    pub fn get_fd(&mut self, key: &[u8]) -> Result<FdObject, Error> {
        match self.get_with(key, &GetOptions::default().mode(Mode::Fd))? {
            GetReply::Fd(o) => Ok(o),
            GetReply::Bytes(..) => unreachable!("an fd-mode GET never yields bytes"),
        }
    }

    /// Fetches an object's metadata only.
    pub fn head(&mut self, key: &[u8]) -> Result<Metadata, Error> {
        check_key(key)?;
        let h = RequestHeader::new(Version::V1, Op::Head, 0);
        let r = self.call(h, key, b"", b"")?;
        self.check(expect_plain(r))
    }

    /// Stores `bytes` under `key` in one round trip (copy mode). Returns the committed
    /// object's metadata. With `if_version` / `if_absent`, a failed condition is
    /// PRECONDITION_FAILED ([`Error::is_precondition_failed`]).
    pub fn put(&mut self, key: &[u8], bytes: &[u8], opts: &PutOptions) -> Result<Metadata, Error> {
        self.put_inline(key, bytes, opts, Mode::Copy)
    }

    /// Like [`Client::put`], naming the inline mode: [`Mode::Copy`] or [`Mode::Splice`]
    /// (the bytes travel the same way; splice asks a V2 server to move them to storage
    /// inside its kernel). Other modes are [`Error::InvalidArgument`]: fd-mode PUTs go
    /// through [`Client::put_fd`] or [`Client::begin_put`].
    pub fn put_inline(
        &mut self,
        key: &[u8],
        bytes: &[u8],
        opts: &PutOptions,
        mode: Mode,
    ) -> Result<Metadata, Error> {
        let (h, meta) = self.put_request(key, bytes, opts, mode)?;
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
    /// the flags (`durable`, `ephemeral`, `pinned`) and conditions (`if_version`,
    /// `if_absent`) travel with both frames (the server or-s the flags; a condition is
    /// checked when the object is published).
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
    /// [`Client::abort`]. A connection may hold at most 16 staged PUTs by default (TOO_MANY_REQUESTS beyond).
    ///
    /// The flags in `opts` are remembered by the server and or-ed with the COMMIT's; its
    /// metadata is used unless the COMMIT carries metadata of its own. A condition
    /// (`if_version`, `if_absent`) is remembered too and checked at COMMIT, unless the
    /// COMMIT carries one of its own.
    pub fn begin_put(
        &mut self,
        key: &[u8],
        size_hint: u64,
        opts: &PutOptions,
    ) -> Result<Staging, Error> {
        let (h, meta) = self.begin_put_request(key, size_hint, opts)?;
        let r = self.call(h, key, &meta, b"")?;
        self.check(staged_reply(r))
    }

    /// An fd-mode PUT header and its metadata section, after the local checks.
    pub(crate) fn begin_put_request(
        &self,
        key: &[u8],
        size_hint: u64,
        opts: &PutOptions,
    ) -> Result<(RequestHeader, Vec<u8>), Error> {
        self.require(Mode::Fd)?;
        check_key(key)?;
        let meta = opts.meta_bytes()?;
        let (flags, offset) = opts.header_bits()?;
        let mut h = RequestHeader::new(Version::V1, Op::Put, 0);
        h.mode = Mode::Fd;
        h.flags = flags;
        h.offset = offset;
        h.length = size_hint;
        Ok((h, meta))
    }

    /// Publishes a staged PUT of exactly `len` bytes. Non-empty metadata in `opts`
    /// (content type, custom pairs, expiry) replaces what the PUT carried as a whole; the
    /// flags are or-ed with the PUT's; `if_version` / `if_absent` are checked now
    /// (PRECONDITION_FAILED: nothing published). The handle is consumed whether or not
    /// this succeeds.
    pub fn commit(&mut self, handle: u64, len: u64, opts: &PutOptions) -> Result<Metadata, Error> {
        let (h, meta) = commit_request(handle, len, opts)?;
        let r = self.call(h, b"", &meta, b"")?;
        self.check(expect_plain(r))
    }

    /// Discards a staged PUT.
    pub fn abort(&mut self, handle: u64) -> Result<(), Error> {
        let h = abort_request(handle)?;
        let r = self.call(h, b"", b"", b"")?;
        self.check(expect_plain(r).map(drop))
    }

    /// Removes the object under `key`. Returns `false` if there was nothing to remove
    /// (the server said NOT_FOUND). With `durable`, returns once the removal is on disk.
    pub fn delete(&mut self, key: &[u8], durable: bool) -> Result<bool, Error> {
        self.delete_with(
            key,
            &DeleteOptions {
                durable,
                ..DeleteOptions::default()
            },
        )
    }

    /// Removes the object under `key` only if its current VERSION is `version`
    /// (compare-and-swap). `Ok(false)`: nothing under `key`; a different version is
    /// PRECONDITION_FAILED ([`Error::is_precondition_failed`]).
    pub fn delete_if_version(&mut self, key: &[u8], version: u64) -> Result<bool, Error> {
        self.delete_with(
            key,
            &DeleteOptions {
                if_version: Some(version),
                ..DeleteOptions::default()
            },
        )
    }

    /// Removes the object under `key` with `opts`. Returns `false` if there was nothing to
    /// remove (NOT_FOUND).
    pub fn delete_with(&mut self, key: &[u8], opts: &DeleteOptions) -> Result<bool, Error> {
        let h = delete_request(key, opts)?;
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

    /// Adds a ban (op BAN): from now on the server treats every object committed before
    /// it that `expr` matches as absent, e.g. `key ^ "varnish:example.com/"` or
    /// `meta.tags has "product-42" && key ^ "varnish:"` (the grammar is in
    /// docs/STORAGE.md, "Bans"). Returns the ban's stamp. A bad expression is
    /// BAD_REQUEST with a message naming the problem and its byte offset; a peer without
    /// the write permission gets FORBIDDEN; a full ban list BUSY.
    pub fn ban(&mut self, expr: &[u8]) -> Result<u64, Error> {
        if expr.is_empty() || expr.len() > MAX_KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "a ban expression is 1..={MAX_KEY_LEN} bytes, not {}",
                expr.len()
            )));
        }
        let h = RequestHeader::new(Version::V1, Op::Ban, 0);
        let r = self.call(h, expr, b"", b"")?;
        let meta = self.check(expect_plain(r))?;
        Ok(meta.version.unwrap_or(0))
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

    /// Refuses, locally, a mode this connection cannot use.
    pub(crate) fn require(&self, mode: Mode) -> Result<(), Error> {
        if mode == Mode::None {
            return Err(Error::InvalidArgument(
                "a transfer mode is needed (fd, copy, splice or auto)".into(),
            ));
        }
        if self.supports(mode) {
            Ok(())
        } else {
            Err(Error::ModeUnsupported {
                mode,
                transport: self.transport(),
            })
        }
    }

    /// A GET header, after the local checks.
    pub(crate) fn get_request(
        &self,
        key: &[u8],
        mode: Mode,
        range: Option<(u64, u64)>,
    ) -> Result<RequestHeader, Error> {
        self.require(mode)?;
        check_key(key)?;
        let mut h = RequestHeader::new(Version::V1, Op::Get, 0);
        h.mode = mode;
        if let Some((offset, length)) = range {
            if offset.checked_add(length).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "range of {length} bytes from {offset} overflows"
                )));
            }
            h.offset = offset;
            h.length = length;
        }
        Ok(h)
    }

    /// An inline PUT header and its metadata section, after the local checks.
    pub(crate) fn put_request(
        &self,
        key: &[u8],
        bytes: &[u8],
        opts: &PutOptions,
        mode: Mode,
    ) -> Result<(RequestHeader, Vec<u8>), Error> {
        if !matches!(mode, Mode::Copy | Mode::Splice) {
            return Err(Error::InvalidArgument(format!(
                "an inline PUT uses copy or splice mode, not {mode}{}",
                if mode == Mode::Fd {
                    " (use put_fd or begin_put)"
                } else {
                    ""
                }
            )));
        }
        self.require(mode)?;
        check_key(key)?;
        let meta = opts.meta_bytes()?;
        let (flags, offset) = opts.header_bits()?;
        let mut h = RequestHeader::new(Version::V1, Op::Put, 0);
        h.mode = mode;
        h.flags = flags;
        h.offset = offset;
        h.length = bytes.len() as u64;
        Ok((h, meta))
    }

    /// One round trip. Non-OK statuses become [`Error::Server`]; errors that break the
    /// stream mark the client unusable.
    fn call(
        &mut self,
        h: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<Frame, Error> {
        if self.broken {
            return Err(Error::Closed);
        }
        let res = self.conn.call(h, key, meta, body).and_then(status_ok);
        self.check(res)
    }

    /// Marks the client broken if `res` is an error after which the stream is unusable.
    pub(crate) fn check<T>(&mut self, res: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &res {
            if e.breaks_connection() {
                self.broken = true;
            }
        }
        res
    }
}

/// The frame if its status is OK, else the server's error.
pub(crate) fn status_ok(f: Frame) -> Result<Frame, Error> {
    if f.header.status == Status::Ok {
        Ok(f)
    } else {
        Err(Error::Server {
            status: f.header.status,
            message: f.message,
        })
    }
}

/// Connects to the first of `addr`'s addresses that answers.
/// A connected Unix stream to the server's socket at `path`, waiting at most `timeout`
/// for the server to take the connection (the socket's send timeout bounds connect(2) on
/// a full backlog; `None` waits forever). It has no read or write timeout. For programs
/// that hand the socket on (the C API's `objm_client_connect`); [`Client::connect_timeout`]
/// is this plus [`Client::from_unix_stream`] and [`Client::set_timeout`].
pub fn unix_connect(path: &Path, timeout: Option<Duration>) -> Result<UnixStream, Error> {
    use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let err = |source: io::Error| Error::Connect {
        path: path.to_owned(),
        source,
    };
    let addr = SocketAddrUnix::new(path).map_err(|e| err(e.into()))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| err(e.into()))?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, timeout).map_err(|e| err(e.into()))?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server did not accept the connection within {} (timed out; its \
                         listen backlog is full: is it stuck?)",
                        timeout.map_or_else(String::new, crate::conn::show_duration)
                    ),
                )))
            }
            Err(e) => return Err(err(e.into())),
        }
    }
    // Back to no send timeout: set_timeout decides the connection's.
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, None).map_err(|e| err(e.into()))?;
    Ok(UnixStream::from(fd))
}

fn tcp_connect(addr: impl ToSocketAddrs, timeout: Option<Duration>) -> Result<TcpStream, Error> {
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
        let r = match timeout {
            Some(t) => TcpStream::connect_timeout(a, t).map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{a} did not accept the connection within {} (timed out)",
                            crate::conn::show_duration(t)
                        ),
                    )
                } else {
                    e
                }
            }),
            None => TcpStream::connect(a),
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(Error::ConnectTcp {
        addr: shown,
        source: last,
    })
}

/// Checks the HELLO reply and returns the grant.
pub(crate) fn granted_hello(asked: &Hello, f: Frame) -> Result<Hello, Error> {
    let body = match f {
        Frame {
            fd: None,
            body: Some(body),
            ..
        } if body.len() == HELLO_LEN => body,
        _ => {
            return Err(Error::Protocol(
                "HELLO answered OK without a 16-byte body".into(),
            ))
        }
    };
    let g = Hello::decode(&body).map_err(|e| Error::Protocol(format!("granted HELLO: {e}")))?;
    if g.version != 2 {
        return Err(Error::Protocol(format!(
            "the server granted protocol version {}; this client speaks 2",
            g.version
        )));
    }
    if g.capabilities & !asked.capabilities != 0 {
        return Err(Error::Protocol(format!(
            "the server granted capabilities 0x{:x} that were not asked for (0x{:x})",
            g.capabilities, asked.capabilities
        )));
    }
    if g.depth == 0 || g.depth > asked.depth {
        return Err(Error::Protocol(format!(
            "the server granted depth {} (asked for {})",
            g.depth, asked.depth
        )));
    }
    Ok(g)
}

/// Turns an OK GET frame into a [`GetReply`], checking it is the kind of answer `asked`
/// allows (fd for fd mode; inline bytes for copy and splice; either for auto).
pub(crate) fn get_reply(
    asked: Mode,
    range: Option<(u64, u64)>,
    f: Frame,
) -> Result<GetReply, Error> {
    let h = f.header;
    let want = range.map_or(0, |r| r.1);
    if want != 0 && h.length > want {
        return Err(Error::Protocol(format!(
            "asked for a range of {want} bytes; the response announces {}",
            h.length
        )));
    }
    let fd_ok = matches!(asked, Mode::Fd | Mode::Auto);
    let inline_ok = matches!(asked, Mode::Copy | Mode::Splice | Mode::Auto);
    match (f.fd, f.body) {
        (Some(fd), None) if fd_ok => {
            if h.offset.checked_add(h.length).is_none() {
                return Err(Error::Protocol(format!(
                    "fd response range {}+{} overflows",
                    h.offset, h.length
                )));
            }
            Ok(GetReply::Fd(FdObject {
                fd,
                offset: h.offset,
                length: h.length,
                meta: f.meta,
            }))
        }
        (None, Some(body)) if inline_ok => Ok(GetReply::Bytes(body, f.meta)),
        (fd, body) => Err(Error::Protocol(format!(
            "{asked}-mode GET answered OK with {}",
            match (fd.is_some(), body.is_some()) {
                (true, true) => "both an fd and an inline body",
                (true, false) => "an fd",
                (false, true) => "an inline body",
                (false, false) => "neither an fd nor an inline body",
            }
        ))),
    }
}

/// The staging fd and handle of an OK fd-mode PUT reply.
pub(crate) fn staged_reply(r: Frame) -> Result<Staging, Error> {
    match r {
        Frame {
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
    }
}

/// A COMMIT header and its metadata section, after the local checks.
pub(crate) fn commit_request(
    handle: u64,
    len: u64,
    opts: &PutOptions,
) -> Result<(RequestHeader, Vec<u8>), Error> {
    check_handle(handle)?;
    let meta = opts.meta_bytes()?;
    let (flags, offset) = opts.header_bits()?;
    let mut h = RequestHeader::new(Version::V1, Op::Commit, 0);
    h.flags = flags;
    h.offset = offset;
    h.handle = handle;
    h.length = len;
    Ok((h, meta))
}

/// An ABORT header, after the local checks.
pub(crate) fn abort_request(handle: u64) -> Result<RequestHeader, Error> {
    check_handle(handle)?;
    let mut h = RequestHeader::new(Version::V1, Op::Abort, 0);
    h.handle = handle;
    Ok(h)
}

/// A key-only request header (PIN, UNPIN), after the local checks.
pub(crate) fn keyed_request(op: Op, key: &[u8]) -> Result<RequestHeader, Error> {
    check_key(key)?;
    Ok(RequestHeader::new(Version::V1, op, 0))
}

/// A DELETE header, after the local checks.
pub(crate) fn delete_request(key: &[u8], opts: &DeleteOptions) -> Result<RequestHeader, Error> {
    check_key(key)?;
    let (flags, offset) = opts.header_bits();
    let mut h = RequestHeader::new(Version::V1, Op::Delete, 0);
    h.flags = flags;
    h.offset = offset;
    Ok(h)
}

/// An OK reply that must carry neither fd nor body; returns its metadata.
pub(crate) fn expect_plain(r: Frame) -> Result<Metadata, Error> {
    if r.fd.is_some() || r.body.is_some() {
        return Err(Error::Protocol(format!(
            "unexpected {} in a response that carries no content",
            if r.fd.is_some() { "fd" } else { "body" }
        )));
    }
    Ok(r.meta)
}

pub(crate) fn check_key(key: &[u8]) -> Result<(), Error> {
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
