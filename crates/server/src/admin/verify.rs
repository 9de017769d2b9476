//! `POST /v1/verify`: every object (under a prefix) read now and checked.

use axum::body::Body;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::input::{hex, read_json, unhex_field};
use super::reply::{blocking, err, ok, store_err, Answer};
use super::router::Ready;

/// The body of `POST /v1/verify`: `{}`, or one of `prefix`, `prefix_hex`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    prefix: Option<String>,
    prefix_hex: Option<String>,
}

/// `POST /v1/verify`: reads every object (under a prefix) now and checks it against its
/// record, dropping damaged versions (docs/ADMIN.md).
pub(super) async fn verify(Ready(sh): Ready, body: Body) -> Answer {
    let b: VerifyBody = read_json(body).await?;
    let prefix = match (b.prefix, b.prefix_hex) {
        (None, None) => None,
        (Some(p), None) => Some(p.into_bytes()),
        (None, Some(h)) => Some(unhex_field("prefix_hex", &h)?),
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
