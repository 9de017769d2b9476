//! `POST /v1/remote/flush`, `POST /v1/remote/check` and `POST /v1/remote/sweep`: the
//! remote tier's controls (docs/ADMIN.md). Each answers 404 `no_remote` when no remote
//! tier is configured.

use std::time::Duration;

use axum::body::Body;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::input::{hex, read_json_or_default, unhex};
use super::reply::{blocking, err, ok, Answer, ApiError};
use super::router::Ready;
use crate::shared::Shared;

fn no_remote() -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "no_remote",
        "no remote tier is configured (serve --remote s3://BUCKET/PREFIX)",
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlushBody {
    /// Seconds to wait for the queue to drain.
    #[serde(default)]
    timeout_seconds: Option<f64>,
}

/// `POST /v1/remote/flush`: send every pending upload, delete and purge now, and wait
/// (up to `timeout_seconds`, default 60) for the queue to drain.
pub(super) async fn flush(Ready(sh): Ready, body: Body) -> Answer {
    let b: FlushBody = read_json_or_default(body).await?;
    let wait = b.timeout_seconds.unwrap_or(60.0);
    if !(0.0..=3600.0).contains(&wait) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "timeout_seconds must be between 0 and 3600",
        ));
    }
    blocking(move || flush_now(&sh, Duration::from_secs_f64(wait))).await
}

fn flush_now(sh: &Shared, wait: Duration) -> Answer {
    let r = sh.remote.as_ref().ok_or_else(no_remote)?;
    let drained = r.flush(wait);
    let st = r.state();
    ok(json!({
        "drained": drained,
        "queue": {"objects": st.queue_objects, "bytes": st.queue_bytes},
        "invalidations_pending": st.invalidations_pending,
        "reachable": st.reachable(),
        "state": st.health.as_str(),
        "last_error": st.last_error,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    prefix_hex: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /v1/remote/check`: compare local objects (under a prefix, at most `limit`,
/// default 10 000) with the remote tier.
pub(super) async fn check(Ready(sh): Ready, body: Body) -> Answer {
    let b: CheckBody = read_json_or_default(body).await?;
    let prefix = match (&b.prefix, &b.prefix_hex) {
        (Some(p), None) => p.as_bytes().to_vec(),
        (None, Some(h)) => unhex(h).ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "prefix_hex is not hex",
            )
        })?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give prefix or prefix_hex, not both",
            ))
        }
    };
    let limit = b.limit.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&limit) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be between 1 and 1000000",
        ));
    }
    blocking(move || {
        let r = sh.remote.as_ref().ok_or_else(no_remote)?;
        let c = r.check(&sh.store, &prefix, limit);
        let keys = |v: &[Box<[u8]>]| v.iter().map(|k| hex(k)).collect::<Vec<_>>();
        ok(json!({
            "checked": c.checked,
            "same": c.same,
            "pending": keys(&c.pending),
            "missing": keys(&c.missing),
            "differ": keys(&c.differ),
            "errors": c.errors,
            "counts": {"pending": c.counts[0], "missing": c.counts[1], "differ": c.counts[2]},
        }))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepBody {
    /// Names whose versions to read, at most.
    #[serde(default)]
    names: Option<usize>,
    /// The name hash to go on after (a previous answer's `next`).
    #[serde(default)]
    after: Option<String>,
    /// Leave the orphaned data objects for this request (a later slice of a sweep
    /// whose first request swept them).
    #[serde(default)]
    skip_orphans: bool,
}

/// `POST /v1/remote/sweep`: sweep the bucket now (orphaned data objects unless
/// `skip_orphans`, then the expired and purged versions of up to `names` names, default
/// 10 000, after `after`).
pub(super) async fn sweep(Ready(sh): Ready, body: Body) -> Answer {
    let b: SweepBody = read_json_or_default(body).await?;
    let after = b.after.unwrap_or_default();
    if !(after.is_empty() || after.len() == 64 && after.bytes().all(|c| c.is_ascii_hexdigit())) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "after must be a previous answer's next: 64 hex digits",
        ));
    }
    let names = b.names.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&names) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "names must be between 1 and 1000000",
        ));
    }
    blocking(move || {
        let r = sh.remote.as_ref().ok_or_else(no_remote)?;
        let s = r.sweep_now(!b.skip_orphans, &after, names).map_err(|e| {
            err(
                StatusCode::BAD_GATEWAY,
                "remote_failed",
                format!("the sweep stopped: {e}"),
            )
        })?;
        ok(json!({
            "orphans": {
                "listed": s.orphans.listed,
                "deleted": s.orphans.deleted,
                "bytes": s.orphans.bytes,
            },
            "read": s.reclaim.read,
            "reclaimed": s.reclaim.reclaimed,
            "reclaimed_bytes": s.reclaim.bytes,
            "next": s.reclaim.cursor,
        }))
    })
    .await
}
