//! What a handler answers: a JSON body, or an [`ApiError`] that becomes
//! `{"error":{"code":...,"message":...,"field":...}}` with its status (docs/ADMIN.md,
//! "Conventions").

use std::fmt::Write as _;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use objmapper_proto::Status;
use objmapper_store::StoreError;
use serde_json::{json, Value};

use crate::wire;

/// An error answer: status, code, message (and optionally the field at fault).
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) field: Option<String>,
}

pub(super) fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
        field: None,
    }
}

impl ApiError {
    /// The same error, naming the field at fault.
    pub(super) fn at(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }
}

/// What every handler returns.
pub(super) type Answer = Result<Response, ApiError>;

/// `v` as the body (with a final newline), `content-type: application/json`.
pub(super) fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// 200 with `v`.
pub(super) fn ok(v: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &v))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            e["field"] = Value::String(f);
        }
        json_response(self.status, &json!({ "error": e }))
    }
}

pub(super) fn not_found(key: &[u8]) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no object under key {:?}", String::from_utf8_lossy(key)),
    )
}

/// A store error as the status and code docs/ADMIN.md gives it: the HTTP status follows
/// from the error's wire status (`wire::store_error_status`, the one map of store errors),
/// by [`http_status`].
pub(super) fn store_err(e: StoreError) -> ApiError {
    let status = wire::store_error_status(&e);
    let http = http_status(status);
    match status {
        Status::ReadOnly => err(
            http,
            "read_only",
            format!("{e}; restart the server once the disk is healthy"),
        ),
        Status::BadRequest => {
            // Two store errors share the status; the code names which.
            let code = match &e {
                StoreError::InvalidBan(_) => "bad_ban",
                _ => "bad_key",
            };
            err(http, code, e.to_string())
        }
        Status::NoSpace => err(http, "no_space", e.to_string()),
        Status::Busy => err(http, "too_many_bans", e.to_string()),
        _ => err(http, "internal", error_chain(&e)),
    }
}

/// The HTTP status of a store error's wire status. No admin action is conditional, so a
/// failed precondition is an internal error here.
fn http_status(status: Status) -> StatusCode {
    match status {
        Status::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
        Status::BadRequest => StatusCode::BAD_REQUEST,
        Status::NoSpace => StatusCode::CONFLICT,
        Status::Busy => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// Runs a store-heavy action on tokio's blocking pool, so that a long purge or migration
/// does not hold up other admin requests (a `/metrics` scrape, `/healthz`).
pub(super) async fn blocking(f: impl FnOnce() -> Answer + Send + 'static) -> Answer {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the admin task failed: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every store error's HTTP status and code, pinned (docs/ADMIN.md, "Conventions").
    #[test]
    fn every_store_error_has_its_http_status_and_code() {
        let ban = objmapper_store::BanExpr::parse(b"").unwrap_err();
        let cases = [
            (
                StoreError::Io {
                    context: "x".into(),
                    source: std::io::Error::other("y"),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                StoreError::Poisoned,
                StatusCode::SERVICE_UNAVAILABLE,
                "read_only",
            ),
            (
                StoreError::InvalidKey { len: 0 },
                StatusCode::BAD_REQUEST,
                "bad_key",
            ),
            (
                StoreError::Closed,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                StoreError::NoSpace("full".into()),
                StatusCode::CONFLICT,
                "no_space",
            ),
            (
                StoreError::PreconditionFailed("v".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                StoreError::InvalidBan(ban),
                StatusCode::BAD_REQUEST,
                "bad_ban",
            ),
            (
                StoreError::TooManyBans { active: 1, max: 1 },
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_bans",
            ),
        ];
        for (e, status, code) in cases {
            let what = format!("{e:?}");
            let a = store_err(e);
            assert_eq!((a.status, a.code), (status, code), "{what}");
        }
        let a = store_err(StoreError::Io {
            context: "x".into(),
            source: std::io::Error::other("y"),
        });
        assert_eq!(a.message, "x: y");
        let a = store_err(StoreError::Poisoned);
        assert!(
            a.message
                .ends_with("; restart the server once the disk is healthy"),
            "{}",
            a.message
        );
    }
}
