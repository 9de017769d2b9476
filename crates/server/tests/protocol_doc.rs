//! Where docs/PROTOCOL.md was silent or differed from the server, as found by a client
//! written from the doc alone: session misuse and its statuses, HELLO with the V1 magic,
//! PROTOCOL_ERROR's request id and magic, PUT and COMMIT response fields, handles, size
//! hints, IF_VERSION 0, PUT in auto mode, STATE of an ephemeral object, and the range
//! error text (one for every transport). Each assertion is a sentence of the doc.

mod util;

use objmapper_proto::hello::caps;
use objmapper_proto::*;
use std::time::Duration;
use util::wire::Wire;
use util::*;

const GOOD: Hello = Hello {
    version: 2,
    capabilities: caps::KNOWN,
    depth: 8,
};

fn hello_frame(id: u32, len: u64, body: &[u8], v: Version) -> Vec<u8> {
    let mut h = RequestHeader::new(v, Op::Hello, id);
    h.length = len;
    let mut f = Vec::new();
    encode_request(&h, b"", b"", &mut f);
    f.extend_from_slice(body);
    f
}

/// Whether the server closed the connection (EOF within a moment, nothing more sent).
fn closed(w: &mut Wire) -> bool {
    std::thread::sleep(Duration::from_millis(100));
    let mut b = [0u8; 1];
    for _ in 0..50 {
        match rustix::net::recv(
            &w.sock,
            &mut b,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        ) {
            Ok((0, _)) | Err(rustix::io::Errno::CONNRESET) => return true,
            Ok(_) => return false,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// (status, request id, response magic version, message) of the one reply, and
/// that the connection was closed after it.
fn refused(w: &mut Wire) -> (Status, u32, Version, String) {
    let r = w.recv();
    assert!(
        closed(w),
        "the connection stays open after {:?}",
        r.header.status
    );
    (
        r.header.status,
        r.header.request_id,
        r.header.version,
        r.message,
    )
}

#[test]
fn session_misuse_is_a_protocol_error_with_request_id_0_then_a_close() {
    let ts = TestServer::start();
    // A V2 frame other than HELLO first: answered in V2.
    let mut w = Wire::unix(&ts.socket());
    w.version = Version::V2;
    w.send(Op::Ping, Mode::None, b"", b"", |h| h.request_id = 41);
    let (st, id, v, msg) = refused(&mut w);
    assert_eq!(
        (st, id, v),
        (Status::ProtocolError, 0, Version::V2),
        "{msg}"
    );
    assert!(msg.contains("must open with HELLO"), "{msg}");
    // A second HELLO: answered in V2 (the session's version).
    let mut w = Wire::unix(&ts.socket());
    w.hello(caps::KNOWN, 8);
    w.send_bytes(&hello_frame(42, 16, &GOOD.encode(), Version::V2));
    let (st, id, v, msg) = refused(&mut w);
    assert_eq!(
        (st, id, v),
        (Status::ProtocolError, 0, Version::V2),
        "{msg}"
    );
    assert!(msg.contains("first frame"), "{msg}");
    // A HELLO after V1 traffic: answered in V1.
    let mut w = Wire::unix(&ts.socket());
    assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
    w.send_bytes(&hello_frame(43, 16, &GOOD.encode(), Version::V2));
    let (st, id, v, msg) = refused(&mut w);
    assert_eq!(
        (st, id, v),
        (Status::ProtocolError, 0, Version::V1),
        "{msg}"
    );
    // A V1 frame in a V2 session.
    let mut w = Wire::unix(&ts.socket());
    w.hello(caps::KNOWN, 8);
    w.version = Version::V1;
    w.send(Op::Ping, Mode::None, b"", b"", |h| h.request_id = 44);
    let (st, id, v, msg) = refused(&mut w);
    assert_eq!(
        (st, id, v),
        (Status::ProtocolError, 0, Version::V2),
        "{msg}"
    );
    assert!(msg.contains("cannot be mixed"), "{msg}");
    // A frame that cannot be parsed (an unknown op), in each version: request id 0.
    for v2 in [false, true] {
        let mut w = Wire::unix(&ts.socket());
        if v2 {
            w.hello(caps::KNOWN, 8);
        }
        let (_, mut f) = w.frame(Op::Ping, Mode::None, b"", b"", |h| h.request_id = 45);
        f[1] = 0x63;
        w.send_bytes(&f);
        let (st, id, v, msg) = refused(&mut w);
        let want = if v2 { Version::V2 } else { Version::V1 };
        assert_eq!((st, id, v), (Status::ProtocolError, 0, want), "{msg}");
        assert!(msg.contains("unknown op"), "{msg}");
    }
}

#[test]
fn a_bad_hello_is_refused_and_closes() {
    let ts = TestServer::start();
    // A length outside 16..=272: BAD_REQUEST (with the request's id), then a close.
    let mut w = Wire::unix(&ts.socket());
    let mut body = GOOD.encode().to_vec();
    body.extend_from_slice(&[0u8; 300]);
    w.send_bytes(&hello_frame(9, 316, &body, Version::V2));
    let (st, id, v, msg) = refused(&mut w);
    assert_eq!((st, id, v), (Status::BadRequest, 9, Version::V2), "{msg}");
    // A body without the "OBJM" magic: PROTOCOL_ERROR, then a close.
    let mut w = Wire::unix(&ts.socket());
    let mut body = GOOD.encode();
    body[0] = b'X';
    w.send_bytes(&hello_frame(10, 16, &body, Version::V2));
    let (st, id, _, msg) = refused(&mut w);
    assert_eq!((st, id), (Status::ProtocolError, 10), "{msg}");
    // A reserved byte set: the same.
    let mut w = Wire::unix(&ts.socket());
    let mut body = GOOD.encode();
    body[5] = 1;
    w.send_bytes(&hello_frame(11, 16, &body, Version::V2));
    assert_eq!(refused(&mut w).0, Status::ProtocolError);
}

#[test]
fn a_hello_sent_with_the_v1_magic_opens_a_v2_session() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    w.send_bytes(&hello_frame(7, 16, &GOOD.encode(), Version::V1));
    let r = w.recv();
    assert_status(&r, Status::Ok);
    assert_eq!((r.header.version, r.header.request_id), (Version::V2, 7));
    let g = Hello::decode(&r.body).unwrap();
    assert_eq!((g.version, g.depth), (2, 8));
    w.version = Version::V2;
    let r = w.call(Op::Ping, Mode::None, b"", b"", |_| {});
    assert_status(&r, Status::Ok);
    assert_eq!(r.header.version, Version::V2);
}

#[test]
fn put_and_commit_responses_and_handles() {
    let ts = TestServer::start_with(|c| c.store.max_object_size = 1 << 20);
    let mut w = Wire::unix(&ts.socket());
    // PUT in copy mode: length = the object's size, mode none, no handle, metadata.
    let r = w.put(b"k", Mode::Copy, b"hello");
    assert_status(&r, Status::Ok);
    assert_eq!(
        (r.header.length, r.header.mode, r.header.handle),
        (5, Mode::None, 0)
    );
    assert_eq!(r.meta.size, Some(5));
    assert!(r.meta.version.is_some() && r.meta.checksum.is_some() && r.meta.mtime_ns.is_some());
    // PUT in fd mode: length 0, mode fd, FD_ATTACHED, handles from 1 per connection.
    for conn in 0..2 {
        let mut w = Wire::unix(&ts.socket());
        for want in 1..=2u64 {
            let r = w.call(Op::Put, Mode::Fd, b"k2", b"", |h| h.length = 5);
            assert_status(&r, Status::Ok);
            assert_eq!(r.header.handle, want, "connection {conn}");
            assert_eq!((r.header.length, r.header.mode), (0, Mode::Fd));
            assert!(r.fd.is_some());
            if want == 2 {
                rustix::io::write(r.fd.as_ref().unwrap(), b"world").unwrap();
                // COMMIT: length = the object's size, mode none, the object's metadata.
                let c = w.call(Op::Commit, Mode::None, b"", b"", |h| {
                    h.handle = want;
                    h.length = 5
                });
                assert_status(&c, Status::Ok);
                assert_eq!((c.header.length, c.header.mode), (5, Mode::None));
                assert_eq!(c.meta.size, Some(5));
            }
        }
    }
    // A size hint over max_object_size is refused at the PUT; the connection stays open.
    let mut w = Wire::unix(&ts.socket());
    let r = w.call(Op::Put, Mode::Fd, b"k3", b"", |h| h.length = 2 << 20);
    assert_status(&r, Status::ObjectTooLarge);
    assert!(r.fd.is_none());
    assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
}

#[test]
fn if_version_0_never_holds() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    assert_status(&w.put(b"k", Mode::Copy, b"x"), Status::Ok);
    for key in [&b"k"[..], b"absent"] {
        let r = w.put_with(key, Mode::Copy, b"y", |h| {
            h.flags |= req_flags::IF_VERSION;
            h.offset = 0;
        });
        assert_status(&r, Status::PreconditionFailed);
    }
}

#[test]
fn a_put_in_auto_or_no_mode_has_no_body_on_the_wire() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    // The header announces 5 bytes, but none follow: the next frame comes at once.
    let r = w.call(Op::Put, Mode::Auto, b"k", b"", |h| h.length = 5);
    assert_status(&r, Status::ModeUnsupported);
    assert!(r.message.contains("copy, splice or fd"), "{}", r.message);
    assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
    let r = w.call(Op::Put, Mode::None, b"k", b"", |h| h.length = 5);
    assert_status(&r, Status::BadRequest);
    assert_eq!(r.message, "PUT needs a transfer mode (fd, copy or splice)");
    assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
    let r = w.call(Op::Get, Mode::None, b"k", b"", |_| {});
    assert_eq!(
        r.message,
        "GET needs a transfer mode (fd, copy, splice or auto)"
    );
}

#[test]
fn an_ephemeral_object_is_never_dirty() {
    let ts = TestServer::start();
    let mut w = Wire::unix(&ts.socket());
    let r = w.put_with(b"e", Mode::Copy, b"hi", |h| {
        h.flags |= req_flags::EPHEMERAL | req_flags::PIN
    });
    assert_status(&r, Status::Ok);
    let h = w.head(b"e");
    assert_eq!(h.meta.tier, Some(Tier::Memory));
    assert_eq!(
        h.meta.state.map(|s| s.bits()),
        Some(0x03),
        "pinned|ephemeral, not dirty"
    );
    // A default PUT lands in memory and is dirty until written behind.
    let r = w.put(b"d", Mode::Copy, b"hi");
    assert_eq!(r.meta.state.map(|s| s.bits() & 0x04), Some(0x04));
}
