//! objmapper storage engine.
//!
//! A [`Store`] keeps byte-string objects under opaque keys (1..=[`MAX_KEY_LEN`]
//! arbitrary bytes; a key never becomes a path) in a data directory, and hands
//! out read-only file descriptors to them. The normative description of the
//! on-disk layout, the commit protocol and crash recovery lives in
//! `docs/STORAGE.md` at the root of the repository.
//!
//! Guarantees:
//!
//! 1. Keys are opaque bytes; file names are derived from a hash of the key.
//! 2. A committed object is immutable. PUT data is staged in a sealed memfd and
//!    copied into a fresh file, so nothing a client holds (including the
//!    writable staging fd it was given) can change what later readers see.
//! 3. Readers never see a partial object: nothing is visible before
//!    [`Staging::commit`] swaps the index entry.
//! 4. A reader holding an fd keeps its snapshot when the object is replaced or
//!    deleted (superseded files are unlinked, never rewritten).
//! 5. After a crash every persistent object is an old or new committed version,
//!    intact (checksums are verified during recovery), and no durable
//!    (`durable = true`) commit that returned `Ok` is lost.
//!
//! ```no_run
//! use objmapper_store::{PutMeta, PutOptions, Store, StoreConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(StoreConfig::new("/var/lib/objmapper"))?;
//! let mut put = store.begin_put(b"some key")?;
//! put.write_all(b"hello")?;
//! let meta = put.commit(5, PutMeta::default(), PutOptions::default())?;
//! let obj = store.get(b"some key")?.expect("just committed");
//! assert_eq!(obj.meta.version, meta.version);
//! store.close()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod ban;
mod catalog;
pub mod cold;
mod config;
mod copy;
mod error;
mod fsck;
mod index;
pub mod journal;
mod kind;
mod label;
mod layout;
mod meta;
pub mod policy;
mod recovery;
mod scrub;

mod store;
mod sync;
mod tier;
mod tuning;

pub use admin::{Demoted, ListCursor, ListPage, ObjectInfo};
pub use ban::{BanExpr, BanInfo, MAX_BANS, MAX_BAN_CONDS, MAX_BAN_LEN, MAX_FILL_BANS};
pub use cold::{ColdTier, FillFence, Origin};
pub use config::{FaultInjector, FaultPoint, StoreConfig};
pub use error::{BanError, CommitError, OpenError, StoreError};
pub use fsck::{LostFile, LostKind};
pub use index::LIST_SCAN_CHUNK;
pub use meta::{Condition, Object, ObjectMeta, PutMeta, PutOptions, Tier};
pub use scrub::{DamagedObject, VerifyReport};
pub use store::{
    Found, ObjectHasher, SharedObject, Staging, Store, StoreStats, Superseded, TierStats,
    SHARED_FDS_MAX,
};
pub use tier::SMALL_BODY_MAX;
pub use tuning::{Tuning, TuningError, MAX_PROMOTE_AFTER_HITS};

/// Maximum key length in bytes. Keys must be 1..=`MAX_KEY_LEN` bytes long.
pub const MAX_KEY_LEN: usize = 4096;

/// Maximum encoded size of an object's metadata (content type plus custom
/// key/value pairs, including their length prefixes; see `docs/STORAGE.md`).
pub const MAX_META_LEN: usize = 64 * 1024;

/// Checks that `key` is a valid key (1..=[`MAX_KEY_LEN`] bytes).
pub fn validate_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        Err(StoreError::InvalidKey { len: key.len() })
    } else {
        Ok(())
    }
}
