//! The HELLO handshake: the body decoder, and a whole HELLO request frame (frame decoder,
//! then the body that follows it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use objmapper_proto::{check, Decoded, Op, RequestHeader, Version};

#[global_allocator]
static ALLOC: objmapper_fuzz::Limited = objmapper_fuzz::Limited;

fuzz_target!(|data: &[u8]| {
    check::hello_bytes(data);
    // As the server reads it: a V2 HELLO header declaring 16 fixed bytes plus a token
    // whose length the first input byte picks (0..=255, and 256..=271 past the limit),
    // then the body bytes from the input.
    let mut frame = Vec::new();
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 1);
    let token = data.first().map_or(0, |&b| u64::from(b) + u64::from(b >= 240) * 16);
    h.length = objmapper_proto::hello::HELLO_LEN as u64 + token;
    objmapper_proto::encode_request(&h, b"", b"", &mut frame);
    frame.extend_from_slice(data);
    check::request_bytes(&frame);
    if let Ok(Decoded::Complete(_, n)) = objmapper_proto::decode_request(&frame) {
        check::hello_bytes(&frame[n..]);
    }
});
