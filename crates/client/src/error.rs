//! The client's error type.

use std::io;
use std::path::PathBuf;

use objmapper_proto::{Mode, Status};

use crate::Transport;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Variants fall in three groups:
/// - refused locally, before anything was sent: [`Error::InvalidArgument`],
///   [`Error::ModeUnsupported`]; the connection stays usable (so does it after
///   [`Error::Writer`]);
/// - the server answered with a status other than OK: [`Error::Server`]; the connection
///   stays usable unless the status is one after which the server closes it
///   (PROTOCOL_ERROR, OBJECT_TOO_LARGE on a copy PUT, METADATA_TOO_LARGE,
///   VERSION_UNSUPPORTED);
/// - the stream itself failed: [`Error::Connect`], [`Error::ConnectTcp`], [`Error::Io`],
///   [`Error::Protocol`], [`Error::Closed`]; the connection is unusable afterwards and
///   every later call returns [`Error::Closed`]. Reconnect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting to the Unix socket failed.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Connecting over TCP failed.
    #[error("cannot connect to {addr} over TCP: {source}")]
    ConnectTcp {
        /// The address(es) tried.
        addr: String,
        /// What the OS said (for the last address tried).
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to the connection failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The server answered with a non-OK status. `message` is the server's text, shown as is.
    #[error("{}", server_text(*.status, .message))]
    Server {
        /// The status the server sent.
        status: Status,
        /// The server's human-readable message (may be empty).
        message: String,
    },
    /// The server sent something this client cannot parse, or an fd where none belonged
    /// (or none where one did). The connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The mode cannot work on this connection: fd mode over TCP or UDP, splice over UDP,
    /// or fd mode on a Unix socket whose V2 session did not negotiate FD_PASSING. Refused
    /// locally; nothing was sent.
    #[error("{}", mode_text(*.mode, *.transport))]
    ModeUnsupported {
        /// The mode asked for.
        mode: Mode,
        /// The connection's transport.
        transport: Transport,
    },
    /// The call's arguments can never be valid (empty key, key over MAX_KEY_LEN,
    /// metadata too large). Refused locally; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The writer given to [`Client::put_fd`](crate::Client::put_fd) failed; the staged
    /// PUT was aborted and nothing was published. The connection stays usable.
    #[error("writing the object failed, PUT aborted: {0}")]
    Writer(#[source] io::Error),
    /// The server closed the connection, or an earlier error made it unusable.
    #[error("connection closed by the server (or unusable after an earlier error); reconnect")]
    Closed,
    /// No complete, consistent reply arrived in time. Over UDP
    /// ([`UdpClient`](crate::UdpClient)) this comes after every attempt has timed out; the
    /// message says how long each waited and how many were made.
    #[error("timed out: {0}")]
    Timeout(String),
}

fn mode_text(mode: Mode, transport: Transport) -> String {
    if transport.supports(mode) {
        // Only a session can take away what the transport allows: fd without FD_PASSING.
        format!(
            "{mode} mode is not available on this connection: its V2 session did not \
             negotiate FD_PASSING"
        )
    } else {
        format!("{mode} mode is not available over {transport}")
    }
}

fn server_text(status: Status, message: &str) -> String {
    if message.is_empty() {
        status.name().to_owned()
    } else {
        format!("{}: {message}", status.name())
    }
}

impl Error {
    /// The status the server answered with, for [`Error::Server`]; `None` for every
    /// error that did not come from the server (including local refusals).
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server said NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(Status::NotFound)
    }

    /// True when the server said PRECONDITION_FAILED: a conditional write
    /// (`if_version`, `if_absent`, [`Client::delete_if_version`](crate::Client::delete_if_version))
    /// found the key in another state, and nothing was changed.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(Status::PreconditionFailed)
    }

    /// True when the server said RANGE_NOT_SATISFIABLE: the range starts past the end.
    pub fn is_range_not_satisfiable(&self) -> bool {
        self.status() == Some(Status::RangeNotSatisfiable)
    }

    /// True when the server did not take the connection, a request or an answer in time
    /// (the connection's timeout, [`crate::DEFAULT_TIMEOUT`] by default): a dead, stuck
    /// or overloaded server, or one that never started behind a socket-activated socket.
    pub fn is_timeout(&self) -> bool {
        let timed_out = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        };
        match self {
            Error::Timeout(_) => true,
            Error::Io(e) => timed_out(e),
            Error::Connect { source, .. } | Error::ConnectTcp { source, .. } => timed_out(source),
            _ => false,
        }
    }

    /// Whether the connection can no longer be used after this error.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            Error::Server { status, .. } => status_closes(*status),
            Error::InvalidArgument(_) | Error::ModeUnsupported { .. } | Error::Writer(_) => false,
            _ => true,
        }
    }
}

/// Statuses after which the server closes the connection (docs/PROTOCOL.md, "Statuses").
/// OBJECT_TOO_LARGE closes only after a copy PUT; the caller passes that case explicitly.
fn status_closes(status: Status) -> bool {
    matches!(
        status,
        Status::ProtocolError | Status::VersionUnsupported | Status::MetadataTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_display_shows_status_and_message() {
        let e = Error::Server {
            status: Status::NotFound,
            message: "no object under that key".into(),
        };
        assert_eq!(e.to_string(), "NOT_FOUND: no object under that key");
        assert!(e.is_not_found());
        assert_eq!(e.status(), Some(Status::NotFound));
        let e = Error::Server {
            status: Status::Busy,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "BUSY");
        assert!(!e.is_not_found());
    }

    #[test]
    fn local_errors_have_no_status() {
        let e = Error::ModeUnsupported {
            mode: Mode::Fd,
            transport: Transport::Tcp,
        };
        assert_eq!(e.status(), None);
        assert_eq!(e.to_string(), "fd mode is not available over TCP");
        assert!(!e.breaks_connection());
        assert!(Error::Closed.breaks_connection());
        let e = Error::ModeUnsupported {
            mode: Mode::Splice,
            transport: Transport::Udp,
        };
        assert_eq!(e.to_string(), "splice mode is not available over UDP");
        let e = Error::ModeUnsupported {
            mode: Mode::Fd,
            transport: Transport::Unix,
        };
        assert!(e.to_string().contains("FD_PASSING"), "{e}");
    }

    #[test]
    fn precondition_failed_is_a_server_error() {
        let e = Error::Server {
            status: Status::PreconditionFailed,
            message: "version 7 is not the current version 8".into(),
        };
        assert!(e.is_precondition_failed());
        assert!(!e.is_not_found());
        assert!(!e.breaks_connection());
        assert_eq!(
            e.to_string(),
            "PRECONDITION_FAILED: version 7 is not the current version 8"
        );
        assert!(!Error::Closed.is_precondition_failed());
    }
}
