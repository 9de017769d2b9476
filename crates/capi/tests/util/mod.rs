//! Helpers for the C tests: an in-process server in a temp dir, the built library, and
//! compiling and running the C examples.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use objmapper_server::{Server, ServerConfig};

/// A server running in this process, in its own temp dir (memory tier inside it).
pub struct TestServer {
    pub dir: tempfile::TempDir,
    server: Option<Server>,
}

/// A fresh temp dir named `prefix`… and the configuration of a server in it, on the
/// socket `socket_name`, with its data and memory tier inside the dir.
pub fn server_config(prefix: &str, socket_name: &str) -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = ServerConfig::new(dir.path().join(socket_name), &data);
    cfg.store.mem_dir = Some(data.with_extension("mem"));
    (dir, cfg)
}

impl TestServer {
    pub fn start() -> TestServer {
        let (dir, cfg) = server_config("objm-capi-test", "objm.sock");
        let server = Server::start(cfg).expect("server starts");
        TestServer {
            dir,
            server: Some(server),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("objm.sock")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().expect("clean shutdown");
        }
    }
}

/// The crate's directory (crates/capi).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root.
pub fn root() -> PathBuf {
    crate_dir().join("../..").canonicalize().unwrap()
}

/// Where cargo put libobjmapper.a / libobjmapper.so for this test build: the directory
/// of this test executable (target/<profile>/deps). `cargo test` builds the library's
/// every crate type there, fresh; it copies them up to target/<profile>/ only on
/// `cargo build`, so that copy may be stale and is not used.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .expect("test executable in target/<profile>/deps")
        .to_path_buf();
    for f in ["libobjmapper.a", "libobjmapper.so"] {
        assert!(
            dir.join(f).exists(),
            "{} not found next to the test executable: cargo builds it with the crate",
            dir.join(f).display()
        );
    }
    dir
}

/// The C example `name` (without .c) under examples/c.
pub fn example(name: &str) -> PathBuf {
    root().join("examples/c").join(format!("{name}.c"))
}

/// How an example is linked.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// libobjmapper.a, plus what Rust's std needs.
    Static,
    /// libobjmapper.so, found at run time through an rpath.
    Dynamic,
}

/// Compiles `src` with `cc -Wall -Wextra -Werror` against include/ and the library.
pub fn compile(src: &Path, out: &Path, link: Link) {
    let lib = lib_dir();
    let mut cc = Command::new("cc");
    cc.args([
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-O1",
    ])
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg(src)
    .arg("-o")
    .arg(out);
    match link {
        Link::Static => {
            cc.arg(lib.join("libobjmapper.a"))
                .args(["-lpthread", "-ldl", "-lm"]);
        }
        Link::Dynamic => {
            cc.arg(format!("-L{}", lib.display()))
                .arg("-lobjmapper")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    let o = cc.output().expect("cc runs");
    assert!(
        o.status.success(),
        "cc failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a program, returning its output; fails the test (with both streams) unless it
/// exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("program runs");
    assert!(
        o.status.success(),
        "{cmd:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The valgrind binary; the test command (scripts/test-c) installs it.
pub fn valgrind() -> &'static str {
    let ok = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "valgrind is not installed: run scripts/test-c (or apt-get install valgrind)"
    );
    "valgrind"
}

/// Compiles the example `name` (static and dynamic), runs both against a fresh server,
/// then runs the static build under valgrind: no definite or indirect leaks, no invalid
/// reads or writes, no fd left open by the library (the examples count their fds).
pub fn run_example(name: &str) {
    let server = TestServer::start();
    let bin = server.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let src = example(name);
    let stat = bin.join(format!("{name}-static"));
    let dynamic = bin.join(format!("{name}-dynamic"));
    compile(&src, &stat, Link::Static);
    compile(&src, &dynamic, Link::Dynamic);
    let sock = server.socket();
    let o = run_ok(Command::new(&stat).arg(&sock));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{name}: ok")),
        "{name} did not report ok: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    run_ok(Command::new(&dynamic).arg(&sock));
    run_ok(
        Command::new(valgrind())
            .args([
                "-q",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect",
                "--show-leak-kinds=definite,indirect",
                "--error-exitcode=99",
                "--track-fds=no",
            ])
            .arg(&stat)
            .arg(&sock),
    );
}
