//! Miss ratios of the S3-FIFO and LRU eviction policies on synthetic traces.
//!
//! ```sh
//! cargo run --release -p objmapper-store --example hit_ratio            # the table
//! cargo run --release -p objmapper-store --example hit_ratio -- --sweep # parameter sweep
//! ```
//!
//! Traces (seeded, so every run replays the same requests): Zipf over
//! 100,000 keys with alpha 0.6, 0.8, 1.0 and 1.2, and a scan-heavy trace
//! where 30% of the requests are long sequential scans over cold keys and
//! the rest follow Zipf(1.0) over the hot keys. Every request is an access
//! to a key: a hit if it is resident, else a miss, after which the key is
//! inserted (evicting as needed). Cold-start misses are counted. Cache
//! sizes are 1%, 5%, 10% and 25% of the trace's distinct keys, with unit
//! sizes and an object capacity, and again with variable sizes (1 KiB to
//! 1 MiB, log-uniform) and a byte capacity of the same share of the
//! distinct keys' bytes.
//!
//! Run by hand; not part of CI.

use std::time::Instant;

use objmapper_store::policy::{EvictionPolicy, Lru, S3Fifo, S3FifoConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 100_000;
const REQUESTS: usize = 2_000_000;
const ALPHAS: [f64; 4] = [0.6, 0.8, 1.0, 1.2];
const CACHE_PERCENT: [u64; 4] = [1, 5, 10, 25];
/// Scan trace: share of requests that are scans, scan length, cold keys.
const SCAN_SHARE: f64 = 0.3;
const SCAN_LEN: usize = 20_000;
const COLD_KEYS: u64 = 300_000;
const COLD_BASE: u64 = 1 << 40;

/// Zipf sampler over ranks `0..n`: precomputed CDF, binary search.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, alpha: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                acc += (rank as f64).powf(-alpha);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> u64 {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

struct Trace {
    name: String,
    keys: Vec<u64>,
    distinct: usize,
}

impl Trace {
    fn new(name: String, keys: Vec<u64>) -> Self {
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        Trace {
            name,
            distinct: sorted.len(),
            keys,
        }
    }

    /// Total size of the distinct keys, with variable sizes.
    fn distinct_bytes(&self) -> u64 {
        let mut sorted = self.keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.iter().map(|&k| var_size(k)).sum()
    }
}

fn zipf_trace(alpha: f64, seed: u64) -> Trace {
    let zipf = Zipf::new(KEYS, alpha);
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = (0..REQUESTS).map(|_| zipf.sample(&mut rng)).collect();
    Trace::new(format!("Zipf {alpha:.1}"), keys)
}

/// Runs of Zipf(1.0) requests over the hot keys (length uniform in
/// 0..2×mean) alternating with sequential scans of `SCAN_LEN` cold keys
/// (continuing where the previous scan stopped, wrapping around
/// `COLD_KEYS`), so that `SCAN_SHARE` of the requests are scans.
fn scan_trace(seed: u64) -> Trace {
    let zipf = Zipf::new(KEYS, 1.0);
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_hot = SCAN_LEN as f64 * (1.0 - SCAN_SHARE) / SCAN_SHARE;
    let mut keys = Vec::with_capacity(REQUESTS);
    let mut cursor = 0;
    while keys.len() < REQUESTS {
        let hot = rng.gen_range(0..(2.0 * mean_hot) as usize);
        for _ in 0..hot {
            keys.push(zipf.sample(&mut rng));
        }
        for _ in 0..SCAN_LEN {
            keys.push(COLD_BASE + cursor);
            cursor = (cursor + 1) % COLD_KEYS;
        }
    }
    keys.truncate(REQUESTS);
    Trace::new("Zipf 1.0 + 30% scans".to_string(), keys)
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A key's size in the variable-size runs: log-uniform in 1 KiB..1 MiB.
fn var_size(key: u64) -> u64 {
    let u = (mix(key ^ 0x5157) >> 11) as f64 / (1u64 << 53) as f64;
    (1024.0 * 1024f64.powf(u)) as u64
}

/// Replays `trace` through `p`; returns the miss ratio.
fn replay<P: EvictionPolicy>(p: &mut P, trace: &Trace, sized: bool) -> f64 {
    let mut misses = 0u64;
    for &key in &trace.keys {
        if p.touch(key) {
            continue;
        }
        misses += 1;
        let size = if sized { var_size(key) } else { 1 };
        while p.needs_eviction(size) {
            if p.evict().is_none() {
                break;
            }
        }
        p.insert(key, mix(key), size);
    }
    misses as f64 / trace.keys.len() as f64
}

/// One row of the table: a trace at a cache size, unit or variable sizes.
#[derive(Clone, Copy)]
struct Cell {
    trace: usize,
    percent: u64,
    sized: bool,
}

impl Cell {
    fn capacity(&self, t: &Trace) -> (u64, u64) {
        if self.sized {
            (t.distinct_bytes() * self.percent / 100, u64::MAX)
        } else {
            (u64::MAX, (t.distinct * self.percent as usize / 100) as u64)
        }
    }
}

fn s3fifo_miss(t: &Trace, c: Cell, config: S3FifoConfig) -> f64 {
    let (bytes, objects) = c.capacity(t);
    replay(&mut S3Fifo::with_config(bytes, objects, config), t, c.sized)
}

fn lru_miss(t: &Trace, c: Cell) -> f64 {
    let (bytes, objects) = c.capacity(t);
    replay(&mut Lru::new(bytes, objects), t, c.sized)
}

/// Runs `f` over `items` on all cores, keeping the order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= items.len() {
                            return mine;
                        }
                        mine.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    out.sort_by_key(|&(i, _)| i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn traces() -> Vec<Trace> {
    let mut traces: Vec<Trace> = ALPHAS
        .iter()
        .enumerate()
        .map(|(i, &a)| zipf_trace(a, 1000 + i as u64))
        .collect();
    traces.push(scan_trace(2000));
    traces
}

fn cells(traces: &[Trace]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for sized in [false, true] {
        for trace in 0..traces.len() {
            for &percent in &CACHE_PERCENT {
                cells.push(Cell {
                    trace,
                    percent,
                    sized,
                });
            }
        }
    }
    cells
}

fn table(traces: &[Trace], config: S3FifoConfig) {
    let cells = cells(traces);
    let started = Instant::now();
    let rows = par_map(&cells, |&c| {
        let t = &traces[c.trace];
        (lru_miss(t, c), s3fifo_miss(t, c, config))
    });
    println!("S3-FIFO parameters: {config:?}\n");
    println!("| trace | sizes | cache | capacity | LRU miss | S3-FIFO miss | S3-FIFO − LRU |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut worst = f64::MIN;
    for (c, (lru, s3)) in cells.iter().zip(&rows) {
        let t = &traces[c.trace];
        let (bytes, objects) = c.capacity(t);
        let (sizes, capacity) = if c.sized {
            (
                "1 KiB–1 MiB",
                format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64),
            )
        } else {
            ("unit", format!("{objects} objects"))
        };
        println!(
            "| {} | {sizes} | {}% | {capacity} | {:.4} | {:.4} | {:+.4} |",
            t.name,
            c.percent,
            lru,
            s3,
            s3 - lru
        );
        worst = worst.max(s3 - lru);
    }
    println!();
    for t in traces {
        println!(
            "{}: {} requests, {} distinct keys, {:.1} GiB of distinct bytes in the variable-size runs",
            t.name,
            t.keys.len(),
            t.distinct,
            t.distinct_bytes() as f64 / (1u64 << 30) as f64
        );
    }
    println!(
        "\nworst S3-FIFO − LRU over all rows: {worst:+.4} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// Tries every combination of parameters on every row of the table;
/// prints, per combination, the worst and mean difference (S3-FIFO − LRU)
/// and the number of rows where S3-FIFO misses more than LRU.
fn sweep(traces: &[Trace]) {
    let cells = cells(traces);
    let lru = par_map(&cells, |&c| lru_miss(&traces[c.trace], c));
    let mut configs = Vec::new();
    for ghost_main_evictions in [false, true] {
        for promote_threshold in [1, 2] {
            for small_ratio in [0.05, 0.1, 0.2, 0.3] {
                for ghost_ratio in [0.5, 0.9, 2.0] {
                    configs.push(S3FifoConfig {
                        small_ratio,
                        promote_threshold,
                        ghost_ratio,
                        ghost_main_evictions,
                    });
                }
            }
        }
    }
    println!(
        "| small_ratio | promote_threshold | ghost_ratio | ghost_main_evictions \
         | worst Δ | mean Δ | rows lost |"
    );
    println!("| ---: | ---: | ---: | --- | ---: | ---: | ---: |");
    let work: Vec<(S3FifoConfig, Cell)> = configs
        .iter()
        .flat_map(|&k| cells.iter().map(move |&c| (k, c)))
        .collect();
    let s3 = par_map(&work, |&(k, c)| s3fifo_miss(&traces[c.trace], c, k));
    for (i, k) in configs.iter().enumerate() {
        let deltas: Vec<f64> = s3[i * cells.len()..(i + 1) * cells.len()]
            .iter()
            .zip(&lru)
            .map(|(s, l)| s - l)
            .collect();
        let worst = deltas.iter().copied().fold(f64::MIN, f64::max);
        let mean = deltas.iter().sum::<f64>() / deltas.len() as f64;
        let lost = deltas.iter().filter(|&&d| d > 0.0).count();
        println!(
            "| {} | {} | {} | {} | {worst:+.4} | {mean:+.4} | {lost} |",
            k.small_ratio, k.promote_threshold, k.ghost_ratio, k.ghost_main_evictions
        );
    }
}

/// Policy memory and speed at 1,000,000 resident objects.
fn footprint() {
    const N: u64 = 1_000_000;
    let mut s3 = S3Fifo::new(u64::MAX, N);
    let mut lru = Lru::new(u64::MAX, N);
    let mut rng = StdRng::seed_from_u64(7);
    let ids: Vec<u64> = (0..3 * N).map(|_| rng.gen()).collect();
    let started = Instant::now();
    for &id in &ids {
        if !s3.touch(id) {
            while s3.needs_eviction(1) && s3.evict().is_some() {}
            s3.insert(id, mix(id), 1);
        }
    }
    let per_op = started.elapsed().as_nanos() as f64 / ids.len() as f64;
    for &id in &ids {
        if !lru.touch(id) {
            while lru.needs_eviction(1) && lru.evict().is_some() {}
            lru.insert(id, mix(id), 1);
        }
    }
    println!(
        "\nat {N} resident objects: S3-FIFO {:.1} bytes/object, LRU {:.1} bytes/object \
         (heap_bytes / len); S3-FIFO miss+evict+insert {per_op:.0} ns/op",
        s3.heap_bytes() as f64 / s3.len() as f64,
        lru.heap_bytes() as f64 / lru.len() as f64,
    );
}

fn main() {
    let traces = traces();
    if std::env::args().any(|a| a == "--sweep") {
        sweep(&traces);
    } else {
        table(&traces, S3FifoConfig::default());
        footprint();
    }
}
