//! Writing an object file into a tier: the staging file and rename (disk), in place
//! (memory), the bytes hashed as they are copied, and the file's label.

use super::*;

/// What [`Tier::install_copy`] writes: `size` bytes of `src` as `key`'s `version`,
/// the file labelled with `label` (the object's record, `label.rs`). A `durable`
/// install syncs the file and its directory before returning. An `optional` one (a
/// fill's) that fails for want of space is counted but does not mark the tier full
/// ([`Tier::full`]): the store can do without it, and its size says nothing of the
/// PUTs'.
#[derive(Clone, Copy)]
pub(crate) struct Install<'a> {
    pub(crate) src: Source<'a>,
    pub(crate) key: &'a [u8],
    pub(crate) version: u64,
    pub(crate) size: u64,
    pub(crate) durable: bool,
    pub(crate) label: &'a [u8],
    pub(crate) optional: bool,
}

impl<'a> Install<'a> {
    /// Another tier's file of `entry`, copied without syncing (a flush or a promotion:
    /// the journal record that names the copy is what makes it durable).
    pub(crate) fn copy_of(src: &'a File, key: &'a [u8], entry: &'a Entry) -> Self {
        Install {
            src: Source::File(src),
            key,
            version: entry.version(),
            size: entry.size(),
            durable: false,
            label: entry.payload(),
            optional: false,
        }
    }
}

impl Tier {
    /// Copies `obj.size` bytes of `obj.src` into a new file in this tier, hashing
    /// them: through `staging/` and a rename into `objects/`, or, for a memory tier
    /// install that is not durable, in place. A fill already in this tier's `staging/`
    /// ([`Source::Staged`]) is renamed into place instead, unless the install is
    /// durable (its file was never synced). Returns the checksum. On error nothing is
    /// left behind (a staged fill stays where it was: its owner removes it).
    pub(crate) fn install_copy(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        obj: Install<'_>,
    ) -> Result<u64, StoreError> {
        let r = match obj.src {
            Source::Staged {
                tier,
                file,
                name,
                checksum,
            } if tier == self.kind && !obj.durable => {
                self.install_rename(cfg, file, name, checksum, obj)
            }
            _ if self.kind == Kind::Memory && !obj.durable => self.install_in_place(cfg, obj),
            _ => self.install_staged(cfg, poison, obj),
        };
        r.map_err(|e| {
            if obj.optional {
                self.out_of_space(e)
            } else {
                self.full(e)
            }
        })
    }

    /// Labels a freshly written object file with its record (`label.rs`), the
    /// checksum field set to what was just written. Best effort: counted when refused.
    pub(super) fn label(&self, file: &File, payload: &[u8], checksum: u64) {
        if !crate::label::write(file, &crate::label::value(payload, checksum), self.name()) {
            self.unlabelled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The disk tier's install, and a durable one in memory: a staging file, renamed
    /// into `objects/` once complete.
    fn install_staged(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        obj: Install<'_>,
    ) -> Result<u64, StoreError> {
        let Install {
            src,
            key,
            version,
            size,
            durable,
            label,
            ..
        } = obj;
        let tmp = layout::staging_name(version);
        let fd = rustix::fs::openat(
            &self.dirs.staging,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_ctx(format!("creating {} tier staging file", self.name()))(e))?;
        let mut guard = Unlinker {
            dir: self.dirs.staging.as_fd(),
            name: Some(std::ffi::CString::new(tmp.clone()).expect("hex digits and .tmp")),
        };
        let file = File::from(fd);
        let checksum = crate::copy::copy_and_hash(src, &file, size, || {
            self.fault(cfg, FaultPoint::ObjectWrite)
        })?;
        self.label(&file, label, checksum);
        if durable {
            self.sync(cfg, poison, "fdatasync object file", || {
                Ok(rustix::fs::fdatasync(&file)?)
            })?;
        }
        drop(file);
        let hash = key_hash(key);
        let rel = object_rel_path(hash, version);
        rustix::fs::renameat(&self.dirs.staging, &tmp, &self.dirs.objects, rel.as_cstr())
            .map_err(|e| io_ctx(format!("renaming into {} tier objects/", self.name()))(e))?;
        guard.keep();
        if durable {
            let sub = layout::open_dir(&self.dirs.objects, &layout::subdir_name(hash))
                .map_err(io_ctx("opening objects subdirectory"))?;
            let r = self.sync(cfg, poison, "fsync objects subdirectory", || {
                Ok(rustix::fs::fsync(&sub)?)
            });
            if let Err(e) = r {
                self.unlink_object(key, version);
                return Err(e);
            }
        }
        Ok(checksum)
    }
}

impl Tier {
    /// Installs `file`, already in this tier's `staging/` as `name` (a fill the daemon
    /// wrote there itself), without copying it: hashed where it lies (unless its writer
    /// hashed it as it wrote it: `checksum`), labelled, and renamed into `objects/`
    /// (never over an existing file). Returns the checksum.
    fn install_rename(
        &self,
        cfg: &StoreConfig,
        file: &File,
        name: &str,
        checksum: Option<u64>,
        obj: Install<'_>,
    ) -> Result<u64, StoreError> {
        self.fault(cfg, FaultPoint::ObjectWrite)
            .map_err(io_ctx("writing object file"))?;
        let checksum = match checksum {
            Some(sum) => sum,
            None => {
                crate::copy::hash_file(file, obj.size).map_err(io_ctx("reading the staged fill"))?
            }
        };
        self.label(file, obj.label, checksum);
        let rel = object_rel_path(key_hash(obj.key), obj.version);
        rustix::fs::renameat_with(
            &self.dirs.staging,
            name,
            &self.dirs.objects,
            rel.as_cstr(),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            io_ctx(format!(
                "renaming a fill into {} tier objects/",
                self.name()
            ))(e)
        })?;
        Ok(checksum)
    }

    /// The memory tier's install: the file is written under its final name, without a
    /// staging file and a rename. Nothing can see it early: readers find files through
    /// the index, which names the version only once the file is complete; and after a
    /// crash mid-write, no journal record names it, so the orphan sweep removes it (a
    /// process crash cannot tear a tmpfs file that a record does name; a reboot empties
    /// the tier). `O_EXCL`: an existing file of the version is never touched, and a
    /// failure removes only what this call created.
    fn install_in_place(&self, cfg: &StoreConfig, obj: Install<'_>) -> Result<u64, StoreError> {
        let rel = object_rel_path(key_hash(obj.key), obj.version);
        let fd = rustix::fs::openat(
            &self.dirs.objects,
            rel.as_cstr(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_ctx(format!("creating {} tier object file", self.name()))(e))?;
        let mut guard = Unlinker {
            dir: self.dirs.objects.as_fd(),
            name: Some(rel),
        };
        let file = File::from(fd);
        let checksum = crate::copy::copy_and_hash(obj.src, &file, obj.size, || {
            self.fault(cfg, FaultPoint::ObjectWrite)
        })?;
        self.label(&file, obj.label, checksum);
        guard.keep();
        Ok(checksum)
    }
}

/// Unlinks `name` in `dir` on drop unless [`Unlinker::keep`] was called.
pub(super) struct Unlinker<'a, N: AsRef<std::ffi::CStr>> {
    pub(crate) dir: std::os::fd::BorrowedFd<'a>,
    pub(crate) name: Option<N>,
}

impl<N: AsRef<std::ffi::CStr>> Unlinker<'_, N> {
    /// The file stays.
    pub(super) fn keep(&mut self) {
        self.name = None;
    }
}

impl<N: AsRef<std::ffi::CStr>> Drop for Unlinker<'_, N> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let _ = layout::unlink_if_exists(self.dir, name.as_ref());
        }
    }
}
