//! Creating the listening sockets safely.
//!
//! The Unix socket is bound under a temporary name, given its mode and group, and then
//! renamed into place, so it never exists at its public path with looser permissions.
//! A path that already exists is removed only if it is a stale socket of ours: a socket
//! file, owned by our user, that refuses connections.

use crate::ServerError;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Identity of the socket file we created, so shutdown removes only that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(mio::net::UnixListener, FileId), ServerError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.exists() {
        let dir_mode = if mode & 0o077 == 0 { 0o700 } else { 0o755 };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(parent)
            .map_err(|e| {
                ServerError::io(format!("creating socket directory {}", parent.display()), e)
            })?;
    }
    remove_stale(path)?;
    let name = path.file_name().ok_or_else(|| {
        ServerError::Config(format!("socket path {} has no file name", path.display()))
    })?;
    let tmp: PathBuf = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = remove_if_own_socket(&tmp);
    let listener = mio::net::UnixListener::bind(&tmp).map_err(|e| ServerError::Bind {
        what: tmp.display().to_string(),
        source: e,
    })?;
    let finish = || -> io::Result<FileId> {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            rustix::fs::chown(&tmp, None, Some(rustix::fs::Gid::from_raw(gid)))?;
        }
        fs::rename(&tmp, path)?;
        let m = fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    };
    match finish() {
        Ok(id) => Ok((listener, id)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(ServerError::io(
                format!("setting up socket {} (mode {mode:o})", path.display()),
                e,
            ))
        }
    }
}

fn remove_stale(path: &Path) -> Result<(), ServerError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServerError::io(format!("checking {}", path.display()), e)),
    };
    if !m.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me {
        return Err(ServerError::ForeignSocket {
            path: path.to_path_buf(),
            uid: m.uid(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale socket {}", path.display());
            fs::remove_file(path).map_err(|e| {
                ServerError::io(format!("removing stale socket {}", path.display()), e)
            })
        }
        Err(e) => Err(ServerError::io(
            format!("probing existing socket {}", path.display()),
            e,
        )),
    }
}

fn remove_if_own_socket(path: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    if m.file_type().is_socket() && m.uid() == rustix::process::geteuid().as_raw() {
        fs::remove_file(path)?;
    }
    Ok(())
}

/// Serves a listening socket someone else bound (socket activation): a duplicate of its
/// descriptor, non-blocking.
pub(crate) fn adopt_unix(
    l: &std::os::unix::net::UnixListener,
) -> Result<mio::net::UnixListener, ServerError> {
    let dup = l
        .try_clone()
        .and_then(|d| d.set_nonblocking(true).map(|()| d))
        .map_err(|e| ServerError::io("adopting the passed listening socket".into(), e))?;
    Ok(mio::net::UnixListener::from_std(dup))
}

/// Removes the socket at `path` only if it is still the file we created (`None`: we
/// created none).
pub(crate) fn unlink_if_ours(path: &Path, id: impl Into<Option<FileId>>) {
    let Some(id) = id.into() else { return };
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.dev() == id.dev && m.ino() == id.ino {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!("could not remove socket {}: {e}", path.display());
            }
        }
    }
}
