//! Bans: `POST /v1/bans` adds one, `GET /v1/bans` lists those in force.

use axum::body::Body;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::input::{hex, read_json};
use super::reply::{blocking, json_response, ok, store_err, Answer};
use super::router::Ready;
use crate::shared::Shared;

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

/// `GET /v1/bans`: the active bans, oldest first.
pub(super) async fn list(Ready(sh): Ready) -> Answer {
    ok(bans_json(&sh))
}

fn bans_json(sh: &Shared) -> Value {
    let bans: Vec<Value> = sh.store.bans().iter().map(ban_json).collect();
    json!({ "count": bans.len(), "bans": bans })
}

/// `POST /v1/bans`: adds a ban (on disk before the answer).
pub(super) async fn add(Ready(sh): Ready, body: Body) -> Answer {
    let b: NewBan = read_json(body).await?;
    blocking(move || {
        let info = sh.store.ban(b.expr.as_bytes()).map_err(store_err)?;
        Ok(json_response(StatusCode::CREATED, &ban_json(&info)))
    })
    .await
}
