//! `objmapper fsck`: the store checked offline. A lost journal is rebuilt from the
//! object files' labels, a rotten object is found and dropped, lost+found/ is listed
//! and cleaned; a store a server holds open is refused (docs/ADMIN.md, "objmapper fsck").

mod util;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use util::{assert_fails_with, files_of_len, objmapper, stderr, Daemon};

fn fsck(data: &Path, extra: &[&str]) -> Output {
    objmapper()
        .arg("fsck")
        .arg("--data-dir")
        .arg(data)
        .arg("--mem-dir")
        .arg(data.with_extension("mem"))
        .args(["--log-level", "warn"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn fsck_rebuilds_a_lost_journal_finds_rot_and_cleans_lost_found() {
    let d = Daemon::start(&["--mem-capacity", "0", "--scrub-rate", "0"]);
    let a = util::pattern(10_001, 1);
    let b = util::pattern(20_002, 2);
    let c = util::pattern(30_003, 3);
    d.run_with_stdin(&["put", "/a", "-"], &a);
    d.run_with_stdin(&["put", "/b", "-"], &b);
    d.run_with_stdin(&["put", "/c", "-"], &c);

    // A store the server holds open is refused, and left alone.
    let out = fsck(&d.data, &[]);
    assert_fails_with(&out, 1, "stop the server first");
    assert_eq!(d.ok(&["get", "/a"]), a);

    let (dir, socket, data) = d.into_parts();
    // The journal and HIGHWATER are lost; /c's bytes rot.
    std::fs::remove_file(data.join("journal")).unwrap();
    std::fs::remove_file(data.join("HIGHWATER")).unwrap();
    let rotten = files_of_len(&data.join("objects"), 30_003);
    assert_eq!(rotten.len(), 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rotten[0])
        .unwrap();
    f.write_all_at(b"!", 777).unwrap();
    drop(f);

    let out = fsck(&data, &[]);
    let o = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "damage found: exit 1\n{o}\n{}",
        stderr(&out)
    );
    assert!(
        o.contains("3 object(s) re-admitted from their labels"),
        "{o}"
    );
    assert!(
        o.contains("verified 2 objects") || o.contains("verified 3 objects"),
        "{o}"
    );
    assert!(o.contains("dropped /c") && o.contains("checksum"), "{o}");
    assert!(o.contains("/c version") && o.contains("damaged"), "{o}");
    assert!(o.contains("objmapper fsck --clean"), "{o}");

    // The rebuilt store serves the intact objects; the rotten one is gone.
    let d = Daemon::start_at(dir, socket, data, &["--mem-capacity", "0"]);
    assert_eq!(d.ok(&["get", "/a", "--mode", "fd"]), a);
    assert_eq!(d.ok(&["get", "/b"]), b);
    assert_eq!(d.run(&["get", "/c"]).status.code(), Some(1));
    let (dir, socket, data) = d.into_parts();

    // Clean: lost+found is listed once more, then emptied; the store is clean (exit 0).
    let out = fsck(&data, &["--clean"]);
    let o = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{o}\n{}", stderr(&out));
    assert!(o.contains("removed 1 file(s) from lost+found/"), "{o}");
    let out = fsck(&data, &[]);
    let o = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert!(o.contains("lost+found/: empty"), "{o}");
    let d = Daemon::start_at(dir, socket, data, &["--mem-capacity", "0"]);
    assert_eq!(d.ok(&["get", "/a"]), a);
}

/// `objmapper serve` on a full data dir: SIGTERM exits 0 (a clean stop whose shutdown
/// writes found no room), and the next start serves every object (docs/STORAGE.md,
/// "Faults: a full disk or tmpfs"). Root only: it mounts a small tmpfs.
#[test]
fn sigterm_on_a_full_data_dir_exits_0_and_the_next_start_serves() {
    if !util::is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root; run the suite as root (CI does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _m = Umount(data.clone());
    let socket = dir.path().join("s.sock");
    let obj = util::pattern(100_000, 7);
    let start = |dir: tempfile::TempDir| {
        Daemon::start_at(dir, socket.clone(), data.clone(), &["--mem-capacity", "0"])
    };
    let mut d = start(tempfile::tempdir().unwrap());
    d.run_with_stdin(&["put", "/kept", "-"], &obj);
    // Fill what is left.
    let filler = data.join("FILLER");
    let f = std::fs::File::create(&filler).unwrap();
    let mut len = 8u64 << 20;
    let mut off = 0;
    while len >= 4096 {
        match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), off, len) {
            Ok(()) => off += len,
            Err(_) => len /= 2,
        }
    }
    let out = d.run_with_stdin(&["put", "/more", "-"], &util::pattern(200_000, 8));
    assert_fails_with(&out, 1, "NO_SPACE");
    let st = d.stop_with(rustix::process::Signal::TERM);
    assert!(st.success(), "SIGTERM on a full disk: {st}\n{}", d.log());
    let d = start(tempfile::tempdir().unwrap());
    assert_eq!(d.ok(&["get", "/kept", "--mode", "fd"]), obj);
}
