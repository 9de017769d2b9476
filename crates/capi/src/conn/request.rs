//! Sending a request: checking it against its op and putting it on the wire.

use std::ffi::c_int;

use objmapper_client::{DeleteOptions, GetOptions, Mode, OwnedPipeline, PutOptions};

use super::{live, objm_connection_t, Tag};
use crate::error::{guard, Failure, Res};
use crate::ffi;
use crate::types::*;

impl objm_connection_t {
    fn send(&mut self, req: ffi::Request<'_>) -> Res<()> {
        let fields = req.fields();
        let op = fields.op;
        let pipe = self.pipe()?;
        let key = req.key()?;
        check_flags(op, fields.flags)?;
        if fields.flags & OBJM_FLAG_ORDERED != 0 {
            pipe.set_ordered(true);
        }
        let r = submit(pipe, req, key);
        pipe.set_ordered(false);
        let wire = r?;
        self.tags.push_back(Tag {
            wire,
            user: fields.id,
            op,
        });
        Ok(())
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
fn submit(pipe: &mut OwnedPipeline, request: ffi::Request<'_>, key: &[u8]) -> Res<u32> {
    let req = request.fields();
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
            let opts = put_options(request)?;
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
                    let data = request.data()?;
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
            let opts = put_options(request)?;
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
fn put_options(request: ffi::Request<'_>) -> Res<PutOptions> {
    let req = request.fields();
    let mut o = put_flags(req.flags)?;
    if req.flags & OBJM_FLAG_IF_VERSION != 0 {
        o.if_version = Some(req.if_version);
    }
    if req.expires_at != 0 {
        o.expires_at = Some(req.expires_at);
    }
    o.content_type = text(
        request.content_type(OBJM_MAX_CONTENT_TYPE_LEN),
        OBJM_MAX_CONTENT_TYPE_LEN,
        "content_type",
    )?;
    if req.custom_count > OBJM_MAX_CUSTOM_PAIRS {
        return Err(Failure::local(format!(
            "custom_count {} exceeds OBJM_MAX_CUSTOM_PAIRS ({OBJM_MAX_CUSTOM_PAIRS})",
            req.custom_count
        )));
    }
    if req.custom_count > 0 {
        let pairs = request.custom().ok_or_else(|| {
            Failure::local(format!(
                "custom is NULL but custom_count is {}",
                req.custom_count
            ))
        })?;
        for (i, p) in pairs.enumerate() {
            let name = text(p.name(255), 255, "custom name")?
                .ok_or_else(|| Failure::local(format!("custom[{i}].name is NULL")))?;
            let value = p.value("custom value")?;
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

/// A NUL-terminated UTF-8 string of at most `max` bytes, or `None` for NULL.
fn text(t: ffi::Text<'_>, max: usize, what: &str) -> Res<Option<String>> {
    let b = match t {
        ffi::Text::Null => return Ok(None),
        ffi::Text::TooLong => {
            return Err(Failure::local(format!(
                "{what} is longer than {max} bytes (or not NUL-terminated)"
            )))
        }
        ffi::Text::Bytes(b) => b,
    };
    let s =
        std::str::from_utf8(b).map_err(|_| Failure::local(format!("{what} is not valid UTF-8")))?;
    Ok(Some(s.to_owned()))
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
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_send_request(
    conn: *mut objm_connection_t,
    req: *const objm_request_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `req` is NULL or a valid request whose pointers
        // satisfy its documented lengths, for the call.
        let req = unsafe { ffi::request(req) }?;
        c.send(req)?;
        Ok(0)
    })
}
