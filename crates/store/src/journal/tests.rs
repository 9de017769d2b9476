//! Unit tests of `journal`.

use super::*;
use rand::{Rng, SeedableRng};

fn sample() -> ObjectMeta {
    ObjectMeta {
        key: Box::from(&b"img/logo.png"[..]),
        version: 42,
        size: 5,
        mtime_ns: 1_700_000_000_123_456_789,
        checksum: xxh3_64(b"hello"),
        content_type: Some("image/png".into()),
        custom: vec![("etag".into(), Box::from(&b"\"v1\""[..]))],
        ..Default::default()
    }
}

const SALT: u64 = 0x0123_4567_89ab_cdef;

fn enc(rec: RecordRef<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    let n = encode(rec, SALT, &mut v).unwrap();
    assert_eq!(n, v.len());
    v
}

#[test]
fn roundtrip_all_types() {
    let m = sample();
    let mut none = sample();
    none.content_type = None;
    none.custom.clear();
    let mut empty_ct = sample();
    empty_ct.content_type = Some("".into());
    let mut filled = sample();
    filled.filled = true;
    filled.pinned = true;
    let recs = [
        Record::Put(m.clone()),
        Record::Put(none),
        Record::Put(empty_ct),
        Record::Put(filled),
        Record::Del {
            key: Box::from(&b"\0/../x"[..]),
            version: u64::MAX,
        },
        Record::Reserve { upto: 65536 },
    ];
    let mut buf = Vec::new();
    for r in &recs {
        let rr = match r {
            Record::Put(m) => RecordRef::Put(m),
            Record::Del { key, version } => RecordRef::Del {
                key,
                version: *version,
            },
            Record::Reserve { upto } => RecordRef::Reserve { upto: *upto },
        };
        encode(rr, SALT, &mut buf).unwrap();
    }
    let mut pos = 0;
    for r in &recs {
        match decode(&buf[pos..], SALT) {
            Decoded::Record { record, len } => {
                assert_eq!(&record, r);
                pos += len;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pos, buf.len());
    assert_eq!(decode(&buf[pos..], SALT), Decoded::Incomplete);
}

#[test]
fn lengths_match_encoding() {
    let m = sample();
    assert_eq!(enc(RecordRef::Put(&m)).len(), put_record_len(&m));
    assert_eq!(
        enc(RecordRef::Reserve { upto: 1 }).len(),
        RESERVE_RECORD_LEN
    );
}

#[test]
fn encode_rejects_bad_input() {
    let mut out = vec![1, 2, 3];
    let mut m = sample();
    m.key = Box::from(&[][..]);
    assert_eq!(
        encode(RecordRef::Put(&m), SALT, &mut out),
        Err(EncodeError::InvalidKey(0))
    );
    m.key = vec![b'k'; MAX_KEY_LEN + 1].into();
    assert!(encode(RecordRef::Put(&m), SALT, &mut out).is_err());
    m.key = Box::from(&b"k"[..]);
    m.custom = vec![("big".into(), vec![0; MAX_META_LEN].into())];
    assert!(matches!(
        encode(RecordRef::Put(&m), SALT, &mut out),
        Err(EncodeError::MetaTooLarge(_))
    ));
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn max_sizes_roundtrip() {
    let mut m = sample();
    m.key = vec![0xff; MAX_KEY_LEN].into();
    m.content_type = None;
    // ct_len(2) + n_custom(2) + name_len(2) + "v"(1) + val_len(4) + val = MAX_META_LEN
    m.custom = vec![("v".into(), vec![7; MAX_META_LEN - 11].into())];
    let buf = enc(RecordRef::Put(&m));
    assert_eq!(buf.len(), HEADER_LEN + MAX_BODY_LEN);
    assert_eq!(
        decode(&buf, SALT),
        Decoded::Record {
            record: Record::Put(m),
            len: buf.len()
        }
    );
}

#[test]
fn truncation_is_incomplete_and_bitflips_are_detected() {
    let m = sample();
    let buf = enc(RecordRef::Put(&m));
    for cut in 0..buf.len() {
        assert_eq!(
            decode(&buf[..cut], SALT),
            Decoded::Incomplete,
            "cut at {cut}"
        );
    }
    for i in 0..buf.len() {
        for bit in 0..8 {
            let mut b = buf.clone();
            b[i] ^= 1 << bit;
            assert!(
                matches!(decode(&b, SALT), Decoded::Corrupt(_) | Decoded::Incomplete),
                "flip at {i}"
            );
            if i >= 12 {
                assert_eq!(
                    decode(&b, SALT),
                    Decoded::Corrupt(Corruption::ChecksumMismatch)
                );
            }
        }
    }
    // The wrong salt never checks.
    assert_eq!(
        decode(&buf, SALT ^ 1),
        Decoded::Corrupt(Corruption::ChecksumMismatch)
    );
    let mut b = buf.clone();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode(&b, SALT), Decoded::Corrupt(Corruption::BadLength(0)));
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&b, SALT),
        Decoded::Corrupt(Corruption::BadLength(u32::MAX))
    );
    b[0] = 0;
    assert_eq!(decode(&b, SALT), Decoded::Corrupt(Corruption::NoSync));
    assert_eq!(decode(&b[..1], SALT), Decoded::Corrupt(Corruption::NoSync));
}

/// Frames `body` with a correct header, so the payload parser is exercised.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0; HEADER_LEN]);
    v.extend_from_slice(body);
    finish_header(&mut v, 0, SALT);
    v
}

/// Frames `body` as a legacy (format 2) record.
fn frame_legacy(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(&(xxh3_64(body) as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn legacy_records_decode() {
    let m = sample();
    let body = enc(RecordRef::Put(&m))[HEADER_LEN..].to_vec();
    let old = frame_legacy(&body);
    assert_eq!(
        Framing::Legacy.decode(&old),
        Decoded::Record {
            record: Record::Put(m),
            len: old.len()
        }
    );
    let mut bad = old.clone();
    bad[20] ^= 1;
    assert_eq!(
        Framing::Legacy.decode(&bad),
        Decoded::Corrupt(Corruption::ChecksumMismatch)
    );
    assert_eq!(Framing::Legacy.decode(&old[..10]), Decoded::Incomplete);
    // A format-3 file never looks like a legacy record (its magic is no valid length).
    assert!(matches!(
        Framing::Legacy.decode(&encode_file_header(SALT)),
        Decoded::Corrupt(Corruption::BadLength(_))
    ));
}

#[test]
fn file_header_roundtrip() {
    let h = encode_file_header(SALT);
    assert_eq!(decode_file_header(&h), Some(SALT));
    for i in 0..h.len() {
        let mut b = h;
        b[i] ^= 0x10;
        assert_eq!(decode_file_header(&b), None, "flip at {i}");
    }
    assert_eq!(decode_file_header(&h[..23]), None);
}

#[test]
fn a_record_inside_a_metadata_value_is_not_a_record() {
    // A client can put the bytes of a well-formed record in a value; without
    // the salt it cannot make one that checks.
    let inner = {
        let mut v = Vec::new();
        encode(
            RecordRef::Del {
                key: b"victim",
                version: 9,
            },
            0,
            &mut v,
        )
        .unwrap();
        v
    };
    let m = ObjectMeta {
        custom: vec![("x".into(), inner.clone().into())],
        ..sample()
    };
    let rec = enc(RecordRef::Put(&m));
    let at = rec.windows(4).rposition(|w| w == RECORD_SYNC).unwrap();
    assert!(at > 0);
    assert_eq!(
        decode(&rec[at..], SALT),
        Decoded::Corrupt(Corruption::ChecksumMismatch)
    );
}

#[test]
fn valid_crc_bad_payloads() {
    assert_eq!(
        decode(&frame(&[9, 1, 2]), SALT),
        Decoded::Corrupt(Corruption::UnknownType(9))
    );
    assert!(matches!(
        decode(&frame(&[TYPE_RESERVE, 1, 2]), SALT),
        Decoded::Corrupt(Corruption::BadPayload(_))
    ));
    let mut r = enc(RecordRef::Reserve { upto: 3 });
    r.push(0);
    let body = r[HEADER_LEN..].to_vec();
    assert_eq!(
        Framing::Legacy.decode(&frame_legacy(&body)),
        Decoded::Corrupt(Corruption::BadPayload("trailing bytes"))
    );
    assert_eq!(
        decode(&frame(&body), SALT),
        Decoded::Corrupt(Corruption::BadPayload("trailing bytes"))
    );
    // DEL with an empty key.
    let mut body = vec![TYPE_DEL];
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        decode(&frame(&body), SALT),
        Decoded::Corrupt(Corruption::BadPayload(_))
    ));
    // PUT claiming 65535 custom pairs with no data must not over-allocate or panic.
    let m = ObjectMeta {
        custom: vec![],
        content_type: None,
        ..sample()
    };
    let mut b = enc(RecordRef::Put(&m))[HEADER_LEN..].to_vec();
    let n = b.len();
    b[n - 2..].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        decode(&frame(&b), SALT),
        Decoded::Corrupt(Corruption::BadPayload(_))
    ));
    // Invalid UTF-8 content type.
    let m = ObjectMeta {
        content_type: Some("ab".into()),
        custom: vec![],
        ..sample()
    };
    let mut b = enc(RecordRef::Put(&m))[HEADER_LEN..].to_vec();
    let n = b.len();
    b[n - 4] = 0xff;
    assert_eq!(
        decode(&frame(&b), SALT),
        Decoded::Corrupt(Corruption::BadPayload("invalid UTF-8"))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0b1ec7);
    let valid = {
        let mut v = enc(RecordRef::Put(&sample()));
        encode(
            RecordRef::Del {
                key: b"k",
                version: 3,
            },
            SALT,
            &mut v,
        )
        .unwrap();
        v
    };
    for i in 0..20_000 {
        let len = rng.gen_range(0..300);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        match i % 4 {
            // Pure garbage.
            0 => {}
            // Garbage with a plausible length field.
            1 if len >= 12 => {
                let l = rng.gen_range(0..len as u32);
                buf[..4].copy_from_slice(&RECORD_SYNC);
                buf[8..12].copy_from_slice(&l.to_le_bytes());
            }
            // Random payload with a correct frame: exercises the parser.
            2 if len >= 1 => {
                buf[0] = rng.gen_range(0..5);
                buf = frame(&buf);
            }
            // Mutated valid records.
            _ => {
                buf = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let j = rng.gen_range(0..buf.len());
                    buf[j] = rng.gen();
                }
                buf.truncate(rng.gen_range(0..=buf.len()));
            }
        }
        // Walk the buffer like replay does.
        for framing in [Framing::V3 { salt: SALT }, Framing::Legacy] {
            let mut pos = 0;
            while let Decoded::Record { len, .. } = framing.decode(&buf[pos..]) {
                assert!(len > LEGACY_HEADER_LEN);
                pos += len;
            }
            assert!(pos <= buf.len());
            if let Some(c) = framing.next_candidate(&buf[pos..]) {
                assert!(pos + c < buf.len());
            }
        }
    }
}

/// Extracts the hex dump between the example markers of docs/STORAGE.md.
fn doc_example() -> Vec<u8> {
    doc_block("put-record-example")
}

fn doc_block(name: &str) -> Vec<u8> {
    let doc = include_str!("../../../../docs/STORAGE.md");
    let start = doc
        .find(&format!("<!-- {name}:begin -->"))
        .expect("begin marker");
    let end = doc
        .find(&format!("<!-- {name}:end -->"))
        .expect("end marker");
    let block = &doc[start..end];
    let mut out = Vec::new();
    for line in block.lines() {
        // Lines look like "0000: 4c 00 ... | comment" inside a code block.
        let Some((addr, rest)) = line.split_once(": ") else {
            continue;
        };
        if addr.len() != 4 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let hex = rest.split('|').next().unwrap();
        for tok in hex.split_whitespace() {
            out.push(u8::from_str_radix(tok, 16).expect("hex byte"));
        }
    }
    out
}

#[test]
fn storage_md_header_example_decodes() {
    let bytes = doc_block("journal-header-example");
    assert_eq!(bytes, encode_file_header(SALT), "doc hex is stale");
    assert_eq!(decode_file_header(&bytes), Some(SALT));
}

#[test]
fn storage_md_put_example_decodes() {
    let bytes = doc_example();
    let expected = ObjectMeta {
        key: Box::from(&b"a/b"[..]),
        version: 7,
        size: 5,
        mtime_ns: 1_700_000_000_000_000_000,
        checksum: xxh3_64(b"hello"),
        content_type: Some("text/plain".into()),
        custom: vec![("x".into(), Box::from(&b"1"[..]))],
        ..Default::default()
    };
    assert_eq!(bytes, enc(RecordRef::Put(&expected)), "doc hex is stale");
    assert_eq!(
        decode(&bytes, SALT),
        Decoded::Record {
            record: Record::Put(expected),
            len: bytes.len()
        }
    );
}

/// Bits 0 to 2 of a PUT's flags mean something (pinned, ephemeral, filled); a record
/// with any other set is refused as damaged, not read as some other object.
#[test]
fn unknown_put_flags_are_refused() {
    let mut payload = Vec::new();
    encode_put_payload(&sample(), &mut payload).unwrap();
    for (bits, ok) in [(0x07u8, true), (0x08, false), (0x80, false)] {
        let mut body = vec![TYPE_PUT];
        body.extend_from_slice(&payload);
        body[1 + 40] = bits;
        let r = decode(&frame(&body), SALT);
        if ok {
            assert!(matches!(r, Decoded::Record { .. }), "{bits:#x}: {r:?}");
        } else {
            assert_eq!(
                r,
                Decoded::Corrupt(Corruption::BadPayload("unknown flags")),
                "{bits:#x}"
            );
        }
    }
}
