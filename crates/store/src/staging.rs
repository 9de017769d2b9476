//! PUT staging and the commit protocol.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;
use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{io_ctx, CommitError, StoreError};
use crate::journal::meta_len;
use crate::layout::{self, key_hash, object_rel_path, staging_name, subdir_name};
use crate::meta::{ObjectMeta, PutMeta};
use crate::store::Inner;
use crate::MAX_META_LEN;

/// Copy buffer size used when moving staged bytes into the object file.
const COPY_CHUNK: usize = 256 * 1024;

/// Seals that make the staging memfd immutable.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE)
    .union(SealFlags::SEAL);

/// An in-progress PUT.
///
/// Data is staged in an anonymous memfd: either written with
/// [`write_all`](Staging::write_all) (copy mode) or by a client through the
/// fd from [`fd`](Staging::fd) (fd mode). Nothing is visible to readers until
/// [`commit`](Staging::commit). Dropping a `Staging` without committing
/// aborts the PUT: the memfd is closed and nothing is left behind.
#[derive(Debug)]
pub struct Staging {
    inner: Arc<Inner>,
    key: Box<[u8]>,
    memfd: File,
}

impl Staging {
    pub(crate) fn new(inner: Arc<Inner>, key: &[u8]) -> Result<Staging, StoreError> {
        let fd = rustix::fs::memfd_create(
            "objmapper-put",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(io_ctx("memfd_create for PUT staging"))?;
        Ok(Staging {
            inner,
            key: key.into(),
            memfd: File::from(fd),
        })
    }

    /// The writable staging memfd, to hand to a client in fd mode. Once the
    /// PUT is committed the memfd is sealed: writes, truncation and growth
    /// through any descriptor of it fail.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// Copy mode: appends `buf` at the memfd's file offset. Fails if the
    /// object would exceed [`StoreConfig::max_object_size`](crate::StoreConfig::max_object_size).
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let max = self.inner.cfg.max_object_size;
        if self.len()?.saturating_add(buf.len() as u64) > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("object exceeds the maximum object size of {max} bytes"),
            ));
        }
        (&self.memfd).write_all(buf)
    }

    /// Current size of the staged data (`fstat` of the memfd).
    pub fn len(&self) -> io::Result<u64> {
        Ok(rustix::fs::fstat(&self.memfd)?.st_size as u64)
    }

    /// Whether nothing has been staged yet.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The key this PUT will be stored under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Seals the staged data, checks it is exactly `expected_len` bytes,
    /// writes it to a new object file and atomically makes it the current
    /// version of the key (last commit wins).
    ///
    /// With `durable`, the object file, its directory entry and the journal
    /// record are synced before returning, so the object survives power
    /// loss. Without it, the commit survives a process crash (kill -9) but
    /// may be lost (detected, never served torn) on power loss before the
    /// next [`Store::checkpoint`](crate::Store::checkpoint).
    ///
    /// Nothing is published if an error is returned.
    pub fn commit(
        self,
        expected_len: u64,
        meta: PutMeta,
        durable: bool,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let ml = meta_len(
            meta.content_type.as_deref(),
            meta.custom.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        );
        if ml > MAX_META_LEN {
            return Err(CommitError::MetaTooLarge {
                size: ml,
                max: MAX_META_LEN,
            });
        }

        // 1. Seal: from here on nobody can change the staged bytes.
        self.seal()?;

        // 2. Check the size.
        let size = self.len().map_err(io_ctx("fstat staging memfd"))?;
        if size != expected_len {
            return Err(CommitError::LengthMismatch {
                expected: expected_len,
                actual: size,
            });
        }
        let max = inner.cfg.max_object_size;
        if size > max {
            return Err(CommitError::TooLarge { size, max });
        }

        // 3. Copy into a private staging file, hashing as we go.
        let version = inner.alloc_version()?;
        let tmp = staging_name(version);
        let fd = rustix::fs::openat(
            &inner.dirs.staging,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_ctx("creating staging file"))?;
        let mut tmp_guard = Unlinker {
            dir: inner.dirs.staging.as_fd(),
            name: tmp.clone(),
        };
        let file = File::from(fd);
        let checksum = copy_and_hash(&self.memfd, &file, size)?;

        // 4. Data durability.
        if durable {
            inner
                .poison
                .sync("fdatasync object file", rustix::fs::fdatasync(&file))?;
        }
        drop(file);

        // 5. Move into place under its final name (not yet referenced).
        let hash = key_hash(&self.key);
        let rel = object_rel_path(hash, version);
        rustix::fs::renameat(&inner.dirs.staging, &tmp, &inner.dirs.objects, &rel)
            .map_err(io_ctx("renaming staging file into objects/"))?;
        tmp_guard.name.clear();
        let mut obj_guard = Unlinker {
            dir: inner.dirs.objects.as_fd(),
            name: rel,
        };
        if durable {
            let sub = layout::open_dir(&inner.dirs.objects, &subdir_name(hash))
                .map_err(io_ctx("opening objects subdirectory"))?;
            inner
                .poison
                .sync("fsync objects subdirectory", rustix::fs::fsync(&sub))?;
        }

        // 6. Journal + index, atomically with respect to other writers.
        let meta = Arc::new(ObjectMeta {
            key: self.key.clone(),
            version,
            size,
            mtime_ns: now_ns(),
            checksum,
            content_type: meta.content_type.map(String::into_boxed_str),
            custom: meta
                .custom
                .into_iter()
                .map(|(n, v)| (n.into_boxed_str(), v.into_boxed_slice()))
                .collect(),
        });
        let old = inner.publish(&meta, durable)?;
        obj_guard.name.clear();

        // 7. The superseded version's file goes away; open fds keep their bytes.
        if let Some(old) = old {
            inner.unlink_object(&meta.key, old);
        }
        inner.counters.puts.fetch_add(1, Ordering::Relaxed);
        Ok(meta)
    }

    /// Seals the staged data against any further change (idempotent).
    /// [`commit`](Staging::commit) does this itself; calling it first lets a
    /// server report [`CommitError::WritableMapping`] to the client and keep
    /// the PUT alive so the client can `munmap` and COMMIT again (a failed
    /// `commit` consumes the `Staging`). After a successful `seal` the size
    /// is final and writes through any fd of the memfd fail.
    pub fn seal(&self) -> Result<(), CommitError> {
        match rustix::fs::fcntl_add_seals(&self.memfd, SEALS) {
            Ok(()) => Ok(()),
            Err(Errno::BUSY) => Err(CommitError::WritableMapping),
            // Already sealed against changes (e.g. F_SEAL_SEAL added by the
            // client): fine as long as the data can no longer change.
            Err(Errno::PERM) => {
                let have = rustix::fs::fcntl_get_seals(&self.memfd)
                    .map_err(io_ctx("reading staging memfd seals"))?;
                let needed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
                if have.contains(needed) {
                    Ok(())
                } else {
                    Err(CommitError::Io {
                        context: "staging memfd was sealed by the client without F_SEAL_WRITE"
                            .into(),
                        source: Errno::PERM.into(),
                    })
                }
            }
            Err(e) => Err(io_ctx("sealing staging memfd")(e).into()),
        }
    }
}

/// Copies `size` bytes from `src` (offset 0) to `dst`, returning their xxh3-64.
fn copy_and_hash(src: &File, dst: &File, size: u64) -> Result<u64, CommitError> {
    let mut hasher = Xxh3Default::new();
    let mut buf = vec![0u8; (size.min(COPY_CHUNK as u64) as usize).max(1)];
    let mut off = 0u64;
    let mut dst = dst;
    while off < size {
        let want = buf.len().min((size - off) as usize);
        let n = match src.read_at(&mut buf[..want], off) {
            Ok(0) => {
                return Err(io_ctx("reading staging memfd")(io::Error::from(
                    io::ErrorKind::UnexpectedEof,
                ))
                .into())
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_ctx("reading staging memfd")(e).into()),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(io_ctx("writing staging file"))?;
        off += n as u64;
    }
    Ok(hasher.digest())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// Unlinks `dir/name` on drop unless `name` has been cleared.
struct Unlinker<'a> {
    dir: BorrowedFd<'a>,
    name: String,
}

impl Drop for Unlinker<'_> {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            if let Err(e) = layout::unlink_if_exists(self.dir, &self.name) {
                tracing::warn!(error = %e, file = %self.name, "could not remove file of failed commit");
            }
        }
    }
}
