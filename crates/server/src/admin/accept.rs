//! The management listeners: the accept loop (Unix socket and optional loopback TCP),
//! the peer-credential check of each Unix-socket connection and of each of its requests,
//! and hyper's HTTP/1.1 serving of a connection with the router as its service.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Router;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::Service as _;
use hyper::StatusCode;
use hyper_util::service::TowerToHyperService;

use super::reply::err;
use super::{router, AdminCtx};
use crate::access::Perms;

pub(super) async fn serve(
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
    let app = router::router(shared.clone());
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
                            Ok(peer) => spawn_conn(io, app.clone(), shared.clone(), Some(peer)),
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
                        spawn_conn(hyper_util::rt::TokioIo::new(s), app.clone(), shared.clone(), None)
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

/// Serves one connection: each request is checked against the allowlist in force (for a
/// Unix-socket peer), then handed to the router.
fn spawn_conn<I>(io: I, app: Router, shared: Arc<AdminCtx>, peer: Option<AdminPeer>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let refusal = peer.and_then(|p| admin_refusal(p, &shared));
            let app = app.clone();
            async move {
                if let Some(msg) = refusal {
                    // Revoked while the connection was open: refuse, and close it.
                    let mut r = err(StatusCode::FORBIDDEN, "forbidden", msg).into_response();
                    r.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                    return Ok::<_, Infallible>(r);
                }
                app.call(req).await
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
