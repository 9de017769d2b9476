//! Socket activation (systemd's `sd_listen_fds` protocol, read without libsystemd).
//!
//! The service manager binds the socket and starts the server with it as descriptor 3,
//! `LISTEN_FDS=1` and `LISTEN_PID=<the server's pid>` (and optionally `LISTEN_FDNAMES`).
//! [`take_activated_listener`] claims it, checks that it is a listening `AF_UNIX` stream
//! socket, and removes the variables so child processes do not see them. Put the
//! listener in [`crate::ServerConfig::unix_listener`]: the server then serves it instead
//! of binding `socket_path`, and leaves the socket file alone on shutdown (the manager
//! owns it).

use std::os::unix::net::UnixListener;

use crate::ServerError;

/// The first descriptor passed by the protocol (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Claims the listening socket passed by a service manager, if this process was socket
/// activated: `Ok(None)` when `LISTEN_PID`/`LISTEN_FDS` are absent or name another
/// process. More than one descriptor, or one that is not a listening Unix stream socket,
/// is an error ([`ServerError::Config`]) that says what was found.
///
/// Call it once, early, before other threads read the environment: it removes
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
pub fn take_activated_listener() -> Result<Option<UnixListener>, ServerError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    let bad = |what: String| ServerError::Config(format!("socket activation: {what}"));
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| bad(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != std::process::id() {
        // Meant for another process (an inherited environment): not activated.
        tracing::debug!("LISTEN_PID={pid} is not us: ignoring LISTEN_FDS");
        return Ok(None);
    }
    let n: u32 = fds
        .trim()
        .parse()
        .map_err(|_| bad(format!("LISTEN_FDS={fds:?} is not a count")))?;
    match n {
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(bad(format!(
                "{n} descriptors passed (LISTEN_FDNAMES={:?}); objmapper takes exactly one \
                 listening Unix stream socket: give the .socket unit a single ListenStream=",
                names.unwrap_or_default()
            )))
        }
    }
    let fd = crate::sys::claim_inherited_fd(LISTEN_FDS_START).ok_or_else(|| {
        bad(format!(
            "LISTEN_FDS=1 but descriptor {LISTEN_FDS_START} is not open"
        ))
    })?;
    check_listening_unix_stream(&fd).map_err(bad)?;
    // The protocol leaves the descriptor inheritable; nothing we spawn should get it.
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(|e| {
        ServerError::io(
            format!("socket activation: setting close-on-exec on fd {LISTEN_FDS_START}"),
            e.into(),
        )
    })?;
    Ok(Some(UnixListener::from(fd)))
}

/// Why `fd` is not a listening AF_UNIX stream socket, if it is not.
fn check_listening_unix_stream(fd: &std::os::fd::OwnedFd) -> Result<(), String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let fd_no = LISTEN_FDS_START;
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat of fd {fd_no}: {e}"))?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind != rustix::fs::FileType::Socket {
        return Err(format!(
            "fd {fd_no} is not a socket (it is a {kind:?}); the .socket unit must use \
             ListenStream= with a path"
        ));
    }
    let ty = sockopt::socket_type(fd).map_err(|e| format!("SO_TYPE of fd {fd_no}: {e}"))?;
    if ty != SocketType::STREAM {
        return Err(format!(
            "fd {fd_no} is not a stream socket ({ty:?}); use ListenStream=, not \
             ListenDatagram= or ListenSequentialPacket="
        ));
    }
    let domain = sockopt::socket_domain(fd).map_err(|e| format!("SO_DOMAIN of fd {fd_no}: {e}"))?;
    if domain != AddressFamily::UNIX {
        return Err(format!(
            "fd {fd_no} is not a Unix socket ({domain:?}); objmapper's object socket is a \
             path: ListenStream=/run/objmapper/objmapper.sock"
        ));
    }
    let listening =
        sockopt::socket_acceptconn(fd).map_err(|e| format!("SO_ACCEPTCONN of fd {fd_no}: {e}"))?;
    if !listening {
        return Err(format!(
            "fd {fd_no} is a Unix stream socket that is not listening (Accept=yes \
             passes connections; objmapper needs Accept=no)"
        ));
    }
    Ok(())
}
