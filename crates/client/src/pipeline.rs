//! Pipelined requests: several in flight on one connection, replies collected as they come.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};

use objmapper_proto::hello::caps;
use objmapper_proto::{Hello, Metadata, Mode, Op, RequestHeader, Status, Version};

use crate::client::{
    abort_request, check_key, commit_request, delete_request, expect_plain, get_reply,
    granted_hello, keyed_request, staged_reply, GetReply, Staging,
};
use crate::conn::Frame;
use crate::options::{DeleteOptions, GetOptions, PutOptions, V2Options};
use crate::{Client, Error};

/// A successful reply collected from a [`Pipeline`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// GET: a descriptor or the bytes.
    Get(GetReply),
    /// HEAD: the object's metadata.
    Head(Metadata),
    /// PUT: the committed object's metadata.
    Put(Metadata),
    /// DELETE: `true` if an object was removed, `false` if there was none (NOT_FOUND).
    Delete(bool),
    /// PING: the server answered.
    Ping,
    /// PUT in fd mode ([`OwnedPipeline::submit_begin_put`]): the writable staging fd and
    /// its handle, to COMMIT or ABORT later.
    Staged(Staging),
    /// COMMIT: the published object's metadata.
    Commit(Metadata),
    /// ABORT: the staged PUT was discarded.
    Abort,
    /// PIN or UNPIN: `true` if the object exists, `false` if there was none (NOT_FOUND).
    Pin(bool),
    /// BAN: the reply's metadata; its VERSION (and MTIME) is the ban's stamp.
    Ban(Metadata),
    /// HELLO ([`OwnedPipeline::submit_hello`]): what the server granted. Collecting it
    /// opens the client's V2 session ([`Client::session`]) and sets the pipeline's depth
    /// to the granted one.
    Hello(Hello),
}

/// One collected reply: the request id [`Pipeline::submit_get`] (etc.) returned, and that
/// request's outcome.
pub type Collected = (u32, Result<Reply, Error>);

/// What a submitted request was, to interpret its reply.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Get {
        mode: Mode,
        range: Option<(u64, u64)>,
    },
    Head,
    Put,
    Delete,
    Ping,
    Stage,
    Commit,
    Abort,
    Pin,
    Ban,
    Hello {
        asked: Hello,
    },
}

/// Several requests in flight on one connection ([`Client::pipeline`]).
///
/// `submit_*` sends a request without waiting and returns its request id;
/// [`Pipeline::collect`] returns the next reply, whichever request it answers, with that
/// id. Reply order:
///
/// - **V2 with OUT_OF_ORDER**: any order. A request submitted while
///   [`Pipeline::set_ordered`] is on carries the ORDERED flag: its reply comes after
///   every earlier request's and before any later one's (the client checks this).
/// - **V2 without OUT_OF_ORDER, and V1**: the order of submission. A V1 server reads
///   requests as they arrive and answers them in order, so pipelining works on V1 too;
///   the depth is then whatever [`Pipeline::with_depth`] says (default 1).
///
/// **Depth.** At most [`Pipeline::depth`] requests are outstanding at the server (the
/// granted depth in a V2 session). A `submit_*` that would exceed it first waits for a
/// reply and keeps it for `collect`; it never fails because the pipeline is full.
/// Sending never deadlocks against unread replies: while the socket will not take a
/// request, the replies that arrive are read and kept.
///
/// **Errors.** The outer `Result` of `submit_*` and `collect` is the connection's: a local
/// refusal ([`Error::InvalidArgument`], [`Error::ModeUnsupported`]; nothing sent, the
/// pipeline stays usable) or a broken stream (every later call fails with
/// [`Error::Closed`], after any replies that had already arrived). The inner `Result` of
/// `collect` is that request's: a server status such as NOT_FOUND or
/// PRECONDITION_FAILED, which leaves the connection usable unless the status closes it.
///
/// fds that arrive are owned at once (`OwnedFd`, close-on-exec), also while they wait to
/// be collected. Dropping a pipeline with requests outstanding waits for their replies
/// and discards them (closing their fds), so the [`Client`] stays in sync.
#[derive(Debug)]
pub struct Pipeline<'c> {
    client: &'c mut Client,
    q: Queue,
}

/// A [`Pipeline`] that owns its [`Client`] instead of borrowing it
/// ([`Client::into_pipeline`]): for callers that keep requests in flight across calls
/// of their own, such as the C API. Everything [`Pipeline`] says holds here too.
///
/// [`OwnedPipeline::client_mut`] gives the client back for plain calls while nothing is
/// outstanding; [`OwnedPipeline::into_client`] waits for every reply (discarding them)
/// and returns it.
#[derive(Debug)]
pub struct OwnedPipeline {
    client: Client,
    q: Queue,
}

/// A pipeline's bookkeeping: its depth, the ORDERED switch, and what each outstanding
/// request was.
#[derive(Debug)]
struct Queue {
    depth: usize,
    ordered: bool,
    pending: HashMap<u32, Kind>,
    /// The id of a HELLO submitted and not yet answered: its answer must come first,
    /// and it does not count against the depth.
    hello: Option<u32>,
}

impl Client {
    /// Turns this client into an [`OwnedPipeline`] (depth [`Client::depth`]).
    pub fn into_pipeline(self) -> OwnedPipeline {
        let q = Queue::new(&self);
        OwnedPipeline { client: self, q }
    }
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(client: &'c mut Client) -> Pipeline<'c> {
        let q = Queue::new(client);
        Pipeline { client, q }
    }

    /// Sets the depth: on V1, any `n` ≥ 1 (a V1 server answers in order, however many
    /// requests wait); in a V2 session, at most the granted [`Client::depth`] (larger
    /// values are cut to it). 0 counts as 1.
    pub fn with_depth(mut self, n: usize) -> Self {
        self.q.set_depth(self.client, n);
        self
    }

    /// Whether a reply, or part of one, has already been read off the socket (while
    /// submitting, or behind another reply). poll(2) on [`AsFd::as_fd`] cannot see those
    /// bytes, so an event loop collects before it polls while this is true.
    pub fn has_buffered(&self) -> bool {
        self.client.conn.has_buffered()
    }

    /// The client this pipeline runs on (for [`Client::transport`], [`Client::supports`]).
    pub fn client(&self) -> &Client {
        self.client
    }

    fn parts(&mut self) -> (&mut Client, &mut Queue) {
        (&mut *self.client, &mut self.q)
    }
}

impl OwnedPipeline {
    /// Sets the depth, as [`Pipeline::with_depth`] does.
    pub fn set_depth(&mut self, n: usize) {
        self.q.set_depth(&self.client, n);
    }

    /// The client this pipeline runs on.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, for plain calls ([`Client::hello`], [`Client::get_fd`], ...), while
    /// no request is outstanding; [`Error::InvalidArgument`] otherwise (a plain call
    /// would wait behind replies this pipeline has yet to collect). After
    /// [`Client::hello`], call [`OwnedPipeline::set_depth`] to use the granted depth.
    pub fn client_mut(&mut self) -> Result<&mut Client, Error> {
        if self.q.pending.is_empty() {
            Ok(&mut self.client)
        } else {
            Err(Error::InvalidArgument(format!(
                "{} pipelined request(s) are still outstanding: collect their replies first",
                self.q.pending.len()
            )))
        }
    }

    /// [`Client::set_timeout`] on the client this pipeline runs on; unlike
    /// [`OwnedPipeline::client_mut`], also while requests are outstanding (they are then
    /// waited for with the new timeout).
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<(), Error> {
        self.client.set_timeout(timeout)
    }

    /// Waits for every outstanding reply, discards them (closing their fds), and returns
    /// the client. If the stream broke meanwhile, the client is returned unusable.
    pub fn into_client(mut self) -> Client {
        self.q.drain(&mut self.client);
        let _ = self.client.conn.set_cork(false);
        self.client
    }

    fn parts(&mut self) -> (&mut Client, &mut Queue) {
        (&mut self.client, &mut self.q)
    }
}

/// The methods [`Pipeline`] and [`OwnedPipeline`] share.
macro_rules! pipeline_methods {
    ($t:ty) => {
        impl $t {
            /// How many requests may be outstanding at once.
            pub fn depth(&self) -> usize {
                self.q.depth
            }

            /// Requests submitted and not yet collected.
            pub fn outstanding(&self) -> usize {
                self.q.pending.len()
            }

            /// While on (default off), submitted requests are gathered (up to 64 KiB of
            /// them) and written together: before the next reply is waited for or read
            /// (`collect`, `try_collect`, a `submit_*` that must wait for room), on
            /// [`Self::flush`], or when switched off. A client that submits a batch and
            /// then collects makes one write for the batch instead of one per request.
            /// Between a submit and that write the server has not seen the request, so
            /// an event loop that polls the socket itself must `flush` before it polls.
            /// Switching off writes what is gathered; dropping the pipeline switches it
            /// off.
            pub fn set_corked(&mut self, on: bool) -> Result<(), Error> {
                let (c, _) = self.parts();
                let r = c.conn.set_cork(on);
                if r.is_err() {
                    c.broken = true;
                }
                r
            }

            /// Writes the requests gathered while corked ([`Self::set_corked`]).
            pub fn flush(&mut self) -> Result<(), Error> {
                let (c, _) = self.parts();
                let r = c.conn.flush();
                if r.is_err() {
                    c.broken = true;
                }
                r
            }

            /// While on, submitted requests carry the ORDERED flag (V2 only: on V1 every
            /// reply is in order anyway and the flag is not sent). Default = off.
            pub fn set_ordered(&mut self, ordered: bool) {
                self.q.ordered = ordered;
            }

            /// Submits a GET. The mode (default [`Client::best_mode`]) is checked locally
            /// first: [`Error::ModeUnsupported`] for fd over TCP or without FD_PASSING.
            pub fn submit_get(&mut self, key: &[u8], opts: &GetOptions) -> Result<u32, Error> {
                let (c, q) = self.parts();
                let mode = opts.mode.unwrap_or_else(|| c.best_mode());
                let h = c.get_request(key, mode, opts.range)?;
                let kind = Kind::Get {
                    mode,
                    range: opts.range,
                };
                q.submit(c, h, key, b"", b"", kind)
            }

            /// Submits a HEAD.
            pub fn submit_head(&mut self, key: &[u8]) -> Result<u32, Error> {
                check_key(key)?;
                let (c, q) = self.parts();
                let h = RequestHeader::new(Version::V1, Op::Head, 0);
                q.submit(c, h, key, b"", b"", Kind::Head)
            }

            /// Submits a PUT of `bytes` in copy mode.
            pub fn submit_put(
                &mut self,
                key: &[u8],
                bytes: &[u8],
                opts: &PutOptions,
            ) -> Result<u32, Error> {
                self.submit_put_inline(key, bytes, opts, Mode::Copy)
            }

            /// Submits a PUT of `bytes` in `mode`, [`Mode::Copy`] or [`Mode::Splice`]
            /// (see [`Client::put_inline`]).
            pub fn submit_put_inline(
                &mut self,
                key: &[u8],
                bytes: &[u8],
                opts: &PutOptions,
                mode: Mode,
            ) -> Result<u32, Error> {
                let (c, q) = self.parts();
                let (h, meta) = c.put_request(key, bytes, opts, mode)?;
                q.submit(c, h, key, &meta, bytes, Kind::Put)
            }

            /// Submits an fd-mode PUT (see [`Client::begin_put`]); its reply is
            /// [`Reply::Staged`]: write the object into the staging fd, then
            /// [`submit_commit`](Self::submit_commit) or [`submit_abort`](Self::submit_abort).
            pub fn submit_begin_put(
                &mut self,
                key: &[u8],
                size_hint: u64,
                opts: &PutOptions,
            ) -> Result<u32, Error> {
                let (c, q) = self.parts();
                let (h, meta) = c.begin_put_request(key, size_hint, opts)?;
                q.submit(c, h, key, &meta, b"", Kind::Stage)
            }

            /// Submits a COMMIT of a staged PUT of exactly `len` bytes (see
            /// [`Client::commit`]); its reply is [`Reply::Commit`].
            pub fn submit_commit(
                &mut self,
                handle: u64,
                len: u64,
                opts: &PutOptions,
            ) -> Result<u32, Error> {
                let (h, meta) = commit_request(handle, len, opts)?;
                let (c, q) = self.parts();
                q.submit(c, h, b"", &meta, b"", Kind::Commit)
            }

            /// Submits an ABORT of a staged PUT; its reply is [`Reply::Abort`].
            pub fn submit_abort(&mut self, handle: u64) -> Result<u32, Error> {
                let h = abort_request(handle)?;
                let (c, q) = self.parts();
                q.submit(c, h, b"", b"", b"", Kind::Abort)
            }

            /// Submits a DELETE.
            pub fn submit_delete(
                &mut self,
                key: &[u8],
                opts: &DeleteOptions,
            ) -> Result<u32, Error> {
                let h = delete_request(key, opts)?;
                let (c, q) = self.parts();
                q.submit(c, h, key, b"", b"", Kind::Delete)
            }

            /// Submits a PIN (`pin`) or UNPIN; its reply is [`Reply::Pin`].
            pub fn submit_pin(&mut self, key: &[u8], pin: bool) -> Result<u32, Error> {
                let op = if pin { Op::Pin } else { Op::Unpin };
                let h = keyed_request(op, key)?;
                let (c, q) = self.parts();
                q.submit(c, h, key, b"", b"", Kind::Pin)
            }

            /// Submits a BAN with the expression `expr` (see [`Client::ban`]); its reply
            /// is [`Reply::Ban`].
            pub fn submit_ban(&mut self, expr: &[u8]) -> Result<u32, Error> {
                let h = keyed_request(Op::Ban, expr)?;
                let (c, q) = self.parts();
                q.submit(c, h, expr, b"", b"", Kind::Ban)
            }

            /// Submits a HELLO asking for `opts` (presenting `token` if not empty; see
            /// [`Client::hello_with_token`]) **without waiting for its answer**: requests
            /// may be submitted right behind it, as V2 frames (docs/PROTOCOL.md, "HELLO").
            /// Until the answer is collected, up to `opts.pipeline_depth` requests may be
            /// outstanding besides the HELLO, and fd mode is allowed on a Unix socket.
            ///
            /// The HELLO's answer is the first reply to arrive; collect it like any other:
            /// [`Reply::Hello`] with the grant, which opens the client's session, or the
            /// server's refusal ([`Error::Server`], e.g. FORBIDDEN), after which the
            /// server has closed the connection. The same rules as for
            /// [`Client::hello`] apply: it must be the connection's first request.
            pub fn submit_hello(&mut self, opts: V2Options, token: &[u8]) -> Result<u32, Error> {
                let (c, q) = self.parts();
                q.submit_hello(c, opts, token)
            }

            /// Submits a PING.
            pub fn submit_ping(&mut self) -> Result<u32, Error> {
                let (c, q) = self.parts();
                let h = RequestHeader::new(Version::V1, Op::Ping, 0);
                q.submit(c, h, b"", b"", b"", Kind::Ping)
            }

            /// Waits for the next reply, to whichever outstanding request it answers, and
            /// returns that request's id with its outcome. [`Error::InvalidArgument`] if
            /// nothing is outstanding.
            pub fn collect(&mut self) -> Result<Collected, Error> {
                let (c, q) = self.parts();
                q.collect(c)
            }

            /// As [`Self::collect`], but never blocks: `Ok(None)` when no whole reply has
            /// arrived yet (what did arrive stays buffered). For event loops: wait for
            /// the socket ([`AsFd::as_fd`]) to be readable, then call this until it
            /// returns `Ok(None)` or nothing is outstanding.
            pub fn try_collect(&mut self) -> Result<Option<Collected>, Error> {
                let (c, q) = self.parts();
                q.try_collect(c)
            }

            /// Waits for the reply to request `id`, keeping replies to other requests that
            /// arrive first for later `collect` calls. [`Error::InvalidArgument`] if `id`
            /// is not outstanding in this pipeline.
            pub fn collect_for(&mut self, id: u32) -> Result<Result<Reply, Error>, Error> {
                let (c, q) = self.parts();
                q.collect_for(c, id)
            }

            /// Collects every outstanding reply, in the order they arrive.
            pub fn collect_all(&mut self) -> Result<Vec<Collected>, Error> {
                let mut all = Vec::with_capacity(self.q.pending.len());
                while !self.q.pending.is_empty() {
                    all.push(self.collect()?);
                }
                Ok(all)
            }
        }
    };
}

pipeline_methods!(Pipeline<'_>);
pipeline_methods!(OwnedPipeline);

impl Queue {
    fn new(client: &Client) -> Queue {
        Queue {
            depth: usize::from(client.depth()),
            ordered: false,
            pending: HashMap::new(),
            hello: None,
        }
    }

    fn set_depth(&mut self, client: &Client, n: usize) {
        let n = n.max(1);
        self.depth = match client.version() {
            Version::V1 => n,
            Version::V2 => n.min(usize::from(client.depth())),
        };
    }

    fn submit(
        &mut self,
        client: &mut Client,
        h: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
        kind: Kind,
    ) -> Result<u32, Error> {
        if client.broken {
            return Err(Error::Closed);
        }
        let hello = usize::from(self.hello.is_some());
        let room = client.conn.wait_in_flight_below(self.depth + hello);
        client.check(room)?;
        match client.conn.send(h, key, meta, body, self.ordered) {
            Ok(id) => {
                self.pending.insert(id, kind);
                Ok(id)
            }
            Err(e) => {
                // Part of a frame may have gone out: the stream is out of sync whatever
                // happened. Prefer the server's reason if it answered before closing.
                client.broken = true;
                Err(match client.conn.refusal(e) {
                    Ok(frame) => match crate::client::status_ok(frame) {
                        Err(server) => server,
                        Ok(_) => Error::Closed,
                    },
                    Err(e) => e,
                })
            }
        }
    }

    fn submit_hello(
        &mut self,
        client: &mut Client,
        opts: V2Options,
        token: &[u8],
    ) -> Result<u32, Error> {
        let (h, body, asked) = client.hello_request(opts, token)?;
        // V2 frames from the HELLO on. Until the grant is known, replies are matched as
        // out-of-order ones if that was asked for: an in-order server passes that check
        // too.
        client
            .conn
            .set_session(Version::V2, asked.capabilities & caps::OUT_OF_ORDER != 0);
        self.depth = usize::from(asked.depth).max(1);
        let id = self.submit(client, h, b"", b"", &body, Kind::Hello { asked })?;
        self.hello = Some(id);
        Ok(id)
    }

    /// The outcome of the HELLO's answer: the grant opens the client's session (and sets
    /// the depth); a refusal leaves the client unusable, as the server closes the
    /// connection after it.
    fn granted(
        &mut self,
        client: &mut Client,
        asked: Hello,
        frame: Frame,
    ) -> Result<Result<Reply, Error>, Error> {
        self.hello = None;
        if frame.header.status != Status::Ok {
            client.broken = true;
            return Ok(Err(Error::Server {
                status: frame.header.status,
                message: frame.message,
            }));
        }
        match granted_hello(&asked, frame) {
            Ok(g) => {
                client.start_session(g);
                self.set_depth(client, usize::from(g.depth));
                Ok(Ok(Reply::Hello(g)))
            }
            Err(e) => {
                client.broken = true;
                Err(e)
            }
        }
    }

    fn collect(&mut self, client: &mut Client) -> Result<Collected, Error> {
        let frame = match self.buffered(client)? {
            Some(f) => f,
            None => {
                let r = client.conn.recv_any();
                client.check(r)?
            }
        };
        self.claim(client, frame)
    }

    fn try_collect(&mut self, client: &mut Client) -> Result<Option<Collected>, Error> {
        let r = match self.buffered(client)? {
            Some(f) => Ok(Some(f)),
            None => client.conn.try_recv_any(),
        };
        match client.check(r)? {
            Some(frame) => Ok(Some(self.claim(client, frame)?)),
            None => Ok(None),
        }
    }

    /// For a collect: a reply the client has already received, or None when one must
    /// be received. Refused when no request of this pipeline is outstanding, and
    /// Closed once the client is broken.
    fn buffered(&self, client: &mut Client) -> Result<Option<Frame>, Error> {
        if self.pending.is_empty() {
            return Err(Error::InvalidArgument(
                "no request is outstanding in this pipeline".into(),
            ));
        }
        match client.conn.pop_ready() {
            Some(f) => Ok(Some(f)),
            None if client.broken => Err(Error::Closed),
            None => Ok(None),
        }
    }

    /// The reply `frame`, received for a collect, matched to the request of this
    /// pipeline it answers; one to a request it did not submit breaks the client.
    fn claim(&mut self, client: &mut Client, frame: Frame) -> Result<Collected, Error> {
        let id = frame.header.request_id;
        if let Some(hello) = self.hello.filter(|&h| h != id) {
            client.broken = true;
            return Err(Error::Protocol(format!(
                "the server answered request {id} before the HELLO (request {hello})"
            )));
        }
        let Some(kind) = self.pending.remove(&id) else {
            client.broken = true;
            return Err(Error::Protocol(format!(
                "a reply to request {id}, which this pipeline did not submit"
            )));
        };
        if let Kind::Hello { asked } = kind {
            return Ok((id, self.granted(client, asked, frame)?));
        }
        Ok((id, finish(client, kind, frame)?))
    }

    fn collect_for(&mut self, client: &mut Client, id: u32) -> Result<Result<Reply, Error>, Error> {
        let Some(&kind) = self.pending.get(&id) else {
            return Err(Error::InvalidArgument(format!(
                "request {id} is not outstanding in this pipeline"
            )));
        };
        let frame = if client.broken {
            // Only a reply that arrived before the stream broke can still be had.
            match client.conn.take_ready(id) {
                Some(f) => f,
                None => return Err(Error::Closed),
            }
        } else {
            let r = client.conn.recv_for(id);
            client.check(r)?
        };
        self.pending.remove(&id);
        if let Kind::Hello { asked } = kind {
            return self.granted(client, asked, frame);
        }
        finish(client, kind, frame)
    }

    /// Waits for (and discards) every outstanding reply.
    fn drain(&mut self, client: &mut Client) {
        while !self.pending.is_empty() {
            if self.collect(client).is_err() {
                client.broken = true;
                self.pending.clear();
                self.hello = None;
                break;
            }
        }
    }
}

/// Interprets one reply, marking the client broken if the reply or its status breaks the
/// stream.
fn finish(client: &mut Client, kind: Kind, frame: Frame) -> Result<Result<Reply, Error>, Error> {
    let outcome = interpret(kind, frame);
    let outcome = client.check(outcome)?;
    if let Err(e) = &outcome {
        let closes = e.breaks_connection()
            || (matches!(kind, Kind::Put) && e.status() == Some(Status::ObjectTooLarge));
        if closes {
            client.broken = true;
        }
    }
    Ok(outcome)
}

impl Drop for Pipeline<'_> {
    fn drop(&mut self) {
        self.q.drain(self.client);
        // Nothing is gathered any more (the drain read every reply); the client's plain
        // calls write at once again.
        let _ = self.client.conn.set_cork(false);
    }
}

/// The outcome of one request: the outer error is the stream's (a reply that makes no
/// sense), the inner one the server's status.
fn interpret(kind: Kind, f: Frame) -> Result<Result<Reply, Error>, Error> {
    if f.header.status != Status::Ok {
        if f.header.status == Status::NotFound {
            match kind {
                Kind::Delete => return Ok(Ok(Reply::Delete(false))),
                Kind::Pin => return Ok(Ok(Reply::Pin(false))),
                _ => {}
            }
        }
        return Ok(Err(Error::Server {
            status: f.header.status,
            message: f.message,
        }));
    }
    Ok(Ok(match kind {
        Kind::Get { mode, range } => Reply::Get(get_reply(mode, range, f)?),
        Kind::Head => Reply::Head(expect_plain(f)?),
        Kind::Put => Reply::Put(expect_plain(f)?),
        Kind::Delete => {
            expect_plain(f)?;
            Reply::Delete(true)
        }
        Kind::Ping => {
            expect_plain(f)?;
            Reply::Ping
        }
        Kind::Stage => Reply::Staged(staged_reply(f)?),
        Kind::Commit => Reply::Commit(expect_plain(f)?),
        Kind::Abort => {
            expect_plain(f)?;
            Reply::Abort
        }
        Kind::Pin => {
            expect_plain(f)?;
            Reply::Pin(true)
        }
        Kind::Ban => Reply::Ban(expect_plain(f)?),
        // Queue::granted reads the HELLO's answer; it never gets here.
        Kind::Hello { .. } => {
            return Err(Error::Protocol(
                "internal: a HELLO answer interpreted as a request's".into(),
            ))
        }
    }))
}

/// The connection's socket, to wait for replies with poll(2) or epoll in an event loop that
/// drives several pipelines (see [`Pipeline::has_buffered`]).
impl AsFd for Pipeline<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.as_fd()
    }
}

/// The connection's socket, as for [`Pipeline`].
impl AsFd for OwnedPipeline {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.as_fd()
    }
}
