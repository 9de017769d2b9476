//! `objmapper remote flush`, `check` and `sweep`: the remote tier's controls, through
//! the management API (`POST /v1/remote/flush`, `/v1/remote/check`, `/v1/remote/sweep`).

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::admin::{
    checked, human_bytes, key_bytes, key_field, print_json, request_within, Endpoint,
};
use crate::args::{RemoteAction, RemoteArgs};
use crate::fmt::bytes_text;

/// A key the API gives in hex, as the other listings show keys (bytes that are not
/// printable escaped), followed by the hex; the hex alone if it is not hex.
fn readable_key(hex: &str) -> String {
    let bytes: Option<Vec<u8>> = hex
        .len()
        .is_multiple_of(2)
        .then(|| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    match bytes {
        Some(b) => format!("{} (hex {hex})", bytes_text(&b)),
        None => format!("hex {hex}"),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// POSTs `body` to `path`; the answer comes when the server is done (no client timeout:
/// the body bounds the wait), and a non-2xx status is an error.
fn post(ep: &Endpoint, path: &str, body: &Value) -> Result<Value> {
    checked(request_within(ep, "POST", path, Some(body), None)?)
}

pub fn run(a: RemoteArgs) -> Result<()> {
    match a.action {
        RemoteAction::Flush { wait, admin } => {
            let ep = Endpoint::of(&admin);
            let body = json!({"timeout_seconds": wait});
            // The answer comes when the queue drained or the wait ran out.
            let r = post(&ep, "/v1/remote/flush", &body)?;
            if admin.json {
                print_json(&r)?;
            } else {
                println!(
                    "{}: {} uploads ({} bytes) and {} deletes or purges still pending{}",
                    if r["drained"] == true {
                        "flushed"
                    } else {
                        "not drained"
                    },
                    n(&r["queue"]["objects"]),
                    n(&r["queue"]["bytes"]),
                    n(&r["invalidations_pending"]),
                    match r["state"].as_str() {
                        Some("refused") =>
                            " (the remote tier refuses this host: check the \
                                           credentials and the bucket's policy)",
                        Some("no_bucket") => " (the bucket does not exist at the endpoint)",
                        Some("unguarded") =>
                            " (the store does not honour conditional writes: nothing is \
                                           sent to it; see the server's log)",
                        Some("conflicting") =>
                            " (writes over existing objects keep being refused with 412: \
                                           likely a gateway whose ETags If-Match does not \
                                           take; see the server's log)",
                        _ if r["reachable"] == false => " (the remote tier does not answer)",
                        _ => "",
                    }
                );
            }
            if r["drained"] != true {
                bail!("the remote tier's queue did not drain within {wait} s");
            }
        }
        RemoteAction::Sweep { names, admin } => {
            let ep = Endpoint::of(&admin);
            // One request per slice of names, each going on from the last's `next`; the
            // orphans are swept by the first.
            let mut total = json!({"orphans": {"deleted": 0, "bytes": 0}, "read": 0,
                                   "reclaimed": 0, "reclaimed_bytes": 0});
            let mut after = String::new();
            for i in 0.. {
                let mut body = json!({"names": names, "after": after});
                if i > 0 {
                    body["skip_orphans"] = json!(true);
                }
                let r = post(&ep, "/v1/remote/sweep", &body)?;
                for f in ["deleted", "bytes"] {
                    total["orphans"][f] = json!(n(&total["orphans"][f]) + n(&r["orphans"][f]));
                }
                for f in ["read", "reclaimed", "reclaimed_bytes"] {
                    total[f] = json!(n(&total[f]) + n(&r[f]));
                }
                after = r["next"].as_str().unwrap_or("").to_owned();
                if after.is_empty() {
                    break;
                }
            }
            if admin.json {
                print_json(&total)?;
            } else {
                println!(
                    "swept: {} data objects no pointer named deleted ({}); {} names read, {} \
                     expired or purged versions replaced by tombstones ({})",
                    n(&total["orphans"]["deleted"]),
                    human_bytes(n(&total["orphans"]["bytes"])),
                    n(&total["read"]),
                    n(&total["reclaimed"]),
                    human_bytes(n(&total["reclaimed_bytes"])),
                );
            }
        }
        RemoteAction::Check {
            prefix,
            limit,
            admin,
        } => {
            let ep = Endpoint::of(&admin);
            let mut body = json!({"limit": limit});
            if let Some(p) = &prefix {
                let (name, val) = key_field("prefix", &key_bytes(p));
                body[name] = val;
            }
            let r = post(&ep, "/v1/remote/check", &body)?;
            if admin.json {
                print_json(&r)?;
            } else {
                println!(
                    "checked {}: {} the same on the remote tier, {} pending upload, {} missing there, \
                     {} with another version there, {} lookups failed",
                    n(&r["checked"]),
                    n(&r["same"]),
                    count(&r, "pending"),
                    count(&r, "missing"),
                    count(&r, "differ"),
                    n(&r["errors"]),
                );
                for (what, field) in [("missing", "missing"), ("differs", "differ")] {
                    let listed = r[field].as_array().map_or(0, Vec::len) as u64;
                    for k in r[field].as_array().into_iter().flatten() {
                        println!("{what}: {}", readable_key(k.as_str().unwrap_or("")));
                    }
                    if count(&r, field) > listed {
                        println!("{what}: ... and {} more", count(&r, field) - listed);
                    }
                }
            }
            let missing = count(&r, "missing");
            if missing > 0 || n(&r["errors"]) > 0 {
                bail!(
                    "{missing} object(s) missing on the remote tier, {} lookup(s) failed",
                    n(&r["errors"])
                );
            }
        }
    }
    Ok(())
}

/// How many keys of `field` (`pending`, `missing`, `differ`) a check found: its
/// `counts`, else (an older server) the keys it listed, at most 100.
fn count(r: &serde_json::Value, field: &str) -> u64 {
    r["counts"][field]
        .as_u64()
        .unwrap_or_else(|| r[field].as_array().map_or(0, Vec::len) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_hex_read_as_the_other_listings_show_them() {
        assert_eq!(readable_key("2f61"), "/a (hex 2f61)");
        assert_eq!(readable_key("2f0aff"), "/\\n\\xff (hex 2f0aff)");
        assert_eq!(readable_key("2f6"), "hex 2f6");
        assert_eq!(readable_key("zz"), "hex zz");
    }
}
