//! Helpers the crates' integration tests share (a dev-dependency only): deterministic
//! test data, the hex vectors out of docs/PROTOCOL.md, damage to a file, and waiting for
//! a condition, and a fake S3 endpoint ([`fake_s3`]).
#![forbid(unsafe_code)]

pub mod fake_s3;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes (xorshift64), the same for the same `len` and `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `len` bytes of xorshift64 words (little-endian) from `state`, which must not be 0.
pub fn xorshift_words(mut state: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The bytes of the hex vector docs/PROTOCOL.md marks `<!-- vector: name -->`: the first
/// ```` ```hex ```` block after the marker.
pub fn protocol_vector(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("read docs/PROTOCOL.md");
    let marker = format!("<!-- vector: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("vector {name} missing from PROTOCOL.md"));
    let rest = &doc[start + marker.len()..];
    let body = rest
        .split("```hex")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .unwrap_or_else(|| panic!("vector {name} has no hex block"));
    body.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad hex {b:?} in {name}")))
        .collect()
}

/// XORs the byte at `at` in the file at `path` with `mask`, in place: bit rot.
pub fn flip_bits(path: &Path, at: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

/// Every regular file below `dir`, recursively, sorted; an unreadable directory is
/// skipped.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Polls `f` every `poll` until it holds; panics naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, poll: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(poll);
    }
}
