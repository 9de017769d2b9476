//! The runtime configuration: `GET /v1/config`, `PATCH /v1/config`, and `POST /v1/reload`
//! (re-reading the embedding program's configuration file).

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

/// `POST /v1/reload`: runs the embedding program's reload (re-reading its configuration
/// file) and answers once it is over: 200 `{"status":"reloaded","message":...}` when the
/// settings are in force, 422 `reload_failed` when they were refused (the running ones
/// stay), 501 `no_reload` when the program installed no reload.
pub(super) async fn reload(Ready(sh): Ready) -> Answer {
    let Some(handler) = sh.reload.read().clone() else {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "no_reload",
            "this server has no configuration to re-read (only `objmapper serve` has one)",
        ));
    };
    match tokio::task::spawn_blocking(move || handler()).await {
        Ok(Ok(message)) => ok(serde_json::json!({"status": "reloaded", "message": message})),
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
