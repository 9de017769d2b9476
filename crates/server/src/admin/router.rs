//! Which handler answers which path and method. axum's [`Router`] does the matching: an
//! unknown path reaches the fallback (404 `no_such_route`), a known path with a method it
//! does not take gets 405 with an `Allow` header from the route's own method list. The
//! [`gate`] around the whole router keeps the documented shape of those answers and
//! answers 503 `not_ready` while the store is being recovered.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, StatusCode};

use super::reply::{err, ApiError};
use super::{bans, config, metrics, objects, remote, status, verify, AdminCtx};
use crate::shared::Shared;

/// The management API's routes (docs/ADMIN.md, "Endpoints").
pub(super) fn router(ctx: Arc<AdminCtx>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/stats", get(status::stats))
        .route("/v1/tiers", get(status::tiers))
        .route("/v1/objects", get(objects::list))
        // `/v1/objects/` names the empty key (400 `bad_key`), which the wildcard does not
        // match.
        .route("/v1/objects/", get(objects::info).delete(objects::delete))
        .route(
            "/v1/objects/{*key}",
            get(objects::info).delete(objects::delete),
        )
        .route("/v1/purge", post(objects::purge))
        .route("/v1/migrate", post(objects::migrate))
        .route("/v1/bans", get(bans::list).post(bans::add))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/config", get(config::get).patch(config::patch))
        .route("/v1/reload", post(config::reload))
        .route("/v1/remote/flush", post(remote::flush))
        .route("/v1/remote/check", post(remote::check))
        .route("/v1/remote/sweep", post(remote::sweep))
        .fallback(no_such_route)
        .with_state(ctx.clone());
    // `Router::layer` would wrap each method's handler inside its route, where the 405
    // has no `Allow` yet: the gate wraps the whole router instead.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(ctx, gate))
}

async fn no_such_route(req: Request) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "no_such_route",
        format!("no endpoint {}; see docs/ADMIN.md", req.uri().path()),
    )
}

/// Runs around the router. Until the store is open only `GET /healthz` passes (the
/// rest, unknown paths included, is 503 `not_ready`). Afterwards, a 405 from the router
/// gets the JSON error body, and its `Allow` lists the methods as docs/ADMIN.md does
/// (`GET, PATCH`).
///
/// No endpoint takes HEAD, but axum would answer it wherever GET is routed; a HEAD is
/// routed as a method no endpoint takes, so it gets the 405 (or 404) that any other
/// method not listed for the path gets, and HEAD never appears in `Allow`.
async fn gate(State(ctx): State<Arc<AdminCtx>>, mut req: Request, next: Next) -> Response {
    if ctx.shared.get().is_none()
        && !(req.method() == Method::GET && req.uri().path() == "/healthz")
    {
        return not_ready(&ctx).into_response();
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if method == Method::HEAD {
        *req.method_mut() = unrouted_method();
    }
    let r = next.run(req).await;
    if r.status() != StatusCode::METHOD_NOT_ALLOWED {
        return r;
    }
    let allow = r
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .collect::<Vec<_>>()
        .join(", ");
    let mut a = err(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}; allowed: {allow}"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        a.headers_mut().insert(ALLOW, v);
    }
    a
}

/// A method that no route takes (an extension method, RFC 9110 section 9.1).
fn unrouted_method() -> Method {
    Method::from_bytes(b"OBJMAPPER-UNROUTED").expect("a method is a token")
}

fn not_ready(ctx: &AdminCtx) -> ApiError {
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!(
            "the server is recovering its store (for {:.1} s so far); try again shortly",
            ctx.started.elapsed().as_secs_f64()
        ),
    )
}

/// The running server's state, for the handlers that need it ([`gate`] has already
/// turned requests away while there is none; this says the same if one got through).
pub(super) struct Ready(pub(super) Arc<Shared>);

impl FromRequestParts<Arc<AdminCtx>> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        ctx: &Arc<AdminCtx>,
    ) -> Result<Self, Self::Rejection> {
        ctx.shared
            .get()
            .map(|sh| Ready(sh.clone()))
            .ok_or_else(|| not_ready(ctx))
    }
}
