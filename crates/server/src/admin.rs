//! The management API: HTTP/1.1 + JSON on a Unix socket (and optionally loopback TCP),
//! served by hyper on one thread of its own with a current-thread tokio runtime. It
//! shares only the store and the counters with the object path; nothing here runs on a
//! worker thread. The contract is docs/ADMIN.md.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use objmapper_store::{Demoted, ListCursor, ObjectInfo, StoreError, Tier, MAX_KEY_LEN};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{LiveAccess, Perms};
use crate::listen::{self, FileId};
use crate::metrics::{self, BUCKETS, OPS, STATUSES};
use crate::runtime::{self, RuntimeConfigPatch};
use crate::worker::Shared;
use crate::ServerError;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Default and largest page of `GET /v1/objects`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

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
        .spawn(move || rt.block_on(serve(unix, tcp_listener, shared, rx)));
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

async fn serve(
    unix: Option<std::os::unix::net::UnixListener>,
    tcp: Option<std::net::TcpListener>,
    shared: Arc<AdminCtx>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let to_tokio_unix = |l: std::os::unix::net::UnixListener| {
        l.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(l)
    };
    let to_tokio_tcp = |l: std::net::TcpListener| {
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    };
    let unix = match unix.map(to_tokio_unix).transpose() {
        Ok(u) => u,
        Err(e) => return tracing::error!("management API: cannot use its Unix socket: {e}"),
    };
    let tcp = match tcp.map(to_tokio_tcp).transpose() {
        Ok(t) => t,
        Err(e) => return tracing::error!("management API: cannot use its TCP socket: {e}"),
    };
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = async { unix.as_ref().expect("guarded").accept().await }, if unix.is_some() => {
                match r {
                    Ok((s, _)) => {
                        backoff.worked();
                        let refusal = admin_peer(&s, &shared)
                            .and_then(|p| admin_refusal(p, &shared).map_or(Ok(p), Err));
                        let io = hyper_util::rt::TokioIo::new(s);
                        match refusal {
                            Ok(peer) => spawn_conn(io, shared.clone(), Some(peer)),
                            Err(msg) => spawn_forbidden(io, msg),
                        }
                    }
                    Err(e) => accept_failed(e, &mut backoff).await,
                }
            }
            r = async { tcp.as_ref().expect("guarded").accept().await }, if tcp.is_some() => {
                match r {
                    Ok((s, _)) => {
                        backoff.worked();
                        spawn_conn(hyper_util::rt::TokioIo::new(s), shared.clone(), None)
                    }
                    Err(e) => accept_failed(e, &mut backoff).await,
                }
            }
        }
    }
}

/// A Unix-socket peer of the management API: pid, uid, gid.
type AdminPeer = (i32, u32, u32);

/// The peer's credentials, or why it is refused (logged and counted).
fn admin_peer(s: &tokio::net::UnixStream, ctx: &AdminCtx) -> Result<AdminPeer, String> {
    match s.peer_cred() {
        Ok(c) => Ok((c.pid().unwrap_or(0), c.uid(), c.gid())),
        Err(e) => {
            tracing::warn!("management API: reading a peer's credentials failed: {e}");
            ctx.denied.fetch_add(1, Ordering::Relaxed);
            Err("the peer's credentials could not be read".into())
        }
    }
}

/// Why a Unix-socket peer may not use the management API (its uid/gid has no `admin`
/// grant in the allowlist in force), logged and counted; None if it may. Checked when a
/// connection is accepted and again at each request, so a revocation reaches
/// keep-alive connections.
fn admin_refusal((pid, uid, gid): AdminPeer, ctx: &AdminCtx) -> Option<String> {
    let perms = ctx.access.perms_of(uid, gid);
    if perms.contains(Perms::ADMIN) {
        return None;
    }
    ctx.denied.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        pid,
        uid,
        gid,
        "management API: refused a connection from pid {pid} uid {uid} gid {gid}: no admin \
         permission"
    );
    Some(format!(
        "uid {uid} gid {gid} has no admin permission on this server (it has {perms}; see its \
         allowlist)"
    ))
}

/// Answers every request of a refused peer 403 `forbidden`, then closes.
fn spawn_forbidden<I>(io: I, message: String)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |_req| {
            let r = err(StatusCode::FORBIDDEN, "forbidden", message.clone()).into_response();
            async move { Ok::<_, Infallible>(r) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(io, svc)
            .await;
    });
}

/// The management listeners' failing accept(2) (out of descriptors, most likely): a pause
/// that doubles from 10 ms to 100 ms while the failures last, and at most one log line a
/// second. Unlike the object acceptor's edge-triggered mio listener, tokio leaves the
/// listener ready after a failed accept, so the next one retries by itself and a waiting
/// client is accepted once a descriptor frees up; the pause only keeps a server out of
/// descriptors from spinning and flooding the log.
#[derive(Default)]
struct AcceptBackoff {
    delay: std::time::Duration,
    unlogged: u64,
    last_log: Option<std::time::Instant>,
}

impl AcceptBackoff {
    fn worked(&mut self) {
        self.delay = std::time::Duration::ZERO;
    }
}

async fn accept_failed(e: std::io::Error, b: &mut AcceptBackoff) {
    use std::time::{Duration, Instant};
    b.delay = (b.delay * 2).clamp(Duration::from_millis(10), Duration::from_millis(100));
    b.unlogged += 1;
    let now = Instant::now();
    if b.last_log
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        let n = std::mem::take(&mut b.unlogged);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or("unlimited".to_string(), |n| n.to_string());
        tracing::warn!(
            "management API: accept failed: {e} ({n} time(s) since the last such line; \
             RLIMIT_NOFILE is {limit}; if out of file descriptors, raise LimitNOFILE= / \
             ulimit -n or lower max_connections); retrying"
        );
        b.last_log = Some(now);
    }
    tokio::time::sleep(b.delay).await;
}

fn spawn_conn<I>(io: I, shared: Arc<AdminCtx>, peer: Option<AdminPeer>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let sh = shared.clone();
            async move {
                if let Some(msg) = peer.and_then(|p| admin_refusal(p, &sh)) {
                    // Revoked while the connection was open: refuse, and close it.
                    let mut r = err(StatusCode::FORBIDDEN, "forbidden", msg).into_response();
                    r.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    return Ok::<_, Infallible>(r);
                }
                Ok::<_, Infallible>(handle(req, &sh).await)
            }
        });
        // A connection that sends no complete header within 30 s is closed.
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(30))
            .serve_connection(io, svc)
            .await
        {
            tracing::debug!("management API connection: {e}");
        }
    });
}

/// `POST /v1/reload`: runs the embedding program's reload (re-reading its configuration
/// file) and answers once it is over: 200 `{"status":"reloaded","message":...}` when the
/// settings are in force, 422 `reload_failed` when they were refused (the running ones
/// stay), 501 `no_reload` when the program installed no reload.
async fn reload(sh: Arc<Shared>) -> Answer {
    let Some(handler) = sh.reload.read().clone() else {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "no_reload",
            "this server has no configuration to re-read (only `objmapper serve` has one)",
        ));
    };
    match tokio::task::spawn_blocking(move || handler()).await {
        Ok(Ok(message)) => ok(json!({"status": "reloaded", "message": message})),
        Ok(Err(message)) => Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_failed",
            message,
        )),
        Err(e) => Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the reload failed: {e}"),
        )),
    }
}

/// An error answer: status, code, message (and optionally the field at fault).
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
        field: None,
    }
}

type Answer = Result<Response<Full<Bytes>>, ApiError>;

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok(v: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &v))
}

impl ApiError {
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            e["field"] = Value::String(f);
        }
        json_response(self.status, &json!({ "error": e }))
    }
}

async fn handle(req: Request<Incoming>, ctx: &AdminCtx) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let Some(sh) = ctx.shared.get() else {
        // Still recovering: alive, not ready.
        if path == "/healthz" && method == Method::GET {
            return json_response(StatusCode::OK, &json!({"status": "ok"}));
        }
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!(
                "the server is recovering its store (for {:.1} s so far); try again shortly",
                ctx.started.elapsed().as_secs_f64()
            ),
        )
        .into_response();
    };
    let owned = sh.clone();
    let sh: &Shared = sh;
    let query = req.uri().query().unwrap_or("").to_string();
    let allow: &'static str;
    let result = match path.as_str() {
        "/healthz" => {
            allow = "GET";
            (method == Method::GET).then(|| ok(json!({"status": "ok"})))
        }
        "/readyz" => {
            allow = "GET";
            (method == Method::GET).then(|| readyz(sh))
        }
        "/metrics" => {
            allow = "GET";
            (method == Method::GET).then(|| Ok(metrics_response(sh)))
        }
        "/v1/objects" => {
            allow = "GET";
            (method == Method::GET).then(|| list(sh, &query))
        }
        "/v1/stats" => {
            allow = "GET";
            (method == Method::GET).then(|| ok(stats_json(sh)))
        }
        "/v1/tiers" => {
            allow = "GET";
            (method == Method::GET).then(|| ok(tiers_json(sh)))
        }
        "/v1/config" => {
            allow = "GET, PATCH";
            match method {
                Method::GET => Some(ok(
                    serde_json::to_value(runtime::get(&sh.store)).unwrap_or(Value::Null)
                )),
                Method::PATCH => Some(patch_config(sh, req).await),
                _ => None,
            }
        }
        "/v1/purge" => {
            allow = "POST";
            if method == Method::POST {
                Some(purge(owned, req).await)
            } else {
                None
            }
        }
        "/v1/bans" => {
            allow = "GET, POST";
            match method {
                Method::GET => Some(ok(bans_json(sh))),
                Method::POST => Some(add_ban(owned, req).await),
                _ => None,
            }
        }
        "/v1/verify" => {
            allow = "POST";
            if method == Method::POST {
                Some(verify(owned, req).await)
            } else {
                None
            }
        }
        "/v1/reload" => {
            allow = "POST";
            if method == Method::POST {
                Some(reload(owned).await)
            } else {
                None
            }
        }
        "/v1/migrate" => {
            allow = "POST";
            if method == Method::POST {
                Some(migrate(owned, req).await)
            } else {
                None
            }
        }
        p if p.starts_with("/v1/objects/") => {
            allow = "GET, DELETE";
            let raw = &p["/v1/objects/".len()..];
            match method {
                Method::GET => Some(path_key(raw).and_then(|k| object(sh, &k))),
                Method::DELETE => Some(path_key(raw).and_then(|k| delete(sh, &k))),
                _ => None,
            }
        }
        _ => {
            return err(
                StatusCode::NOT_FOUND,
                "no_such_route",
                format!("no endpoint {path}; see docs/ADMIN.md"),
            )
            .into_response()
        }
    };
    match result {
        Some(Ok(r)) => r,
        Some(Err(e)) => e.into_response(),
        None => {
            let mut r = err(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}; allowed: {allow}"),
            )
            .into_response();
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            r
        }
    }
}

fn readyz(sh: &Shared) -> Answer {
    if sh.shutdown.load(Ordering::Acquire) {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is shutting down",
        ));
    }
    if sh.store.is_poisoned() {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "poisoned",
            "a failed fsync poisoned the store: writes are refused until the server is \
             restarted (reads still work); check the disk and the logs",
        ));
    }
    if sh.store.disk_full() {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "disk_full",
            "the disk tier's last write failed because its filesystem is full, and no write \
             has succeeded since: reads and deletes work, PUTs are refused with NO_SPACE; \
             free space on the filesystem holding the data directory, or lower \
             disk_capacity_bytes",
        ));
    }
    if let Some(p) = sh.accept.paused() {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            if p.out_of_fds {
                "fd_exhausted"
            } else {
                "accept_failing"
            },
            format!("for {:.1} s: {}", p.since.elapsed().as_secs_f64(), p.reason),
        ));
    }
    ok(json!({"status": "ready"}))
}

// ---------------------------------------------------------------------------------------
// Keys, queries, bodies

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn check_key(k: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if k.is_empty() || k.len() > MAX_KEY_LEN {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("a key is 1..={MAX_KEY_LEN} bytes; got {}", k.len()),
        ));
    }
    Ok(k)
}

fn path_key(raw: &str) -> Result<Vec<u8>, ApiError> {
    check_key(percent_encoding::percent_decode_str(raw).collect())
}

/// The query string's parameters, percent-decoded to bytes.
fn query_params(q: &str) -> Vec<(String, Vec<u8>)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_encoding::percent_decode_str(k)
                    .decode_utf8_lossy()
                    .into_owned(),
                percent_encoding::percent_decode_str(v).collect(),
            )
        })
        .collect()
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are at most {MAX_BODY} bytes"),
                ));
            }
            return Err(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the request body failed: {e}"),
            ));
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut a = err(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("invalid JSON body at {path}: {}", e.inner()),
        );
        if path != "." {
            a.field = Some(path);
        }
        a
    })
}

/// `key`/`key_hex` or `prefix`/`prefix_hex` of a purge or migrate body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    key: Option<String>,
    key_hex: Option<String>,
    prefix: Option<String>,
    prefix_hex: Option<String>,
    #[serde(default)]
    confirm: bool,
    action: Option<String>,
}

enum Selector {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

fn selector(t: &Target) -> Result<Selector, ApiError> {
    let hexed = |field: &str, s: &str| {
        unhex(s).ok_or_else(|| {
            let mut e = err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field} must be an even number of hex digits"),
            );
            e.field = Some(field.to_string());
            e
        })
    };
    match (&t.key, &t.key_hex, &t.prefix, &t.prefix_hex) {
        (Some(k), None, None, None) => Ok(Selector::Key(check_key(k.as_bytes().to_vec())?)),
        (None, Some(k), None, None) => Ok(Selector::Key(check_key(hexed("key_hex", k)?)?)),
        (None, None, Some(p), None) => Ok(Selector::Prefix(p.as_bytes().to_vec())),
        (None, None, None, Some(p)) => Ok(Selector::Prefix(hexed("prefix_hex", p)?)),
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give exactly one of key, key_hex, prefix, prefix_hex",
        )),
    }
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Poisoned => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            format!("{e}; restart the server once the disk is healthy"),
        ),
        StoreError::InvalidKey { .. } => err(StatusCode::BAD_REQUEST, "bad_key", e.to_string()),
        StoreError::NoSpace(_) => err(StatusCode::CONFLICT, "no_space", e.to_string()),
        StoreError::InvalidBan(_) => err(StatusCode::BAD_REQUEST, "bad_ban", e.to_string()),
        StoreError::TooManyBans { .. } => err(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_bans",
            e.to_string(),
        ),
        e => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            objmapper_store_error_chain(&e),
        ),
    }
}

fn objmapper_store_error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------------------
// Objects

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Memory => "memory",
        Tier::Disk => "disk",
        Tier::Both => "both",
    }
}

fn object_json(o: &ObjectInfo, full: bool) -> Value {
    let m = &o.meta;
    let mut v = json!({
        "key": std::str::from_utf8(&m.key).ok(),
        "key_hex": hex(&m.key),
        "size": m.size,
        "tier": tier_name(m.tier),
        "pinned": m.pinned,
        "ephemeral": m.ephemeral,
        "dirty": m.dirty,
        "expires_at": m.expires_at,
        "version": m.version,
        "last_access": o.last_access,
    });
    if full {
        let custom: serde_json::Map<String, Value> = m
            .custom
            .iter()
            .map(|(k, val)| {
                let val = match std::str::from_utf8(val) {
                    Ok(s) => json!(s),
                    Err(_) => json!({ "hex": hex(val) }),
                };
                (k.to_string(), val)
            })
            .collect();
        v["mtime"] = json!(m.mtime_ns / 1_000_000_000);
        v["mtime_ns"] = json!(m.mtime_ns);
        v["checksum"] = json!(format!("{:016x}", m.checksum));
        v["content_type"] = json!(m.content_type.as_deref());
        v["custom"] = Value::Object(custom);
        v["on_disk"] = json!(o.on_disk);
    }
    v
}

fn list(sh: &Shared, query: &str) -> Answer {
    let mut prefix = Vec::new();
    let mut cursor = None;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in query_params(query) {
        match k.as_str() {
            "prefix" => prefix = v,
            "prefix_hex" => {
                prefix = std::str::from_utf8(&v)
                    .ok()
                    .and_then(unhex)
                    .ok_or_else(|| {
                        err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "prefix_hex must be an even number of hex digits",
                        )
                    })?
            }
            "cursor" => {
                if v.is_empty() {
                    continue;
                }
                let c = std::str::from_utf8(&v).ok().and_then(ListCursor::decode);
                cursor = Some(c.ok_or_else(|| {
                    err(
                        StatusCode::BAD_REQUEST,
                        "bad_cursor",
                        format!(
                            "cursor {:?} was not produced by this server; pass back the \
                             next_cursor of the previous page unchanged, or omit it to start over",
                            String::from_utf8_lossy(&v)
                        ),
                    )
                })?);
            }
            "limit" => {
                let n = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|n| (1..=MAX_LIMIT).contains(n));
                limit = n.ok_or_else(|| {
                    err(
                        StatusCode::BAD_REQUEST,
                        "bad_limit",
                        format!(
                            "limit must be a number in 1..={MAX_LIMIT}, not {:?}",
                            String::from_utf8_lossy(&v)
                        ),
                    )
                })?;
            }
            other => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown parameter {other:?}: use prefix, prefix_hex, cursor, limit"),
                ))
            }
        }
    }
    let page = sh.store.list(&prefix, cursor, limit);
    let objects: Vec<Value> = page.objects.iter().map(|o| object_json(o, false)).collect();
    ok(json!({
        "objects": objects,
        "next_cursor": page.next.map(|c| c.encode()),
    }))
}

fn not_found(key: &[u8]) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no object under key {:?}", String::from_utf8_lossy(key)),
    )
}

fn object(sh: &Shared, key: &[u8]) -> Answer {
    match sh.store.info(key).map_err(store_err)? {
        Some(o) => ok(object_json(&o, true)),
        None => Err(not_found(key)),
    }
}

fn delete(sh: &Shared, key: &[u8]) -> Answer {
    if sh.store.delete(key).map_err(store_err)? {
        ok(json!({"deleted": true}))
    } else {
        Err(not_found(key))
    }
}

/// Calls `f` on every key under `prefix`. The keys are collected first, a page at a time
/// (no lock held across pages), and only then acted on: an action that moves an object
/// between tiers (demote, promote) would otherwise meet it again later in the listing.
fn each_key(
    sh: &Shared,
    prefix: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<usize, ApiError> {
    let mut cursor = None;
    let mut keys = Vec::new();
    loop {
        let page = sh.store.list(prefix, cursor, 1024);
        keys.extend(page.objects.into_iter().map(|o| o.meta.key));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for k in &keys {
        f(k)?;
    }
    Ok(keys.len())
}

/// Runs a store-heavy action on tokio's blocking pool, so that a long purge or migration
/// does not hold up other admin requests (a `/metrics` scrape, `/healthz`).
async fn blocking(f: impl FnOnce() -> Answer + Send + 'static) -> Answer {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the admin task failed: {e}"),
        ))
    })
}

/// The body of `POST /v1/verify`: `{}`, or one of `prefix`, `prefix_hex`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    prefix: Option<String>,
    prefix_hex: Option<String>,
}

/// `POST /v1/verify`: reads every object (under a prefix) now and checks it against its
/// record, dropping damaged versions (docs/ADMIN.md).
async fn verify(sh: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let b: VerifyBody = read_json(req).await?;
    let prefix = match (b.prefix, b.prefix_hex) {
        (None, None) => None,
        (Some(p), None) => Some(p.into_bytes()),
        (None, Some(h)) => Some(unhex(&h).ok_or_else(|| {
            let mut e = err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "prefix_hex must be an even number of hex digits",
            );
            e.field = Some("prefix_hex".into());
            e
        })?),
        (Some(_), Some(_)) => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give at most one of prefix, prefix_hex",
            ))
        }
    };
    blocking(move || {
        let t = std::time::Instant::now();
        let r = sh.store.verify_all(prefix.as_deref()).map_err(store_err)?;
        let damaged: Vec<Value> = r
            .damaged
            .iter()
            .map(|d| {
                json!({
                    "key": std::str::from_utf8(&d.key).ok(),
                    "key_hex": hex(&d.key),
                    "version": d.version,
                    "tier": d.tier,
                    "reason": d.reason,
                })
            })
            .collect();
        ok(json!({
            "objects": r.objects,
            "bytes": r.bytes,
            "damaged": damaged,
            "seconds": t.elapsed().as_secs_f64(),
        }))
    })
    .await
}

async fn purge(sh: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let t: Target = read_json(req).await?;
    blocking(move || purge_now(&sh, t)).await
}

fn purge_now(sh: &Shared, t: Target) -> Answer {
    if t.action.is_some() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "purge takes no action (did you mean /v1/migrate?)",
        ));
    }
    match selector(&t)? {
        Selector::Key(k) => {
            let deleted = sh.store.delete(&k).map_err(store_err)?;
            if !deleted {
                return Err(not_found(&k));
            }
            ok(json!({"deleted": 1}))
        }
        Selector::Prefix(p) => {
            if !t.confirm {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "confirmation_required",
                    format!(
                        "purging every object under prefix {:?} needs \"confirm\": true",
                        String::from_utf8_lossy(&p)
                    ),
                ));
            }
            let mut deleted = 0u64;
            each_key(sh, &p, |k| {
                if sh.store.delete(k).map_err(store_err)? {
                    deleted += 1;
                }
                Ok(())
            })?;
            tracing::info!(prefix = %p.escape_ascii(), deleted, "purged by prefix");
            ok(json!({"deleted": deleted}))
        }
    }
}

/// The body of `POST /v1/bans`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    expr: String,
}

fn ban_json(b: &objmapper_store::BanInfo) -> Value {
    json!({
        "expr": String::from_utf8_lossy(&b.expr),
        "expr_hex": hex(&b.expr),
        "stamp": b.stamp,
        "added": b.added_ns / 1_000_000_000,
        "added_ns": b.added_ns,
    })
}

fn bans_json(sh: &Shared) -> Value {
    let bans: Vec<Value> = sh.store.bans().iter().map(ban_json).collect();
    json!({ "count": bans.len(), "bans": bans })
}

async fn add_ban(sh: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let b: NewBan = read_json(req).await?;
    blocking(move || {
        let info = sh.store.ban(b.expr.as_bytes()).map_err(store_err)?;
        Ok(json_response(StatusCode::CREATED, &ban_json(&info)))
    })
    .await
}

async fn migrate(sh: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let t: Target = read_json(req).await?;
    blocking(move || migrate_now(&sh, t)).await
}

fn migrate_now(sh: &Shared, t: Target) -> Answer {
    let action = match t.action.as_deref() {
        Some(a @ ("promote" | "demote" | "pin" | "unpin")) => a.to_string(),
        other => {
            let mut e = err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                format!(
                    "action must be one of promote, demote, pin, unpin; got {}",
                    other.map_or("nothing".to_string(), |a| format!("{a:?}"))
                ),
            );
            e.field = Some("action".into());
            return Err(e);
        }
    };
    if t.confirm {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "migrate takes no confirm",
        ));
    }
    let (mut changed, mut skipped) = (0u64, 0u64);
    let mut apply = |k: &[u8]| -> Result<bool, ApiError> {
        let done = match action.as_str() {
            "promote" => {
                if sh.store.info(k).map_err(store_err)?.is_none() {
                    return Ok(false);
                }
                sh.store.promote(k).map_err(store_err)?
            }
            "demote" => match sh.store.demote(k).map_err(store_err)? {
                Demoted::Done => true,
                Demoted::Missing => return Ok(false),
                Demoted::Ephemeral => {
                    skipped += 1;
                    false
                }
                _ => false,
            },
            a => {
                let pin = a == "pin";
                let before = sh.store.info(k).map_err(store_err)?;
                let Some(before) = before else {
                    return Ok(false);
                };
                if !sh.store.set_pinned(k, pin).map_err(store_err)? {
                    return Ok(false);
                }
                before.meta.pinned != pin
            }
        };
        if done {
            changed += 1;
        }
        Ok(true)
    };
    let matched = match selector(&t)? {
        Selector::Key(k) => {
            if !apply(&k)? {
                return Err(not_found(&k));
            }
            1
        }
        Selector::Prefix(p) => {
            let mut matched = 0u64;
            each_key(sh, &p, |k| {
                if apply(k)? {
                    matched += 1;
                }
                Ok(())
            })?;
            matched
        }
    };
    ok(json!({"matched": matched, "changed": changed, "skipped": skipped}))
}

async fn patch_config(sh: &Shared, req: Request<Incoming>) -> Answer {
    let patch: RuntimeConfigPatch = read_json(req).await?;
    match runtime::apply(&sh.store, &patch) {
        Ok(applied) => ok(serde_json::to_value(&applied).unwrap_or(Value::Null)),
        Err(e) => {
            let mut a = err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                e.to_string(),
            );
            a.field = Some(e.field);
            Err(a)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stats, tiers, metrics

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn tiers_json(sh: &Shared) -> Value {
    let st = sh.store.stats();
    let tier = |t: &objmapper_store::TierStats, enabled: bool, dir: &Path| {
        json!({
            "enabled": enabled,
            "dir": dir.display().to_string(),
            "objects": t.objects,
            "bytes": t.bytes,
            "capacity_bytes": t.capacity_bytes,
            "free_bytes": t.capacity_bytes.saturating_sub(t.bytes),
            "max_objects": t.capacity_objects,
            "free_objects": t.capacity_objects.saturating_sub(t.objects),
            "fill_ratio": ratio(t.bytes, t.capacity_bytes),
            "hits": t.hits,
            "evictions": t.evictions,
        })
    };
    json!({
        "memory": tier(&st.memory, sh.store.memory_tier_enabled(), sh.store.mem_dir()),
        "disk": tier(&st.disk, true, sh.store.data_dir()),
    })
}

fn stats_json(sh: &Shared) -> Value {
    let st = sh.store.stats();
    let m = sh.metrics.snapshot();
    let mut requests = serde_json::Map::new();
    let mut latency = serde_json::Map::new();
    for op in 0..OPS {
        if m.requests[op] == 0 {
            continue;
        }
        let name = metrics::op_name(op).to_ascii_lowercase();
        requests.insert(name.clone(), json!(m.requests[op]));
        let mut cum = 0;
        let buckets: Vec<Value> = (0..BUCKETS)
            .map(|b| {
                cum += m.latency[op][b];
                let bound = metrics::bucket_bound_seconds(b);
                json!([
                    if bound.is_finite() {
                        json!(bound)
                    } else {
                        json!("+Inf")
                    },
                    cum
                ])
            })
            .collect();
        latency.insert(
            name,
            json!({
                "count": m.requests[op],
                "sum_seconds": m.latency_sum_ns[op] as f64 / 1e9,
                "buckets": buckets,
            }),
        );
    }
    let mut errors = serde_json::Map::new();
    for s in 0..STATUSES {
        if m.errors[s] > 0 {
            let name = metrics::status_name(s).unwrap_or("UNKNOWN");
            errors.insert(name.to_ascii_lowercase(), json!(m.errors[s]));
        }
    }
    json!({
        "uptime_seconds": sh.metrics.started.elapsed().as_secs(),
        "objects": st.objects,
        "bytes": st.bytes,
        "tiers": tiers_json(sh),
        "hits": st.hits,
        "misses": st.misses,
        "hit_ratio": ratio(st.hits, st.hits + st.misses),
        "evictions": {"memory": st.memory.evictions, "disk": st.disk.evictions},
        "promotions": st.promotions,
        "flushes": st.flushes,
        "flush_errors": st.flush_errors,
        "expirations": st.expirations,
        "bans": {
            "active": st.bans_active,
            "added": st.bans_added,
            "objects_removed": st.ban_removals,
        },
        "no_space": st.no_space,
        "corrupt_objects": {
            "size": st.corrupt_size,
            "checksum": st.corrupt_checksum,
            "missing": st.corrupt_missing,
        },
        "mem_write_fallbacks": st.mem_write_fallbacks,
        "scrub": {
            "objects": st.scrub_objects,
            "bytes": st.scrub_bytes,
            "damage": st.scrub_damage,
            "passes": st.scrub_passes,
            "last_pass_unix": st.scrub_last_pass_secs,
        },
        "dirty": st.dirty,
        "requests": requests,
        "errors": errors,
        "connections": {
            "open": sh.connections.load(Ordering::Relaxed),
            "accepted": sh.metrics.accepted.load(Ordering::Relaxed),
        },
        "latency": latency,
        "poisoned": st.poisoned,
    })
}

/// The Prometheus text exposition (format 0.0.4).
pub(crate) fn metrics_text(sh: &Shared) -> String {
    let st = sh.store.stats();
    let m = sh.metrics.snapshot();
    let mut o = String::with_capacity(8192);
    let head = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut o,
        "objmapper_up",
        "gauge",
        "1 while the server answers.",
    );
    o.push_str("objmapper_up 1\n");
    head(
        &mut o,
        "objmapper_build_info",
        "gauge",
        "The server's version, as a label.",
    );
    let _ = writeln!(
        o,
        "objmapper_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    head(
        &mut o,
        "objmapper_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        o,
        "objmapper_uptime_seconds {}",
        sh.metrics.started.elapsed().as_secs_f64()
    );
    head(
        &mut o,
        "objmapper_requests_total",
        "counter",
        "Requests answered on the object listeners, by op.",
    );
    for op in 0..OPS {
        if m.requests[op] > 0 || matches!(metrics::op_name(op), "GET" | "PUT" | "DELETE" | "HEAD") {
            let _ = writeln!(
                o,
                "objmapper_requests_total{{op=\"{}\"}} {}",
                metrics::op_name(op).to_ascii_lowercase(),
                m.requests[op]
            );
        }
    }
    head(
        &mut o,
        "objmapper_errors_total",
        "counter",
        "Non-OK responses on the object listeners, by status.",
    );
    for s in 1..STATUSES {
        if let Some(name) = metrics::status_name(s) {
            let _ = writeln!(
                o,
                "objmapper_errors_total{{status=\"{}\"}} {}",
                name.to_ascii_lowercase(),
                m.errors[s]
            );
        }
    }
    head(
        &mut o,
        "objmapper_request_duration_seconds",
        "histogram",
        "Time from a request being decoded to its reply being queued, by op.",
    );
    for op in 0..OPS {
        if m.requests[op] == 0 {
            continue;
        }
        let name = metrics::op_name(op).to_ascii_lowercase();
        let mut cum = 0;
        for b in 0..BUCKETS {
            cum += m.latency[op][b];
            let bound = metrics::bucket_bound_seconds(b);
            let le = if bound.is_finite() {
                format!("{bound}")
            } else {
                "+Inf".into()
            };
            let _ = writeln!(
                o,
                "objmapper_request_duration_seconds_bucket{{op=\"{name}\",le=\"{le}\"}} {cum}"
            );
        }
        let _ = writeln!(
            o,
            "objmapper_request_duration_seconds_sum{{op=\"{name}\"}} {}",
            m.latency_sum_ns[op] as f64 / 1e9
        );
        let _ = writeln!(
            o,
            "objmapper_request_duration_seconds_count{{op=\"{name}\"}} {}",
            m.requests[op]
        );
    }
    head(
        &mut o,
        "objmapper_cache_hits_total",
        "counter",
        "Store GETs that found the object, by the tier that served it.",
    );
    let _ = writeln!(
        o,
        "objmapper_cache_hits_total{{tier=\"memory\"}} {}",
        st.memory.hits
    );
    let _ = writeln!(
        o,
        "objmapper_cache_hits_total{{tier=\"disk\"}} {}",
        st.disk.hits
    );
    head(
        &mut o,
        "objmapper_corrupt_objects_total",
        "counter",
        "Object versions dropped because their file was damaged, by reason: size (not the \
         recorded size), checksum (bytes not matching the recorded xxh3), missing (the file \
         was gone).",
    );
    for (reason, n) in [
        ("size", st.corrupt_size),
        ("checksum", st.corrupt_checksum),
        ("missing", st.corrupt_missing),
    ] {
        let _ = writeln!(
            o,
            "objmapper_corrupt_objects_total{{reason=\"{reason}\"}} {n}"
        );
    }
    for (name, help, n) in [
        (
            "objmapper_scrub_objects_total",
            "Object versions the scrubber (and POST /v1/verify) read and checked against \
             their recorded size and xxh3.",
            st.scrub_objects,
        ),
        (
            "objmapper_scrub_bytes_total",
            "Bytes the scrubber (and POST /v1/verify) read.",
            st.scrub_bytes,
        ),
        (
            "objmapper_scrub_damage_total",
            "Damaged object versions the scrubber (and POST /v1/verify) found and dropped \
             (also counted in objmapper_corrupt_objects_total).",
            st.scrub_damage,
        ),
        (
            "objmapper_scrub_passes_total",
            "Complete background scrubber passes over every tier.",
            st.scrub_passes,
        ),
    ] {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {n}");
    }
    head(
        &mut o,
        "objmapper_scrub_last_pass_timestamp_seconds",
        "gauge",
        "When the last complete scrubber pass ended (Unix seconds; 0 before the first).",
    );
    let _ = writeln!(
        o,
        "objmapper_scrub_last_pass_timestamp_seconds {}",
        st.scrub_last_pass_secs
    );
    head(
        &mut o,
        "objmapper_mem_write_fallbacks_total",
        "counter",
        "PUTs meant for the memory tier written to disk because its directory could not \
         take the file (removed or damaged while running, or its filesystem full).",
    );
    let _ = writeln!(
        o,
        "objmapper_mem_write_fallbacks_total {}",
        st.mem_write_fallbacks
    );
    head(
        &mut o,
        "objmapper_fs_full_total",
        "counter",
        "Writes refused because the tier's filesystem was full (ENOSPC or EDQUOT): \
         object files, journal appends.",
    );
    for (tier, t) in [("memory", &st.memory), ("disk", &st.disk)] {
        let _ = writeln!(
            o,
            "objmapper_fs_full_total{{tier=\"{tier}\"}} {}",
            t.full_errors
        );
    }
    head(
        &mut o,
        "objmapper_fs_full",
        "gauge",
        "1 while the tier's last write failed because its filesystem was full and no commit \
         to it has succeeded since.",
    );
    for (tier, t) in [("memory", &st.memory), ("disk", &st.disk)] {
        let _ = writeln!(
            o,
            "objmapper_fs_full{{tier=\"{tier}\"}} {}",
            u8::from(t.full)
        );
    }
    let simple: [(&str, &str, &str, f64); 12] = [
        (
            "objmapper_cache_misses_total",
            "counter",
            "Store GETs that found nothing.",
            st.misses as f64,
        ),
        (
            "objmapper_objects",
            "gauge",
            "Live objects, each key once.",
            st.objects as f64,
        ),
        (
            "objmapper_promotions_total",
            "counter",
            "Disk objects copied into the memory tier.",
            st.promotions as f64,
        ),
        (
            "objmapper_flushes_total",
            "counter",
            "Memory objects written to disk.",
            st.flushes as f64,
        ),
        (
            "objmapper_flush_errors_total",
            "counter",
            "Failed attempts to write a memory object to disk.",
            st.flush_errors as f64,
        ),
        (
            "objmapper_expirations_total",
            "counter",
            "Objects removed because they expired.",
            st.expirations as f64,
        ),
        (
            "objmapper_bans_active",
            "gauge",
            "Bans in force (not yet retired by the ban lurker).",
            st.bans_active as f64,
        ),
        (
            "objmapper_bans_added_total",
            "counter",
            "Bans added since the server started.",
            st.bans_added as f64,
        ),
        (
            "objmapper_ban_removals_total",
            "counter",
            "Objects removed because a ban covered them (by a read or the ban lurker).",
            st.ban_removals as f64,
        ),
        (
            "objmapper_no_space_total",
            "counter",
            "PUTs refused because no tier could make room.",
            st.no_space as f64,
        ),
        (
            "objmapper_dirty_objects",
            "gauge",
            "Memory objects not yet on disk.",
            st.dirty as f64,
        ),
        (
            "objmapper_journal_bytes",
            "gauge",
            "Size of the disk tier's journal.",
            st.journal_bytes as f64,
        ),
    ];
    for (name, kind, help, v) in simple {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    let per_tier: [(&str, &str, &str, u64, u64); 5] = [
        (
            "objmapper_tier_used_bytes",
            "gauge",
            "Bytes held by the tier.",
            st.memory.bytes,
            st.disk.bytes,
        ),
        (
            "objmapper_tier_capacity_bytes",
            "gauge",
            "The tier's capacity in bytes.",
            st.memory.capacity_bytes,
            st.disk.capacity_bytes,
        ),
        (
            "objmapper_tier_objects",
            "gauge",
            "Objects held by the tier.",
            st.memory.objects,
            st.disk.objects,
        ),
        (
            "objmapper_tier_max_objects",
            "gauge",
            "The tier's capacity in objects.",
            st.memory.capacity_objects,
            st.disk.capacity_objects,
        ),
        (
            "objmapper_evictions_total",
            "counter",
            "Objects evicted by the tier's policy.",
            st.memory.evictions,
            st.disk.evictions,
        ),
    ];
    for (name, kind, help, mem, disk) in per_tier {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name}{{tier=\"memory\"}} {mem}");
        let _ = writeln!(o, "{name}{{tier=\"disk\"}} {disk}");
    }
    head(
        &mut o,
        "objmapper_connections",
        "gauge",
        "Open object connections.",
    );
    let _ = writeln!(
        o,
        "objmapper_connections {}",
        sh.connections.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_connections_accepted_total",
        "counter",
        "Object connections accepted.",
    );
    let _ = writeln!(
        o,
        "objmapper_connections_accepted_total {}",
        sh.metrics.accepted.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_connections_denied_total",
        "counter",
        "Connections refused because the peer's uid/gid has no permission (allowlist), or a \
         TCP peer did not present the required token.",
    );
    let _ = writeln!(
        o,
        "objmapper_connections_denied_total {}",
        sh.denied.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_connections_over_limit_total",
        "counter",
        "Connections refused because max_connections was reached.",
    );
    let _ = writeln!(
        o,
        "objmapper_connections_over_limit_total {}",
        sh.over_limit.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_accept_fd_exhausted_total",
        "counter",
        "Times accepting object connections paused because the process (EMFILE, \
         RLIMIT_NOFILE) or the system (ENFILE) ran out of file descriptors; clients wait in \
         the listen backlog meanwhile.",
    );
    let _ = writeln!(
        o,
        "objmapper_accept_fd_exhausted_total {}",
        sh.accept.fd_exhausted.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_accept_paused",
        "gauge",
        "1 while accepting object connections is paused because accept(2) fails for want of \
         descriptors or memory (see /readyz for the reason).",
    );
    let _ = writeln!(
        o,
        "objmapper_accept_paused {}",
        u8::from(sh.accept.paused().is_some())
    );
    head(
        &mut o,
        "objmapper_tls_handshake_failures_total",
        "counter",
        "TCP connections closed because their TLS handshake failed or did not finish in time.",
    );
    let _ = writeln!(
        o,
        "objmapper_tls_handshake_failures_total {}",
        sh.tls_failures.load(Ordering::Relaxed)
    );
    head(
        &mut o,
        "objmapper_store_poisoned",
        "gauge",
        "1 once a failed fsync poisoned the store (writes refused until restart).",
    );
    let _ = writeln!(o, "objmapper_store_poisoned {}", u8::from(st.poisoned));
    o
}

fn metrics_response(sh: &Shared) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(metrics_text(sh))));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
