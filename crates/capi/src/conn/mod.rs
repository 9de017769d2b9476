//! Connections: the opaque `objm_connection_t` and the seed-shaped API over it, split by
//! concern. Each submodule uses this one (and `response`), never the other way round:
//!
//! - `open`: connecting, creating a connection over a socket, the V2 HELLO, timeouts;
//! - `request`: checking a request and putting it on the wire (`objm_client_send_request`);
//! - `receive`: collecting replies (blocking, by id, non-blocking) and the socket to poll;
//! - `response`: building the heap responses C reads, and freeing them;
//! - `close`: closing and destroying a connection;
//! - `status`: status names.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use objmapper_client::{Client, Error, OwnedPipeline, Reply};

use crate::error::{Failure, Res};

// In the header's order (cbindgen follows the declarations; blank lines keep rustfmt
// from sorting them).
pub(crate) mod open;

pub(crate) mod request;

pub(crate) mod receive;

pub(crate) mod response;

pub(crate) mod close;

pub(crate) mod status;

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
    /// A call panicked while working on this connection: refuse every later call. Shared
    /// with the guard of the call in progress (see `live`), which sets it on a panic.
    poisoned: Arc<AtomicBool>,
    /// A HELLO sent by `objm_client_send_hello()`, until its answer is read.
    hello: HelloState,
}

/// Where a HELLO sent without waiting (`objm_client_send_hello()`) stands. A granted one
/// lives on as the client's session.
#[derive(Debug)]
enum HelloState {
    /// None was sent that way, or its grant has been read.
    Settled,
    /// Sent under this wire id; its answer has not been read yet.
    Sent(u32),
    /// The server refused it (and closed the connection): every later call says so.
    Refused(Failure),
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
            poisoned: Arc::new(AtomicBool::new(false)),
            hello: HelloState::Settled,
        }
    }

    fn pipe(&mut self) -> Res<&mut OwnedPipeline> {
        if let HelloState::Refused(f) = &self.hello {
            return Err(f.clone());
        }
        self.pipe
            .as_mut()
            .ok_or_else(|| Failure::local("the connection was closed by objm_client_close()"))
    }

    /// Reads the answer to the HELLO sent by `objm_client_send_hello()` if it is still
    /// awaited, blocking (`wait`) or not; Ok(false) when it has not arrived (only
    /// without `wait`). Replies to later requests that arrive meanwhile are kept.
    fn settle_hello(&mut self, wait: bool) -> Res<bool> {
        let HelloState::Sent(wire) = self.hello else {
            return Ok(true);
        };
        let pipe = self.pipe()?;
        let got = if wait {
            pipe.collect_for(wire).map(Some)
        } else {
            pipe.try_collect().map(|r| r.map(|(_, outcome)| outcome))
        };
        let outcome = match got {
            Ok(None) => return Ok(false),
            Ok(Some(outcome)) => outcome,
            // The stream failed before the answer (closed, garbled): a failure of its own.
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Reply::Hello(_)) => {
                self.hello = HelloState::Settled;
                Ok(true)
            }
            Ok(other) => Err(Failure::local(format!(
                "internal: the HELLO was answered with {other:?}"
            ))),
            Err(e) => {
                let f = refusal(e);
                self.hello = HelloState::Refused(f.clone());
                Err(f)
            }
        }
    }

    /// The client, for a plain (synchronous) call: refused while requests are outstanding.
    /// A HELLO sent without waiting is answered first (blocking).
    pub(crate) fn client(&mut self) -> Res<&mut Client> {
        if self.tags.is_empty() {
            self.settle_hello(true)?;
        }
        let n = self.tags.len();
        let pipe = self.pipe()?;
        pipe.client_mut().map_err(|_| {
            Failure::local(format!(
                "{n} request(s) sent with objm_client_send_request() still await \
                 objm_client_recv_response(): receive them before a convenience call"
            ))
        })
    }
}

/// The failure a refused HELLO leaves: the server's status and message, and what that
/// means for the connection.
fn refusal(e: Error) -> Failure {
    let refused = e.status().is_some();
    let mut f = Failure::from(e);
    f.message = if refused {
        format!(
            "the server refused the HELLO: {}; it closed the connection: destroy it",
            f.message
        )
    } else {
        format!(
            "the HELLO got no valid answer: {}; the connection is unusable: destroy it",
            f.message
        )
    };
    f
}

/// A connection the caller passed (from `ffi::object_mut`), for the current call: refuses
/// one poisoned by an earlier panic, and tells the call's guard which connection to poison
/// if this call panics.
pub(crate) fn live(c: &mut objm_connection_t) -> Res<&mut objm_connection_t> {
    if c.poisoned.load(Ordering::Relaxed) {
        return Err(Failure::local(
            "the connection is unusable after an internal error in an earlier call; \
             destroy it and connect again",
        ));
    }
    crate::error::enter_conn(Some(Arc::clone(&c.poisoned)));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use std::ffi::c_int;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::error::guard;

    #[test]
    fn a_panic_in_a_call_poisons_its_connection() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = objm_connection_t::new(Client::from_unix_stream(a));
        let r: c_int = guard(-1, || {
            let _c = live(&mut conn)?;
            panic!("in the middle of a call");
        });
        assert_eq!(r, -1);
        let again = live(&mut conn).map(|_| ());
        assert!(again.is_err_and(|e| e.message.contains("unusable after an internal error")));
        // A panic outside any connection poisons nothing.
        let mut other =
            objm_connection_t::new(Client::from_unix_stream(UnixStream::pair().unwrap().0));
        let _: c_int = guard(-1, || panic!("no connection involved"));
        assert!(live(&mut other).is_ok());
        // Nor does a call on a connection that returned before another call panicked.
        let ok: c_int = guard(-1, || live(&mut other).map(|_| 0));
        assert_eq!(ok, 0);
        let _: c_int = guard(-1, || panic!("a later call, on no connection"));
        assert!(live(&mut other).is_ok());
    }
}
