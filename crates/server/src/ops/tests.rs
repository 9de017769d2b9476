//! The ops layer against a real store in a temp dir, without sockets: what each policy
//! gets for each mode, the checks, the texts, and that a GET is counted once.

use super::*;
use objmapper_proto::{decode_response, Decoded, Metadata, RequestHeader, Version, MAX_KEY_LEN};
use objmapper_store::{PutMeta, PutOptions, StoreConfig};
use std::os::unix::fs::FileExt;

const THRESHOLD: u64 = 64 * 1024;
const INLINE_MAX: u64 = 256 * 1024;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path().join("d"));
    cfg.mem_dir = Some(dir.path().join("m"));
    let store = Store::open(cfg).unwrap();
    (dir, store)
}

fn put(store: &Store, key: &[u8], data: &[u8]) -> Arc<ObjectMeta> {
    let mut s = store.begin_put(key).unwrap();
    s.write_all(data).unwrap();
    s.commit(data.len() as u64, PutMeta::default(), PutOptions::default())
        .unwrap()
}

fn unix() -> Policy {
    Policy {
        transport: Transport::Unix { fd_passing: true },
        share_fds: false,
        auto_fd_threshold: THRESHOLD,
        max_reply: None,
        inline_max: INLINE_MAX,
    }
}

fn tcp() -> Policy {
    Policy {
        transport: Transport::Tcp,
        ..unix()
    }
}

fn udp(max: usize) -> Policy {
    Policy {
        transport: Transport::Udp,
        share_fds: false,
        auto_fd_threshold: u64::MAX,
        max_reply: Some(max),
        inline_max: u64::MAX,
    }
}

fn header(op: Op, mode: Mode) -> RequestHeader {
    let mut h = RequestHeader::new(Version::V1, op, 7);
    h.mode = mode;
    h
}

fn run(store: &Store, h: RequestHeader, key: &[u8], p: &Policy) -> Reply {
    read(
        store,
        &Request {
            header: h,
            key,
            meta: &[],
        },
        p,
    )
}

fn get(store: &Store, key: &[u8], mode: Mode, p: &Policy) -> Reply {
    run(store, header(Op::Get, mode), key, p)
}

fn ranged(store: &Store, key: &[u8], offset: u64, length: u64, p: &Policy) -> Reply {
    let mut h = header(Op::Get, Mode::Copy);
    h.offset = offset;
    h.length = length;
    run(store, h, key, p)
}

/// The bytes a reply delivers, whatever its body.
fn bytes(r: &Reply) -> Vec<u8> {
    let file: &std::fs::File = match &r.body {
        Body::Inline(f) | Body::Stream { file: f, .. } => f,
        Body::Fd(Attached::Shared(f)) => f,
        Body::Fd(Attached::Owned(fd)) => {
            let f = std::fs::File::from(fd.try_clone().unwrap());
            let mut b = vec![0; r.length as usize];
            f.read_exact_at(&mut b, r.offset).unwrap();
            return b;
        }
        Body::Bytes(all) => {
            return all[r.offset as usize..(r.offset + r.length) as usize].to_vec();
        }
        Body::None => return Vec::new(),
    };
    let mut b = vec![0; r.length as usize];
    file.read_exact_at(&mut b, r.offset).unwrap();
    b
}

/// The frame a reply encodes to, decoded: status, message, and an inline body.
fn frame(mut r: Reply) -> (Status, String, Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    let (st, _) = r.encode(Version::V1, 7, &mut out);
    match decode_response(&out).unwrap() {
        Decoded::Complete(f, n) => {
            assert_eq!(f.header.status, st);
            assert_eq!(f.header.request_id, 7);
            (st, f.message_text(), f.meta.to_vec(), out[n..].to_vec())
        }
        Decoded::Incomplete(n) => panic!("incomplete frame, {n} bytes needed"),
    }
}

fn counts(store: &Store) -> (u64, u64, u64) {
    let s = store.stats();
    (s.gets, s.hits, s.misses)
}

#[test]
fn copy_get_reads_small_objects_into_the_frame() {
    let (_d, store) = open();
    put(&store, b"k", b"hello world");
    let r = get(&store, b"k", Mode::Copy, &unix());
    assert_eq!(r.status, Status::Ok);
    assert_eq!((r.mode, r.offset, r.length), (Mode::Copy, 0, 11));
    // Small: read once, checked, and kept by the store's body cache.
    assert!(matches!(r.body, Body::Bytes(_)));
    let md = Metadata::decode(&r.meta).unwrap();
    assert_eq!(md.size, Some(11));
    let (st, msg, meta, body) = frame(r);
    assert_eq!(
        (st, msg.as_str(), body.as_slice()),
        (Status::Ok, "", &b"hello world"[..])
    );
    assert_eq!(Metadata::decode(&meta).unwrap().size, Some(11));
    assert_eq!(counts(&store), (1, 1, 0));
    // The next GET finds the kept bytes; counted the same way.
    let r = get(&store, b"k", Mode::Copy, &unix());
    assert!(matches!(r.body, Body::Bytes(_)));
    assert_eq!(frame(r).3, b"hello world");
    assert_eq!(counts(&store), (2, 2, 0));
    // Larger than the body cache takes: read into the frame from the cached file.
    let big = vec![7u8; objmapper_store::SMALL_BODY_MAX as usize + 1];
    put(&store, b"big", &big);
    let r = get(&store, b"big", Mode::Copy, &unix());
    assert!(matches!(r.body, Body::Inline(_)));
    assert_eq!(frame(r).3, big);
}

#[test]
fn fd_get_opens_one_private_description_and_counts_once() {
    let (_d, store) = open();
    put(&store, b"k", b"abc");
    let mut r = get(&store, b"k", Mode::Fd, &unix());
    assert_eq!((r.status, r.mode), (Status::Ok, Mode::Fd));
    assert!(matches!(r.body, Body::Fd(Attached::Owned(_))));
    assert_eq!(bytes(&r), b"abc");
    assert_eq!(counts(&store), (1, 1, 0));
    // The frame says an fd rides on it.
    let mut out = Vec::new();
    let (_, rest) = r.encode(Version::V1, 7, &mut out);
    assert!(matches!(rest, Rest::Fd(_)));
    let Decoded::Complete(f, _) = decode_response(&out).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(f.header.flags, objmapper_proto::resp_flags::FD_ATTACHED);
}

#[test]
fn share_fds_hands_out_the_cached_description() {
    let (_d, store) = open();
    put(&store, b"k", b"abc");
    let p = Policy {
        share_fds: true,
        ..unix()
    };
    let r = get(&store, b"k", Mode::Fd, &p);
    let Body::Fd(Attached::Shared(f)) = &r.body else {
        panic!("{:?}", r.body)
    };
    let cached = store.get_shared(b"k").unwrap().unwrap();
    assert!(Arc::ptr_eq(f, &cached.file));
    assert_eq!(counts(&store), (2, 2, 0));
}

#[test]
fn auto_mode_picks_by_size_and_transport() {
    let (_d, store) = open();
    put(&store, b"small", &[1; 100]);
    put(&store, b"large", &vec![2; THRESHOLD as usize]);
    let r = get(&store, b"small", Mode::Auto, &unix());
    assert_eq!(r.mode, Mode::Copy);
    assert!(matches!(r.body, Body::Bytes(_)));
    let r = get(&store, b"large", Mode::Auto, &unix());
    assert_eq!(r.mode, Mode::Fd);
    assert!(matches!(r.body, Body::Fd(Attached::Owned(_))));
    assert_eq!(bytes(&r), vec![2; THRESHOLD as usize]);
    // No fds without FD_PASSING, over TCP or over UDP: copy.
    let no_fds = Policy {
        transport: Transport::Unix { fd_passing: false },
        ..unix()
    };
    for p in [no_fds, tcp(), udp(1 << 20)] {
        let r = get(&store, b"large", Mode::Auto, &p);
        assert_eq!((r.status, r.mode), (Status::Ok, Mode::Copy), "{p:?}");
        assert!(matches!(r.body, Body::Inline(_)));
    }
    // One lookup and one count per GET, whichever description it opened.
    assert_eq!(counts(&store), (5, 5, 0));
}

#[test]
fn large_copy_and_splice_bodies_are_streamed() {
    let (_d, store) = open();
    let data: Vec<u8> = (0..INLINE_MAX + 10).map(|i| i as u8).collect();
    put(&store, b"k", &data);
    // The whole object, not yet verified: hashed on the way.
    let r = get(&store, b"k", Mode::Copy, &unix());
    let Body::Stream { check, .. } = &r.body else {
        panic!("{:?}", r.body)
    };
    assert!(check.is_some());
    assert_eq!(bytes(&r), data);
    // A range of it is checked before the reply: then the file is known good.
    let r = ranged(&store, b"k", 5, 0, &unix());
    assert!(matches!(r.body, Body::Stream { check: None, .. }));
    assert_eq!((r.offset, r.length), (5, INLINE_MAX + 5));
    assert_eq!(bytes(&r), &data[5..]);
    // A range that fits the frame is read into it.
    let r = ranged(&store, b"k", 10, 0, &unix());
    assert!(matches!(r.body, Body::Inline(_)));
    assert_eq!(frame(r).3, &data[10..]);
    let r = get(&store, b"k", Mode::Splice, &unix());
    assert_eq!(r.mode, Mode::Splice);
    assert!(matches!(r.body, Body::Stream { check: None, .. }));
    // A small splice GET streams too (by sendfile): nothing is read into the frame.
    put(&store, b"s", b"xyz");
    let r = get(&store, b"s", Mode::Splice, &unix());
    assert!(matches!(r.body, Body::Stream { check: None, .. }));
    assert_eq!(r.frame_len(), RESPONSE_HEADER_LEN + r.meta.len());
}

#[test]
fn modes_a_transport_cannot_serve_are_refused_with_one_text_each() {
    let (_d, store) = open();
    put(&store, b"k", b"abc");
    let no_fds = Policy {
        transport: Transport::Unix { fd_passing: false },
        ..unix()
    };
    let cases = [
        (tcp(), Mode::Fd, "fd mode needs a Unix socket"),
        (no_fds, Mode::Fd, "fd mode needs the FD_PASSING capability"),
        (udp(1 << 20), Mode::Fd, "fd mode is not available over UDP"),
        (
            udp(1 << 20),
            Mode::Splice,
            "splice mode is not available over UDP",
        ),
    ];
    for (p, mode, text) in cases {
        let r = get(&store, b"k", mode, &p);
        assert_eq!(r.status, Status::ModeUnsupported);
        assert!(r.message.starts_with(text), "{}", r.message);
    }
    let msg = check_mode(Op::Put, Mode::Auto, &unix()).unwrap_err();
    assert!(msg.starts_with("auto mode applies to GET"), "{msg}");
    assert!(check_mode(Op::Put, Mode::Fd, &unix()).is_ok());
    // Refused before the store is asked.
    assert_eq!(counts(&store), (0, 0, 0));
}

#[test]
fn ranges_and_their_error_are_the_same_on_every_transport() {
    let (_d, store) = open();
    put(&store, b"k", b"0123456789");
    for p in [unix(), tcp(), udp(1 << 20)] {
        let r = ranged(&store, b"k", 3, 4, &p);
        assert_eq!((r.offset, r.length), (3, 4));
        assert_eq!(bytes(&r), b"3456");
        let r = ranged(&store, b"k", 10, 0, &p);
        assert_eq!(r.status, Status::RangeNotSatisfiable);
        assert_eq!(
            r.message,
            "range starts at byte 10, at or past the end of the object of 10 bytes"
        );
    }
}

#[test]
fn head_and_not_found() {
    let (_d, store) = open();
    put(&store, b"k", b"abcd");
    for p in [unix(), udp(1 << 20)] {
        let r = run(&store, header(Op::Head, Mode::None), b"k", &p);
        assert_eq!((r.status, r.length, r.mode), (Status::Ok, 4, Mode::None));
        assert!(matches!(r.body, Body::None));
        assert_eq!(Metadata::decode(&r.meta).unwrap().size, Some(4));
        for op in [Op::Head, Op::Get] {
            let mode = if op == Op::Get {
                Mode::Copy
            } else {
                Mode::None
            };
            let r = run(&store, header(op, mode), b"nope", &p);
            let (st, msg, _, _) = frame(r);
            assert_eq!(
                (st, msg.as_str()),
                (Status::NotFound, "no object under that key")
            );
        }
    }
    // HEAD is not a read of the bytes; the GETs that missed count as misses.
    assert_eq!(counts(&store), (2, 0, 2));
    let r = run(&store, header(Op::Ping, Mode::None), b"", &udp(1 << 20));
    assert_eq!(frame(r).0, Status::Ok);
}

#[test]
fn udp_refuses_replies_over_its_largest_before_opening_anything() {
    let (_d, store) = open();
    put(&store, b"k", &[7; 1000]);
    let r = get(&store, b"k", Mode::Copy, &udp(500));
    assert_eq!(r.status, Status::ResponseTooLarge);
    assert!(
        r.message.contains("over the UDP limit of 500 bytes"),
        "{}",
        r.message
    );
    // A range that fits is served.
    let r = ranged(&store, b"k", 0, 10, &udp(500));
    assert_eq!((r.status, bytes(&r)), (Status::Ok, vec![7; 10]));
    let r = run(
        &store,
        header(Op::Head, Mode::None),
        b"k",
        &udp(RESPONSE_HEADER_LEN),
    );
    assert_eq!(r.status, Status::ResponseTooLarge);
    // The refused GET opened nothing and counted nothing.
    assert_eq!(counts(&store), (1, 1, 0));
}

#[test]
fn admit_checks_frame_key_and_metadata_limits() {
    let mut limits = crate::limits::RuntimeLimits::of(&crate::ServerConfig::new("/s", "/d"));
    limits.max_key_len = 4;
    limits.max_meta_len = 2;
    let ok = |op, mode, key: &'static [u8], meta: &'static [u8]| {
        admit(
            &Request {
                header: header(op, mode),
                key,
                meta,
            },
            &limits,
        )
    };
    assert!(ok(Op::Get, Mode::Copy, b"abcd", b"").is_ok());
    let r = ok(Op::Get, Mode::Copy, b"abcde", b"").unwrap_err();
    assert_eq!(r.status, Status::KeyTooLong);
    // A BAN's key is an expression, not a key.
    assert!(ok(Op::Ban, Mode::None, br#"key ^ "abcdef""#, b"").is_ok());
    let r = ok(Op::Get, Mode::None, b"k", b"").unwrap_err();
    assert_eq!(
        (r.status, &*r.message),
        (
            Status::BadRequest,
            "GET needs a transfer mode (fd, copy, splice or auto)"
        )
    );
    let r = ok(Op::Put, Mode::Copy, b"k", b"xyz").unwrap_err();
    assert_eq!(r.status, Status::MetadataTooLarge);
    const { assert!(MAX_KEY_LEN >= 4) };
}

#[test]
fn mutations_reply_with_their_outcome() {
    let (_d, store) = open();
    put(&store, b"k", b"abc");
    assert_eq!(pin(&store, b"k", true).status, Status::Ok);
    assert_eq!(pin(&store, b"nope", true).status, Status::NotFound);
    let r = ban(&store, br#"key ^ "zzz""#);
    assert_eq!(r.status, Status::Ok);
    assert!(Metadata::decode(&r.meta).unwrap().version.is_some());
    assert_eq!(ban(&store, b"nonsense").status, Status::BadRequest);
    assert_eq!(
        delete(&store, b"k", Condition::Always, false).status,
        Status::Ok
    );
    assert_eq!(
        delete(&store, b"k", Condition::Always, false).status,
        Status::NotFound
    );
}

/// A failed commit's reply: the wire status, and the message prefixed with "commit
/// failed" (a refused condition is not a failure and goes without it).
#[test]
fn commit_replies_carry_status_and_message() {
    let (st, msg, _, _) = frame(committed(Err(CommitError::Store(StoreError::NoSpace(
        "full".into(),
    )))));
    assert_eq!(st, Status::NoSpace);
    assert_eq!(msg, "commit failed, nothing was published: no space: full");
    let (st, msg, _, _) = frame(committed(Err(CommitError::Store(
        StoreError::PreconditionFailed("v".into()),
    ))));
    assert_eq!(st, Status::PreconditionFailed);
    assert_eq!(msg, "precondition failed: v");
    let (_d, store) = open();
    let meta = put(&store, b"k", b"abc");
    let r = committed(Ok(meta));
    assert_eq!((r.status, r.length), (Status::Ok, 3));
}

#[test]
fn an_inline_body_that_cannot_be_read_becomes_an_io_error() {
    let (_d, store) = open();
    put(&store, b"k", b"abc");
    let mut r = get(&store, b"k", Mode::Copy, &unix());
    r.length = 10; // past the end of the file
    let (st, msg, meta, body) = frame(r);
    assert_eq!(st, Status::IoError);
    assert!(msg.starts_with("reading the object failed"), "{msg}");
    assert!(meta.is_empty() && body.is_empty());
}
