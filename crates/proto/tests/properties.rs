//! Property tests: the fuzz targets' invariants (`objmapper_proto::check`, also run by
//! `fuzz/`) on arbitrary bytes, and round trips of arbitrary valid values:
//! decode(encode(x)) == x for request and response frames, metadata, HELLO and UDP.

use objmapper_proto::{check, *};
use proptest::prelude::*;

fn arb_op() -> impl Strategy<Value = Op> {
    proptest::sample::select(Op::ALL.to_vec())
}
fn arb_mode() -> impl Strategy<Value = Mode> {
    proptest::sample::select(Mode::ALL.to_vec())
}
fn arb_status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}
fn arb_version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    (
        (
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        ),
        proptest::option::of("[ -~]{0,64}"),
        any::<Option<u64>>(),
        proptest::option::of(proptest::sample::select(vec![
            Tier::Memory,
            Tier::Disk,
            Tier::Both,
        ])),
        proptest::option::of(
            (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(p, e, d)| ObjectState::new(p, e, d)),
        ),
        proptest::collection::vec(
            (
                "[a-z0-9-]{1,16}",
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(
                (size, version, mtime_ns, checksum),
                content_type,
                expires_at,
                tier,
                state,
                custom,
            )| {
                Metadata {
                    size,
                    version,
                    mtime_ns,
                    checksum,
                    content_type,
                    expires_at,
                    tier,
                    state,
                    custom,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decoders_hold_their_invariants_on_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        magic in proptest::sample::select(vec![MAGIC_REQ_V1, MAGIC_REQ_V2, MAGIC_RESP_V1, MAGIC_RESP_V2]),
    ) {
        check::request_bytes(&data);
        check::response_bytes(&data);
        check::metadata_bytes(&data);
        check::hello_bytes(&data);
        let mut v = vec![magic];
        v.extend_from_slice(&data);
        check::request_bytes(&v);
        check::response_bytes(&v);
    }

    #[test]
    fn request_frames_round_trip(
        version in arb_version(), op in arb_op(), mode in arb_mode(),
        flags in any::<u16>(), id in any::<u32>(), length in any::<u64>(),
        offset in any::<u64>(), handle in any::<u64>(),
        key in proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN),
        meta in arb_metadata(),
    ) {
        let mut h = RequestHeader::new(version, op, id);
        h.mode = mode;
        h.flags = flags;
        h.length = length;
        h.offset = offset;
        h.handle = handle;
        let meta = meta.to_bytes().unwrap();
        let mut buf = Vec::new();
        encode_request(&h, &key, &meta, &mut buf);
        check::request_bytes(&buf);
        let Ok(Decoded::Complete(req, n)) = decode_request(&buf) else {
            panic!("a valid frame did not decode");
        };
        prop_assert_eq!(n, buf.len());
        h.key_len = key.len() as u16;
        h.meta_len = meta.len() as u32;
        prop_assert_eq!(req.header, h);
        prop_assert_eq!(req.key, &key[..]);
        prop_assert_eq!(req.meta, &meta[..]);
        // Every strict prefix is "need more", never an error or a wrong frame.
        for cut in [0, 1, REQUEST_HEADER_LEN - 1, REQUEST_HEADER_LEN, buf.len() - 1] {
            if cut < buf.len() {
                prop_assert!(matches!(decode_request(&buf[..cut]), Ok(Decoded::Incomplete(_))));
            }
        }
    }

    #[test]
    fn response_frames_round_trip(
        version in arb_version(), status in arb_status(), mode in arb_mode(),
        id in any::<u32>(), length in any::<u64>(), offset in any::<u64>(),
        handle in any::<u64>(), msg in "[ -~]{0,200}", meta in arb_metadata(),
    ) {
        let mut h = ResponseHeader::new(version, status, id);
        h.mode = mode;
        h.length = length;
        h.offset = offset;
        h.handle = handle;
        let meta = meta.to_bytes().unwrap();
        let mut buf = Vec::new();
        encode_response(&h, &msg, &meta, &mut buf);
        check::response_bytes(&buf);
        let Ok(Decoded::Complete(r, n)) = decode_response(&buf) else {
            panic!("a valid response did not decode");
        };
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(r.header.status, status);
        prop_assert_eq!(r.header.request_id, id);
        prop_assert_eq!(r.message_text(), msg);
        prop_assert_eq!(r.meta, &meta[..]);
    }

    #[test]
    fn metadata_round_trips(meta in arb_metadata()) {
        let enc = meta.to_bytes().unwrap();
        prop_assert!(enc.len() <= MAX_META_LEN);
        prop_assert_eq!(Metadata::decode(&enc).unwrap(), meta);
        check::metadata_bytes(&enc);
    }

    #[test]
    fn hello_round_trips(version in any::<u8>(), capabilities in any::<u32>(), depth in any::<u16>()) {
        let h = Hello { version, capabilities, depth };
        prop_assert_eq!(Hello::decode(&h.encode()), Ok(h));
        check::hello_bytes(&h.encode());
    }

    #[test]
    fn udp_messages_reassemble_in_any_order(
        msg in proptest::collection::vec(any::<u8>(), 0..20_000),
        payload in 1usize..2000,
        order in proptest::collection::vec(any::<u16>(), 0..64),
        id in any::<u32>(),
    ) {
        check::udp_roundtrip(id, &msg, payload, &order);
    }

    #[test]
    fn udp_reassembler_stays_within_its_limit(
        max in 0usize..70_000,
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 0..40),
        id in any::<u32>(),
    ) {
        let ds: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        check::udp_datagrams(id, max, &ds);
    }
}
