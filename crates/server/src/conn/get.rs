//! GET and HEAD: fd, copy, splice and auto modes, ranges, checksum checks on the way.

use super::*;

impl Conn {
    pub(super) fn get(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        if !self.check_mode(seq, h.request_id, h.op, h.mode) {
            return;
        }
        if h.mode == Mode::Fd && !sh.cfg.share_fds {
            return self.get_private_fd(seq, req, sh);
        }
        self.get_shared(seq, req, sh, 0);
    }

    /// A GET through the store's cached file. Bytes the server sends itself (copy,
    /// splice) are checked against the record's checksum (docs/STORAGE.md, "Faults"):
    /// before the header, or on the way for a whole object too large to read first.
    /// `attempt`: lookups so far that found a damaged version (dropped by the store).
    pub(super) fn get_shared(&mut self, seq: u64, req: &Request<'_>, sh: &Shared, attempt: usize) {
        let h = &req.header;
        let id = h.request_id;
        // Every other GET reads through the store's cached open file of the version: no
        // open or close per request. Its description is shared, which is invisible while
        // the bytes travel inline, and handed out only with `share_fds`.
        let obj = match sh.store.get_shared(req.key) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return self.finish_error(seq, id, Status::NotFound, "no object under that key")
            }
            Err(e) => {
                let (st, msg) = store_status(&e);
                return self.finish_error(seq, id, st, msg);
            }
        };
        let (offset, length) = match resolve_range(h.offset, h.length, obj.meta.size) {
            Ok(r) => r,
            Err(msg) => return self.finish_error(seq, id, Status::RangeNotSatisfiable, msg),
        };
        let mode = match h.mode {
            Mode::Auto if self.fd_ok() && length >= sh.cfg.auto_fd_threshold => Mode::Fd,
            Mode::Auto => Mode::Copy,
            m => m,
        };
        if mode == Mode::Fd {
            let fd = if sh.cfg.share_fds {
                Attached::Shared(obj.file)
            } else {
                match sh.store.reopen(&obj) {
                    Ok(Some(f)) => Attached::Owned(OwnedFd::from(f)),
                    // Replaced or moved since the lookup: look it up afresh.
                    Ok(None) => return self.get_private_fd(seq, req, sh),
                    Err(e) => {
                        let (st, msg) = store_status(&e);
                        return self.finish_error(seq, id, st, msg);
                    }
                }
            };
            return self.finish_fd(seq, id, &obj.meta, (offset, length), fd);
        }
        let whole = offset == 0 && length == obj.meta.size;
        let check = if obj.verified() {
            None
        } else if whole && length > INLINE_READ_MAX {
            // Too large to read before replying: hashed while it is streamed.
            Some(Box::new(StreamCheck {
                hasher: ObjectHasher::new(),
                obj: obj.clone(),
                store: sh.store.clone(),
            }))
        } else {
            match sh.store.verify(&obj) {
                Ok(true) => None,
                // Damaged: dropped by the store; the next lookup finds the other
                // tier's copy, if there is one.
                Ok(false) if attempt < 3 => return self.get_shared(seq, req, sh, attempt + 1),
                Ok(false) => {
                    return self.finish_error(seq, id, Status::NotFound, "no object under that key")
                }
                Err(e) => {
                    let (st, msg) = store_status(&e);
                    return self.finish_error(seq, id, st, msg);
                }
            }
        };
        self.send_body(
            seq,
            id,
            &obj.meta,
            obj.file,
            mode,
            (offset, length),
            sh,
            check,
        );
    }

    /// fd-mode GET: a fresh private description (its own offset and status flags) of the
    /// current version, opened for this request.
    pub(super) fn get_private_fd(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        let obj = match sh.store.get(req.key) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return self.finish_error(seq, id, Status::NotFound, "no object under that key")
            }
            Err(e) => {
                let (st, msg) = store_status(&e);
                return self.finish_error(seq, id, st, msg);
            }
        };
        let range = match resolve_range(h.offset, h.length, obj.meta.size) {
            Ok(r) => r,
            Err(msg) => return self.finish_error(seq, id, Status::RangeNotSatisfiable, msg),
        };
        let fd = Attached::Owned(OwnedFd::from(obj.file));
        self.finish_fd(seq, id, &obj.meta, range, fd);
    }

    /// Replies to a GET with the object's fd; `offset` and `length` say what to read (the
    /// fd covers the whole object).
    pub(super) fn finish_fd(
        &mut self,
        seq: u64,
        id: u32,
        meta: &ObjectMeta,
        (offset, length): (u64, u64),
        fd: Attached,
    ) {
        let meta_bytes = wire_meta(meta);
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = Mode::Fd;
        rh.offset = offset;
        rh.length = length;
        rh.flags = resp_flags::FD_ATTACHED;
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN + meta_bytes.len());
        encode_response(&rh, "", &meta_bytes, &mut buf);
        let reply = Out::Bytes {
            buf,
            pos: 0,
            fd: Some(fd),
            more: false,
        };
        self.finish(seq, vec![reply]);
    }

    /// Replies to a copy or splice GET: the header, then the bytes inline (small content
    /// read straight into the reply), streamed in chunks, or sendfile'd.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_body(
        &mut self,
        seq: u64,
        id: u32,
        meta: &ObjectMeta,
        file: Arc<File>,
        mode: Mode,
        (offset, length): (u64, u64),
        sh: &Shared,
        check: Option<Box<StreamCheck>>,
    ) {
        let meta_bytes = wire_meta(meta);
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = mode;
        rh.offset = offset;
        rh.length = length;
        rh.flags = resp_flags::BODY;
        let inline = mode == Mode::Copy && length <= INLINE_READ_MAX;
        let mut buf = Vec::with_capacity(
            proto::RESPONSE_HEADER_LEN
                + meta_bytes.len()
                + if inline { length as usize } else { 0 },
        );
        encode_response(&rh, "", &meta_bytes, &mut buf);
        if inline {
            let start = buf.len();
            buf.resize(start + length as usize, 0);
            if let Err(e) = file.read_exact_at(&mut buf[start..], offset) {
                // Nothing has been sent for this request yet, so an error reply is still possible.
                let msg = format!("reading the object failed: {e}");
                return self.finish_error(seq, id, Status::IoError, msg);
            }
            return self.finish_bytes(seq, buf);
        }
        let remaining = length;
        let body = if remaining == 0 {
            None
        } else if mode == Mode::Splice
            && check.is_none()
            && sh.kio.sendfile_ok
            && self.stream.kernel_io()
        {
            Some(Out::Sendfile {
                file,
                offset,
                remaining,
            })
        } else {
            // Also splice mode's first read of a file not yet verified: its bytes pass
            // through here once to be hashed; later reads sendfile them.
            Some(Out::File {
                file,
                offset,
                remaining,
                check,
            })
        };
        let head = Out::Bytes {
            buf,
            pos: 0,
            fd: None,
            more: self.is_tcp && body.is_some(),
        };
        self.finish(seq, std::iter::once(head).chain(body).collect());
    }
}
