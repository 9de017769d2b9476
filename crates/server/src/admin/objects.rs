//! Objects: `GET /v1/objects` (a page of the listing), `GET` and `DELETE
//! /v1/objects/{key}`, `POST /v1/purge` and `POST /v1/migrate` (one key or every key
//! under a prefix).

use axum::body::Body;
use hyper::{StatusCode, Uri};
use objmapper_store::{Demoted, ListCursor, ObjectInfo, Tier};
use serde_json::{json, Value};

use super::input::{hex, path_key, query_params, read_json, unhex, Selector, Target};
use super::reply::{blocking, err, not_found, ok, store_err, Answer, ApiError};
use super::router::Ready;
use crate::shared::Shared;

/// Default and largest page of `GET /v1/objects`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

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
        "filled": m.filled,
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

/// `GET /v1/objects?prefix=&cursor=&limit=`.
pub(super) async fn list(Ready(sh): Ready, uri: Uri) -> Answer {
    list_now(&sh, uri.query().unwrap_or(""))
}

fn list_now(sh: &Shared, query: &str) -> Answer {
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

/// The key of `/v1/objects/{key}`, percent-decoded to bytes (a route matches only such
/// paths).
fn key_of(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    path_key(uri.path().strip_prefix("/v1/objects/").unwrap_or(""))
}

/// `GET /v1/objects/{key}`: the object's full metadata.
pub(super) async fn info(Ready(sh): Ready, uri: Uri) -> Answer {
    let key = key_of(&uri)?;
    match sh.store.info(&key).map_err(store_err)? {
        Some(o) => {
            let mut v = object_json(&o, true);
            if let Some(r) = &sh.remote {
                // Whether this version still waits for the remote tier (`objmapper remote
                // check` asks the tier itself).
                let pending = !o.meta.ephemeral && r.upload_pending(&o.meta.key, o.meta.version);
                v["remote"] = json!({"upload_pending": pending});
            }
            ok(v)
        }
        None => Err(not_found(&key)),
    }
}

/// `DELETE /v1/objects/{key}`.
pub(super) async fn delete(Ready(sh): Ready, uri: Uri) -> Answer {
    let key = key_of(&uri)?;
    if sh.store.delete(&key).map_err(store_err)? {
        ok(json!({"deleted": true}))
    } else {
        Err(not_found(&key))
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

/// `POST /v1/purge`.
pub(super) async fn purge(Ready(sh): Ready, body: Body) -> Answer {
    let t: Target = read_json(body).await?;
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
    match t.selector()? {
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
            // One purge (and, with a remote tier, one ban and one event for every
            // host), not one delete per key.
            let deleted = sh.store.purge_prefix(&p).map_err(store_err)?;
            tracing::info!(prefix = %p.escape_ascii(), deleted, "purged by prefix");
            ok(json!({"deleted": deleted}))
        }
    }
}

/// `POST /v1/migrate`.
pub(super) async fn migrate(Ready(sh): Ready, body: Body) -> Answer {
    let t: Target = read_json(body).await?;
    blocking(move || migrate_now(&sh, t)).await
}

fn migrate_now(sh: &Shared, t: Target) -> Answer {
    let action = match t.action.as_deref() {
        Some(a @ ("promote" | "demote" | "pin" | "unpin")) => a.to_string(),
        other => {
            return Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                format!(
                    "action must be one of promote, demote, pin, unpin; got {}",
                    other.map_or("nothing".to_string(), |a| format!("{a:?}"))
                ),
            )
            .at("action"));
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
    let matched = match t.selector()? {
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
