//! The UDP transport: one request per datagram, the reply split over datagrams.
//!
//! One thread owns the socket and serves it from its own epoll instance (so a burst of
//! datagrams never stalls the stream workers, and they never stall it). Each datagram is
//! an 8-byte [`UdpHeader`] (seq 0, total 1) and one V1 request frame. The thread answers
//! GET (copy; auto is served as copy), HEAD and PING through the ops layer
//! ([`crate::ops`]), with UDP's [`Policy`]; anything else gets a precise status. The
//! response frame is cut into datagrams by [`split`] and sent to the request's source
//! address.
//!
//! Memory is bounded by configuration, never by what a peer sends: one receive buffer of
//! [`RECV_BUF`] bytes and one response buffer of at most `udp_max_response` bytes, reused
//! for every datagram.
//!
//! docs/PROTOCOL.md, "UDP transport", is the normative description, including why UDP is
//! off by default (amplification).

use crate::metrics::Shard;
use crate::ops::{self, Policy, Reply, Rest, Transport};
use crate::shared::Shared;
use crate::{ServerConfig, ServerError};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use objmapper_proto::udp::{split, UdpHeader, UDP_HEADER_LEN};
use objmapper_proto::{
    decode_request, Decoded, Op, Status, Version, MAX_MESSAGE_LEN, RESPONSE_HEADER_LEN,
};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Receive buffer: larger than any UDP payload (65527 bytes over IPv6), so a datagram is
/// never truncated.
const RECV_BUF: usize = 64 * 1024;
/// Largest chunk per datagram: the IPv4 UDP payload limit (65507) minus our header.
const MAX_PAYLOAD: usize = 65507 - UDP_HEADER_LEN;
/// Datagrams a message may span (the header's `total` is a u16).
const MAX_DATAGRAMS: usize = u16::MAX as usize;

/// What the UDP thread has done since the server started. See [`crate::Server::udp_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped without a reply: shorter than the 8-byte datagram header, or a
    /// header with `total` 0 or `seq` >= `total`.
    pub dropped: u64,
    /// Replies sent (one per answered request, whatever the number of datagrams).
    pub replies: u64,
    /// Reply datagrams the socket refused (send buffer full, unreachable peer); the
    /// client's retry covers them.
    pub send_failures: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    dropped: AtomicU64,
    replies: AtomicU64,
    send_failures: AtomicU64,
}

/// The running UDP thread, as the [`crate::Server`] holds it.
pub(crate) struct UdpHandle {
    pub(crate) addr: SocketAddr,
    pub(crate) waker: Arc<Waker>,
    counters: Arc<Counters>,
}

impl UdpHandle {
    pub(crate) fn stats(&self) -> UdpStats {
        let c = &self.counters;
        UdpStats {
            received: c.received.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            replies: c.replies.load(Ordering::Relaxed),
            send_failures: c.send_failures.load(Ordering::Relaxed),
        }
    }
}

/// Checks the UDP settings (only when UDP is enabled).
pub(crate) fn check_config(cfg: &ServerConfig) -> Result<(), ServerError> {
    if cfg.udp_listen.is_none() {
        return Ok(());
    }
    let bad = |m: String| Err(ServerError::Config(m));
    if cfg.udp_payload == 0 || cfg.udp_payload > MAX_PAYLOAD {
        return bad(format!(
            "udp_payload of {} bytes is outside 1..={MAX_PAYLOAD}",
            cfg.udp_payload
        ));
    }
    let min = RESPONSE_HEADER_LEN + MAX_MESSAGE_LEN;
    if cfg.udp_max_response < min {
        return bad(format!(
            "udp_max_response of {} bytes is below {min}, the largest error reply",
            cfg.udp_max_response
        ));
    }
    if cfg.udp_max_response.div_ceil(cfg.udp_payload) > MAX_DATAGRAMS {
        return bad(format!(
            "udp_max_response of {} bytes would need more than {MAX_DATAGRAMS} datagrams of \
             {} bytes",
            cfg.udp_max_response, cfg.udp_payload
        ));
    }
    Ok(())
}

/// Binds the UDP socket if `udp_listen` is set.
pub(crate) fn bind(cfg: &ServerConfig) -> Result<Option<UdpSocket>, ServerError> {
    let Some(addr) = cfg.udp_listen else {
        return Ok(None);
    };
    UdpSocket::bind(addr)
        .map(Some)
        .map_err(|source| ServerError::Bind {
            what: format!("udp {addr}"),
            source,
        })
}

/// Starts the thread serving `sock`. It stops when `shared.shutdown` is set and the
/// returned handle's waker is woken.
pub(crate) fn spawn(
    mut sock: UdpSocket,
    shared: Arc<Shared>,
) -> io::Result<(UdpHandle, JoinHandle<()>)> {
    let addr = sock.local_addr()?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    poll.registry()
        .register(&mut sock, SOCKET, Interest::READABLE)?;
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let join = std::thread::Builder::new()
        .name("objm-udp".into())
        .spawn(move || run(poll, sock, shared, c))?;
    Ok((
        UdpHandle {
            addr,
            waker,
            counters,
        },
        join,
    ))
}

fn run(mut poll: Poll, sock: UdpSocket, sh: Arc<Shared>, c: Arc<Counters>) {
    // The shard after the workers' is the UDP thread's.
    let shard = sh.metrics.shard(sh.cfg.workers);
    let mut events = Events::with_capacity(8);
    let mut rbuf = vec![0u8; RECV_BUF].into_boxed_slice();
    let mut frame = Vec::with_capacity(sh.cfg.udp_max_response.min(RECV_BUF));
    let mut timeout = Duration::from_secs(1);
    while !sh.shutdown.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("udp epoll failed: {e}");
                return;
            }
        }
        timeout = Duration::from_secs(1);
        // Edge-triggered: read until the socket is empty. Draining after every wake-up,
        // timeouts included, also covers an edge missed after a read error.
        let mut errors = 0;
        while !sh.shutdown.load(Ordering::Acquire) {
            match sock.recv_from(&mut rbuf) {
                Ok((n, src)) => {
                    c.received.fetch_add(1, Ordering::Relaxed);
                    serve(&sock, &rbuf[..n], src, &sh, &c, &shard, &mut frame);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("udp recv failed: {e}");
                    errors += 1;
                    if errors >= 16 {
                        // Not empty, but failing: come back soon rather than spin.
                        timeout = Duration::from_millis(10);
                        break;
                    }
                }
            }
        }
    }
}

/// Answers one datagram (or drops it) and sends the reply to `src`.
fn serve(
    sock: &UdpSocket,
    datagram: &[u8],
    src: SocketAddr,
    sh: &Shared,
    c: &Counters,
    shard: &Shard,
    frame: &mut Vec<u8>,
) {
    let started = Instant::now();
    let Some((uh, chunk)) = UdpHeader::decode(datagram) else {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(%src, len = datagram.len(), "dropped a datagram without a valid header");
        return;
    };
    let (v, id, mut reply) = respond(&uh, chunk, sh);
    frame.clear();
    let (status, rest) = reply.encode(v, id, frame);
    debug_assert!(
        matches!(rest, Rest::None),
        "UDP replies carry their body inline"
    );
    // Byte 1 of a request frame is its op (0 if the datagram is too short for one).
    shard.record(chunk.get(1).copied().unwrap_or(0), status.as_u8(), started);
    debug_assert!(frame.len() <= sh.cfg.udp_max_response);
    for d in split(uh.request_id, frame, sh.cfg.udp_payload) {
        if let Err(e) = sock.send_to(&d, src) {
            // Dropped like any lost datagram; the client retries.
            c.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%src, "udp send failed: {e}");
        }
    }
    c.replies.fetch_add(1, Ordering::Relaxed);
}

/// What UDP can do, for the ops layer: bytes inline only, in replies of at most
/// `udp_max_response` bytes.
fn policy(sh: &Shared) -> Policy {
    Policy {
        transport: Transport::Udp,
        share_fds: false,
        auto_fd_threshold: u64::MAX,
        max_reply: Some(sh.cfg.udp_max_response),
        // `max_reply` bounds every body: all of it is read into the datagrams' frame.
        inline_max: u64::MAX,
    }
}

/// The reply to one request datagram, and the version and request id to answer with.
fn respond(uh: &UdpHeader, chunk: &[u8], sh: &Shared) -> (Version, u32, Reply) {
    // Until the frame decodes, the datagram header's id is the only one we can trust.
    let did = uh.request_id;
    let fail = |status, msg: String| (Version::V1, did, Reply::error(status, msg));
    if uh.seq != 0 || uh.total != 1 {
        let msg = format!(
            "a request is one datagram (seq 0, total 1); got seq {} of {}",
            uh.seq, uh.total
        );
        return fail(Status::ProtocolError, msg);
    }
    let (req, used) = match decode_request(chunk) {
        Ok(Decoded::Complete(r, used)) => (r, used),
        Ok(Decoded::Incomplete(need)) => {
            let msg = format!(
                "truncated request: the datagram holds {} bytes of frame, it needs {need}",
                chunk.len()
            );
            return fail(Status::ProtocolError, msg);
        }
        Err(e) => return fail(e.status(), e.to_string()),
    };
    let h = req.header;
    let (v, id) = (h.version, h.request_id);
    if !matches!(h.op, Op::Get | Op::Head | Op::Ping) {
        let msg = format!(
            "{} is not served over UDP: UDP serves GET, HEAD and PING; use the Unix socket or \
             TCP",
            h.op
        );
        return (v, id, Reply::error(Status::OpUnsupported, msg));
    }
    if v != Version::V1 {
        let msg = "UDP requests are V1 frames (magic 0xA1): there is no V2 session over UDP";
        return (v, id, Reply::error(Status::ProtocolError, msg));
    }
    if used != chunk.len() {
        let msg = format!(
            "{} stray bytes follow the {} frame in the datagram",
            chunk.len() - used,
            h.op
        );
        return (v, id, Reply::error(Status::ProtocolError, msg));
    }
    if let Err(r) = ops::admit(&req, &sh.limits.get()) {
        return (v, id, r);
    }
    let reply = ops::read(&sh.store, &req, &policy(sh));
    if let Some(remote) = &sh.remote {
        if reply.status == Status::NotFound && h.op != Op::Ping {
            // One thread serves every datagram: it does not wait for the remote tier. The
            // miss is answered now and the fill goes on behind it, so a retry finds the
            // object locally (docs/STORAGE.md, "Read-through").
            remote.read_through(req.key, Box::new(|| {}));
        }
    }
    (v, id, reply)
}
