//! PUT staging and the commit protocol.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

use crate::cold::{FenceState, Origin};
use crate::copy::Source;
use crate::error::{io_ctx, CommitError, StoreError};
use crate::journal::meta_len;
use crate::layout;
use crate::meta::{ObjectMeta, PutMeta, PutOptions};
use crate::tier::Kind;

use super::commit::{FillFrom, Leftovers, Superseded};
use super::Inner;
use crate::MAX_META_LEN;

/// Seals that make the staging memfd immutable.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE)
    .union(SealFlags::SEAL);

/// An in-progress PUT.
///
/// Its body is one of two kinds. [`Store::begin_put`](crate::Store::begin_put) stages in
/// an anonymous memfd, written with [`write_all`](Staging::write_all) (copy mode) or by
/// a client through the fd from [`fd`](Staging::fd) (fd mode), and sealed by the commit.
/// [`Store::begin_put_buffered`](crate::Store::begin_put_buffered) stages in process
/// memory, for small copy-mode PUTs whose bytes arrive inline: it saves creating, sealing
/// and reading back a memfd (the commit writes the buffer straight into the tier's file),
/// and has no fd to hand out. Nothing is visible to readers until
/// [`commit`](Staging::commit). Dropping a `Staging` without committing aborts the PUT:
/// the memfd or buffer goes and nothing is left behind.
#[derive(Debug)]
pub struct Staging {
    inner: Arc<Inner>,
    key: Box<[u8]>,
    body: Body,
    /// A fill's fence ([`crate::FillFence`]): its commit is refused once void.
    fence: Option<Arc<FenceState>>,
}

/// Where a [`Staging`]'s bytes are.
#[derive(Debug)]
enum Body {
    /// A memfd (`MFD_CLOEXEC|MFD_ALLOW_SEALING`), sealed on commit.
    Memfd(File),
    /// Process memory.
    Buffer(Vec<u8>),
    /// A fill's file in `tier`'s `staging/`, named `name`: only the daemon writes it
    /// (no client ever gets its fd), and a commit that places the object in that tier
    /// renames it into `objects/` instead of copying it. Unlinked on drop.
    TierFile {
        file: File,
        name: String,
        tier: Kind,
    },
}

/// Numbers fill staging files (`staging/fill-N.tmp`) apart within the process; each
/// store's `staging/` is its own (locked) and emptied when it opens.
static FILLS: AtomicU64 = AtomicU64::new(0);

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
            body: Body::Memfd(File::from(fd)),
            fence: None,
        })
    }

    /// A fill of `size` bytes (`None`: not known yet), staged where its commit is
    /// likely to place it, so that the commit is a rename: in the memory tier's
    /// `staging/` when the object would go to memory (the tier is on, and `size` is
    /// within `direct_to_disk_threshold` and the tier's capacity) and that filesystem
    /// has room for it (for the largest object when the size is not known); else, when
    /// the size is known, in the disk tier's `staging/` if its filesystem has room;
    /// else in a memfd (bounded by memory, not by a tier's mount).
    ///
    /// `fence` guards it from when the caller put it up: its commit is refused once
    /// void.
    pub(crate) fn fill(
        inner: Arc<Inner>,
        fence: Arc<FenceState>,
        size: Option<u64>,
    ) -> Result<Staging, StoreError> {
        let key: Box<[u8]> = fence.key().into();
        let key = &key[..];
        let roomy = |kind: Kind, need: u64| {
            rustix::fs::fstatvfs(&inner.tier(kind).dirs.staging)
                .is_ok_and(|st| st.f_bavail.saturating_mul(st.f_frsize) >= need)
        };
        let to_memory = inner.mem_enabled()
            && size.is_none_or(|s| {
                s <= inner.live.direct_to_disk_threshold() && s <= inner.live.mem_capacity_bytes()
            });
        let tier = match size {
            _ if to_memory && roomy(Kind::Memory, size.unwrap_or(inner.cfg.max_object_size)) => {
                Some(Kind::Memory)
            }
            Some(s) if roomy(Kind::Disk, s) => Some(Kind::Disk),
            _ => None,
        };
        if let Some(tier) = tier {
            let name = format!("fill-{:016x}.tmp", FILLS.fetch_add(1, Ordering::Relaxed));
            match rustix::fs::openat(
                &inner.tier(tier).dirs.staging,
                name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(Staging {
                        inner,
                        key: key.into(),
                        body: Body::TierFile {
                            file: File::from(fd),
                            name,
                            tier,
                        },
                        fence: Some(fence),
                    })
                }
                Err(e) => tracing::debug!(
                    error = %e,
                    tier = inner.tier(tier).name(),
                    "the tier's staging/ would not take a fill's file; staging it in a memfd"
                ),
            }
        }
        let mut s = Staging::new(inner, key)?;
        s.fence = Some(fence);
        Ok(s)
    }

    pub(crate) fn buffered(inner: Arc<Inner>, key: &[u8], capacity: usize) -> Staging {
        Staging {
            inner,
            key: key.into(),
            body: Body::Buffer(Vec::with_capacity(capacity)),
            fence: None,
        }
    }

    /// The writable staging memfd, to hand to a client in fd mode (`None` for a PUT
    /// staged in memory). Once the PUT is committed the memfd is sealed: writes,
    /// truncation and growth through any descriptor of it fail.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.body {
            Body::Memfd(f) | Body::TierFile { file: f, .. } => Some(f.as_fd()),
            Body::Buffer(_) => None,
        }
    }

    /// Copy mode: appends `buf` (at the memfd's file offset, or to the buffer). Fails if
    /// the object would exceed [`StoreConfig::max_object_size`](crate::StoreConfig::max_object_size).
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let max = self.inner.cfg.max_object_size;
        if self.len()?.saturating_add(buf.len() as u64) > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("object exceeds the maximum object size of {max} bytes"),
            ));
        }
        match &mut self.body {
            Body::Memfd(f) | Body::TierFile { file: f, .. } => (&*f).write_all(buf),
            Body::Buffer(b) => {
                b.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    /// Current size of the staged data (`fstat` of the memfd, or the buffer's length).
    pub fn len(&self) -> io::Result<u64> {
        match &self.body {
            Body::Memfd(f) | Body::TierFile { file: f, .. } => {
                Ok(rustix::fs::fstat(f)?.st_size as u64)
            }
            Body::Buffer(b) => Ok(b.len() as u64),
        }
    }

    /// Whether nothing has been staged yet.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The key this PUT will be stored under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Seals the staged data (a memfd), checks it is exactly `expected_len`
    /// bytes, copies it into a new object file in the tier `opts` selects and
    /// atomically makes it the current version of the key (last commit
    /// wins).
    ///
    /// Placement: by default the object lands in the memory tier and is
    /// written behind to disk; with `opts.durable` it is written to disk and
    /// fsynced (file, directory entry, journal record) before this returns,
    /// so it survives power loss; with `opts.ephemeral` it stays in memory
    /// only. Objects over [`StoreConfig::direct_to_disk_threshold`](crate::StoreConfig::direct_to_disk_threshold)
    /// go straight to disk. Without `durable`, a commit survives a process
    /// crash (kill -9) once written to disk; see docs/STORAGE.md for exactly
    /// what a power loss or reboot can take.
    ///
    /// Nothing is published if an error is returned.
    pub fn commit(
        self,
        expected_len: u64,
        meta: PutMeta,
        opts: PutOptions,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        self.commit_then(expected_len, meta, opts)
            .map(|(meta, _unlinked)| meta)
    }

    /// [`Staging::commit`], but the files of the versions it superseded are unlinked
    /// only when the returned [`Superseded`] is dropped: a server drops it after it has
    /// sent the reply, which takes the `unlinkat` off the request's path. What readers
    /// see is the same either way (no lookup finds a superseded version after the
    /// commit point); only the space comes back later.
    pub fn commit_then(
        self,
        expected_len: u64,
        meta: PutMeta,
        opts: PutOptions,
    ) -> Result<(Arc<ObjectMeta>, Superseded), CommitError> {
        let inner = self.inner.clone();
        let (meta, left) = self.commit_from(expected_len, meta, opts, None, false)?;
        Ok((meta, Superseded::new(&inner, left)))
    }

    /// Commits a *fill*: a version fetched from the cold tier, staged with
    /// [`Store::begin_fill`](crate::Store::begin_fill). It becomes an ordinary local
    /// object (placed as a PUT of its size would be, neither durable nor pinned) that
    /// keeps its origin's commit stamp, so bans and deletes order it as on the host that
    /// wrote it. Refused ([`CommitError::Store`] with
    /// [`StoreError::PreconditionFailed`]) if the key has a live local version, if the
    /// version has expired, or if a delete or a ban here is stamped after it; refused
    /// with [`CommitError::ChecksumMismatch`] if the bytes are not the ones recorded.
    /// The cold tier is not told of it (it came from there).
    pub fn commit_fill(
        self,
        expected_len: u64,
        meta: PutMeta,
        origin: Origin,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        self.commit_fill_with(expected_len, meta, origin, false)
    }

    fn commit_fill_with(
        self,
        expected_len: u64,
        meta: PutMeta,
        origin: Origin,
        hashed: bool,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        let opts = PutOptions {
            condition: crate::meta::Condition::IfAbsent,
            ..PutOptions::default()
        };
        let inner = self.inner.clone();
        let (meta, left) = self.commit_from(expected_len, meta, opts, Some(origin), hashed)?;
        left.unlink(&inner);
        Ok(meta)
    }

    /// [`Staging::commit_fill`] for a caller that wrote the fill's bytes through
    /// [`Staging::fd`] itself and hashed exactly those bytes as it wrote them, finding
    /// `origin.checksum` (the remote tier's client checks every fetch so): a fill that
    /// lands in memory by a rename is then not read and hashed a second time. Its file
    /// size is still checked. Anything else is as `commit_fill`.
    pub fn commit_fill_hashed(
        self,
        expected_len: u64,
        meta: PutMeta,
        origin: Origin,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        self.commit_fill_with(expected_len, meta, origin, true)
    }

    fn commit_from(
        self,
        expected_len: u64,
        meta: PutMeta,
        opts: PutOptions,
        origin: Option<Origin>,
        hashed: bool,
    ) -> Result<(Arc<ObjectMeta>, Leftovers), CommitError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        check_meta(&meta)?;
        let (src, size) = match &self.body {
            Body::Memfd(memfd) => {
                // 1. Seal: from here on nobody can change the staged bytes.
                self.seal()?;
                // 2. Check the size.
                let size = self.len().map_err(io_ctx("fstat staging memfd"))?;
                (Source::File(memfd), size)
            }
            // Only this Staging holds the buffer: nothing to seal.
            Body::Buffer(b) => (Source::Bytes(b), b.len() as u64),
            // Only the daemon wrote it, and it is done: nothing to seal either.
            Body::TierFile { file, name, tier } => {
                let size = self.len().map_err(io_ctx("fstat staged fill"))?;
                let src = Source::Staged {
                    tier: *tier,
                    file,
                    name,
                    checksum: origin.filter(|_| hashed).map(|o| o.checksum),
                };
                (src, size)
            }
        };
        check_size(inner, expected_len, size)?;

        // 3. Copy (or rename) into a tier, publish, supersede.
        let fill = origin.map(|origin| FillFrom {
            origin,
            fence: self.fence.as_deref(),
            bans_seen: 0,
        });
        inner.commit(&self.key, src, size, meta, opts, fill)
    }

    /// Seals the staged data against any further change (idempotent).
    /// [`commit`](Staging::commit) does this itself; calling it first lets a
    /// server report [`CommitError::WritableMapping`] to the client and keep
    /// the PUT alive so the client can `munmap` and COMMIT again (a failed
    /// `commit` consumes the `Staging`). After a successful `seal` the size
    /// is final and writes through any fd of the memfd fail. A PUT staged in
    /// memory has nothing to seal.
    pub fn seal(&self) -> Result<(), CommitError> {
        let memfd = match &self.body {
            Body::Memfd(f) => f,
            Body::Buffer(_) | Body::TierFile { .. } => return Ok(()),
        };
        match rustix::fs::fcntl_add_seals(memfd, SEALS) {
            Ok(()) => Ok(()),
            Err(Errno::BUSY) => Err(CommitError::WritableMapping),
            // Already sealed against changes (e.g. F_SEAL_SEAL added by the
            // client): fine as long as the data can no longer change.
            Err(Errno::PERM) => {
                let have = rustix::fs::fcntl_get_seals(memfd)
                    .map_err(io_ctx("reading staging memfd seals"))?;
                let needed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
                if have.contains(needed) {
                    Ok(())
                } else {
                    Err(StoreError::Io {
                        context: "staging memfd was sealed by the client without F_SEAL_WRITE"
                            .into(),
                        source: Errno::PERM.into(),
                    }
                    .into())
                }
            }
            Err(e) => Err(io_ctx("sealing staging memfd")(e).into()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // A fill's file that was not renamed into place (aborted, refused, or copied to
        // disk) goes; after a rename the name is free and this finds nothing.
        if let Body::TierFile { name, tier, .. } = &self.body {
            let _ = layout::unlink_if_exists(&self.inner.tier(*tier).dirs.staging, name);
        }
    }
}

fn check_meta(meta: &PutMeta) -> Result<(), CommitError> {
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
    Ok(())
}

fn check_size(inner: &Inner, expected: u64, actual: u64) -> Result<(), CommitError> {
    if actual != expected {
        return Err(CommitError::LengthMismatch { expected, actual });
    }
    let max = inner.cfg.max_object_size;
    if actual > max {
        return Err(CommitError::TooLarge { size: actual, max });
    }
    Ok(())
}
