//! The store says which filesystem each tier is on and whether the memory tier is in
//! RAM (a memory tier on a disk filesystem writes every object to that disk: issue 19,
//! docs/ADMIN.md "The memory tier").

use std::path::Path;
use std::process::Command;

use objmapper_store::{Store, StoreConfig};

/// What `stat -f` (coreutils, not the store's code) says the filesystem holding `dir` is.
fn stat_fs_type(dir: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .expect("running stat -f");
    assert!(out.status.success(), "stat -f {}: {out:?}", dir.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn open(data: &Path, mem: &Path) -> Store {
    let mut c = StoreConfig::new(data);
    c.mem_dir = Some(mem.to_path_buf());
    Store::open(c).unwrap()
}

#[test]
fn a_memory_tier_on_tmpfs_is_in_ram() {
    let shm = Path::new("/dev/shm");
    assert_eq!(
        stat_fs_type(shm),
        "tmpfs",
        "this test needs /dev/shm on tmpfs"
    );
    let data = tempfile::tempdir().unwrap();
    let mem = tempfile::tempdir_in(shm).unwrap();
    let s = open(&data.path().join("d"), &mem.path().join("m"));
    let st = s.stats();
    assert_eq!((st.memory.filesystem, st.memory.in_ram), ("tmpfs", true));
    s.close().unwrap();
}

#[test]
fn a_memory_tier_elsewhere_says_where_it_is() {
    let data = tempfile::tempdir().unwrap();
    let s = open(&data.path().join("d"), &data.path().join("m"));
    let st = s.stats();
    let seen = stat_fs_type(data.path());
    let ram = matches!(seen.as_str(), "tmpfs" | "ramfs" | "hugetlbfs");
    assert_eq!(st.memory.in_ram, ram, "stat -f says {seen}");
    assert_eq!(st.disk.in_ram, ram, "stat -f says {seen}");
    // stat names ext2, ext3 and ext4 alike ("ext2/ext3"); the store says ext4.
    let name = if seen == "ext2/ext3" { "ext4" } else { &seen };
    assert_eq!(st.memory.filesystem, name);
    assert_eq!(st.disk.filesystem, name);
    s.close().unwrap();
}
