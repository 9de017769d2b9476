//! The receive side both raw connections share: bytes and fds read with recvmsg, cut
//! into whole responses.

use super::Reply;
use objmapper_proto::*;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

/// Bytes read but not yet cut into a response, and fds not yet claimed by one.
#[derive(Default)]
pub struct Inbox {
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Inbox {
    fn fill(&mut self, sock: impl AsFd) -> bool {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let mut chunk = vec![0u8; 256 * 1024];
        // A signal meant for another thread (a test's child exiting) may interrupt the
        // call: EINTR is not an answer, so ask again.
        let r = loop {
            match rustix::net::recvmsg(
                &sock,
                &mut [IoSliceMut::new(&mut chunk)],
                &mut cmsg,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r,
            }
        };
        let n = match r {
            Ok(r) => r.bytes,
            Err(e) => panic!("recvmsg: {e}"),
        };
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                self.fds.extend(fds);
            }
        }
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response. Panics on EOF before a whole response.
    pub fn recv(&mut self, sock: impl AsFd) -> Reply {
        self.try_recv(sock).expect("a response before EOF")
    }

    /// Reads one response, or None on a clean EOF.
    pub fn try_recv(&mut self, sock: impl AsFd) -> Option<Reply> {
        loop {
            match decode_response(&self.buf).expect("server sent a valid frame") {
                Decoded::Complete(r, n) => {
                    let body_len = r.header.body_len() as usize;
                    if self.buf.len() < n + body_len {
                        if !self.fill(&sock) {
                            panic!("EOF inside a response body");
                        }
                        continue;
                    }
                    let header = r.header;
                    let message = r.message_text();
                    let meta = Metadata::decode(r.meta).expect("valid metadata");
                    let body = self.buf[n..n + body_len].to_vec();
                    self.buf.drain(..n + body_len);
                    let fd = if header.fd_attached() {
                        assert!(!self.fds.is_empty(), "FD_ATTACHED without an fd");
                        Some(self.fds.remove(0))
                    } else {
                        None
                    };
                    return Some(Reply {
                        header,
                        message,
                        meta,
                        body,
                        fd,
                    });
                }
                Decoded::Incomplete(_) => {
                    if !self.fill(&sock) {
                        assert!(self.buf.is_empty(), "EOF inside a response header");
                        return None;
                    }
                }
            }
        }
    }

    /// Fds received but not yet claimed by a reply with FD_ATTACHED.
    pub fn stray_fds(&self) -> usize {
        self.fds.len()
    }
}
