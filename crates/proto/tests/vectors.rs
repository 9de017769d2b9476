//! Decodes the hex test vectors straight out of docs/PROTOCOL.md and re-encodes them, so
//! the normative document and the code cannot disagree.

use objmapper_proto::*;
use objmapper_testkit::protocol_vector as vector;

fn request(bytes: &[u8]) -> (Request<'_>, usize) {
    match decode_request(bytes).expect("vector decodes") {
        Decoded::Complete(r, n) => (r, n),
        Decoded::Incomplete(n) => panic!("vector incomplete, needs {n}"),
    }
}

fn response(bytes: &[u8]) -> (Response<'_>, usize) {
    match decode_response(bytes).expect("vector decodes") {
        Decoded::Complete(r, n) => (r, n),
        Decoded::Incomplete(n) => panic!("vector incomplete, needs {n}"),
    }
}

fn reencode_request(r: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&r.header, r.key, r.meta, &mut out);
    out
}

fn reencode_response(r: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(
        &r.header,
        std::str::from_utf8(r.message).unwrap(),
        r.meta,
        &mut out,
    );
    out
}

#[test]
fn ping_request() {
    let b = vector("ping-request");
    let (r, n) = request(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.version, Version::V1);
    assert_eq!(r.header.op, Op::Ping);
    assert_eq!(r.header.mode, Mode::None);
    assert_eq!(r.header.request_id, 1);
    assert!(r.key.is_empty() && r.meta.is_empty());
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b);
}

#[test]
fn get_fd_request() {
    let b = vector("get-fd-request");
    let (r, n) = request(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.op, Op::Get);
    assert_eq!(r.header.mode, Mode::Fd);
    assert_eq!(r.header.request_id, 7);
    assert_eq!(r.key, b"/a");
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b);
}

#[test]
fn put_copy_request() {
    let b = vector("put-copy-request");
    let (r, n) = request(&b);
    assert_eq!(r.header.op, Op::Put);
    assert_eq!(r.header.mode, Mode::Copy);
    assert_eq!(r.header.request_id, 2);
    assert_eq!(r.key, b"k");
    assert_eq!(r.header.body_len(), 5);
    assert_eq!(&b[n..], b"hello");
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!(m.content_type.as_deref(), Some("text/plain"));
    assert_eq!(m.custom, vec![("lang".to_string(), b"en".to_vec())]);
    assert!(!m.has_server_fields());
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b[..n]);
}

#[test]
fn commit_request() {
    let b = vector("commit-request");
    let (r, n) = request(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.op, Op::Commit);
    assert_eq!(r.header.handle, 1);
    assert_eq!(r.header.length, 5);
    assert!(r.header.has_flag(req_flags::DURABLE));
    assert_eq!(r.header.body_len(), 0);
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b);
}

#[test]
fn get_fd_response() {
    let b = vector("get-fd-response");
    let (r, n) = response(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.status, Status::Ok);
    assert_eq!(r.header.mode, Mode::Fd);
    assert!(r.header.fd_attached());
    assert!(!r.header.has_body());
    assert_eq!(r.header.length, 5);
    assert_eq!(r.header.request_id, 7);
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!((m.size, m.version), (Some(5), Some(42)));
    assert_eq!(reencode_response(&r), b);
}

#[test]
fn get_copy_response() {
    let b = vector("get-copy-response");
    let (r, n) = response(&b);
    assert!(r.header.has_body() && !r.header.fd_attached());
    assert_eq!(r.header.body_len(), 5);
    assert_eq!(&b[n..], b"hello");
    assert_eq!(reencode_response(&r), b[..n]);
}

#[test]
fn not_found_response() {
    let b = vector("not-found-response");
    let (r, n) = response(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.status, Status::NotFound);
    assert_eq!(r.header.request_id, 9);
    assert_eq!(r.message_text(), "no object under that key");
    assert_eq!(reencode_response(&r), b);
}

#[test]
fn hello_with_a_token() {
    let b = vector("hello-token-request");
    let (r, n) = request(&b);
    assert_eq!(r.header.op, Op::Hello);
    assert_eq!(r.header.request_id, 1);
    assert_eq!(r.header.body_len(), 32);
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(n + 32, b.len());
    let h = Hello::decode(&b[n..n + hello::HELLO_LEN]).unwrap();
    assert_eq!(
        h,
        Hello {
            version: 2,
            capabilities: hello::caps::PIPELINE | hello::caps::OUT_OF_ORDER,
            depth: 8
        }
    );
    assert_eq!(&b[n + hello::HELLO_LEN..], b"0123456789abcdef");
    let mut again = reencode_request(&r);
    again.extend_from_slice(&h.encode());
    again.extend_from_slice(b"0123456789abcdef");
    assert_eq!(again, b);
}

#[test]
fn hello_request_and_response() {
    let b = vector("hello-request");
    let (r, n) = request(&b);
    assert_eq!(r.header.version, Version::V2);
    assert_eq!(r.header.op, Op::Hello);
    assert_eq!(r.header.body_len(), 16);
    assert_eq!(validate_request(&r), Ok(()));
    let h = Hello::decode(&b[n..]).unwrap();
    assert_eq!(
        h,
        Hello {
            version: 2,
            capabilities: hello::caps::KNOWN,
            depth: 64
        }
    );
    assert_eq!(h.encode().as_slice(), &b[n..]);

    let b = vector("hello-response");
    let (r, n) = response(&b);
    assert_eq!(r.header.version, Version::V2);
    assert!(r.header.has_body());
    let h = Hello::decode(&b[n..]).unwrap();
    assert_eq!(h.capabilities, hello::caps::FD_PASSING);
    assert_eq!(h.depth, 1);
}

#[test]
fn hello_positional_reads_request_and_response() {
    let b = vector("hello-positional-request");
    let (r, n) = request(&b);
    assert_eq!((r.header.op, r.header.request_id), (Op::Hello, 2));
    assert_eq!(validate_request(&r), Ok(()));
    let h = Hello::decode(&b[n..]).unwrap();
    let promise = hello::caps::FD_PASSING | hello::caps::POSITIONAL_READS;
    assert_eq!(
        h,
        Hello {
            version: 2,
            capabilities: promise,
            depth: 1
        }
    );
    assert_eq!(hello::caps::POSITIONAL_READS, 0x8, "bit 3");
    assert_eq!(hello::caps::KNOWN & hello::caps::POSITIONAL_READS, 0);
    assert_eq!(hello::caps::DEFINED, 0xf);
    let mut again = reencode_request(&r);
    again.extend_from_slice(&h.encode());
    assert_eq!(again, b);

    let b = vector("hello-positional-response");
    let (r, n) = response(&b);
    assert_eq!(r.header.request_id, 2);
    let g = Hello::decode(&b[n..]).unwrap();
    assert_eq!((g.version, g.capabilities, g.depth), (2, promise, 1));
}

#[test]
fn put_ephemeral_request() {
    let b = vector("put-ephemeral-request");
    let (r, n) = request(&b);
    assert_eq!(r.header.op, Op::Put);
    assert_eq!(r.header.mode, Mode::Copy);
    assert_eq!(r.header.request_id, 4);
    assert_eq!(r.header.flags, req_flags::EPHEMERAL | req_flags::PIN);
    assert!(!r.header.has_flag(req_flags::DURABLE));
    assert_eq!(r.key, b"k");
    assert_eq!(&b[n..], b"hi");
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!(
        m,
        Metadata {
            expires_at: Some(1_900_000_000),
            ..Default::default()
        }
    );
    assert!(!m.has_server_fields());
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b[..n]);
}

#[test]
fn pin_request() {
    let b = vector("pin-request");
    let (r, n) = request(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.op, Op::Pin);
    assert_eq!(r.header.mode, Mode::None);
    assert_eq!(r.header.request_id, 5);
    assert_eq!(r.key, b"k");
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b);
}

#[test]
fn head_tier_response() {
    let b = vector("head-tier-response");
    let (r, n) = response(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.status, Status::Ok);
    assert_eq!(r.header.request_id, 6);
    assert_eq!(r.header.length, 2);
    assert!(!r.header.has_body() && !r.header.fd_attached());
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!(
        m,
        Metadata {
            size: Some(2),
            version: Some(43),
            expires_at: Some(1_900_000_000),
            tier: Some(Tier::Memory),
            // pinned|ephemeral: an ephemeral object is never dirty (what a server sends).
            state: Some(ObjectState::new(true, true, false)),
            ..Default::default()
        }
    );
    let st = m.state.unwrap();
    assert!(st.pinned() && st.ephemeral() && !st.dirty());
    assert_eq!(m.to_bytes().unwrap(), r.meta, "encoded in tag order");
    assert_eq!(reencode_response(&r), b);
}

#[test]
fn every_prefix_of_every_vector_is_incomplete_not_an_error() {
    for name in [
        "ping-request",
        "get-fd-request",
        "put-copy-request",
        "commit-request",
        "put-ephemeral-request",
        "pin-request",
    ] {
        let b = vector(name);
        let full = match decode_request(&b).unwrap() {
            Decoded::Complete(_, n) => n,
            Decoded::Incomplete(_) => unreachable!(),
        };
        for cut in 0..full {
            match decode_request(&b[..cut]) {
                Ok(Decoded::Incomplete(need)) => assert!(need > cut, "{name} cut {cut}"),
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn ban_request_and_response() {
    let b = vector("ban-request");
    let (r, n) = request(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.op, Op::Ban);
    assert_eq!(r.header.op.as_u8(), 11);
    assert_eq!(r.header.mode, Mode::None);
    assert_eq!(r.header.request_id, 15);
    assert_eq!(r.key, br#"key ^ "a/""#);
    assert_eq!(r.header.body_len(), 0);
    assert_eq!(validate_request(&r), Ok(()));
    assert_eq!(reencode_request(&r), b);

    // BAN takes an expression, nothing else.
    let mut h = r.header;
    h.flags = req_flags::DURABLE;
    let bad = Request { header: h, ..r };
    assert_eq!(validate_request(&bad).unwrap_err().0, Status::BadRequest);
    let empty = Request { key: b"", ..r };
    assert!(validate_request(&empty)
        .unwrap_err()
        .1
        .contains("ban expression"));

    let b = vector("ban-response");
    let (r, n) = response(&b);
    assert_eq!(n, b.len());
    assert_eq!(r.header.status, Status::Ok);
    assert_eq!(r.header.request_id, 15);
    let m = Metadata::decode(r.meta).unwrap();
    assert_eq!(m.version, Some(1_900_000_000_000_000_000));
    assert_eq!(m.mtime_ns, m.version);
    assert_eq!(reencode_response(&r), b);
}
