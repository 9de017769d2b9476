//! The tiers' identity (`STORE_ID`): the disk tier's, and the check that a memory tier
//! belongs to this store (a foreign one is discarded or refused).

use super::*;

/// The disk tier's identity (`STORE_ID`, docs/STORAGE.md "Tier identity"): read, or
/// created (a store from before identities adopts one). Returns (id, whether it existed).
pub(crate) fn disk_identity(
    disk: &Tier,
    poison: &Poison,
) -> Result<(u128, bool), crate::error::OpenError> {
    let path = disk.dirs.path.join(layout::STORE_ID);
    match layout::read_store_id(&disk.dirs.data).map_err(|e| crate::error::OpenError::Io {
        context: format!("reading {}", path.display()),
        source: e,
    })? {
        Some(Ok(id)) => Ok((id, true)),
        Some(Err(found)) => Err(crate::error::OpenError::Format {
            path,
            detail: format!("found {found}, expected 32 lowercase hex digits and a newline"),
        }),
        None => {
            let id = layout::new_store_id().map_err(|e| crate::error::OpenError::Io {
                context: "drawing a random store id".into(),
                source: e,
            })?;
            layout::write_file_atomic(
                &disk.dirs.data,
                layout::STORE_ID_TMP,
                layout::STORE_ID,
                &layout::encode_store_id(id),
                poison,
            )?;
            tracing::info!(id = %format!("{id:032x}"), file = %path.display(), "store identity created");
            Ok((id, false))
        }
    }
}

/// Before the memory tier is opened: makes sure its directory, if it exists, is this
/// store's (its `STORE_ID` is the disk tier's), so another store's objects are never
/// imported. A directory without `STORE_ID` is adopted when it is empty, or when the
/// disk tier had no identity either (both from before identities) and is not new.
/// Another store's directory is discarded (emptied) if that store shut down cleanly (its
/// objects are all on its own disk, except ephemeral ones, which are lost) or its
/// journal is empty; otherwise it may hold that store's only copy of objects, and the
/// open is refused ([`crate::OpenError::ForeignTier`]).
pub(crate) fn admit_mem_dir(
    path: &std::path::Path,
    disk_id: u128,
    disk_had_id: bool,
    disk_new: bool,
) -> Result<(), crate::error::OpenError> {
    use crate::error::OpenError;
    let oio = |what: &str| {
        let context = format!("{what} in memory tier directory {}", path.display());
        move |e: io::Error| OpenError::Io { context, source: e }
    };
    let dir = match layout::open_dir_path(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(oio("opening the directory")(e)),
    };
    let found = layout::read_store_id(&dir).map_err(oio("reading STORE_ID"))?;
    if matches!(found, Some(Ok(id)) if id == disk_id) {
        return Ok(());
    }
    let journal_len = match rustix::fs::statat(&dir, layout::JOURNAL, rustix::fs::AtFlags::empty())
    {
        Ok(st) => st.st_size as u64,
        Err(Errno::NOENT) => 0,
        Err(e) => return Err(oio("reading the journal's size")(e.into())),
    };
    if found.is_none() && (journal_len == 0 || (!disk_had_id && !disk_new)) {
        return Ok(()); // new, empty, or both tiers from before identities: adopted
    }
    let theirs = match &found {
        Some(Ok(id)) => format!("{id:032x}"),
        Some(Err(bad)) => format!("unreadable ({bad})"),
        None => "none (the directory predates store identities)".into(),
    };
    // The other store may be running: its lock is held, and open_tier says so.
    let lock = match rustix::fs::openat(
        &dir,
        layout::LOCK,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => fd,
        Err(e) => return Err(oio("opening LOCK")(e.into())),
    };
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            return Err(OpenError::Locked {
                path: path.join(layout::LOCK),
            })
        }
        Err(e) => return Err(oio("locking LOCK")(e.into())),
    }
    let clean = layout::exists(&dir, layout::CLEAN).map_err(oio("checking CLEAN"))?;
    if !clean && journal_len > 0 {
        return Err(OpenError::ForeignTier {
            path: path.to_path_buf(),
            detail: format!(
                "its STORE_ID is {theirs}, this store's (the data directory's) is {disk_id:032x}, \
                 and it was not shut down cleanly, so it may hold that store's only copy of \
                 objects; start that store to write them to its disk, or point the memory tier \
                 (--mem-dir) elsewhere, or remove the directory to discard them"
            ),
        });
    }
    tracing::warn!(
        dir = %path.display(),
        theirs,
        ours = %format!("{disk_id:032x}"),
        "the memory tier directory belongs to another store, which shut down cleanly: \
         discarding its contents (that store's objects are on its own disk; its ephemeral \
         objects are lost); none are imported"
    );
    for f in [
        layout::JOURNAL,
        layout::CHECKPOINT,
        layout::CLEAN,
        layout::STORE_ID,
    ] {
        layout::unlink_if_exists(&dir, f).map_err(oio(&format!("removing {f}")))?;
    }
    for d in [layout::OBJECTS, layout::STAGING] {
        match std::fs::remove_dir_all(path.join(d)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(oio(&format!("removing {d}/"))(e)),
        }
    }
    Ok(())
}

/// After the memory tier is opened: gives it the disk tier's identity if it has none.
pub(crate) fn stamp_mem_identity(
    mem: &Tier,
    disk_id: u128,
    poison: &Poison,
) -> Result<(), crate::error::OpenError> {
    let found = layout::read_store_id(&mem.dirs.data).map_err(|e| crate::error::OpenError::Io {
        context: "reading the memory tier's STORE_ID".into(),
        source: e,
    })?;
    if !matches!(found, Some(Ok(id)) if id == disk_id) {
        layout::write_file_atomic(
            &mem.dirs.data,
            layout::STORE_ID_TMP,
            layout::STORE_ID,
            &layout::encode_store_id(disk_id),
            poison,
        )?;
    }
    Ok(())
}
