//! `objmapper top`: ops/s, hit ratio, tier fill and eviction rate, from `GET /v1/stats`
//! every interval. On a terminal each frame redraws the screen (ANSI clear + home);
//! otherwise each frame is one plain `key=value` line, so it can be logged or piped.
//! The first frame's rates are averages since the server started; later frames' are
//! over the last interval.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::admin::{checked, human_bytes, request, table, Endpoint};
use crate::args::TopArgs;
use crate::UsageError;

/// The counters a frame needs.
#[derive(Clone, Copy, Default)]
struct Sample {
    ops: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

fn sample(s: &Value) -> Sample {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Sample {
        ops: s["requests"]
            .as_object()
            .map_or(0, |m| m.values().map(n).sum()),
        hits: n(&s["hits"]),
        misses: n(&s["misses"]),
        evictions: n(&s["evictions"]["memory"]) + n(&s["evictions"]["disk"]),
    }
}

pub fn run(a: TopArgs) -> Result<()> {
    if !(a.interval.is_finite() && a.interval > 0.0) {
        return Err(UsageError(format!(
            "--interval {} must be a positive number",
            a.interval
        ))
        .into());
    }
    let frames = if a.once { Some(1) } else { a.iterations };
    let ep = Endpoint::of(&a.admin);
    let tty = std::io::stdout().is_terminal();
    let interval = Duration::from_secs_f64(a.interval);
    let mut prev: Option<(Instant, Sample)> = None;
    let mut drawn = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let started = Instant::now();
        let s = checked(request(&ep, "GET", "/v1/stats", None)?)?;
        let now = sample(&s);
        let (dt, base) = match prev {
            Some((t, p)) => (started.duration_since(t).as_secs_f64(), p),
            None => (
                s["uptime_seconds"].as_u64().unwrap_or(0).max(1) as f64,
                Sample::default(),
            ),
        };
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt.max(1e-9);
        let (dh, dm) = (
            now.hits.saturating_sub(base.hits),
            now.misses.saturating_sub(base.misses),
        );
        let hit_ratio = if dh + dm == 0 {
            0.0
        } else {
            dh as f64 / (dh + dm) as f64
        };
        let fill = |t: &str| s["tiers"][t]["fill_ratio"].as_f64().unwrap_or(0.0) * 100.0;
        let ops = rate(now.ops, base.ops);
        let evps = rate(now.evictions, base.evictions);
        if a.admin.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "ops_per_second": ops,
                    "hit_ratio": hit_ratio,
                    "memory_fill_percent": fill("memory"),
                    "disk_fill_percent": fill("disk"),
                    "evictions_per_second": evps,
                    "connections": s["connections"]["open"],
                })
            )?;
        } else if tty {
            let rows: Vec<Vec<String>> = ["memory", "disk"]
                .iter()
                .map(|t| {
                    let x = &s["tiers"][*t];
                    vec![
                        t.to_string(),
                        x["objects"].as_u64().unwrap_or(0).to_string(),
                        human_bytes(x["bytes"].as_u64().unwrap_or(0)),
                        human_bytes(x["capacity_bytes"].as_u64().unwrap_or(0)),
                        format!("{:.1}%", fill(t)),
                        x["evictions"].as_u64().unwrap_or(0).to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "\x1b[H\x1b[2J objmapper top — {ep} — every {:.1}s (Ctrl-C quits)\n\n\
                 ops/s {ops:>12.1}    hit ratio {:>6.1}%    evictions/s {evps:>8.1}    connections {}\n\n{}",
                a.interval,
                hit_ratio * 100.0,
                s["connections"]["open"].as_u64().unwrap_or(0),
                table(
                    &["TIER", "OBJECTS", "USED", "CAPACITY", "FILL", "EVICTIONS"],
                    &rows,
                    &[false, true, true, true, true, true],
                )
            )?;
        } else {
            writeln!(
                out,
                "ops_per_s={ops:.1} hit_ratio={hit_ratio:.3} mem_fill_pct={:.1} disk_fill_pct={:.1} evictions_per_s={evps:.1} connections={}",
                fill("memory"),
                fill("disk"),
                s["connections"]["open"].as_u64().unwrap_or(0),
            )?;
        }
        out.flush().context("writing to stdout")?;
        drawn += 1;
        if frames.is_some_and(|f| drawn >= f) {
            return Ok(());
        }
        prev = Some((started, now));
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
