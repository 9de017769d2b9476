//! Telling a service manager how the daemon is doing: systemd's `sd_notify` protocol,
//! spoken directly (no libsystemd).
//!
//! The manager puts the path of a Unix datagram socket in `NOTIFY_SOCKET` (a name
//! starting with `@` is in the abstract namespace). Each notification is one datagram of
//! newline-separated `KEY=VALUE` lines:
//!
//! - `READY=1`: startup is over (the store is open and the sockets are served), or a
//!   reload is over;
//! - `RELOADING=1` with `MONOTONIC_USEC=` (the `CLOCK_MONOTONIC` time, in µs): a reload
//!   starts; `READY=1` must follow once it has been applied or refused;
//! - `STOPPING=1`: shutdown has started;
//! - `STATUS=`: one line saying what the daemon is doing, shown by `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` (not started by a manager, or `Type=simple`), [`Notifier`]
//! is absent and nothing is sent.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// One notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify<'a> {
    /// `STATUS=` only: what the daemon is doing now.
    Status(&'a str),
    /// `READY=1` and `STATUS=`: serving (after startup or a reload).
    Ready(&'a str),
    /// `RELOADING=1`, `MONOTONIC_USEC=` and `STATUS=`: a reload starts.
    Reloading(&'a str),
    /// `STOPPING=1` and `STATUS=`: shutting down.
    Stopping(&'a str),
}

impl Notify<'_> {
    /// The datagram's text, with `monotonic_usec` as the reload's timestamp. The status
    /// is kept to one line (line breaks become spaces), as the protocol requires.
    pub fn message(&self, monotonic_usec: u64) -> String {
        let (head, status) = match *self {
            Notify::Status(s) => (String::new(), s),
            Notify::Ready(s) => ("READY=1\n".to_string(), s),
            Notify::Reloading(s) => (format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\n"), s),
            Notify::Stopping(s) => ("STOPPING=1\n".to_string(), s),
        };
        let line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        format!("{head}STATUS={line}\n")
    }
}

/// `CLOCK_MONOTONIC` now, in microseconds (what `MONOTONIC_USEC=` carries).
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000) + (t.tv_nsec as u64) / 1_000
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if it is set (and not empty). Removes the
    /// variable, so that processes this one starts do not notify in its name. Call it
    /// before other threads read the environment. An address this code cannot use (not
    /// a path or an abstract name: systemd's `vsock:` form, say) is an error that says so.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let v = std::env::var_os("NOTIFY_SOCKET");
        std::env::remove_var("NOTIFY_SOCKET");
        match v {
            Some(v) if !v.is_empty() => Notifier::new(v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `name`: an absolute path, or `@` and an abstract name.
    pub fn new(name: impl Into<OsString>) -> io::Result<Notifier> {
        let name = name.into();
        let bytes = name.as_bytes();
        let shown = name.to_string_lossy().into_owned();
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(&name)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={shown:?}: only a path or an abstract name (@...) is \
                         supported"
                    ),
                ))
            }
        };
        Ok(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
            name: shown,
        })
    }

    /// Sends one notification (one datagram).
    pub fn send(&self, n: Notify<'_>) -> io::Result<()> {
        let msg = n.message(monotonic_usec());
        let sent = self.sock.send_to_addr(msg.as_bytes(), &self.addr)?;
        if sent != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", msg.len()),
            ));
        }
        Ok(())
    }

    /// [`Notifier::send`], logging a failure instead of returning it: a manager that
    /// stopped listening is no reason to stop serving.
    pub fn send_or_warn(&self, n: Notify<'_>) {
        if let Err(e) = self.send(n) {
            tracing::warn!(
                "cannot notify the service manager at NOTIFY_SOCKET={}: {e}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines_with_a_one_line_status() {
        assert_eq!(
            Notify::Ready("serving /run/s").message(7),
            "READY=1\nSTATUS=serving /run/s\n"
        );
        assert_eq!(
            Notify::Reloading("re-reading /etc/x").message(1_234_567),
            "RELOADING=1\nMONOTONIC_USEC=1234567\nSTATUS=re-reading /etc/x\n"
        );
        assert_eq!(
            Notify::Stopping("flushing").message(0),
            "STOPPING=1\nSTATUS=flushing\n"
        );
        assert_eq!(
            Notify::Status("two\nlines\r").message(0),
            "STATUS=two lines \n"
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(b >= a + 1_000, "{a} then {b}");
    }

    #[test]
    fn sends_one_datagram_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.send(Notify::Ready("up")).unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up\n");

        let name = format!("objmapper-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::new(format!("@{name}")).unwrap();
        n.send(Notify::Reloading("r")).unwrap();
        let len = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text:?}");
        assert!(text.ends_with("\nSTATUS=r\n"), "{text:?}");
    }

    #[test]
    fn unusable_addresses_are_refused_by_name() {
        let e = Notifier::new("vsock:2:1234").unwrap_err();
        assert!(
            e.to_string().contains("NOTIFY_SOCKET=\"vsock:2:1234\""),
            "{e}"
        );
        // Nobody listening: the send fails, it does not hang.
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("nobody").as_os_str()).unwrap();
        assert!(n.send(Notify::Status("x")).is_err());
    }
}
