//! `objmapper top`: ops/s, hit ratio, tier fill and eviction rate, from `GET /v1/stats`
//! every interval, in the spirit of varnishstat. On a terminal it is a full-screen
//! ratatui view (q, Esc or Ctrl-C quits); otherwise each frame is one plain
//! `key=value` line (or, with --json, one JSON object), so it can be logged or piped.
//! The first frame's rates are averages since the server started; later frames' are
//! over the last interval.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Gauge, Paragraph, Row, Sparkline, Table};
use serde_json::{json, Value};

use crate::admin::{checked, human_bytes, request, Endpoint};
use crate::args::TopArgs;
use crate::UsageError;

/// The counters a frame needs.
#[derive(Clone, Default)]
struct Sample {
    ops: u64,
    by_op: Vec<(String, u64)>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn sample(s: &Value) -> Sample {
    let by_op: Vec<(String, u64)> = s["requests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), num(v)))
                .collect()
        })
        .unwrap_or_default();
    Sample {
        ops: by_op.iter().map(|(_, n)| n).sum(),
        by_op,
        hits: num(&s["hits"]),
        misses: num(&s["misses"]),
        evictions: num(&s["evictions"]["memory"]) + num(&s["evictions"]["disk"]),
    }
}

/// One tier's line.
struct TierView {
    name: &'static str,
    objects: u64,
    bytes: u64,
    capacity: u64,
    fill_pct: f64,
    evictions: u64,
}

/// What one frame shows.
struct Frame {
    ops_per_s: f64,
    ops_by_op: Vec<(String, f64, u64)>,
    hit_ratio: f64,
    evictions_per_s: f64,
    connections: u64,
    objects: u64,
    uptime: u64,
    poisoned: bool,
    tiers: Vec<TierView>,
}

fn frame(s: &Value, now: &Sample, base: &Sample, dt: f64) -> Frame {
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt.max(1e-9);
    let (dh, dm) = (
        now.hits.saturating_sub(base.hits),
        now.misses.saturating_sub(base.misses),
    );
    let tiers = ["memory", "disk"]
        .into_iter()
        .map(|t| {
            let x = &s["tiers"][t];
            TierView {
                name: t,
                objects: num(&x["objects"]),
                bytes: num(&x["bytes"]),
                capacity: num(&x["capacity_bytes"]),
                fill_pct: x["fill_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                evictions: num(&x["evictions"]),
            }
        })
        .collect();
    Frame {
        ops_per_s: rate(now.ops, base.ops),
        ops_by_op: now
            .by_op
            .iter()
            .map(|(op, n)| {
                let before = base.by_op.iter().find(|(o, _)| o == op).map_or(0, |x| x.1);
                (op.clone(), rate(*n, before), *n)
            })
            .collect(),
        hit_ratio: if dh + dm == 0 {
            0.0
        } else {
            dh as f64 / (dh + dm) as f64
        },
        evictions_per_s: rate(now.evictions, base.evictions),
        connections: num(&s["connections"]["open"]),
        objects: num(&s["objects"]),
        uptime: num(&s["uptime_seconds"]),
        poisoned: s["poisoned"].as_bool() == Some(true),
        tiers,
    }
}

/// Polls the API and turns each answer into a frame.
struct Poller {
    ep: Endpoint,
    prev: Option<(Instant, Sample)>,
}

impl Poller {
    fn next(&mut self) -> Result<Frame> {
        let at = Instant::now();
        let s = checked(request(&self.ep, "GET", "/v1/stats", None)?)?;
        let now = sample(&s);
        let f = match &self.prev {
            Some((t, base)) => frame(&s, &now, base, at.duration_since(*t).as_secs_f64()),
            None => frame(
                &s,
                &now,
                &Sample::default(),
                num(&s["uptime_seconds"]).max(1) as f64,
            ),
        };
        self.prev = Some((at, now));
        Ok(f)
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
    let interval = Duration::from_secs_f64(a.interval);
    let mut poller = Poller {
        ep: Endpoint::of(&a.admin),
        prev: None,
    };
    if std::io::stdout().is_terminal() && !a.admin.json {
        return tui(&mut poller, frames, interval, a.interval);
    }
    let mut out = std::io::stdout().lock();
    let mut drawn = 0u64;
    loop {
        let started = Instant::now();
        let f = poller.next()?;
        let fill = |i: usize| f.tiers[i].fill_pct;
        if a.admin.json {
            let v = json!({
                "ops_per_second": f.ops_per_s,
                "hit_ratio": f.hit_ratio,
                "memory_fill_percent": fill(0),
                "disk_fill_percent": fill(1),
                "evictions_per_second": f.evictions_per_s,
                "connections": f.connections,
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "ops_per_s={:.1} hit_ratio={:.3} mem_fill_pct={:.1} disk_fill_pct={:.1} \
                 evictions_per_s={:.1} connections={}",
                f.ops_per_s,
                f.hit_ratio,
                fill(0),
                fill(1),
                f.evictions_per_s,
                f.connections
            )?;
        }
        out.flush().context("writing to stdout")?;
        drawn += 1;
        if frames.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// The full-screen view. The terminal is restored on every way out, errors included.
fn tui(poller: &mut Poller, frames: Option<u64>, interval: Duration, secs: f64) -> Result<()> {
    let mut terminal = ratatui::init();
    let r = tui_loop(&mut terminal, poller, frames, interval, secs);
    ratatui::restore();
    r
}

fn tui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    poller: &mut Poller,
    frames: Option<u64>,
    interval: Duration,
    secs: f64,
) -> Result<()> {
    let mut history: Vec<u64> = Vec::new();
    let mut drawn = 0u64;
    let title = format!(
        " objmapper top — {} — every {secs:.1}s — q quits ",
        poller.ep
    );
    loop {
        let started = Instant::now();
        let f = poller.next()?;
        history.push(f.ops_per_s.round() as u64);
        if history.len() > 512 {
            history.remove(0);
        }
        terminal.draw(|fr| draw(fr, &title, &f, &history))?;
        drawn += 1;
        if frames.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
        // Wait out the interval, answering keys.
        while let Some(left) = interval.checked_sub(started.elapsed()) {
            if !event::poll(left)? {
                break;
            }
            if let Event::Key(k) = event::read()? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if k.kind == KeyEventKind::Press
                    && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                {
                    return Ok(());
                }
            }
        }
    }
}

fn draw(fr: &mut ratatui::Frame, title: &str, f: &Frame, history: &[u64]) {
    let outer = Block::bordered().title(title.to_string());
    let area = outer.inner(fr.area());
    fr.render_widget(outer, fr.area());
    let [head, spark, mem, disk, ops] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(4),
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Min(3),
    ])
    .areas(area);
    let mut line1 = vec![
        format!("ops/s {:>10.1}", f.ops_per_s).bold(),
        format!("   hit ratio {:>5.1}%", f.hit_ratio * 100.0).into(),
        format!("   evictions/s {:>8.1}", f.evictions_per_s).into(),
        format!("   connections {}", f.connections).into(),
    ];
    if f.poisoned {
        line1.push("   STORE POISONED (read-only)".red().bold());
    }
    let line2 = Line::from(format!("{} objects, up {}s", f.objects, f.uptime)).dim();
    fr.render_widget(Paragraph::new(vec![Line::from(line1), line2]), head);
    let start = history.len().saturating_sub(spark.width as usize);
    fr.render_widget(
        Sparkline::default()
            .block(Block::new().title("ops/s"))
            .data(&history[start..])
            .style(Style::new().fg(Color::Cyan)),
        spark,
    );
    for (t, at) in f.tiers.iter().zip([mem, disk]) {
        let label = format!(
            "{:.1}%  {} of {}, {} objects, {} evictions",
            t.fill_pct,
            human_bytes(t.bytes),
            human_bytes(t.capacity),
            t.objects,
            t.evictions
        );
        fr.render_widget(
            Gauge::default()
                .block(Block::bordered().title(format!(" {} tier ", t.name)))
                .gauge_style(Style::new().fg(if t.fill_pct > 90.0 {
                    Color::Red
                } else {
                    Color::Green
                }))
                .ratio((t.fill_pct / 100.0).clamp(0.0, 1.0))
                .label(label),
            at,
        );
    }
    let rows: Vec<Row> = f
        .ops_by_op
        .iter()
        .map(|(op, rate, total)| {
            Row::new(vec![
                op.clone(),
                format!("{rate:>12.1}"),
                format!("{total:>14}"),
            ])
        })
        .collect();
    fr.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(14),
                Constraint::Length(16),
            ],
        )
        .header(Row::new(vec!["OP", "       PER SEC", "          TOTAL"]).bold())
        .block(Block::new().title("requests")),
        ops,
    );
}
