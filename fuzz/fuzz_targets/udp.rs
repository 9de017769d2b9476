//! UDP framing: arbitrary datagrams into a reassembler (first 2 bytes: the size limit),
//! and split/reassemble round trips of arbitrary messages in arbitrary order.
#![no_main]
use libfuzzer_sys::fuzz_target;
use objmapper_proto::check;

#[global_allocator]
static ALLOC: objmapper_fuzz::Limited = objmapper_fuzz::Limited;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max = u16::from_le_bytes([data[0], data[1]]) as usize;
    let cut = data[2].max(1) as usize;
    let rest = &data[4..];
    // Datagrams: the rest cut into pieces of `cut` bytes.
    let ds: Vec<&[u8]> = rest.chunks(cut).collect();
    let id = ds
        .first()
        .filter(|d| d.len() >= 4)
        .map_or(0, |d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
    check::udp_datagrams(id, max, &ds);
    let order: Vec<u16> = rest.iter().map(|b| *b as u16).collect();
    check::udp_roundtrip(7, rest, data[3].max(1) as usize, &order);
});
