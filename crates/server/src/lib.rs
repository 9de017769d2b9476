//! The objmapper daemon as a library.
//!
//! [`Server::start`] binds the management API's listeners (docs/ADMIN.md; it answers
//! `/healthz` at once and `/readyz` only after recovery), opens the store (running
//! recovery to completion), binds the Unix socket (and optionally TCP), and starts one
//! acceptor thread plus `workers` event-loop threads. [`Server::shutdown`] stops accepting, lets in-flight requests finish within a
//! grace period, and closes the store cleanly. Tests run it in-process.
//!
//! `blocking_threads` more threads run slow commits and deletes (DURABLE fsyncs, large
//! copies) for the event loops, which is what lets a V2 session's later requests overtake
//! them. splice mode uses sendfile(2), which has no MSG_NOSIGNAL: an embedding program
//! should ignore SIGPIPE, as Rust programs do (otherwise splice-mode GETs fall back to
//! send(2) through user space, with a warning at start).
//!
//! With `udp_listen` set, one more thread serves GET (copy), HEAD and PING over UDP
//! (`udp.rs`; docs/PROTOCOL.md, "UDP transport").

mod accept;
mod access;
mod activation;
mod admin;
mod config;
mod conn;
mod limits;
mod listen;
mod metrics;
mod notify;
mod ops;
mod pool;
mod remote;
mod runtime;
mod shared;
// The crate's one `unsafe`: claiming a socket-activated descriptor (see `sys.rs`).
#[allow(unsafe_code)]
mod sys;
mod tls;
mod udp;
mod wire;
mod worker;

pub use access::{AccessConfig, Grant, Perms};
pub use activation::take_activated_listener;
pub use config::{admin_sibling, check_host_id, default_host_id, ServerConfig};
pub use limits::RuntimeLimits;
pub use notify::{monotonic_usec, Notifier, Notify};
pub use remote::RemoteSettings;
pub use runtime::{
    Applied, EvictionConfig, EvictionPatch, RuntimeConfig, RuntimeConfigError, RuntimeConfigPatch,
    TierConfig, TierPatch,
};
pub use tls::{TlsConfig, Token, ALPN as TLS_ALPN, TOKEN_MIN};
pub use udp::UdpStats;

use accept::Listener;
use objmapper_store::{OpenError, Store};
use shared::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What `POST /v1/reload` runs: see [`Server::set_reload_handler`].
pub type ReloadHandler = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("opening the store failed: {0}")]
    Store(#[from] OpenError),
    /// The socket path exists and is not a socket: it is never removed.
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    /// The socket path is a socket owned by someone else: it is never removed.
    #[error("refusing to replace socket {path}: it belongs to uid {uid}, not to us")]
    ForeignSocket {
        /// The socket path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Another server answers on the socket path.
    #[error("another server is already listening on {0}")]
    InUse(PathBuf),
    /// bind() failed.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// The address or path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other OS error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What failed.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store failed to close cleanly.
    #[error("closing the store failed: {0}")]
    Close(#[from] objmapper_store::StoreError),
}

impl ServerError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        ServerError::Io { context, source }
    }
}

/// A running server.
pub struct Server {
    shared: Option<Arc<Shared>>,
    socket_path: PathBuf,
    /// The socket file we created (None when it was handed to us: socket activation).
    socket_id: Option<listen::FileId>,
    tcp_addr: Option<SocketAddr>,
    udp: Option<udp::UdpHandle>,
    acceptor_waker: Arc<mio::Waker>,
    worker_wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    checkpoint_stop: Option<mpsc::Sender<()>>,
    admin: Option<admin::AdminHandle>,
}

impl Server {
    /// Opens the store, binds the listeners and starts serving. Returns once the index is
    /// complete and the socket accepts connections.
    pub fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        if cfg.workers == 0 {
            return Err(ServerError::Config("workers must be at least 1".into()));
        }
        if cfg.socket_mode & !0o777 != 0 {
            return Err(ServerError::Config(format!(
                "socket mode {:o} has bits outside 0777",
                cfg.socket_mode
            )));
        }
        if let Some(a) = cfg.tcp_listen {
            tls::check_exposure(a, cfg.tls.as_ref(), cfg.tcp_token.is_some())?;
        }
        let tcp_security = tls::TcpSecurity::load(&cfg)?;
        udp::check_config(&cfg)?;
        limits::RuntimeLimits::of(&cfg)
            .check()
            .map_err(ServerError::Config)?;
        if cfg.max_connections == 0 {
            return Err(ServerError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        let need = limits::fds_needed(&cfg);
        let nofile = sys::ensure_nofile_limit(need).map_err(ServerError::Config)?;
        // The store's cache of open files (one per tier) takes what the limits leave.
        let spare = usize::try_from(nofile.saturating_sub(need) / 2).unwrap_or(usize::MAX);
        let mut cfg = cfg;
        cfg.store.open_files_max = cfg.store.open_files_max.min(spare).max(16);
        tracing::debug!(
            "RLIMIT_NOFILE is {nofile}; up to {} cached open files per tier",
            cfg.store.open_files_max
        );
        admin::check_tcp(cfg.admin_tcp)?;
        if let Some(a) = cfg.admin_socket_path() {
            if a == cfg.socket_path {
                return Err(ServerError::Config(format!(
                    "the management socket cannot be the object socket ({})",
                    a.display()
                )));
            }
        }
        // Peers refused by the allowlist, on the object and the management sockets.
        let denied = Arc::new(AtomicU64::new(0));
        // The allowlist in force, for both; `set_access` replaces it.
        let access = access::LiveAccess::new(cfg.access.clone());
        // The management API first: it answers /healthz (and /readyz with 503) while
        // recovery runs. Dropped on any error below, which stops it and removes its socket.
        let admin = if cfg.admin_enabled {
            Some(admin::start(
                denied.clone(),
                access.clone(),
                cfg.admin_socket_path().as_deref(),
                cfg.socket_mode,
                cfg.socket_group,
                cfg.admin_tcp,
            )?)
        } else {
            None
        };
        let store = Arc::new(Store::open(cfg.store.clone())?);
        tracing::info!(
            objects = store.len(),
            bytes = store.bytes(),
            "store ready at {} (memory tier {})",
            cfg.store.data_dir.display(),
            cfg.store.resolved_mem_dir().display()
        );

        let remote = match &cfg.remote {
            Some(r) => {
                // A version larger than this host takes is refused from its header,
                // not downloaded to be refused at the commit.
                let mut r = r.clone();
                r.client = r.client.with_max_object_size(cfg.store.max_object_size);
                Some(remote::RemoteTier::start(r, &cfg.host_id, &store)?)
            }
            None => {
                remote::refuse_to_run_detached(&store)?;
                None
            }
        };

        let (unix, socket_id) = match &cfg.unix_listener {
            Some(l) => (listen::adopt_unix(l)?, None),
            None => {
                let (l, id) =
                    listen::bind_unix(&cfg.socket_path, cfg.socket_mode, cfg.socket_group)?;
                (l, Some(id))
            }
        };
        let mut listeners = vec![Listener::Unix(unix)];
        let mut tcp_addr = None;
        if let Some(addr) = cfg.tcp_listen {
            let l = mio::net::TcpListener::bind(addr).map_err(|e| ServerError::Bind {
                what: addr.to_string(),
                source: e,
            });
            let l = match l {
                Ok(l) => l,
                Err(e) => {
                    listen::unlink_if_ours(&cfg.socket_path, socket_id);
                    return Err(e);
                }
            };
            tcp_addr = l.local_addr().ok();
            listeners.push(Listener::Tcp(l));
        }
        let udp_socket = match udp::bind(&cfg) {
            Ok(s) => s,
            Err(e) => {
                listen::unlink_if_ours(&cfg.socket_path, socket_id);
                return Err(e);
            }
        };

        let pool = match pool::BlockingPool::start(cfg.blocking_threads) {
            Ok(p) => p,
            Err(e) => {
                listen::unlink_if_ours(&cfg.socket_path, socket_id);
                return Err(ServerError::io("starting the blocking pool".into(), e));
            }
        };
        let shared = Arc::new(Shared {
            store: store.clone(),
            remote,
            cfg: cfg.clone(),
            access,
            limits: limits::LiveLimits::new(&RuntimeLimits::of(&cfg)),
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            denied,
            over_limit: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            accept: Default::default(),
            staged_puts: Default::default(),
            staged_bytes: Default::default(),
            pool,
            kio: shared::KernelIo::new(),
            // One shard per worker, and the last for the UDP thread.
            metrics: metrics::Metrics::new(cfg.workers + 1),
            tcp_security: parking_lot::RwLock::new(tcp_security),
            reload: parking_lot::RwLock::new(None),
        });
        let io_err = |what: &str, e| ServerError::io(what.to_string(), e);
        let mut threads = Vec::new();
        let mut handles = Vec::new();
        let mut worker_wakers = Vec::new();
        for i in 0..cfg.workers {
            let (h, j) = worker::spawn_worker(i, shared.clone())
                .map_err(|e| io_err("starting a worker", e))?;
            worker_wakers.push(h.waker.clone());
            handles.push(h);
            threads.push(j);
        }
        let mut udp = None;
        if let Some(sock) = udp_socket {
            let (h, j) = udp::spawn(sock, shared.clone())
                .map_err(|e| io_err("starting the UDP thread", e))?;
            udp = Some(h);
            threads.push(j);
        }
        let poll = mio::Poll::new().map_err(|e| io_err("creating the acceptor's epoll", e))?;
        let acceptor_waker = Arc::new(
            mio::Waker::new(poll.registry(), mio::Token(usize::MAX))
                .map_err(|e| io_err("creating the acceptor's waker", e))?,
        );
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("objm-accept".into())
                .spawn(move || accept::run_acceptor(poll, listeners, handles, sh))
                .map_err(|e| io_err("starting the acceptor", e))?,
        );
        if let Some(a) = &admin {
            a.set_ready(shared.clone());
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let interval = cfg.checkpoint_interval;
        threads.push(
            std::thread::Builder::new()
                .name("objm-checkpoint".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval)
                    {
                        if let Err(e) = store.checkpoint() {
                            tracing::error!("checkpoint failed: {e}");
                        }
                    }
                })
                .map_err(|e| io_err("starting the checkpoint thread", e))?,
        );
        let how = if cfg.unix_listener.is_some() {
            " (socket activation)"
        } else {
            ""
        };
        tracing::info!("listening on {}{how}", cfg.socket_path.display());
        if let Some(a) = tcp_addr {
            let how = match (&cfg.tls, &cfg.tcp_token) {
                (None, None) => "plain TCP",
                (None, Some(_)) => "plain TCP, token in HELLO required",
                (Some(t), None) if t.client_ca.is_some() => "TLS 1.3, client certificate required",
                (Some(_), None) => "TLS 1.3",
                (Some(t), Some(_)) if t.client_ca.is_some() => {
                    "TLS 1.3, client certificate and token in HELLO required"
                }
                (Some(_), Some(_)) => "TLS 1.3, token in HELLO required",
            };
            tracing::info!("listening on tcp {a} ({how}; copy, splice and auto modes)");
        }
        if let Some(u) = &udp {
            tracing::info!("listening on udp {} (GET, HEAD, PING)", u.addr);
        }
        Ok(Server {
            shared: Some(shared),
            socket_path: cfg.socket_path,
            socket_id,
            tcp_addr,
            udp,
            acceptor_waker,
            worker_wakers,
            threads,
            checkpoint_stop: Some(stop_tx),
            admin,
        })
    }

    /// The Unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The management API's Unix socket, if it is enabled.
    pub fn admin_socket_path(&self) -> Option<&Path> {
        self.admin
            .as_ref()?
            .socket
            .as_ref()
            .map(|(p, _)| p.as_path())
    }

    /// The management API's bound TCP address, if enabled (useful with port 0).
    pub fn admin_tcp_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref()?.tcp_addr
    }

    /// The Prometheus text that `GET /metrics` serves.
    pub fn metrics_text(&self) -> String {
        admin::metrics_text(
            self.shared
                .as_ref()
                .expect("server is running until shutdown"),
        )
    }

    /// The bound TCP address, if TCP is enabled (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound UDP address, if UDP is enabled (useful with port 0).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().map(|u| u.addr)
    }

    /// What the UDP thread has done so far; `None` if UDP is off.
    pub fn udp_stats(&self) -> Option<UdpStats> {
        self.udp.as_ref().map(|u| u.stats())
    }

    /// The store, for in-process inspection (tests, embedding).
    pub fn store(&self) -> &Store {
        &self.shared().store
    }

    fn shared(&self) -> &Shared {
        self.shared
            .as_ref()
            .expect("server is running until shutdown")
    }

    /// Re-reads the TCP listener's certificate, key and client CA files and replaces its
    /// TLS settings and token with `tls` and `token`, all or nothing: new connections use
    /// them, open ones keep theirs. For certificate rotation (SIGHUP). Refused, changing
    /// nothing, if the files are unusable or the listener would be exposed (see
    /// [`ServerConfig::tcp_listen`]). Without a TCP listener there is nothing to change.
    pub fn reload_tcp_security(
        &self,
        tls: Option<&TlsConfig>,
        token: Option<Token>,
    ) -> Result<(), ServerError> {
        let sh = self.shared();
        let mut cfg = sh.cfg.clone();
        cfg.tls = tls.cloned();
        cfg.tcp_token = token;
        if let Some(a) = cfg.tcp_listen {
            tls::check_exposure(a, cfg.tls.as_ref(), cfg.tcp_token.is_some())?;
        }
        let fresh = tls::TcpSecurity::load(&cfg)?;
        *sh.tcp_security.write() = fresh;
        Ok(())
    }

    /// The runtime configuration in effect (tier capacities, placement thresholds,
    /// eviction knobs): what `GET /v1/config` shows.
    pub fn runtime_config(&self) -> RuntimeConfig {
        runtime::get(&self.shared().store)
    }

    /// Changes the runtime configuration: the fields `patch` gives, all or none (a refused
    /// value leaves everything as it was). The same code serves `PATCH /v1/config` and
    /// the SIGHUP reload. A smaller capacity is enforced lazily: the tier evicts down to
    /// it at its next PUT or promotion.
    pub fn set_runtime_config(
        &self,
        patch: &RuntimeConfigPatch,
    ) -> Result<Applied, RuntimeConfigError> {
        runtime::apply(&self.shared().store, patch)
    }

    /// The allowlist in force: [`ServerConfig::access`], or what [`Server::set_access`]
    /// last set.
    pub fn access(&self) -> AccessConfig {
        (*self.shared().access.get()).clone()
    }

    /// Replaces the allowlist (the SIGHUP reload calls this). Connections accepted from
    /// now on, on the object and the management sockets, get their permissions from the
    /// new one, and open connections look their peer up again at their next request: one
    /// left without the permission an op needs gets FORBIDDEN for it, one left with none
    /// at all is closed (a management connection without `admin` gets 403 and is closed).
    pub fn set_access(&self, access: AccessConfig) {
        self.shared().access.set(access);
    }

    /// Installs what `POST /v1/reload` on the management API runs (`objmapper reload`,
    /// the systemd unit's `ExecReload=`): `objmapper serve` re-reads its configuration
    /// file, exactly as on SIGHUP. The handler runs on a blocking thread and answers
    /// `Ok(summary)` once the new settings are in force, or `Err(why)` when they were
    /// refused (and the running ones stay). Without a handler the endpoint answers 501.
    pub fn set_reload_handler(&self, handler: ReloadHandler) {
        *self.shared().reload.write() = Some(handler);
    }

    /// The runtime-changeable limits in force: [`ServerConfig`]'s, or what
    /// [`Server::set_limits`] last set.
    pub fn limits(&self) -> RuntimeLimits {
        self.shared().limits.get()
    }

    /// Changes the limits a running server can change (the SIGHUP reload calls this); see
    /// [`RuntimeLimits`] for when each takes effect. All or nothing: a value out of range
    /// is [`ServerError::Config`] and changes nothing.
    pub fn set_limits(&self, limits: &RuntimeLimits) -> Result<(), ServerError> {
        limits.check().map_err(ServerError::Config)?;
        self.shared().limits.set(limits);
        Ok(())
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.shared().connections.load(Ordering::Relaxed)
    }

    /// Connections refused since start because the peer had no permission (not on the
    /// allowlist): on the object socket (answered FORBIDDEN) and on the management socket
    /// (answered 403). Each was logged with its pid, uid and gid.
    pub fn denied_connections(&self) -> u64 {
        self.shared().denied.load(Ordering::Relaxed)
    }

    /// Connections refused since start because `max_connections` was reached.
    pub fn over_limit_connections(&self) -> u64 {
        self.shared().over_limit.load(Ordering::Relaxed)
    }

    /// fd-mode PUTs staged on all connections now, and the bytes held for the copy/splice
    /// PUT bodies being received now (received bytes rounded up to 1 MiB steps).
    pub fn staged(&self) -> (u64, u64) {
        let sh = self.shared();
        (sh.staged_puts.used(), sh.staged_bytes.used())
    }

    /// Pipes the workers have created for splice mode since start (tests check that the
    /// per-worker pipe pools reuse them instead of making one per request).
    #[doc(hidden)]
    pub fn pipes_created(&self) -> usize {
        self.shared().kio.pipes_created.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), aborts
    /// uncommitted PUTs, removes the socket and closes the store cleanly.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Result<(), ServerError> {
        let Some(shared) = self.shared.take() else {
            return Ok(());
        };
        shared.shutdown.store(true, Ordering::Release);
        if let Some(mut a) = self.admin.take() {
            a.stop();
        }
        let _ = self.acceptor_waker.wake();
        for w in &self.worker_wakers {
            let _ = w.wake();
        }
        if let Some(u) = &self.udp {
            let _ = u.waker.wake();
        }
        drop(self.checkpoint_stop.take());
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a server thread panicked");
            }
        }
        // The workers are gone, so nothing submits any more: finish the queued jobs.
        shared.pool.close_and_join();
        listen::unlink_if_ours(&self.socket_path, self.socket_id);
        let mut shared = Arc::try_unwrap(shared).map_err(|_| {
            ServerError::Config("server state still shared after all threads stopped".into())
        })?;
        // The remote tier's tasks first: they may hold the store for an upload.
        drop(shared.remote.take());
        let store = Arc::try_unwrap(shared.store).map_err(|_| {
            ServerError::Config("store still shared after all threads stopped".into())
        })?;
        store.close()?;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_inner() {
            tracing::error!("shutdown on drop failed: {e}");
        }
    }
}
