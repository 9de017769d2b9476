//! The store's clock, as the event log's names are written and read in.
//!
//! Events are named by when they were appended, and a host reads the log from where
//! it last read, looking back [`Config::event_lookback`](crate::Config) for clocks that
//! lag. Named and read by each host's own clock, a host whose clock ran ahead of the
//! others by more than the lookback started reading past their events, and never
//! applied their deletes, overwrites or purges (found from outside, with one host under
//! faketime +90 s; a host whose clock lags had its own events missed by the others the
//! same way). So names and places in the log are in the store's time: this host's
//! clock less its offset from the store's, which every check of conditional writes
//! measures from the `Last-Modified` the store gives its check object (at start, then
//! hourly). Stamps, which decide which write wins, stay this host's own.

use std::sync::atomic::Ordering;

use super::{now_ns, Remote};

/// An offset this small (2 s) is taken as none: `Last-Modified` has a resolution of
/// one second, and the lookback (60 s by default) covers far more.
pub(super) const CLOCK_NOISE_NS: i64 = 2_000_000_000;

/// An offset this large (10 s) is worth a WARN: run NTP.
const CLOCK_WARN_NS: i64 = 10_000_000_000;

/// An offset larger than this (15 minutes) is not believed: S3 refuses requests signed
/// by a clock that far off, so a store that answered has a `Last-Modified` that is not
/// its clock (a fixed date, a gateway's), and following it would name this host's
/// events where no other host reads.
const CLOCK_TRUSTED_NS: i64 = 15 * 60 * 1_000_000_000;

/// This host's clock less the store's, from a write made between `before_ns` and
/// `after_ns` (this host's clock) that the store says it made at `modified_ns` (whole
/// seconds, truncated: the write happened within the second after it).
pub(super) fn offset_of(before_ns: u64, after_ns: u64, modified_ns: u64) -> i64 {
    let mid = before_ns / 2 + after_ns / 2;
    let store = modified_ns + 500_000_000;
    let offset = mid as i128 - store as i128;
    let offset = offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    if offset.abs() <= CLOCK_NOISE_NS {
        0
    } else {
        offset
    }
}

/// `offset` if it can be believed ([`CLOCK_TRUSTED_NS`]), else none.
fn believed(offset: i64) -> Option<i64> {
    (offset.abs() <= CLOCK_TRUSTED_NS).then_some(offset)
}

impl Remote {
    /// Now, by the store's clock as last measured (this host's clock until then).
    pub fn log_now(&self) -> u64 {
        let offset = self.clock_offset_ns.load(Ordering::Relaxed);
        (now_ns() as i128 - offset as i128).max(0) as u64
    }

    /// This host's clock less the store's, in ns, as last measured (0: in step, or not
    /// measured yet).
    pub fn clock_offset_ns(&self) -> i64 {
        self.clock_offset_ns.load(Ordering::Relaxed)
    }

    pub(super) fn note_clock_offset(&self, offset: i64) {
        let Some(offset) = believed(offset) else {
            tracing::warn!(
                offset_seconds = offset / 1_000_000_000,
                "remote tier: the store's Last-Modified is further off this host's clock \
                 than S3 lets a request be signed: it is not the store's clock, and the \
                 event log stays named by this host's"
            );
            self.clock_offset_ns.store(0, Ordering::Relaxed);
            return;
        };
        let before = self.clock_offset_ns.swap(offset, Ordering::Relaxed);
        if offset.abs() >= CLOCK_WARN_NS && (offset - before).abs() >= CLOCK_NOISE_NS {
            tracing::warn!(
                offset_seconds = offset / 1_000_000_000,
                "remote tier: this host's clock is off the store's by this much (ahead if \
                 positive): the event log is named and read in the store's time, but the \
                 stamps that decide which write wins are this host's. Run NTP"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_measured_within_a_second_and_noise_is_none() {
        let s = 1_000_000_000u64;
        let store = 1_700_000_000 * s;
        // In step: the write at store + 0.3 s by both clocks.
        assert_eq!(
            offset_of(store + 250_000_000, store + 350_000_000, store),
            0
        );
        // 90 s ahead.
        let o = offset_of(store + 90 * s, store + 90 * s + 100_000_000, store);
        assert!((o - 90 * s as i64).abs() < s as i64, "{o}");
        // 5 minutes behind.
        let o = offset_of(store - 300 * s, store - 300 * s + 10_000_000, store);
        assert!((o + 300 * s as i64).abs() < s as i64, "{o}");
        // A Last-Modified that cannot be the store's clock is not followed.
        assert_eq!(believed(o), Some(o));
        let years = offset_of(store, store + 1, 1_400_000_000 * s);
        assert_eq!(believed(years), None);
    }
}
