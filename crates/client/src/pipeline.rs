//! Pipelined requests: several in flight on one connection, replies collected as they come.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};

use objmapper_proto::{Metadata, Mode, Op, RequestHeader, Status, Version};

use crate::client::{check_key, delete_request, expect_plain, get_reply, GetReply};
use crate::conn::Frame;
use crate::options::{DeleteOptions, GetOptions, PutOptions};
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
    depth: usize,
    ordered: bool,
    pending: HashMap<u32, Kind>,
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(client: &'c mut Client) -> Pipeline<'c> {
        let depth = usize::from(client.depth());
        Pipeline {
            client,
            depth,
            ordered: false,
            pending: HashMap::new(),
        }
    }

    /// Sets the depth: on V1, any `n` ≥ 1 (a V1 server answers in order, however many
    /// requests wait); in a V2 session, at most the granted [`Client::depth`] (larger
    /// values are cut to it). 0 counts as 1.
    pub fn with_depth(mut self, n: usize) -> Self {
        let n = n.max(1);
        self.depth = match self.client.version() {
            Version::V1 => n,
            Version::V2 => n.min(usize::from(self.client.depth())),
        };
        self
    }

    /// How many requests may be outstanding at once.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Requests submitted and not yet collected.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// While on, submitted requests carry the ORDERED flag (V2 only: on V1 every reply is
    /// in order anyway and the flag is not sent). Default = off.
    pub fn set_ordered(&mut self, ordered: bool) {
        self.ordered = ordered;
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

    /// Submits a GET. The mode (default [`Client::best_mode`]) is checked locally first:
    /// [`Error::ModeUnsupported`] for fd over TCP or without FD_PASSING.
    pub fn submit_get(&mut self, key: &[u8], opts: &GetOptions) -> Result<u32, Error> {
        let mode = opts.mode.unwrap_or_else(|| self.client.best_mode());
        let h = self.client.get_request(key, mode, opts.range)?;
        self.submit(
            h,
            key,
            b"",
            b"",
            Kind::Get {
                mode,
                range: opts.range,
            },
        )
    }

    /// Submits a HEAD.
    pub fn submit_head(&mut self, key: &[u8]) -> Result<u32, Error> {
        check_key(key)?;
        let h = RequestHeader::new(Version::V1, Op::Head, 0);
        self.submit(h, key, b"", b"", Kind::Head)
    }

    /// Submits a PUT of `bytes` in copy mode.
    pub fn submit_put(
        &mut self,
        key: &[u8],
        bytes: &[u8],
        opts: &PutOptions,
    ) -> Result<u32, Error> {
        let (h, meta) = self.client.put_request(key, bytes, opts, Mode::Copy)?;
        self.submit(h, key, &meta, bytes, Kind::Put)
    }

    /// Submits a DELETE.
    pub fn submit_delete(&mut self, key: &[u8], opts: &DeleteOptions) -> Result<u32, Error> {
        let h = delete_request(key, opts)?;
        self.submit(h, key, b"", b"", Kind::Delete)
    }

    /// Submits a PING.
    pub fn submit_ping(&mut self) -> Result<u32, Error> {
        let h = RequestHeader::new(Version::V1, Op::Ping, 0);
        self.submit(h, b"", b"", b"", Kind::Ping)
    }

    fn submit(
        &mut self,
        h: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
        kind: Kind,
    ) -> Result<u32, Error> {
        if self.client.broken {
            return Err(Error::Closed);
        }
        let room = self.client.conn.wait_in_flight_below(self.depth);
        self.client.check(room)?;
        match self.client.conn.send(h, key, meta, body, self.ordered) {
            Ok(id) => {
                self.pending.insert(id, kind);
                Ok(id)
            }
            Err(e) => {
                // Part of a frame may have gone out: the stream is out of sync whatever
                // happened. Prefer the server's reason if it answered before closing.
                self.client.broken = true;
                Err(match self.client.conn.refusal(e) {
                    Ok(frame) => match crate::client::status_ok(frame) {
                        Err(server) => server,
                        Ok(_) => Error::Closed,
                    },
                    Err(e) => e,
                })
            }
        }
    }

    /// Waits for the next reply, to whichever outstanding request it answers, and returns
    /// that request's id with its outcome. [`Error::InvalidArgument`] if nothing is
    /// outstanding.
    pub fn collect(&mut self) -> Result<Collected, Error> {
        if self.pending.is_empty() {
            return Err(Error::InvalidArgument(
                "no request is outstanding in this pipeline".into(),
            ));
        }
        let frame = match self.client.conn.pop_ready() {
            Some(f) => f,
            None if self.client.broken => return Err(Error::Closed),
            None => {
                let r = self.client.conn.recv_any();
                self.client.check(r)?
            }
        };
        let id = frame.header.request_id;
        let Some(kind) = self.pending.remove(&id) else {
            self.client.broken = true;
            return Err(Error::Protocol(format!(
                "a reply to request {id}, which this pipeline did not submit"
            )));
        };
        let outcome = interpret(kind, frame);
        let outcome = self.client.check(outcome)?;
        if let Err(e) = &outcome {
            let closes = e.breaks_connection()
                || (matches!(kind, Kind::Put) && e.status() == Some(Status::ObjectTooLarge));
            if closes {
                self.client.broken = true;
            }
        }
        Ok((id, outcome))
    }

    /// Collects every outstanding reply, in the order they arrive.
    pub fn collect_all(&mut self) -> Result<Vec<Collected>, Error> {
        let mut all = Vec::with_capacity(self.pending.len());
        while !self.pending.is_empty() {
            all.push(self.collect()?);
        }
        Ok(all)
    }
}

impl Drop for Pipeline<'_> {
    fn drop(&mut self) {
        while !self.pending.is_empty() {
            if self.collect().is_err() {
                self.client.broken = true;
                break;
            }
        }
    }
}

/// The outcome of one request: the outer error is the stream's (a reply that makes no
/// sense), the inner one the server's status.
fn interpret(kind: Kind, f: Frame) -> Result<Result<Reply, Error>, Error> {
    if f.header.status != Status::Ok {
        if matches!(kind, Kind::Delete) && f.header.status == Status::NotFound {
            return Ok(Ok(Reply::Delete(false)));
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
    }))
}

/// The connection's socket, to wait for replies with poll(2) or epoll in an event loop that
/// drives several pipelines (see [`Pipeline::has_buffered`]).
impl AsFd for Pipeline<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.as_fd()
    }
}
