//! Replies into the output queue: the connection's transport policy for the ops layer,
//! and a [`Reply`] value turned into output queue entries (a frame, with its body inline,
//! streamed, sendfile'd, or an fd riding on it).

use super::*;
use crate::ops::{Policy, Rest, Transport};

/// What a stream connection can do: pass fds if it is a Unix socket (`fd_capable`) and
/// its session allows it (`fd_ok`). Private descriptions until a V2 session's client
/// promises POSITIONAL_READS (`Conn::set_session`).
pub(super) fn policy(fd_capable: bool, fd_ok: bool, sh: &Shared) -> Policy {
    Policy {
        transport: if fd_capable {
            Transport::Unix { fd_passing: fd_ok }
        } else {
            Transport::Tcp
        },
        share_fds: false,
        auto_fd_threshold: sh.cfg.auto_fd_threshold,
        max_reply: None,
        inline_max: INLINE_READ_MAX,
    }
}

impl Conn {
    /// Enters session `s`, and with it what the transport can do (fds travel on a V2
    /// session only if it negotiated FD_PASSING; descriptions are shared only with a
    /// client that promised POSITIONAL_READS).
    pub(super) fn set_session(&mut self, s: Session) {
        self.session = s;
        self.policy.share_fds = self.shared_descriptions();
        let fd_ok = self.fd_ok();
        if let Transport::Unix { fd_passing } = &mut self.policy.transport {
            *fd_passing = fd_ok;
        }
    }

    /// Fills slot `seq` with `reply` to request `id`: its frame, then a streamed body (in
    /// chunks through user space, or by sendfile(2) in splice mode when the stream is the
    /// kernel's), or the fd riding on the frame.
    pub(super) fn deliver(&mut self, seq: u64, id: u32, mut reply: Reply) {
        // A GET's object fd (handle 0; a PUT's staging memfd comes with its handle).
        if let (crate::ops::Body::Fd(fd), 0) = (&reply.body, reply.handle) {
            self.metrics
                .fd_reply(matches!(fd, crate::ops::Attached::Shared(_)));
        }
        let mut buf = frame_buf(reply.frame_len());
        let (status, rest) = reply.encode_head(self.version(), id, &mut buf);
        let head = |fd, more| Out::Bytes {
            buf,
            pos: 0,
            fd,
            more,
        };
        let items = match rest {
            Rest::None | Rest::Stream { length: 0, .. } => smallvec::smallvec![head(None, false)],
            Rest::Fd(fd) => smallvec::smallvec![head(Some(fd), false)],
            Rest::Bytes { bytes, start, end } => smallvec::smallvec![
                head(None, false),
                Out::Shared {
                    bytes,
                    pos: start,
                    end
                }
            ],
            Rest::Stream {
                file,
                offset,
                length,
                check,
            } => {
                let body = if reply.mode == Mode::Splice
                    && check.is_none()
                    && self.sendfile_ok
                    && self.stream.kernel_io()
                {
                    Out::Sendfile {
                        file,
                        offset,
                        remaining: length,
                    }
                } else {
                    // Also splice mode's first read of a file not yet verified: its bytes
                    // pass through here once to be hashed; later reads sendfile them.
                    Out::File {
                        file,
                        offset,
                        remaining: length,
                        check: check.map(|obj| {
                            Box::new(StreamCheck {
                                hasher: ObjectHasher::new(),
                                obj: *obj,
                                store: self.store.clone(),
                            })
                        }),
                    }
                };
                smallvec::smallvec![head(None, self.is_tcp), body]
            }
        };
        self.finish(seq, status, items);
    }
}
