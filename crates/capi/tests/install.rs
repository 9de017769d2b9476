//! `make install-only PREFIX=...` installs the library, the header and objmapper.pc;
//! a C program then builds with `cc $(pkg-config --cflags --libs objmapper)` alone and
//! runs against a real server with the installed shared library.

mod util;

use std::process::Command;

#[test]
fn pkg_config_finds_the_installed_library() {
    let prefix = tempfile::Builder::new()
        .prefix("objm-capi-prefix")
        .tempdir()
        .unwrap();
    let p = prefix.path();
    let make = Command::new("make")
        .arg("-C")
        .arg(util::crate_dir())
        .arg("install-only")
        .arg(format!("PREFIX={}", p.display()))
        .arg(format!("BUILD_DIR={}", util::lib_dir().display()))
        .output()
        .expect("make runs (the test command installs it)");
    assert!(
        make.status.success(),
        "make install-only failed:\n{}",
        String::from_utf8_lossy(&make.stderr)
    );
    for f in [
        "lib/libobjmapper.a",
        "lib/libobjmapper.so",
        "include/objmapper.h",
        "lib/pkgconfig/objmapper.pc",
    ] {
        assert!(p.join(f).exists(), "{f} was not installed");
    }
    let pc = std::fs::read_to_string(p.join("lib/pkgconfig/objmapper.pc")).unwrap();
    assert!(pc.contains(&format!("prefix={}", p.display())), "{pc}");
    assert!(pc.contains("Version: 0."), "{pc}");

    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "objmapper"])
        .env("PKG_CONFIG_PATH", p.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config runs (the test command installs it)");
    assert!(
        flags.status.success(),
        "pkg-config failed:\n{}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    assert!(
        flags.contains(&format!("-I{}/include", p.display())),
        "{flags}"
    );
    assert!(flags.contains("-lobjmapper"), "{flags}");

    // The README's three lines: build with pkg-config's flags only, run.
    let bin = p.join("get_seed");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cc -Wall -Werror {} -o {} $(pkg-config --cflags --libs objmapper)",
            util::example("get_seed").display(),
            bin.display()
        ))
        .env("PKG_CONFIG_PATH", p.join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cc with pkg-config flags failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let server = util::TestServer::start();
    let out = util::run_ok(
        Command::new(&bin)
            .arg(server.socket())
            .env("LD_LIBRARY_PATH", p.join("lib")),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("get_seed: ok"));

    let un = Command::new("make")
        .arg("-C")
        .arg(util::crate_dir())
        .arg("uninstall")
        .arg(format!("PREFIX={}", p.display()))
        .output()
        .unwrap();
    assert!(un.status.success());
    assert!(!p.join("include/objmapper.h").exists());
}
