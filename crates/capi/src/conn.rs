//! Connections and the seed-shaped request/response API.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use objmapper_client::{
    Client, DeleteOptions, Error, GetOptions, GetReply, Metadata, Mode, OwnedPipeline, PutOptions,
    Reply, Status, V2Options,
};

use crate::error::{guard, Failure, Res};
use crate::types::*;

/// How many requests a V1 connection lets the caller send before it waits for a reply
/// (a V1 server answers in order, however many wait; the replies are kept until received).
const V1_DEPTH: usize = 64;

/// A connection to an objmapper server (opaque).
///
/// Thread-safety: a connection is not thread-safe. Use it from one thread at a time:
/// one connection per thread, or a lock around every call that takes it. It may move
/// between threads between calls.
pub struct objm_connection_t {
    /// `None` after `objm_client_close()`.
    pipe: Option<OwnedPipeline>,
    /// Requests sent and not yet received, in sending order.
    tags: VecDeque<Tag>,
    /// A call panicked while working on this connection: refuse every later call.
    poisoned: bool,
}

/// What the caller called a request that is on the wire.
#[derive(Clone, Copy, Debug)]
struct Tag {
    wire: u32,
    user: u32,
    op: u8,
}

impl objm_connection_t {
    fn new(client: Client) -> objm_connection_t {
        let v1 = client.version() == objmapper_client::Version::V1;
        let mut pipe = client.into_pipeline();
        if v1 {
            pipe.set_depth(V1_DEPTH);
        }
        objm_connection_t {
            pipe: Some(pipe),
            tags: VecDeque::new(),
            poisoned: false,
        }
    }

    /// Marks the connection unusable after a panic in a call working on it.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    fn pipe(&mut self) -> Res<&mut OwnedPipeline> {
        self.pipe
            .as_mut()
            .ok_or_else(|| Failure::local("the connection was closed by objm_client_close()"))
    }

    /// The client, for a plain (synchronous) call: refused while requests are outstanding.
    pub(crate) fn client(&mut self) -> Res<&mut Client> {
        let n = self.tags.len();
        let pipe = self.pipe()?;
        pipe.client_mut().map_err(|_| {
            Failure::local(format!(
                "{n} request(s) sent with objm_client_send_request() still await \
                 objm_client_recv_response(): receive them before a convenience call"
            ))
        })
    }

    fn send(&mut self, req: &objm_request_t) -> Res<()> {
        let op = req.op;
        let pipe = self.pipe()?;
        // SAFETY: `req` is a valid request whose pointers the caller vouches for (the
        // contract of objm_client_send_request); the helpers bound every length first.
        let key = unsafe { key(req.uri, req.uri_len) }?;
        check_flags(op, req.flags)?;
        if req.flags & OBJM_FLAG_ORDERED != 0 {
            pipe.set_ordered(true);
        }
        let r = submit(pipe, req, key);
        pipe.set_ordered(false);
        let wire = r?;
        self.tags.push_back(Tag {
            wire,
            user: req.id,
            op,
        });
        Ok(())
    }

    /// The next reply if a whole one has arrived, without blocking.
    fn try_recv(&mut self) -> Res<Option<*mut objm_response_t>> {
        if self.tags.is_empty() {
            return Err(Failure::local(
                "no request is outstanding: send one with objm_client_send_request() first",
            ));
        }
        let Some((wire, outcome)) = self.pipe()?.try_collect()? else {
            return Ok(None);
        };
        let i = self
            .tags
            .iter()
            .position(|t| t.wire == wire)
            .ok_or_else(|| Failure::local(format!("internal: reply to unknown request {wire}")))?;
        let tag = self.tags.remove(i).expect("index from position");
        Ok(Some(build_response(tag.user, tag.op, outcome)))
    }

    fn recv(&mut self, id: Option<u32>) -> Res<*mut objm_response_t> {
        if self.tags.is_empty() {
            return Err(Failure::local(
                "no request is outstanding: send one with objm_client_send_request() first",
            ));
        }
        let (tag, outcome) = match id {
            None => {
                let (wire, outcome) = self.pipe()?.collect()?;
                let i = self
                    .tags
                    .iter()
                    .position(|t| t.wire == wire)
                    .ok_or_else(|| {
                        Failure::local(format!("internal: reply to unknown request {wire}"))
                    })?;
                (self.tags.remove(i).expect("index from position"), outcome)
            }
            Some(id) => {
                let i =
                    self.tags.iter().position(|t| t.user == id).ok_or_else(|| {
                        Failure::local(format!("no outstanding request has id {id}"))
                    })?;
                let wire = self.tags[i].wire;
                let outcome = self.pipe()?.collect_for(wire)?;
                (self.tags.remove(i).expect("index checked"), outcome)
            }
        };
        Ok(build_response(tag.user, tag.op, outcome))
    }
}

/// Checks the flags against what `op` accepts.
fn check_flags(op: u8, flags: u16) -> Res<()> {
    let allowed = match op {
        OBJM_OP_PUT | OBJM_OP_COMMIT => {
            OBJM_FLAG_DURABLE
                | OBJM_FLAG_EPHEMERAL
                | OBJM_FLAG_PIN
                | OBJM_FLAG_IF_VERSION
                | OBJM_FLAG_IF_ABSENT
                | OBJM_FLAG_ORDERED
        }
        OBJM_OP_DELETE => OBJM_FLAG_DURABLE | OBJM_FLAG_IF_VERSION | OBJM_FLAG_ORDERED,
        _ => OBJM_FLAG_ORDERED,
    };
    if flags & !allowed != 0 {
        return Err(Failure::local(format!(
            "flags 0x{:04x} do not apply to {} (it accepts 0x{allowed:04x})",
            flags & !allowed,
            op_name(op)
        )));
    }
    Ok(())
}

pub(crate) fn op_name(op: u8) -> &'static str {
    match op {
        OBJM_OP_GET => "GET",
        OBJM_OP_HEAD => "HEAD",
        OBJM_OP_PUT => "PUT",
        OBJM_OP_COMMIT => "COMMIT",
        OBJM_OP_ABORT => "ABORT",
        OBJM_OP_DELETE => "DELETE",
        OBJM_OP_PING => "PING",
        OBJM_OP_PIN => "PIN",
        OBJM_OP_UNPIN => "UNPIN",
        OBJM_OP_BAN => "BAN",
        _ => "an unknown op",
    }
}

/// The wire mode for `.mode`; `None` for OBJM_MODE_DEFAULT.
fn mode(m: u8) -> Res<Option<Mode>> {
    match m {
        OBJM_MODE_DEFAULT => Ok(None),
        OBJM_MODE_FDPASS => Ok(Some(Mode::Fd)),
        OBJM_MODE_COPY => Ok(Some(Mode::Copy)),
        OBJM_MODE_SPLICE => Ok(Some(Mode::Splice)),
        OBJM_MODE_AUTO => Ok(Some(Mode::Auto)),
        _ => Err(Failure::local(format!(
            "unknown mode {m}: use OBJM_MODE_FDPASS, _COPY, _SPLICE, _AUTO or _DEFAULT"
        ))),
    }
}

/// Puts one request on the wire; returns its wire id.
fn submit(pipe: &mut OwnedPipeline, req: &objm_request_t, key: &[u8]) -> Res<u32> {
    let mode = mode(req.mode)?;
    let id = match req.op {
        OBJM_OP_GET => {
            let mut o = GetOptions { mode, range: None };
            if req.offset != 0 || req.length != 0 {
                o.range = Some((req.offset, req.length));
            }
            pipe.submit_get(key, &o)?
        }
        OBJM_OP_HEAD => pipe.submit_head(key)?,
        OBJM_OP_PUT => {
            // SAFETY: as in `send`: the caller vouches for the request's pointers.
            let opts = unsafe { put_options(req) }?;
            match mode.unwrap_or(Mode::Copy) {
                Mode::Fd => {
                    if req.data_len != 0 {
                        return Err(Failure::local(
                            "an fd-mode PUT carries no data: write the object into the fd \
                             its response carries, then COMMIT",
                        ));
                    }
                    pipe.submit_begin_put(key, req.length, &opts)?
                }
                m @ (Mode::Copy | Mode::Splice) => {
                    // SAFETY: as above; `bytes` checks NULL and bounds the length.
                    let data = unsafe { bytes(req.data, req.data_len, "data") }?;
                    pipe.submit_put_inline(key, data, &opts, m)?
                }
                m => {
                    return Err(Failure::local(format!(
                        "PUT takes OBJM_MODE_FDPASS, _COPY or _SPLICE, not {m}"
                    )))
                }
            }
        }
        OBJM_OP_COMMIT => {
            // SAFETY: as in `send`.
            let opts = unsafe { put_options(req) }?;
            pipe.submit_commit(req.handle, req.length, &opts)?
        }
        OBJM_OP_ABORT => pipe.submit_abort(req.handle)?,
        OBJM_OP_DELETE => {
            let opts = DeleteOptions {
                durable: req.flags & OBJM_FLAG_DURABLE != 0,
                if_version: (req.flags & OBJM_FLAG_IF_VERSION != 0).then_some(req.if_version),
            };
            pipe.submit_delete(key, &opts)?
        }
        OBJM_OP_PING => pipe.submit_ping()?,
        OBJM_OP_PIN => pipe.submit_pin(key, true)?,
        OBJM_OP_UNPIN => pipe.submit_pin(key, false)?,
        OBJM_OP_BAN => pipe.submit_ban(key)?,
        op => {
            return Err(Failure::local(format!(
                "unknown op {op}: use one of OBJM_OP_GET .. OBJM_OP_BAN"
            )))
        }
    };
    Ok(id)
}

/// The PUT/COMMIT options a request asks for.
///
/// # Safety
/// `req.content_type` is NULL or a NUL-terminated string; `req.custom` is NULL or points
/// to `req.custom_count` pairs, each with a NUL-terminated name and `value_len` bytes.
unsafe fn put_options(req: &objm_request_t) -> Res<PutOptions> {
    let mut o = put_flags(req.flags)?;
    if req.flags & OBJM_FLAG_IF_VERSION != 0 {
        o.if_version = Some(req.if_version);
    }
    if req.expires_at != 0 {
        o.expires_at = Some(req.expires_at);
    }
    // SAFETY: the caller's contract above.
    o.content_type = unsafe { text(req.content_type, OBJM_MAX_CONTENT_TYPE_LEN, "content_type") }?;
    if req.custom_count > OBJM_MAX_CUSTOM_PAIRS {
        return Err(Failure::local(format!(
            "custom_count {} exceeds OBJM_MAX_CUSTOM_PAIRS ({OBJM_MAX_CUSTOM_PAIRS})",
            req.custom_count
        )));
    }
    if req.custom_count > 0 {
        if req.custom.is_null() {
            return Err(Failure::local(format!(
                "custom is NULL but custom_count is {}",
                req.custom_count
            )));
        }
        // SAFETY: non-NULL and, by the contract, `custom_count` (bounded above) pairs long.
        let pairs = unsafe { std::slice::from_raw_parts(req.custom, req.custom_count) };
        for (i, p) in pairs.iter().enumerate() {
            // SAFETY: the contract: each name is NUL-terminated, each value `value_len` long.
            let name = unsafe { text(p.name, 255, "custom name") }?
                .ok_or_else(|| Failure::local(format!("custom[{i}].name is NULL")))?;
            // SAFETY: as above.
            let value = unsafe { bytes(p.value, p.value_len, "custom value") }?;
            o.custom.push((name, value.to_vec()));
        }
    }
    Ok(o)
}

/// The flags of a PUT/COMMIT as options (without `if_version`'s value).
pub(crate) fn put_flags(flags: u16) -> Res<PutOptions> {
    Ok(PutOptions {
        durable: flags & OBJM_FLAG_DURABLE != 0,
        ephemeral: flags & OBJM_FLAG_EPHEMERAL != 0,
        pinned: flags & OBJM_FLAG_PIN != 0,
        if_absent: flags & OBJM_FLAG_IF_ABSENT != 0,
        ..PutOptions::default()
    })
}

/// The key a caller passed: `len` bytes at `ptr`, bounded by OBJM_MAX_KEY_LEN before
/// anything is read. An empty key is passed on (the client refuses it with its reason).
///
/// # Safety
/// If `ptr` is non-NULL it points to at least `len` readable bytes (when `len` is within
/// the bound), which stay valid and unchanged for `'a`.
pub(crate) unsafe fn key<'a>(ptr: *const c_char, len: usize) -> Res<&'a [u8]> {
    if len > OBJM_MAX_KEY_LEN {
        return Err(Failure::local(format!(
            "uri_len {len} exceeds OBJM_MAX_KEY_LEN ({OBJM_MAX_KEY_LEN})"
        )));
    }
    // SAFETY: forwarded contract.
    unsafe { bytes(ptr.cast(), len, "uri") }
}

/// `len` bytes at `ptr`; NULL is allowed only with `len` 0.
///
/// # Safety
/// If `ptr` is non-NULL it points to `len` readable bytes, valid and unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const c_void, len: usize, what: &str) -> Res<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::local(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::local(format!("{what} length {len} is impossible")));
    }
    // SAFETY: non-NULL, length at most isize::MAX, and the caller's contract says it is
    // readable for `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// A NUL-terminated UTF-8 string of at most `max` bytes, or `None` for NULL. Never reads
/// past `max + 1` bytes.
///
/// # Safety
/// If `ptr` is non-NULL it points to a NUL-terminated string, or at least `max + 1`
/// readable bytes.
pub(crate) unsafe fn text(ptr: *const c_char, max: usize, what: &str) -> Res<Option<String>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: strnlen reads at most `max + 1` bytes, all readable by the contract.
    let len = unsafe { libc::strnlen(ptr, max + 1) };
    if len > max {
        return Err(Failure::local(format!(
            "{what} is longer than {max} bytes (or not NUL-terminated)"
        )));
    }
    // SAFETY: `len` bytes were just found readable, before the NUL.
    let b = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let s =
        std::str::from_utf8(b).map_err(|_| Failure::local(format!("{what} is not valid UTF-8")))?;
    Ok(Some(s.to_owned()))
}

/// A response and everything it points to, in one allocation that `objm_response_free`
/// releases. `public` comes first so a pointer to it is a pointer to the whole.
#[repr(C)]
struct OwnedResponse {
    public: objm_response_t,
    message: CString,
    data: Vec<u8>,
    names: Vec<CString>,
    values: Vec<Vec<u8>>,
    pairs: Vec<objm_meta_pair_t>,
}

pub(crate) fn empty_meta() -> objm_meta_t {
    objm_meta_t {
        size: 0,
        version: 0,
        mtime_ns: 0,
        checksum: 0,
        expires_at: 0,
        tier: OBJM_TIER_UNKNOWN,
        state: 0,
        content_type: [0; 256],
    }
}

/// Copies wire metadata into the C struct.
pub(crate) fn fill_meta(out: &mut objm_meta_t, m: &Metadata) {
    out.size = m.size.unwrap_or(0);
    out.version = m.version.unwrap_or(0);
    out.mtime_ns = m.mtime_ns.unwrap_or(0);
    out.checksum = m.checksum.unwrap_or(0);
    out.expires_at = m.expires_at.unwrap_or(0);
    out.tier = m.tier.map_or(OBJM_TIER_UNKNOWN, |t| t.as_u8());
    out.state = m.state.map_or(0, |s| s.bits());
    out.content_type = [0; 256];
    if let Some(ct) = &m.content_type {
        // At most 255 bytes on the wire; cut at a NUL so C sees all of what fits.
        let b = ct.as_bytes();
        let n = b
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(b.len())
            .min(OBJM_MAX_CONTENT_TYPE_LEN);
        for (d, s) in out.content_type.iter_mut().zip(&b[..n]) {
            *d = *s as c_char;
        }
    }
}

/// Builds a heap response for a request's outcome.
fn build_response(id: u32, op: u8, outcome: Result<Reply, Error>) -> *mut objm_response_t {
    let mut r = Box::new(OwnedResponse {
        public: objm_response_t {
            id,
            status: OBJM_STATUS_OK,
            op,
            mode: OBJM_MODE_DEFAULT,
            reserved: 0,
            fd: -1,
            offset: 0,
            length: 0,
            data: std::ptr::null(),
            data_len: 0,
            handle: 0,
            meta: empty_meta(),
            custom: std::ptr::null(),
            custom_count: 0,
            message: std::ptr::null(),
        },
        message: CString::default(),
        data: Vec::new(),
        names: Vec::new(),
        values: Vec::new(),
        pairs: Vec::new(),
    });
    let mut meta = None;
    let not_found = |r: &mut OwnedResponse| {
        r.public.status = OBJM_STATUS_NOT_FOUND;
        r.message = CString::from(c"no object under that key");
    };
    match outcome {
        Ok(Reply::Get(GetReply::Fd(o))) => {
            r.public.mode = OBJM_MODE_FDPASS;
            r.public.offset = o.offset;
            r.public.length = o.length;
            r.public.fd = o.fd.into_raw_fd();
            meta = Some(o.meta);
        }
        Ok(Reply::Get(GetReply::Bytes(b, m))) => {
            r.public.mode = OBJM_MODE_COPY;
            r.public.length = b.len() as u64;
            r.data = b;
            meta = Some(m);
        }
        Ok(Reply::Head(m) | Reply::Put(m) | Reply::Commit(m) | Reply::Ban(m)) => meta = Some(m),
        Ok(Reply::Staged(s)) => {
            r.public.mode = OBJM_MODE_FDPASS;
            r.public.handle = s.handle;
            r.public.fd = s.fd.into_raw_fd();
        }
        Ok(Reply::Delete(true) | Reply::Pin(true) | Reply::Ping | Reply::Abort) => {}
        Ok(Reply::Delete(false) | Reply::Pin(false)) => not_found(&mut r),
        Ok(other) => {
            // `Reply` is non_exhaustive: a reply kind this library does not know yet.
            r.public.status = OBJM_STATUS_INTERNAL;
            r.message = cstring(format!("libobjmapper cannot represent the reply {other:?}"));
        }
        Err(e) => {
            r.public.status = e.status().map_or(OBJM_STATUS_INTERNAL, |s| s.as_u8());
            r.message = cstring(match e {
                Error::Server { message, .. } => message,
                e => e.to_string(),
            });
        }
    }
    if let Some(m) = meta {
        fill_meta(&mut r.public.meta, &m);
        for (name, value) in m.custom {
            r.names.push(cstring(name));
            r.values.push(value);
        }
    }
    let pairs: Vec<objm_meta_pair_t> = r
        .names
        .iter()
        .zip(&r.values)
        .map(|(n, v)| objm_meta_pair_t {
            name: n.as_ptr(),
            value: v.as_ptr().cast(),
            value_len: v.len(),
        })
        .collect();
    r.pairs = pairs;
    // Pointers into heap buffers owned by `r`: they stay put when the Box is moved.
    r.public.custom = if r.pairs.is_empty() {
        std::ptr::null()
    } else {
        r.pairs.as_ptr()
    };
    r.public.custom_count = r.pairs.len();
    if !r.data.is_empty() {
        r.public.data = r.data.as_ptr().cast();
    }
    r.public.data_len = r.data.len();
    r.public.message = r.message.as_ptr();
    Box::into_raw(r).cast::<objm_response_t>()
}

/// A CString of `s` up to its first NUL.
pub(crate) fn cstring(s: String) -> CString {
    let mut b = s.into_bytes();
    if let Some(i) = b.iter().position(|&c| c == 0) {
        b.truncate(i);
    }
    CString::new(b).unwrap_or_default()
}

/// Wraps a socket fd the caller handed over.
///
/// # Safety
/// `fd` is an open fd that the caller owns and gives up.
unsafe fn client_from_fd(fd: c_int) -> Res<Client> {
    // SAFETY: the caller's contract: an open fd whose ownership passes to us.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let ty = libc_socket_type(&owned)
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

fn libc_socket_type(fd: &OwnedFd) -> std::io::Result<c_int> {
    use std::os::fd::AsRawFd;
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `fd` is open for the call; `ty`/`len` are valid out-pointers of the sizes
    // getsockopt(SO_TYPE) writes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(ty)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Borrows a connection the caller passed; refuses one poisoned by an earlier panic.
///
/// # Safety
/// `conn` is NULL or a live connection from this library, used by no other thread now.
pub(crate) unsafe fn conn_mut<'a>(conn: *mut objm_connection_t) -> Res<&'a mut objm_connection_t> {
    // SAFETY: the caller's contract.
    let c = unsafe { conn.as_mut() }.ok_or_else(|| Failure::local("conn is NULL"))?;
    if c.poisoned {
        return Err(Failure::local(
            "the connection is unusable after an internal error in an earlier call; \
             destroy it and connect again",
        ));
    }
    crate::error::enter_conn(conn);
    Ok(c)
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
pub unsafe extern "C" fn objm_client_connect(path: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let p = unsafe { path_arg(path) }?;
        let s = objmapper_client::unix_connect(
            std::path::Path::new(std::ffi::OsStr::from_bytes(&p)),
            Some(objmapper_client::DEFAULT_TIMEOUT),
        )
        .map_err(|e| match e {
            objmapper_client::Error::Connect { source, .. } => Failure::local(format!(
                "cannot connect to {}: {source}",
                String::from_utf8_lossy(&p)
            )),
            e => e.into(),
        })?;
        Ok(s.into_raw_fd())
    })
}

/// A socket path argument: NUL-terminated, at most 4095 bytes.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn path_arg(path: *const c_char) -> Res<Vec<u8>> {
    if path.is_null() {
        return Err(Failure::local("path is NULL"));
    }
    // SAFETY: non-NULL and NUL-terminated by the contract; strnlen stops at 4096 bytes.
    let len = unsafe { libc::strnlen(path, 4096) };
    if len == 4096 {
        return Err(Failure::local("path is longer than 4095 bytes"));
    }
    if len == 0 {
        return Err(Failure::local("path is empty"));
    }
    // SAFETY: `len` readable bytes before the NUL.
    Ok(unsafe { std::slice::from_raw_parts(path.cast::<u8>(), len) }.to_vec())
}

/// Creates a connection over a connected stream socket `fd` (a Unix socket from
/// `objm_client_connect()`, or a connected TCP socket) speaking `version`:
/// `OBJM_PROTO_V1`, or `OBJM_PROTO_V2`, which performs the HELLO handshake at once,
/// asking for a pipeline depth of 64, out-of-order replies and fd passing (use
/// `OBJM_PROTO_V1` and then `objm_client_hello()` to ask for something else).
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
pub unsafe extern "C" fn objm_client_create(fd: c_int, version: c_int) -> *mut objm_connection_t {
    guard(std::ptr::null_mut(), || {
        if fd < 0 {
            return Err(Failure::local(format!("fd {fd} is not a valid descriptor")));
        }
        // SAFETY: fd >= 0 and the function's contract hands it over.
        let mut client = unsafe { client_from_fd(fd) }?;
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
        Ok(Box::into_raw(Box::new(objm_connection_t::new(client))))
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
pub unsafe extern "C" fn objm_client_open(
    path: *const c_char,
    version: c_int,
) -> *mut objm_connection_t {
    // SAFETY: forwarded contract.
    let fd = unsafe { objm_client_connect(path) };
    if fd < 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: `fd` was just opened and is handed over.
    unsafe { objm_client_create(fd, version) }
}

/// Opens a V2 session on a connection created with `OBJM_PROTO_V1` that has sent
/// nothing yet: asks for `depth` requests in flight (>= 1; PIPELINE is asked for when
/// above 1) and the `OBJM_CAP_OUT_OF_ORDER` / `OBJM_CAP_FD_PASSING` bits in `caps`
/// (other bits are ignored). If `granted` is not NULL, the grant is written there.
///
/// Returns 0, or -1 (see `objm_last_error()`). After a failure the connection is
/// unusable (a server that does not speak V2 closes it): destroy it.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `granted` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn objm_client_hello(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
    granted: *mut objm_hello_t,
) -> c_int {
    // SAFETY: forwarded contract; no token.
    unsafe { objm_client_hello_token(conn, depth, caps, std::ptr::null(), 0, granted) }
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
pub unsafe extern "C" fn objm_client_hello_token(
    conn: *mut objm_connection_t,
    depth: u16,
    caps: u32,
    token: *const c_void,
    token_len: usize,
    granted: *mut objm_hello_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let c = unsafe { conn_mut(conn) }?;
        // SAFETY: readable for `token_len` bytes, by the contract.
        let token = unsafe { bytes(token, token_len, "token") }?;
        let opts = V2Options {
            pipeline_depth: depth,
            out_of_order: caps & OBJM_CAP_OUT_OF_ORDER != 0,
            fd_passing: caps & OBJM_CAP_FD_PASSING != 0,
        };
        let h = c.client()?.hello_with_token(opts, token)?;
        let d = usize::from(c.client()?.depth());
        c.pipe()?.set_depth(d);
        // SAFETY: NULL or writable, by the contract.
        if let Some(g) = unsafe { granted.as_mut() } {
            *g = objm_hello_t {
                version: u16::from(h.version),
                depth: h.depth,
                capabilities: h.capabilities,
            };
        }
        Ok(0)
    })
}

/// Limits how long any later call on `conn` waits for the server to take a request or
/// answer one: `timeout_ms` milliseconds, or 0 for no limit. The default is 30000 (30 s):
/// a dead or stuck server is an error, never a hang. A call that times out fails ("the
/// server did not answer within ...") and leaves the connection unusable.
///
/// Returns 0, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
pub unsafe extern "C" fn objm_client_set_timeout(
    conn: *mut objm_connection_t,
    timeout_ms: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let c = unsafe { conn_mut(conn) }?;
        let t = (timeout_ms != 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        c.client()?.set_timeout(t)?;
        Ok(0)
    })
}

/// Sends a request without waiting for its reply. Receive the reply with
/// `objm_client_recv_response()` (replies in order on V1; on V2 with out-of-order
/// replies, whichever is ready first) or `objm_client_recv_response_for()` (by the
/// request's `id`).
///
/// Several requests may be sent before receiving: up to the granted depth on V2 (64 on
/// V1); beyond it the call first waits for a reply and keeps it for a later receive.
///
/// Returns 0 once the request is on the wire, or -1 if it was refused locally (bad
/// arguments, fd mode over TCP, ...; nothing was sent and the connection is still
/// usable) or the connection failed (unusable: destroy it). See `objm_last_error()`.
///
/// Ownership: the library reads `req` and what it points to during the call only (a
/// copy-mode PUT's `data` is written to the socket before the call returns).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `req` is NULL or a valid request whose pointers
/// satisfy its documented lengths.
#[no_mangle]
pub unsafe extern "C" fn objm_client_send_request(
    conn: *mut objm_connection_t,
    req: *const objm_request_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let c = unsafe { conn_mut(conn) }?;
        // SAFETY: NULL or valid, by the contract.
        let req = unsafe { req.as_ref() }.ok_or_else(|| Failure::local("req is NULL"))?;
        c.send(req)?;
        Ok(0)
    })
}

/// Receives the next reply to a sent request: on V1 (and V2 without out-of-order
/// replies) the oldest request's; on V2 with out-of-order replies, whichever arrives
/// first (match it by `resp->id`). Blocks until it arrives.
///
/// Returns 0 with `*resp` set to a response whatever its status (check
/// `resp->status`: NOT_FOUND and the like are answers, not failures), or -1 with
/// `*resp` set to NULL when no request is outstanding or the connection failed (see
/// `objm_last_error()`).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn objm_client_recv_response(
    conn: *mut objm_connection_t,
    resp: *mut *mut objm_response_t,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { recv(conn, None, resp) }
}

/// Receives the reply to the outstanding request whose `id` is `id` (the oldest such
/// request, if several share it), keeping replies to other requests that arrive first
/// for later receives. Blocks until it arrives.
///
/// Returns 0 with `*resp` set (any status), or -1 with `*resp` NULL: no outstanding
/// request has this id, or the connection failed (see `objm_last_error()`).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn objm_client_recv_response_for(
    conn: *mut objm_connection_t,
    id: u32,
    resp: *mut *mut objm_response_t,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { recv(conn, Some(id), resp) }
}

/// # Safety
/// As for `objm_client_recv_response`.
unsafe fn recv(
    conn: *mut objm_connection_t,
    id: Option<u32>,
    resp: *mut *mut objm_response_t,
) -> c_int {
    guard(-1, || {
        if resp.is_null() {
            return Err(Failure::local("resp is NULL"));
        }
        // SAFETY: non-NULL and writable by the contract.
        unsafe { *resp = std::ptr::null_mut() };
        // SAFETY: the contract.
        let c = unsafe { conn_mut(conn) }?;
        let r = c.recv(id)?;
        // SAFETY: as above.
        unsafe { *resp = r };
        Ok(0)
    })
}

/// Receives the next reply, as `objm_client_recv_response()`, **without blocking**: for
/// event loops. Wait until `objm_client_socket()` is readable (poll, epoll), then call
/// this until it returns 1.
///
/// Returns 0 with `*resp` set to a response whatever its status, 1 with `*resp` NULL
/// when no whole reply has arrived yet (the part that did stays buffered in the
/// connection for the next call; with edge-triggered readiness, every byte available was
/// read, so wait for the next edge), or -1 with `*resp` NULL when no request is
/// outstanding or the connection failed (see `objm_last_error()`; the server closing the
/// connection is a failure).
///
/// Sending stays a blocking call: `objm_client_send_request()` returns once the request
/// is in the socket's buffer, at once unless that buffer is full (several large requests
/// sent without reading the replies).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn objm_client_try_recv_response(
    conn: *mut objm_connection_t,
    resp: *mut *mut objm_response_t,
) -> c_int {
    guard(-1, || {
        if resp.is_null() {
            return Err(Failure::local("resp is NULL"));
        }
        // SAFETY: non-NULL and writable by the contract.
        unsafe { *resp = std::ptr::null_mut() };
        // SAFETY: the contract.
        let c = unsafe { conn_mut(conn) }?;
        match c.try_recv()? {
            Some(r) => {
                // SAFETY: as above.
                unsafe { *resp = r };
                Ok(0)
            }
            None => Ok(1),
        }
    })
}

/// Returns the connection's socket, to wait on with poll(2) or epoll (for
/// `objm_client_try_recv_response()`), or -1 (NULL, or closed by `objm_client_close()`).
///
/// Ownership: the connection keeps it: never read, write or close it; it is closed by
/// `objm_client_close()` or `objm_client_destroy()` (remove it from an epoll set first).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
pub unsafe extern "C" fn objm_client_socket(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the contract.
        let c = unsafe { conn_mut(conn) }?;
        Ok(c.pipe()?.as_fd().as_raw_fd())
    })
}

/// How many sent requests have not been received yet.
///
/// Returns the count, or -1 if `conn` is NULL.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
pub unsafe extern "C" fn objm_client_outstanding(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let c = unsafe { conn_mut(conn) }?;
        Ok(c_int::try_from(c.tags.len()).unwrap_or(c_int::MAX))
    })
}

/// Takes the fd out of a response: returns it and leaves -1 in `resp->fd`, so that
/// `objm_response_free()` does not close it.
///
/// Returns the fd, or -1 if `resp` is NULL or carries no fd (see `objm_last_error()`).
///
/// Ownership: the caller owns the returned fd and must close it.
///
/// Thread-safety: a response may be used from any thread, by one at a time.
///
/// # Safety
/// `resp` is NULL or a live response from this library.
#[no_mangle]
pub unsafe extern "C" fn objm_response_take_fd(resp: *mut objm_response_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let r = unsafe { resp.as_mut() }.ok_or_else(|| Failure::local("resp is NULL"))?;
        if r.fd < 0 {
            return Err(Failure::local(
                "the response carries no fd (not an fd-mode reply, or it was already taken)",
            ));
        }
        Ok(std::mem::replace(&mut r.fd, -1))
    })
}

/// Frees a response: closes `resp->fd` if it is still >= 0 (take it first with
/// `objm_response_take_fd()` to keep it), and frees `data`, `custom` and `message`.
/// NULL is ignored. A response must be freed exactly once.
///
/// Thread-safety: any thread may free a response.
///
/// # Safety
/// `resp` is NULL or a response from this library not freed yet.
#[no_mangle]
pub unsafe extern "C" fn objm_response_free(resp: *mut objm_response_t) {
    guard((), || {
        if resp.is_null() {
            return Ok(());
        }
        // SAFETY: `resp` came from `build_response`: the first field of a boxed
        // `OwnedResponse` (repr(C), so at offset 0), not freed yet by the contract.
        let owned = unsafe { Box::from_raw(resp.cast::<OwnedResponse>()) };
        if owned.public.fd >= 0 {
            // SAFETY: a response owns its fd until taken (the caller sets -1 if taken).
            drop(unsafe { OwnedFd::from_raw_fd(owned.public.fd) });
        }
        drop(owned);
        Ok(())
    })
}

/// Closes the connection's socket. Replies not received yet are discarded (their fds
/// closed). The handle stays valid, and every later call on it fails, until
/// `objm_client_destroy()`.
///
/// Returns 0, or -1 if `conn` is NULL.
///
/// Thread-safety: as for every call on a connection; no other thread may be using it.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
pub unsafe extern "C" fn objm_client_close(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract.
        let c = unsafe { conn_mut(conn) }?;
        c.pipe = None;
        c.tags.clear();
        Ok(0)
    })
}

/// Frees a connection, closing its socket first if `objm_client_close()` did not.
/// Replies not received are discarded (their fds closed). Responses already received
/// stay valid. NULL is ignored.
///
/// Thread-safety: no other thread may be using the connection, during the call or after.
///
/// # Safety
/// `conn` is NULL or a live connection, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn objm_client_destroy(conn: *mut objm_connection_t) {
    guard((), || {
        if !conn.is_null() {
            // SAFETY: allocated by objm_client_create (Box::into_raw), live by contract.
            drop(unsafe { Box::from_raw(conn) });
        }
        Ok(())
    })
}

fn status_names() -> &'static [CString] {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut v = Vec::new();
        for s in Status::ALL {
            let i = usize::from(s.as_u8());
            if v.len() <= i {
                v.resize(i + 1, CString::from(c"UNKNOWN"));
            }
            v[i] = cstring(s.name().to_owned());
        }
        v
    })
}

/// Returns the name of a status (`OBJM_STATUS_*`), e.g. "NOT_FOUND"; "LOCAL" for
/// `OBJM_STATUS_LOCAL`; "UNKNOWN" for a value no status has.
///
/// Ownership: a static string; never free it. Never NULL.
///
/// Thread-safety: safe from any thread.
#[no_mangle]
pub extern "C" fn objm_status_name(status: c_int) -> *const c_char {
    guard(c"UNKNOWN".as_ptr(), || {
        if status == OBJM_STATUS_LOCAL {
            return Ok(c"LOCAL".as_ptr());
        }
        let name = usize::try_from(status)
            .ok()
            .and_then(|i| status_names().get(i))
            .map_or(c"UNKNOWN".as_ptr(), |n| n.as_ptr());
        Ok(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_call_poisons_its_connection() {
        let (a, _b) = UnixStream::pair().unwrap();
        let conn = Box::into_raw(Box::new(objm_connection_t::new(Client::from_unix_stream(
            a,
        ))));
        let r: c_int = guard(-1, || {
            // SAFETY: `conn` is live and used by this thread only.
            let _c = unsafe { conn_mut(conn) }?;
            panic!("in the middle of a call");
        });
        assert_eq!(r, -1);
        // SAFETY: as above.
        let again = unsafe { conn_mut(conn) };
        assert!(again.is_err_and(|e| e.message.contains("unusable after an internal error")));
        // A panic outside any connection poisons nothing.
        let other = Box::into_raw(Box::new(objm_connection_t::new(Client::from_unix_stream(
            UnixStream::pair().unwrap().0,
        ))));
        let _: c_int = guard(-1, || panic!("no connection involved"));
        // SAFETY: as above.
        assert!(unsafe { conn_mut(other) }.is_ok());
        // SAFETY: both from Box::into_raw, destroyed once.
        unsafe {
            objm_client_destroy(conn);
            objm_client_destroy(other);
        }
    }
}
