//! The output queue: reply frames, fds, and file bodies waiting for the socket, and the
//! batched sends that drain it.

use super::*;

/// One item of output.
pub(super) enum Out {
    /// Bytes, with at most one fd riding on the first of them.
    Bytes {
        buf: Vec<u8>,
        pos: usize,
        fd: Option<Attached>,
        /// More follows at once (a header before a sendfile body): MSG_MORE.
        more: bool,
    },
    /// Bytes the store keeps (its body cache), sent from where they are: `bytes[pos..end]`.
    Shared {
        bytes: Arc<[u8]>,
        pos: usize,
        end: usize,
    },
    /// Copy mode: a file range streamed through user space in chunks.
    File {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
        /// The whole object, not yet verified: hashed on the way, and the last chunk is
        /// sent only if the sum matches the record (else the connection is closed).
        check: Option<Box<StreamCheck>>,
    },
    /// Splice mode: a file range moved to the socket by sendfile(2), inside the kernel.
    Sendfile {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
    },
}

/// A streamed body's checksum on the way (see `Out::File`).
pub(super) struct StreamCheck {
    pub(super) hasher: ObjectHasher,
    pub(super) obj: SharedObject,
    pub(super) store: Arc<Store>,
}

impl Out {
    pub(super) fn bytes(buf: Vec<u8>) -> Out {
        Out::Bytes {
            buf,
            pos: 0,
            fd: None,
            more: false,
        }
    }

    /// Streams a file: the queue holds only a handle, so it must not grow behind one.
    pub(super) fn streams(&self) -> bool {
        matches!(self, Out::File { .. } | Out::Sendfile { .. })
    }
}

impl Conn {
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if !self.stream.push_tls()? {
            return Ok(());
        }
        while let Some(front) = self.out.front_mut() {
            let sock = self.stream.fd();
            match front {
                Out::Bytes { .. } | Out::Shared { .. } => match self.send_batch() {
                    Ok(n) => self.consume_sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                },
                Out::File {
                    file,
                    offset,
                    remaining,
                    check,
                } => {
                    let n = (*remaining).min(FILE_CHUNK as u64) as usize;
                    let mut chunk = vec![0u8; n];
                    file.read_exact_at(&mut chunk, *offset)?;
                    *offset += n as u64;
                    *remaining -= n as u64;
                    if let Some(c) = check {
                        c.hasher.update(&chunk);
                        if *remaining == 0 && !c.store.check_streamed(&c.obj, c.hasher.digest()) {
                            // The header announced bytes that are not the object's: the
                            // reply is never completed (the store dropped the version).
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "object failed its checksum while being sent; reply not completed",
                            ));
                        }
                    }
                    if *remaining == 0 {
                        self.out.pop_front();
                    }
                    self.out_bytes += n;
                    self.out.push_front(Out::bytes(chunk));
                }
                Out::Sendfile {
                    file,
                    offset,
                    remaining,
                } => {
                    let n = (*remaining).min(SENDFILE_CHUNK as u64) as usize;
                    match sys::sendfile(sock, file.as_fd(), offset, n) {
                        Ok(0) => {
                            // The header promised more bytes than the file holds: the
                            // stream cannot be completed.
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "object file ended before the announced length",
                            ));
                        }
                        Ok(k) => {
                            *remaining -= k as u64;
                            if *remaining == 0 {
                                self.out.pop_front();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the queued byte frames at the front of `out` in one sendmsg: pipelined replies
    /// leave in one system call, not one each. A frame carrying an fd may only start a batch
    /// (the kernel attaches the fd to the first byte of the call), and a batch ends before
    /// the next one, and at the first file body.
    pub(super) fn send_batch(&mut self) -> io::Result<usize> {
        let mut iov: [IoSlice<'_>; SEND_BATCH_MAX] = [IoSlice::new(&[]); SEND_BATCH_MAX];
        let mut n = 0;
        let mut first_fd = None;
        let mut more = false;
        for (i, item) in self.out.iter().enumerate() {
            let (bytes, fd, m) = match item {
                Out::Bytes { buf, pos, fd, more } => (&buf[*pos..], fd.as_ref(), *more),
                Out::Shared { bytes, pos, end } => (&bytes[*pos..*end], None, false),
                Out::File { .. } | Out::Sendfile { .. } => break,
            };
            if i > 0 && fd.is_some() {
                break;
            }
            if i == 0 {
                first_fd = fd.map(AsFd::as_fd);
            }
            iov[n] = IoSlice::new(bytes);
            n += 1;
            more = m;
            if n == SEND_BATCH_MAX {
                break;
            }
        }
        match &mut self.stream {
            Stream::Tls(s) => s.write_vectored(&iov[..n]),
            stream => sys::send_vectored(stream.fd(), &iov[..n], first_fd, more),
        }
    }

    /// Advances `out` past `n` sent bytes of byte frames. The first frame's fd, if any, rode
    /// on the first byte sent, so our copy is dropped.
    pub(super) fn consume_sent(&mut self, mut n: usize) {
        self.out_bytes -= n;
        loop {
            let (pos, left) = match self.out.front_mut() {
                Some(Out::Bytes { buf, pos, fd, .. }) => {
                    *fd = None;
                    let left = buf.len() - *pos;
                    (pos, left)
                }
                Some(Out::Shared { pos, end, .. }) => {
                    let left = *end - *pos;
                    (pos, left)
                }
                _ => return,
            };
            if n < left {
                *pos += n;
                return;
            }
            n -= left;
            if let Some(Out::Bytes { buf, .. }) = self.out.pop_front() {
                recycle(buf);
            }
            if n == 0 {
                return;
            }
        }
    }
}

/// A reply's output-queue entries: a frame, or a frame and its streamed body.
pub(super) type Items = smallvec::SmallVec<[Out; 2]>;

/// At most this many sent frames' buffers are kept for reuse per worker thread
/// ([`recycle`])...
const SPARE_BUFS: usize = 32;
/// ...each of at most this capacity (a larger one was for a large inline body): at most
/// 2 MiB per worker, however many connections it serves.
const SPARE_BUF_CAP: usize = 64 * 1024;

thread_local! {
    /// Sent frames' buffers, for the next replies of any connection of this worker. Per
    /// thread, not per connection: an idle connection holds none.
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps a sent frame's buffer for a next reply's frame: a request then costs no
/// allocation for its reply's bytes.
fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() <= SPARE_BUF_CAP {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_BUFS {
                buf.clear();
                spare.push(buf);
            }
        });
    }
}

/// An empty buffer for a frame of `len` bytes, a sent one's if there is one.
pub(super) fn frame_buf(len: usize) -> Vec<u8> {
    let mut buf = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
    buf.reserve(len);
    buf
}

/// Queues a released reply's items for the socket, counting the bytes queued.
pub(super) fn push_out(out: &mut VecDeque<Out>, out_bytes: &mut usize, items: Items) {
    for item in items {
        match &item {
            Out::Bytes { buf, .. } => *out_bytes += buf.len(),
            Out::Shared { pos, end, .. } => *out_bytes += end - pos,
            Out::File { .. } | Out::Sendfile { .. } => {}
        }
        out.push_back(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> (usize, usize) {
        SPARE.with_borrow(|s| (s.len(), s.iter().map(Vec::capacity).sum()))
    }

    /// The buffers kept for reuse are bounded per thread, in number and in size, so a
    /// worker holds at most SPARE_BUFS x SPARE_BUF_CAP bytes of them however many
    /// connections it serves; and a buffer comes back empty.
    #[test]
    fn kept_buffers_are_bounded_per_thread() {
        for _ in 0..100 {
            recycle(vec![7u8; 60 * 1024]);
        }
        recycle(Vec::with_capacity(SPARE_BUF_CAP + 1));
        let (n, bytes) = kept();
        assert_eq!(n, SPARE_BUFS);
        assert!(bytes <= SPARE_BUFS * SPARE_BUF_CAP, "{bytes}");
        let b = frame_buf(100);
        assert!(b.is_empty() && b.capacity() >= 60 * 1024);
        assert_eq!(kept().0, SPARE_BUFS - 1);
        // Another thread (another worker) has its own, empty.
        std::thread::spawn(|| assert_eq!(kept(), (0, 0)))
            .join()
            .unwrap();
    }
}
