//! objmapper's shared cold tier on S3-compatible object storage (AWS S3, Cloudflare
//! R2, MinIO, Ceph RGW, SeaweedFS, Garage), through Apache Arrow's `object_store`.
//!
//! This crate is the remote part on its own: the remote object format
//! ([`mod@format`]; docs/STORAGE.md, "The remote tier"), the rule that decides which
//! version wins when many hosts share a bucket ([`Stamp`]: the larger stamp wins,
//! enforced with conditional writes), tombstones for deletes, an invalidation log for
//! deletes and purges ([`Remote::poll_events`]), and a [`Remote`] client whose every
//! call is bounded in time. The store's read-through and write-behind call it.
//!
//! ```no_run
//! # async fn f() -> Result<(), objmapper_remote::Error> {
//! use objmapper_remote::{Config, Remote};
//! let cfg = Config::from_url("s3://cache/objmapper")?.with_endpoint("http://127.0.0.1:8333");
//! let remote = Remote::new(cfg)?;
//! let file = tempfile::tempfile().unwrap();
//! if let Some(found) = remote.get(b"/index.html", &file).await? {
//!     println!("{} bytes, committed {}", found.record.size, found.stamp);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod capped;
mod config;
mod creds;
mod error;
pub mod format;
mod purges;
mod remote;

pub use config::{check_endpoint, parse_url, Config, CredentialSource, Credentials, Secret};
pub use error::{Error, ErrorKind, Result};
pub use format::{Event, EventKind, HostId, Record, Stamp};
pub use remote::{
    now_ns, EventCursor, Found, Outcome, Reclaim, Remote, RemoteStats, Sweep, SweepClaim,
};
