//! The non-blocking HELLO (`objm_client_send_hello()`, `objm_client_session()`), for event
//! loops such as the nginx module: the HELLO goes out without a wait, requests follow
//! it at once, and the receive calls read its answer (recording the grant) before the
//! first reply; a refusal is a clear failure with the server's status.
//!
//! Every test talks to a real in-process server. Where a test must control *when*
//! bytes arrive (a reply "not there yet"), a relay sits between the C connection and
//! the server: it passes the server's own bytes (and fds) on, a piece at a time.
// Calls the C API's functions on raw pointers and descriptors, as a C program would.
#![allow(unsafe_code)]

mod util;

use std::ffi::{CStr, CString};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::time::Duration;

use objmapper::*;
use objmapper_proto::{Decoded, ResponseHeader};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use util::TestServer;

const PROMISE: u32 = OBJM_CAP_FD_PASSING | OBJM_CAP_POSITIONAL_READS;

fn last_error() -> String {
    // SAFETY: objm_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(objm_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn last_status() -> i32 {
    objm_last_status()
}

/// A request with every field 0 or NULL, as the header asks callers to start from.
fn blank() -> objm_request_t {
    // SAFETY: objm_request_t holds only integers and pointers, for which all-zero bytes
    // are valid values (0 and NULL).
    unsafe { std::mem::zeroed() }
}

fn c_path(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// A V1 connection to the server (nothing sent yet).
fn open_v1(server: &TestServer) -> *mut objm_connection_t {
    let path = c_path(&server.socket());
    // SAFETY: a NUL-terminated path.
    let conn = unsafe { objm_client_open(path.as_ptr(), OBJM_PROTO_V1) };
    assert!(!conn.is_null(), "{}", last_error());
    conn
}

/// Stores `bytes` under `key` on a connection of its own.
fn put(server: &TestServer, key: &[u8], bytes: &[u8]) {
    let c = open_v1(server);
    // SAFETY: c is live; key and bytes are valid for their lengths.
    let r = unsafe {
        objm_put(
            c,
            key.as_ptr().cast(),
            key.len(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    assert_eq!(r, 0, "{}", last_error());
    // SAFETY: c is live and not used afterwards.
    unsafe { objm_client_destroy(c) };
}

/// Sends an fd-mode GET of `key` tagged `id`.
fn send_get(conn: *mut objm_connection_t, key: &[u8], id: u32) -> i32 {
    let mut req = blank();
    req.id = id;
    req.op = OBJM_OP_GET;
    req.mode = OBJM_MODE_FDPASS;
    req.uri = key.as_ptr().cast();
    req.uri_len = key.len();
    // SAFETY: conn is live; req points to key for the call.
    unsafe { objm_client_send_request(conn, &req) }
}

fn try_recv(conn: *mut objm_connection_t) -> (i32, *mut objm_response_t) {
    let mut resp = ptr::null_mut();
    // SAFETY: conn is live; resp is writable.
    let r = unsafe { objm_client_try_recv_response(conn, &mut resp) };
    (r, resp)
}

/// try_recv until a response comes (poll between), as an event loop would.
fn next_response(conn: *mut objm_connection_t) -> *mut objm_response_t {
    // SAFETY: conn is live.
    let fd = unsafe { objm_client_socket(conn) };
    loop {
        match try_recv(conn) {
            (0, resp) => return resp,
            (1, resp) => {
                assert!(resp.is_null());
                let mut p = [rustix::event::PollFd::from_borrowed_fd(
                    // SAFETY: fd is the connection's live socket.
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                    rustix::event::PollFlags::IN,
                )];
                let t = rustix::event::Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                assert_eq!(
                    rustix::event::poll(&mut p, Some(&t)).unwrap(),
                    1,
                    "no reply in 5 s"
                );
            }
            (r, _) => panic!("try_recv: {r}: {}", last_error()),
        }
    }
}

fn session(conn: *mut objm_connection_t) -> (i32, objm_hello_t) {
    let mut h = objm_hello_t::default();
    // SAFETY: conn is live; h is writable.
    let r = unsafe { objm_client_session(conn, &mut h) };
    (r, h)
}

/// The response's fd (taken), after checking it is an OK fd reply with id `id`.
fn take_fd(resp: *mut objm_response_t, id: u32) -> OwnedFd {
    // SAFETY: resp is a live response from the library.
    let r = unsafe { &*resp };
    assert_eq!(r.status, OBJM_STATUS_OK, "status {}", r.status);
    assert_eq!(r.id, id);
    // SAFETY: resp is live; the fd is ours from here on.
    let fd = unsafe { objm_response_take_fd(resp) };
    assert!(fd >= 0);
    // SAFETY: resp is live and freed once.
    unsafe { objm_response_free(resp) };
    // SAFETY: take_fd handed the fd over to us.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
}

fn offset_of(fd: &OwnedFd) -> u64 {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).unwrap()
}

/// Whether two fds share one open file description: moving one's offset moves the
/// other's (the test breaks the promise on purpose, to see it).
fn same_description(a: &OwnedFd, b: &OwnedFd) -> bool {
    rustix::fs::seek(a, rustix::fs::SeekFrom::Start(0)).unwrap();
    rustix::fs::seek(b, rustix::fs::SeekFrom::Start(0)).unwrap();
    rustix::fs::seek(a, rustix::fs::SeekFrom::Start(5)).unwrap();
    offset_of(b) == 5
}

#[test]
fn requests_sent_behind_the_hello_get_the_promised_shared_descriptions() {
    let server = TestServer::start();
    put(&server, b"shared", b"0123456789abcdef");

    let mut fds = Vec::new();
    for _ in 0..2 {
        let conn = open_v1(&server);
        // SAFETY: conn is live.
        assert_eq!(
            unsafe { objm_client_send_hello(conn, 1, PROMISE) },
            0,
            "{}",
            last_error()
        );
        assert_eq!(session(conn).0, 1, "the answer has not been read yet");
        // At once, behind the HELLO: no wait for its answer.
        assert_eq!(send_get(conn, b"shared", 7), 0, "{}", last_error());
        // SAFETY: conn is live.
        assert_eq!(
            unsafe { objm_client_outstanding(conn) },
            1,
            "the HELLO is not counted"
        );
        let fd = take_fd(next_response(conn), 7);
        let (r, h) = session(conn);
        assert_eq!(r, 0, "{}", last_error());
        assert_eq!((h.version, h.depth, h.capabilities), (2, 1, PROMISE));
        // SAFETY: conn is live.
        assert_eq!(unsafe { objm_client_outstanding(conn) }, 0);
        // The connection goes on as a V2 one.
        assert_eq!(send_get(conn, b"shared", 8), 0, "{}", last_error());
        drop(take_fd(next_response(conn), 8));
        fds.push(fd);
        // SAFETY: conn is live and not used afterwards; the fd outlives it.
        unsafe { objm_client_destroy(conn) };
    }
    assert!(
        same_description(&fds[0], &fds[1]),
        "two connections that promised POSITIONAL_READS get the one cached description"
    );

    // Without the promise (V1, no HELLO; or a HELLO without the bit): private ones.
    let v1 = open_v1(&server);
    assert_eq!(send_get(v1, b"shared", 1), 0, "{}", last_error());
    let private = take_fd(next_response(v1), 1);
    assert_eq!(
        session(v1).1.version,
        1,
        "a V1 connection reports version 1"
    );
    assert_eq!(session(v1).1.capabilities, 0);
    let v2 = open_v1(&server);
    // SAFETY: v2 is live.
    assert_eq!(
        unsafe { objm_client_send_hello(v2, 1, OBJM_CAP_FD_PASSING) },
        0
    );
    assert_eq!(send_get(v2, b"shared", 2), 0, "{}", last_error());
    let unpromised = take_fd(next_response(v2), 2);
    assert_eq!(session(v2).1.capabilities, OBJM_CAP_FD_PASSING);
    assert!(!same_description(&fds[0], &private));
    assert!(!same_description(&fds[0], &unpromised));
    // SAFETY: both are live and not used afterwards.
    unsafe {
        objm_client_destroy(v1);
        objm_client_destroy(v2);
    }
}

#[test]
fn a_pipeline_behind_the_hello_with_out_of_order_replies() {
    let server = TestServer::start();
    for k in [b"k0", b"k1", b"k2", b"k3"] {
        put(&server, k, k);
    }
    let conn = open_v1(&server);
    let caps = OBJM_CAP_OUT_OF_ORDER | PROMISE;
    // SAFETY: conn is live.
    assert_eq!(
        unsafe { objm_client_send_hello(conn, 4, caps) },
        0,
        "{}",
        last_error()
    );
    for (i, k) in [b"k0", b"k1", b"k2", b"k3"].iter().enumerate() {
        assert_eq!(send_get(conn, *k, 100 + i as u32), 0, "{}", last_error());
    }
    // SAFETY: conn is live.
    assert_eq!(unsafe { objm_client_outstanding(conn) }, 4);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let mut resp = ptr::null_mut();
        // The blocking receive reads the HELLO's answer first too.
        // SAFETY: conn is live; resp is writable.
        assert_eq!(
            unsafe { objm_client_recv_response(conn, &mut resp) },
            0,
            "{}",
            last_error()
        );
        // SAFETY: resp is a live response.
        let id = unsafe { (*resp).id };
        let fd = take_fd(resp, id);
        let mut got = vec![0u8; 2];
        rustix::io::pread(&fd, &mut got, 0).unwrap();
        assert_eq!(got, format!("k{}", id - 100).as_bytes());
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, [100, 101, 102, 103]);
    let (r, h) = session(conn);
    assert_eq!(r, 0);
    assert_eq!(
        (h.depth, h.capabilities),
        (4, caps | OBJM_CAP_PIPELINE),
        "PIPELINE is asked for with a depth above 1"
    );
    // SAFETY: conn is live and not used afterwards.
    unsafe { objm_client_destroy(conn) };
}

#[test]
fn recv_for_and_convenience_calls_read_the_hello_first() {
    let server = TestServer::start();
    put(&server, b"obj", b"bytes");
    let conn = open_v1(&server);
    // SAFETY: conn is live.
    assert_eq!(unsafe { objm_client_send_hello(conn, 2, PROMISE) }, 0);
    assert_eq!(send_get(conn, b"obj", 1), 0);
    assert_eq!(send_get(conn, b"obj", 2), 0);
    let mut resp = ptr::null_mut();
    // SAFETY: conn is live; resp is writable.
    assert_eq!(
        unsafe { objm_client_recv_response_for(conn, 2, &mut resp) },
        0,
        "{}",
        last_error()
    );
    drop(take_fd(resp, 2));
    assert_eq!(session(conn).0, 0, "recv_for read the HELLO's answer");
    drop(take_fd(next_response(conn), 1));

    // A convenience call right after the HELLO waits for its answer, then runs.
    let conn2 = open_v1(&server);
    // SAFETY: conn2 is live.
    assert_eq!(unsafe { objm_client_send_hello(conn2, 1, PROMISE) }, 0);
    let mut size = 0u64;
    // SAFETY: conn2 is live; the key is valid; size is writable.
    let fd = unsafe { objm_get_fd(conn2, c"obj".as_ptr(), 3, &mut size) };
    assert!(fd >= 0, "{}", last_error());
    assert_eq!(size, 5);
    assert_eq!(session(conn2).1.capabilities, PROMISE);
    // SAFETY: fd is ours; both connections are live and not used afterwards.
    unsafe {
        libc::close(fd);
        objm_client_destroy(conn);
        objm_client_destroy(conn2);
    }
}

/// Reads everything there is on `s` now (non-blocking), with any fds.
fn drain(s: &UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
        match recvmsg(s, &mut iov, &mut cmsg, flags) {
            Ok(m) if m.bytes == 0 => break,
            Ok(m) => {
                bytes.extend_from_slice(&buf[..m.bytes]);
                for c in cmsg.drain() {
                    if let RecvAncillaryMessage::ScmRights(r) = c {
                        fds.extend(r);
                    }
                }
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("recvmsg: {e}"),
        }
    }
    (bytes, fds)
}

/// The length of each whole response frame at the start of `b`.
fn frame_lengths(mut b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    while let Ok(Decoded::Complete(h, _)) = ResponseHeader::decode(b) {
        let n = h.frame_len() + if h.has_body() { h.length as usize } else { 0 };
        if b.len() < n {
            break;
        }
        out.push(n);
        b = &b[n..];
    }
    out
}

/// A relay between a C connection (on `near`'s peer) and the real server (`far`): it
/// passes the requests on at once, and the server's replies on only when told to.
struct Relay {
    near: UnixStream,
    far: UnixStream,
    replies: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Relay {
    /// A relay to `server`, and the C connection (V1, nothing sent) on its near side.
    fn new(server: &TestServer) -> (Relay, *mut objm_connection_t) {
        let (near, theirs) = UnixStream::pair().unwrap();
        near.set_nonblocking(true).unwrap();
        let far = UnixStream::connect(server.socket()).unwrap();
        // SAFETY: the fd is an open socket handed over.
        let conn = unsafe { objm_client_create(theirs.into_raw_fd(), OBJM_PROTO_V1) };
        assert!(!conn.is_null(), "{}", last_error());
        let relay = Relay {
            near,
            far,
            replies: Vec::new(),
            fds: Vec::new(),
        };
        (relay, conn)
    }

    /// Passes what the C connection sent to the server, and collects the server's
    /// answer until `frames` whole frames (or its EOF) are in.
    fn exchange(&mut self, frames: usize) {
        let (req, fds) = drain(&self.near);
        assert!(fds.is_empty() && !req.is_empty());
        self.far.write_all(&req).unwrap();
        self.far
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while frame_lengths(&self.replies).len() < frames {
            let mut buf = [0u8; 4096];
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let m = recvmsg(&self.far, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC).unwrap();
            if m.bytes == 0 {
                break;
            }
            self.replies.extend_from_slice(&buf[..m.bytes]);
            for c in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(r) = c {
                    self.fds.extend(r);
                }
            }
        }
    }

    /// Passes the next `n` bytes of the server's replies on, with the fds that came
    /// (all of them go with the first byte passed after they arrived).
    fn pass(&mut self, n: usize) {
        let bytes: Vec<u8> = self.replies.drain(..n).collect();
        let fds: Vec<OwnedFd> = std::mem::take(&mut self.fds);
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(cmsg.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        let sent = sendmsg(
            &self.near,
            &[IoSlice::new(&bytes)],
            &mut cmsg,
            SendFlags::empty(),
        );
        assert_eq!(sent.unwrap(), n);
    }
}

#[test]
fn try_recv_would_block_until_the_hello_answer_and_the_reply_arrive() {
    let server = TestServer::start();
    put(&server, b"slow", b"0123456789");
    let (mut relay, conn) = Relay::new(&server);
    // SAFETY: conn is live.
    assert_eq!(
        unsafe { objm_client_send_hello(conn, 1, PROMISE) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(send_get(conn, b"slow", 9), 0, "{}", last_error());
    // Changing the timeout reads nothing: the HELLO's answer is still awaited.
    // SAFETY: conn is live.
    assert_eq!(
        unsafe { objm_client_set_timeout(conn, 1000) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(session(conn).0, 1);
    relay.exchange(2);
    let lens = frame_lengths(&relay.replies);
    assert_eq!(lens.len(), 2, "the HELLO's answer and the GET's reply");
    assert_eq!(
        lens[0],
        40 + 16,
        "the HELLO's answer comes first: a header and 16 bytes"
    );

    // Nothing has arrived: would block.
    assert_eq!(try_recv(conn), (1, ptr::null_mut()));
    assert_eq!(session(conn).0, 1);
    // Half of the HELLO's answer: still would block, nothing known yet.
    relay.pass(20);
    assert_eq!(try_recv(conn), (1, ptr::null_mut()));
    assert_eq!(session(conn).0, 1);
    // The rest of it: read and recorded, but no reply to give yet.
    relay.pass(lens[0] - 20);
    assert_eq!(try_recv(conn), (1, ptr::null_mut()));
    let (r, h) = session(conn);
    assert_eq!((r, h.version, h.capabilities), (0, 2, PROMISE));
    // The GET's reply, with its fd.
    relay.pass(lens[1]);
    let (r, resp) = try_recv(conn);
    assert_eq!(r, 0, "{}", last_error());
    let fd = take_fd(resp, 9);
    let mut got = [0u8; 10];
    rustix::io::pread(&fd, &mut got, 0).unwrap();
    assert_eq!(&got, b"0123456789");
    // SAFETY: conn is live and not used afterwards.
    unsafe { objm_client_destroy(conn) };
}

#[test]
fn a_refused_hello_is_a_clear_failure_with_the_servers_status() {
    // An allowlist that gives this uid nothing: the first frame, the HELLO, gets
    // FORBIDDEN and the server closes the connection.
    let (_dir, mut cfg) = util::server_config("objm-capi-hello", "s.sock");
    cfg.access.uids = vec![objmapper_server::Grant {
        id: rustix::process::geteuid().as_raw(),
        perms: objmapper_server::Perms::NONE,
    }];
    let socket = cfg.socket_path.clone();
    let server = objmapper_server::Server::start(cfg).unwrap();
    let (near, theirs) = UnixStream::pair().unwrap();
    near.set_nonblocking(true).unwrap();
    let mut far = UnixStream::connect(&socket).unwrap();
    // SAFETY: the fd is an open socket handed over.
    let conn = unsafe { objm_client_create(theirs.into_raw_fd(), OBJM_PROTO_V1) };
    assert!(!conn.is_null());
    // SAFETY: conn is live.
    assert_eq!(
        unsafe { objm_client_send_hello(conn, 1, PROMISE) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(send_get(conn, b"anything", 3), 0, "{}", last_error());
    // Both frames reach the server together; it answers the HELLO only, and closes.
    let (req, _) = drain(&near);
    far.write_all(&req).unwrap();
    let mut answer = Vec::new();
    far.read_to_end(&mut answer).unwrap();
    assert_eq!(frame_lengths(&answer).len(), 1, "one answer, to the HELLO");
    (&near).write_all(&answer).unwrap();
    near.shutdown(std::net::Shutdown::Write).unwrap();

    let (r, resp) = try_recv(conn);
    assert_eq!((r, resp), (-1, ptr::null_mut()));
    assert_eq!(
        last_status(),
        i32::from(OBJM_STATUS_FORBIDDEN),
        "{}",
        last_error()
    );
    let err = last_error();
    assert!(
        err.starts_with("the server refused the HELLO: FORBIDDEN: "),
        "{err}"
    );
    assert!(err.contains("destroy it"), "{err}");
    // Every later call says the same.
    assert_eq!(session(conn).0, -1);
    assert_eq!(last_status(), i32::from(OBJM_STATUS_FORBIDDEN));
    assert_eq!(last_error(), err);
    assert_eq!(send_get(conn, b"anything", 4), -1);
    assert_eq!(last_error(), err);
    // SAFETY: conn is live and not used afterwards.
    unsafe { objm_client_destroy(conn) };
    server.shutdown().unwrap();
}

#[test]
fn a_hello_answer_that_never_comes_is_a_failure() {
    let server = TestServer::start();
    let (relay, conn) = Relay::new(&server);
    // SAFETY: conn is live.
    assert_eq!(unsafe { objm_client_send_hello(conn, 1, PROMISE) }, 0);
    assert_eq!(send_get(conn, b"k", 1), 0);
    // The peer reads the requests and goes away without answering.
    let _ = drain(&relay.near);
    drop(relay);
    let (r, _) = try_recv(conn);
    assert_eq!(r, -1);
    assert_eq!(last_status(), OBJM_STATUS_LOCAL);
    let err = last_error();
    assert!(err.starts_with("the HELLO got no valid answer: "), "{err}");
    assert!(err.contains("closed"), "{err}");
    // SAFETY: conn is live and not used afterwards.
    unsafe { objm_client_destroy(conn) };
}

#[test]
fn a_wrong_token_is_refused_when_the_answer_is_read() {
    let (_dir, mut cfg) = util::server_config("objm-capi-hello-tcp", "s.sock");
    cfg.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    let token = b"the-right-token-1234";
    cfg.tcp_token = Some(objmapper_server::Token::new(token).unwrap());
    let server = objmapper_server::Server::start(cfg).unwrap();
    let addr = server.tcp_addr().unwrap();
    for (t, ok) in [(&token[..], true), (&b"a-wrong-token-of-length"[..], false)] {
        let fd = std::net::TcpStream::connect(addr).unwrap().into_raw_fd();
        // SAFETY: fd is an open socket handed over.
        let conn = unsafe { objm_client_create(fd, OBJM_PROTO_V1) };
        assert!(!conn.is_null(), "{}", last_error());
        // SAFETY: conn is live; t is valid for its length.
        let r = unsafe { objm_client_send_hello_token(conn, 1, 0, t.as_ptr().cast(), t.len()) };
        assert_eq!(r, 0, "{}", last_error());
        let mut ping = blank();
        ping.op = OBJM_OP_PING;
        // SAFETY: conn is live.
        assert_eq!(
            unsafe { objm_client_send_request(conn, &ping) },
            0,
            "{}",
            last_error()
        );
        let mut resp = ptr::null_mut();
        // SAFETY: conn is live; resp is writable.
        let r = unsafe { objm_client_recv_response(conn, &mut resp) };
        if ok {
            assert_eq!(r, 0, "{}", last_error());
            // SAFETY: resp is live and freed once.
            unsafe { objm_response_free(resp) };
            assert_eq!(session(conn).1.version, 2);
        } else {
            assert_eq!(r, -1);
            assert_eq!(last_status(), i32::from(OBJM_STATUS_FORBIDDEN));
            assert!(
                last_error().contains("refused the HELLO: FORBIDDEN"),
                "{}",
                last_error()
            );
            assert!(last_error().contains("wrong token"), "{}", last_error());
        }
        // SAFETY: conn is live and not used afterwards.
        unsafe { objm_client_destroy(conn) };
    }
    server.shutdown().unwrap();
}

#[test]
fn hellos_that_cannot_be_sent_are_refused_locally() {
    let server = TestServer::start();
    let expect_fail = |r: i32, what: &str| {
        assert_eq!(r, -1, "{what}");
        assert_eq!(last_status(), OBJM_STATUS_LOCAL, "{what}");
        assert!(last_error().contains(what), "{what}: {}", last_error());
    };
    // SAFETY (whole block): every connection passed is NULL or live; every pointer is
    // valid for the length given, or NULL where the test says so.
    unsafe {
        expect_fail(
            objm_client_send_hello(ptr::null_mut(), 1, 0),
            "conn is NULL",
        );
        let conn = open_v1(&server);
        expect_fail(
            objm_client_send_hello(conn, 0, PROMISE),
            "pipeline_depth must be at least 1",
        );
        let long = [b'x'; 257];
        expect_fail(
            objm_client_send_hello_token(conn, 1, 0, long.as_ptr().cast(), long.len()),
            "the token is 257 bytes; HELLO carries at most 256",
        );
        expect_fail(
            objm_client_send_hello_token(conn, 1, 0, ptr::null(), 4),
            "token is NULL",
        );
        expect_fail(
            objm_client_session(conn, ptr::null_mut()),
            "granted is NULL",
        );
        expect_fail(
            objm_client_session(ptr::null_mut(), &mut objm_hello_t::default()),
            "conn is NULL",
        );
        // Nothing was sent by those: the connection still takes a HELLO.
        assert_eq!(
            objm_client_send_hello(conn, 1, PROMISE),
            0,
            "{}",
            last_error()
        );
        expect_fail(
            objm_client_send_hello(conn, 1, PROMISE),
            "a HELLO was already sent",
        );
        expect_fail(
            objm_client_hello(conn, 1, PROMISE, ptr::null_mut()),
            "a HELLO was already sent",
        );
        // With only the HELLO out, there is no reply to receive.
        let mut resp = ptr::null_mut();
        expect_fail(
            objm_client_try_recv_response(conn, &mut resp),
            "no request is outstanding",
        );
        // It still works afterwards.
        assert_eq!(objm_ping(conn), 0, "{}", last_error());
        assert_eq!(session(conn).1.capabilities, PROMISE);
        objm_client_destroy(conn);

        // Not the first request.
        let conn = open_v1(&server);
        assert_eq!(objm_ping(conn), 0);
        expect_fail(
            objm_client_send_hello(conn, 1, PROMISE),
            "HELLO must be the first request",
        );
        objm_client_destroy(conn);
        let conn = open_v1(&server);
        let mut ping = blank();
        ping.op = OBJM_OP_PING;
        assert_eq!(objm_client_send_request(conn, &ping), 0);
        expect_fail(
            objm_client_send_hello(conn, 1, PROMISE),
            "a HELLO must be a connection's first",
        );
        objm_client_destroy(conn);
        // A connection that already has its V2 session.
        let path = c_path(&server.socket());
        let conn = objm_client_open(path.as_ptr(), OBJM_PROTO_V2);
        assert!(!conn.is_null());
        expect_fail(
            objm_client_send_hello(conn, 1, PROMISE),
            "already has a V2 session",
        );
        objm_client_destroy(conn);
        // A closed one.
        let conn = open_v1(&server);
        objm_client_close(conn);
        expect_fail(
            objm_client_send_hello(conn, 1, PROMISE),
            "closed by objm_client_close()",
        );
        objm_client_destroy(conn);
    }
}
