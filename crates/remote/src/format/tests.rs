use super::*;

const STORAGE_MD: &str = include_str!("../../../../docs/STORAGE.md");

/// The bytes of a hex dump block in docs/STORAGE.md between `<!-- NAME:begin -->`
/// and `<!-- NAME:end -->` (`OFFSET: hex bytes | comment` lines).
fn doc_block(name: &str) -> Vec<u8> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = STORAGE_MD.find(&begin).expect("begin marker") + begin.len();
    let stop = STORAGE_MD[start..].find(&end).expect("end marker") + start;
    let mut out = Vec::new();
    for line in STORAGE_MD[start..stop].lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        let hex = rest.split('|').next().unwrap();
        for b in hex.split_whitespace() {
            out.push(u8::from_str_radix(b, 16).expect("hex byte"));
        }
    }
    out
}

fn example_record() -> Record {
    Record {
        key: b"a/b".to_vec(),
        version: 7,
        size: 5,
        mtime_ns: 1_700_000_000_000_000_000,
        checksum: xxh3_64(b"hello"),
        expires_at: None,
        pinned: false,
        ephemeral: false,
        content_type: Some("text/plain".into()),
        custom: vec![("x".into(), b"1".to_vec())],
    }
}

fn host(s: &str) -> HostId {
    HostId::new(s).unwrap()
}

#[test]
fn record_is_the_journal_put_payload() {
    // The journal's PUT example: 12-byte record header, type byte, then the payload.
    let journal = doc_block("put-record-example");
    let payload = &journal[13..];
    let r = Record::decode(payload).unwrap();
    assert_eq!(r, example_record());
    let mut out = Vec::new();
    r.encode(&mut out).unwrap();
    assert_eq!(out, payload);
}

#[test]
fn header_example_in_the_doc() {
    let doc = doc_block("remote-header-example");
    let h = Header {
        stamp: Stamp {
            time_ns: 1_700_000_000_000_000_001,
            host: host("a1"),
        },
        body: Body::Inline(example_record()),
    };
    let enc = h.encode().unwrap();
    let mut whole = enc.clone();
    whole.extend_from_slice(b"hello");
    if doc != whole {
        // Print the block to paste, with offsets and fields left to annotate.
        let mut dump = String::new();
        for (i, c) in whole.chunks(8).enumerate() {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            dump.push_str(&format!("{:04x}: {:<24}|\n", i * 8, hex.join(" ")));
        }
        panic!("the example in docs/STORAGE.md is out of date; it encodes as\n{dump}");
    }
    assert_eq!(Header::peek_len(&doc).unwrap(), enc.len());
    assert_eq!(Header::decode(&doc[..enc.len()]).unwrap(), h);
}

#[test]
fn headers_round_trip_and_damage_is_refused() {
    let mut big = example_record();
    big.custom
        .push(("big".into(), vec![7u8; MAX_META_LEN - 100]));
    let stamp = Stamp {
        time_ns: 42,
        host: host("host-1.example"),
    };
    let bad_ptr = Header {
        stamp: stamp.clone(),
        body: Body::Pointer(example_record(), "d/ab/0001-h".into()),
    };
    assert!(Header::decode(&bad_ptr.encode().unwrap()).is_err());
    for body in [
        Body::Inline(example_record()),
        Body::Inline(big),
        Body::Pointer(example_record(), data_name(b"a/b", &stamp)),
        Body::Tombstone(b"\0../../etc/passwd".to_vec()),
    ] {
        let h = Header {
            stamp: stamp.clone(),
            body,
        };
        let enc = h.encode().unwrap();
        assert!(enc.len() <= MAX_HEADER_LEN);
        assert_eq!(Header::decode(&enc).unwrap(), h);
        // Every single-byte change is caught (by the checks or the checksum).
        for i in (0..enc.len()).step_by(enc.len() / 97 + 1) {
            let mut bad = enc.clone();
            bad[i] ^= 0x20;
            assert!(Header::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Header::decode(&enc[..enc.len() - 1]).is_err());
    }
}

#[test]
fn limits() {
    let mut r = example_record();
    r.custom.push(("m".into(), vec![0; MAX_META_LEN]));
    assert!(r.encode(&mut Vec::new()).is_err());
    let mut r = example_record();
    r.key = vec![1; MAX_KEY_LEN + 1];
    assert!(r.encode(&mut Vec::new()).is_err());
    r.key = Vec::new();
    assert!(r.encode(&mut Vec::new()).is_err());
    assert!(HostId::new("").is_err());
    assert!(HostId::new("a/b").is_err());
    assert!(HostId::new("x".repeat(65)).is_err());
}

#[test]
fn stamps_order_by_time_then_host() {
    let s = |t, h: &str| Stamp {
        time_ns: t,
        host: host(h),
    };
    assert!(s(2, "a") > s(1, "z"));
    assert!(s(1, "b") > s(1, "a"));
    assert!(s(1, "ab") > s(1, "a"));
    assert_eq!(s(1, "a"), s(1, "a"));
}

#[test]
fn names_never_contain_the_key() {
    let n = object_name(b"../../etc/passwd");
    assert!(n.starts_with("o/") && n.len() == 2 + 64, "{n}");
    assert!(!n.contains(".."));
    assert_ne!(n, object_name(b"../../etc/passwd2"));
    let d = data_name(
        b"k",
        &Stamp {
            time_ns: 5,
            host: host("h"),
        },
    );
    assert!(d.ends_with("/00000000000000000005-h"), "{d}");
}

#[test]
fn events_round_trip_and_cover() {
    let ev = Event {
        stamp: Stamp {
            time_ns: 100,
            host: host("b"),
        },
        kind: EventKind::Purge(b"/img/".to_vec()),
    };
    let enc = ev.encode().unwrap();
    assert_eq!(Event::decode(&enc).unwrap(), ev);
    let mut bad = enc.clone();
    bad[20] ^= 1;
    assert!(Event::decode(&bad).is_err());
    let at = |t| Stamp {
        time_ns: t,
        host: host("a"),
    };
    assert!(ev.covers(b"/img/x.png", &at(99)));
    assert!(
        !ev.covers(b"/img/x.png", &at(101)),
        "a later version survives"
    );
    assert!(!ev.covers(b"/css/x", &at(1)));
    let name = ev.name(250, 0xab);
    assert_eq!(name, "events/00000000000000000250-b-00000000000000ab");
    assert_eq!(
        Event::time_of_name(&name),
        Some(250),
        "named by when it is appended, not by its stamp"
    );
    let del = Event {
        stamp: at(5),
        kind: EventKind::Delete(b"k".to_vec()),
    };
    assert_eq!(Event::decode(&del.encode().unwrap()).unwrap(), del);
    assert!(del.covers(b"k", &at(4)) && !del.covers(b"k2", &at(4)));
}
