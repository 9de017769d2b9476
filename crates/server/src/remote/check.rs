//! Comparing local objects with the remote tier (`POST /v1/remote/check`,
//! `objmapper remote check`).

use objmapper_store::Store;

use super::RemoteTier;

/// What [`RemoteTier::check`] found, comparing local objects with the remote tier.
#[derive(Debug, Default)]
pub(crate) struct CheckReport {
    /// Local persistent objects compared.
    pub(crate) checked: u64,
    /// Same version on both sides (same commit stamp and checksum).
    pub(crate) same: u64,
    /// Waiting in the upload queue, or being uploaded.
    pub(crate) pending: Vec<Box<[u8]>>,
    /// Not on the remote tier and not queued (dropped, or lost).
    pub(crate) missing: Vec<Box<[u8]>>,
    /// On the remote tier with another version: newer there (another host wrote it
    /// later) or older (the upload has not happened).
    pub(crate) differ: Vec<Box<[u8]>>,
    /// Remote lookups that failed.
    pub(crate) errors: u64,
    /// How many were pending, missing and different, all of them (the lists stop at
    /// [`CHECK_LIST_MAX`]).
    pub(crate) counts: [u64; 3],
}

/// Keys listed per kind in a [`CheckReport`].
const CHECK_LIST_MAX: usize = 100;

impl RemoteTier {
    /// Compares up to `limit` local persistent objects under `prefix` with the remote
    /// tier (one HEAD each). Blocks the calling thread (not a worker's).
    pub(crate) fn check(&self, store: &Store, prefix: &[u8], limit: usize) -> CheckReport {
        let mut report = CheckReport::default();
        let Some(rt) = &self.rt else { return report };
        let mut cursor = None;
        let mut metas = Vec::new();
        'list: loop {
            let page = store.list(prefix, cursor, 1024);
            for o in page.objects {
                if !o.meta.ephemeral {
                    metas.push(o.meta);
                    if metas.len() >= limit {
                        break 'list;
                    }
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let push = |v: &mut Vec<Box<[u8]>>, n: &mut u64, k: &[u8]| {
            *n += 1;
            if v.len() < CHECK_LIST_MAX {
                v.push(k.into());
            }
        };
        for m in metas {
            report.checked += 1;
            let [pending, missing, differ] = &mut report.counts;
            if self.upload_pending(&m.key, m.version) {
                push(&mut report.pending, pending, &m.key);
                continue;
            }
            let r = rt.block_on(self.core.remote.head(&m.key));
            self.core.note("check", &r);
            match r {
                Ok(Some(f)) if f.stamp.time_ns == m.mtime_ns && f.record.checksum == m.checksum => {
                    report.same += 1
                }
                Ok(Some(_)) => push(&mut report.differ, differ, &m.key),
                Ok(None) => push(&mut report.missing, missing, &m.key),
                Err(_) => report.errors += 1,
            }
        }
        report
    }
}
