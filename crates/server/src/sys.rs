//! The few kernel calls std and mio don't offer, through rustix's safe wrappers:
//! sendmsg with SCM_RIGHTS and without SIGPIPE, sendfile and splice, and the per-worker
//! pool of pipes that splice needs. The one `unsafe` block claims a descriptor inherited
//! by number (socket activation, [`claim_inherited_fd`]).

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pipe::{PipeFlags, SpliceFlags};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sends several buffers in one sendmsg (a batch of replies), with `fd`, if any, attached
/// as SCM_RIGHTS: the kernel attaches it to the first byte sent, so the caller must put the
/// frame the fd belongs to first. `more`: MSG_MORE, as for [`send`].
pub(crate) fn send_vectored(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fd: Option<BorrowedFd<'_>>,
    more: bool,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(pushed, "cmsg space is sized for one fd");
    }
    let mut flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    if more {
        flags |= SendFlags::MORE;
    }
    Ok(rustix::net::sendmsg(sock, bufs, &mut control, flags)?)
}

/// sendfile(2): up to `count` bytes of `file` from `*offset` to the (non-blocking) socket,
/// inside the kernel; advances `*offset`. The file's own offset is untouched.
///
/// sendfile has no MSG_NOSIGNAL: writing to a socket the peer has closed raises SIGPIPE.
/// The server only calls it when SIGPIPE is ignored ([`sigpipe_ignored`]).
pub(crate) fn sendfile(
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    Ok(rustix::fs::sendfile(sock, file, Some(offset), count)?)
}

/// Whether this process ignores SIGPIPE (Rust programs do: std sets SIG_IGN before
/// `main`). Read from /proc/self/status's `SigIgn` mask; false if that cannot be read.
pub(crate) fn sigpipe_ignored() -> bool {
    const SIGPIPE: u32 = 13;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGPIPE - 1)) != 0)
}

/// A pipe for splice(2): both ends non-blocking and close-on-exec.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The pipe's capacity in bytes (after trying to raise it to [`PIPE_SIZE`]).
    capacity: usize,
}

/// The capacity each pipe asks for: fewer splice calls per megabyte. Unprivileged
/// processes may go up to /proc/sys/fs/pipe-max-size (1 MiB by default); if the kernel
/// refuses, the pipe keeps its default (64 KiB).
const PIPE_SIZE: usize = 1 << 20;
/// Idle pipes a worker keeps. Each splice step drains its pipe before the worker moves on,
/// so one worker never needs more than one at a time.
const POOL_MAX: usize = 2;

/// A worker's pipes, created lazily and reused, never one per request.
///
/// Only pipes known to be empty go back into the pool ([`PipePool::put`]); a pipe that may
/// still hold bytes after an error is dropped ([`PipePool::discard`]) so no request can
/// ever see another's leftovers.
pub(crate) struct PipePool {
    free: Vec<Pipe>,
}

impl PipePool {
    pub(crate) fn new() -> PipePool {
        PipePool { free: Vec::new() }
    }

    /// An empty pipe: a pooled one, or a new one (counted in `created`).
    pub(crate) fn take(&mut self, created: &AtomicUsize) -> io::Result<Pipe> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = match rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE) {
            Ok(n) => n,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&write)?,
        };
        created.fetch_add(1, Ordering::Relaxed);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Returns an empty pipe to the pool.
    pub(crate) fn put(&mut self, pipe: Pipe) {
        if self.free.len() < POOL_MAX {
            self.free.push(pipe);
        }
    }

    /// Drops a pipe that may still hold bytes: closing it discards them.
    pub(crate) fn discard(&mut self, pipe: Pipe) {
        drop(pipe);
    }
}

/// Why [`splice_into`] stopped.
pub(crate) enum SpliceIn {
    /// Moved this many bytes (> 0) from the socket into the file; the pipe is empty again.
    Moved(usize),
    /// The socket had nothing to read (EAGAIN); the pipe is empty.
    WouldBlock,
    /// The peer closed its end before sending anything more.
    Eof,
}

/// Why [`splice_into`] failed.
pub(crate) enum SpliceError {
    /// Reading the socket failed: the connection is broken. The pipe is empty.
    Socket(io::Error),
    /// Writing into the file failed after `taken` bytes had left the socket; some of them
    /// may still sit in the pipe.
    File { taken: usize, error: io::Error },
}

/// Moves up to `max` bytes socket -> pipe -> `file` (at the file's own offset) with
/// splice(2), never through user space, and drains the pipe completely before returning.
///
/// After [`SpliceError::File`] the pipe may hold bytes: the caller must
/// [`PipePool::discard`] it. Otherwise the pipe is empty and may go back to the pool.
pub(crate) fn splice_into(
    sock: BorrowedFd<'_>,
    pipe: &Pipe,
    file: BorrowedFd<'_>,
    max: u64,
) -> Result<SpliceIn, SpliceError> {
    let want = max.min(pipe.capacity as u64) as usize;
    if want == 0 {
        return Ok(SpliceIn::Moved(0));
    }
    let taken = loop {
        match rustix::pipe::splice(
            sock,
            None,
            &pipe.write,
            None,
            want,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => return Ok(SpliceIn::Eof),
            Ok(n) => break n,
            Err(rustix::io::Errno::AGAIN) => return Ok(SpliceIn::WouldBlock),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(SpliceError::Socket(e.into())),
        }
    };
    let mut left = taken;
    while left > 0 {
        match rustix::pipe::splice(&pipe.read, None, file, None, left, SpliceFlags::MOVE) {
            Ok(0) => {
                let error = io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splicing from the pipe into the staging file moved nothing",
                );
                return Err(SpliceError::File { taken, error });
            }
            Ok(m) => left -= m,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SpliceError::File {
                    taken,
                    error: e.into(),
                })
            }
        }
    }
    Ok(SpliceIn::Moved(taken))
}

/// Makes sure this process may open `need` file descriptors: raises the soft
/// RLIMIT_NOFILE to the hard limit, and the hard limit too if it is lower than `need` (which
/// needs CAP_SYS_RESOURCE). Returns the limit then in force, or an actionable message.
pub(crate) fn ensure_nofile_limit(need: u64) -> Result<u64, String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let soft = lim.current.unwrap_or(u64::MAX);
    if hard < need {
        let raised = Rlimit {
            current: Some(need),
            maximum: Some(need),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            return Err(format!(
                "the configured limits need {need} file descriptors but RLIMIT_NOFILE allows \
                 {soft} (hard limit {hard}) and raising it failed ({e}): raise the hard \
                 limit (ulimit -Hn, or LimitNOFILE= in a systemd unit) or lower \
                 max_connections / max_staged_puts_total"
            ));
        }
        return Ok(need);
    }
    if soft < hard {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            if soft < need {
                return Err(format!(
                    "the configured limits need {need} file descriptors but RLIMIT_NOFILE is \
                     {soft} and raising it to {hard} failed ({e}): raise it (ulimit -n) or \
                     lower max_connections / max_staged_puts_total"
                ));
            }
            return Ok(soft);
        }
    }
    Ok(hard)
}

/// Takes ownership of descriptor `fd`, which this process inherited by number (socket
/// activation: systemd passes listening sockets as fds 3, 4, ...). Returns `None` if no
/// such descriptor is open.
///
/// The caller must claim each number at most once and only when the parent handed it
/// to this process (`LISTEN_PID` is our pid): nothing else in the process owns it then.
pub(crate) fn claim_inherited_fd(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // Only an open descriptor may become an OwnedFd; /proc answers without touching it.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: `fd` is open (checked just above) and, by the caller's contract (the
    // sd_listen_fds protocol, LISTEN_PID matched, each number claimed once because the
    // caller removes LISTEN_* from the environment), no other owner exists in this
    // process, so the new OwnedFd is its only owner and closes it exactly once.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn splice_moves_socket_bytes_into_a_file_and_leaves_the_pipe_empty() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let created = AtomicUsize::new(0);
        let mut pool = PipePool::new();
        let pipe = pool.take(&created).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        assert!(matches!(
            splice_into(b.as_fd(), &pipe, file.as_fd(), 100),
            Ok(SpliceIn::WouldBlock)
        ));
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let writer = std::thread::spawn(move || {
            a.write_all(&data).unwrap();
            data
        });
        let mut got = 0u64;
        while got < 300_000 {
            match splice_into(b.as_fd(), &pipe, file.as_fd(), 300_000 - got) {
                Ok(SpliceIn::Moved(n)) => got += n as u64,
                Ok(SpliceIn::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Ok(SpliceIn::Eof) => panic!("early EOF"),
                Err(_) => panic!("splice failed"),
            }
        }
        let data = writer.join().unwrap();
        pool.put(pipe);
        assert_eq!(created.load(Ordering::Relaxed), 1);
        let again = pool.take(&created).unwrap();
        assert_eq!(created.load(Ordering::Relaxed), 1, "the pipe was reused");
        drop(again);
        file.rewind().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn sigpipe_is_ignored_in_rust_test_binaries() {
        assert!(sigpipe_ignored());
    }
}
