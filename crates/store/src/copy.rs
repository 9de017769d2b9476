//! Moving an object's bytes into a tier's file, hashing them on the way: the one copy
//! loop that commits, flushes and promotions share, and the whole-file hash fsck and
//! recovery check against.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{io_ctx, StoreError};

/// Copy buffer size used when moving staged bytes into the object file.
const COPY_CHUNK: usize = 256 * 1024;

/// Where a commit's bytes come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A file, read from offset 0 (a sealed staging memfd, or another tier's object).
    File(&'a File),
    /// Bytes already in memory (a [`Staging`] buffered in memory).
    Bytes(&'a [u8]),
    /// A fill's file in `tier`'s `staging/`, named `name`, which an install into that
    /// tier renames into place instead of copying ([`crate::tier::Tier::install_copy`]);
    /// `checksum`: its bytes' xxh3-64 when its writer hashed them as it wrote them.
    /// Into the other tier it is copied like [`Source::File`].
    Staged {
        tier: crate::kind::Kind,
        file: &'a File,
        name: &'a str,
        checksum: Option<u64>,
    },
}

/// Copies `size` bytes from `src` to `dst`, returning their xxh3-64.
pub(crate) fn copy_and_hash(
    src: Source<'_>,
    dst: &File,
    size: u64,
    before_write: impl Fn() -> io::Result<()>,
) -> Result<u64, StoreError> {
    let src = match src {
        Source::File(f) | Source::Staged { file: f, .. } => f,
        Source::Bytes(b) => {
            debug_assert_eq!(b.len() as u64, size);
            before_write()
                .and_then(|()| (&*dst).write_all(b))
                .map_err(io_ctx("writing object file"))?;
            return Ok(xxhash_rust::xxh3::xxh3_64(b));
        }
    };
    let mut hasher = Xxh3Default::new();
    let mut buf = vec![0u8; (size.min(COPY_CHUNK as u64) as usize).max(1)];
    let mut off = 0u64;
    let mut dst = dst;
    while off < size {
        let want = buf.len().min((size - off) as usize);
        let n = match src.read_at(&mut buf[..want], off) {
            Ok(0) => {
                return Err(io_ctx("reading the source object")(io::Error::from(
                    io::ErrorKind::UnexpectedEof,
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_ctx("reading the source object")(e)),
        };
        hasher.update(&buf[..n]);
        before_write()
            .and_then(|()| dst.write_all(&buf[..n]))
            .map_err(io_ctx("writing object file"))?;
        off += n as u64;
    }
    Ok(hasher.digest())
}

/// The xxh3-64 of a file's first `size` bytes; an error if it holds fewer or more.
pub(crate) fn hash_file(file: &File, size: u64) -> io::Result<u64> {
    let mut h = Xxh3Default::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        let take = (n as u64).min(size.saturating_sub(off)) as usize;
        h.update(&buf[..take]);
        off += n as u64;
        if off > size {
            break;
        }
    }
    if off != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{off} bytes, expected {size}"),
        ));
    }
    Ok(h.digest())
}
