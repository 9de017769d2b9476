//! The frame decoders (requests and responses) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use objmapper_proto::check;

#[global_allocator]
static ALLOC: objmapper_fuzz::Limited = objmapper_fuzz::Limited;

fuzz_target!(|data: &[u8]| {
    check::request_bytes(data);
    check::response_bytes(data);
    // The same bytes behind a valid magic reach the deeper checks more often.
    let mut v = Vec::with_capacity(data.len() + 1);
    for magic in [
        objmapper_proto::MAGIC_REQ_V1,
        objmapper_proto::MAGIC_REQ_V2,
    ] {
        v.clear();
        v.push(magic);
        v.extend_from_slice(data);
        check::request_bytes(&v);
    }
    for magic in [
        objmapper_proto::MAGIC_RESP_V1,
        objmapper_proto::MAGIC_RESP_V2,
    ] {
        v.clear();
        v.push(magic);
        v.extend_from_slice(data);
        check::response_bytes(&v);
    }
});
