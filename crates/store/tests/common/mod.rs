//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use objmapper_store::{Object, ObjectMeta, PutMeta, PutOptions, Store, StoreConfig};

pub fn open(dir: &Path) -> Store {
    Store::open(
        StoreConfig::new(dir)
            .with_mem_dir_inside()
            .without_memory_tier(),
    )
    .expect("open store")
}

pub fn put(store: &Store, key: &[u8], data: &[u8]) -> Arc<ObjectMeta> {
    put_with(store, key, data, PutMeta::default(), false)
}

pub fn put_with(
    store: &Store,
    key: &[u8],
    data: &[u8],
    meta: PutMeta,
    durable: bool,
) -> Arc<ObjectMeta> {
    let mut s = store.begin_put(key).expect("begin_put");
    s.write_all(data).expect("write_all");
    s.commit(
        data.len() as u64,
        meta,
        PutOptions {
            durable,
            ..Default::default()
        },
    )
    .expect("commit")
}

/// Reads the whole object through its fd, without using the file offset.
pub fn read(obj: &Object) -> Vec<u8> {
    read_file(&obj.file)
}

pub fn read_file(f: &std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).expect("read_at");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn get_bytes(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    store.get(key).expect("get").map(|o| read(&o))
}

/// All regular files below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

pub fn object_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("objects"))
}

pub fn staging_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("staging"))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}
