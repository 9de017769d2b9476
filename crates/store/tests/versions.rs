//! Versions are unique and never reused, even across unclean reopen.

mod common;

use common::*;
use objmapper_store::journal::{
    decode, decode_file_header, Decoded, Record, FILE_HEADER_LEN, RESERVE_RECORD_LEN,
};
use tempfile::TempDir;

#[test]
fn versions_increase_across_unclean_reopens() {
    let dir = TempDir::new().unwrap();
    let mut max = 0;
    let mut seen = std::collections::HashSet::new();
    for round in 0..4 {
        let store = open(dir.path());
        for i in 0..10 {
            let m = put(&store, format!("k{i}").as_bytes(), b"x");
            assert!(m.version > max, "round {round}: {} <= {max}", m.version);
            assert!(seen.insert(m.version));
            max = m.version;
        }
        // Deleted versions must not come back either.
        for i in 0..10 {
            store.delete(format!("k{i}").as_bytes()).unwrap();
        }
        if round % 2 == 0 {
            drop(store);
        } else {
            store.close().unwrap();
        }
    }
}

#[test]
fn reservation_covers_versions_whose_records_were_lost() {
    let (dir, store) = temp_store();
    let mut last = 0;
    for i in 0..5 {
        last = put(&store, format!("k{i}").as_bytes(), b"x").version;
    }
    drop(store);

    // Lose every record after the RESERVE the first PUT wrote, as if the PUT
    // records never reached the journal before a crash.
    let path = journal_path(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let salt = decode_file_header(&bytes).expect("journal file header");
    let mut pos = FILE_HEADER_LEN;
    let (upto, end) = loop {
        match decode(&bytes[pos..], salt) {
            Decoded::Record {
                record: Record::Reserve { upto },
                len,
            } if upto > 0 => {
                assert_eq!(len, RESERVE_RECORD_LEN);
                break (upto, pos + len);
            }
            Decoded::Record { len, .. } => pos += len,
            other => panic!("journal must hold a RESERVE: {other:?}"),
        }
    };
    assert!(upto >= last);
    std::fs::write(&path, &bytes[..end]).unwrap();

    let store = open(dir.path());
    assert!(store.is_empty());
    let m = put(&store, b"new", b"y");
    assert!(
        m.version > upto,
        "{} must exceed reservation {upto}",
        m.version
    );
}
