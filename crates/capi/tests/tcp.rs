//! The C API over TCP, called from Rust: `objm_client_create` takes a connected TCP
//! socket; fd mode is refused locally with a clear error; the default mode and the
//! convenience calls fall back to inline bytes.
// Calls the C API's functions and reads the strings they return.
#![allow(unsafe_code)]

mod util;

use std::ffi::CStr;
use std::net::TcpStream;
use std::os::fd::IntoRawFd;
use std::ptr;

use objmapper::*;
use objmapper_server::Server;

fn last_error() -> String {
    // SAFETY: objm_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(objm_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A server in a temp dir with a loopback TCP listener that requires `token`, if given.
fn tcp_server(token: Option<&[u8]>) -> (tempfile::TempDir, Server) {
    let (dir, mut cfg) = util::server_config("objm-capi-tcp", "s.sock");
    cfg.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tcp_token = token.map(|t| objmapper_server::Token::new(t).unwrap());
    (dir, Server::start(cfg).unwrap())
}

#[test]
fn tcp_connections_work_inline_and_refuse_fd_mode() {
    let (_dir, server) = tcp_server(None);
    let addr = server.tcp_addr().unwrap();

    for version in [OBJM_PROTO_V1, OBJM_PROTO_V2] {
        let fd = TcpStream::connect(addr).unwrap().into_raw_fd();
        // SAFETY: `fd` is an open socket handed over; the pointers below are valid for
        // the lengths given, and every response is freed once.
        unsafe {
            let conn = objm_client_create(fd, version);
            assert!(!conn.is_null(), "{}", last_error());
            let key = b"/tcp/object";
            let body = b"over tcp";
            assert_eq!(
                objm_put(
                    conn,
                    key.as_ptr().cast(),
                    key.len(),
                    body.as_ptr().cast(),
                    8,
                    0
                ),
                0,
                "{}",
                last_error()
            );
            let mut size = 0u64;
            assert_eq!(
                objm_get_fd(conn, key.as_ptr().cast(), key.len(), &mut size),
                -1
            );
            assert!(
                last_error().contains("fd mode is not available over TCP"),
                "{}",
                last_error()
            );
            assert_eq!(objm_last_status(), OBJM_STATUS_LOCAL);

            let mut buf: *mut std::ffi::c_void = ptr::null_mut();
            let mut len = 0usize;
            assert_eq!(
                objm_get_copy(conn, key.as_ptr().cast(), key.len(), &mut buf, &mut len),
                0,
                "{}",
                last_error()
            );
            assert_eq!(std::slice::from_raw_parts(buf.cast::<u8>(), len), body);
            objm_buffer_free(buf);

            // A request with the default mode gets the bytes inline.
            let req = objm_request_t {
                id: 5,
                flags: 0,
                mode: OBJM_MODE_DEFAULT,
                op: OBJM_OP_GET,
                uri: key.as_ptr().cast(),
                uri_len: key.len(),
                offset: 0,
                length: 0,
                data: ptr::null(),
                data_len: 0,
                handle: 0,
                if_version: 0,
                expires_at: 0,
                content_type: ptr::null(),
                custom: ptr::null(),
                custom_count: 0,
            };
            assert_eq!(objm_client_send_request(conn, &req), 0);
            let mut resp = ptr::null_mut();
            assert_eq!(objm_client_recv_response(conn, &mut resp), 0);
            let r = &*resp;
            assert_eq!(
                (r.id, r.status, r.mode, r.fd),
                (5, OBJM_STATUS_OK, OBJM_MODE_COPY, -1)
            );
            assert_eq!(
                std::slice::from_raw_parts(r.data.cast::<u8>(), r.data_len),
                body
            );
            objm_response_free(resp);

            // fd mode in a request: refused before anything is sent.
            let fd_req = objm_request_t {
                mode: OBJM_MODE_FDPASS,
                ..req
            };
            assert_eq!(objm_client_send_request(conn, &fd_req), -1);
            assert_eq!(objm_client_outstanding(conn), 0);
            assert_eq!(objm_ping(conn), 0, "still usable: {}", last_error());
            objm_client_destroy(conn);
        }
    }
    server.shutdown().unwrap();
}

#[test]
fn a_listener_that_requires_a_token_admits_a_hello_that_carries_it() {
    let token = b"a-token-of-enough-length";
    let (_dir, server) = tcp_server(Some(token));
    let addr = server.tcp_addr().unwrap();

    let hello = |t: &[u8]| {
        let fd = TcpStream::connect(addr).unwrap().into_raw_fd();
        // SAFETY: `fd` is handed over; `t` is readable for its length; the connection
        // is destroyed once.
        unsafe {
            let conn = objm_client_create(fd, OBJM_PROTO_V1);
            assert!(!conn.is_null(), "{}", last_error());
            let mut granted = std::mem::zeroed::<objm_hello_t>();
            let r = objm_client_hello_token(
                conn,
                8,
                OBJM_CAP_OUT_OF_ORDER,
                t.as_ptr().cast(),
                t.len(),
                &mut granted,
            );
            let outcome = (r, objm_last_status(), last_error(), granted.depth);
            let pinged = r == 0 && objm_ping(conn) == 0;
            objm_client_destroy(conn);
            (outcome, pinged)
        }
    };
    let ((r, _, err, depth), pinged) = hello(token);
    assert_eq!(r, 0, "{err}");
    assert_eq!(depth, 8);
    assert!(pinged);
    let ((r, status, err, _), _) = hello(b"not-the-token-at-all");
    assert_eq!(r, -1);
    assert_eq!(status, i32::from(OBJM_STATUS_FORBIDDEN), "{err}");
    assert!(err.contains("wrong token"), "{err}");
    // NULL with a non-zero length is refused locally.
    // SAFETY: the NULL pointer is what is being tested; nothing is read through it.
    unsafe {
        let fd = TcpStream::connect(addr).unwrap().into_raw_fd();
        let conn = objm_client_create(fd, OBJM_PROTO_V1);
        let r = objm_client_hello_token(conn, 1, 0, ptr::null(), 5, ptr::null_mut());
        assert_eq!(r, -1);
        assert!(last_error().contains("token is NULL"), "{}", last_error());
        objm_client_destroy(conn);
    }
    server.shutdown().unwrap();
}
