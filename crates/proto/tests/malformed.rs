//! Bad input: every malformed frame gets a precise error, and no input makes a decoder
//! panic or over-allocate.

use objmapper_proto::*;

fn header(op: Op, mode: Mode) -> RequestHeader {
    let mut h = RequestHeader::new(Version::V1, op, 1);
    h.mode = mode;
    h
}

fn encoded(h: &RequestHeader, key: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_request(h, key, meta, &mut v);
    v
}

#[test]
fn bad_magic_unknown_op_unknown_mode_reserved_are_fatal() {
    let good = encoded(&header(Op::Get, Mode::Fd), b"k", b"");
    let cases: [(usize, u8, FrameError); 4] = [
        (0, 0x47, FrameError::BadMagic(0x47)),
        (1, 0x63, FrameError::UnknownOp(0x63)),
        (2, 0x09, FrameError::UnknownMode(0x09)),
        (3, 0x01, FrameError::ReservedNotZero),
    ];
    for (at, byte, want) in cases {
        let mut b = good.clone();
        b[at] = byte;
        let err = decode_request(&b).unwrap_err();
        assert_eq!(err, want);
        assert!(err.is_fatal());
        assert_eq!(err.status(), Status::ProtocolError);
    }
    // A single garbage byte is rejected at once: no need to wait for 40 bytes.
    assert_eq!(
        decode_request(b"G").unwrap_err(),
        FrameError::BadMagic(b'G')
    );
}

#[test]
fn key_too_long_is_skippable() {
    let mut h = header(Op::Put, Mode::Copy);
    h.length = 10;
    let key = vec![b'x'; MAX_KEY_LEN + 1];
    let b = encoded(&h, &key, b"");
    let err = decode_request(&b).unwrap_err();
    assert!(!err.is_fatal());
    assert_eq!(err.status(), Status::KeyTooLong);
    assert_eq!(err.skip(), Some((40 + key.len() + 10) as u64));
    // The limit itself is fine.
    let b = encoded(&h, &key[..MAX_KEY_LEN], b"");
    assert!(matches!(decode_request(&b), Ok(Decoded::Complete(..))));
}

#[test]
fn oversized_metadata_is_rejected_from_the_header_alone() {
    let mut h = header(Op::Put, Mode::Copy);
    h.meta_len = (MAX_META_LEN + 1) as u32;
    let mut b = [0u8; REQUEST_HEADER_LEN];
    h.encode(&mut b);
    let err = decode_request(&b).unwrap_err();
    assert_eq!(err, FrameError::MetaTooLarge(h.meta_len));
    assert_eq!(err.status(), Status::MetadataTooLarge);
    assert!(err.is_fatal());
}

#[test]
fn validation_catches_misused_fields() {
    let check = |h: RequestHeader, key: &[u8], meta: &[u8], needle: &str| {
        let b = encoded(&h, key, meta);
        let Decoded::Complete(r, _) = decode_request(&b).unwrap() else {
            panic!()
        };
        let (st, msg) = validate_request(&r).unwrap_err();
        assert_eq!(st, Status::BadRequest, "{msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    };
    check(header(Op::Get, Mode::Fd), b"", b"", "non-empty key");
    check(header(Op::Ping, Mode::None), b"k", b"", "takes no key");
    check(
        header(Op::Get, Mode::None),
        b"k",
        b"",
        "needs a transfer mode",
    );
    check(header(Op::Delete, Mode::Fd), b"k", b"", "mode must be none");
    check(header(Op::Commit, Mode::None), b"", b"", "needs the handle");
    let mut h = header(Op::Get, Mode::Fd);
    h.handle = 3;
    check(h, b"k", b"", "takes no handle");
    let mut h = header(Op::Get, Mode::Fd);
    h.flags = 0x8000;
    check(h, b"k", b"", "unknown request flags");
    check(
        header(Op::Get, Mode::Fd),
        b"k",
        b"\x05\x00\x01\x00x",
        "takes no metadata",
    );
    let mut h = header(Op::Ping, Mode::None);
    h.length = 4;
    check(h, b"", b"", "takes no length");
    // PIN and UNPIN: a key, no mode, no metadata, no length.
    check(header(Op::Pin, Mode::None), b"", b"", "non-empty key");
    check(header(Op::Unpin, Mode::Fd), b"k", b"", "mode must be none");
    check(
        header(Op::Pin, Mode::None),
        b"k",
        b"\x06\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "takes no metadata",
    );
    let mut h = header(Op::Unpin, Mode::None);
    h.length = 1;
    check(h, b"k", b"", "takes no length");
}

#[test]
fn request_flags_apply_only_where_defined() {
    let validate = |h: RequestHeader, key: &[u8]| {
        let b = encoded(&h, key, b"");
        let Decoded::Complete(r, _) = decode_request(&b).unwrap() else {
            panic!()
        };
        validate_request(&r)
    };
    let with = |op: Op, mode: Mode, flags: u16| {
        let mut h = header(op, mode);
        h.flags = flags;
        if op == Op::Commit {
            h.handle = 1;
        }
        h
    };
    use req_flags::{DURABLE, EPHEMERAL, PIN};
    // PUT and COMMIT take every flag except the contradiction DURABLE|EPHEMERAL.
    for (op, mode, key) in [
        (Op::Put, Mode::Copy, &b"k"[..]),
        (Op::Put, Mode::Fd, b"k"),
        (Op::Commit, Mode::None, b""),
    ] {
        for flags in [0, DURABLE, EPHEMERAL, PIN, DURABLE | PIN, EPHEMERAL | PIN] {
            assert_eq!(
                validate(with(op, mode, flags), key),
                Ok(()),
                "{op} {flags:#x}"
            );
        }
        let (st, msg) = validate(with(op, mode, DURABLE | EPHEMERAL), key).unwrap_err();
        assert_eq!(st, Status::BadRequest);
        assert!(msg.contains("contradict"), "{msg}");
    }
    // DELETE takes DURABLE only.
    assert_eq!(
        validate(with(Op::Delete, Mode::None, DURABLE), b"k"),
        Ok(())
    );
    for flags in [EPHEMERAL, PIN] {
        let (st, msg) = validate(with(Op::Delete, Mode::None, flags), b"k").unwrap_err();
        assert_eq!(st, Status::BadRequest);
        assert!(msg.contains("do not apply to DELETE"), "{msg}");
    }
    // Every other op takes no flag at all.
    for (op, mode, key) in [
        (Op::Get, Mode::Fd, &b"k"[..]),
        (Op::Head, Mode::None, b"k"),
        (Op::Pin, Mode::None, b"k"),
        (Op::Unpin, Mode::None, b"k"),
        (Op::Ping, Mode::None, b""),
    ] {
        assert_eq!(validate(with(op, mode, 0), key), Ok(()), "{op}");
        for flags in [DURABLE, EPHEMERAL, PIN] {
            let (st, msg) = validate(with(op, mode, flags), key).unwrap_err();
            assert_eq!(st, Status::BadRequest, "{op} {flags:#x}");
            assert!(msg.contains(&format!("do not apply to {op}")), "{msg}");
        }
    }
}

#[test]
fn metadata_errors() {
    assert_eq!(Metadata::decode(b"\x05\x00"), Err(MetaError::Truncated));
    assert_eq!(
        Metadata::decode(b"\x05\x00\x09\x00abc"),
        Err(MetaError::Truncated)
    );
    assert_eq!(
        Metadata::decode(b"\x99\x00\x00\x00"),
        Err(MetaError::UnknownTag(0x99))
    );
    assert_eq!(
        Metadata::decode(b"\x01\x00\x02\x00ab"),
        Err(MetaError::BadLength { tag: 1, len: 2 })
    );
    assert_eq!(
        Metadata::decode(b"\x05\x00\x01\x00a\x05\x00\x01\x00b"),
        Err(MetaError::Duplicate(5))
    );
    assert_eq!(
        Metadata::decode(b"\x05\x00\x01\x00\xff"),
        Err(MetaError::NotUtf8(5))
    );
    assert_eq!(
        Metadata::decode(b"\x10\x00\x01\x00\x00"),
        Err(MetaError::EmptyName)
    );
    assert_eq!(
        Metadata::decode(b"\x10\x00\x02\x00\x05a"),
        Err(MetaError::BadLength { tag: 0x10, len: 2 })
    );
    // TIER and STATE: one byte, defined values only.
    assert_eq!(
        Metadata::decode(b"\x07\x00\x02\x00\x01\x00"),
        Err(MetaError::BadLength { tag: 7, len: 2 })
    );
    assert_eq!(
        Metadata::decode(b"\x07\x00\x01\x00\x04"),
        Err(MetaError::BadValue { tag: 7, value: 4 })
    );
    assert_eq!(
        Metadata::decode(b"\x07\x00\x01\x00\x00"),
        Err(MetaError::BadValue { tag: 7, value: 0 })
    );
    assert_eq!(
        Metadata::decode(b"\x08\x00\x01\x00\x08"),
        Err(MetaError::BadValue { tag: 8, value: 8 })
    );
    assert_eq!(
        Metadata::decode(b"\x08\x00\x00\x00"),
        Err(MetaError::BadLength { tag: 8, len: 0 })
    );
    assert_eq!(
        Metadata::decode(b"\x08\x00\x01\x00\x01\x08\x00\x01\x00\x01"),
        Err(MetaError::Duplicate(8))
    );
    // EXPIRES: a u64.
    assert_eq!(
        Metadata::decode(b"\x06\x00\x04\x00\x01\x00\x00\x00"),
        Err(MetaError::BadLength { tag: 6, len: 4 })
    );
    let big = Metadata {
        custom: (0..20)
            .map(|i| (format!("n{i}"), vec![0u8; 4000]))
            .collect(),
        ..Default::default()
    };
    let mut out = vec![1, 2, 3];
    assert!(matches!(big.encode(&mut out), Err(MetaError::TooLarge(_))));
    assert_eq!(out, vec![1, 2, 3], "nothing appended on error");
}

#[test]
fn metadata_roundtrip() {
    let m = Metadata {
        size: Some(1 << 40),
        version: Some(7),
        mtime_ns: Some(1_700_000_000_000_000_000),
        checksum: Some(0xdead_beef),
        content_type: Some("image/png".into()),
        expires_at: Some(1_900_000_000),
        tier: Some(Tier::Both),
        state: Some(ObjectState::new(true, false, true)),
        custom: vec![
            ("a".into(), vec![]),
            ("b".into(), vec![0, 1, 2, 255]),
            ("a".into(), b"repeat ok".to_vec()),
        ],
    };
    let b = m.to_bytes().unwrap();
    assert_eq!(Metadata::decode(&b).unwrap(), m);
    assert!(m.has_server_fields());
}

#[test]
fn tier_and_state_fields() {
    for t in [Tier::Memory, Tier::Disk, Tier::Both] {
        assert_eq!(Tier::from_u8(t.as_u8()), Some(t));
    }
    assert_eq!(
        (Tier::Memory.as_u8(), Tier::Disk.as_u8(), Tier::Both.as_u8()),
        (1, 2, 3)
    );
    assert!(Tier::Both.in_memory() && Tier::Both.on_disk());
    assert!(!Tier::Disk.in_memory() && !Tier::Memory.on_disk());
    let s = ObjectState::new(true, true, false);
    assert_eq!(s.bits(), 0x03);
    assert!(s.pinned() && s.ephemeral() && !s.dirty());
    assert_eq!(ObjectState::from_bits(0x04).map(|s| s.dirty()), Some(true));
    assert_eq!(ObjectState::from_bits(0x10), None);
    // EXPIRES is a client field; TIER and STATE are the server's.
    let client = Metadata {
        expires_at: Some(1),
        ..Default::default()
    };
    assert!(!client.has_server_fields());
    for m in [
        Metadata {
            tier: Some(Tier::Disk),
            ..Default::default()
        },
        Metadata {
            state: Some(ObjectState::default()),
            ..Default::default()
        },
    ] {
        assert!(m.has_server_fields());
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a dev-dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seed_frames = Vec::new();
    let mut h = header(Op::Put, Mode::Copy);
    h.length = 3;
    let meta = Metadata {
        content_type: Some("t".into()),
        expires_at: Some(1_900_000_000),
        tier: Some(Tier::Memory),
        state: Some(ObjectState::new(false, true, true)),
        custom: vec![("x".into(), b"y".to_vec())],
        ..Default::default()
    }
    .to_bytes()
    .unwrap();
    seed_frames.push(encoded(&h, b"key", &meta));
    let mut resp = Vec::new();
    encode_response(
        &ResponseHeader::new(Version::V1, Status::NotFound, 1),
        "msg",
        &meta,
        &mut resp,
    );
    seed_frames.push(resp);
    for i in 0..200_000u32 {
        let mut b = seed_frames[(i % 2) as usize].clone();
        // Mutate a few bytes, or use pure noise.
        if i % 7 == 0 {
            let len = (rng.next() % 120) as usize;
            b = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(x) = b.first_mut() {
                *x = [0xA1, 0xA2, 0xB1, 0xB2][i as usize % 4];
            }
        } else {
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % b.len();
                b[at] = rng.next() as u8;
            }
        }
        let cut = (rng.next() as usize) % (b.len() + 1);
        let b = &b[..cut];
        if let Ok(Decoded::Complete(r, n)) = decode_request(b) {
            assert!(n <= b.len());
            let _ = validate_request(&r);
            let _ = Metadata::decode(r.meta);
        }
        if let Ok(Decoded::Complete(r, n)) = decode_response(b) {
            assert!(n <= b.len());
            let _ = Metadata::decode(r.meta);
        }
        let _ = Metadata::decode(b);
        let _ = Hello::decode(b);
    }
}
