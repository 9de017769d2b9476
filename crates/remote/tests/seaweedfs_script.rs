//! scripts/seaweedfs refuses to start SeaweedFS where it would soon refuse writes.

mod util;

use std::process::Command;

#[test]
fn start_refuses_a_directory_without_room_and_says_why() {
    if util::skip() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("objm-seaweedfs.")
        .tempdir()
        .unwrap();
    let sw = dir.path().join("sw");
    // More free space than any filesystem here has: 1 EiB.
    let out = Command::new(util::script())
        .arg("start")
        .arg(&sw)
        .env("OBJMAPPER_SEAWEEDFS_MIN_FREE_MIB", (1u64 << 40).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(
        err.contains("MiB free of") && err.contains("free some space there"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no server, no endpoint: {:?}",
        out.stdout
    );
    assert!(!sw.join("pid").exists(), "no weed was started");

    // A threshold that is not a number is named.
    let out = Command::new(util::script())
        .arg("start")
        .arg(&sw)
        .env("OBJMAPPER_SEAWEEDFS_MIN_FREE_MIB", "2G")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("OBJMAPPER_SEAWEEDFS_MIN_FREE_MIB must be a number"),
        "{err}"
    );
}
