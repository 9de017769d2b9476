//! A full disk or tmpfs through a real server over real sockets (DESIGN.md guarantee 8,
//! docs/STORAGE.md "Faults: a full disk or tmpfs"). Each test mounts a small tmpfs, and
//! the data-dir tests also a small loop-mounted ext4 (root only; SKIPPED otherwise),
//! fills it with a filler file, and checks that refusals say NO_SPACE and "full", that
//! /readyz and the metrics say so, that deletes keep working, and that removing the
//! filler brings PUTs back.

mod util;

use objmapper_proto::*;
use objmapper_server::{Server, ServerConfig};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::http::{self, Target};
use util::wire::{pattern, Wire};
use util::*;

/// Which filesystem a test mounts.
#[derive(Clone, Copy, Debug)]
enum Fs {
    Tmpfs,
    /// ext4 on a loop device backed by an image file next to the mount point.
    Ext4,
}

/// A small filesystem mounted on a directory; unmounted (lazily, so that a failing
/// test cannot leave it behind; the loop device goes with it) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir` (created), or None without root.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        Tmpfs::mount_fs(dir, size, Fs::Tmpfs)
    }

    /// Mounts a filesystem of `fs` and `size` on `dir` (created), or None without root
    /// (or without loop devices or mkfs.ext4 for ext4).
    fn mount_fs(dir: &Path, size: &str, fs: Fs) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a {fs:?} needs root; run the suite as root (CI does)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let st = match fs {
            Fs::Tmpfs => Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .status()
                .expect("run mount"),
            Fs::Ext4 => {
                let img = dir.with_extension("img");
                let made = Command::new("truncate")
                    .args(["-s", size])
                    .arg(&img)
                    .status()
                    .is_ok_and(|s| s.success())
                    && Command::new("mkfs.ext4")
                        .args(["-q", "-F"])
                        .arg(&img)
                        .status()
                        .is_ok_and(|s| s.success());
                if !made {
                    eprintln!("SKIPPED: cannot make an ext4 image (truncate, mkfs.ext4)");
                    return None;
                }
                Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&img)
                    .arg(dir)
                    .status()
                    .expect("run mount")
            }
        };
        if !st.success() {
            eprintln!("SKIPPED: cannot mount a {fs:?} here (mount exited {st})");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fills the filesystem with `FILLER` (fallocate, in halving chunks until not even
    /// one page fits).
    fn fill(&self) -> PathBuf {
        let path = self.0.join("FILLER");
        let f = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let v = rustix::fs::statvfs(&self.0).unwrap();
        let mut len = v.f_bavail * v.f_frsize;
        let mut off = std::fs::metadata(&path).unwrap().len();
        while len >= 4096 {
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), off, len) {
                Ok(()) => off += len,
                Err(_) => len /= 2,
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The test's pieces, dropped in order: the server, then the mounts, then the temp dir.
struct Rig {
    server: Option<Server>,
    mounts: Vec<Tmpfs>,
    dir: tempfile::TempDir,
}

impl Rig {
    /// A temp dir whose data dir (and, with `mem`, memory tier dir) is a tmpfs of `size`.
    fn new(size: &str, data: bool, mem: bool) -> Option<Rig> {
        Rig::on(Fs::Tmpfs, size, data, mem)
    }

    /// Like [`Rig::new`], the data dir on `fs` (the memory tier is always a tmpfs).
    fn on(fs: Fs, size: &str, data: bool, mem: bool) -> Option<Rig> {
        let dir = tempfile::Builder::new()
            .prefix("objm-full")
            .tempdir()
            .unwrap();
        let mut mounts = Vec::new();
        if data {
            mounts.push(Tmpfs::mount_fs(&dir.path().join("data"), size, fs)?);
        }
        if mem {
            mounts.push(Tmpfs::mount(&dir.path().join("data.mem"), size)?);
        }
        Some(Rig {
            server: None,
            mounts,
            dir,
        })
    }

    fn start(&mut self, f: impl FnOnce(&mut ServerConfig)) {
        let mut cfg = config(self.socket(), self.dir.path().join("data"));
        f(&mut cfg);
        // The tests of this file run side by side and spawn mount, mkfs and umount. A child
        // holds a copy of every descriptor between its fork and its exec, the previous
        // store's LOCK included, so the flock that close() released can stay held for a
        // moment after a stop in this very process. Wait that out (briefly); anything else
        // fails at once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let server = loop {
            match Server::start(cfg.clone()) {
                Err(objmapper_server::ServerError::Store(objmapper_store::OpenError::Locked {
                    ..
                })) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r.expect("server starts on a full filesystem"),
            }
        };
        self.server = Some(server);
    }

    fn stop(&mut self) {
        self.server
            .take()
            .expect("running")
            .shutdown()
            .expect("clean shutdown on a full filesystem");
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("objm.sock")
    }

    fn wire(&self) -> Wire {
        Wire::unix(&self.socket())
    }

    fn admin(&self) -> Target {
        http::unix(
            self.server
                .as_ref()
                .unwrap()
                .admin_socket_path()
                .expect("admin socket on by default"),
        )
    }

    fn metric(&self, name: &str) -> f64 {
        let text = http::get(&self.admin(), "/metrics").text;
        *http::prometheus(&text)
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.server.take());
        self.mounts.clear();
    }
}

impl Rig {
    /// A rig whose data dir is an 8 MiB filesystem of `fs`, started without a memory
    /// tier, or None where it cannot be mounted.
    fn disk_only(fs: Fs) -> Option<Rig> {
        let mut rig = Rig::on(fs, "8m", true, false)?;
        rig.start(disk_only);
        Some(rig)
    }

    /// A clean stop, then a start with `f`, and a new connection.
    fn restart(&mut self, f: impl FnOnce(&mut ServerConfig)) -> Wire {
        self.stop();
        self.start(f);
        self.wire()
    }
}

/// The store setting of the data-dir tests: no memory tier, every PUT goes to disk.
fn disk_only(c: &mut ServerConfig) {
    c.store.mem_capacity_bytes = 0;
}

/// Keys and their bytes.
type Objects = Vec<(Vec<u8>, Vec<u8>)>;

/// `n` objects `k0`, `k1`… of `size` bytes each.
fn objects(n: u64, size: usize) -> Objects {
    (0..n)
        .map(|i| (format!("k{i}").into_bytes(), pattern(size, i)))
        .collect()
}

/// PUTs each of `objs`, asserting OK.
fn put_all(w: &mut Wire, objs: &[(Vec<u8>, Vec<u8>)]) {
    for (k, v) in objs {
        assert_status(&w.put(k, Mode::Copy, v), Status::Ok);
    }
}

/// GETs each of `objs`, asserting OK and its bytes.
fn assert_all_served(w: &mut Wire, objs: &[(Vec<u8>, Vec<u8>)]) {
    for (k, v) in objs {
        let r = w.get(k, Mode::Copy, 0, 0);
        assert_status(&r, Status::Ok);
        assert_eq!(&r.body, v);
    }
}

/// PUTs the 256 KiB object `big`.
fn put_big(w: &mut Wire) -> Reply {
    w.put(b"big", Mode::Copy, &pattern(256 << 10, 9))
}

/// For each `tmpfs, ext4 => on;`: two `#[test]`s running `on` on a [`Rig::disk_only`]
/// (SKIPPED where it cannot be mounted), `tmpfs` with the data dir on a tmpfs and `ext4`
/// on ext4.
macro_rules! on_tmpfs_and_ext4 {
    ($($tmpfs:ident, $ext4:ident => $on:ident;)*) => {$(
        #[test]
        fn $tmpfs() {
            if let Some(rig) = Rig::disk_only(Fs::Tmpfs) {
                $on(rig);
            }
        }

        #[test]
        fn $ext4() {
            if let Some(rig) = Rig::disk_only(Fs::Ext4) {
                $on(rig);
            }
        }
    )*};
}

on_tmpfs_and_ext4! {
    a_full_data_dir_says_no_space_and_recovers_when_space_returns,
    a_full_data_dir_says_no_space_and_recovers_when_space_returns_on_ext4 => no_space_then_recovery;
    a_server_stops_and_starts_on_a_full_data_dir_and_serves_its_objects,
    a_server_stops_and_starts_on_a_full_data_dir_and_serves_its_objects_on_ext4 => stop_and_start_when_full;
    deletes_work_on_a_full_data_dir_even_when_freed_space_is_taken_again,
    deletes_work_on_a_full_data_dir_even_when_freed_space_is_taken_again_on_ext4 => deletes_when_full;
}

/// Four 64 KiB objects PUT, then the data dir filled: the objects and the filler.
fn four_objects_then_full(rig: &Rig, w: &mut Wire) -> (Objects, PathBuf) {
    let objs = objects(4, 64 << 10);
    put_all(w, &objs);
    (objs, rig.mounts[0].fill())
}

fn no_space_then_recovery(mut rig: Rig) {
    let mut w = rig.wire();
    let (objs, filler) = four_objects_then_full(&rig, &mut w);

    let r = put_big(&mut w);
    assert_status(&r, Status::NoSpace);
    assert!(r.message.contains("full"), "{}", r.message);
    assert!(r.message.contains("disk"), "{}", r.message);
    assert!(r.message.contains("bytes free"), "{}", r.message);
    let ready = http::get(&rig.admin(), "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.code(), "disk_full");
    assert!(rig.metric("objmapper_fs_full_total{tier=\"disk\"}") >= 1.0);
    assert_eq!(rig.metric("objmapper_fs_full{tier=\"disk\"}"), 1.0);

    // Reads work.
    assert_all_served(&mut w, &objs);

    // Space comes back: PUTs work, and the server is ready again.
    std::fs::remove_file(&filler).unwrap();
    assert_status(&put_big(&mut w), Status::Ok);
    let ready = http::get(&rig.admin(), "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(rig.metric("objmapper_fs_full{tier=\"disk\"}"), 0.0);
    rig.stop();
}

fn stop_and_start_when_full(mut rig: Rig) {
    let mut w = rig.wire();
    let (objs, filler) = four_objects_then_full(&rig, &mut w);
    assert_status(&put_big(&mut w), Status::NoSpace);
    drop(w);
    // A clean stop, then a start, both on the full filesystem.
    let mut w = rig.restart(disk_only);
    assert_all_served(&mut w, &objs);
    // Again: this start follows a stop whose shutdown writes found no room.
    drop(w);
    let mut w = rig.restart(disk_only);
    assert_all_served(&mut w, &objs);
    std::fs::remove_file(&filler).unwrap();
    assert_status(&put_big(&mut w), Status::Ok);
    drop(w);
    rig.stop();
}

#[test]
fn a_full_memory_tier_sends_default_puts_to_disk() {
    let Some(mut rig) = Rig::new("8m", false, true) else {
        return;
    };
    rig.start(|_| {});
    let filler = rig.mounts[0].fill();
    let mut w = rig.wire();
    let objs = objects(40, 16 << 10);
    put_all(&mut w, &objs);
    assert_all_served(&mut w, &objs);
    // Empty objects need no data blocks, only journal records: those find the tmpfs
    // full once the journal's last block is used up, after the file was made.
    let empties: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("e{i:03}{}", "k".repeat(220)).into_bytes())
        .collect();
    for k in &empties {
        assert_status(&w.put(k, Mode::Copy, b""), Status::Ok);
    }
    for k in &empties {
        let r = w.get(k, Mode::Copy, 0, 0);
        assert_status(&r, Status::Ok);
        assert!(r.body.is_empty());
    }
    assert!(rig.metric("objmapper_mem_write_fallbacks_total") >= 1.0);
    assert!(rig.metric("objmapper_fs_full_total{tier=\"memory\"}") >= 1.0);
    // A full memory tier is not a reason to be unready: PUTs go to disk.
    assert_eq!(http::get(&rig.admin(), "/readyz").status, 200);
    // Ephemeral objects need the memory tier: NO_SPACE, saying it is full.
    let r = w.put_with(b"eph", Mode::Copy, &pattern(16 << 10, 99), |h| {
        h.flags |= req_flags::EPHEMERAL
    });
    assert_status(&r, Status::NoSpace);
    assert!(r.message.contains("full"), "{}", r.message);
    drop(w);
    let mut w = rig.restart(|_| {});
    assert_all_served(&mut w, &objs);
    std::fs::remove_file(&filler).unwrap();
    drop(w);
    rig.stop();
}

fn deletes_when_full(mut rig: Rig) {
    let mut w = rig.wire();
    // Long keys: each DEL record is about 250 bytes, so 100 of them need new blocks.
    let keys: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("{i:03}{}", "k".repeat(220)).into_bytes())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert_status(&w.put(k, Mode::Copy, &pattern(4096, i as u64)), Status::Ok);
    }
    rig.mounts[0].fill();
    assert_status(
        &w.put(b"big", Mode::Copy, &pattern(64 << 10, 9)),
        Status::NoSpace,
    );
    for k in &keys {
        let r = w.call(Op::Delete, Mode::None, k, b"", |_| {});
        assert_status(&r, Status::Ok);
        // Whatever the delete freed is taken again (as a write-behind backlog would).
        rig.mounts[0].fill();
    }
    for k in &keys {
        assert_status(&w.get(k, Mode::Copy, 0, 0), Status::NotFound);
    }
    drop(w);
    let mut w = rig.restart(disk_only);
    for k in &keys {
        assert_status(&w.get(k, Mode::Copy, 0, 0), Status::NotFound);
    }
    drop(w);
    rig.stop();
}
