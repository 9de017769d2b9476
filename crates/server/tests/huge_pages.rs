//! A memory tier on a tmpfs mounted with each `huge=` policy (root only; SKIPPED
//! otherwise): the server reports the policy in `GET /v1/tiers` and `GET
//! /readyz?verbose` (docs/ADMIN.md, "Huge pages for the memory tier"), and a
//! multi-MiB object PUT there is served whole from the memory tier, in copy and fd
//! mode.

mod util;

use objmapper_proto::*;
use objmapper_server::Server;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::http;
use util::wire::{pattern, pread_fd, Wire};
use util::*;

/// A tmpfs mounted on a directory, unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a 64 MiB tmpfs with `options` on `dir`, or None without root.
    fn tmpfs(dir: &Path, options: &str) -> Option<Mount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root; run the suite as root (CI does)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        if !st.success() {
            eprintln!("SKIPPED: cannot mount a tmpfs with {options} here (mount exited {st})");
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// What the server must report for a tmpfs mounted with `huge=mount` (None: no
/// option): the system's `shmem_enabled` `deny` and `force` override every mount.
fn expected(mount: Option<&str>) -> String {
    let system = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    if system.contains("[deny]") {
        return "never".into();
    }
    if system.contains("[force]") {
        return "always".into();
    }
    mount.unwrap_or("never").into()
}

#[test]
fn the_memory_tier_reports_its_tmpfs_huge_page_policy_and_serves_large_objects() {
    let dir = tempfile::Builder::new()
        .prefix("objm-huge")
        .tempdir()
        .unwrap();
    for (i, huge) in [None, Some("within_size"), Some("always"), Some("advise")]
        .into_iter()
        .enumerate()
    {
        let mem = dir.path().join(format!("mem{i}"));
        let options = match huge {
            Some(h) => format!("size=64m,huge={h}"),
            None => "size=64m".to_string(),
        };
        let Some(_mount) = Mount::tmpfs(&mem, &options) else {
            return;
        };
        let socket = dir.path().join(format!("s{i}.sock"));
        let mut cfg = config(&socket, dir.path().join(format!("data{i}")));
        cfg.store.mem_dir = Some(mem.clone());
        let server = Server::start(cfg).expect("server starts");
        let admin = http::unix(server.admin_socket_path().expect("admin socket"));

        let tiers = http::get(&admin, "/v1/tiers").json();
        let m = &tiers["memory"];
        assert_eq!(m["filesystem"], "tmpfs", "{tiers}");
        assert_eq!(
            m["huge_pages"],
            expected(huge).as_str(),
            "{options}: {tiers}"
        );
        // A disk filesystem has no policy of its own to report.
        if tiers["disk"]["in_ram"] == false {
            assert!(tiers["disk"]["huge_pages"].is_null(), "{tiers}");
        }
        let ready = http::get(&admin, "/readyz?verbose").json();
        assert_eq!(
            ready["details"]["memory_tier"]["huge_pages"],
            expected(huge).as_str(),
            "{ready}"
        );

        // 6 MiB and a few bytes: three huge pages and a tail of small ones.
        let body = pattern((6 << 20) + 12_345, i as u64);
        let mut w = Wire::unix(&socket);
        assert_status(&w.put(b"large", Mode::Copy, &body), Status::Ok);
        let r = w.get(b"large", Mode::Copy, 0, 0);
        assert_status(&r, Status::Ok);
        assert!(r.body == body, "{options}: {} bytes back", r.body.len());
        let r = w.get(b"large", Mode::Fd, 0, 0);
        assert_status(&r, Status::Ok);
        let fd = r.fd.expect("an fd");
        assert!(pread_fd(&fd, 0, body.len() as u64) == body, "{options}");
        let tiers = http::get(&admin, "/v1/tiers").json();
        assert_eq!(tiers["memory"]["objects"], 1, "{options}: {tiers}");
        server.shutdown().expect("clean shutdown");
    }
}
