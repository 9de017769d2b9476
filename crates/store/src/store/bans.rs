//! The store's side of bans (see `crate::ban`): adding them durably, loading them at
//! open, and the lurker that removes what they cover.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::ban::{
    covers_in, decode_file, decode_fill_bans, encode_file, encode_fill_bans, Ban, BanExpr, BanInfo,
    RemoteForm, BANS_FILE, BANS_TMP, FILL_BANS_FILE, FILL_BANS_TMP, FLOOR_FILE, FLOOR_TMP,
    MAX_BANS, MAX_BAN_LEN, MAX_FILL_BANS,
};
use crate::cold::VOID_ALL;
use crate::error::{display_chain, OpenError, StoreError};
use crate::index::Entry;
use crate::index::LIST_SCAN_CHUNK;
use crate::layout::{read_small_file, unlink_if_exists, write_file_atomic};
use crate::tier::Kind;

use super::{now_ns, Inner, Store};

impl Inner {
    /// Writes the ban file for `list` (atomically, fsynced).
    fn persist_bans(&self, list: &[Arc<Ban>]) -> Result<(), StoreError> {
        write_file_atomic(
            &self.tier(Kind::Disk).dirs.data,
            BANS_TMP,
            BANS_FILE,
            &encode_file(list),
            &self.poison,
        )
    }

    /// Raises the fill floor to `stamp` (never lowers it), durably.
    fn raise_fill_floor(&self, stamp: u64) -> Result<(), StoreError> {
        if stamp <= self.fill_floor.load(Ordering::Acquire) {
            return Ok(());
        }
        let text = stamp.to_string();
        let line = format!(
            "{text} {:016x}\n",
            xxhash_rust::xxh3::xxh3_64(text.as_bytes())
        );
        write_file_atomic(
            &self.tier(Kind::Disk).dirs.data,
            FLOOR_TMP,
            FLOOR_FILE,
            line.as_bytes(),
            &self.poison,
        )?;
        self.fill_floor.store(stamp, Ordering::Release);
        Ok(())
    }

    /// Loads the fill floor at open. A damaged file is not trusted either way: the floor
    /// is now (nothing older is read through), with a WARN, and the store opens.
    fn load_fill_floor(&self) -> Result<(), OpenError> {
        let dir = &self.tier(Kind::Disk).dirs.data;
        let _ = unlink_if_exists(dir, FLOOR_TMP);
        let data = read_small_file(dir, FLOOR_FILE, 64).map_err(|e| OpenError::Io {
            context: format!("reading the fill floor {FLOOR_FILE}"),
            source: e,
        })?;
        let Some(data) = data else { return Ok(()) };
        let text = String::from_utf8_lossy(&data);
        let floor = text
            .strip_suffix('\n')
            .and_then(|l| l.split_once(' '))
            .filter(|(n, sum)| {
                u64::from_str_radix(sum, 16).ok() == Some(xxhash_rust::xxh3::xxh3_64(n.as_bytes()))
            })
            .and_then(|(n, _)| n.parse::<u64>().ok());
        match floor {
            Some(floor) => self.fill_floor.store(floor, Ordering::Release),
            None => {
                tracing::warn!(
                    file = FLOOR_FILE,
                    "the fill floor is damaged: taking now as the floor, so no version \
                     older than this start is read through from the cold tier"
                );
                let now = now_ns();
                if let Err(e) = self.raise_fill_floor(now) {
                    // Held in memory all the same; the next start finds it damaged again.
                    self.fill_floor.fetch_max(now, Ordering::AcqRel);
                    tracing::warn!(error = %display_chain(&e), "cannot rewrite the fill floor");
                }
            }
        }
        Ok(())
    }

    /// Keeps `retired` (local bans the lurker is retiring, with a cold tier attached)
    /// for fills, durably: the tier still holds the versions they covered. Beyond
    /// [`MAX_FILL_BANS`] the oldest go, the fill floor first raised to the newest of them.
    fn keep_for_fills(&self, retired: &[Arc<Ban>]) -> Result<(), StoreError> {
        let mut list = self.fill_bans.snapshot();
        for b in retired {
            let known = list
                .iter()
                .any(|k| k.info.stamp == b.info.stamp && k.info.expr == b.info.expr);
            if !known {
                list.push(b.clone());
            }
        }
        list.sort_by_key(|b| b.info.stamp);
        let over = list.len().saturating_sub(MAX_FILL_BANS);
        if over > 0 {
            let floor = list[over - 1].info.stamp;
            self.raise_fill_floor(floor)?;
            list.drain(..over);
            tracing::info!(
                floor_ns = floor,
                kept = MAX_FILL_BANS,
                "more retired local bans than are kept for fills: versions older than the \
                 oldest kept are no longer read through from the cold tier here"
            );
        }
        write_file_atomic(
            &self.tier(Kind::Disk).dirs.data,
            FILL_BANS_TMP,
            FILL_BANS_FILE,
            &encode_fill_bans(&list),
            &self.poison,
        )?;
        self.fill_bans.set(list);
        Ok(())
    }

    /// Loads the retired bans kept for fills at open. A damaged file is not trusted: the
    /// fill floor rises to now (nothing older is read through), with a WARN, the file is
    /// emptied, and the store opens.
    fn load_fill_bans(&self) -> Result<(), OpenError> {
        let dir = &self.tier(Kind::Disk).dirs.data;
        let _ = unlink_if_exists(dir, FILL_BANS_TMP);
        let max = (MAX_FILL_BANS * (20 + MAX_BAN_LEN) + 20) as u64 + 1;
        let data = read_small_file(dir, FILL_BANS_FILE, max).map_err(|e| OpenError::Io {
            context: format!("reading the retired bans kept for fills, {FILL_BANS_FILE}"),
            source: e,
        })?;
        let Some(data) = data else { return Ok(()) };
        match decode_fill_bans(&data) {
            Ok(list) => {
                if let Some(last) = list.last() {
                    self.clock.fetch_max(last.info.stamp, Ordering::AcqRel);
                }
                self.fill_bans.set(list);
            }
            Err(detail) => {
                tracing::warn!(
                    file = FILL_BANS_FILE,
                    %detail,
                    "the retired bans kept for fills are damaged: taking now as the fill \
                     floor, so no version older than this start is read through from the \
                     cold tier"
                );
                let now = now_ns();
                let emptied = self.raise_fill_floor(now).and_then(|()| {
                    write_file_atomic(
                        dir,
                        FILL_BANS_TMP,
                        FILL_BANS_FILE,
                        &encode_fill_bans(&[]),
                        &self.poison,
                    )
                });
                if let Err(e) = emptied {
                    // The floor is held in memory all the same.
                    self.fill_floor.fetch_max(now, Ordering::AcqRel);
                    tracing::warn!(error = %display_chain(&e), "cannot rewrite the retired bans kept for fills");
                }
            }
        }
        Ok(())
    }

    /// Loads the ban file at open. A damaged file refuses the open (see docs/STORAGE.md).
    pub(crate) fn load_bans(&self) -> Result<(), OpenError> {
        self.load_fill_floor()?;
        self.load_fill_bans()?;
        let dir = &self.tier(Kind::Disk).dirs.data;
        let path = self.tier(Kind::Disk).dirs.path.join(BANS_FILE);
        let _ = unlink_if_exists(dir, BANS_TMP);
        let max = (MAX_BANS * (20 + MAX_BAN_LEN) + 20) as u64 + 1;
        let data = read_small_file(dir, BANS_FILE, max).map_err(|e| OpenError::Io {
            context: format!("reading the ban file {}", path.display()),
            source: e,
        })?;
        let Some(data) = data else { return Ok(()) };
        let list = decode_file(&data).map_err(|detail| OpenError::Format {
            path: path.clone(),
            detail: format!(
                "the ban file is damaged ({detail}); refusing to open, since serving \
                 without it could serve banned objects. Restore it, or remove it (and the \
                 objects it may cover) by hand"
            ),
        })?;
        if let Some(last) = list.last() {
            self.clock.fetch_max(last.info.stamp, Ordering::AcqRel);
        }
        if !list.is_empty() {
            tracing::info!(bans = list.len(), "loaded active bans");
        }
        self.bans.set(list);
        Ok(())
    }

    /// Removes the version of `key` that a ban covers, and every older version another
    /// tier holds (removing the newest must never bring back an older one).
    pub(crate) fn remove_banned(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        self.check_writable()?;
        let removed = {
            let _c = self.catalog.lock();
            let mut removed = Vec::new();
            for kind in Kind::ALL {
                let tier = self.tier(kind);
                let Some(v) = tier.index.read().get(key).map(Entry::version) else {
                    continue;
                };
                if v > version {
                    continue;
                }
                let r = tier.remove(
                    &self.cfg,
                    &self.poison,
                    key,
                    Some(v),
                    false,
                    self.reserve_upto(),
                )?;
                if let Some((id, _)) = r {
                    self.policy.lock().of(kind).remove(id as u64);
                    removed.push((kind, v));
                }
            }
            removed
        };
        for (kind, v) in &removed {
            self.tier(*kind).unlink_object(key, *v);
        }
        if removed.is_empty() {
            return Ok(false);
        }
        self.bans.removed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %key.escape_ascii(), version, "removed a banned object");
        Ok(true)
    }

    /// One pass of the ban lurker: removes every object the active bans cover, makes the
    /// removals durable, then retires the bans the pass looked at. Returns how many bans
    /// it retired.
    ///
    /// Every object with a lower stamp than a ban was published before the ban was
    /// recorded (both take their stamps under the catalog lock), so a pass that starts
    /// after the ban sees all of them.
    pub(crate) fn lurk(&self) -> Result<usize, StoreError> {
        let snap = self.bans.snapshot();
        let Some(newest) = snap.last().map(|b| b.info.stamp) else {
            return Ok(0);
        };
        self.check_writable()?;
        let mut victims: Vec<(Box<[u8]>, u64)> = Vec::new();
        for tier in self.tiers() {
            let mut slot = 0usize;
            loop {
                let idx = tier.index.read();
                let end = idx.slot_count();
                let stop = slot.saturating_add(LIST_SCAN_CHUNK).min(end);
                for id in slot..stop {
                    let Some(e) = idx.by_id(id as u32) else {
                        continue;
                    };
                    if e.mtime_ns() < newest && covers_in(&snap, e.key(), e.mtime_ns(), || e.meta())
                    {
                        victims.push((Box::from(e.key()), e.version()));
                    }
                }
                drop(idx);
                slot = stop;
                if slot >= end {
                    break;
                }
                if self.stop.load(Ordering::Acquire) {
                    return Ok(0);
                }
            }
        }
        let mut removed = 0;
        for (key, version) in &victims {
            if self.remove_banned(key, *version)? {
                removed += 1;
            }
        }
        if removed > 0 {
            // The removals are durable before the bans that covered them go.
            self.tier(Kind::Disk)
                .checkpoint(&self.cfg, &self.poison, false)?;
        }
        let _w = self.bans.write.lock();
        let before = self.bans.snapshot();
        let keep: Vec<Arc<Ban>> = before
            .iter()
            .filter(|b| b.info.stamp > newest)
            .cloned()
            .collect();
        // A local ban retired with a cold tier attached: the tier still holds what it
        // covered, and nothing there says so. It is kept to refuse the fills it covers
        // (durably, before it goes from the ban file).
        if self.cold.get().is_some() {
            let local: Vec<Arc<Ban>> = before
                .iter()
                .filter(|b| b.info.stamp <= newest && b.is_local())
                .cloned()
                .collect();
            if !local.is_empty() {
                self.keep_for_fills(&local)?;
            }
        }
        self.persist_bans(&keep)?;
        let retired = before.len() - keep.len();
        self.bans.set(keep);
        tracing::debug!(removed, retired, "ban lurker pass");
        Ok(retired)
    }

    /// The ban lurker thread: a pass every [`crate::StoreConfig::ban_lurker_interval`] while
    /// there are bans.
    pub(crate) fn lurker(&self) {
        let mut next = Instant::now() + self.cfg.ban_lurker_interval;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                if !self.nap(left) {
                    return;
                }
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            next = Instant::now() + self.cfg.ban_lurker_interval;
            if self.bans.is_empty() || self.poison.is_set() {
                continue;
            }
            if let Err(e) = self.lurk() {
                tracing::warn!(error = %display_chain(&e), "ban lurker pass failed; the bans stay");
            }
        }
    }
}

impl Store {
    /// Adds a ban: from now on every object committed before it (a lower stamp) that
    /// `expr` matches is absent to every read, in every tier. The ban is durable (the ban
    /// file is fsynced) before this returns. Errors: [`StoreError::InvalidBan`] for an
    /// expression that does not parse, [`StoreError::TooManyBans`] beyond [`crate::StoreConfig::max_bans`].
    pub fn ban(&self, expr: &[u8]) -> Result<BanInfo, StoreError> {
        let parsed = BanExpr::parse(expr)?;
        // What the cold tier hears, decided before the expression goes into the list.
        let form = match parsed.remote_form() {
            RemoteForm::Purge(p) => Some((true, p.to_vec())),
            RemoteForm::Delete(k) => Some((false, k.to_vec())),
            RemoteForm::Local => None,
        };
        let info = self.add_ban(expr, parsed, None)?;
        if let Some(cold) = self.inner.cold.get() {
            // A ban the cold tier can hold goes there as what it is, for every host: it
            // is retired here once nothing local is left under it, and a later fill of
            // what it covered must then still be refused (by the tier's tombstone, or
            // by the purge its client knows). Any other stays a ban of this host.
            match form {
                Some((true, prefix)) => cold.purged(&prefix, info.stamp),
                Some((false, key)) => {
                    self.inner.tombstones.lock().record_here(&key, info.stamp);
                    cold.deleted(&key, info.stamp);
                }
                None => cold.banned(&info),
            }
        }
        Ok(info)
    }

    /// Adds a ban another host made (from the cold tier's invalidation log), keeping its
    /// stamp: objects committed here before that stamp that `expr` matches become absent,
    /// as if the ban had been added here then. A ban already in force (same stamp and
    /// expression) is not added twice. Not reported back to the cold tier.
    pub fn apply_cold_ban(&self, expr: &[u8], stamp: u64) -> Result<BanInfo, StoreError> {
        // A write here from now on is later than the ban.
        self.inner.observe_stamp(stamp, false);
        self.add_ban(expr, BanExpr::parse(expr)?, Some(stamp))
    }

    /// Adds a ban stamped now, or at `stamp` (kept in stamp order).
    fn add_ban(
        &self,
        expr: &[u8],
        parsed: BanExpr,
        stamp: Option<u64>,
    ) -> Result<BanInfo, StoreError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        // A fill being fetched that the ban may cover must not land after it: the ban
        // is retired once nothing here matches it, possibly before the fill's commit.
        // Another host's ban covers the versions stamped before it; one made here, all.
        let below = stamp.unwrap_or(VOID_ALL);
        inner.fences.void_where(below, |k| parsed.may_match_key(k));
        let _w = inner.bans.write.lock();
        let mut list = inner.bans.snapshot();
        if let Some(s) = stamp {
            if let Some(b) = list
                .iter()
                .find(|b| b.info.stamp == s && *b.info.expr == *expr)
            {
                return Ok(b.info.clone());
            }
        }
        let max = inner.cfg.max_bans.min(MAX_BANS);
        if list.len() >= max {
            return Err(StoreError::TooManyBans {
                active: list.len(),
                max,
            });
        }
        let stamp = match stamp {
            Some(s) => s,
            None => {
                let _c = inner.catalog.lock();
                inner.stamp()
            }
        };
        let info = BanInfo {
            stamp,
            added_ns: now_ns(),
            expr: expr.into(),
        };
        // The list stays in stamp order (`covers_in` walks it newest first).
        let at = list.partition_point(|b| b.info.stamp <= stamp);
        list.insert(at, Arc::new(Ban::with_expr(info.clone(), parsed)));
        inner.persist_bans(&list)?;
        inner.bans.set(list);
        inner.bans.added.fetch_add(1, Ordering::Relaxed);
        tracing::info!(stamp, expr = %expr.escape_ascii(), "ban added");
        Ok(info)
    }

    /// The active bans, oldest first.
    pub fn bans(&self) -> Vec<BanInfo> {
        self.inner.bans.infos()
    }

    /// Runs one ban lurker pass now (the lurker thread also runs one every
    /// [`crate::StoreConfig::ban_lurker_interval`]): removes the objects the active bans cover,
    /// makes that durable, and retires those bans. Returns how many it retired.
    pub fn lurk_bans(&self) -> Result<usize, StoreError> {
        self.inner.lurk()
    }
}
