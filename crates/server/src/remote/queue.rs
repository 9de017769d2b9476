//! The write-behind queue: uploads waiting for the remote tier, bounded by objects and
//! bytes. A newer local version of a key supersedes its pending upload (the old entry
//! is skipped when it comes up); when the queue is full the oldest uploads are dropped,
//! counted and logged, and a PUT never waits for room. An upload that failed waits out
//! its backoff in the queue ([`Queue::retry`]): no task takes it before then.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::backoff;

/// One pending upload: the local version to read back and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upload {
    pub(crate) key: Box<[u8]>,
    pub(crate) version: u64,
    /// Its commit stamp (`mtime_ns`): the watermark is the smallest one pending.
    pub(crate) stamp: u64,
    pub(crate) size: u64,
    pub(crate) since: Instant,
    /// How many times in a row it failed (its backoff grows with them).
    pub(crate) failures: u32,
}

#[derive(Debug)]
pub(crate) struct Queue {
    order: VecDeque<Upload>,
    /// Uploads that failed, by the time before which they are not taken (and a
    /// sequence number); back at the front of `order` once due.
    later: BTreeMap<(Instant, u64), Upload>,
    seq: u64,
    /// The newest pending version of each key, with its size.
    live: HashMap<Box<[u8]>, (u64, u64)>,
    bytes: u64,
    /// Stamps of uploads taken and not finished, with how many.
    running: BTreeMap<u64, usize>,
    /// The versions of the uploads taken and not finished, by key.
    running_versions: HashMap<Box<[u8]>, u64>,
    /// The newest stamp ever queued: the watermark when nothing is pending.
    newest: u64,
    max_objects: usize,
    max_bytes: u64,
    /// Uploads dropped for want of room.
    pub(crate) dropped: u64,
    /// The versions last dropped (at most [`DROPPED_REMEMBERED`], the oldest forgotten
    /// first): one evicted later is lost to the tier as a pending one would be.
    dropped_versions: HashMap<Box<[u8]>, u64>,
    dropped_order: VecDeque<Box<[u8]>>,
}

/// Dropped uploads remembered for [`Queue::was_dropped`] (as many as the journal keeps).
const DROPPED_REMEMBERED: usize = super::journal::DROPPED_KEPT;

impl Queue {
    pub(crate) fn new(max_objects: usize, max_bytes: u64, watermark: u64) -> Queue {
        Queue {
            order: VecDeque::new(),
            later: BTreeMap::new(),
            seq: 0,
            live: HashMap::new(),
            bytes: 0,
            running: BTreeMap::new(),
            running_versions: HashMap::new(),
            newest: watermark,
            max_objects: max_objects.max(1),
            max_bytes: max_bytes.max(1),
            dropped: 0,
            dropped_versions: HashMap::new(),
            dropped_order: VecDeque::new(),
        }
    }

    fn is_live(&self, u: &Upload) -> bool {
        self.live.get(&u.key).is_some_and(|(v, _)| *v == u.version)
    }

    /// Drops stale entries (superseded) off the front.
    fn trim_front(&mut self) {
        while let Some(u) = self.order.front() {
            if self.is_live(u) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Queues an upload, superseding an older pending version of the key. Returns the
    /// uploads dropped to make room (oldest first).
    pub(crate) fn push(&mut self, u: Upload) -> Vec<Upload> {
        self.newest = self.newest.max(u.stamp);
        if let Some((v, size)) = self.live.get(&u.key).copied() {
            if v >= u.version {
                return Vec::new();
            }
            self.bytes -= size;
        }
        self.live.insert(u.key.clone(), (u.version, u.size));
        self.bytes += u.size;
        self.order.push_back(u);
        let mut dropped = Vec::new();
        while self.live.len() > self.max_objects || self.bytes > self.max_bytes {
            // Those waiting out a backoff first: they were at the front when taken.
            let Some(old) = self.pop_later().or_else(|| {
                self.trim_front();
                self.order.pop_front()
            }) else {
                break;
            };
            self.live.remove(&old.key);
            self.bytes -= old.size;
            self.dropped += 1;
            self.remember_dropped(old.key.clone(), old.version);
            dropped.push(old);
        }
        dropped
    }

    /// The live upload waiting out a backoff that is due first, out of the queue.
    fn pop_later(&mut self) -> Option<Upload> {
        while let Some((_, u)) = self.later.pop_first() {
            if self.is_live(&u) {
                return Some(u);
            }
        }
        None
    }

    /// The oldest live upload that is not waiting out a backoff at `now`, now running
    /// (finish it with [`Queue::done`]). Those whose backoff ended go first.
    pub(crate) fn take(&mut self, now: Instant) -> Option<Upload> {
        let mut due = Vec::new();
        while let Some(e) = self.later.first_entry() {
            if e.key().0 > now {
                break;
            }
            due.push(e.remove());
        }
        for u in due.into_iter().rev() {
            self.order.push_front(u);
        }
        self.trim_front();
        let u = self.order.pop_front()?;
        self.live.remove(&u.key);
        self.bytes -= u.size;
        *self.running.entry(u.stamp).or_default() += 1;
        self.running_versions.insert(u.key.clone(), u.version);
        Some(u)
    }

    /// Puts a taken upload that failed back, to be taken again after its backoff
    /// (growing with its failures in a row), first among those due then; unless a
    /// newer version of its key was queued meanwhile (then that one is sent instead).
    /// Finish it with [`Queue::done`] first.
    pub(crate) fn retry(&mut self, mut u: Upload, now: Instant) {
        if self.live.contains_key(&u.key) {
            return;
        }
        u.failures = u.failures.saturating_add(1);
        self.live.insert(u.key.clone(), (u.version, u.size));
        self.bytes += u.size;
        self.seq += 1;
        let at = now + backoff::delay(u.failures);
        self.later.insert((at, self.seq), u);
    }

    /// When the first upload waiting out a backoff is due (it may have been
    /// superseded since).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.later.keys().next().map(|(at, _)| *at)
    }

    /// Uploads taken and not finished.
    pub(crate) fn running(&self) -> usize {
        self.running.values().sum()
    }

    /// A taken upload finished (stored, superseded, or given up).
    pub(crate) fn done(&mut self, u: &Upload) {
        if self.running_versions.get(&u.key) == Some(&u.version) {
            self.running_versions.remove(&u.key);
        }
        if let Some(n) = self.running.get_mut(&u.stamp) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&u.stamp);
            }
        }
    }

    /// Every upload with a smaller commit stamp is finished: the smallest stamp pending
    /// or running, else one past the newest queued.
    pub(crate) fn watermark(&mut self) -> u64 {
        self.trim_front();
        let waiting = self.later.values().filter(|u| self.is_live(u));
        let queued = self.order.front().map(|u| u.stamp);
        let queued = waiting.map(|u| u.stamp).chain(queued).min();
        let running = self.running.keys().next().copied();
        match (queued, running) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.newest.saturating_add(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How long the oldest pending upload has waited.
    pub(crate) fn oldest_age(&mut self) -> Option<std::time::Duration> {
        self.trim_front();
        let waiting = self.later.values().filter(|u| self.is_live(u));
        waiting
            .chain(self.order.front())
            .map(|u| u.since.elapsed())
            .max()
    }

    /// Whether `key`'s version `version` is waiting (not yet taken: one being sent is
    /// [`Queue::is_running`]).
    pub(crate) fn is_pending(&self, key: &[u8], version: u64) -> bool {
        self.live.get(key).is_some_and(|(v, _)| *v == version)
    }

    /// Whether `key`'s version `version` is being sent (taken, not finished): it may
    /// still fail and be retried.
    pub(crate) fn is_running(&self, key: &[u8], version: u64) -> bool {
        self.running_versions.get(key) == Some(&version)
    }

    /// Remembers that `key`'s version `version` was dropped for want of room (at a
    /// drop, and at start for those the journal kept).
    pub(crate) fn remember_dropped(&mut self, key: Box<[u8]>, version: u64) {
        if self.dropped_versions.len() >= DROPPED_REMEMBERED {
            if let Some(k) = self.dropped_order.pop_front() {
                self.dropped_versions.remove(&k);
            }
        }
        if self.dropped_versions.insert(key.clone(), version).is_none() {
            self.dropped_order.push_back(key);
        }
    }

    /// Whether `key`'s version `version` was dropped for want of room, lately.
    pub(crate) fn was_dropped(&self, key: &[u8], version: u64) -> bool {
        self.dropped_versions.get(key) == Some(&version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(key: &str, version: u64, size: u64) -> Upload {
        Upload {
            key: key.as_bytes().into(),
            version,
            stamp: version * 10,
            size,
            since: Instant::now(),
            failures: 0,
        }
    }

    #[test]
    fn a_newer_version_supersedes_and_the_oldest_go_when_full() {
        let mut q = Queue::new(2, 100, 0);
        assert!(q.push(up("a", 1, 10)).is_empty());
        assert!(
            q.push(up("a", 2, 30)).is_empty(),
            "supersedes, no room needed"
        );
        assert_eq!((q.len(), q.bytes()), (1, 30));
        assert!(q.push(up("b", 3, 10)).is_empty());
        let dropped = q.push(up("c", 4, 10));
        let got: Vec<(&[u8], u64)> = dropped.iter().map(|u| (&*u.key, u.version)).collect();
        assert_eq!(got, vec![(&b"a"[..], 2)]);
        assert_eq!(q.dropped, 1);
        assert!(q.was_dropped(b"a", 2) && !q.was_dropped(b"a", 1) && !q.was_dropped(b"b", 3));
        assert_eq!((q.len(), q.bytes()), (2, 20));
        // By bytes too.
        let dropped = q.push(up("d", 5, 95));
        assert_eq!(
            dropped.iter().map(|u| &*u.key).collect::<Vec<_>>(),
            vec![&b"b"[..], b"c"]
        );
        assert_eq!((q.len(), q.bytes()), (1, 95));
    }

    #[test]
    fn the_watermark_is_the_oldest_unfinished_stamp() {
        let mut q = Queue::new(10, 1000, 7);
        assert_eq!(q.watermark(), 8);
        q.push(up("a", 1, 1));
        q.push(up("b", 2, 1));
        assert_eq!(q.watermark(), 10);
        let a = q.take(Instant::now()).unwrap();
        assert_eq!(&*a.key, b"a");
        assert_eq!(q.watermark(), 10, "running counts");
        assert!(q.is_running(b"a", 1) && !q.is_pending(b"a", 1));
        q.done(&a);
        assert!(!q.is_running(b"a", 1));
        assert_eq!(q.watermark(), 20);
        let b = q.take(Instant::now()).unwrap();
        q.done(&b);
        assert_eq!(q.watermark(), 21);
        assert!(q.take(Instant::now()).is_none());
    }

    /// A failed upload is not taken again before its backoff, whichever task asks
    /// (they used to take it back at once), and the others go meanwhile.
    #[test]
    fn a_failed_upload_waits_out_its_backoff_in_the_queue() {
        let t0 = Instant::now();
        let mut q = Queue::new(10, 1000, 0);
        q.push(up("a", 1, 1));
        q.push(up("b", 2, 1));
        let a = q.take(t0).unwrap();
        q.done(&a);
        q.retry(a, t0);
        assert!(q.is_pending(b"a", 1), "still pending while it waits");
        assert_eq!((q.len(), q.bytes()), (2, 2));
        assert_eq!(q.watermark(), 10, "it holds the watermark back");
        assert_eq!(q.next_due(), Some(t0 + backoff::FIRST));
        let b = q.take(t0).unwrap();
        assert_eq!(&*b.key, b"b", "the other goes meanwhile");
        q.done(&b);
        assert!(q.take(t0).is_none(), "not before its backoff");
        let t1 = t0 + backoff::FIRST;
        let a = q.take(t1).expect("due");
        assert_eq!((&*a.key, a.failures), (&b"a"[..], 1));
        q.done(&a);
        // Failing again, it waits twice as long.
        q.retry(a, t1);
        assert!(q.take(t1 + backoff::FIRST).is_none());
        assert!(q.take(t1 + 2 * backoff::FIRST).is_some());
    }

    #[test]
    fn a_waiting_upload_is_superseded_by_a_newer_version_and_dropped_first_when_full() {
        let t0 = Instant::now();
        let mut q = Queue::new(2, 1000, 0);
        q.push(up("a", 1, 1));
        let a = q.take(t0).unwrap();
        q.done(&a);
        q.retry(a, t0);
        q.push(up("a", 2, 5));
        assert_eq!((q.len(), q.bytes()), (1, 5));
        let a2 = q.take(t0).expect("the newer version does not wait");
        assert_eq!(a2.version, 2);
        q.done(&a2);
        q.retry(a2, t0);
        assert!(
            q.take(t0 + backoff::MAX).is_some_and(|u| u.version == 2),
            "the superseded entry is skipped"
        );
        // Full: the one waiting goes first.
        let mut q = Queue::new(2, 1000, 0);
        q.push(up("x", 1, 1));
        let x = q.take(t0).unwrap();
        q.done(&x);
        q.retry(x, t0);
        q.push(up("y", 2, 1));
        let dropped = q.push(up("z", 3, 1));
        assert_eq!(
            dropped.iter().map(|u| &*u.key).collect::<Vec<_>>(),
            vec![&b"x"[..]]
        );
        assert_eq!(q.next_due(), None);
    }
}
