//! The hex vectors docs/PROTOCOL.md gives for ranges, conditional writes, splice, auto and
//! V2, read straight out of the document: each decodes to what its caption says, and the
//! real server, sent the request vectors, answers with the response vectors.

mod util;

use objmapper_proto::*;
use objmapper_testkit::protocol_vector as vector;
use util::wire::Wire;
use util::*;

fn request(bytes: &[u8]) -> (Request<'_>, &[u8]) {
    match decode_request(bytes).expect("vector decodes") {
        Decoded::Complete(r, n) => (r, &bytes[n..]),
        Decoded::Incomplete(n) => panic!("vector incomplete, needs {n}"),
    }
}

fn response(bytes: &[u8]) -> (Response<'_>, &[u8]) {
    match decode_response(bytes).expect("vector decodes") {
        Decoded::Complete(r, n) => (r, &bytes[n..]),
        Decoded::Incomplete(n) => panic!("vector incomplete, needs {n}"),
    }
}

/// Everything but the metadata length: the server sends the object's metadata, which some
/// vectors leave out.
fn same_header(got: &ResponseHeader, want: &ResponseHeader) {
    let strip = |h: &ResponseHeader| ResponseHeader { meta_len: 0, ..*h };
    assert_eq!(strip(got), strip(want));
}

#[test]
fn the_vectors_decode_as_their_captions_say() {
    let b = vector("get-range-request");
    let (r, body) = request(&b);
    assert!(body.is_empty());
    assert_eq!((r.header.op, r.header.mode), (Op::Get, Mode::Splice));
    assert_eq!((r.header.offset, r.header.length), (2, 3));
    assert_eq!((r.key, r.header.request_id), (&b"k"[..], 10));
    assert_eq!(validate_request(&r), Ok(()));

    let b = vector("get-range-splice-response");
    let (r, body) = response(&b);
    assert_eq!(
        (r.header.mode, r.header.flags),
        (Mode::Splice, resp_flags::BODY)
    );
    assert_eq!(
        (r.header.offset, r.header.length, body),
        (2, 3, &b"234"[..])
    );

    let b = vector("get-range-fd-response");
    let (r, body) = response(&b);
    assert!(body.is_empty() && r.header.fd_attached());
    assert_eq!((r.header.offset, r.header.length), (2, 3));
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!((m.size, m.version), (Some(10), Some(42)));

    let b = vector("range-not-satisfiable-response");
    let (r, _) = response(&b);
    assert_eq!(r.header.status, Status::RangeNotSatisfiable);
    assert!(r.message_text().contains("10 bytes"));

    let b = vector("put-if-version-request");
    let (r, body) = request(&b);
    assert_eq!((r.header.op, r.header.mode), (Op::Put, Mode::Copy));
    assert_eq!(
        (r.header.flags, r.header.offset),
        (req_flags::IF_VERSION, 42)
    );
    assert_eq!(body, b"new");
    assert_eq!(validate_request(&r), Ok(()));

    let b = vector("precondition-failed-response");
    let (r, _) = response(&b);
    assert_eq!(
        (r.header.status, r.header.request_id),
        (Status::PreconditionFailed, 12)
    );

    let b = vector("put-if-absent-request");
    let (r, body) = request(&b);
    assert_eq!(
        (r.header.mode, r.header.flags),
        (Mode::Splice, req_flags::IF_ABSENT)
    );
    assert_eq!(body, b"hi");
    assert_eq!(validate_request(&r), Ok(()));

    let b = vector("delete-if-version-request");
    let (r, _) = request(&b);
    assert_eq!(r.header.op, Op::Delete);
    assert_eq!(r.header.flags, req_flags::IF_VERSION | req_flags::DURABLE);
    assert_eq!(r.header.offset, 42);
    assert_eq!(validate_request(&r), Ok(()));

    for (name, caps) in [("hello-pipeline-response", 7), ("hello-tcp-response", 3)] {
        let b = vector(name);
        let (r, body) = response(&b);
        assert_eq!(r.header.version, Version::V2);
        let h = Hello::decode(body).unwrap();
        assert_eq!((h.version, h.capabilities, h.depth), (2, caps, 64));
    }

    let b = vector("get-ordered-request");
    let (r, _) = request(&b);
    assert_eq!(r.header.version, Version::V2);
    assert_eq!(
        (r.header.mode, r.header.flags),
        (Mode::Auto, req_flags::ORDERED)
    );
    assert_eq!(validate_request(&r), Ok(()));

    let b = vector("get-auto-copy-response");
    let (r, body) = response(&b);
    assert_eq!((r.header.version, r.header.mode), (Version::V2, Mode::Copy));
    assert_eq!(body, b"0123456789");
}

#[test]
fn the_server_answers_the_request_vectors_with_the_response_vectors() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let mut w = Wire::unix(&ts.socket());

    // IF_ABSENT on a fresh key publishes.
    w.send_bytes(&vector("put-if-absent-request"));
    let r = w.recv();
    assert_status(&r, Status::Ok);
    assert_eq!(r.header.request_id, 13);
    // Again: the key exists now.
    w.send_bytes(&vector("put-if-absent-request"));
    assert_status(&w.recv(), Status::PreconditionFailed);

    // The 10-byte object of the range vectors, at version 43 if versions count up from 1
    // as they do in a fresh store.
    let mut version = 0;
    while version < 43 {
        let r = w.put(b"k", Mode::Copy, b"0123456789");
        assert_status(&r, Status::Ok);
        version = r.meta.version.unwrap();
    }

    w.send_bytes(&vector("get-range-request"));
    let r = w.recv();
    let want = vector("get-range-splice-response");
    let (want, body) = response(&want);
    same_header(&r.header, &want.header);
    assert_eq!(r.body, body);
    assert_eq!(r.meta.size, Some(10));

    let mut fd_req = vector("get-range-request");
    fd_req[2] = Mode::Fd.as_u8();
    w.send_bytes(&fd_req);
    let r = w.recv();
    let want = vector("get-range-fd-response");
    let (want, _) = response(&want);
    same_header(&r.header, &want.header);
    assert_eq!(r.meta.size, Some(10));
    assert_eq!(read_fd(r.fd.as_ref().unwrap()), b"0123456789");

    // A range starting past the end: the reply is the vector, byte for byte.
    w.send(Op::Get, Mode::Copy, b"k", b"", |h| {
        h.request_id = 11;
        h.offset = 12;
        h.length = 5;
    });
    let r = w.recv();
    let mut got = Vec::new();
    encode_response(&r.header, &r.message, &[], &mut got);
    assert_eq!(got, vector("range-not-satisfiable-response"));

    // IF_VERSION 42 against version 43.
    for (name, id) in [
        ("put-if-version-request", 12),
        ("delete-if-version-request", 14),
    ] {
        w.send_bytes(&vector(name));
        let r = w.recv();
        assert_status(&r, Status::PreconditionFailed);
        assert_eq!(r.header.request_id, id);
        if version == 43 && id == 12 {
            let mut got = Vec::new();
            encode_response(&r.header, &r.message, &[], &mut got);
            assert_eq!(got, vector("precondition-failed-response"));
        } else {
            assert!(r
                .message
                .contains(&format!("current version is {version}, not 42")));
        }
    }
    assert_eq!(w.get(b"k", Mode::Copy, 0, 0).body, b"0123456789");

    // HELLO on a Unix socket and over TCP: byte for byte.
    let mut u = Wire::unix(&ts.socket());
    let mut t = Wire::tcp(ts.server().tcp_addr().unwrap());
    for (c, name) in [
        (&mut u, "hello-pipeline-response"),
        (&mut t, "hello-tcp-response"),
    ] {
        c.send_bytes(&vector("hello-request"));
        let r = c.recv();
        let mut got = Vec::new();
        encode_response(&r.header, &r.message, &[], &mut got);
        got.extend_from_slice(&r.body);
        assert_eq!(got, vector(name), "{name}");
        c.version = Version::V2;
        // An ORDERED auto GET of the small object comes back inline.
        c.send_bytes(&vector("get-ordered-request"));
        let r = c.recv();
        let want = vector("get-auto-copy-response");
        let (want, body) = response(&want);
        same_header(&r.header, &want.header);
        assert_eq!(r.body, body);
    }
}

#[test]
fn the_token_vector_opens_a_session_where_a_token_is_required() {
    let ts = TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tcp_token = Some(objmapper_server::Token::new(&b"0123456789abcdef"[..]).unwrap());
    });
    let addr = ts.server().tcp_addr().unwrap();
    let mut t = Wire::tcp(addr);
    t.send_bytes(&vector("hello-token-request"));
    let r = t.recv();
    assert_status(&r, Status::Ok);
    let granted = Hello::decode(&r.body).unwrap();
    assert_eq!(
        granted,
        Hello {
            version: 2,
            capabilities: hello::caps::PIPELINE | hello::caps::OUT_OF_ORDER,
            depth: 8
        }
    );
    // The plain HELLO vector carries no token: refused on this listener.
    let mut t = Wire::tcp(addr);
    t.send_bytes(&vector("hello-request"));
    assert_status(&t.recv(), Status::Forbidden);
}
