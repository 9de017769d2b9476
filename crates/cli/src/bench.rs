//! `objmapper bench`: GET throughput and latency with real consumption of every object.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use objmapper_client::{
    Client, GetOptions, GetReply, Mode, PutOptions, Reply, Transport, V2Options,
};

use crate::args::BenchArgs;
use crate::connect::{open_stream, resolve, Conn, Target};
use crate::UsageError;

const KEY_PREFIX: &str = "objmapper-bench/";

/// `objmapper bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let (target, mode) = resolve(&a.conn)?;
    if a.pipeline.is_some() && target.transport() == Transport::Udp {
        return Err(UsageError(
            "--pipeline needs a stream transport (unix or tcp): over UDP each GET is one \
             datagram exchange"
                .into(),
        )
        .into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0) {
        return Err(UsageError(format!(
            "--duration {} must be a positive number",
            a.duration
        ))
        .into());
    }
    let size = usize::try_from(a.size)
        .map_err(|_| UsageError(format!("--size {} is too large for this machine", a.size)))?;
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..a.keys)
            .map(|i| format!("{KEY_PREFIX}{i}").into_bytes())
            .collect(),
    );

    // UDP cannot store objects: set up over TCP if given, else over the Unix socket.
    let setup_target = match &target {
        Target::Udp(_) => match &a.conn.tcp {
            Some(t) => Target::Tcp(t.clone()),
            None => Target::Unix(a.conn.socket.clone()),
        },
        t => t.clone(),
    };
    let mut setup = open_stream(&setup_target, None)?;
    populate(&mut setup, &keys, size, a.quiet)?;

    // One connection per thread, all connected before the clock starts.
    let v2 = a.pipeline.map(|n| V2Options {
        pipeline_depth: n,
        out_of_order: n > 1,
        fd_passing: true,
    });
    let mut conns = Vec::new();
    for _ in 0..a.connections {
        conns.push(Conn::open(&target, v2)?);
    }
    // What the server granted (the same for every connection).
    let depth = match (&conns[0], a.pipeline) {
        (Conn::Stream(c), Some(_)) => usize::from(c.depth()),
        _ => 1,
    };
    if let Conn::Stream(c) = &conns[0] {
        if !c.supports(mode) {
            anyhow::bail!(
                "--mode {mode} is not possible on this connection: the server did not grant \
                 FD_PASSING to the V2 session"
            );
        }
    }
    if let Some(n) = a.pipeline {
        if depth < usize::from(n) && !a.quiet {
            eprintln!("note: the server granted a pipeline depth of {depth} (asked for {n})");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicI64::new(
        a.requests
            .map_or(i64::MAX, |r| r.min(i64::MAX as u64) as i64),
    ));
    let start_line = Arc::new(Barrier::new(conns.len() + 1));
    let mut workers = Vec::new();
    let mut counters = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let done = Arc::new(AtomicU64::new(0));
        counters.push(done.clone());
        let w = Worker {
            conn,
            target: target.clone(),
            v2,
            pipeline: a.pipeline.map(|_| depth),
            mode,
            size,
            keys: keys.clone(),
            stop: stop.clone(),
            budget: budget.clone(),
            done,
            seed: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
        };
        let gate = start_line.clone();
        workers.push(
            thread::Builder::new()
                .name(format!("bench-{i}"))
                .spawn(move || {
                    gate.wait();
                    w.run()
                })
                .context("starting a benchmark thread")?,
        );
    }
    start_line.wait();
    let start = Instant::now();
    let deadline = a
        .requests
        .is_none()
        .then(|| start + Duration::from_secs_f64(a.duration));
    let mut next_report = start + Duration::from_secs(1);
    let mut printed = false;
    while !workers.iter().all(|w| w.is_finished()) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            stop.store(true, Ordering::Relaxed);
        }
        if now >= next_report {
            if !a.quiet {
                let ops: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let secs = now.duration_since(start).as_secs_f64();
                eprint!("\r[{secs:5.1}s] {ops} GETs, {:.0}/s   ", ops as f64 / secs);
                let _ = std::io::stderr().flush();
                printed = true;
            }
            next_report += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed().as_secs_f64();
    if printed {
        eprintln!();
    }

    let mut total = Outcome::default();
    for w in workers {
        let o = w.join().expect("benchmark thread panicked");
        total.ops += o.ops;
        total.errors += o.errors;
        total.hist.merge(&o.hist);
        if total.first_error.is_none() {
            total.first_error = o.first_error;
        }
    }
    if let Some(e) = &total.first_error {
        eprintln!("objmapper: bench: first error: {e}");
    }
    if !a.keep {
        for k in keys.iter() {
            let _ = setup.delete(k, false);
        }
    }

    let report = Report {
        mode,
        transport: target.transport(),
        pipeline: depth,
        protocol: if a.pipeline.is_some() { "v2" } else { "v1" },
        size: a.size,
        keys: a.keys,
        connections: a.connections,
        duration_s: elapsed,
        ops: total.ops,
        errors: total.errors,
        hist: total.hist,
    };
    println!(
        "{}",
        if a.json {
            report.json()
        } else {
            report.table()
        }
    );
    if total.ops == 0 && total.errors > 0 {
        anyhow::bail!("every request failed");
    }
    Ok(())
}

fn populate(c: &mut Client, keys: &[Vec<u8>], size: usize, quiet: bool) -> Result<()> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let payload: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    if !quiet {
        eprintln!("storing {} objects of {size} bytes...", keys.len());
    }
    for k in keys {
        c.put(k, &payload, &PutOptions::default())
            .with_context(|| format!("storing {}", String::from_utf8_lossy(k)))?;
    }
    Ok(())
}

struct Worker {
    conn: Conn,
    target: Target,
    v2: Option<V2Options>,
    /// Requests in flight per connection (V2 session), or `None` for one at a time (V1).
    pipeline: Option<usize>,
    mode: Mode,
    size: usize,
    keys: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicI64>,
    done: Arc<AtomicU64>,
    seed: u64,
}

#[derive(Default)]
struct Outcome {
    ops: u64,
    errors: u64,
    hist: Histogram,
    first_error: Option<String>,
}

impl Outcome {
    fn ok(&mut self, ns: u64, done: &AtomicU64) {
        self.ops += 1;
        self.hist.record(ns);
        done.store(self.ops, Ordering::Relaxed);
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Claims one request from the budget, unless the run is over.
fn take(stop: &AtomicBool, budget: &AtomicI64) -> bool {
    !stop.load(Ordering::Relaxed) && budget.fetch_sub(1, Ordering::Relaxed) > 0
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

impl Worker {
    fn run(mut self) -> Outcome {
        let mut out = Outcome::default();
        let mut rng = XorShift(self.seed | 1);
        let mut buf = Vec::with_capacity(self.size);
        loop {
            let more = match self.pipeline {
                Some(depth) => self.run_pipelined(depth, &mut rng, &mut buf, &mut out),
                None => self.run_sequential(&mut rng, &mut buf, &mut out),
            };
            if !more {
                return out;
            }
            // The connection broke with work left: reconnect, or give up.
            match Conn::open(&self.target, self.v2) {
                Ok(c) => self.conn = c,
                Err(_) => return out,
            }
        }
    }

    /// One request at a time. Returns true if the connection broke with work left.
    fn run_sequential(&mut self, rng: &mut XorShift, buf: &mut Vec<u8>, out: &mut Outcome) -> bool {
        let keys = self.keys.clone();
        let opts = GetOptions::default().mode(self.mode);
        while take(&self.stop, &self.budget) {
            let key = &keys[(rng.next() % keys.len() as u64) as usize];
            let t = Instant::now();
            let r = match &mut self.conn {
                Conn::Stream(c) => c
                    .get_with(key, &opts)
                    .map_err(|e| e.to_string())
                    .and_then(|r| consume(r, buf)),
                Conn::Udp(u) => u
                    .get(key)
                    .map(|(b, _)| std::hint::black_box(b).len())
                    .map_err(|e| e.to_string()),
            };
            let ns = elapsed_ns(t);
            match r.and_then(|len| self.check_len(len)) {
                Ok(()) => out.ok(ns, &self.done),
                Err(e) => {
                    out.error(e);
                    if !self.conn.usable() {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// `depth` requests in flight, replies in any order. Returns true if the connection
    /// broke with work left.
    fn run_pipelined(
        &mut self,
        depth: usize,
        rng: &mut XorShift,
        buf: &mut Vec<u8>,
        out: &mut Outcome,
    ) -> bool {
        let keys = self.keys.clone();
        let (size, stop, budget, done) = (self.size, &self.stop, &self.budget, &self.done);
        let opts = GetOptions::default().mode(self.mode);
        let Conn::Stream(c) = &mut self.conn else {
            unreachable!("pipelines run on stream connections")
        };
        let mut p = c.pipeline().with_depth(depth);
        let mut started: HashMap<u32, Instant> = HashMap::with_capacity(depth);
        let mut more = true;
        loop {
            while more && p.outstanding() < depth {
                if !take(stop, budget) {
                    more = false;
                    break;
                }
                let key = &keys[(rng.next() % keys.len() as u64) as usize];
                match p.submit_get(key, &opts) {
                    Ok(id) => {
                        started.insert(id, Instant::now());
                    }
                    Err(e) => {
                        out.error(e.to_string());
                        out.errors += p.outstanding() as u64;
                        return more;
                    }
                }
            }
            if p.outstanding() == 0 {
                return false;
            }
            match p.collect() {
                Ok((id, r)) => {
                    let ns = started.remove(&id).map_or(0, elapsed_ns);
                    let r = match r {
                        Ok(Reply::Get(g)) => consume(g, buf),
                        Ok(other) => Err(format!("unexpected reply {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    match r.and_then(|len| check_len(len, size)) {
                        Ok(()) => out.ok(ns, done),
                        Err(e) => out.error(e),
                    }
                }
                Err(e) => {
                    out.error(e.to_string());
                    out.errors += p.outstanding() as u64;
                    return more;
                }
            }
        }
    }

    fn check_len(&self, len: usize) -> Result<(), String> {
        check_len(len, self.size)
    }
}

/// Consumes a GET reply for real: every byte lands in `buf` (read from the fd, which is
/// then closed) or was received inline. Returns how many bytes there were.
fn consume(r: GetReply, buf: &mut Vec<u8>) -> Result<usize, String> {
    match r {
        GetReply::Fd(obj) => {
            obj.read_into(buf)
                .map_err(|e| format!("reading the fd: {e}"))?;
            Ok(buf.len())
        }
        GetReply::Bytes(bytes, _) => Ok(std::hint::black_box(bytes).len()),
    }
}

fn check_len(len: usize, size: usize) -> Result<(), String> {
    if len != size {
        return Err(format!("got {len} bytes, expected {size}"));
    }
    Ok(())
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Log-linear latency histogram: exact below 128 ns, then 64 buckets per power of two
/// (at most 1.6% relative error).
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() - SUB_BITS;
        ((u64::from(e) + 1) * SUB + (v >> e) - SUB) as usize
    }

    /// The midpoint of the values bucket `i` holds.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let e = i / SUB - 1;
        let m = i - e * SUB;
        (m << e) + ((1u64 << e) - 1) / 2
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

struct Report {
    mode: Mode,
    transport: Transport,
    /// Requests in flight per connection.
    pipeline: usize,
    /// "v1" or "v2".
    protocol: &'static str,
    size: u64,
    keys: u64,
    connections: u32,
    duration_s: f64,
    ops: u64,
    errors: u64,
    hist: Histogram,
}

impl Report {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.duration_s
    }
    fn mb_per_sec(&self) -> f64 {
        self.ops as f64 * self.size as f64 / 1e6 / self.duration_s
    }
    fn us(&self, q: f64) -> f64 {
        self.hist.quantile(q) as f64 / 1e3
    }

    fn table(&self) -> String {
        format!(
            "objmapper bench: {} mode over {} ({}, {} in flight), {} B objects, {} keys, \
             {} connection{}, {:.2} s\n\
             \x20 GETs          {}\n\
             \x20 ops/s         {:.0}\n\
             \x20 MB/s          {:.1}\n\
             \x20 errors        {}\n\
             \x20 latency (us)  p50 {:.1}   p99 {:.1}   p99.9 {:.1}   max {:.1}",
            self.mode,
            self.transport,
            self.protocol.to_uppercase(),
            self.pipeline,
            self.size,
            self.keys,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.duration_s,
            self.ops,
            self.ops_per_sec(),
            self.mb_per_sec(),
            self.errors,
            self.us(0.50),
            self.us(0.99),
            self.us(0.999),
            self.hist.max as f64 / 1e3,
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"mode\":\"{}\",\"transport\":\"{}\",\"protocol\":\"{}\",\"pipeline\":{},\
             \"size\":{},\"keys\":{},\"connections\":{},\"duration_s\":{:.3},\
             \"ops\":{},\"ops_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"p50_us\":{:.2},\
             \"p99_us\":{:.2},\"p999_us\":{:.2},\"max_us\":{:.2},\"errors\":{}}}",
            self.mode,
            match self.transport {
                Transport::Unix => "unix",
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            self.protocol,
            self.pipeline,
            self.size,
            self.keys,
            self.connections,
            self.duration_s,
            self.ops,
            self.ops_per_sec(),
            self.mb_per_sec(),
            self.us(0.50),
            self.us(0.99),
            self.us(0.999),
            self.hist.max as f64 / 1e3,
            self.errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..20_000u64).chain([1 << 20, 123_456_789, u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i < BUCKETS);
            assert!(i >= prev, "index not monotonic at {v}");
            prev = i;
            let r = Histogram::value(i);
            let err = (r as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 64.0, "value {v} -> bucket {i} -> {r}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let close = |a: u64, b: u64| (a as f64 - b as f64).abs() / b as f64 <= 0.02;
        assert!(close(h.quantile(0.5), 500_000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.99), 990_000), "{}", h.quantile(0.99));
        assert!(close(h.quantile(0.999), 999_000), "{}", h.quantile(0.999));
        assert_eq!(h.max, 1_000_000);
        let mut o = Histogram::default();
        o.record(5_000_000);
        h.merge(&o);
        assert_eq!((h.total, h.max), (1001, 5_000_000));
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn json_report_has_the_documented_fields() {
        let mut hist = Histogram::default();
        hist.record(10_000);
        let r = Report {
            mode: Mode::Fd,
            transport: Transport::Unix,
            pipeline: 8,
            protocol: "v2",
            size: 4096,
            keys: 10,
            connections: 2,
            duration_s: 1.0,
            ops: 1,
            errors: 0,
            hist,
        };
        let j = r.json();
        for f in [
            "\"ops_per_sec\":",
            "\"mb_per_sec\":",
            "\"p50_us\":",
            "\"p99_us\":",
            "\"p999_us\":",
            "\"max_us\":",
            "\"errors\":0",
            "\"mode\":\"fd\"",
            "\"transport\":\"unix\"",
            "\"protocol\":\"v2\"",
            "\"pipeline\":8",
            "\"size\":4096",
            "\"connections\":2",
            "\"duration_s\":",
        ] {
            assert!(j.contains(f), "{f} missing in {j}");
        }
    }
}
