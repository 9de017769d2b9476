//! The runtime configuration: the settings that can change while the server runs (tier
//! capacities, placement thresholds, eviction knobs), as the management API shows them
//! (`GET /v1/config`) and changes them (`PATCH /v1/config`). The SIGHUP reload calls the
//! same [`Server::set_runtime_config`](crate::Server::set_runtime_config).
//!
//! The field names here are the API's (docs/ADMIN.md); they map one to one onto the
//! store's [`Tuning`].

use objmapper_store::policy::S3FifoConfig;
use objmapper_store::{Store, Tuning, TuningError};
use serde::{Deserialize, Serialize};

/// The runtime configuration in effect.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The memory tier.
    pub memory: TierConfig,
    /// The disk tier.
    pub disk: TierConfig,
    /// Objects larger than this many bytes skip the memory tier.
    pub direct_to_disk_threshold: u64,
    /// Disk hits before an object is promoted into memory (0..=3).
    pub promote_after_hits: u8,
}

/// One tier's capacity and eviction knobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TierConfig {
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Capacity in objects.
    pub max_objects: u64,
    /// The tier's S3-FIFO knobs.
    pub eviction: EvictionConfig,
}

/// S3-FIFO knobs (see `objmapper_store::policy::S3FifoConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvictionConfig {
    /// Share of the capacity given to the small FIFO queue, 0.01..=0.9.
    pub small_ratio: f64,
    /// Hits in the small queue that earn a place in the main queue, 1..=3.
    pub promote_threshold: u8,
    /// Ghost size as a fraction of resident objects, 0.0..=4.0.
    pub ghost_ratio: f64,
    /// Whether evictions from the main queue are remembered in the ghost too.
    pub ghost_main_evictions: bool,
}

/// A change to the runtime configuration: every field is optional, and only the fields
/// given change. Unknown fields are refused (`deny_unknown_fields`), so a typo is an
/// error, not a silent no-op.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfigPatch {
    /// Memory tier changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<TierPatch>,
    /// Disk tier changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<TierPatch>,
    /// New [`RuntimeConfig::direct_to_disk_threshold`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_to_disk_threshold: Option<u64>,
    /// New [`RuntimeConfig::promote_after_hits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_after_hits: Option<u8>,
}

/// Changes to one tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPatch {
    /// New capacity in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// New capacity in objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u64>,
    /// Eviction knob changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<EvictionPatch>,
}

/// Changes to one tier's eviction knobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvictionPatch {
    /// New small queue share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_ratio: Option<f64>,
    /// New promotion threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_threshold: Option<u8>,
    /// New ghost ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ghost_ratio: Option<f64>,
    /// Whether main-queue evictions go to the ghost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ghost_main_evictions: Option<bool>,
}

/// What [`Server::set_runtime_config`](crate::Server::set_runtime_config) did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Applied {
    /// The configuration now in effect.
    pub config: RuntimeConfig,
    /// The fields whose value changed, by API name (e.g. `memory.capacity_bytes`), in a
    /// fixed order. Empty if the patch changed nothing.
    pub changed: Vec<&'static str>,
}

/// A runtime configuration change that was refused; nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct RuntimeConfigError {
    /// The offending field, by API name (e.g. `memory.eviction.small_ratio`).
    pub field: String,
    /// Why, and what would be accepted.
    pub message: String,
}

impl EvictionConfig {
    fn from_store(c: S3FifoConfig) -> Self {
        EvictionConfig {
            small_ratio: c.small_ratio,
            promote_threshold: c.promote_threshold,
            ghost_ratio: c.ghost_ratio,
            ghost_main_evictions: c.ghost_main_evictions,
        }
    }

    fn patched(mut c: S3FifoConfig, p: &Option<EvictionPatch>) -> S3FifoConfig {
        if let Some(p) = p {
            c.small_ratio = p.small_ratio.unwrap_or(c.small_ratio);
            c.promote_threshold = p.promote_threshold.unwrap_or(c.promote_threshold);
            c.ghost_ratio = p.ghost_ratio.unwrap_or(c.ghost_ratio);
            c.ghost_main_evictions = p.ghost_main_evictions.unwrap_or(c.ghost_main_evictions);
        }
        c
    }
}

impl RuntimeConfig {
    /// What a store opened with [`ServerConfig::default`](crate::ServerConfig)'s store
    /// settings starts with: the defaults of every runtime-changeable setting, the
    /// eviction knobs included.
    pub fn defaults() -> Self {
        let store = crate::ServerConfig::default().store;
        Self::from_tuning(&Tuning::from_config(&store))
    }

    /// The API view of the store's tuning.
    pub fn from_tuning(t: &Tuning) -> Self {
        RuntimeConfig {
            memory: TierConfig {
                capacity_bytes: t.mem_capacity_bytes,
                max_objects: t.mem_max_objects,
                eviction: EvictionConfig::from_store(t.mem_eviction),
            },
            disk: TierConfig {
                capacity_bytes: t.disk_capacity_bytes,
                max_objects: t.disk_max_objects,
                eviction: EvictionConfig::from_store(t.disk_eviction),
            },
            direct_to_disk_threshold: t.direct_to_disk_threshold,
            promote_after_hits: t.promote_after_hits,
        }
    }

    /// Every field with its API name, flattened, for listing and comparing.
    pub fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut v = Vec::new();
        for (name, t) in [("memory", &self.memory), ("disk", &self.disk)] {
            let pre = |f: &str| -> &'static str {
                match (name, f) {
                    ("memory", "capacity_bytes") => "memory.capacity_bytes",
                    ("memory", "max_objects") => "memory.max_objects",
                    ("memory", "small_ratio") => "memory.eviction.small_ratio",
                    ("memory", "promote_threshold") => "memory.eviction.promote_threshold",
                    ("memory", "ghost_ratio") => "memory.eviction.ghost_ratio",
                    ("memory", _) => "memory.eviction.ghost_main_evictions",
                    (_, "capacity_bytes") => "disk.capacity_bytes",
                    (_, "max_objects") => "disk.max_objects",
                    (_, "small_ratio") => "disk.eviction.small_ratio",
                    (_, "promote_threshold") => "disk.eviction.promote_threshold",
                    (_, "ghost_ratio") => "disk.eviction.ghost_ratio",
                    _ => "disk.eviction.ghost_main_evictions",
                }
            };
            v.push((pre("capacity_bytes"), t.capacity_bytes.into()));
            v.push((pre("max_objects"), t.max_objects.into()));
            v.push((pre("small_ratio"), t.eviction.small_ratio.into()));
            v.push((
                pre("promote_threshold"),
                t.eviction.promote_threshold.into(),
            ));
            v.push((pre("ghost_ratio"), t.eviction.ghost_ratio.into()));
            v.push((
                pre("ghost_main_evictions"),
                t.eviction.ghost_main_evictions.into(),
            ));
        }
        v.push((
            "direct_to_disk_threshold",
            self.direct_to_disk_threshold.into(),
        ));
        v.push(("promote_after_hits", self.promote_after_hits.into()));
        v
    }
}

/// The store's tuning as an API configuration.
pub(crate) fn get(store: &Store) -> RuntimeConfig {
    RuntimeConfig::from_tuning(&store.tuning())
}

/// Applies `patch` to the store: all of it or, on error, none of it.
pub(crate) fn apply(
    store: &Store,
    patch: &RuntimeConfigPatch,
) -> Result<Applied, RuntimeConfigError> {
    let before = store.tuning();
    let mut t = before;
    if let Some(m) = &patch.memory {
        t.mem_capacity_bytes = m.capacity_bytes.unwrap_or(t.mem_capacity_bytes);
        t.mem_max_objects = m.max_objects.unwrap_or(t.mem_max_objects);
        t.mem_eviction = EvictionConfig::patched(t.mem_eviction, &m.eviction);
    }
    if let Some(d) = &patch.disk {
        t.disk_capacity_bytes = d.capacity_bytes.unwrap_or(t.disk_capacity_bytes);
        t.disk_max_objects = d.max_objects.unwrap_or(t.disk_max_objects);
        t.disk_eviction = EvictionConfig::patched(t.disk_eviction, &d.eviction);
    }
    t.direct_to_disk_threshold = patch
        .direct_to_disk_threshold
        .unwrap_or(t.direct_to_disk_threshold);
    t.promote_after_hits = patch.promote_after_hits.unwrap_or(t.promote_after_hits);
    store.set_tuning(&t).map_err(api_error)?;
    let old = RuntimeConfig::from_tuning(&before).fields();
    let config = get(store);
    let changed = config
        .fields()
        .into_iter()
        .zip(old)
        .filter(|((_, new), (_, old))| new != old)
        .map(|((name, _), _)| name)
        .collect::<Vec<_>>();
    if !changed.is_empty() {
        tracing::info!(changed = ?changed, "runtime configuration changed");
    }
    Ok(Applied { config, changed })
}

/// Renames the store's field to the API's.
fn api_error(e: TuningError) -> RuntimeConfigError {
    let field = match e.field {
        "mem_capacity_bytes" => "memory.capacity_bytes".to_string(),
        "mem_max_objects" => "memory.max_objects".to_string(),
        "disk_capacity_bytes" => "disk.capacity_bytes".to_string(),
        "disk_max_objects" => "disk.max_objects".to_string(),
        f => {
            if let Some(rest) = f.strip_prefix("mem_eviction.") {
                format!("memory.eviction.{rest}")
            } else if let Some(rest) = f.strip_prefix("disk_eviction.") {
                format!("disk.eviction.{rest}")
            } else {
                f.to_string()
            }
        }
    };
    RuntimeConfigError {
        field,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_json_is_strict() {
        let p: RuntimeConfigPatch = serde_json::from_str(
            r#"{"memory":{"capacity_bytes":1024,"eviction":{"small_ratio":0.2}}}"#,
        )
        .unwrap();
        assert_eq!(p.memory.as_ref().unwrap().capacity_bytes, Some(1024));
        assert!(
            serde_json::from_str::<RuntimeConfigPatch>(r#"{"memory":{"capacity":1}}"#).is_err()
        );
    }

    #[test]
    fn store_field_names_map_to_api_names() {
        let e = api_error(TuningError {
            field: "disk_eviction.ghost_ratio",
            message: "x".into(),
        });
        assert_eq!(e.field, "disk.eviction.ghost_ratio");
        let e = api_error(TuningError {
            field: "mem_max_objects",
            message: "x".into(),
        });
        assert_eq!(e.field, "memory.max_objects");
    }
}
