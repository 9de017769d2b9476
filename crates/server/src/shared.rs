//! What every thread of the server shares: the store, the configuration in force, the
//! budgets and counters ([`Shared`]), what splice mode knows about the kernel, the
//! acceptor's health, and the types a worker lends its connections ([`WorkerIo`],
//! [`Done`]).

use crate::access;
use crate::limits::{Budget, LiveLimits};
use crate::pool::BlockingPool;
use crate::sys::PipePool;
use crate::ServerConfig;
use mio::Waker;
use objmapper_store::Store;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

/// State every worker reads.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    /// The remote tier, when one is configured (read-through on a local miss).
    pub(crate) remote: Option<crate::remote::RemoteTier>,
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

/// A finished blocking job: the reply to request `id` (slot `seq`) of connection `token`.
pub(crate) struct Done {
    pub(crate) token: usize,
    pub(crate) seq: u64,
    pub(crate) id: u32,
    pub(crate) reply: crate::ops::Reply,
}

/// What a worker lends its connections besides the shared state: the pipe pool, and the
/// return address for blocking jobs.
pub(crate) struct WorkerIo {
    pub(crate) pipes: PipePool,
    pub(crate) done_tx: Sender<Done>,
    pub(crate) waker: Arc<Waker>,
}

/// What the object listeners' acceptor reports about itself: `/metrics` and `/readyz`.
#[derive(Default)]
pub(crate) struct AcceptHealth {
    /// Times accept(2) ran out of file descriptors (EMFILE, ENFILE) and accepting paused,
    /// since start (`objmapper_accept_fd_exhausted_total`).
    pub(crate) fd_exhausted: AtomicU64,
    /// Set while accepting is paused because accept(2) fails for want of a resource.
    pub(crate) paused: Mutex<Option<AcceptPause>>,
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
