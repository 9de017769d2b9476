//! The C API against the protocol crate and the header: every status and op is
//! exported with the right value, `objm_status_name` names every status, the request
//! flags and capabilities are the wire's bits, and every function in the header is
//! documented (returns, ownership or errors, thread-safety).
// Calls the C API's functions and reads the strings they return.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CStr;

use objmapper::*;
use objmapper_proto::{hello::caps, req_flags, Op, Status, MAX_KEY_LEN};

/// `#define NAME VALUE` lines of the header.
fn defines() -> BTreeMap<String, i64> {
    let h = include_str!("../include/objmapper.h");
    h.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("#define ")?.split_whitespace();
            let name = w.next()?.to_string();
            let v = w.next()?.parse::<i64>().ok()?;
            Some((name, v))
        })
        .collect()
}

#[test]
fn every_status_is_exported_and_named() {
    let d = defines();
    for s in Status::ALL {
        let c = format!("OBJM_STATUS_{}", s.name());
        assert_eq!(d.get(&c), Some(&i64::from(s.as_u8())), "{c} in the header");
        // SAFETY: objm_status_name returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(objm_status_name(i32::from(s.as_u8()))) };
        assert_eq!(name.to_str().unwrap(), s.name());
    }
    let exported = d
        .keys()
        .filter(|k| k.starts_with("OBJM_STATUS_") && *k != "OBJM_STATUS_LOCAL")
        .count();
    assert_eq!(
        exported,
        Status::ALL.len(),
        "no status beyond the protocol's"
    );
    let unknown = |v| {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(objm_status_name(v)) }
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(unknown(Status::ALL.len() as i32), "UNKNOWN");
    assert_eq!(unknown(i32::MAX), "UNKNOWN");
    assert_eq!(unknown(i32::MIN), "UNKNOWN");
    assert_eq!(unknown(OBJM_STATUS_LOCAL), "LOCAL");
}

#[test]
fn every_op_but_hello_has_a_request_op() {
    let d = defines();
    let mut values = Vec::new();
    for op in Op::ALL {
        let c = format!("OBJM_OP_{}", op.name());
        if *op == Op::Hello {
            assert!(
                !d.contains_key(&c),
                "HELLO is objm_client_hello(), not an op"
            );
            continue;
        }
        let v = *d
            .get(&c)
            .unwrap_or_else(|| panic!("{c} missing from the header"));
        values.push(v);
    }
    assert_eq!(
        d["OBJM_OP_GET"], 0,
        "GET is 0: the seed's requests are GETs"
    );
    values.sort();
    values.dedup();
    assert_eq!(values.len(), Op::ALL.len() - 1, "op values are distinct");
}

#[test]
fn flags_modes_caps_and_limits_are_the_wire_values() {
    assert_eq!(OBJM_FLAG_DURABLE, req_flags::DURABLE);
    assert_eq!(OBJM_FLAG_EPHEMERAL, req_flags::EPHEMERAL);
    assert_eq!(OBJM_FLAG_PIN, req_flags::PIN);
    assert_eq!(OBJM_FLAG_IF_VERSION, req_flags::IF_VERSION);
    assert_eq!(OBJM_FLAG_IF_ABSENT, req_flags::IF_ABSENT);
    assert_eq!(OBJM_FLAG_ORDERED, req_flags::ORDERED);
    assert_eq!(OBJM_CAP_PIPELINE, caps::PIPELINE);
    assert_eq!(OBJM_CAP_OUT_OF_ORDER, caps::OUT_OF_ORDER);
    assert_eq!(OBJM_CAP_FD_PASSING, caps::FD_PASSING);
    use objmapper_proto::Mode;
    assert_eq!(OBJM_MODE_FDPASS, Mode::Fd.as_u8());
    assert_eq!(OBJM_MODE_COPY, Mode::Copy.as_u8());
    assert_eq!(OBJM_MODE_SPLICE, Mode::Splice.as_u8());
    assert_eq!(OBJM_MODE_AUTO, Mode::Auto.as_u8());
    assert_eq!(OBJM_MAX_KEY_LEN, MAX_KEY_LEN);
    assert_eq!(
        OBJM_MAX_CONTENT_TYPE_LEN,
        objmapper_proto::MAX_CONTENT_TYPE_LEN
    );
    use objmapper_proto::{ObjectState, Tier};
    assert_eq!(OBJM_TIER_MEMORY, Tier::Memory.as_u8());
    assert_eq!(OBJM_TIER_DISK, Tier::Disk.as_u8());
    assert_eq!(OBJM_TIER_BOTH, Tier::Both.as_u8());
    assert_eq!(OBJM_STATE_PINNED, ObjectState::PINNED);
    assert_eq!(OBJM_STATE_EPHEMERAL, ObjectState::EPHEMERAL);
    assert_eq!(OBJM_STATE_DIRTY, ObjectState::DIRTY);
}

/// Every function declared in the header has a comment that says what it returns or
/// does on failure, and how it may be used across threads.
#[test]
fn every_function_in_the_header_is_documented() {
    let h = include_str!("../include/objmapper.h");
    let lines: Vec<&str> = h.lines().collect();
    let mut checked = 0;
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l
            .split('(')
            .next()
            .and_then(|head| head.rsplit([' ', '*']).next())
            .filter(|n| n.starts_with("objm_") && l.contains('('))
        else {
            continue;
        };
        if l.starts_with("//") || l.starts_with(' ') || l.starts_with("typedef") {
            continue;
        }
        let doc: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("//"))
            .copied()
            .collect();
        let doc = doc.join("\n");
        assert!(
            doc.contains("Thread-safety"),
            "{name}: the header comment does not state its thread-safety"
        );
        assert!(
            doc.contains("Returns") || doc.contains("NULL is ignored"),
            "{name}: the header comment does not state what it returns"
        );
        checked += 1;
    }
    assert!(
        checked >= 25,
        "only {checked} functions found in the header"
    );
}

#[test]
fn request_and_response_layouts_are_plain_c() {
    // The C side sees these sizes (x86_64/aarch64 LP64); a field added or reordered in
    // Rust changes the header too (tests/header.rs), and the examples are compiled
    // against it.
    assert_eq!(std::mem::size_of::<objm_hello_t>(), 8);
    assert_eq!(std::mem::size_of::<objm_meta_pair_t>(), 24);
    assert_eq!(std::mem::offset_of!(objm_request_t, uri), 8);
    assert_eq!(std::mem::offset_of!(objm_response_t, fd), 8);
}

#[test]
fn the_positional_reads_promise_is_the_wire_bit() {
    assert_eq!(OBJM_CAP_POSITIONAL_READS, caps::POSITIONAL_READS);
}
