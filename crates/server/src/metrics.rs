//! Request counters of the object listeners: requests by op, errors by status, and a
//! latency histogram per op.
//!
//! Each worker thread (and the UDP thread) owns one [`Shard`] and is its only writer, so
//! an increment is a relaxed load and store of a counter in a cache line no other thread
//! writes: no lock, no read-modify-write, no allocation. The management API sums the
//! shards when asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use objmapper_proto::{Op, Status};

/// Op slots: the wire op byte (index 0 = a request whose op could not be read).
pub(crate) const OPS: usize = 16;
/// Status slots: the wire status byte.
pub(crate) const STATUSES: usize = 32;
/// Latency buckets: upper bounds of 2^(12+i) ns (4.096 µs, 8.192 µs, ... 1.07 s), then +Inf.
pub(crate) const BUCKETS: usize = 20;
const FIRST_BOUND_SHIFT: u32 = 12;

/// The upper bound of latency bucket `i` in seconds (`f64::INFINITY` for the last).
pub(crate) fn bucket_bound_seconds(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << (FIRST_BOUND_SHIFT + i as u32)) as f64 / 1e9
    }
}

fn bucket_of(ns: u64) -> usize {
    // Smallest i with ns <= 2^(12+i).
    let bits = 64 - ns.saturating_sub(1).leading_zeros();
    (bits.saturating_sub(FIRST_BOUND_SHIFT) as usize).min(BUCKETS - 1)
}

/// The name of op slot `i` (`"INVALID"` for 0 or an undefined op byte).
pub(crate) fn op_name(i: usize) -> &'static str {
    u8::try_from(i)
        .ok()
        .and_then(Op::from_u8)
        .map_or("INVALID", Op::name)
}

/// The name of status slot `i`, if the protocol defines one.
pub(crate) fn status_name(i: usize) -> Option<&'static str> {
    u8::try_from(i)
        .ok()
        .and_then(Status::from_u8)
        .map(Status::name)
}

/// One writer's counters.
#[repr(align(128))]
pub(crate) struct Shard {
    requests: [AtomicU64; OPS],
    errors: [AtomicU64; STATUSES],
    latency: [[AtomicU64; BUCKETS]; OPS],
    latency_sum_ns: [AtomicU64; OPS],
    /// GET replies that passed an fd: [shared description, private description].
    fds: [AtomicU64; 2],
}

/// Adds `n`; only ever called by the shard's single writer thread.
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Shard {
    fn new() -> Shard {
        Shard {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            fds: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts a GET reply that passes an fd: the store's shared description (the client
    /// promised POSITIONAL_READS) or a private one. Only from this shard's owner thread.
    pub(crate) fn fd_reply(&self, shared: bool) {
        add(&self.fds[usize::from(!shared)], 1);
    }

    /// Counts one answered request: its wire op byte, the wire status byte of its reply,
    /// and when it started. Must only be called from this shard's owner thread.
    pub(crate) fn record(&self, op: u8, status: u8, started: Instant) {
        let op = if (op as usize) < OPS { op as usize } else { 0 };
        add(&self.requests[op], 1);
        if status != Status::Ok.as_u8() && (status as usize) < STATUSES {
            add(&self.errors[status as usize], 1);
        }
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        add(&self.latency[op][bucket_of(ns)], 1);
        add(&self.latency_sum_ns[op], ns);
    }
}

/// Every shard, plus the server-wide counters that one thread writes.
pub(crate) struct Metrics {
    shards: Box<[Arc<Shard>]>,
    /// Object connections accepted (the acceptor thread increments it).
    pub(crate) accepted: AtomicU64,
    pub(crate) started: Instant,
}

/// The sum of every shard.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) requests: [u64; OPS],
    pub(crate) errors: [u64; STATUSES],
    pub(crate) latency: [[u64; BUCKETS]; OPS],
    pub(crate) latency_sum_ns: [u64; OPS],
    /// GET replies that passed an fd: [shared, private].
    pub(crate) fds: [u64; 2],
}

impl Metrics {
    /// `writers` shards: one per worker thread, and one for the UDP thread.
    pub(crate) fn new(writers: usize) -> Metrics {
        Metrics {
            shards: (0..writers).map(|_| Arc::new(Shard::new())).collect(),
            accepted: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Writer `i`'s shard.
    pub(crate) fn shard(&self, i: usize) -> Arc<Shard> {
        self.shards[i % self.shards.len()].clone()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            requests: [0; OPS],
            errors: [0; STATUSES],
            latency: [[0; BUCKETS]; OPS],
            latency_sum_ns: [0; OPS],
            fds: [0; 2],
        };
        let r = Ordering::Relaxed;
        for sh in self.shards.iter() {
            for op in 0..OPS {
                s.requests[op] += sh.requests[op].load(r);
                s.latency_sum_ns[op] += sh.latency_sum_ns[op].load(r);
                for b in 0..BUCKETS {
                    s.latency[op][b] += sh.latency[op][b].load(r);
                }
            }
            for st in 0..STATUSES {
                s.errors[st] += sh.errors[st].load(r);
            }
            for (sum, c) in s.fds.iter_mut().zip(&sh.fds) {
                *sum += c.load(r);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_from_4096_ns() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(4096), 0);
        assert_eq!(bucket_of(4097), 1);
        assert_eq!(bucket_of(8192), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_bound_seconds(0), 4.096e-6);
        assert!(bucket_bound_seconds(BUCKETS - 1).is_infinite());
        // The last finite bound covers a second.
        assert!(bucket_bound_seconds(BUCKETS - 2) > 1.0);
    }

    #[test]
    fn shards_sum() {
        let m = Metrics::new(2);
        let t = Instant::now();
        m.shard(0).record(Op::Get.as_u8(), Status::Ok.as_u8(), t);
        m.shard(1)
            .record(Op::Get.as_u8(), Status::NotFound.as_u8(), t);
        m.shard(1).record(200, Status::ProtocolError.as_u8(), t);
        let s = m.snapshot();
        assert_eq!(s.requests[Op::Get.as_u8() as usize], 2);
        assert_eq!(s.requests[0], 1);
        assert_eq!(s.errors[Status::NotFound.as_u8() as usize], 1);
        assert_eq!(s.errors[Status::Ok.as_u8() as usize], 0);
        assert_eq!(s.latency[Op::Get.as_u8() as usize].iter().sum::<u64>(), 2);
    }
}
