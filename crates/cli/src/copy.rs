//! Moving bytes between descriptors inside the kernel where it can: `copy_file_range`,
//! then `sendfile`, then `splice` (for pipes), falling back to `read`/`write`.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

/// Bytes moved per system call at most (sendfile's own limit is a little under 2 GiB).
const CHUNK: u64 = 1 << 30;
/// Buffer for the read/write fallback.
const BUF: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    CopyFileRange,
    Sendfile,
    Splice,
    ReadWrite,
}

impl Method {
    fn next(self) -> Option<Method> {
        match self {
            Method::CopyFileRange => Some(Method::Sendfile),
            Method::Sendfile => Some(Method::Splice),
            Method::Splice => Some(Method::ReadWrite),
            Method::ReadWrite => None,
        }
    }
}

/// Errors that mean "this method does not work for these descriptors", not "the copy
/// failed": try the next method.
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::BADF | Errno::SPIPE
    )
}

/// Copies from `src` to `dst`, writing at `dst`'s file position.
///
/// `src_off`: `Some(off)` reads from that offset without moving `src`'s file position;
/// `None` reads from (and advances) the file position, which is what pipes need.
/// `len`: `Some(n)` copies exactly `n` bytes (an early end of `src` is an
/// `UnexpectedEof` error); `None` copies until the end of `src`. Returns the bytes copied.
pub fn copy(
    src: BorrowedFd<'_>,
    src_off: Option<u64>,
    dst: BorrowedFd<'_>,
    len: Option<u64>,
) -> io::Result<u64> {
    let mut off = src_off;
    let mut done = 0u64;
    let mut method = Method::CopyFileRange;
    let mut buf = Vec::new();
    loop {
        let want = match len {
            Some(l) if done >= l => break,
            Some(l) => (l - done).min(CHUNK),
            None => CHUNK,
        } as usize;
        let r = match method {
            Method::CopyFileRange => {
                rustix::fs::copy_file_range(src, off.as_mut(), dst, None, want)
            }
            Method::Sendfile => rustix::fs::sendfile(dst, src, off.as_mut(), want),
            Method::Splice if off.is_none() => {
                rustix::pipe::splice(src, None, dst, None, want, SpliceFlags::MOVE)
            }
            Method::Splice => Err(Errno::INVAL),
            Method::ReadWrite => read_write(src, off.as_mut(), dst, want, &mut buf),
        };
        match r {
            Ok(0) if method != Method::ReadWrite => {
                // Some files (procfs, sysfs) report 0 to the in-kernel paths while still
                // holding data: let read() decide where the end is.
                method = Method::ReadWrite;
            }
            Ok(0) => {
                if let Some(l) = len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the source ended after {done} of {l} bytes"),
                    ));
                }
                break;
            }
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(e) if unsupported(e) && method != Method::ReadWrite => {
                method = method.next().unwrap_or(Method::ReadWrite);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// One read (or pread at `off`) of up to `want` bytes, then a write of all of them.
fn read_write(
    src: BorrowedFd<'_>,
    off: Option<&mut u64>,
    dst: BorrowedFd<'_>,
    want: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, Errno> {
    if buf.is_empty() {
        buf.resize(BUF, 0);
    }
    let want = want.min(buf.len());
    let n = loop {
        let r = match &off {
            Some(o) => rustix::io::pread(src, &mut buf[..want], **o),
            None => rustix::io::read(src, &mut buf[..want]),
        };
        match r {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    write_all(dst, &buf[..n])?;
    if let Some(o) = off {
        *o += n as u64;
    }
    Ok(n)
}

/// Writes all of `bytes` to `dst` at its file position.
pub fn write_all(dst: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(dst, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 256) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    fn contents(f: &mut std::fs::File) -> Vec<u8> {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn file_to_file_range() {
        let src = file_with(&data(100_000));
        let mut dst = tempfile::tempfile().unwrap();
        let n = copy(src.as_fd(), Some(10), dst.as_fd(), Some(50_000)).unwrap();
        assert_eq!(n, 50_000);
        assert_eq!(contents(&mut dst), &data(100_000)[10..50_010]);
    }

    #[test]
    fn file_to_eof_from_position() {
        let mut src = file_with(&data(70_000));
        src.seek(SeekFrom::Start(5)).unwrap();
        let mut dst = tempfile::tempfile().unwrap();
        let n = copy(src.as_fd(), None, dst.as_fd(), None).unwrap();
        assert_eq!(n, 69_995);
        assert_eq!(contents(&mut dst), &data(70_000)[5..]);
    }

    #[test]
    fn short_source_is_unexpected_eof() {
        let src = file_with(&data(10));
        let dst = tempfile::tempfile().unwrap();
        let e = copy(src.as_fd(), Some(0), dst.as_fd(), Some(11)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn pipe_to_file_and_file_to_pipe() {
        let payload = data(300_000);
        // file -> pipe
        let src = file_with(&payload);
        let (r, w) = rustix::pipe::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::fs::File::from(r).read_to_end(&mut v).unwrap();
            v
        });
        let n = copy(src.as_fd(), Some(0), w.as_fd(), Some(payload.len() as u64)).unwrap();
        drop(w);
        assert_eq!(n as usize, payload.len());
        assert!(reader.join().unwrap() == payload);
        // pipe -> file, to EOF
        let (r, w) = rustix::pipe::pipe().unwrap();
        let p2 = payload.clone();
        let writer = std::thread::spawn(move || std::fs::File::from(w).write_all(&p2).unwrap());
        let mut dst = tempfile::tempfile().unwrap();
        let n = copy(r.as_fd(), None, dst.as_fd(), None).unwrap();
        writer.join().unwrap();
        assert_eq!(n as usize, payload.len());
        assert!(contents(&mut dst) == payload);
    }
}
