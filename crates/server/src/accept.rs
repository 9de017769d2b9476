//! The acceptor: owns the listening sockets, admits each new connection (allowlist,
//! connection limit, TLS), and hands it to a worker, round-robin; pauses and retries on a
//! timer when accept(2) runs out of descriptors.

use crate::access::{self, Perms};
use crate::conn::{Accepted, Grantee, Stream};
use crate::limits::REFUSING_MAX;
use crate::shared::{AcceptPause, Shared};
use crate::worker::WorkerHandle;
use mio::{Events, Interest, Poll, Token};
use objmapper_proto::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
