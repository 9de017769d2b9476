//! `objmapper bench`: throughput and latency of a GET/PUT/HEAD/DELETE mix, with real
//! consumption of every object a GET returns.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags};

use objmapper_client::{
    Client, DeleteOptions, Error as ClientError, GetOptions, GetReply, Mode, Pipeline, PutOptions,
    Reply, Transport, V2Options,
};

use crate::args::BenchArgs;
use crate::connect::{open_stream, resolve, Conn, Target};
use crate::UsageError;

const KEY_PREFIX: &str = "objmapper-bench/";

/// One kind of request in the mix. The discriminant indexes [`OpMix`] and the per-op
/// counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get = 0,
    Put = 1,
    Head = 2,
    Delete = 3,
}

const OPS: [(Op, &str); 4] = [
    (Op::Get, "get"),
    (Op::Put, "put"),
    (Op::Head, "head"),
    (Op::Delete, "delete"),
];

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(OPS[*self as usize].1)
    }
}

/// Percentages of GET, PUT, HEAD and DELETE (`--ops get=90,put=10`); they add up to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpMix(pub [u32; 4]);

impl Default for OpMix {
    fn default() -> Self {
        OpMix([100, 0, 0, 0])
    }
}

impl OpMix {
    /// The op for a uniform random `r`.
    fn pick(&self, r: u64) -> Op {
        let mut x = (r % 100) as u32;
        for (op, _) in OPS {
            let w = self.0[op as usize];
            if x < w {
                return op;
            }
            x -= w;
        }
        Op::Get
    }
}

impl std::fmt::Display for OpMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (op, name) in OPS {
            let w = self.0[op as usize];
            if w > 0 {
                write!(f, "{}{name}={w}", if first { "" } else { "," })?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Parses `--ops`: `get=90,put=10`, `put` alone (= `put=100`), and so on; op names get,
/// put, head, delete; the percentages must add up to 100.
pub fn parse_ops(s: &str) -> Result<OpMix, String> {
    let mut w = [0u32; 4];
    let mut seen = [false; 4];
    for part in s.split(',') {
        let (name, pct) = match part.split_once('=') {
            Some((n, p)) => (n.trim(), Some(p.trim())),
            None => (part.trim(), None),
        };
        let Some(&(op, _)) = OPS.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) else {
            return Err(format!(
                "unknown op {name:?} in {s:?}: use get, put, head or delete, as in get=90,put=10"
            ));
        };
        let i = op as usize;
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("{name} appears twice in {s:?}"));
        }
        w[i] = match pct {
            None => 100,
            Some(p) => p
                .strip_suffix('%')
                .unwrap_or(p)
                .parse::<u32>()
                .ok()
                .filter(|&p| p <= 100)
                .ok_or_else(|| format!("{p:?} in {s:?} is not a percentage from 0 to 100"))?,
        };
    }
    let sum: u32 = w.iter().sum();
    if sum != 100 {
        return Err(format!("the percentages in {s:?} add up to {sum}, not 100"));
    }
    Ok(OpMix(w))
}

/// Which keys the requests go to (`--key-dist`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key i (from 0) drawn with probability proportional to 1 / (i + 1)^alpha.
    Zipf(f64),
}

/// The Zipf exponent of a bare `--key-dist zipf`.
pub const DEFAULT_ZIPF_ALPHA: f64 = 0.99;

impl std::fmt::Display for KeyDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(a) => write!(f, "zipf:{a}"),
        }
    }
}

/// Parses `--key-dist`: `uniform`, `zipf` (alpha 0.99) or `zipf:ALPHA` (0 < ALPHA <= 10).
pub fn parse_key_dist(s: &str) -> Result<KeyDist, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "uniform" {
        return Ok(KeyDist::Uniform);
    }
    let alpha = match t.strip_prefix("zipf") {
        Some("") => DEFAULT_ZIPF_ALPHA,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|a| a.is_finite() && *a > 0.0 && *a <= 10.0)
            .ok_or_else(|| format!("{s:?}: the Zipf exponent must be a number in (0, 10]"))?,
        None => {
            return Err(format!(
                "{s:?} is not a key distribution: use uniform or zipf[:ALPHA]"
            ))
        }
    };
    Ok(KeyDist::Zipf(alpha))
}

/// Draws key indices: uniform, or Zipf by binary search in a precomputed CDF.
struct KeyPicker {
    n: usize,
    cdf: Option<Vec<f64>>,
}

impl KeyPicker {
    fn new(dist: KeyDist, n: usize) -> KeyPicker {
        let cdf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf(alpha) => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (0..n)
                    .map(|i| {
                        acc += 1.0 / ((i + 1) as f64).powf(alpha);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                Some(cdf)
            }
        };
        KeyPicker { n, cdf }
    }

    fn pick(&self, rng: &mut XorShift) -> usize {
        match &self.cdf {
            None => (rng.next() % self.n as u64) as usize,
            Some(cdf) => {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|&c| c < u).min(self.n - 1)
            }
        }
    }
}

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
    if a.positional_reads && target.transport() != Transport::Unix {
        return Err(UsageError(
            "--positional-reads needs the Unix socket: only there do fds travel".into(),
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
    if target.transport() == Transport::Udp && a.threads.is_some_and(|t| t < a.connections) {
        return Err(UsageError(
            "--threads below --connections needs a stream transport (unix or tcp): UDP \
             connections run one per thread"
                .into(),
        )
        .into());
    }
    if target.transport() == Transport::Udp && a.ops.0[Op::Get as usize] != 100 {
        return Err(UsageError(format!(
            "--ops {}: over UDP the benchmark sends GETs only",
            a.ops
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
            Some(t) => Target::Tcp(t.clone(), Default::default()),
            None => Target::Unix(a.conn.socket.clone()),
        },
        t => t.clone(),
    };
    let mut setup = open_stream(&setup_target, None)?;
    let payload = Arc::new(payload(size));
    if !a.stored {
        populate(&mut setup, &keys, &payload, a.quiet)?;
    }
    let picker = Arc::new(KeyPicker::new(a.key_dist, keys.len()));

    // One connection per thread, all connected before the clock starts.
    // A V2 session with --pipeline, or to make the POSITIONAL_READS promise (the bench
    // only ever preads a received fd).
    let v2 = (a.pipeline.is_some() || a.positional_reads).then(|| {
        let n = a.pipeline.unwrap_or(1);
        V2Options {
            pipeline_depth: n,
            out_of_order: n > 1,
            fd_passing: true,
            positional_reads: a.positional_reads,
        }
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
    // One thread per connection, or `--threads` threads that each drive their share.
    let threads = a
        .threads
        .map_or(conns.len(), |t| (t as usize).min(conns.len()));
    let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % threads].push(c);
    }
    let start_line = Arc::new(Barrier::new(threads + 1));
    let mut workers = Vec::new();
    let mut counters = Vec::new();
    for (i, mut group) in groups.into_iter().enumerate() {
        let conn = group.remove(0);
        let done = Arc::new(AtomicU64::new(0));
        counters.push(done.clone());
        let w = Worker {
            conn,
            extra: group,
            target: target.clone(),
            v2,
            pipeline: a.pipeline.map(|_| depth),
            cork: a.cork,
            mode,
            size,
            keys: keys.clone(),
            picker: picker.clone(),
            ops: a.ops,
            payload: payload.clone(),
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
                eprint!(
                    "\r[{secs:5.1}s] {ops} requests, {:.0}/s   ",
                    ops as f64 / secs
                );
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
        total.misses += o.misses;
        for (t, n) in total.per_op.iter_mut().zip(o.per_op) {
            *t += n;
        }
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
        protocol: if v2.is_some() { "v2" } else { "v1" },
        size: a.size,
        keys: a.keys,
        ops_mix: a.ops,
        key_dist: a.key_dist,
        connections: a.connections,
        threads,
        duration_s: elapsed,
        ops: total.ops,
        per_op: total.per_op,
        misses: total.misses,
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

/// The bytes every benchmark object holds (and every PUT writes).
fn payload(size: usize) -> Vec<u8> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    (0..size).map(|_| rng.next() as u8).collect()
}

fn populate(c: &mut Client, keys: &[Vec<u8>], payload: &[u8], quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!(
            "storing {} objects of {} bytes...",
            keys.len(),
            payload.len()
        );
    }
    for k in keys {
        c.put(k, payload, &PutOptions::default())
            .with_context(|| format!("storing {}", String::from_utf8_lossy(k)))?;
    }
    Ok(())
}

struct Worker {
    conn: Conn,
    /// More connections this thread drives with poll(2) (`--threads` below
    /// `--connections`); empty for one connection per thread.
    extra: Vec<Conn>,
    target: Target,
    v2: Option<V2Options>,
    /// Requests in flight per connection (V2 session), or `None` for one at a time (V1).
    pipeline: Option<usize>,
    /// Pipelined requests are gathered and written together (`--cork`).
    cork: bool,
    mode: Mode,
    size: usize,
    keys: Arc<Vec<Vec<u8>>>,
    picker: Arc<KeyPicker>,
    ops: OpMix,
    payload: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicI64>,
    done: Arc<AtomicU64>,
    seed: u64,
}

#[derive(Default)]
struct Outcome {
    ops: u64,
    /// Completed requests per op (GET, PUT, HEAD, DELETE).
    per_op: [u64; 4],
    /// GET/HEAD that found no object, DELETE that removed none.
    misses: u64,
    errors: u64,
    hist: Histogram,
    first_error: Option<String>,
}

impl Outcome {
    fn ok(&mut self, ns: u64, op: Op, hit: bool, done: &AtomicU64) {
        self.ops += 1;
        self.per_op[op as usize] += 1;
        self.misses += u64::from(!hit);
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
        if !self.extra.is_empty() {
            let depth = self.pipeline.unwrap_or(1);
            self.run_multiplexed(depth, &mut rng, &mut buf, &mut out);
            return out;
        }
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
        let payload = self.payload.clone();
        let opts = GetOptions::default().mode(self.mode);
        let put = PutOptions::default();
        while take(&self.stop, &self.budget) {
            let op = self.ops.pick(rng.next());
            let key = &keys[self.picker.pick(rng)];
            let t = Instant::now();
            let r = match &mut self.conn {
                Conn::Stream(c) => match op {
                    Op::Get => hit_or(c.get_with(key, &opts))
                        .and_then(|r| r.map_or(Ok(None), |r| consume(r, buf).map(Some))),
                    Op::Put => c
                        .put(key, &payload, &put)
                        .map(|_| None)
                        .map_err(|e| e.to_string()),
                    Op::Head => hit_or(c.head(key)).map(|m| m.map(|_| 0)),
                    Op::Delete => c
                        .delete(key, false)
                        .map(|b| b.then_some(0))
                        .map_err(|e| e.to_string()),
                },
                Conn::Udp(u) => {
                    hit_or(u.get(key)).map(|r| r.map(|(b, _)| std::hint::black_box(b).len()))
                }
            };
            let ns = elapsed_ns(t);
            match r.and_then(|len| self.check(op, len)) {
                Ok(hit) => out.ok(ns, op, hit, &self.done),
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
        let cork = self.cork;
        let (ops, picker, payload) = (self.ops, self.picker.clone(), self.payload.clone());
        let opts = GetOptions::default().mode(self.mode);
        let Conn::Stream(c) = &mut self.conn else {
            unreachable!("pipelines run on stream connections")
        };
        let mut p = c.pipeline().with_depth(depth);
        // --cork: the requests refilled after each read go out in one write, as
        // redis-benchmark writes its -P batch (docs/BENCHMARKS.md, "What the T5 client
        // costs").
        if let Err(e) = p.set_corked(cork) {
            out.error(e.to_string());
            return false;
        }
        let mut started: HashMap<u32, (Instant, Op)> = HashMap::with_capacity(depth);
        let mut more = true;
        loop {
            while more && p.outstanding() < depth {
                if !take(stop, budget) {
                    more = false;
                    break;
                }
                let op = ops.pick(rng.next());
                let key = &keys[picker.pick(rng)];
                let submitted = submit(&mut p, op, key, &payload, &opts);
                match submitted {
                    Ok(id) => {
                        started.insert(id, (Instant::now(), op));
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
            // One reply (waiting for it); corked, also every one already read with it, so
            // that their refills go out together.
            let mut got = p.collect().map(Some);
            loop {
                match got {
                    Ok(Some((id, r))) => {
                        let (t, op) = started.remove(&id).unwrap_or((Instant::now(), Op::Get));
                        let ns = elapsed_ns(t);
                        match reply_len(op, r, buf).and_then(|len| check(op, len, size)) {
                            Ok(hit) => out.ok(ns, op, hit, done),
                            Err(e) => out.error(e),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.error(e.to_string());
                        out.errors += p.outstanding() as u64;
                        return more;
                    }
                }
                if !cork || p.outstanding() == 0 || !p.has_buffered() {
                    break;
                }
                got = p.try_collect();
            }
        }
    }

    fn check(&self, op: Op, len: Option<usize>) -> Result<bool, String> {
        check(op, len, self.size)
    }

    /// Drives every connection of this thread from one loop, as redis-benchmark does: each
    /// keeps `depth` requests in flight (1 on V1), and poll(2) says which have replies. A
    /// connection that breaks is not reopened; its outstanding requests count as errors.
    fn run_multiplexed(
        &mut self,
        depth: usize,
        rng: &mut XorShift,
        buf: &mut Vec<u8>,
        out: &mut Outcome,
    ) {
        let (size, stop, budget, done) = (self.size, &self.stop, &self.budget, &self.done);
        let (ops, picker, payload) = (self.ops, self.picker.clone(), self.payload.clone());
        let keys = self.keys.clone();
        let opts = GetOptions::default().mode(self.mode);
        let mut pipes: Vec<Pipeline<'_>> = std::iter::once(&mut self.conn)
            .chain(self.extra.iter_mut())
            .map(|c| match c {
                Conn::Stream(c) => c.pipeline().with_depth(depth),
                Conn::Udp(_) => unreachable!("--threads needs stream connections"),
            })
            .collect();
        let mut started: Vec<HashMap<u32, (Instant, Op)>> = vec![HashMap::new(); pipes.len()];
        let mut live = vec![true; pipes.len()];
        let mut more = true;
        let mut ready = Vec::with_capacity(pipes.len());
        loop {
            for (i, p) in pipes.iter_mut().enumerate() {
                while live[i] && more && p.outstanding() < depth {
                    if !take(stop, budget) {
                        more = false;
                        break;
                    }
                    let op = ops.pick(rng.next());
                    let key = &keys[picker.pick(rng)];
                    let submitted = submit(p, op, key, &payload, &opts);
                    match submitted {
                        Ok(id) => {
                            started[i].insert(id, (Instant::now(), op));
                        }
                        Err(e) => {
                            out.error(e.to_string());
                            out.errors += p.outstanding() as u64;
                            live[i] = false;
                        }
                    }
                }
            }
            let waiting = |i: usize, p: &Pipeline<'_>| live[i] && p.outstanding() > 0;
            ready.clear();
            ready.extend(
                (0..pipes.len()).filter(|&i| waiting(i, &pipes[i]) && pipes[i].has_buffered()),
            );
            if ready.is_empty() {
                let mut polled = Vec::with_capacity(pipes.len());
                let mut fds = Vec::with_capacity(pipes.len());
                for (i, p) in pipes.iter().enumerate() {
                    if waiting(i, p) {
                        polled.push(i);
                        fds.push(PollFd::new(p, PollFlags::IN));
                    }
                }
                if fds.is_empty() {
                    return;
                }
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        out.error(format!("poll: {e}"));
                        return;
                    }
                }
                ready.extend(
                    polled
                        .iter()
                        .zip(&fds)
                        .filter(|(_, f)| !f.revents().is_empty())
                        .map(|(&i, _)| i),
                );
            }
            for &i in &ready {
                let p = &mut pipes[i];
                match p.collect() {
                    Ok((id, r)) => {
                        let (t, op) = started[i].remove(&id).unwrap_or((Instant::now(), Op::Get));
                        let ns = elapsed_ns(t);
                        match reply_len(op, r, buf).and_then(|len| check(op, len, size)) {
                            Ok(hit) => out.ok(ns, op, hit, done),
                            Err(e) => out.error(e),
                        }
                    }
                    Err(e) => {
                        out.error(e.to_string());
                        out.errors += p.outstanding() as u64;
                        live[i] = false;
                    }
                }
            }
        }
    }
}

/// Submits one request of the mix on a pipeline (the pipelined and the multiplexed loops).
/// PUTs and DELETEs use the default options.
fn submit(
    p: &mut Pipeline<'_>,
    op: Op,
    key: &[u8],
    payload: &[u8],
    opts: &GetOptions,
) -> Result<u32, ClientError> {
    match op {
        Op::Get => p.submit_get(key, opts),
        Op::Put => p.submit_put(key, payload, &PutOptions::default()),
        Op::Head => p.submit_head(key),
        Op::Delete => p.submit_delete(key, &DeleteOptions::default()),
    }
}

/// What a collected pipeline reply to `op` counts as, for [`check`]: the GET's byte
/// count (every byte consumed), `Some(0)` for a HEAD or DELETE that found its object,
/// `None` for a PUT or a miss, or the error as text.
fn reply_len(
    op: Op,
    r: Result<Reply, ClientError>,
    buf: &mut Vec<u8>,
) -> Result<Option<usize>, String> {
    match hit_or(r) {
        Ok(Some(Reply::Get(g))) if op == Op::Get => consume(g, buf).map(Some),
        Ok(Some(Reply::Put(_))) if op == Op::Put => Ok(None),
        Ok(Some(Reply::Head(_))) if op == Op::Head => Ok(Some(0)),
        Ok(Some(Reply::Delete(b))) if op == Op::Delete => Ok(b.then_some(0)),
        Ok(None) => Ok(None),
        Ok(Some(other)) => Err(format!("unexpected reply {other:?} to {op}")),
        Err(e) => Err(e),
    }
}

/// A reply, `None` for NOT_FOUND (a miss, not an error), or the error as text.
fn hit_or<T>(r: Result<T, ClientError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a completed request hit: a GET must have returned exactly `size` bytes; a
/// GET/HEAD/DELETE that found nothing is a miss; a PUT always counts as a hit.
fn check(op: Op, len: Option<usize>, size: usize) -> Result<bool, String> {
    match (op, len) {
        (Op::Put, _) => Ok(true),
        (Op::Get, Some(len)) => check_len(len, size).map(|()| true),
        (_, got) => Ok(got.is_some()),
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
    ops_mix: OpMix,
    key_dist: KeyDist,
    connections: u32,
    /// Client threads driving the connections.
    threads: usize,
    duration_s: f64,
    ops: u64,
    per_op: [u64; 4],
    misses: u64,
    errors: u64,
    hist: Histogram,
}

impl Report {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.duration_s
    }
    fn mb_per_sec(&self) -> f64 {
        // Object bytes moved: GETs and PUTs that carried an object.
        let moved = (self.per_op[Op::Get as usize] + self.per_op[Op::Put as usize])
            .saturating_sub(self.misses);
        moved as f64 * self.size as f64 / 1e6 / self.duration_s
    }
    fn us(&self, q: f64) -> f64 {
        self.hist.quantile(q) as f64 / 1e3
    }

    fn table(&self) -> String {
        format!(
            "objmapper bench: {}, {} mode over {} ({}, {} in flight), {} B objects, \
             {} keys ({}), {} connection{} on {} thread{}, {:.2} s\n\
             \x20 requests      {} (get {}, put {}, head {}, delete {}; {} missed)\n\
             \x20 ops/s         {:.0}\n\
             \x20 MB/s          {:.1}\n\
             \x20 errors        {}\n\
             \x20 latency (us)  p50 {:.1}   p99 {:.1}   p99.9 {:.1}   max {:.1}",
            self.ops_mix,
            self.mode,
            self.transport,
            self.protocol.to_uppercase(),
            self.pipeline,
            self.size,
            self.keys,
            self.key_dist,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.duration_s,
            self.ops,
            self.per_op[0],
            self.per_op[1],
            self.per_op[2],
            self.per_op[3],
            self.misses,
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
             \"size\":{},\"keys\":{},\"ops_mix\":\"{}\",\"key_dist\":\"{}\",\
             \"connections\":{},\"threads\":{},\"duration_s\":{:.3},\"ops\":{},\"gets\":{},\"puts\":{},\
             \"heads\":{},\"deletes\":{},\"misses\":{},\"ops_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"p50_us\":{:.2},\
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
            self.ops_mix,
            self.key_dist,
            self.connections,
            self.threads,
            self.duration_s,
            self.ops,
            self.per_op[0],
            self.per_op[1],
            self.per_op[2],
            self.per_op[3],
            self.misses,
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
            ops_mix: OpMix([90, 10, 0, 0]),
            key_dist: KeyDist::Zipf(0.99),
            connections: 2,
            threads: 1,
            duration_s: 1.0,
            ops: 1,
            per_op: [1, 0, 0, 0],
            misses: 0,
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
            "\"threads\":1",
            "\"duration_s\":",
            "\"ops_mix\":\"get=90,put=10\"",
            "\"key_dist\":\"zipf:0.99\"",
            "\"gets\":1",
            "\"misses\":0",
        ] {
            assert!(j.contains(f), "{f} missing in {j}");
        }
    }

    #[test]
    fn op_mix_parses_and_picks_in_proportion() {
        assert_eq!(parse_ops("get=90,put=10"), Ok(OpMix([90, 10, 0, 0])));
        assert_eq!(parse_ops("put"), Ok(OpMix([0, 100, 0, 0])));
        assert_eq!(
            parse_ops(" GET=50 , head=25,delete=25%"),
            Ok(OpMix([50, 0, 25, 25]))
        );
        for bad in [
            "get=90",
            "get=90,put=20",
            "get=50,get=50",
            "post=100",
            "get=x",
            "get=101",
        ] {
            assert!(parse_ops(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(OpMix([90, 10, 0, 0]).to_string(), "get=90,put=10");
        let mix = OpMix([70, 10, 15, 5]);
        let mut counts = [0u32; 4];
        for r in 0..1000u64 {
            counts[mix.pick(r) as usize] += 1;
        }
        assert_eq!(counts, [700, 100, 150, 50]);
        assert_eq!(OpMix::default().pick(99), Op::Get);
    }

    #[test]
    fn key_dist_parses_and_zipf_skews() {
        assert_eq!(parse_key_dist("uniform"), Ok(KeyDist::Uniform));
        assert_eq!(
            parse_key_dist("zipf"),
            Ok(KeyDist::Zipf(DEFAULT_ZIPF_ALPHA))
        );
        assert_eq!(parse_key_dist("zipf:1.2"), Ok(KeyDist::Zipf(1.2)));
        for bad in ["zipf:0", "zipf:-1", "zipf:", "zipf1", "normal", "zipf:nan"] {
            assert!(parse_key_dist(bad).is_err(), "{bad} accepted");
        }
        let n = 1000;
        let mut rng = XorShift(7);
        let draws = 200_000;
        for (dist, hot_share) in [(KeyDist::Uniform, 0.001), (KeyDist::Zipf(1.0), 0.1336)] {
            let p = KeyPicker::new(dist, n);
            let mut counts = vec![0u32; n];
            for _ in 0..draws {
                counts[p.pick(&mut rng)] += 1;
            }
            // Key 0's share: 1/n uniform, 1/H(n) = 0.1336 for Zipf(1) over 1000 keys.
            let share = f64::from(counts[0]) / f64::from(draws);
            assert!(
                (share - hot_share).abs() < hot_share * 0.15 + 0.0005,
                "{dist}: {share}"
            );
            if let KeyDist::Zipf(_) = dist {
                assert!(counts[1] > counts[10] && counts[10] > counts[500]);
            }
        }
    }
}
