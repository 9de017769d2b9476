//! Invariants of every decoder, as functions that panic when one breaks. The fuzz targets
//! (`fuzz/`) feed them arbitrary bytes; the property tests (`tests/properties.rs`) feed
//! them arbitrary bytes and arbitrary valid frames. Not part of the stable API.

use crate::udp::{self, Reassembler, UdpHeader, UDP_HEADER_LEN};
use crate::{
    decode_request, decode_response, encode_request, encode_response, hello, Decoded, Hello,
    Metadata, MAX_KEY_LEN, MAX_MESSAGE_LEN, MAX_META_LEN, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};

/// Largest frame a decoder may ask to buffer: a request header with the longest key and
/// metadata (the response's message is shorter than a key).
pub const MAX_FRAME: usize = REQUEST_HEADER_LEN + MAX_KEY_LEN + MAX_META_LEN;

/// The request decoder on `buf`: no panic; "need more" never asks beyond [`MAX_FRAME`];
/// a decoded frame lies within `buf`, respects the limits, and encodes back to exactly the
/// bytes it was decoded from (decode(encode(x)) == x, the encoding being canonical).
pub fn request_bytes(buf: &[u8]) {
    match decode_request(buf) {
        Ok(Decoded::Incomplete(n)) => {
            assert!(n > buf.len(), "Incomplete({n}) with {} bytes", buf.len());
            assert!(n <= MAX_FRAME, "asks to buffer {n} bytes");
        }
        Ok(Decoded::Complete(req, n)) => {
            assert!(n <= buf.len() && n <= MAX_FRAME);
            assert_eq!(n, req.header.frame_len());
            assert_eq!(req.key.len(), req.header.key_len as usize);
            assert!(req.key.len() <= MAX_KEY_LEN && req.meta.len() <= MAX_META_LEN);
            let mut out = Vec::new();
            encode_request(&req.header, req.key, req.meta, &mut out);
            assert_eq!(out, &buf[..n], "re-encoding differs");
            let again = decode_request(&out).expect("re-decoding failed");
            assert_eq!(again, Decoded::Complete(req, n));
        }
        Err(e) => {
            // Every error has a status and a message within the wire's message limit.
            let _ = e.status();
            assert!(e.to_string().len() <= MAX_MESSAGE_LEN);
        }
    }
}

/// The response decoder on `buf`: as [`request_bytes`].
pub fn response_bytes(buf: &[u8]) {
    match decode_response(buf) {
        Ok(Decoded::Incomplete(n)) => {
            assert!(n > buf.len());
            assert!(n <= MAX_FRAME, "asks to buffer {n} bytes");
        }
        Ok(Decoded::Complete(resp, n)) => {
            assert!(n <= buf.len());
            assert_eq!(n, resp.header.frame_len());
            assert!(resp.message.len() <= MAX_MESSAGE_LEN && resp.meta.len() <= MAX_META_LEN);
            if let Ok(msg) = std::str::from_utf8(resp.message) {
                let mut out = Vec::new();
                encode_response(&resp.header, msg, resp.meta, &mut out);
                assert_eq!(out, &buf[..n], "re-encoding differs");
            }
        }
        Err(e) => {
            let _ = e.status();
        }
    }
}

/// The metadata decoder on `buf`: no panic; what decodes re-encodes within the limit and
/// decodes to the same value.
pub fn metadata_bytes(buf: &[u8]) {
    let Ok(m) = Metadata::decode(buf) else {
        return;
    };
    let enc = m.to_bytes().expect("a decoded section re-encodes");
    assert!(enc.len() <= MAX_META_LEN.max(buf.len()));
    assert_eq!(Metadata::decode(&enc).expect("re-decoding failed"), m);
}

/// The HELLO decoder on `buf`: no panic; what decodes re-encodes to the same 16 bytes.
pub fn hello_bytes(buf: &[u8]) {
    if let Ok(h) = Hello::decode(buf) {
        assert_eq!(&h.encode()[..], &buf[..hello::HELLO_LEN]);
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }
}

/// UDP framing: the header decoder on each datagram (no panic, canonical re-encoding),
/// and a [`Reassembler`] limited to `max_message` fed all of them: it never holds or
/// yields more than `max_message` bytes.
pub fn udp_datagrams(request_id: u32, max_message: usize, datagrams: &[&[u8]]) {
    let mut r = Reassembler::new(request_id, max_message);
    for d in datagrams {
        if let Some((h, chunk)) = UdpHeader::decode(d) {
            assert_eq!(&h.encode()[..], &d[..UDP_HEADER_LEN]);
            assert_eq!(chunk.len(), d.len() - UDP_HEADER_LEN);
            assert!(h.seq < h.total);
        }
        if let Ok(Some(msg)) = r.push(d) {
            assert!(msg.len() <= max_message, "reassembled {} bytes", msg.len());
        }
    }
}

/// UDP round trip: `message` split into datagrams of `payload` bytes and fed in the given
/// order (indices taken modulo the count; every datagram is also fed once at the end)
/// reassembles to exactly `message`.
pub fn udp_roundtrip(request_id: u32, message: &[u8], payload: usize, order: &[u16]) {
    let payload = payload.max(1);
    if message.len().div_ceil(payload) > u16::MAX as usize {
        return;
    }
    let ds = udp::split(request_id, message, payload);
    let mut r = Reassembler::new(request_id, message.len());
    let mut done = None;
    let feed = order
        .iter()
        .map(|i| *i as usize % ds.len())
        .chain(0..ds.len());
    for i in feed {
        match r.push(&ds[i]) {
            Ok(Some(m)) => {
                assert!(done.is_none(), "message completed twice");
                done = Some(m);
            }
            Ok(None) => {}
            Err(e) => panic!("own datagram {i} rejected: {e:?}"),
        }
    }
    assert_eq!(done.as_deref(), Some(message));
}

/// RESPONSE_HEADER_LEN, re-exported for the targets' input shaping.
pub const RESPONSE_HEADER: usize = RESPONSE_HEADER_LEN;
