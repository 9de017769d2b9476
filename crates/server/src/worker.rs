//! The threads: one acceptor, a small fixed set of event-loop workers, and a small
//! blocking pool.
//!
//! The acceptor owns the listening sockets and hands each new connection to a worker,
//! round-robin, through a channel plus a mio Waker. Each worker owns its connections
//! outright (no locks on the request path) and drives them from its own epoll instance.
//!
//! Slow store mutations (DURABLE commits and deletes, with their fsyncs, and large commits
//! with their copy) run on the [`BlockingPool`], so they never stall an event loop. A job's
//! reply comes back to its worker as a [`Done`] through the worker's channel plus the same
//! Waker.

use crate::access::{self, Perms};
use crate::conn::Grantee;
use crate::conn::{Accepted, Conn, Stream};
use crate::limits::{Budget, LiveLimits, REFUSING_MAX};
use crate::sys::PipePool;
use crate::ServerConfig;
use mio::{Events, Interest, Poll, Token, Waker};
use objmapper_proto::Status;
use objmapper_store::Store;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// Size of each worker's read buffer: one whole maximal frame header+key+meta fits.
const READ_BUF: usize = 128 * 1024;

/// State every worker reads.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) cfg: ServerConfig,
    /// The allowlist in force (`cfg.access` is the one the server started with).
    pub(crate) access: access::LiveAccess,
    /// The runtime-changeable limits in force (`cfg` has the ones it started with).
    pub(crate) limits: LiveLimits,
    pub(crate) shutdown: AtomicBool,
    pub(crate) connections: AtomicUsize,
    /// Connections refused because the peer has no permission (allowlist), since start.
    pub(crate) denied: Arc<AtomicU64>,
    /// Connections refused because `max_connections` was reached, since start.
    pub(crate) over_limit: AtomicU64,
    /// TCP connections closed because their TLS handshake failed or timed out.
    pub(crate) tls_failures: AtomicU64,
    /// fd-mode PUTs staged on all connections (`max_staged_puts_total`).
    pub(crate) staged_puts: Budget,
    /// Bytes of copy/splice PUT bodies being received, reserved in 1 MiB steps as they
    /// arrive (`max_staged_bytes_total`).
    pub(crate) staged_bytes: Budget,
    /// Runs store mutations off the event loops.
    pub(crate) pool: BlockingPool,
    /// Kernel-side I/O state shared by the workers (splice mode).
    pub(crate) kio: KernelIo,
    /// Request counters (one shard per worker, one for UDP) and connection counts.
    pub(crate) metrics: crate::metrics::Metrics,
    /// How the TCP listener authenticates: its TLS configuration and token. Replaced
    /// whole by [`crate::Server::reload_tcp_security`]; each connection keeps what it
    /// was accepted with.
    pub(crate) tcp_security: parking_lot::RwLock<crate::tls::TcpSecurity>,
    /// What `POST /v1/reload` runs ([`crate::Server::set_reload_handler`]); none = the
    /// embedding program has no configuration to re-read.
    pub(crate) reload: parking_lot::RwLock<Option<crate::ReloadHandler>>,
    /// Whether the acceptor is paused for want of descriptors, and how often it was.
    pub(crate) accept: AcceptHealth,
}

/// What splice mode needs to know and counts, server-wide.
pub(crate) struct KernelIo {
    /// SIGPIPE is ignored, so sendfile(2) (which has no MSG_NOSIGNAL) is safe to use on
    /// sockets. Otherwise splice-mode GET bodies are sent with send(MSG_NOSIGNAL) instead.
    pub(crate) sendfile_ok: bool,
    /// Pipes the workers' pools have created since start (a debug counter for tests).
    pub(crate) pipes_created: AtomicUsize,
}

impl KernelIo {
    pub(crate) fn new() -> KernelIo {
        let sendfile_ok = crate::sys::sigpipe_ignored();
        if !sendfile_ok {
            tracing::warn!(
                "SIGPIPE is not ignored in this process: splice-mode GET bodies go through \
                 user space (send with MSG_NOSIGNAL) instead of sendfile"
            );
        }
        KernelIo {
            sendfile_ok,
            pipes_created: AtomicUsize::new(0),
        }
    }
}

impl Shared {
    /// A rejected request's body is skipped (read and dropped) up to this size; beyond it
    /// the connection is closed instead.
    pub(crate) fn discard_limit(&self) -> u64 {
        self.cfg.store.max_object_size.min(64 << 20)
    }
}

pub(crate) struct WorkerHandle {
    pub(crate) tx: Sender<Accepted>,
    pub(crate) waker: Arc<Waker>,
}

/// A finished blocking job: the reply for request `seq` of connection `token`.
pub(crate) struct Done {
    pub(crate) token: usize,
    pub(crate) seq: u64,
    pub(crate) reply: Vec<u8>,
}

/// What a worker lends its connections besides the shared state: the pipe pool, and the
/// return address for blocking jobs.
pub(crate) struct WorkerIo {
    pub(crate) pipes: PipePool,
    pub(crate) done_tx: Sender<Done>,
    pub(crate) waker: Arc<Waker>,
}

pub(crate) fn spawn_worker(
    idx: usize,
    shared: Arc<Shared>,
) -> std::io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let io = WorkerIo {
        pipes: PipePool::new(),
        done_tx,
        waker: waker.clone(),
    };
    let join = std::thread::Builder::new()
        .name(format!("objm-worker-{idx}"))
        .spawn(move || run_worker(idx, poll, rx, done_rx, io, shared))?;
    Ok((WorkerHandle { tx, waker }, join))
}

fn run_worker(
    idx: usize,
    mut poll: Poll,
    rx: Receiver<Accepted>,
    done_rx: Receiver<Done>,
    mut io: WorkerIo,
    sh: Arc<Shared>,
) {
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_token = 0usize;
    let mut rbuf = vec![0u8; READ_BUF].into_boxed_slice();
    let mut draining_since: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    let shard = sh.metrics.shard(idx);
    loop {
        let timeout = if draining_since.is_some() {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("epoll failed: {e}");
                break;
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(done) = done_rx.try_recv() {
                    let key = done.token;
                    let keep = match conns.get_mut(&key) {
                        // The connection may have closed while its job ran: drop the reply.
                        Some(c) => {
                            c.complete(done.seq, done.reply);
                            c.on_ready(&sh, &mut rbuf, &mut io, false)
                                && !(draining_since.is_some() && c.is_idle())
                                && update_interest(&poll, key, c)
                        }
                        None => continue,
                    };
                    if !keep {
                        conns.remove(&key);
                        sh.connections.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                while let Ok(accepted) = rx.try_recv() {
                    let token = next_token;
                    next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                    let mut conn = Conn::new(accepted, token, shard.clone());
                    if let Err(e) =
                        poll.registry()
                            .register(conn.source(), Token(token), Interest::READABLE)
                    {
                        tracing::warn!("registering a connection failed: {e}");
                        sh.connections.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    conns.insert(token, conn);
                }
                continue;
            }
            let key = ev.token().0;
            let keep = match conns.get_mut(&key) {
                Some(c) => {
                    c.on_ready(
                        &sh,
                        &mut rbuf,
                        &mut io,
                        ev.is_read_closed() || ev.is_error(),
                    ) && !(draining_since.is_some() && c.is_idle())
                        && update_interest(&poll, key, c)
                }
                None => continue,
            };
            if !keep {
                conns.remove(&key);
                sh.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        if draining_since.is_none() && sh.shutdown.load(Ordering::Acquire) {
            draining_since = Some(now);
            let before = conns.len();
            conns.retain(|_, c| !c.is_idle());
            sh.connections
                .fetch_sub(before - conns.len(), Ordering::Relaxed);
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            let mut dead = Vec::new();
            for (k, c) in conns.iter_mut() {
                match c.check_timeouts(now, &sh) {
                    crate::conn::Timeout::None => {}
                    crate::conn::Timeout::Close => dead.push(*k),
                    crate::conn::Timeout::Answered => {
                        if !c.on_ready(&sh, &mut rbuf, &mut io, true)
                            || !update_interest(&poll, *k, c)
                        {
                            dead.push(*k);
                        }
                    }
                }
            }
            for k in dead {
                conns.remove(&k);
                sh.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(t) = draining_since {
            if conns.is_empty() || now.duration_since(t) >= sh.cfg.shutdown_grace {
                if !conns.is_empty() {
                    tracing::warn!(
                        "shutdown grace period over: closing {} busy connection(s)",
                        conns.len()
                    );
                }
                sh.connections.fetch_sub(conns.len(), Ordering::Relaxed);
                conns.clear();
                break;
            }
        }
    }
}

/// Registers for WRITABLE only while output is backed up. Returns false if epoll refused.
fn update_interest(poll: &Poll, token: usize, c: &mut Conn) -> bool {
    let want = c.wants_writable();
    if want == c.registered_writable {
        return true;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match poll
        .registry()
        .reregister(c.source(), Token(token), interest)
    {
        Ok(()) => {
            c.registered_writable = want;
            true
        }
        Err(e) => {
            tracing::warn!("updating epoll interest failed: {e}");
            false
        }
    }
}

pub(crate) enum Listener {
    Unix(mio::net::UnixListener),
    Tcp(mio::net::TcpListener),
}

/// How long accepting pauses after accept(2) fails for want of a resource (descriptors,
/// memory) the first time; each failure in a row doubles it, up to [`ACCEPT_RETRY_MAX`].
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(5);
/// The longest pause: once descriptors free up, a waiting client is accepted within it.
const ACCEPT_RETRY_MAX: Duration = Duration::from_millis(100);
/// At most one log line about failing accepts per this long.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// What the object listeners' acceptor reports about itself: `/metrics` and `/readyz`.
#[derive(Default)]
pub(crate) struct AcceptHealth {
    /// Times accept(2) ran out of file descriptors (EMFILE, ENFILE) and accepting paused,
    /// since start (`objmapper_accept_fd_exhausted_total`).
    pub(crate) fd_exhausted: AtomicU64,
    /// Set while accepting is paused because accept(2) fails for want of a resource.
    paused: Mutex<Option<AcceptPause>>,
}

/// Why accepting is paused, and since when.
#[derive(Clone, Debug)]
pub(crate) struct AcceptPause {
    pub(crate) since: Instant,
    /// EMFILE or ENFILE (out of descriptors), rather than out of memory or another error.
    pub(crate) out_of_fds: bool,
    /// What happened and what to do about it, as logged.
    pub(crate) reason: String,
}

impl AcceptHealth {
    /// Why accepting is paused now, if it is.
    pub(crate) fn paused(&self) -> Option<AcceptPause> {
        self.paused.lock().clone()
    }
}

/// The acceptor's state while accept(2) fails for want of a resource.
///
/// Why a timer and not nginx's reserve descriptor (close a spare fd on EMFILE, accept the
/// waiting connection and close it at once): that answers every client that queues while
/// the server is at its limit with a dropped connection, an error for a shortage that is
/// usually over in moments. Here a waiting client stays in the listen backlog (queued by
/// the kernel, costing the server no descriptor) and is accepted, in order, as soon as
/// a retry finds a descriptor free. Edge-triggered epoll will not report the listener
/// again until yet another client connects, so the acceptor does not wait for an event:
/// it retries on a timer, 5 ms doubling to 100 ms, which keeps a server at its limit idle
/// (one failing accept(2) per 100 ms) and a waiting client's extra wait after descriptors
/// free up under 100 ms. A client that cannot wait has its own connect or request timeout;
/// the backlog's length (net.core.somaxconn for the Unix socket) bounds how many wait.
#[derive(Default)]
struct Starved {
    /// When to call accept(2) again; `None` while accepting works.
    retry_at: Option<Instant>,
    delay: Duration,
    /// Failed accept(2) calls since the last log line.
    unlogged: u64,
    last_log: Option<Instant>,
    /// A line was logged about the current pause (so its end is logged too).
    logged: bool,
}

impl Starved {
    /// How long the acceptor may sleep: until the retry is due, at most `max`.
    fn wait(&self, now: Instant, max: Duration) -> Duration {
        self.retry_at
            .map_or(max, |t| t.saturating_duration_since(now).min(max))
    }

    /// Whether accepting is paused until a retry is due.
    fn pausing(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    /// accept(2) failed with `e`: pause (longer each time in a row), count, tell.
    fn failed(&mut self, e: &std::io::Error, sh: &Shared, now: Instant) {
        let out_of_fds = out_of_fds(e);
        let first = self.retry_at.is_none();
        self.delay = if first {
            ACCEPT_RETRY_FIRST
        } else {
            (self.delay * 2).min(ACCEPT_RETRY_MAX)
        };
        self.retry_at = Some(now + self.delay);
        self.unlogged += 1;
        let reason = accept_failure_text(e, sh);
        if first {
            self.logged = false;
            if out_of_fds {
                sh.accept.fd_exhausted.fetch_add(1, Ordering::Relaxed);
            }
            *sh.accept.paused.lock() = Some(AcceptPause {
                since: now,
                out_of_fds,
                reason: reason.clone(),
            });
        }
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY)
        {
            let failed = std::mem::take(&mut self.unlogged);
            tracing::warn!(
                "{reason} ({failed} failed accept(2) call(s) since the last such line; \
                 retrying every {} ms at most)",
                ACCEPT_RETRY_MAX.as_millis()
            );
            self.last_log = Some(now);
            self.logged = true;
        }
    }

    /// accept(2) worked again: resume normal service.
    fn recovered(&mut self, sh: &Shared, now: Instant) {
        if self.retry_at.take().is_none() {
            return;
        }
        let pause = sh.accept.paused.lock().take();
        if self.logged {
            let secs = pause.map_or(0.0, |p| now.duration_since(p.since).as_secs_f64());
            tracing::info!("accepting connections again after {secs:.1} s");
        }
        self.unlogged = 0;
    }
}

/// An accept(2) error that concerns one connection, not the listener: a signal, a client
/// that gave up while queued, or (TCP) a network error already pending on the new socket,
/// which accept(2) reports and Linux's man page says to treat like EAGAIN. The next
/// connection may be fine.
fn per_connection(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    if matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
    ) {
        return true;
    }
    let pending = [
        Errno::PROTO,
        Errno::NETDOWN,
        Errno::NOPROTOOPT,
        Errno::HOSTDOWN,
        Errno::NONET,
        Errno::HOSTUNREACH,
        Errno::OPNOTSUPP,
        Errno::NETUNREACH,
        Errno::PERM,
    ];
    e.raw_os_error()
        .is_some_and(|raw| pending.iter().any(|p| p.raw_os_error() == raw))
}

/// EMFILE (this process's RLIMIT_NOFILE) or ENFILE (the system's fs.file-max).
fn out_of_fds(e: &std::io::Error) -> bool {
    let raw = e.raw_os_error();
    raw == Some(rustix::io::Errno::MFILE.raw_os_error())
        || raw == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// What an operator reads about a failing accept(2): what ran out, what the server holds,
/// that waiting clients are kept, and what to change.
fn accept_failure_text(e: &std::io::Error, sh: &Shared) -> String {
    let conns = sh.connections.load(Ordering::Relaxed);
    let staged = sh.staged_puts.used();
    let held = format!(
        "{conns} connection(s) open (max_connections {}), {staged} fd-mode PUT(s) staged \
         (max_staged_puts_total {})",
        sh.cfg.max_connections, sh.cfg.max_staged_puts_total
    );
    let waiting = "clients that connect meanwhile wait in the listen backlog and are \
                   accepted as descriptors free up";
    let raw = e.raw_os_error();
    if raw == Some(rustix::io::Errno::MFILE.raw_os_error()) {
        let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let limit = lim
            .current
            .map_or("unlimited".to_string(), |n| n.to_string());
        format!(
            "cannot accept connections: out of file descriptors (EMFILE): all {limit} that \
             RLIMIT_NOFILE allows are open; {held}; {waiting}. Raise the limit (LimitNOFILE= \
             in the systemd unit, ulimit -n) or lower max_connections / max_staged_puts_total"
        )
    } else if raw == Some(rustix::io::Errno::NFILE.raw_os_error()) {
        format!(
            "cannot accept connections: the system is out of file descriptors (ENFILE: \
             fs.file-max reached by all processes together); {held}; {waiting}. Find what \
             holds them, or raise fs.file-max (sysctl)"
        )
    } else {
        format!("cannot accept connections: accept(2) failed ({e}); {held}; {waiting}")
    }
}

/// Accepts connections until shutdown and deals them out to the workers.
pub(crate) fn run_acceptor(
    mut poll: Poll,
    mut listeners: Vec<Listener>,
    workers: Vec<WorkerHandle>,
    sh: Arc<Shared>,
) {
    for (i, l) in listeners.iter_mut().enumerate() {
        let r = match l {
            Listener::Unix(l) => poll.registry().register(l, Token(i), Interest::READABLE),
            Listener::Tcp(l) => poll.registry().register(l, Token(i), Interest::READABLE),
        };
        if let Err(e) = r {
            tracing::error!("registering listener failed: {e}");
            return;
        }
    }
    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    // Listeners that may have connections waiting: set by a readiness event, cleared only
    // when accept(2) says the queue is empty. Edge-triggered epoll reports a listener once
    // per new connection, so one left early (accept failed) must be retried without one.
    let mut waiting = vec![false; listeners.len()];
    let mut starved = Starved::default();
    while !sh.shutdown.load(Ordering::Acquire) {
        let timeout = starved.wait(Instant::now(), Duration::from_secs(1));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("acceptor epoll failed: {e}");
                return;
            }
        }
        for ev in events.iter() {
            // The waker's token is past the listeners.
            if let Some(w) = waiting.get_mut(ev.token().0) {
                *w = true;
            }
        }
        if starved.pausing(Instant::now()) {
            continue; // new arrivals wait with the others until the retry is due
        }
        for (i, l) in listeners.iter().enumerate() {
            if !waiting[i] {
                continue;
            }
            match accept_all(l, &workers, &mut next, &sh, &mut starved) {
                Ok(()) => waiting[i] = false,
                Err(e) => {
                    // The descriptors are the whole process's: pause every listener.
                    starved.failed(&e, &sh, Instant::now());
                    break;
                }
            }
        }
    }
}

/// Accepts from `l` until its queue is empty (Ok) or accept(2) fails for a reason other
/// than one aborted connection (Err: the queue may still hold clients).
fn accept_all(
    l: &Listener,
    workers: &[WorkerHandle],
    next: &mut usize,
    sh: &Shared,
    starved: &mut Starved,
) -> std::io::Result<()> {
    loop {
        let accepted = match l {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if per_connection(&e) => continue,
            Err(e) => return Err(e),
        };
        starved.recovered(sh, Instant::now());
        let n = sh.connections.fetch_add(1, Ordering::Relaxed);
        let Some(accepted) = admit(stream, n, sh).and_then(|a| secure(a, sh)) else {
            sh.connections.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        sh.metrics.accepted.fetch_add(1, Ordering::Relaxed);
        let w = &workers[*next % workers.len()];
        *next = next.wrapping_add(1);
        if w.tx.send(accepted).is_ok() {
            let _ = w.waker.wake();
        } else {
            sh.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Decides what a new connection may do: its permissions (peer credentials against the
/// allowlist, or the TCP grant) and whether it is refused (no permission: FORBIDDEN; over
/// `max_connections`: BUSY). `open` is the number of connections open before this one.
/// None: close it at once, without a reply (far over the limit).
fn admit(stream: Stream, open: usize, sh: &Shared) -> Option<Accepted> {
    let max = sh.cfg.max_connections;
    if open >= max.saturating_add(REFUSING_MAX) {
        sh.over_limit.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("connection limit of {max} reached: closing a new connection unanswered");
        return None;
    }
    let mut peer = None;
    // Read before the permissions it stands for (see `LiveAccess::generation`).
    let access_gen = sh.access.generation();
    let (perms, who) = match &stream {
        Stream::Unix(s) => match access::peer_of(s) {
            Ok(p) => {
                peer = Some(p);
                (
                    sh.access.perms_of(p.uid, p.gid),
                    format!("pid {} uid {} gid {}", p.pid, p.uid, p.gid),
                )
            }
            Err(e) => {
                tracing::warn!("reading a peer's credentials (SO_PEERCRED) failed: {e}");
                (Perms::NONE, "a peer with unknown credentials".to_string())
            }
        },
        Stream::Tcp(s) => (
            sh.access.tcp(),
            s.peer_addr()
                .map_or("a TCP peer".to_string(), |a| format!("TCP peer {a}")),
        ),
        Stream::Tls(_) => unreachable!("TLS wraps a connection after it is admitted"),
    };
    let refuse = if perms.is_empty() {
        sh.denied.fetch_add(1, Ordering::Relaxed);
        match (&stream, peer) {
            (Stream::Unix(_), Some(p)) => tracing::warn!(
                pid = p.pid,
                uid = p.uid,
                gid = p.gid,
                "refused a connection from {who}: not on the allowlist"
            ),
            (Stream::Unix(_), None) => tracing::warn!("refused a connection from {who}"),
            (Stream::Tcp(_) | Stream::Tls(_), _) => {
                tracing::warn!("refused a connection from {who}: TCP peers have no permission")
            }
        }
        Some((
            Status::Forbidden,
            format!("{who} has no permission on this server (see its allowlist); closing"),
        ))
    } else if open >= max {
        sh.over_limit.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("connection limit of {max} reached: refusing {who} with BUSY");
        Some((
            Status::Busy,
            format!("the server's connection limit ({max}) is reached; retry later"),
        ))
    } else {
        None
    };
    let grantee = match (&stream, peer) {
        (Stream::Unix(_), Some(p)) => Grantee::Unix(p),
        (Stream::Unix(_), None) => Grantee::Unknown,
        (Stream::Tcp(_) | Stream::Tls(_), _) => Grantee::Tcp,
    };
    Some(Accepted {
        stream,
        perms,
        grantee,
        access_gen,
        refuse,
        token: None,
    })
}

/// Wraps an admitted TCP connection in TLS and asks it for the token, as configured.
/// None: TLS could not start (closed without a reply).
fn secure(mut a: Accepted, sh: &Shared) -> Option<Accepted> {
    if !matches!(a.stream, Stream::Tcp(_)) {
        return Some(a);
    }
    let security = sh.tcp_security.read().clone();
    a.token = security.token;
    if let Some(config) = &security.tls {
        let Stream::Tcp(sock) = a.stream else {
            unreachable!("checked above")
        };
        match crate::tls::TlsStream::new(sock, config.clone()) {
            Ok(s) => a.stream = Stream::Tls(Box::new(s)),
            Err(e) => {
                tracing::warn!("starting a TLS session failed: {e}");
                return None;
            }
        }
    }
    Some(a)
}

type Job = Box<dyn FnOnce() + Send>;

/// A small fixed pool of threads for work that may block: slow store commits and deletes
/// (an fsync for DURABLE, a large copy). Jobs start in submission order, several at once.
///
/// With 0 threads, [`BlockingPool::submit`] runs the job at once on the caller's thread.
pub(crate) struct BlockingPool {
    inner: Arc<PoolInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct PoolInner {
    queue: Mutex<PoolQueue>,
    ready: Condvar,
}

struct PoolQueue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl BlockingPool {
    /// Starts `threads` threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<BlockingPool> {
        let inner = Arc::new(PoolInner {
            queue: Mutex::new(PoolQueue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let pool = BlockingPool {
            inner,
            threads: Mutex::new(Vec::new()),
        };
        for i in 0..threads {
            let inner = pool.inner.clone();
            let j = std::thread::Builder::new()
                .name(format!("objm-blocking-{i}"))
                .spawn(move || inner.run())?;
            pool.threads.lock().push(j);
        }
        Ok(pool)
    }

    /// Queues a job (or runs it now, without threads).
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if self.threads.lock().is_empty() {
            return job();
        }
        self.inner.queue.lock().jobs.push_back(Box::new(job));
        self.inner.ready.notify_one();
    }

    /// Lets the threads finish every queued job, then joins them. Call once nothing will
    /// submit any more (the workers have stopped).
    pub(crate) fn close_and_join(&self) {
        self.close();
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                tracing::error!("a blocking-pool thread panicked");
            }
        }
    }

    fn close(&self) {
        self.inner.queue.lock().closed = true;
        self.inner.ready.notify_all();
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        // A server that failed half-way through starting never calls close_and_join.
        self.close();
    }
}

impl PoolInner {
    fn run(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    if q.closed {
                        return;
                    }
                    self.ready.wait(&mut q);
                }
            };
            job();
        }
    }
}
