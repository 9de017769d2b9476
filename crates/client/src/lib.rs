//! Blocking Rust client for objmapper, the local object store daemon.
//!
//! On the same host, [`Client::get_fd`] hands you an open, read-only descriptor for an
//! object, passed over the Unix socket (`SCM_RIGHTS`): read it, `mmap` it or `sendfile`
//! it on, without the bytes ever crossing the socket. [`Client::get`] returns the bytes
//! inline instead (copy mode, the only mode over TCP).
//!
//! ```no_run
//! use objmapper_client::{default_socket_path, Client, PutOptions};
//!
//! let mut c = Client::connect(default_socket_path())?;
//! c.put(b"/index.html", b"<h1>hi</h1>", &PutOptions::default())?;
//! let obj = c.get_fd(b"/index.html")?;
//! assert_eq!(obj.read_all()?, b"<h1>hi</h1>");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Transfer modes: `fd` (Unix sockets only), `copy`, `splice` (inline; the server moves
//! the bytes inside its kernel) and `auto` (the server picks fd or inline per object);
//! [`Transport::supports`] says which work where, [`Client::best_mode`] picks one, and
//! [`Client::get_with`] takes a mode and a byte range. Conditional writes use
//! [`PutOptions::if_version`] / [`PutOptions::if_absent`] and
//! [`Client::delete_if_version`]. [`Client::connect_v2`] opens a protocol V2 session;
//! [`Client::pipeline`] keeps several requests in flight on one connection.
//! [`UdpClient`] fetches small objects (GET in copy mode, HEAD, PING) over UDP. With the
//! `tls` feature, [`Client::connect_tls`] reaches a TCP listener that speaks TLS, and
//! [`Client::hello_with_token`] presents the token a listener may require.
//! docs/PROTOCOL.md is the normative wire description.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod conn;
mod error;
mod options;
mod pipeline;
#[cfg(feature = "tls")]
mod tls;
mod udp;

use std::path::PathBuf;

pub use client::{unix_connect, Client, FdObject, GetReply, Staging, Transport};
pub use error::Error;
pub use objmapper_proto::hello::caps;
pub use objmapper_proto::{Hello, Metadata, Mode, ObjectState, Status, Tier, Version, MAX_KEY_LEN};
pub use options::{DeleteOptions, GetOptions, PutOptions, V2Options};
pub use pipeline::{Collected, OwnedPipeline, Pipeline, Reply};
#[cfg(feature = "tls")]
pub use tls::TlsOptions;
pub use udp::UdpClient;

/// How long [`Client::connect`] and the other `connect*` calls wait for the server to
/// take the connection, and then for each answer, unless told otherwise
/// ([`Client::connect_timeout`], [`Client::set_timeout`]): 30 s. A dead or stuck server is
/// then an error ([`Error::is_timeout`]), never a hang. Long enough for a durable PUT or
/// a large copy on a loaded disk: the limit applies to each wait, not to the whole call.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Environment variable that overrides the default socket path.
pub const SOCKET_ENV: &str = "OBJMAPPER_SOCKET";

/// The socket path clients and `objmapper serve` use when none is given:
///
/// 1. `$OBJMAPPER_SOCKET`, if set and non-empty;
/// 2. for root (effective uid 0): `/run/objmapper/objmapper.sock`;
/// 3. `$XDG_RUNTIME_DIR/objmapper.sock`, if `XDG_RUNTIME_DIR` is set and non-empty;
/// 4. otherwise `/tmp/objmapper-<uid>/objmapper.sock` (a per-user directory, never a
///    shared name directly in `/tmp`).
pub fn default_socket_path() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let uid = rustix::process::geteuid();
    socket_path_from(
        env(SOCKET_ENV),
        uid.is_root(),
        env("XDG_RUNTIME_DIR"),
        uid.as_raw(),
    )
}

fn socket_path_from(
    explicit: Option<std::ffi::OsString>,
    root: bool,
    runtime_dir: Option<std::ffi::OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(p) = explicit {
        return p.into();
    }
    if root {
        return PathBuf::from("/run/objmapper/objmapper.sock");
    }
    if let Some(d) = runtime_dir {
        return PathBuf::from(d).join("objmapper.sock");
    }
    PathBuf::from(format!("/tmp/objmapper-{uid}/objmapper.sock"))
}

#[cfg(test)]
mod path_tests {
    use super::socket_path_from;
    use std::path::Path;

    #[test]
    fn default_socket_path_order() {
        assert_eq!(
            socket_path_from(Some("/x/s".into()), true, Some("/run/user/1".into()), 1),
            Path::new("/x/s")
        );
        assert_eq!(
            socket_path_from(None, true, Some("/run/user/0".into()), 0),
            Path::new("/run/objmapper/objmapper.sock")
        );
        assert_eq!(
            socket_path_from(None, false, Some("/run/user/1000".into()), 1000),
            Path::new("/run/user/1000/objmapper.sock")
        );
        assert_eq!(
            socket_path_from(None, false, None, 1000),
            Path::new("/tmp/objmapper-1000/objmapper.sock")
        );
    }
}
