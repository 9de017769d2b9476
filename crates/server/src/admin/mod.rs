//! The management API: HTTP/1.1 + JSON on a Unix socket (and optionally loopback TCP),
//! served on one thread of its own with a current-thread tokio runtime. It shares only
//! the store and the counters with the object path; nothing here runs on a worker
//! thread. The contract is docs/ADMIN.md.
//!
//! - this file: the admin thread (start, readiness, stop) and the TCP address check;
//! - [`accept`]: the listeners' accept loop, the peer-credential check of every
//!   connection and request, and hyper's HTTP/1.1 connection serving;
//! - [`router`]: the axum [`Router`](axum::Router) that maps paths and methods to
//!   handlers (it answers 404 and 405 with `Allow` itself) and the readiness gate;
//! - [`reply`] and [`input`]: JSON answers and errors; keys, query strings and bodies;
//! - the handlers by concern: [`status`] (`/healthz`, `/readyz`, `/v1/stats`,
//!   `/v1/tiers`), [`objects`] (listing, one object, purge, migrate), [`bans`],
//!   [`verify`], [`config`];
//! - [`metrics`]: the `/metrics` exposition (prometheus-client, Prometheus text 0.0.4).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crate::access::LiveAccess;
use crate::listen::{self, FileId};
use crate::shared::Shared;
use crate::ServerError;

mod accept;
mod bans;
mod config;
mod input;
mod metrics;
mod objects;
mod remote;
mod reply;
mod router;
mod status;
mod verify;

pub(crate) use metrics::metrics_text;

/// What the admin thread serves: the server's state once the store is open. Until then
/// (recovery) `/healthz` answers and everything else is 503 `not_ready`.
pub(crate) struct AdminCtx {
    shared: OnceLock<Arc<Shared>>,
    started: std::time::Instant,
    /// Who may use the Unix socket: peers whose grants include `admin` (the allowlist in
    /// force, shared with the object socket's acceptor).
    access: LiveAccess,
    /// Peers refused (shared with the object socket's count).
    denied: Arc<AtomicU64>,
}

/// The running admin thread. Dropping it stops the thread and removes the socket.
pub(crate) struct AdminHandle {
    ctx: Arc<AdminCtx>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) socket: Option<(PathBuf, FileId)>,
    pub(crate) tcp_addr: Option<SocketAddr>,
}

impl AdminHandle {
    /// Recovery is over: serve the running server's state from now on.
    pub(crate) fn set_ready(&self, shared: Arc<Shared>) {
        let _ = self.ctx.shared.set(shared);
    }

    /// Stops accepting, drops open admin connections and joins the thread.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the admin thread panicked");
            }
        }
        if let Some((path, id)) = self.socket.take() {
            listen::unlink_if_ours(&path, id);
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Refuses a TCP address the API must not be exposed on.
pub(crate) fn check_tcp(addr: Option<SocketAddr>) -> Result<(), ServerError> {
    match addr {
        Some(a) if !a.ip().is_loopback() => Err(ServerError::Config(format!(
            "the management API has no authentication: bind it to a loopback address \
             (127.0.0.1 or ::1), not {a}; use its Unix socket for anything else"
        ))),
        _ => Ok(()),
    }
}

/// Binds the listeners (so errors surface from `Server::start`) and starts the thread.
/// It answers `/healthz` at once; the rest waits for [`AdminHandle::set_ready`].
pub(crate) fn start(
    denied: Arc<AtomicU64>,
    access: LiveAccess,
    socket: Option<&Path>,
    mode: u32,
    group: Option<u32>,
    tcp: Option<SocketAddr>,
) -> Result<AdminHandle, ServerError> {
    let ctx = Arc::new(AdminCtx {
        shared: OnceLock::new(),
        started: std::time::Instant::now(),
        access,
        denied,
    });
    let shared = ctx.clone();
    let mut unix = None;
    let mut socket_id = None;
    if let Some(path) = socket {
        let (l, id) = listen::bind_unix(path, mode, group)?;
        unix = Some(std::os::unix::net::UnixListener::from(l));
        socket_id = Some((path.to_path_buf(), id));
    }
    let cleanup = |socket_id: &Option<(PathBuf, FileId)>| {
        if let Some((p, id)) = socket_id {
            listen::unlink_if_ours(p, *id);
        }
    };
    let mut tcp_listener = None;
    let mut tcp_addr = None;
    if let Some(addr) = tcp {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                tcp_addr = l.local_addr().ok();
                tcp_listener = Some(l);
            }
            Err(e) => {
                cleanup(&socket_id);
                return Err(ServerError::Bind {
                    what: format!("{addr} (management API)"),
                    source: e,
                });
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            cleanup(&socket_id);
            return Err(ServerError::io("starting the admin runtime".into(), e));
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("objm-admin".into())
        .spawn(move || rt.block_on(accept::serve(unix, tcp_listener, shared, rx)));
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            cleanup(&socket_id);
            return Err(ServerError::io("starting the admin thread".into(), e));
        }
    };
    if let Some((p, _)) = &socket_id {
        tracing::info!("management API on {}", p.display());
    }
    if let Some(a) = tcp_addr {
        tracing::info!("management API on http://{a}");
    }
    Ok(AdminHandle {
        ctx,
        stop: Some(tx),
        thread: Some(thread),
        socket: socket_id,
        tcp_addr,
    })
}
