//! What the kill -9 tests share: a daemon they can kill and restart on the same
//! directories, and raw V1 frames in copy mode.
#![allow(dead_code)]

use objmapper_proto::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon(Child);

impl Daemon {
    pub fn start(socket: &Path, data: &Path, mem: &Path) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_objmapper"))
            .args(["serve", "--socket"])
            .arg(socket)
            .arg("--data-dir")
            .arg(data)
            .arg("--mem-dir")
            .arg(mem)
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn objmapper serve");
        let d = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn kill9(&mut self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.0),
            rustix::process::Signal::KILL,
        )
        .expect("kill -9");
        self.0.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Reply {
    pub status: Status,
    pub body: Vec<u8>,
    pub meta: Metadata,
}

/// A V1 request (copy mode for GET and PUT), with `body` inline.
pub fn frame(op: Op, key: &[u8], body: &[u8], flags: u16) -> Vec<u8> {
    let mut h = RequestHeader::new(Version::V1, op, 1);
    h.flags = flags;
    if op == Op::Put || op == Op::Get {
        h.mode = Mode::Copy;
    }
    h.length = if op == Op::Put { body.len() as u64 } else { 0 };
    let mut out = Vec::new();
    encode_request(&h, key, b"", &mut out);
    out.extend_from_slice(body);
    out
}

/// Sends `req` and reads one reply.
pub fn call(sock: &mut UnixStream, req: &[u8]) -> std::io::Result<Reply> {
    sock.write_all(req)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Decoded::Complete(r, n) = decode_response(&buf).expect("valid response") {
            let total = n + r.header.body_len() as usize;
            if buf.len() >= total {
                return Ok(Reply {
                    status: r.header.status,
                    body: buf[n..total].to_vec(),
                    meta: Metadata::decode(r.meta).unwrap(),
                });
            }
        }
        let k = sock.read(&mut chunk)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}
