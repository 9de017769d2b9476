//! What `lost+found/` holds: the listing behind `objmapper fsck`.
//!
//! Recovery re-admits every file the journal lost the record of whose label is
//! intact (recovery.rs, label.rs) before the first request is served, so that no
//! delete or purge can happen in between and be undone later. What stays in
//! `lost+found/` cannot be served: files without a usable label, damaged
//! versions the checks dropped, deleted or superseded versions, copies of
//! damaged journal regions. This module lists them, with why, and removes them
//! on request.

use std::fs::File;
use std::path::PathBuf;

use crate::error::{io_ctx, StoreError};
use crate::layout::LOST_FOUND;
use crate::layout::{self, key_hash};
use crate::recovery::DELETED_SUFFIX;
use crate::store::Store;

/// One file in a tier's `lost+found/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostFile {
    /// The tier whose `lost+found/` holds it: "memory" or "disk".
    pub tier: &'static str,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// What it is.
    pub kind: LostKind,
}

/// What a file in `lost+found/` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostKind {
    /// An object file whose label names its key and version.
    Object {
        /// The key its label names.
        key: Box<[u8]>,
        /// The version.
        version: u64,
        /// Whether the store still holds this key (at this or another version).
        current: Option<u64>,
        /// Whether the bytes match the label's size and checksum.
        intact: bool,
    },
    /// An object file without a usable label: `why`.
    Unlabelled {
        /// Why the label cannot be used.
        why: String,
    },
    /// A version a `DEL` record deleted (never to be served again).
    Deleted,
    /// A copy of a damaged journal region.
    JournalFragment,
    /// Anything else.
    Other,
}

impl Store {
    /// Lists every file in the tiers' `lost+found/` directories with what it is
    /// (reads each object file once to check it against its label). Nothing in
    /// `lost+found/` is ever served.
    pub fn lost_found(&self) -> Result<Vec<LostFile>, StoreError> {
        let inner = &*self.inner;
        let mut out = Vec::new();
        for tier in inner.tiers() {
            let dir = tier.dirs.path.join(LOST_FOUND);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_ctx(format!("listing {}", dir.display()))(e)),
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            for name in names {
                let path = dir.join(&name);
                let Ok(st) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let kind = if !st.is_file() {
                    LostKind::Other
                } else if name.starts_with("journal-") && name.ends_with(".damaged") {
                    LostKind::JournalFragment
                } else if name
                    .strip_suffix(DELETED_SUFFIX)
                    .is_some_and(|n| layout::parse_object_name(n).is_some())
                {
                    LostKind::Deleted
                } else if let Some((hash, version)) = layout::parse_object_name(&name) {
                    self.describe(&path, hash, version)
                } else {
                    LostKind::Other
                };
                out.push(LostFile {
                    tier: tier.name(),
                    path,
                    bytes: std::os::unix::fs::MetadataExt::size(&st),
                    kind,
                });
            }
        }
        Ok(out)
    }

    fn describe(&self, path: &std::path::Path, hash: u128, version: u64) -> LostKind {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                return LostKind::Unlabelled {
                    why: format!("cannot be opened: {e}"),
                }
            }
        };
        let meta = match crate::label::read(&file) {
            Ok(m) => m,
            Err(e) => return LostKind::Unlabelled { why: e.to_string() },
        };
        if key_hash(&meta.key) != hash || meta.version != version {
            return LostKind::Unlabelled {
                why: "its label names another file".into(),
            };
        }
        let intact = crate::copy::hash_file(&file, meta.size).is_ok_and(|sum| sum == meta.checksum);
        let current = self.head(&meta.key).map(|m| m.version);
        LostKind::Object {
            key: meta.key,
            version,
            current,
            intact,
        }
    }

    /// Removes every file in the tiers' `lost+found/` directories. Returns how many.
    pub fn clear_lost_found(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for f in self.lost_found()? {
            std::fs::remove_file(&f.path)
                .map_err(io_ctx(format!("removing {}", f.path.display())))?;
            n += 1;
        }
        Ok(n)
    }
}
