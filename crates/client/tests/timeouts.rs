//! Connect and reply timeouts: a dead or stuck server is an error, never a hang.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use objmapper_client::{Client, Error, DEFAULT_TIMEOUT};

#[test]
fn a_server_that_never_accepts_times_out_on_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // Listening, never accepting: connect() completes from the backlog.
    let _l = UnixListener::bind(&path).unwrap();
    let mut c = Client::connect_timeout(&path, Some(Duration::from_millis(300))).unwrap();
    let t = Instant::now();
    let e = c.ping().unwrap_err();
    let took = t.elapsed();
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        e.to_string()
            .contains("the server did not answer within 300 ms"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!c.is_usable());
}

#[test]
fn a_full_backlog_times_out_at_connect() {
    use rustix::net::{bind, listen, socket, AddressFamily, SocketAddrUnix, SocketType};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let l = socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    bind(&l, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    listen(&l, 0).unwrap();
    // A backlog of 0 takes one connection; the next must wait for an accept that never
    // comes.
    let mut held = Vec::new();
    let t = Instant::now();
    let e = loop {
        match Client::connect_timeout(&path, Some(Duration::from_millis(200))) {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        assert!(held.len() < 16, "the backlog never filled");
    };
    assert!(e.is_timeout(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("did not accept the connection within 200 ms"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn no_server_fails_at_once_and_is_not_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let e = Client::connect(dir.path().join("none.sock")).unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(!e.is_timeout());
}

#[test]
fn tcp_connects_and_answers_are_bounded_too() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = Client::connect_tcp_timeout(addr, Some(Duration::from_millis(300))).unwrap();
    let e = c.ping().unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(DEFAULT_TIMEOUT >= Duration::from_secs(1));
}
