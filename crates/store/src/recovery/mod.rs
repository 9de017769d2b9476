//! Opening a data directory: locking, format check and crash recovery.
//! The steps are described normatively in docs/STORAGE.md ("Recovery").

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Mutex, RwLock};
use rustix::fs::{FlockOperation, Mode, OFlags};
use xxhash_rust::xxh3::Xxh3Default;

use crate::catalog::{self, Damage, Journal};
use crate::error::{display_chain, OpenError, StoreError};
use crate::index::{Entry, Index};
use crate::journal::{self, Framing, RawRecord, RESERVE_RECORD_LEN};
use crate::layout::{self, key_hash, object_rel_path, Dirs, LOST_FOUND};
use crate::meta::ObjectMeta;
use crate::sync::Poison;
use crate::tier::{Kind, Tier};

mod open;

fn oio<E: Into<io::Error>>(context: impl Into<String>) -> impl FnOnce(E) -> OpenError {
    let context = context.into();
    move |e| OpenError::Io {
        context,
        source: e.into(),
    }
}

/// A tier as recovery found it.
pub(crate) struct OpenedTier {
    pub(crate) tier: Tier,
    pub(crate) max_version: u64,
    pub(crate) max_reserve: u64,
    /// Slot ids of entries whose data must be verified (unclean shutdown, disk tier).
    pub(crate) to_verify: Vec<u32>,
}

/// Opens (creating if needed) one tier's directory: lock, format check,
/// staging wipe, journal replay with torn-tail truncation. The index is
/// complete on return; verification of unsynced data is the caller's.
pub(crate) fn open_tier(kind: Kind, path: &Path, poison: &Poison) -> Result<OpenedTier, OpenError> {
    let path = path.to_path_buf();
    if kind == Kind::Memory {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(oio(format!(
                "creating memory tier directory {}",
                path.display()
            )))?;
    }
    std::fs::create_dir_all(&path)
        .map_err(oio(format!("creating data directory {}", path.display())))?;
    let data = layout::open_dir_path(&path)
        .map_err(oio(format!("opening directory {}", path.display())))?;

    // 1. Lock, check the format, create directories, wipe staging/.
    let lock_fd = lock(&data, &path)?;
    let format = check_format(&data, &path, poison)?;
    layout::mkdir_if_missing(&data, layout::OBJECTS).map_err(oio("creating objects/"))?;
    layout::mkdir_if_missing(&data, layout::STAGING).map_err(oio("creating staging/"))?;
    let objects = layout::open_dir(&data, layout::OBJECTS).map_err(oio("opening objects/"))?;
    let staging = layout::open_dir(&data, layout::STAGING).map_err(oio("opening staging/"))?;
    for sub in 0..=255u8 {
        layout::mkdir_if_missing(&objects, &format!("{sub:02x}"))
            .map_err(oio("creating objects/ subdirectories"))?;
    }
    poison.sync("fsync objects/", rustix::fs::fsync(&objects))?;
    poison.sync("fsync data directory", rustix::fs::fsync(&data))?;
    wipe_staging(&path.join(layout::STAGING))?;
    for leftover in [
        layout::JOURNAL_COMPACT,
        layout::CHECKPOINT_TMP,
        layout::FORMAT_TMP,
    ] {
        layout::unlink_if_exists(&data, leftover).map_err(oio(format!("removing {leftover}")))?;
    }

    // 2. Clean-shutdown marker and checkpoint.
    let clean = layout::exists(&data, layout::CLEAN).map_err(oio("checking CLEAN marker"))?;
    if clean {
        layout::unlink_if_exists(&data, layout::CLEAN).map_err(oio("removing CLEAN marker"))?;
        poison.sync("fsync data directory", rustix::fs::fsync(&data))?;
    }
    let ckpt_off = match layout::read_small_file(&data, layout::CHECKPOINT, 64)
        .map_err(oio("reading checkpoint"))?
    {
        None => 0,
        Some(b) => layout::decode_checkpoint(&b).unwrap_or_else(|| {
            tracing::warn!("checkpoint file is corrupt; verifying every object");
            0
        }),
    };
    let highwater = layout::read_small_file(&data, catalog::HIGHWATER, 64)
        .map_err(oio("reading HIGHWATER"))?
        .and_then(|b| {
            let hw = catalog::decode_highwater(&b);
            if hw.is_none() {
                tracing::warn!(tier = ?kind, "HIGHWATER is corrupt; ignoring it");
            }
            hw
        });

    // 3. Replay the journal. A damaged record costs that record: replay
    //    resynchronises on the next good one (docs/STORAGE.md, "Faults").
    let jfd = rustix::fs::openat(
        &data,
        layout::JOURNAL,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(oio("opening journal"))?;
    let jfile = File::from(jfd);
    let jlen = jfile.metadata().map_err(oio("reading journal size"))?.len();
    let head = catalog::read_region(&jfile, 0, journal::FILE_HEADER_LEN as u64)
        .map_err(oio("reading journal"))?;
    let head = &head[..];
    // Why the index may be missing records (damage, a lost journal), if it may.
    let mut suspect: Option<String> = None;
    let mut rewrite = false;
    let (framing, start) = match journal::decode_file_header(head) {
        Some(salt) => {
            if let Some((_, hw_salt)) = highwater.filter(|&(_, s)| s != salt) {
                tracing::warn!(tier = ?kind, header = salt, highwater = hw_salt, "HIGHWATER names another journal salt; using the journal's");
            }
            (Framing::V3 { salt }, journal::FILE_HEADER_LEN as u64)
        }
        None if jlen == 0 => {
            if format.existed && !format.legacy {
                suspect = Some("the journal is missing or empty".into());
            }
            rewrite = true;
            let salt = highwater.map_or_else(random_salt, |(_, s)| s);
            (Framing::V3 { salt }, jlen)
        }
        None if format.legacy => (Framing::Legacy, 0),
        None => {
            rewrite = true;
            match highwater {
                Some((_, salt)) => {
                    suspect = Some("the journal's file header is damaged".into());
                    (Framing::V3 { salt }, journal::FILE_HEADER_LEN as u64)
                }
                None => {
                    suspect = Some(
                        "the journal's file header is damaged and HIGHWATER holds no salt: \
                         no record can be checked"
                            .into(),
                    );
                    (
                        Framing::V3 {
                            salt: random_salt(),
                        },
                        jlen,
                    )
                }
            }
        }
    };
    if framing == Framing::Legacy {
        rewrite = true;
    }
    // Replay straight into the index: one allocation per live entry, made
    // from the validated record bytes, and no temporary map (which both
    // costs time and leaves the heap fragmented for the life of the process).
    let mut index = Index::with_capacity((jlen / 96) as usize);
    // Record offsets by slot id, only needed to pick what to verify.
    let track = !clean && kind == Kind::Disk;
    let mut offsets: Vec<u64> = Vec::new();
    let (mut max_version, mut max_reserve) = (0u64, highwater.map_or(0, |(u, _)| u));
    // The highest deleted version per key hash: after damage, a file the index does
    // not name but a DEL does is a deleted object, never one to restore.
    let mut deleted: std::collections::HashMap<u128, u64> = std::collections::HashMap::new();
    let end = catalog::replay(&jfile, framing, start, |off, rec| match rec {
        RawRecord::Put(payload, view) => {
            max_version = max_version.max(view.version);
            let (id, _) = index.replace(Entry::from_payload(payload), 0);
            if track {
                let id = id as usize;
                if offsets.len() <= id {
                    offsets.resize(id + 1, 0);
                }
                offsets[id] = off;
            }
        }
        RawRecord::Del { key, version } => {
            max_version = max_version.max(version);
            let v = deleted.entry(key_hash(key)).or_insert(version);
            *v = (*v).max(version);
            if index.get(key).map(Entry::version) == Some(version) {
                index.take(key);
            }
        }
        RawRecord::Reserve { upto } => max_reserve = max_reserve.max(upto),
    })
    .map_err(oio("reading journal"))?;
    let mut damaged = end.damaged.clone();
    if start > 0 && jlen > 0 && journal::decode_file_header(head).is_none() {
        damaged.insert(
            0,
            Damage {
                start: 0,
                end: start.min(jlen),
                reason: "damaged file header".into(),
            },
        );
    }
    for d in &end.damaged {
        tracing::error!(
            tier = ?kind,
            offset = d.start,
            bytes = d.end - d.start,
            reason = %d.reason,
            "journal damaged: skipped a bad region and resynchronised on the next good record"
        );
    }
    if !end.damaged.is_empty() {
        rewrite = true;
        suspect.get_or_insert_with(|| {
            format!(
                "{} damaged journal region(s), {} bytes",
                end.damaged.len(),
                end.damaged.iter().map(|d| d.end - d.start).sum::<u64>()
            )
        });
    }
    let mut truncate_at = None;
    if let Some(t) = &end.tail {
        // The normal crash case is a torn last record past the checkpoint. A bad
        // tail inside the synced part, or after a clean shutdown, is damage.
        let torn = !clean && t.start >= ckpt_off;
        if torn {
            tracing::warn!(
                dropped_bytes = t.end - t.start,
                offset = t.start,
                reason = %t.reason,
                tier = ?kind,
                "journal has a torn tail; truncating it"
            );
        } else {
            tracing::error!(
                dropped_bytes = t.end - t.start,
                offset = t.start,
                reason = %t.reason,
                checkpoint = ckpt_off,
                clean,
                tier = ?kind,
                "journal damaged at its end (inside the synced part, or after a clean shutdown)"
            );
            suspect.get_or_insert_with(|| "the journal's last records are damaged".into());
            damaged.push(t.clone());
        }
        truncate_at = Some(t.start);
    }
    let live_bytes = index.iter().map(Entry::record_len).sum::<u64>()
        + (journal::FILE_HEADER_LEN + RESERVE_RECORD_LEN) as u64;
    let salt = match framing {
        Framing::V3 { salt } => salt,
        Framing::Legacy => highwater.map_or_else(random_salt, |(_, s)| s),
    };
    let hw_fd = rustix::io::dup(&data).map_err(oio("duplicating the data directory fd"))?;
    let mut journal = Journal::new(
        jfile,
        end.file_len,
        live_bytes,
        salt,
        hw_fd,
        highwater.map_or(0, |(u, _)| u),
    );

    // 3b. After damage or a lost journal, the index may lack records: keep
    //     every file it cannot account for in lost+found/, never delete it.
    let lost = path.join(LOST_FOUND);
    let mut readmitted: Vec<u32> = Vec::new();
    if let Some(why) = &suspect {
        tracing::error!(
            tier = ?kind,
            dir = %path.display(),
            why = %why,
            "the journal may have lost records: object files it does not account for are re-admitted \
             from their labels or go to lost+found/, objects whose files are missing are dropped \
             (docs/STORAGE.md, \"Faults: a damaged or lost journal\")"
        );
        layout::mkdir_if_missing(&data, LOST_FOUND).map_err(oio("creating lost+found/"))?;
        let lf = layout::open_dir(&data, LOST_FOUND).map_err(oio("opening lost+found/"))?;
        save_damage(&journal, &lf, &damaged, kind)?;
        let dropped = drop_missing(&objects, &lf, &mut index, kind);
        let (moved, back, max_file) =
            account_for_files(&path, &objects, &lf, &mut index, &deleted, kind)?;
        readmitted = back;
        // Re-admitted entries have no record yet: the rewrite gives them one.
        rewrite |= !readmitted.is_empty();
        max_version = max_version.max(max_file).max(max_name_version(&lost));
        if moved > 0 || dropped > 0 || !readmitted.is_empty() {
            tracing::error!(
                tier = ?kind,
                readmitted = readmitted.len(),
                moved_to_lost_found = moved,
                dropped_missing = dropped,
                lost_found = %lost.display(),
                "journal damage: objects re-admitted from their labels, other files kept in lost+found/"
            );
        }
        // The moves must be durable before the journal no longer shows damage.
        poison.sync("syncfs after lost+found", rustix::fs::syncfs(&data))?;
    }
    if rewrite {
        let upto = max_version.max(max_reserve);
        let new_len = journal.compact(&data, index.iter(), upto, poison)?;
        layout::write_file_atomic(
            &data,
            layout::CHECKPOINT_TMP,
            layout::CHECKPOINT,
            &layout::encode_checkpoint(new_len),
            poison,
        )?;
        tracing::info!(tier = ?kind, bytes = new_len, legacy = framing == Framing::Legacy, "rewrote the journal");
    } else if let Some(at) = truncate_at {
        journal.truncate_tail(at, poison)?;
    }
    if highwater.is_none_or(|(u, s)| s != salt || u < max_version.max(max_reserve)) {
        match journal.record_highwater(max_version.max(max_reserve), poison) {
            Ok(()) => {}
            // The journal holds the records that say where versions stand; the file only
            // matters if the journal is lost, and is rewritten at the next RESERVE (or
            // the next open) once there is room.
            Err(StoreError::Io { context, source }) if crate::tier::is_full(&source) => {
                tracing::warn!(tier = ?kind, dir = %path.display(), "skipped raising HIGHWATER: the filesystem is full ({context}: {source}); retried at the next version reservation or open");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if format.legacy {
        layout::write_file_atomic(
            &data,
            layout::FORMAT_TMP,
            layout::FORMAT,
            layout::FORMAT_CONTENT,
            poison,
        )?;
        tracing::info!(tier = ?kind, "upgraded the data directory to format 3");
    }

    // 4. Entries written after the checkpoint need their data verified
    //    unless the previous run shut down cleanly. tmpfs cannot hold a torn
    //    file after a process crash (files are renamed into place complete)
    //    and loses everything on power loss, so the memory tier skips this.
    let mut to_verify: Vec<u32> = if track {
        index
            .iter_ids()
            .filter(|(id, _, _)| offsets.get(*id as usize).is_some_and(|&o| o >= ckpt_off))
            .map(|(id, _, _)| id)
            .collect()
    } else {
        Vec::new()
    };
    // Re-admitted files after a crash may be as torn as any file written after the
    // checkpoint: check them the same way.
    if track && !readmitted.is_empty() {
        to_verify.extend(&readmitted);
        to_verify.sort_unstable();
        to_verify.dedup();
    }
    drop(offsets);
    let bytes = index.iter().map(Entry::size).sum();
    tracing::info!(
        tier = ?kind,
        objects = index.len(),
        journal_bytes = journal.len,
        clean,
        checkpoint = ckpt_off,
        to_verify = to_verify.len(),
        "replayed journal"
    );
    let filesystem = layout::filesystem(&data);
    Ok(OpenedTier {
        tier: Tier {
            kind,
            dirs: Dirs {
                path,
                data,
                objects,
                staging,
            },
            lock_fd: Mutex::new(Some(lock_fd)),
            open_files: Mutex::new(Default::default()),
            bodies: Mutex::new(Default::default()),
            index: RwLock::new(index),
            journal: Mutex::new(journal),
            ckpt: Mutex::new((0, 0)),
            bytes: AtomicU64::new(bytes),
            first_version: 0,
            compactions: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            full_errors: AtomicU64::new(0),
            full: AtomicBool::new(false),
            filesystem,
            reserve_short: AtomicBool::new(false),
            unlabelled: AtomicU64::new(0),
            journal_damage: damaged.len() as u64,
            readmitted: readmitted.len() as u64,
        },
        max_version,
        max_reserve,
        to_verify,
    })
}

fn lock(data: &OwnedFd, path: &Path) -> Result<OwnedFd, OpenError> {
    let lock_path = path.join(layout::LOCK);
    let fd = rustix::fs::openat(
        data,
        layout::LOCK,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(oio(format!("opening {}", lock_path.display())))?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(OpenError::Locked { path: lock_path }),
        Err(e) => Err(oio(format!("locking {}", lock_path.display()))(e)),
    }
}

/// What `FORMAT` said.
struct FormatState {
    /// The file existed (the directory is not new).
    existed: bool,
    /// Format 2: the journal has no file header; upgrade at open.
    legacy: bool,
}

fn check_format(data: &OwnedFd, path: &Path, poison: &Poison) -> Result<FormatState, OpenError> {
    let format_path = path.join(layout::FORMAT);
    match layout::read_small_file(data, layout::FORMAT, 256).map_err(oio("reading FORMAT"))? {
        Some(b) if b == layout::FORMAT_CONTENT => Ok(FormatState {
            existed: true,
            legacy: false,
        }),
        Some(b) if b == layout::FORMAT_CONTENT_V2 => Ok(FormatState {
            existed: true,
            legacy: true,
        }),
        Some(b) => Err(OpenError::Format {
            path: format_path,
            detail: format!(
                "found {:?}, expected {:?}",
                String::from_utf8_lossy(&b),
                String::from_utf8_lossy(layout::FORMAT_CONTENT)
            ),
        }),
        None => {
            if layout::exists(data, layout::JOURNAL).map_err(oio("checking for journal"))? {
                return Err(OpenError::Format {
                    path: format_path,
                    detail: "missing, but a journal exists".into(),
                });
            }
            layout::write_file_atomic(
                data,
                layout::FORMAT_TMP,
                layout::FORMAT,
                layout::FORMAT_CONTENT,
                poison,
            )?;
            Ok(FormatState {
                existed: false,
                legacy: false,
            })
        }
    }
}

/// A fresh random journal salt.
fn random_salt() -> u64 {
    crate::index::random_seed()
}

/// Copies each damaged region of the journal into `lost+found/` (for a person
/// to look at): `journal-<tier>-<unix secs>-<offset>.damaged`.
fn save_damage(
    journal: &Journal,
    lf: &OwnedFd,
    damaged: &[Damage],
    kind: Kind,
) -> Result<(), OpenError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for d in damaged {
        let bytes = journal
            .read_region(d.start, d.end - d.start)
            .map_err(oio("reading a damaged journal region"))?;
        let name = format!(
            "journal-{}-{now}-{}.damaged",
            match kind {
                Kind::Disk => "disk",
                Kind::Memory => "memory",
            },
            d.start
        );
        let fd = rustix::fs::openat(
            lf,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(oio(format!("creating lost+found/{name}")))?;
        File::from(fd)
            .write_all_at(&bytes, 0)
            .map_err(oio(format!("writing lost+found/{name}")))?;
    }
    Ok(())
}

/// Drops index entries whose object file is missing or has another size (a
/// lost `DEL`, or a lost newer `PUT` whose commit unlinked this version's
/// file): they would otherwise resurrect a deleted or superseded object. A
/// file of the wrong size is moved to `lost+found/`. Returns how many.
fn drop_missing(objects: &OwnedFd, lf: &OwnedFd, index: &mut Index, kind: Kind) -> usize {
    let mut gone: Vec<(Box<[u8]>, u64, bool)> = Vec::new();
    for e in index.iter() {
        let rel = object_rel_path(key_hash(e.key()), e.version());
        match rustix::fs::statat(objects, rel.as_cstr(), rustix::fs::AtFlags::empty()) {
            Ok(st) if st.st_size as u64 == e.size() => {}
            Ok(_) => gone.push((Box::from(e.key()), e.version(), true)),
            Err(_) => gone.push((Box::from(e.key()), e.version(), false)),
        }
    }
    for (key, version, present) in &gone {
        let rel = object_rel_path(key_hash(key), *version);
        tracing::warn!(
            tier = ?kind,
            key = %key.escape_ascii(),
            version,
            file = %rel,
            "journal damage: dropping an object whose file is {}",
            if *present { "of another size (moved to lost+found/)" } else { "missing" }
        );
        if *present {
            let name = rel
                .as_str()
                .split_once('/')
                .map_or(rel.as_str(), |(_, n)| n);
            let _ = rustix::fs::renameat(objects, rel.as_cstr(), lf, name);
        }
        index.take(key);
    }
    gone.len()
}

/// Accounts for every object file after journal damage. A file the index does
/// not name is re-admitted from its label (label.rs: its own record, kept in an
/// extended attribute) when the label is intact and names this very file, the
/// size matches, it has not expired, no `DEL` record deleted that version or a
/// later one of its key, and the index holds no newer version of the key. Every
/// other unreferenced file moves to `lost+found/` (same name; `NAME.deleted` when
/// a `DEL` record names that version or a later one of its key). Returns how many
/// moved, the ids of re-admitted entries, and the highest version named by any
/// object file (referenced or not).
fn account_for_files(
    path: &Path,
    objects: &OwnedFd,
    lf: &OwnedFd,
    index: &mut Index,
    deleted: &std::collections::HashMap<u128, u64>,
    kind: Kind,
) -> Result<(usize, Vec<u32>, u64), OpenError> {
    let live = |index: &Index| -> std::collections::HashSet<(u128, u64)> {
        index
            .iter()
            .map(|e| (key_hash(e.key()), e.version()))
            .collect()
    };
    let before = live(index);
    let mut files: Vec<(String, String, u128, u64)> = Vec::new();
    let mut max = 0;
    for sub in 0..=255u8 {
        let sub = format!("{sub:02x}");
        let dir = path.join(layout::OBJECTS).join(&sub);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(oio(format!("listing {}", dir.display()))(e)),
        };
        for ent in rd {
            let ent = ent.map_err(oio(format!("listing {}", dir.display())))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((hash, version)) = layout::parse_object_name(name) else {
                continue;
            };
            max = max.max(version);
            if layout::subdir_name(hash) == sub && before.contains(&(hash, version)) {
                continue;
            }
            files.push((sub.clone(), name.to_owned(), hash, version));
        }
    }
    // Re-admission, oldest first so that the newest labelled version of a key wins.
    let now = crate::meta::now_secs();
    files.sort_by_key(|f| f.3);
    let mut readmitted = Vec::new();
    for (sub, name, hash, version) in &files {
        if layout::subdir_name(*hash) != *sub || deleted.get(hash).is_some_and(|d| version <= d) {
            continue;
        }
        let rel = format!("{sub}/{name}");
        let why = match readmit(objects, &rel, *hash, *version, now) {
            Ok(meta)
                if index
                    .get(&meta.key)
                    .is_some_and(|e| e.version() >= *version) =>
            {
                "the index holds a newer version of its key"
            }
            Ok(meta) => match Entry::new(&meta) {
                Ok(entry) => {
                    let (id, _) = index.replace(entry, 0);
                    readmitted.push(id);
                    tracing::warn!(tier = ?kind, key = %meta.key.escape_ascii(), version, file = %rel, "journal damage: re-admitted an object from its file's label");
                    continue;
                }
                Err(_) => "its label does not pack",
            },
            Err(why) => why,
        };
        tracing::debug!(tier = ?kind, file = %rel, why, "not re-admitted");
    }
    let after = live(index);
    let mut moved = 0;
    for (sub, name, hash, version) in &files {
        if layout::subdir_name(*hash) == *sub && after.contains(&(*hash, *version)) {
            continue;
        }
        let rel = format!("{sub}/{name}");
        let to = if deleted.get(hash).is_some_and(|d| version <= d) {
            format!("{name}{DELETED_SUFFIX}")
        } else {
            name.clone()
        };
        match rustix::fs::renameat(objects, rel.as_str(), lf, to.as_str()) {
            Ok(()) => moved += 1,
            Err(e) => {
                tracing::warn!(file = %rel, error = %e, "could not move an unaccounted object file to lost+found/; left in place")
            }
        }
    }
    // Ids of entries replaced again by a newer re-admitted version are gone.
    readmitted.retain(|&id| index.by_id(id).is_some());
    Ok((moved, readmitted, max))
}

/// Reads and checks the label of the object file `rel` (named for `hash` and
/// `version`); the record it holds if the file can be re-admitted.
fn readmit(
    objects: &OwnedFd,
    rel: &str,
    hash: u128,
    version: u64,
    now: u64,
) -> Result<ObjectMeta, &'static str> {
    let fd = rustix::fs::openat(
        objects,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|_| "it cannot be opened")?;
    let file = File::from(fd);
    let meta = crate::label::read(&file).map_err(|e| match e {
        crate::label::LabelError::Missing => "it has no label",
        _ => "its label is damaged",
    })?;
    if key_hash(&meta.key) != hash || meta.version != version {
        return Err("its label names another file");
    }
    let st = rustix::fs::fstat(&file).map_err(|_| "fstat failed")?;
    if st.st_size as u64 != meta.size {
        return Err("its size differs from its label's");
    }
    if meta.is_expired_at(now) {
        return Err("it has expired");
    }
    Ok(meta)
}

/// Suffix of a `lost+found/` file whose version a `DEL` record deleted.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// The highest version named by an object file in `dir` (0 if none).
pub(crate) fn max_name_version(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            layout::parse_object_name(name.strip_suffix(DELETED_SUFFIX).unwrap_or(name))
                .map(|(_, v)| v)
        })
        .max()
        .unwrap_or(0)
}

/// Removes everything in staging/: files of PUTs interrupted by a crash.
fn wipe_staging(dir: &Path) -> Result<(), OpenError> {
    let mut removed = 0usize;
    let rd = std::fs::read_dir(dir).map_err(oio("listing staging/"))?;
    for ent in rd {
        let ent = ent.map_err(oio("listing staging/"))?;
        let p = ent.path();
        let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(oio(format!("removing {}", p.display())))?;
        removed += 1;
    }
    if removed > 0 {
        tracing::warn!(
            removed,
            "removed leftover staging files of interrupted PUTs"
        );
    }
    Ok(())
}

/// Verifies the data files of the entries in slots `ids` of the disk tier,
/// on all cores; returns (key, version) of the ones that fail, for the caller
/// to drop.
pub(crate) fn failed_verification(tier: &Tier, ids: &[u32]) -> Vec<(Box<[u8]>, u64)> {
    if ids.is_empty() {
        return Vec::new();
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = ids.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut buf = Vec::new();
                    let mut bad = Vec::new();
                    for &id in part {
                        let Some(meta) = tier.index.read().by_id(id).map(Entry::meta) else {
                            continue;
                        };
                        if let Err(reason) = verify_object(&tier.dirs.objects, &meta, &mut buf) {
                            tracing::warn!(
                                key = %meta.key.escape_ascii(),
                                version = meta.version,
                                reason = %reason,
                                "dropping object whose data failed verification after an unclean shutdown"
                            );
                            bad.push((meta.key, meta.version));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Checks that the object file exists, has the recorded size and checksum.
fn verify_object(objects: &OwnedFd, meta: &ObjectMeta, buf: &mut Vec<u8>) -> Result<(), String> {
    let rel = object_rel_path(key_hash(&meta.key), meta.version);
    let fd = match rustix::fs::openat(
        objects,
        rel.as_cstr(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Err("data file missing".into()),
        Err(e) => return Err(format!("cannot open data file: {e}")),
    };
    let file = File::from(fd);
    let st = rustix::fs::fstat(&file).map_err(|e| format!("fstat failed: {e}"))?;
    if st.st_size as u64 != meta.size {
        return Err(format!("size is {}, expected {}", st.st_size, meta.size));
    }
    buf.resize(256 * 1024, 0);
    let mut hasher = Xxh3Default::new();
    let mut off = 0u64;
    while off < meta.size {
        let want = buf.len().min((meta.size - off) as usize);
        match file.read_at(&mut buf[..want], off) {
            Ok(0) => return Err("short read".into()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {}", display_chain(&e))),
        }
    }
    if hasher.digest() != meta.checksum {
        return Err("checksum mismatch".into());
    }
    Ok(())
}
