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

/// A server killed from outside (as a test may) leaves nothing in /tmp once `stop`
/// is told its directory: the gRPC sockets weed makes there whatever $TMPDIR says.
#[test]
fn stop_cleans_up_after_a_server_already_killed() {
    if util::skip() {
        return;
    }
    let sw = util::Seaweed::start();
    let listed = std::fs::read_to_string(sw.dir().join("sockets")).unwrap();
    let present: Vec<&str> = listed
        .lines()
        .filter(|s| std::path::Path::new(s).exists())
        .collect();
    assert!(!present.is_empty(), "weed made no socket in /tmp: {listed}");
    sw.signal("KILL");
    let gone = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{}", sw.pid)).exists() {
        assert!(gone.elapsed().as_secs() < 10, "weed did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(util::script())
        .arg("stop")
        .arg(sw.pid.to_string())
        .arg(sw.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &present {
        assert!(!std::path::Path::new(s).exists(), "{s} was left in /tmp");
    }
}
