//! The listener and the event loop: socket permissions, stale-socket handling, many idle
//! connections on a fixed set of threads, and clean shutdown.

mod util;

use objmapper_proto::*;
use objmapper_server::{Server, ServerError};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;
use util::*;

#[test]
fn socket_is_0600_by_default_and_mode_can_be_widened() {
    let ts = TestServer::start();
    let m = std::fs::metadata(ts.socket()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);

    let gid = rustix::process::getegid().as_raw();
    let ts = TestServer::start_with(|c| {
        c.socket_mode = 0o660;
        c.socket_group = Some(gid);
    });
    let m = std::fs::metadata(ts.socket()).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.gid(), gid);
    assert_status(&ts.raw().ping(), Status::Ok);
}

#[test]
fn refuses_to_remove_a_path_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, b"do not delete").unwrap();
    let err = Server::start(config(&path, dir.path().join("data")))
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert!(err.to_string().contains("not a socket"));
    assert_eq!(std::fs::read(&path).unwrap(), b"do not delete");

    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    let err = Server::start(config(&sub, dir.path().join("data2")))
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert!(sub.is_dir());
}

#[test]
fn refuses_a_live_socket_and_replaces_a_stale_one() {
    let ts = TestServer::start();
    let other_data = ts.dir.path().join("data-other");
    let err = Server::start(config(ts.socket(), &other_data))
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    assert_status(&ts.raw().ping(), Status::Ok);

    // A stale socket: bound, then its listener dropped without unlinking.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let s = Server::start(config(&path, dir.path().join("data"))).expect("stale socket replaced");
    assert_status(&Raw::connect(&path).ping(), Status::Ok);
    s.shutdown().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let ts = TestServer::start();
    let err = Server::start(config(ts.dir.path().join("other.sock"), ts.data_dir()))
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::Store(_)), "{err}");
    assert!(!ts.dir.path().join("other.sock").exists());
}

#[test]
fn shutdown_finishes_in_flight_requests() {
    let mut ts = TestServer::start();
    let mut c = ts.raw();
    let body = vec![5u8; 2 << 20];
    c.send(
        Op::Put,
        Mode::Copy,
        b"inflight",
        &Metadata::default(),
        |h| h.length = body.len() as u64,
    );
    c.send_bytes(&body[..1 << 20]);
    let server = ts.server.take().unwrap();
    let stopper = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(100));
    c.send_bytes(&body[1 << 20..]);
    assert_status(&c.recv(), Status::Ok);
    stopper.join().unwrap().unwrap();
    assert!(!ts.socket().exists());
    ts.restart();
    assert_eq!(ts.raw().get_copy(b"inflight").body, body);
}
