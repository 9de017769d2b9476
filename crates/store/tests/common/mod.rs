//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use objmapper_store::{
    CommitError, Condition, Object, ObjectMeta, PutMeta, PutOptions, Staging, Store, StoreConfig,
};
#[allow(unused_imports)] // not every test file uses it
pub use objmapper_testkit::files_under;
use tempfile::TempDir;

/// A disk-only configuration on `dir`, its memory directory inside it.
pub fn disk_only_config(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
        .with_mem_dir_inside()
        .without_memory_tier()
}

/// Both tiers: the data directory `data` and the memory tier `mem`, both in `dir`.
pub fn two_tiers(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir.join("data"));
    c.mem_dir = Some(dir.join("mem"));
    c
}

pub fn open(dir: &Path) -> Store {
    Store::open(disk_only_config(dir)).expect("open store")
}

/// A fresh temp dir and a store opened on it (see [`open`]).
pub fn temp_store() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    (dir, store)
}

/// A fresh temp dir and a store opened on it with the configuration `base` gives for
/// the dir, changed by `tweak`.
pub fn open_temp(
    base: fn(&Path) -> StoreConfig,
    tweak: impl FnOnce(&mut StoreConfig),
) -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let mut cfg = base(dir.path());
    tweak(&mut cfg);
    let store = Store::open(cfg).unwrap();
    (dir, store)
}

/// Begins a PUT of `key` and writes `data` into it, uncommitted.
pub fn staged(store: &Store, key: &[u8], data: &[u8]) -> Staging {
    let mut s = store.begin_put(key).expect("begin_put");
    s.write_all(data).expect("write_all");
    s
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
    let s = staged(store, key, data);
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

pub const DURABLE: PutOptions = PutOptions {
    durable: true,
    ephemeral: false,
    pinned: false,
    condition: Condition::Always,
};
pub const EPHEMERAL: PutOptions = PutOptions {
    durable: false,
    ephemeral: true,
    pinned: false,
    condition: Condition::Always,
};
pub const PINNED: PutOptions = PutOptions {
    durable: false,
    ephemeral: false,
    pinned: true,
    condition: Condition::Always,
};

/// Puts `data` under `key` with `opts` and no metadata.
pub fn try_put(
    store: &Store,
    key: &[u8],
    data: &[u8],
    opts: PutOptions,
) -> Result<Arc<ObjectMeta>, CommitError> {
    staged(store, key, data).commit(data.len() as u64, PutMeta::default(), opts)
}

/// Like [`try_put`]; the commit must succeed.
pub fn put_opts(store: &Store, key: &[u8], data: &[u8], opts: PutOptions) -> Arc<ObjectMeta> {
    try_put(store, key, data, opts).unwrap()
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

pub fn object_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("objects"))
}

pub fn staging_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("staging"))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    objmapper_testkit::pattern(len, seed)
}

pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}
