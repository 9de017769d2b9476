//! Opening a data directory: locking, format check and crash recovery.
//! The steps are described normatively in docs/STORAGE.md ("Recovery").

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};
use rustix::fs::{FlockOperation, Mode, OFlags};
use xxhash_rust::xxh3::Xxh3Default;

use crate::catalog::{self, Journal};
use crate::error::{display_chain, OpenError};
use crate::index::{Entry, Index};
use crate::journal::{RawRecord, RESERVE_RECORD_LEN};
use crate::layout::{self, key_hash, object_rel_path, Dirs};
use crate::meta::ObjectMeta;
use crate::sync::Poison;
use crate::tier::{Kind, Tier};

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
    check_format(&data, &path, poison)?;
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

    // 3. Replay the journal, dropping a torn or corrupt tail.
    let jfd = rustix::fs::openat(
        &data,
        layout::JOURNAL,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(oio("opening journal"))?;
    let jfile = File::from(jfd);
    // Replay straight into the index: one allocation per live entry, made
    // from the validated record bytes, and no temporary map (which both
    // costs time and leaves the heap fragmented for the life of the process).
    let jlen = jfile.metadata().map_err(oio("reading journal size"))?.len();
    let mut index = Index::with_capacity((jlen / 96) as usize);
    // Record offsets by slot id, only needed to pick what to verify.
    let track = !clean && kind == Kind::Disk;
    let mut offsets: Vec<u64> = Vec::new();
    let (mut max_version, mut max_reserve) = (0u64, 0u64);
    let end = catalog::replay(&jfile, |off, rec| match rec {
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
            if index.get(key).map(Entry::version) == Some(version) {
                index.take(key);
            }
        }
        RawRecord::Reserve { upto } => max_reserve = max_reserve.max(upto),
    })
    .map_err(oio("reading journal"))?;
    let live_bytes = index.iter().map(Entry::record_len).sum::<u64>() + RESERVE_RECORD_LEN as u64;
    let mut journal = Journal::new(jfile, end.file_len, live_bytes);
    if end.valid_len < end.file_len {
        tracing::warn!(
            dropped_bytes = end.file_len - end.valid_len,
            offset = end.valid_len,
            reason = end.stop_reason.as_deref().unwrap_or("?"),
            tier = ?kind,
            "journal has a torn or corrupt tail; truncating it"
        );
        journal.truncate_tail(end.valid_len, poison)?;
    }

    // 4. Entries written after the checkpoint need their data verified
    //    unless the previous run shut down cleanly. tmpfs cannot hold a torn
    //    file after a process crash (files are renamed into place complete)
    //    and loses everything on power loss, so the memory tier skips this.
    let to_verify: Vec<u32> = if track {
        index
            .iter_ids()
            .filter(|(id, _, _)| offsets.get(*id as usize).is_some_and(|&o| o >= ckpt_off))
            .map(|(id, _, _)| id)
            .collect()
    } else {
        Vec::new()
    };
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
            index: RwLock::new(index),
            journal: Mutex::new(journal),
            ckpt: Mutex::new((0, 0)),
            bytes: AtomicU64::new(bytes),
            first_version: 0,
            compactions: AtomicU64::new(0),
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

fn check_format(data: &OwnedFd, path: &Path, poison: &Poison) -> Result<(), OpenError> {
    let format_path = path.join(layout::FORMAT);
    match layout::read_small_file(data, layout::FORMAT, 256).map_err(oio("reading FORMAT"))? {
        Some(b) if b == layout::FORMAT_CONTENT => Ok(()),
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
            Ok(())
        }
    }
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
