//! `objm_client_try_recv_response()` and `objm_client_socket()`, for event loops (the
//! nginx module): a reply not there yet is 1 at once, never a wait; a reply that arrives
//! in pieces is assembled across calls; the socket is the one to poll; failures are -1.
// Calls the C API's functions on raw pointers and descriptors, as a C program would.
#![allow(unsafe_code)]

mod util;

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::ptr;
use std::time::{Duration, Instant};

use objmapper::*;
use util::TestServer;

fn last_error() -> String {
    // SAFETY: objm_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(objm_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A request with every field 0 or NULL, as the header asks callers to start from.
fn blank() -> objm_request_t {
    // SAFETY: objm_request_t holds only integers and pointers, for which all-zero bytes
    // are valid values (0 and NULL).
    unsafe { std::mem::zeroed() }
}

fn poll_readable(fd: i32, ms: i32) -> bool {
    let mut p = [rustix::event::PollFd::from_borrowed_fd(
        // SAFETY: fd is the live socket of a connection this test holds.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::event::Timespec {
        tv_sec: (ms / 1000).into(),
        tv_nsec: ((ms % 1000) * 1_000_000).into(),
    };
    rustix::event::poll(&mut p, Some(&t)).unwrap() == 1
}

/// Sends `req` and takes its reply with try_recv + poll, as an event loop would.
fn exchange(conn: *mut objm_connection_t, req: &objm_request_t) -> *mut objm_response_t {
    // SAFETY: conn is live; req's pointers are valid for the call.
    assert_eq!(
        unsafe { objm_client_send_request(conn, req) },
        0,
        "{}",
        last_error()
    );
    // SAFETY: conn is live.
    let fd = unsafe { objm_client_socket(conn) };
    assert!(fd >= 0);
    loop {
        let mut resp = ptr::null_mut();
        // SAFETY: conn is live; resp is writable.
        match unsafe { objm_client_try_recv_response(conn, &mut resp) } {
            0 => return resp,
            1 => {
                assert!(resp.is_null());
                assert!(poll_readable(fd, 5000), "no reply within 5 s");
            }
            r => panic!("try_recv: {r}: {}", last_error()),
        }
    }
}

#[test]
fn try_recv_against_a_real_server() {
    let server = TestServer::start();
    let path = std::ffi::CString::new(server.socket().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let conn = unsafe { objm_client_open(path.as_ptr(), OBJM_PROTO_V1) };
    assert!(!conn.is_null(), "{}", last_error());

    // Nothing outstanding: a failure, not a wait.
    let mut resp = ptr::null_mut();
    // SAFETY: conn is live; resp is writable.
    assert_eq!(
        unsafe { objm_client_try_recv_response(conn, &mut resp) },
        -1
    );
    assert!(
        last_error().contains("no request is outstanding"),
        "{}",
        last_error()
    );

    let key = b"nb/key";
    let get = objm_request_t {
        op: OBJM_OP_GET,
        mode: OBJM_MODE_FDPASS,
        uri: key.as_ptr().cast(),
        uri_len: key.len(),
        ..blank()
    };
    let r = exchange(conn, &get);
    // SAFETY: r is a live response.
    assert_eq!(unsafe { (*r).status }, OBJM_STATUS_NOT_FOUND);
    // SAFETY: r is a live response, freed once.
    unsafe { objm_response_free(r) };

    // An fd-mode PUT, COMMIT, then a GET whose fd arrives through try_recv.
    let put = objm_request_t {
        op: OBJM_OP_PUT,
        mode: OBJM_MODE_FDPASS,
        uri: key.as_ptr().cast(),
        uri_len: key.len(),
        ..blank()
    };
    let r = exchange(conn, &put);
    // SAFETY: r is a live response.
    let (status, handle) = unsafe { ((*r).status, (*r).handle) };
    assert_eq!(status, OBJM_STATUS_OK);
    // SAFETY: as above; the fd is ours after take.
    let fd = unsafe { objm_response_take_fd(r) };
    // SAFETY: fd is a writable staging fd we own.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(b"hello").unwrap();
    drop(f);
    // SAFETY: r is a live response, freed once.
    unsafe { objm_response_free(r) };
    let commit = objm_request_t {
        op: OBJM_OP_COMMIT,
        handle,
        length: 5,
        ..blank()
    };
    let r = exchange(conn, &commit);
    // SAFETY: r is a live response.
    assert_eq!(unsafe { (*r).status }, OBJM_STATUS_OK);
    // SAFETY: freed once.
    unsafe { objm_response_free(r) };
    let r = exchange(conn, &get);
    // SAFETY: r is a live response.
    let (status, length, fd) = unsafe { ((*r).status, (*r).length, objm_response_take_fd(r)) };
    assert_eq!((status, length), (OBJM_STATUS_OK, 5));
    let mut got = String::new();
    // SAFETY: fd is a read-only object fd we own.
    unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, "hello");
    // SAFETY: freed once; conn destroyed once.
    unsafe {
        objm_response_free(r);
        objm_client_destroy(conn);
    }
    // SAFETY: NULL is refused.
    assert_eq!(unsafe { objm_client_socket(ptr::null_mut()) }, -1);
}

/// A "server" that answers when the test says so, a byte at a time: try_recv never
/// waits, returns 1 until the whole reply is there, then 0; a closed peer is -1.
#[test]
fn try_recv_never_waits_and_assembles_a_split_reply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    // SAFETY: a connected Unix socket we give up.
    let conn = unsafe { objm_client_create(client.into_raw_fd(), OBJM_PROTO_V1) };
    assert!(!conn.is_null(), "{}", last_error());

    let key = b"k";
    let req = objm_request_t {
        op: OBJM_OP_DELETE,
        uri: key.as_ptr().cast(),
        uri_len: key.len(),
        ..blank()
    };
    // SAFETY: conn is live; req is valid.
    assert_eq!(unsafe { objm_client_send_request(conn, &req) }, 0);
    let id = read_request_id(&mut peer);

    let t = Instant::now();
    let mut resp = ptr::null_mut();
    // SAFETY: conn is live; resp is writable.
    assert_eq!(unsafe { objm_client_try_recv_response(conn, &mut resp) }, 1);
    assert!(t.elapsed() < Duration::from_millis(200), "try_recv waited");

    // The V1 NOT_FOUND reply to that DELETE (docs/PROTOCOL.md: version 1, status 1,
    // no message, no metadata), sent a byte at a time.
    let reply = objmapper_reply_not_found(id);
    for (i, b) in reply.iter().enumerate() {
        peer.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        // SAFETY: as above.
        let r = unsafe { objm_client_try_recv_response(conn, &mut resp) };
        if i + 1 < reply.len() {
            assert_eq!(r, 1, "byte {i}: {}", last_error());
        } else {
            assert_eq!(r, 0, "{}", last_error());
        }
    }
    // SAFETY: resp is a live response.
    assert_eq!(unsafe { (*resp).status }, OBJM_STATUS_NOT_FOUND);
    // SAFETY: freed once.
    unsafe { objm_response_free(resp) };

    // The peer goes away with a request outstanding: -1, with a reason.
    // SAFETY: as above.
    assert_eq!(unsafe { objm_client_send_request(conn, &req) }, 0);
    drop(peer);
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: as above.
    assert_eq!(
        unsafe { objm_client_try_recv_response(conn, &mut resp) },
        -1
    );
    assert!(resp.is_null());
    // SAFETY: destroyed once.
    unsafe { objm_client_destroy(conn) };
}

/// Reads one whole request from the peer's side and returns its id.
fn read_request_id(peer: &mut UnixStream) -> u32 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        peer.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
        if let Ok(objmapper_proto::Decoded::Complete(r, _)) = objmapper_proto::decode_request(&buf)
        {
            return r.header.request_id;
        }
    }
}

/// The bytes of a V1 reply with status NOT_FOUND to request `id` (proto's own encoder).
fn objmapper_reply_not_found(id: u32) -> Vec<u8> {
    let h = objmapper_proto::ResponseHeader::new(
        objmapper_proto::Version::V1,
        objmapper_proto::Status::NotFound,
        id,
    );
    let mut out = Vec::new();
    objmapper_proto::encode_response(&h, "", b"", &mut out);
    out
}
