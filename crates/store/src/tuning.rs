//! Settings that can change while the store runs: tier capacities, the
//! placement thresholds and the eviction policies' knobs.
//!
//! [`Store::tuning`](crate::Store::tuning) reads them and
//! [`Store::set_tuning`](crate::Store::set_tuning) validates and applies a
//! whole new set at once (the management API's `PATCH /v1/config` and the
//! daemon's SIGHUP reload both go through it). Values live in relaxed
//! atomics, so the request path reads them without a lock.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::policy::S3FifoConfig;
use crate::StoreConfig;

/// Tier capacities, placement thresholds and eviction knobs in effect.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Tuning {
    /// Memory tier capacity in bytes ([`StoreConfig::mem_capacity_bytes`]).
    pub mem_capacity_bytes: u64,
    /// Memory tier capacity in objects ([`StoreConfig::mem_max_objects`]).
    pub mem_max_objects: u64,
    /// Disk tier capacity in bytes ([`StoreConfig::disk_capacity_bytes`]).
    pub disk_capacity_bytes: u64,
    /// Disk tier capacity in objects ([`StoreConfig::disk_max_objects`]).
    pub disk_max_objects: u64,
    /// Objects larger than this go straight to disk
    /// ([`StoreConfig::direct_to_disk_threshold`]).
    pub direct_to_disk_threshold: u64,
    /// Disk hits before promotion into memory ([`StoreConfig::promote_after_hits`]).
    pub promote_after_hits: u8,
    /// The memory tier's S3-FIFO knobs. Default: [`S3FifoConfig::default`]
    /// with `ghost_main_evictions = true`.
    pub mem_eviction: S3FifoConfig,
    /// The disk tier's S3-FIFO knobs. Default: [`S3FifoConfig::default`].
    pub disk_eviction: S3FifoConfig,
}

/// A [`Tuning`] value that [`Store::set_tuning`](crate::Store::set_tuning) refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct TuningError {
    /// The field, as named in [`Tuning`] (e.g. `mem_capacity_bytes`,
    /// `disk_eviction.small_ratio`).
    pub field: &'static str,
    /// Why, and what would be accepted.
    pub message: String,
}

/// Highest useful [`Tuning::promote_after_hits`]: the policies' access
/// counters saturate at 3.
pub const MAX_PROMOTE_AFTER_HITS: u8 = 3;

impl Tuning {
    /// The tuning a freshly opened store starts with.
    pub fn from_config(cfg: &StoreConfig) -> Tuning {
        Tuning {
            mem_capacity_bytes: cfg.mem_capacity_bytes,
            mem_max_objects: cfg.mem_max_objects,
            disk_capacity_bytes: cfg.disk_capacity_bytes,
            disk_max_objects: cfg.disk_max_objects,
            direct_to_disk_threshold: cfg.direct_to_disk_threshold,
            promote_after_hits: cfg.promote_after_hits,
            mem_eviction: S3FifoConfig {
                // The memory tier's ghost records every eviction, so an
                // object read again soon after leaving memory is promoted
                // straight back.
                ghost_main_evictions: true,
                ..Default::default()
            },
            disk_eviction: S3FifoConfig::default(),
        }
    }

    /// Checks every field against its documented range. `mem_enabled` says
    /// whether the store was opened with a memory tier: it cannot be turned
    /// on or off at runtime.
    pub fn validate(&self, mem_enabled: bool) -> Result<(), TuningError> {
        let err = |field, message: String| Err(TuningError { field, message });
        for (field, v) in [
            ("mem_capacity_bytes", self.mem_capacity_bytes),
            ("mem_max_objects", self.mem_max_objects),
        ] {
            if mem_enabled && v == 0 {
                return err(
                    field,
                    "must be at least 1: the memory tier cannot be disabled at runtime \
                     (restart with a zero memory capacity to run without it)"
                        .into(),
                );
            }
            if !mem_enabled && v != 0 {
                return err(
                    field,
                    "must stay 0: the store was started without a memory tier, which \
                     cannot be enabled at runtime (restart with a memory capacity)"
                        .into(),
                );
            }
        }
        for (field, v) in [
            ("disk_capacity_bytes", self.disk_capacity_bytes),
            ("disk_max_objects", self.disk_max_objects),
        ] {
            if v == 0 {
                return err(field, "must be at least 1".into());
            }
        }
        if self.promote_after_hits > MAX_PROMOTE_AFTER_HITS {
            return err(
                "promote_after_hits",
                format!(
                    "{} is out of range 0..={MAX_PROMOTE_AFTER_HITS} (access counters saturate at 3)",
                    self.promote_after_hits
                ),
            );
        }
        check_eviction(&self.mem_eviction, MEM_FIELDS)?;
        check_eviction(&self.disk_eviction, DISK_FIELDS)
    }
}

const MEM_FIELDS: [&str; 3] = [
    "mem_eviction.small_ratio",
    "mem_eviction.promote_threshold",
    "mem_eviction.ghost_ratio",
];
const DISK_FIELDS: [&str; 3] = [
    "disk_eviction.small_ratio",
    "disk_eviction.promote_threshold",
    "disk_eviction.ghost_ratio",
];

fn check_eviction(c: &S3FifoConfig, fields: [&'static str; 3]) -> Result<(), TuningError> {
    if !(0.01..=0.9).contains(&c.small_ratio) {
        return Err(TuningError {
            field: fields[0],
            message: format!("{} is out of range 0.01..=0.9", c.small_ratio),
        });
    }
    if !(1..=3).contains(&c.promote_threshold) {
        return Err(TuningError {
            field: fields[1],
            message: format!("{} is out of range 1..=3", c.promote_threshold),
        });
    }
    if !(0.0..=4.0).contains(&c.ghost_ratio) {
        return Err(TuningError {
            field: fields[2],
            message: format!("{} is out of range 0.0..=4.0", c.ghost_ratio),
        });
    }
    Ok(())
}

/// The scalar part of [`Tuning`] as atomics, read on the request path.
/// (The eviction knobs live in the policies themselves, under their lock.)
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) mem_capacity_bytes: AtomicU64,
    pub(crate) mem_max_objects: AtomicU64,
    pub(crate) disk_capacity_bytes: AtomicU64,
    pub(crate) disk_max_objects: AtomicU64,
    pub(crate) direct_to_disk_threshold: AtomicU64,
    pub(crate) promote_after_hits: AtomicU8,
}

impl Live {
    pub(crate) fn new(t: &Tuning) -> Live {
        Live {
            mem_capacity_bytes: AtomicU64::new(t.mem_capacity_bytes),
            mem_max_objects: AtomicU64::new(t.mem_max_objects),
            disk_capacity_bytes: AtomicU64::new(t.disk_capacity_bytes),
            disk_max_objects: AtomicU64::new(t.disk_max_objects),
            direct_to_disk_threshold: AtomicU64::new(t.direct_to_disk_threshold),
            promote_after_hits: AtomicU8::new(t.promote_after_hits),
        }
    }

    pub(crate) fn store(&self, t: &Tuning) {
        let r = Ordering::Relaxed;
        self.mem_capacity_bytes.store(t.mem_capacity_bytes, r);
        self.mem_max_objects.store(t.mem_max_objects, r);
        self.disk_capacity_bytes.store(t.disk_capacity_bytes, r);
        self.disk_max_objects.store(t.disk_max_objects, r);
        self.direct_to_disk_threshold
            .store(t.direct_to_disk_threshold, r);
        self.promote_after_hits.store(t.promote_after_hits, r);
    }

    pub(crate) fn mem_capacity_bytes(&self) -> u64 {
        self.mem_capacity_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn direct_to_disk_threshold(&self) -> u64 {
        self.direct_to_disk_threshold.load(Ordering::Relaxed)
    }

    pub(crate) fn promote_after_hits(&self) -> u8 {
        self.promote_after_hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        let t = Tuning::from_config(&StoreConfig::new("/nonexistent"));
        t.validate(true).unwrap();
        let mut bad = t;
        bad.disk_eviction.small_ratio = 0.95;
        assert_eq!(
            bad.validate(true).unwrap_err().field,
            "disk_eviction.small_ratio"
        );
        let mut bad = t;
        bad.mem_eviction.ghost_ratio = f64::NAN;
        assert_eq!(
            bad.validate(true).unwrap_err().field,
            "mem_eviction.ghost_ratio"
        );
        let mut bad = t;
        bad.mem_capacity_bytes = 0;
        assert_eq!(bad.validate(true).unwrap_err().field, "mem_capacity_bytes");
        assert_eq!(t.validate(false).unwrap_err().field, "mem_capacity_bytes");
        let mut bad = t;
        bad.promote_after_hits = 4;
        assert_eq!(bad.validate(true).unwrap_err().field, "promote_after_hits");
    }
}
