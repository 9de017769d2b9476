//! The runtime configuration: `GET /v1/config` and `PATCH /v1/config`.

use axum::body::Body;
use hyper::StatusCode;
use serde_json::Value;

use super::input::read_json;
use super::reply::{err, ok, Answer};
use super::router::Ready;
use crate::runtime::{self, RuntimeConfigPatch};

/// `GET /v1/config`: the configuration in effect.
pub(super) async fn get(Ready(sh): Ready) -> Answer {
    ok(serde_json::to_value(runtime::get(&sh.store)).unwrap_or(Value::Null))
}

/// `PATCH /v1/config`: all of the patch, or none of it.
pub(super) async fn patch(Ready(sh): Ready, body: Body) -> Answer {
    let patch: RuntimeConfigPatch = read_json(body).await?;
    match runtime::apply(&sh.store, &patch) {
        Ok(applied) => ok(serde_json::to_value(&applied).unwrap_or(Value::Null)),
        Err(e) => Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            e.to_string(),
        )
        .at(e.field)),
    }
}
