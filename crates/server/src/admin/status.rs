//! Health and state: `GET /healthz`, `/readyz`, `/v1/stats`, `/v1/tiers`.

use std::path::Path;
use std::sync::atomic::Ordering;

use axum::extract::RawQuery;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{err, ok, Answer};
use super::router::Ready;
use crate::metrics::{self, BUCKETS, OPS, STATUSES};
use crate::shared::Shared;

/// `GET /healthz`: the process is alive (answered during recovery too).
pub(super) async fn healthz() -> Answer {
    ok(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while the server takes writes, else 503 with the reason. With
/// `?verbose`, a 200 also carries `details`: what is not wrong enough to refuse traffic
/// but an operator should know (a memory tier that is not in RAM).
pub(super) async fn readyz(Ready(sh): Ready, RawQuery(query): RawQuery) -> Answer {
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
    let verbose = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if !verbose {
        return ok(json!({"status": "ready"}));
    }
    let mut details = json!({"memory_tier": memory_tier_details(&sh)});
    if let Some(r) = &sh.remote {
        // The host serves without its remote tier: a failing one is a detail, not
        // "not ready" (a load balancer must not drain every host when the bucket is down).
        let st = r.state();
        details["remote"] = json!({
            "name": st.name,
            "state": st.health.as_str(),
            "last_error": st.last_error,
        });
    }
    ok(json!({"status": "ready", "details": details}))
}

/// Where the memory tier keeps its files, and a warning when that is not RAM.
fn memory_tier_details(sh: &Shared) -> Value {
    let m = sh.store.stats().memory;
    if !sh.store.memory_tier_enabled() {
        return json!({"enabled": false});
    }
    let mut v = json!({
        "enabled": true,
        "dir": sh.store.mem_dir().display().to_string(),
        "filesystem": m.filesystem,
        "in_ram": m.in_ram,
        "huge_pages": m.huge_pages,
    });
    if !m.in_ram {
        v["warning"] = json!(format!(
            "the memory tier's directory is on {}, not in RAM: every object it holds is \
             written to that disk and PUTs are several times slower; point --mem-dir at a \
             tmpfs such as /dev/shm",
            m.filesystem
        ));
    }
    v
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// `GET /v1/tiers`.
pub(super) async fn tiers(Ready(sh): Ready) -> Answer {
    ok(tiers_json(&sh))
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
            "filesystem": t.filesystem,
            "in_ram": t.in_ram,
            "huge_pages": t.huge_pages,
            "body_cache_objects": t.body_cache_objects,
            "body_cache_bytes": t.body_cache_bytes,
        })
    };
    json!({
        "memory": tier(&st.memory, sh.store.memory_tier_enabled(), sh.store.mem_dir()),
        "disk": tier(&st.disk, true, sh.store.data_dir()),
    })
}

/// `GET /v1/stats`.
pub(super) async fn stats(Ready(sh): Ready) -> Answer {
    ok(stats_json(&sh))
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
        "host_id": sh.cfg.host_id,
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
            "kept_for_fills": st.bans_kept_for_fills,
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
        "remote": sh.remote.as_ref().map(|r| remote_json(&r.state())),
    })
}

/// The remote tier's part of `/v1/stats` (`null` without one). Never a credential.
fn remote_json(r: &crate::remote::RemoteState) -> Value {
    let errors: serde_json::Map<String, Value> = crate::remote::ERROR_KINDS
        .iter()
        .zip(r.counters.errors)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.as_str().to_string(), json!(n)))
        .collect();
    json!({
        "name": r.name,
        "host": r.host,
        "reachable": r.reachable(),
        "state": r.health.as_str(),
        "last_error": r.last_error,
        "hits": r.client.hits,
        "misses": r.client.misses,
        "misses_remembered": r.client.cached_misses,
        "fills": r.counters.fills,
        "fills_refused": r.counters.fills_refused,
        "fetches_running": r.fetches_running,
        "fetches_refused": r.counters.fetches_refused,
        "errors": errors,
        "bytes_up": r.client.bytes_up,
        "bytes_down": r.client.bytes_down,
        "queue": {
            "objects": r.queue_objects,
            "bytes": r.queue_bytes,
            "oldest_seconds": r.queue_oldest_seconds,
            "running": r.uploads_running,
            "dropped": r.uploads_dropped,
        },
        "invalidations_pending": r.invalidations_pending,
        "purges_known": r.client.purges_known,
        "received": {
            "deletes": r.counters.deletes_received,
            "purges": r.counters.purges_received,
            "same_host_id": r.client.same_host_id,
        },
        "swept": {
            "orphans": r.counters.orphans,
            "orphan_bytes": r.counters.orphan_bytes,
            "reclaimed": r.counters.reclaimed,
            "reclaimed_bytes": r.counters.reclaimed_bytes,
            "purges_retired": r.counters.purges_retired,
        },
        "last_poll_unix_ns": r.last_poll_ns,
    })
}
