//! `GET /metrics`: the Prometheus text exposition (format 0.0.4), encoded by
//! prometheus-client.
//!
//! Every value is read when a scrape asks for it: the store's counters and gauges from
//! one `Store::stats()`, the object listeners' counters from one sum of the workers'
//! shards (`crate::metrics`), the server's own counters from their atomics. So the
//! families are declared here, in one [`Collector`], each with the name docs/ADMIN.md
//! gives it, its type, its help and where its value comes from. prometheus-client appends
//! `_total` to a counter's name itself: [`Families::counter`] takes the full name, as the
//! docs spell it, and hands the encoder the name without the suffix.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use hyper::header::CONTENT_TYPE;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet,
    EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::router::Ready;
use crate::metrics::{self, BUCKETS, OPS, STATUSES};
use crate::remote::{RemoteState, ERROR_KINDS, READ_THROUGH_BUCKETS};
use crate::shared::Shared;

/// `GET /metrics`.
pub(super) async fn scrape(Ready(sh): Ready) -> Response {
    (
        [(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        metrics_text(&sh),
    )
        .into_response()
}

/// The Prometheus text exposition (format 0.0.4) of the server's metrics.
pub(crate) fn metrics_text(sh: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerMetrics(sh.clone())));
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail, and neither can the collector.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

/// Every family of `/metrics`, read from the server's state at each scrape.
struct ServerMetrics(Arc<Shared>);

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerMetrics")
    }
}

/// The label of the per-tier families, in the order they are written.
const TIERS: [&str; 2] = ["memory", "disk"];

impl Collector for ServerMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let sh = &*self.0;
        let st = sh.store.stats();
        let m = sh.metrics.snapshot();
        let relaxed = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut f = Families(encoder);

        f.gauge("objmapper_up", "1 while the server answers.", 1u64)?;
        f.gauge_by(
            "objmapper_build_info",
            "The server's version, as a label.",
            "version",
            [(env!("CARGO_PKG_VERSION"), 1u64)],
        )?;
        f.gauge(
            "objmapper_uptime_seconds",
            "Seconds since the server started.",
            sh.metrics.started.elapsed().as_secs_f64(),
        )?;

        // The object listeners' counters (the workers' shards, summed).
        let ops: Vec<(String, usize)> = (0..OPS)
            .map(|op| (metrics::op_name(op).to_ascii_lowercase(), op))
            .collect();
        f.counter_by(
            "objmapper_requests_total",
            "Requests answered on the object listeners, by op.",
            "op",
            ops.iter()
                .filter(|(name, op)| {
                    m.requests[*op] > 0
                        || matches!(name.as_str(), "get" | "put" | "delete" | "head")
                })
                .map(|(name, op)| (name.as_str(), m.requests[*op])),
        )?;
        let statuses: Vec<(String, u64)> = (1..STATUSES)
            .filter_map(|s| Some((metrics::status_name(s)?.to_ascii_lowercase(), m.errors[s])))
            .collect();
        f.counter_by(
            "objmapper_errors_total",
            "Non-OK responses on the object listeners, by status.",
            "status",
            statuses.iter().map(|(name, n)| (name.as_str(), *n)),
        )?;
        f.counter_by(
            "objmapper_fd_replies_total",
            "GET replies that passed an fd, by its open file description: shared (the client promised POSITIONAL_READS) or private.",
            "description",
            [("shared", m.fds[0]), ("private", m.fds[1])],
        )?;
        {
            let mut family = f.0.encode_descriptor(
                "objmapper_request_duration_seconds",
                "Time from a request being decoded to its reply being queued, by op.",
                None,
                MetricType::Histogram,
            )?;
            for (name, op) in ops.iter().filter(|(_, op)| m.requests[*op] > 0) {
                // Per-bucket counts; the last bound is +Inf, so the encoder's cumulative
                // +Inf bucket is their sum.
                let buckets: Vec<(f64, u64)> = (0..BUCKETS)
                    .map(|b| (metrics::bucket_bound_seconds(b), m.latency[*op][b]))
                    .collect();
                family
                    .encode_family(&[("op", name.as_str())])?
                    .encode_histogram::<NoLabelSet>(
                        m.latency_sum_ns[*op] as f64 / 1e9,
                        m.requests[*op],
                        &buckets,
                        None,
                    )?;
            }
        }

        // The store's counters and gauges.
        f.counter_by(
            "objmapper_cache_hits_total",
            "Store GETs that found the object, by the tier that served it.",
            "tier",
            [("memory", st.memory.hits), ("disk", st.disk.hits)],
        )?;
        f.counter_by(
            "objmapper_corrupt_objects_total",
            "Object versions dropped because their file was damaged, by reason: size (not the \
             recorded size), checksum (bytes not matching the recorded xxh3), missing (the file \
             was gone).",
            "reason",
            [
                ("size", st.corrupt_size),
                ("checksum", st.corrupt_checksum),
                ("missing", st.corrupt_missing),
            ],
        )?;
        f.counter(
            "objmapper_scrub_objects_total",
            "Object versions the scrubber (and POST /v1/verify) read and checked against \
             their recorded size and xxh3.",
            st.scrub_objects,
        )?;
        f.counter(
            "objmapper_scrub_bytes_total",
            "Bytes the scrubber (and POST /v1/verify) read.",
            st.scrub_bytes,
        )?;
        f.counter(
            "objmapper_scrub_damage_total",
            "Damaged object versions the scrubber (and POST /v1/verify) found and dropped \
             (also counted in objmapper_corrupt_objects_total).",
            st.scrub_damage,
        )?;
        f.counter(
            "objmapper_scrub_passes_total",
            "Complete background scrubber passes over every tier.",
            st.scrub_passes,
        )?;
        f.gauge(
            "objmapper_scrub_last_pass_timestamp_seconds",
            "When the last complete scrubber pass ended (Unix seconds; 0 before the first).",
            st.scrub_last_pass_secs,
        )?;
        f.counter(
            "objmapper_mem_write_fallbacks_total",
            "PUTs meant for the memory tier written to disk because its directory could not \
             take the file (removed or damaged while running, or its filesystem full).",
            st.mem_write_fallbacks,
        )?;
        let tiers = [&st.memory, &st.disk];
        let per_tier =
            |v: fn(&objmapper_store::TierStats) -> u64| TIERS.into_iter().zip(tiers.map(v));
        f.counter_by(
            "objmapper_fs_full_total",
            "Writes refused because the tier's filesystem was full (ENOSPC or EDQUOT): \
             object files, journal appends.",
            "tier",
            per_tier(|t| t.full_errors),
        )?;
        f.counter_by(
            "objmapper_unlabelled_total",
            "Object files the filesystem would not label with their record (extended attribute \
             user.objmapper): they cannot be re-admitted if the journal loses their record.",
            "tier",
            per_tier(|t| t.unlabelled),
        )?;
        f.gauge_by(
            "objmapper_journal_damage",
            "Damaged journal regions recovery found when the store was opened (lost+found/ keeps \
             a copy of each).",
            "tier",
            per_tier(|t| t.journal_damage),
        )?;
        f.gauge_by(
            "objmapper_readmitted",
            "Objects recovery re-admitted from their files' labels when the store was opened, \
             after journal damage.",
            "tier",
            per_tier(|t| t.readmitted),
        )?;
        f.gauge_by(
            "objmapper_body_cache_bytes",
            "Bytes of small objects' contents the tier keeps in the daemon's memory after \
             their first read, for inline GETs that then read no file.",
            "tier",
            per_tier(|t| t.body_cache_bytes),
        )?;
        f.gauge_by(
            "objmapper_body_cache_objects",
            "Small objects whose contents the tier keeps in the daemon's memory.",
            "tier",
            per_tier(|t| t.body_cache_objects),
        )?;
        f.gauge_by(
            "objmapper_fs_full",
            "1 while the tier's last write failed because its filesystem was full and no commit \
             to it has succeeded since.",
            "tier",
            per_tier(|t| u64::from(t.full)),
        )?;
        f.counter(
            "objmapper_cache_misses_total",
            "Store GETs that found nothing.",
            st.misses,
        )?;
        f.gauge(
            "objmapper_objects",
            "Live objects, each key once.",
            st.objects,
        )?;
        f.counter(
            "objmapper_promotions_total",
            "Disk objects copied into the memory tier.",
            st.promotions,
        )?;
        f.counter(
            "objmapper_flushes_total",
            "Memory objects written to disk.",
            st.flushes,
        )?;
        f.counter(
            "objmapper_flush_errors_total",
            "Failed attempts to write a memory object to disk.",
            st.flush_errors,
        )?;
        f.counter(
            "objmapper_expirations_total",
            "Objects removed because they expired.",
            st.expirations,
        )?;
        f.gauge(
            "objmapper_bans_active",
            "Bans in force (not yet retired by the ban lurker).",
            st.bans_active,
        )?;
        f.gauge(
            "objmapper_bans_kept_for_fills",
            "Local bans retired with a remote tier attached, kept to refuse the \
             read-throughs they cover.",
            st.bans_kept_for_fills,
        )?;
        f.counter(
            "objmapper_bans_added_total",
            "Bans added since the server started.",
            st.bans_added,
        )?;
        f.counter(
            "objmapper_ban_removals_total",
            "Objects removed because a ban covered them (by a read or the ban lurker).",
            st.ban_removals,
        )?;
        f.counter(
            "objmapper_no_space_total",
            "PUTs refused because no tier could make room.",
            st.no_space,
        )?;
        f.gauge(
            "objmapper_dirty_objects",
            "Memory objects not yet on disk.",
            st.dirty,
        )?;
        f.gauge(
            "objmapper_journal_bytes",
            "Size of the disk tier's journal.",
            st.journal_bytes,
        )?;
        f.gauge_by(
            "objmapper_tier_used_bytes",
            "Bytes held by the tier.",
            "tier",
            per_tier(|t| t.bytes),
        )?;
        f.gauge_by(
            "objmapper_tier_capacity_bytes",
            "The tier's capacity in bytes.",
            "tier",
            per_tier(|t| t.capacity_bytes),
        )?;
        f.gauge_by(
            "objmapper_tier_objects",
            "Objects held by the tier.",
            "tier",
            per_tier(|t| t.objects),
        )?;
        f.gauge_by(
            "objmapper_tier_max_objects",
            "The tier's capacity in objects.",
            "tier",
            per_tier(|t| t.capacity_objects),
        )?;
        f.counter_by(
            "objmapper_evictions_total",
            "Objects evicted by the tier's policy.",
            "tier",
            per_tier(|t| t.evictions),
        )?;

        // The server's own counters.
        f.gauge(
            "objmapper_connections",
            "Open object connections.",
            sh.connections.load(Ordering::Relaxed) as u64,
        )?;
        f.counter(
            "objmapper_connections_accepted_total",
            "Object connections accepted.",
            relaxed(&sh.metrics.accepted),
        )?;
        f.counter(
            "objmapper_connections_denied_total",
            "Connections refused because the peer's uid/gid has no permission (allowlist), or a \
             TCP peer did not present the required token.",
            relaxed(&sh.denied),
        )?;
        f.counter(
            "objmapper_connections_over_limit_total",
            "Connections refused because max_connections was reached.",
            relaxed(&sh.over_limit),
        )?;
        f.counter(
            "objmapper_accept_fd_exhausted_total",
            "Times accepting object connections paused because the process (EMFILE, \
             RLIMIT_NOFILE) or the system (ENFILE) ran out of file descriptors; clients wait in \
             the listen backlog meanwhile.",
            relaxed(&sh.accept.fd_exhausted),
        )?;
        f.gauge(
            "objmapper_accept_paused",
            "1 while accepting object connections is paused because accept(2) fails for want of \
             descriptors or memory (see /readyz for the reason).",
            u64::from(sh.accept.paused().is_some()),
        )?;
        f.counter(
            "objmapper_tls_handshake_failures_total",
            "TCP connections closed because their TLS handshake failed or did not finish in time.",
            relaxed(&sh.tls_failures),
        )?;
        f.gauge(
            "objmapper_store_poisoned",
            "1 once a failed fsync poisoned the store (writes refused until restart).",
            u64::from(st.poisoned),
        )?;
        if let Some(r) = &sh.remote {
            remote_families(&mut f, &r.state())?;
        }
        Ok(())
    }
}

/// The remote tier's families (present only when one is configured).
fn remote_families(f: &mut Families<'_>, r: &RemoteState) -> std::fmt::Result {
    let c = &r.client;
    f.gauge(
        "objmapper_remote_up",
        "1 unless the remote tier's state is unreachable (timeouts, refused connections, \
         5xx of some kind of request, until that kind is answered).",
        u64::from(r.reachable()),
    )?;
    f.gauge_by(
        "objmapper_remote_state",
        "1 for the remote tier's state as this host sees it: ok, unreachable (timeouts, \
         refused connections, server errors), refused (credentials or the bucket's policy), \
         no_bucket; 0 for the others.",
        "state",
        crate::remote::Health::ALL
            .iter()
            .map(|h| (h.as_str(), u64::from(*h == r.health))),
    )?;
    f.counter(
        "objmapper_remote_hits_total",
        "Remote lookups that found a live version.",
        c.hits,
    )?;
    f.counter(
        "objmapper_remote_misses_total",
        "Remote lookups that found none (remembered misses included).",
        c.misses,
    )?;
    f.counter(
        "objmapper_remote_misses_remembered_total",
        "Of the remote misses, those answered from the remembered misses (remote_miss_ttl) \
         without a request.",
        c.cached_misses,
    )?;
    f.counter(
        "objmapper_remote_fills_total",
        "Objects fetched from the remote tier and published locally.",
        r.counters.fills,
    )?;
    f.counter(
        "objmapper_remote_fills_refused_total",
        "Versions found on the remote tier that this host refused to take (a ban, a \
         delete or the fill floor here covers them, or they do not fit): answered \
         NOT_FOUND and remembered like misses for remote_miss_ttl_ms. Most are refused from \
         their header, before any of their bytes are downloaded.",
        r.counters.fills_refused,
    )?;
    f.counter(
        "objmapper_remote_fetches_refused_total",
        "Local misses answered NOT_FOUND at once, without a remote fetch, because \
         remote_max_fetches fetches were running.",
        r.counters.fetches_refused,
    )?;
    f.counter(
        "objmapper_remote_swept_orphans_total",
        "Data objects of multipart versions that no pointer named (left by a crash or \
         a failed delete), deleted from the bucket by this host's sweeps.",
        r.counters.orphans,
    )?;
    f.counter(
        "objmapper_remote_swept_orphan_bytes_total",
        "The bytes of the data objects this host's sweeps deleted.",
        r.counters.orphan_bytes,
    )?;
    f.counter(
        "objmapper_remote_reclaimed_total",
        "Expired or purged versions in the bucket that this host's sweeps replaced by \
         tombstones.",
        r.counters.reclaimed,
    )?;
    f.counter(
        "objmapper_remote_reclaimed_bytes_total",
        "The bytes of the versions this host's sweeps reclaimed.",
        r.counters.reclaimed_bytes,
    )?;
    f.counter(
        "objmapper_remote_purges_retired_total",
        "Purges this host's sweeps retired from the purge set (nothing they covered was \
         left in the bucket, and no host could upload any).",
        r.counters.purges_retired,
    )?;
    f.counter_by(
        "objmapper_remote_errors_total",
        "Remote requests that failed, by kind.",
        "kind",
        ERROR_KINDS
            .iter()
            .zip(r.counters.errors)
            .map(|(k, n)| (k.as_str(), n)),
    )?;
    f.counter_by(
        "objmapper_remote_bytes_total",
        "Object bytes moved to and from the remote tier.",
        "direction",
        [("up", c.bytes_up), ("down", c.bytes_down)],
    )?;
    f.gauge(
        "objmapper_remote_fetches_running",
        "Read-throughs running (remote fetches of distinct keys; at most remote_max_fetches).",
        r.fetches_running,
    )?;
    f.gauge(
        "objmapper_remote_queue_objects",
        "Uploads waiting for the remote tier.",
        r.queue_objects,
    )?;
    f.gauge(
        "objmapper_remote_queue_bytes",
        "Bytes of the uploads waiting for the remote tier.",
        r.queue_bytes,
    )?;
    f.gauge(
        "objmapper_remote_queue_oldest_seconds",
        "How long the oldest waiting upload has waited.",
        r.queue_oldest_seconds,
    )?;
    f.counter(
        "objmapper_remote_uploads_dropped_total",
        "Uploads dropped because the queue was full (remote_queue_max_objects or _bytes).",
        r.uploads_dropped,
    )?;
    f.gauge(
        "objmapper_remote_purges_known",
        "Prefixes this host knows to be purged on the remote tier (its purge set and the \
         purges polled since): remote versions they cover are never read through.",
        c.purges_known,
    )?;
    f.gauge(
        "objmapper_remote_invalidations_pending",
        "Deletes and purges made here that the remote tier does not have yet.",
        r.invalidations_pending,
    )?;
    f.counter_by(
        "objmapper_remote_invalidations_received_total",
        "Other hosts' deletes and purges applied here, by kind.",
        "kind",
        [
            ("delete", r.counters.deletes_received),
            ("purge", r.counters.purges_received),
        ],
    )?;
    f.counter(
        "objmapper_remote_events_same_host_id_total",
        "Events in the shared log with this host's id that this process did not make: \
         another host uses the same --host-id (each is applied; give every host its own).",
        c.same_host_id,
    )?;
    let mut family = f.0.encode_descriptor(
        "objmapper_remote_read_through_seconds",
        "Time from a local miss to the remote fetch's end (filled, missed or failed; remembered misses make no fetch).",
        None,
        MetricType::Histogram,
    )?;
    let rt = &r.counters.read_through;
    let buckets: Vec<(f64, u64)> = READ_THROUGH_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(rt.iter().copied())
        .collect();
    family.encode_histogram::<NoLabelSet>(
        r.counters.read_through_seconds,
        rt.iter().sum(),
        &buckets,
        None,
    )?;
    Ok(())
}

/// Writes families of constant samples (values read at this scrape) to the encoder.
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    /// A counter's name without the `_total` the encoder appends.
    fn counter_name(name: &'static str) -> &'static str {
        name.strip_suffix("_total")
            .expect("a counter's name ends in _total")
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &str,
        v: impl EncodeCounterValue,
    ) -> std::fmt::Result {
        let e =
            self.0
                .encode_descriptor(Self::counter_name(name), help, None, MetricType::Counter)?;
        ConstCounter::new(v).encode(e)
    }

    fn gauge(
        &mut self,
        name: &'static str,
        help: &str,
        v: impl EncodeGaugeValue,
    ) -> std::fmt::Result {
        let e = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(e)
    }

    /// A counter with one label, one sample per `(label value, count)`.
    fn counter_by<'l, V: EncodeCounterValue>(
        &mut self,
        name: &'static str,
        help: &str,
        label: &'static str,
        samples: impl IntoIterator<Item = (&'l str, V)>,
    ) -> std::fmt::Result {
        let mut e =
            self.0
                .encode_descriptor(Self::counter_name(name), help, None, MetricType::Counter)?;
        for (value, v) in samples {
            ConstCounter::new(v).encode(e.encode_family(&labels(label, value))?)?;
        }
        Ok(())
    }

    /// A gauge with one label, one sample per `(label value, value)`.
    fn gauge_by<'l, V: EncodeGaugeValue>(
        &mut self,
        name: &'static str,
        help: &str,
        label: &'static str,
        samples: impl IntoIterator<Item = (&'l str, V)>,
    ) -> std::fmt::Result {
        let mut e = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value, v) in samples {
            ConstGauge::new(v).encode(e.encode_family(&labels(label, value))?)?;
        }
        Ok(())
    }
}

fn labels<'l>(name: &'static str, value: &'l str) -> impl EncodeLabelSet + 'l {
    [(name, value)]
}
