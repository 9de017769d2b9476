//! Opening a connection: connecting to a socket path, creating a connection over a
//! socket, the V2 HELLO, and the timeout.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use objmapper_client::{Client, V2Options};

use super::{live, objm_connection_t, HelloState};
use crate::error::{guard, Failure, Res};
use crate::ffi;
use crate::types::*;

/// The longest socket path taken, in bytes (without the NUL).
const MAX_PATH: usize = 4095;

/// Wraps a socket fd the caller handed over; closes it on failure.
fn client_from_fd(owned: OwnedFd) -> Res<Client> {
    let fd = owned.as_raw_fd();
    let ty = ffi::socket_type(owned.as_fd())
        .map_err(|e| Failure::local(format!("fd {fd} is not a socket ({e}); it was closed")))?;
    if ty != libc::SOCK_STREAM {
        return Err(Failure::local(format!(
            "fd {fd} is not a stream socket (SO_TYPE {ty}); it was closed"
        )));
    }
    let unix = UnixStream::from(owned);
    if unix.local_addr().is_ok() {
        return Ok(Client::from_unix_stream(unix));
    }
    let tcp = std::net::TcpStream::from(OwnedFd::from(unix));
    if tcp.local_addr().is_ok() {
        return Ok(Client::from_tcp_stream(tcp)?);
    }
    Err(Failure::local(format!(
        "fd {fd} is neither a Unix nor a TCP stream socket; it was closed"
    )))
}

/// A socket path argument: NUL-terminated, 1 to 4095 bytes.
fn path_arg(path: ffi::Text<'_>) -> Res<&[u8]> {
    match path {
        ffi::Text::Null => Err(Failure::local("path is NULL")),
        ffi::Text::TooLong => Err(Failure::local("path is longer than 4095 bytes")),
        ffi::Text::Bytes([]) => Err(Failure::local("path is empty")),
        ffi::Text::Bytes(p) => Ok(p),
    }
}

/// Connects to the Unix socket at `path`.
fn connect(path: ffi::Text<'_>) -> Res<UnixStream> {
    let p = path_arg(path)?;
    objmapper_client::unix_connect(
        std::path::Path::new(std::ffi::OsStr::from_bytes(p)),
        Some(objmapper_client::DEFAULT_TIMEOUT),
    )
    .map_err(|e| match e {
        objmapper_client::Error::Connect { source, .. } => Failure::local(format!(
            "cannot connect to {}: {source}",
            String::from_utf8_lossy(p)
        )),
        e => e.into(),
    })
}

/// A connection over a socket the caller handed over, speaking `version`.
fn create(fd: OwnedFd, version: c_int) -> Res<Box<objm_connection_t>> {
    let mut client = client_from_fd(fd)?;
    client.set_timeout(Some(objmapper_client::DEFAULT_TIMEOUT))?;
    match version {
        OBJM_PROTO_V1 => {}
        OBJM_PROTO_V2 => {
            client.hello(V2Options::default())?;
        }
        v => {
            return Err(Failure::local(format!(
                "unknown protocol version {v}: use OBJM_PROTO_V1 or OBJM_PROTO_V2 \
                 (the socket was closed)"
            )))
        }
    }
    Ok(Box::new(objm_connection_t::new(client)))
}

/// What `depth` and `caps` ask for.
fn v2_options(depth: u16, caps: u32) -> V2Options {
    V2Options {
        pipeline_depth: depth,
        out_of_order: caps & OBJM_CAP_OUT_OF_ORDER != 0,
        fd_passing: caps & OBJM_CAP_FD_PASSING != 0,
        positional_reads: caps & OBJM_CAP_POSITIONAL_READS != 0,
    }
}

impl objm_connection_t {
    /// Refuses a second HELLO after `objm_client_send_hello()`, with a message that
    /// names it (the client's own check would only say "not the first request").
    fn no_hello_sent(&self) -> Res<()> {
        match self.hello {
            HelloState::Sent(_) => Err(Failure::local(
                "a HELLO was already sent on this connection (objm_client_send_hello()); \
                 its answer is read with the first reply",
            )),
            _ => Ok(()),
        }
    }

    /// Sends a HELLO without waiting for its answer (`objm_client_send_hello()`).
    fn send_hello(&mut self, depth: u16, caps: u32, token: &[u8]) -> Res<()> {
        self.no_hello_sent()?;
        if self.client().is_ok_and(|c| c.session().is_some()) {
            return Err(Failure::local(
                "this connection already has a V2 session (OBJM_PROTO_V2 or \
                 objm_client_hello()): a HELLO may be sent once, as the first request",
            ));
        }
        if !self.tags.is_empty() {
            return Err(Failure::local(format!(
                "{} request(s) were sent already: a HELLO must be a connection's first \
                 request",
                self.tags.len()
            )));
        }
        let wire = self.pipe()?.submit_hello(v2_options(depth, caps), token)?;
        self.hello = HelloState::Sent(wire);
        Ok(())
    }

    /// What `objm_client_session()` reports: Some(grant), or None while the HELLO's
    /// answer is awaited.
    fn session(&mut self) -> Res<Option<objm_hello_t>> {
        if let HelloState::Sent(_) = self.hello {
            return Ok(None);
        }
        let client = self.pipe()?.client();
        Ok(Some(match client.session() {
            Some(h) => objm_hello_t {
                version: u16::from(h.version),
                depth: h.depth,
                capabilities: h.capabilities,
            },
            None => objm_hello_t {
                version: OBJM_PROTO_V1 as u16,
                depth: 1,
                capabilities: 0,
            },
        }))
    }
}

/// The V2 handshake on a connection, presenting `token` (empty: none).
fn hello(
    c: &mut objm_connection_t,
    depth: u16,
    caps: u32,
    token: &[u8],
    granted: Option<&mut objm_hello_t>,
) -> Res<c_int> {
    c.no_hello_sent()?;
    let opts = v2_options(depth, caps);
    let h = c.client()?.hello_with_token(opts, token)?;
    let d = usize::from(c.client()?.depth());
    c.pipe()?.set_depth(d);
    if let Some(g) = granted {
        *g = objm_hello_t {
            version: u16::from(h.version),
            depth: h.depth,
            capabilities: h.capabilities,
        };
    }
    Ok(0)
}

/// Connects to the objmapper server's Unix socket at `path` (NUL-terminated) and
/// returns the connected socket's fd, to pass to `objm_client_create()`.
///
/// Returns the fd (close-on-exec), or -1 (NULL path, path too long, nothing listening, a
/// server that did not take the connection within 30 s; see `objm_last_error()`).
///
/// Ownership: the caller owns the returned fd until it hands it to
/// `objm_client_create()`.
///
/// Thread-safety: safe from any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_connect(path: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `path` is NULL or NUL-terminated.
        let path = unsafe { ffi::text(path, MAX_PATH) };
        Ok(connect(path)?.into_raw_fd())
    })
}

/// Creates a connection over a connected stream socket `fd` (a Unix socket from
/// `objm_client_connect()`, or a connected TCP socket) speaking `version`:
/// `OBJM_PROTO_V1`, or `OBJM_PROTO_V2`, which performs the HELLO handshake at once,
/// asking for a pipeline depth of 64, out-of-order replies and fd passing (use
/// `OBJM_PROTO_V1` and then `objm_client_hello()` to ask for something else, or
/// `objm_client_send_hello()` to not wait for the answer).
///
/// The connection waits at most 30 s for each answer (the HELLO's too); change it with
/// `objm_client_set_timeout()`.
///
/// Returns the connection, or NULL (see `objm_last_error()`).
///
/// Ownership: whenever `fd >= 0`, it passes to the library **even on failure** (then it
/// is closed): never close it yourself. The connection is freed by
/// `objm_client_destroy()`, which closes the socket.
///
/// Thread-safety: safe from any thread; the new connection is single-threaded (see
/// `objm_connection_t`).
///
/// # Safety
/// `fd` is -1 or an open fd the caller owns and gives up.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_create(fd: c_int, version: c_int) -> *mut objm_connection_t {
    guard(std::ptr::null_mut(), || {
        if fd < 0 {
            return Err(Failure::local(format!("fd {fd} is not a valid descriptor")));
        }
        // SAFETY: the function's contract: an fd >= 0 is open and handed over.
        let fd = unsafe { ffi::own_fd(fd) };
        Ok(ffi::into_handle(create(fd, version)?))
    })
}

/// Connects to the Unix socket at `path` and creates a connection speaking `version`:
/// `objm_client_connect()` and `objm_client_create()` in one call.
///
/// Returns the connection (free it with `objm_client_destroy()`), or NULL (see
/// `objm_last_error()`; nothing is left open).
///
/// Thread-safety: safe from any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_open(
    path: *const c_char,
    version: c_int,
) -> *mut objm_connection_t {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the function's contract: `path` is NULL or NUL-terminated.
        let path = unsafe { ffi::text(path, MAX_PATH) };
        let sock = connect(path)?;
        Ok(ffi::into_handle(create(OwnedFd::from(sock), version)?))
    })
}

/// Opens a V2 session on a connection created with `OBJM_PROTO_V1` that has sent
/// nothing yet: asks for `depth` requests in flight (>= 1; PIPELINE is asked for when
/// above 1) and the `OBJM_CAP_OUT_OF_ORDER` / `OBJM_CAP_FD_PASSING` bits in `caps`, and
/// makes the `OBJM_CAP_POSITIONAL_READS` promise if that bit is set (with FD_PASSING
/// only; other bits are ignored). If `granted` is not NULL, the grant is written there.
///
/// Returns 0, or -1 (see `objm_last_error()`). After a failure the connection is
/// unusable (a server that does not speak V2 closes it): destroy it.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `granted` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_hello(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
    granted: *mut objm_hello_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `granted` is NULL or writable.
        let granted = unsafe { ffi::out(granted) };
        hello(c, depth, caps, &[], granted)
    })
}

/// `objm_client_hello()`, presenting `token` (`token_len` bytes, at most 256) to a TCP
/// listener that requires one (the server's `--tcp-token-file`). A `token_len` of 0
/// sends none. A missing or wrong token gets `OBJM_STATUS_FORBIDDEN` and the server
/// closes the connection.
///
/// Returns 0, or -1 (see `objm_last_error()`). After a failure the connection is
/// unusable: destroy it.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `token` is readable for `token_len` bytes (or
/// NULL with `token_len` 0); `granted` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_hello_token(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
    token: *const c_void,
    token_len: usize,
    granted: *mut objm_hello_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `token` is readable for `token_len` bytes (or
        // NULL with 0).
        let token = unsafe { ffi::bytes(token, token_len, "token") }?;
        // SAFETY: the function's contract: `granted` is NULL or writable.
        let granted = unsafe { ffi::out(granted) };
        hello(c, depth, caps, token, granted)
    })
}

/// Sends the V2 HELLO **without waiting for its answer**: for event loops, which must not
/// block (the nginx module). `conn` was created with `OBJM_PROTO_V1` and has sent
/// nothing yet; `depth` and `caps` ask for what `objm_client_hello()` asks for (a depth
/// of at least 1, PIPELINE when above 1; `OBJM_CAP_OUT_OF_ORDER`, `OBJM_CAP_FD_PASSING`,
/// and the `OBJM_CAP_POSITIONAL_READS` promise with FD_PASSING only; other bits are
/// ignored).
///
/// Requests may be sent at once, behind it, with `objm_client_send_request()`: the
/// server handles the HELLO before it reads them, so they run in the session it grants
/// (docs/PROTOCOL.md, "HELLO"). Until the answer is read, fd mode is allowed (on a Unix
/// socket) and up to `depth` requests may be outstanding besides the HELLO.
///
/// The answer is read by the receive calls (`objm_client_try_recv_response()`,
/// `objm_client_recv_response()`, `..._for()`) before the first reply, and never
/// returned as a response: the grant is recorded (see `objm_client_session()`). If the
/// server refused the HELLO (`OBJM_STATUS_FORBIDDEN` from an allowlist or a wrong token,
/// `OBJM_STATUS_VERSION_UNSUPPORTED`, ...), that receive call returns -1 with
/// `objm_last_status()` the server's status and `objm_last_error()` "the server
/// refused the HELLO: STATUS_NAME: server message; ...": the server has closed the connection,
/// the requests sent behind the HELLO get no reply, and every later call on `conn`
/// fails the same way: destroy it. A convenience call (`objm_get_fd()`, ...) made
/// while nothing else is outstanding reads the answer first, blocking.
///
/// The HELLO is not counted by `objm_client_outstanding()`. With nothing else sent, no
/// receive call reads its answer (they need a request): to learn the grant before
/// sending anything, send an `OBJM_OP_PING` behind it, or use the blocking
/// `objm_client_hello()`.
///
/// Returns 0 once the HELLO is on the wire, or -1 (see `objm_last_error()`): `depth` 0,
/// a connection that already sent a request or has a V2 session, a second HELLO (all
/// refused locally: nothing was sent), or a failed send (the connection is unusable).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_send_hello(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        c.send_hello(depth, caps, &[])?;
        Ok(0)
    })
}

/// `objm_client_send_hello()`, presenting `token` (`token_len` bytes, at most 256) to a
/// TCP listener that requires one, as `objm_client_hello_token()` does. A `token_len` of
/// 0 sends none. A missing or wrong token is refused with `OBJM_STATUS_FORBIDDEN` when
/// the answer is read (see `objm_client_send_hello()`).
///
/// Returns 0 once the HELLO is on the wire, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `token` is readable for `token_len` bytes (or
/// NULL with `token_len` 0).
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_send_hello_token(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
    token: *const c_void,
    token_len: usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `token` is readable for `token_len` bytes (or
        // NULL with 0).
        let token = unsafe { ffi::bytes(token, token_len, "token") }?;
        c.send_hello(depth, caps, token)?;
        Ok(0)
    })
}

/// What the connection's session is, without waiting and without any I/O: writes to
/// `*granted` the grant of its HELLO (from `objm_client_hello()`, `OBJM_PROTO_V2`, or
/// `objm_client_send_hello()` once a receive call has read the answer): version 2, the
/// granted depth, and the granted `OBJM_CAP_*` bits. Check
/// `capabilities & OBJM_CAP_POSITIONAL_READS` to learn whether the promise was accepted
/// (fd GETs may then get shared descriptions). A V1 connection reports version 1,
/// depth 1 and no capabilities.
///
/// Returns 0 with `*granted` written; 1 while the answer to `objm_client_send_hello()`
/// has not been read yet (`*granted` untouched); or -1 (see `objm_last_error()`):
/// `conn` or `granted` NULL, a closed connection, or a HELLO the server refused (the
/// same status and message the receive call gave).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `granted` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_session(
    conn: *mut objm_connection_t,
    granted: *mut objm_hello_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `granted` is NULL or writable.
        let out = unsafe { ffi::out(granted) }.ok_or_else(|| Failure::local("granted is NULL"))?;
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        match c.session()? {
            Some(h) => {
                *out = h;
                Ok(0)
            }
            None => Ok(1),
        }
    })
}

/// Limits how long any later call on `conn` waits for the server to take a request or
/// answer one: `timeout_ms` milliseconds, or 0 for no limit. The default is 30000 (30 s):
/// a dead or stuck server is an error, never a hang. A call that times out fails ("the
/// server did not answer within ...") and leaves the connection unusable. It may be
/// called at any time, also while requests (or a HELLO from `objm_client_send_hello()`)
/// await their replies: it never reads or writes the socket.
///
/// Returns 0, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_set_timeout(
    conn: *mut objm_connection_t,
    timeout_ms: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        let t = (timeout_ms != 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        // No I/O: also while requests (or a HELLO) await their replies.
        c.pipe()?.set_timeout(t)?;
        Ok(0)
    })
}
