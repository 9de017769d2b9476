//! Names and small files of the data directory (see docs/STORAGE.md).

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::error::{io_ctx, StoreError};
use crate::sync::Poison;

pub(crate) const LOCK: &str = "LOCK";
pub(crate) const FORMAT: &str = "FORMAT";
pub(crate) const FORMAT_TMP: &str = "FORMAT.tmp";
pub(crate) const FORMAT_CONTENT: &[u8] = b"objmapper-store 3\n";
/// Format 2 (journal records without sync markers): read, and upgraded at open.
pub(crate) const FORMAT_CONTENT_V2: &[u8] = b"objmapper-store 2\n";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const JOURNAL_COMPACT: &str = "journal.compact";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const CHECKPOINT_TMP: &str = "checkpoint.tmp";
pub(crate) const CLEAN: &str = "CLEAN";
/// Space held for the journal records of deletes on a full filesystem.
pub(crate) const SPACE_RESERVE: &str = "SPACE_RESERVE";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const STAGING: &str = "staging";
pub(crate) const STORE_ID: &str = "STORE_ID";
pub(crate) const STORE_ID_TMP: &str = "STORE_ID.tmp";

/// Length of an object file name: 32 hex hash chars, '-', 16 hex version chars.
const OBJECT_NAME_LEN: usize = 32 + 1 + 16;

pub(crate) fn key_hash(key: &[u8]) -> u128 {
    xxh3_128(key)
}

/// Name of the `objects/` subdirectory for a key hash: its first two hex chars.
pub(crate) fn subdir_name(hash: u128) -> String {
    format!("{:02x}", (hash >> 120) as u8)
}

/// Path of an object file relative to `objects/`: `XX/<hash>-<version>`.
/// Built on the stack with its NUL terminator, so opening an object on the
/// read path formats and allocates nothing.
pub(crate) fn object_rel_path(hash: u128, version: u64) -> ObjectPath {
    ObjectPath::new(hash, version)
}

/// `XX/<32 hex hash>-<16 hex version>` plus a NUL: see [`object_rel_path`].
#[derive(Clone, Copy)]
pub(crate) struct ObjectPath([u8; OBJECT_PATH_LEN + 1]);

const OBJECT_PATH_LEN: usize = 2 + 1 + OBJECT_NAME_LEN;

impl ObjectPath {
    fn new(hash: u128, version: u64) -> ObjectPath {
        let mut b = [0u8; OBJECT_PATH_LEN + 1];
        let hash = hash.to_be_bytes();
        put_hex(&mut b[0..2], &hash[..1]);
        b[2] = b'/';
        put_hex(&mut b[3..35], &hash);
        b[35] = b'-';
        put_hex(&mut b[36..52], &version.to_be_bytes());
        ObjectPath(b)
    }

    /// The path as a C string, for `openat`/`unlinkat`/`renameat`.
    pub(crate) fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.0).expect("one NUL, at the end")
    }

    /// The path as text (ASCII hex, '/', '-').
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..OBJECT_PATH_LEN]).expect("ASCII")
    }
}

impl std::fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<CStr> for ObjectPath {
    fn as_ref(&self) -> &CStr {
        self.as_cstr()
    }
}

impl AsRef<Path> for ObjectPath {
    fn as_ref(&self) -> &Path {
        Path::new(self.as_str())
    }
}

/// Writes `bytes` as lowercase hex into `out` (two digits a byte, most significant
/// first), a byte at a time: formatting a path is on every open and unlink.
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Name of the staging file of a commit in progress.
pub(crate) fn staging_name(version: u64) -> String {
    format!("{version:016x}.tmp")
}

/// Parses an object file name, returning (hash, version).
pub(crate) fn parse_object_name(name: &str) -> Option<(u128, u64)> {
    let b = name.as_bytes();
    if b.len() != OBJECT_NAME_LEN || b[32] != b'-' {
        return None;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex(&b[..32]) || !lower_hex(&b[33..]) {
        return None;
    }
    let hash = u128::from_str_radix(&name[..32], 16).ok()?;
    let version = u64::from_str_radix(&name[33..], 16).ok()?;
    Some((hash, version))
}

pub(crate) fn open_dir(dir: impl AsFd, path: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates directory `name` under `dir` if it does not exist.
pub(crate) fn mkdir_if_missing(dir: impl AsFd, name: &str) -> io::Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads a small file under `dir`; `Ok(None)` if it does not exist.
pub(crate) fn read_small_file(dir: impl AsFd, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let fd = match rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut v = Vec::new();
    File::from(fd).take(max).read_to_end(&mut v)?;
    Ok(Some(v))
}

pub(crate) fn exists(dir: impl AsFd, name: &str) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Unlinks `name` under `dir`; a missing file is not an error.
pub(crate) fn unlink_if_exists(dir: impl AsFd, name: impl rustix::path::Arg) -> io::Result<bool> {
    match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Atomically replaces `dir/name` with `data`: write `tmp`, fsync it, rename
/// over `name`, fsync `dir`. Sync failures poison the store.
pub(crate) fn write_file_atomic(
    dir: &OwnedFd,
    tmp: &str,
    name: &str,
    data: &[u8],
    poison: &Poison,
) -> Result<(), StoreError> {
    let fd = rustix::fs::openat(
        dir,
        tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(io_ctx(format!("creating {tmp}")))?;
    let mut f = File::from(fd);
    if let Err(e) = f.write_all(data) {
        let _ = unlink_if_exists(dir, tmp);
        return Err(io_ctx(format!("writing {tmp}"))(e));
    }
    poison.sync(&format!("fsync {tmp}"), f.sync_all())?;
    drop(f);
    rustix::fs::renameat(dir, tmp, dir, name)
        .map_err(io_ctx(format!("renaming {tmp} to {name}")))?;
    poison.sync("fsync data directory", rustix::fs::fsync(dir))
}

/// A new random store identity (128 bits from the kernel's random source).
pub(crate) fn new_store_id() -> io::Result<u128> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(u128::from_le_bytes(b))
}

/// The `STORE_ID` file: 32 lowercase hex digits and a newline.
pub(crate) fn encode_store_id(id: u128) -> Vec<u8> {
    format!("{id:032x}\n").into_bytes()
}

/// Decodes `STORE_ID`; `None` if it is malformed.
pub(crate) fn decode_store_id(b: &[u8]) -> Option<u128> {
    let hex = b.strip_suffix(b"\n")?;
    if hex.len() != 32 || !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Reads `STORE_ID` under `dir`: `Ok(None)` if absent, `Err` (with what was found) if
/// malformed.
pub(crate) fn read_store_id(dir: impl AsFd) -> io::Result<Option<Result<u128, String>>> {
    Ok(read_small_file(dir, STORE_ID, 256)?
        .map(|b| decode_store_id(&b).ok_or_else(|| format!("{:?}", String::from_utf8_lossy(&b)))))
}

/// Encodes the checkpoint file: journal offset and its xxh3-64.
pub(crate) fn encode_checkpoint(offset: u64) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&offset.to_le_bytes());
    let sum = xxh3_64(&b[..8]);
    b[8..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Decodes the checkpoint file; `None` if it is malformed.
pub(crate) fn decode_checkpoint(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    let off: [u8; 8] = b[..8].try_into().ok()?;
    let sum: [u8; 8] = b[8..].try_into().ok()?;
    (xxh3_64(&off) == u64::from_le_bytes(sum)).then(|| u64::from_le_bytes(off))
}

/// The data directory's open directory handles.
#[derive(Debug)]
pub(crate) struct Dirs {
    pub(crate) path: PathBuf,
    pub(crate) data: OwnedFd,
    pub(crate) objects: OwnedFd,
    pub(crate) staging: OwnedFd,
}

/// Where files the index cannot account for are kept after journal damage.
pub(crate) const LOST_FOUND: &str = "lost+found";

/// The kind of filesystem a tier's directory is on, from `fstatfs`: what the memory
/// tier needs to know (a memory tier on a disk filesystem writes every object to that
/// disk, and PUTs are several times slower: docs/ADMIN.md, "The memory tier").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Filesystem {
    /// The filesystem's name (`tmpfs`, `ext4`, ...), or `unknown`.
    pub(crate) name: &'static str,
    /// Whether its files live in RAM (tmpfs, ramfs, hugetlbfs).
    pub(crate) in_ram: bool,
    /// For a filesystem in RAM, whether its files get huge pages (`huge_pages`).
    pub(crate) huge_pages: Option<&'static str>,
}

/// Names the filesystem `dir` is on.
pub(crate) fn filesystem(dir: impl AsFd) -> Filesystem {
    let f_type = match rustix::fs::fstatfs(&dir) {
        Ok(s) => s.f_type as u64,
        Err(_) => 0,
    };
    // The magic numbers of linux/magic.h.
    let (name, in_ram) = match f_type {
        0x0102_1994 => ("tmpfs", true),
        0x8584_58f6 => ("ramfs", true),
        0x9584_58f6 => ("hugetlbfs", true),
        0xef53 => ("ext4", false),
        0x5846_5342 => ("xfs", false),
        0x9123_683e => ("btrfs", false),
        0x2fc1_2fc1 => ("zfs", false),
        0xf2f5_2010 => ("f2fs", false),
        0x794c_7630 => ("overlayfs", false),
        0x6969 => ("nfs", false),
        0x6573_5546 => ("fuse", false),
        _ => ("unknown", false),
    };
    let huge_pages = match name {
        "tmpfs" => Some(tmpfs_huge_pages(&dir)),
        "hugetlbfs" => Some("always"),
        "ramfs" => Some("never"),
        _ => None,
    };
    Filesystem {
        name,
        in_ram,
        huge_pages,
    }
}

/// When the tmpfs holding `dir` gives its files huge (2 MiB) pages: its `huge=` mount
/// option (`never`, the default, `always`, `within_size` or `advise`), unless the
/// system overrides every tmpfs (`shmem_enabled` set to `deny` or `force`). A file
/// of several MiB written into 4 KiB pages costs the kernel a page allocation and a
/// lookup per 4 KiB, on the write and again on every read: docs/ADMIN.md, "Huge pages
/// for the memory tier".
fn tmpfs_huge_pages(dir: &impl AsFd) -> &'static str {
    let system = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    match bracketed(&system) {
        Some("deny") => return "never",
        Some("force") => return "always",
        _ => {}
    }
    let Ok(st) = rustix::fs::fstat(dir) else {
        return "never";
    };
    let dev = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_huge_option(&mountinfo, dev).unwrap_or("never")
}

/// The word in brackets of a sysfs choice (`always [never] deny`).
fn bracketed(choice: &str) -> Option<&str> {
    let start = choice.find('[')? + 1;
    let len = choice[start..].find(']')?;
    Some(&choice[start..start + len])
}

/// The `huge=` super option of the tmpfs mounted from device `dev` (major, minor) in
/// `mountinfo` (the format of `/proc/self/mountinfo`): `never` when it has none;
/// `None` if no tmpfs line has that device.
fn mount_huge_option(mountinfo: &str, dev: (u32, u32)) -> Option<&'static str> {
    let want = format!("{}:{}", dev.0, dev.1);
    for line in mountinfo.lines() {
        let mut fields = line.split(' ');
        if fields.nth(2) != Some(want.as_str()) {
            continue;
        }
        // After the optional fields, " - " then the type, the source and the
        // superblock's options.
        let Some((_, tail)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = tail.split(' ');
        if tail.next() != Some("tmpfs") {
            continue;
        }
        let opts = tail.nth(1).unwrap_or("");
        let huge = opts.split(',').find_map(|o| o.strip_prefix("huge="));
        return Some(match huge {
            Some("always") => "always",
            Some("within_size") => "within_size",
            Some("advise") => "advise",
            _ => "never",
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_huge_option_from_mountinfo() {
        let info = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,huge=always
25 22 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,size=1024k
31 22 0:35 / /srv/mem rw,relatime shared:9 master:2 - tmpfs mem rw,size=4194304k,huge=within_size,inode64
32 22 0:36 / /srv/adv rw - tmpfs t rw,huge=advise
33 22 0:37 / /srv/odd rw - tmpfs t rw,huge=something_new
";
        assert_eq!(mount_huge_option(info, (0, 21)), Some("never"));
        assert_eq!(mount_huge_option(info, (0, 35)), Some("within_size"));
        assert_eq!(mount_huge_option(info, (0, 36)), Some("advise"));
        assert_eq!(mount_huge_option(info, (0, 37)), Some("never"));
        // Not a tmpfs, or no such device.
        assert_eq!(mount_huge_option(info, (253, 1)), None);
        assert_eq!(mount_huge_option(info, (0, 99)), None);
        assert_eq!(
            bracketed("always within_size advise [never] deny force"),
            Some("never")
        );
        assert_eq!(bracketed("never"), None);
    }

    /// The real mount table, for `/dev/shm` as this machine mounts it (a tmpfs with a
    /// chosen `huge=` is tested end to end in crates/server/tests/huge_pages.rs).
    #[test]
    fn tmpfs_huge_option_of_dev_shm() {
        let Ok(d) = std::fs::File::open("/dev/shm") else {
            return;
        };
        let fs = filesystem(&d);
        if fs.name == "tmpfs" {
            let h = fs.huge_pages.expect("a tmpfs has a huge page policy");
            assert!(
                ["never", "always", "within_size", "advise"].contains(&h),
                "{h}"
            );
        }
    }

    #[test]
    fn object_names() {
        let h = key_hash(b"../../etc/passwd");
        let rel = object_rel_path(h, 0x1234);
        assert_eq!(
            rel.as_str(),
            format!("{:02x}/{:032x}-{:016x}", (h >> 120) as u8, h, 0x1234)
        );
        assert_eq!(rel.as_cstr().to_bytes(), rel.as_str().as_bytes());
        let (sub, name) = rel.as_str().split_once('/').unwrap();
        assert_eq!(sub, subdir_name(h));
        assert_eq!(name.len(), OBJECT_NAME_LEN);
        assert!(name.starts_with(sub));
        assert_eq!(parse_object_name(name), Some((h, 0x1234)));
        assert_eq!(parse_object_name("x"), None);
        assert_eq!(parse_object_name(&name.to_uppercase()), None);
        assert_eq!(parse_object_name(&format!("+{}", &name[1..])), None);
    }

    #[test]
    fn store_id_codec() {
        let id = new_store_id().unwrap();
        let b = encode_store_id(id);
        assert_eq!(b.len(), 33);
        assert_eq!(decode_store_id(&b), Some(id));
        assert_eq!(decode_store_id(&b[..32]), None);
        assert_eq!(decode_store_id(&b.to_ascii_uppercase()), None);
        assert_ne!(new_store_id().unwrap(), id);
    }

    #[test]
    fn checkpoint_codec() {
        let b = encode_checkpoint(123_456);
        assert_eq!(decode_checkpoint(&b), Some(123_456));
        let mut bad = b;
        bad[3] ^= 1;
        assert_eq!(decode_checkpoint(&bad), None);
        assert_eq!(decode_checkpoint(&b[..15]), None);
    }
}
