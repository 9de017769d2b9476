//! The metadata decoder on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: objmapper_fuzz::Limited = objmapper_fuzz::Limited;

fuzz_target!(|data: &[u8]| objmapper_proto::check::metadata_bytes(data));
