//! PUT, COMMIT and ABORT: staging in copy, splice and fd mode, bodies as they arrive,
//! and the commit (inline or on the blocking pool).

use super::*;

pub(super) struct BodyState {
    /// In memory for small copy-mode bodies (no memfd to create, seal and read back), a
    /// staging memfd for splice mode and large bodies.
    pub(super) staging: Staging,
    pub(super) remaining: u64,
    pub(super) length: u64,
    pub(super) seq: u64,
    pub(super) request_id: u32,
    pub(super) meta: PutMeta,
    pub(super) opts: PutOptions,
    /// Splice mode: once the read buffer is used up, move the rest with splice(2).
    pub(super) splice: bool,
    /// Held against `max_staged_bytes_total`: the bytes received so far, rounded up to
    /// the next `BODY_RESERVE_STEP` (never past the declared length). A body declared
    /// large but never sent holds no more than its first step.
    pub(super) reserved: Reserved,
}

impl BodyState {
    /// Bytes of the body received so far.
    pub(super) fn received(&self) -> u64 {
        self.length - self.remaining
    }

    /// How many more body bytes may be taken in now: extends the reservation by a step
    /// when the received bytes reach it, within `max_staged_bytes_total` (read only
    /// then). Err(limit): the server-wide budget is spent.
    pub(super) fn room(&mut self, sh: &Shared) -> Result<u64, u64> {
        let received = self.received();
        if self.reserved.held() <= received {
            let next = received.saturating_add(BODY_RESERVE_STEP).min(self.length);
            let limit = sh.limits.get().max_staged_bytes_total;
            if !self.reserved.grow_to(next, limit) {
                return Err(limit);
            }
        }
        Ok(self.reserved.held() - received)
    }
}

/// An fd-mode PUT waiting for its COMMIT: the staging file, the PUT's metadata, its
/// request flags (or-ed with the COMMIT's) and its condition (used unless the COMMIT
/// carries its own).
pub(super) struct StagedPut {
    pub(super) staging: Staging,
    pub(super) meta: PutMeta,
    pub(super) flags: u16,
    pub(super) condition: Condition,
    /// This PUT's slot in `max_staged_puts_total`.
    pub(super) _slot: Reserved,
}

/// BUSY's message when a PUT body would take the server past `max_staged_bytes_total`.
pub(super) fn body_budget_spent(sh: &Shared, limit: u64) -> String {
    format!(
        "the server holds {} bytes of PUT bodies being received, max_staged_bytes_total is \
         {limit}: the rest of this body is skipped; retry later",
        sh.staged_bytes.used()
    )
}

impl Conn {
    /// A splice-mode PUT body is being received and the read buffer holds none of it.
    pub(super) fn splicing(&self) -> bool {
        matches!(&self.input, Input::Body(b) if b.splice && b.remaining > 0)
    }

    /// Moves the next part of a splice-mode PUT body socket -> pipe -> staging memfd.
    /// Ok(true): progress (bytes moved, the body finished, or EOF seen); Ok(false): the
    /// socket is empty; Err: the connection is broken.
    pub(super) fn splice_body(&mut self, sh: &Shared, io: &mut WorkerIo) -> Result<bool, ()> {
        let Input::Body(body) = &mut self.input else {
            return Ok(true);
        };
        let pipe = match io.pipes.take(&sh.kio.pipes_created) {
            Ok(p) => p,
            Err(e) => {
                // No pipe (fd limit): skip the body through the read buffer instead.
                let (seq, id, left) = (body.seq, body.request_id, body.remaining);
                self.input = Input::Discard(left);
                self.finish_error(
                    seq,
                    id,
                    Status::IoError,
                    format!("creating a pipe for splice failed: {e}"),
                );
                return Ok(true);
            }
        };
        let room = match body.room(sh) {
            Ok(room) => room,
            Err(limit) => {
                io.pipes.put(pipe);
                let (seq, id, left) = (body.seq, body.request_id, body.remaining);
                self.input = Input::Discard(left);
                self.finish_error(seq, id, Status::Busy, body_budget_spent(sh, limit));
                return Ok(true);
            }
        };
        let Some(memfd) = body.staging.fd() else {
            unreachable!("splice-mode PUTs stage in a memfd");
        };
        match sys::splice_into(self.stream.fd(), &pipe, memfd, room) {
            Ok(SpliceIn::Moved(n)) => {
                io.pipes.put(pipe);
                body.remaining -= n as u64;
                if body.remaining == 0 {
                    self.finish_body(sh, io);
                }
                Ok(true)
            }
            Ok(SpliceIn::WouldBlock) => {
                io.pipes.put(pipe);
                Ok(false)
            }
            Ok(SpliceIn::Eof) => {
                io.pipes.put(pipe);
                self.eof = true;
                Ok(true)
            }
            Err(sys::SpliceError::Socket(e)) => {
                io.pipes.discard(pipe);
                tracing::debug!("splice from the socket failed: {e}");
                Err(())
            }
            Err(sys::SpliceError::File { taken, error }) => {
                // The bytes taken off the socket are lost with the pipe, but we know how
                // many: the stream stays in sync, the rest of the body is skipped.
                io.pipes.discard(pipe);
                let (seq, id) = (body.seq, body.request_id);
                let left = body.remaining - taken as u64;
                self.input = Input::Discard(left);
                self.finish_error(
                    seq,
                    id,
                    Status::IoError,
                    format!("staging the PUT body failed: {error}"),
                );
                Ok(true)
            }
        }
    }

    /// The whole body of a copy- or splice-mode PUT is staged: commit it on the pool.
    pub(super) fn finish_body(&mut self, sh: &Shared, io: &WorkerIo) {
        let Input::Body(body) = std::mem::replace(&mut self.input, Input::Frames) else {
            return;
        };
        let BodyState {
            staging,
            length,
            seq,
            request_id,
            meta,
            opts,
            reserved,
            ..
        } = *body;
        let slow = opts.durable || length > INLINE_COMMIT_MAX;
        self.mutate(sh, io, seq, request_id, slow, move |_| {
            let outcome = ops::committed_then(staging.commit_then(length, meta, opts));
            drop(reserved); // the staged bytes are gone only once the commit is done
            outcome
        });
    }

    /// COMMIT of an fd-mode PUT: flags are the PUT's or-ed with the COMMIT's; non-empty
    /// COMMIT metadata replaces the PUT's; the COMMIT's condition (IF_VERSION / IF_ABSENT)
    /// replaces the PUT's if it has one. The handle is consumed whatever the outcome.
    pub(super) fn commit(&mut self, seq: u64, req: &Request<'_>, sh: &Shared, io: &WorkerIo) {
        let h = &req.header;
        let id = h.request_id;
        let Some(staged) = self.staged.remove(&h.handle) else {
            return self.finish_error(
                seq,
                id,
                Status::UnknownHandle,
                format!("no staged PUT with handle {} on this connection", h.handle),
            );
        };
        let mut opts = match put_options(staged.flags | h.flags) {
            Ok(o) => o,
            Err(msg) => return self.finish_error(seq, id, Status::BadRequest, msg),
        };
        opts.condition = if h.flags & (req_flags::IF_VERSION | req_flags::IF_ABSENT) != 0 {
            condition_of(h)
        } else {
            staged.condition
        };
        let meta = if req.meta.is_empty() {
            // The PUT's expiry was checked when the PUT arrived; time has passed since.
            if let Err(msg) = check_expiry(staged.meta.expires_at) {
                return self.finish_error(seq, id, Status::BadRequest, msg);
            }
            staged.meta
        } else {
            match put_meta_of(req.meta) {
                Ok(m) => m,
                Err(msg) => return self.finish_error(seq, id, Status::BadRequest, msg),
            }
        };
        let length = h.length;
        let staging = staged.staging;
        let slow = opts.durable || length > INLINE_COMMIT_MAX;
        self.mutate(sh, io, seq, id, slow, move |_| {
            ops::committed_then(staging.commit_then(length, meta, opts))
        });
    }

    /// Rejects a well-framed request. A PUT's announced body must still be skipped.
    pub(super) fn reject(&mut self, seq: u64, h: &RequestHeader, reply: Reply, sh: &Shared) {
        self.deliver(seq, h.request_id, reply);
        if h.op == Op::Hello {
            self.closing = true;
        } else {
            self.skip_body(h.body_len(), sh);
        }
    }

    pub(super) fn put(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        if let Err(msg) = ops::check_mode(h.op, h.mode, &self.policy) {
            self.finish_error(seq, id, Status::ModeUnsupported, msg);
            self.skip_body(h.body_len(), sh);
            return;
        }
        let max = sh.cfg.store.max_object_size;
        if h.length > max {
            let msg = format!(
                "object of {} bytes exceeds the maximum object size of {max} bytes",
                h.length
            );
            self.finish_error(seq, id, Status::ObjectTooLarge, msg);
            if h.body_len() > 0 {
                // We will not read an announced body this large: close after the reply.
                self.closing = true;
            }
            return;
        }
        let meta = match put_meta_of(req.meta) {
            Ok(m) => m,
            Err(msg) => {
                self.finish_error(seq, id, Status::BadRequest, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        let limits = sh.limits.get();
        if h.mode == Mode::Fd && self.staged.len() >= limits.max_staged_puts {
            let msg = format!(
                "this connection already holds {} staged PUTs (max_staged_puts); COMMIT or \
                 ABORT one first",
                self.staged.len()
            );
            return self.finish_error(seq, id, Status::TooManyRequests, msg);
        }
        // Bytes this connection has staged: its fd-mode staging files as they are now,
        // plus this PUT's declared body.
        let held: u64 = self
            .staged
            .values()
            .map(|p| p.staging.len().unwrap_or(0))
            .sum();
        let this = if h.mode == Mode::Fd { 0 } else { h.length };
        if held.saturating_add(this) > limits.max_staged_bytes_per_conn {
            let msg = format!(
                "this connection would hold {} staged bytes, over max_staged_bytes_per_conn \
                 ({}); COMMIT or ABORT its staged PUTs first",
                held.saturating_add(this),
                limits.max_staged_bytes_per_conn
            );
            self.finish_error(seq, id, Status::TooManyRequests, msg);
            self.skip_body(h.body_len(), sh);
            return;
        }
        let reserved = if h.mode == Mode::Fd {
            sh.staged_puts
                .try_reserve(1, sh.cfg.max_staged_puts_total as u64)
                .ok_or_else(|| {
                    format!(
                        "the server holds {} staged PUTs (max_staged_puts_total); retry later",
                        sh.staged_puts.used()
                    )
                })
        } else {
            // The first step now; the rest as the body arrives (`BodyState::room`).
            let first = h.length.min(BODY_RESERVE_STEP);
            sh.staged_bytes
                .try_reserve(first, limits.max_staged_bytes_total)
                .ok_or_else(|| {
                    format!(
                        "the server is receiving {} bytes of PUT bodies; {first} more would \
                         exceed max_staged_bytes_total ({}); retry later",
                        sh.staged_bytes.used(),
                        limits.max_staged_bytes_total
                    )
                })
        };
        let reserved = match reserved {
            Ok(r) => r,
            Err(msg) => {
                self.finish_error(seq, id, Status::Busy, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        let buffered = h.mode == Mode::Copy && h.length <= INLINE_COMMIT_MAX;
        let staging = if buffered {
            sh.store.begin_put_buffered(req.key, h.length as usize)
        } else {
            sh.store.begin_put(req.key)
        };
        let staging = match staging {
            Ok(s) => s,
            Err(e) => {
                self.deliver(seq, id, Reply::store_error(&e));
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        if matches!(h.mode, Mode::Copy | Mode::Splice) {
            // validate_request has refused DURABLE|EPHEMERAL already.
            let mut opts = put_options(h.flags).unwrap_or_default();
            opts.condition = condition_of(h);
            self.input = Input::Body(Box::new(BodyState {
                staging,
                remaining: h.length,
                length: h.length,
                seq,
                request_id: id,
                meta,
                opts,
                // Over TLS the bytes must pass through rustls: splice mode is served by
                // copying, with the same result for the client.
                splice: h.mode == Mode::Splice && self.stream.kernel_io(),
                reserved,
            }));
            return;
        }
        // fd mode: hand out the writable staging memfd and remember it under a handle.
        let Some(memfd) = staging.fd() else {
            unreachable!("only copy-mode PUTs are buffered");
        };
        let fd = match memfd.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                let msg = format!("duplicating the staging fd failed: {e}");
                return self.finish_error(seq, id, Status::IoError, msg);
            }
        };
        let handle = self.next_handle;
        self.next_handle += 1;
        self.staged.insert(
            handle,
            StagedPut {
                staging,
                meta,
                flags: h.flags,
                condition: condition_of(h),
                _slot: reserved,
            },
        );
        let reply = Reply {
            mode: Mode::Fd,
            handle,
            body: ops::Body::Fd(Attached::Owned(fd)),
            ..Reply::ok()
        };
        self.deliver(seq, id, reply);
    }

    pub(super) fn skip_body(&mut self, len: u64, sh: &Shared) {
        if len == 0 {
            return;
        }
        if len > sh.discard_limit() {
            self.closing = true;
        } else {
            self.input = Input::Discard(len);
        }
    }
}
