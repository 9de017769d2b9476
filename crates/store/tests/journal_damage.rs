//! Damage to the journal costs the damaged records, never their neighbours, and
//! an object whose file carries its label (its own record, in an extended
//! attribute) comes back from the label; no file the store cannot account for is
//! deleted; a deleted version never comes back; versions never go backwards
//! (docs/STORAGE.md, "Faults: a damaged or lost journal"). Real damage to real
//! files: bytes flipped, the journal deleted, labels removed, the format
//! downgraded.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use objmapper_store::journal::{decode, decode_file_header, Decoded, Record, FILE_HEADER_LEN};
use objmapper_store::{Store, StoreConfig};
use tempfile::TempDir;
use xxhash_rust::xxh3::xxh3_64;

const N: usize = 12;

fn key(i: usize) -> Vec<u8> {
    format!("obj/{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    pattern(i as u64 + 1, 100 + i * 37)
}

/// A store with N objects; returns it and the highest version handed out.
fn fill(dir: &Path) -> (Store, u64) {
    let store = open(dir);
    let mut max = 0;
    for i in 0..N {
        max = max.max(put_with(&store, &key(i), &value(i), Default::default(), true).version);
    }
    (store, max)
}

/// File names (not paths) of every object file in objects/ and lost+found/.
fn object_names(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in files_under(&dir.join("objects"))
        .into_iter()
        .chain(files_under(&dir.join("lost+found")))
    {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.len() == 49 {
            out.insert(name);
        }
    }
    out
}

fn lost_found(dir: &Path) -> Vec<String> {
    files_under(&dir.join("lost+found"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// (offset, length, record) of every record of the journal.
fn records(dir: &Path) -> Vec<(usize, usize, Record)> {
    let bytes = std::fs::read(journal_path(dir)).unwrap();
    let salt = decode_file_header(&bytes).expect("journal header");
    let mut pos = FILE_HEADER_LEN;
    let mut out = Vec::new();
    while pos < bytes.len() {
        match decode(&bytes[pos..], salt) {
            Decoded::Record { record, len } => {
                out.push((pos, len, record));
                pos += len;
            }
            other => panic!("journal at {pos}: {other:?}"),
        }
    }
    out
}

/// Removes the label of every object file (as a filesystem without user extended
/// attributes, or an older version, would have left them).
fn strip_labels(dir: &Path) {
    for p in files_under(&dir.join("objects")) {
        match rustix::fs::removexattr(&p, "user.objmapper") {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => panic!("removexattr {}: {e}", p.display()),
        }
    }
}

/// Whether this filesystem keeps user extended attributes (the labels).
fn labels_work(dir: &Path) -> bool {
    files_under(&dir.join("objects")).iter().all(|p| {
        let mut buf = [0u8; 16];
        !matches!(
            rustix::fs::getxattr(p, "user.objmapper", &mut buf),
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP)
        )
    })
}

fn flip(dir: &Path, at: usize) {
    let path = journal_path(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
}

fn served(store: &Store) -> usize {
    served_of(store, 0..N)
}

fn served_of(store: &Store, keys: std::ops::Range<usize>) -> usize {
    keys.filter(|&i| match get_bytes(store, &key(i)) {
        Some(b) => {
            assert_eq!(b, value(i), "object {i} served with wrong bytes");
            true
        }
        None => false,
    })
    .count()
}

/// Opens with the orphan sweep run to completion, so a test sees what it deletes.
fn open_and_sweep(dir: &Path) -> Store {
    let mut cfg = StoreConfig::new(dir)
        .with_mem_dir_inside()
        .without_memory_tier();
    cfg.sweep_orphans_on_open = false;
    let store = Store::open(cfg).expect("open store");
    store.sweep_orphans().unwrap();
    store
}

/// Flips a byte in the record `pick` chooses. With labels, nothing is lost (the
/// file's label gives its record back); without (`strip`), that record's object
/// is lost and its file kept in lost+found/.
fn flipped_record(pick: impl Fn(&Record) -> bool, clean: bool, strip: bool) {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    if clean {
        store.close().unwrap();
    } else {
        drop(store);
    }
    if !strip && !labels_work(dir.path()) {
        eprintln!("SKIPPED: the temp dir's filesystem keeps no user extended attributes");
        return;
    }
    if strip {
        strip_labels(dir.path());
    }
    let files_before = object_names(dir.path());
    assert_eq!(files_before.len(), N);
    let recs = records(dir.path());
    let (off, len, rec) = recs.iter().find(|(_, _, r)| pick(r)).unwrap();
    flip(dir.path(), off + len / 2);

    let store = open_and_sweep(dir.path());
    let n = served(&store);
    let lost_put = strip && matches!(rec, Record::Put(_));
    let lost_key0 = lost_put && matches!(rec, Record::Put(m) if *m.key == *key(0));
    assert_eq!(
        n,
        if lost_put { N - 1 } else { N },
        "damage cost more than its record"
    );
    // No intact object file was deleted: each is served or in lost+found/.
    assert_eq!(object_names(dir.path()), files_before);
    let lf = lost_found(dir.path());
    assert!(lf.iter().any(|f| f.starts_with("journal-disk-")), "{lf:?}");
    if let Record::Put(m) = rec {
        let name = store
            .object_path(&m.key, m.version)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if strip {
            assert!(store.get(&m.key).unwrap().is_none());
            assert!(lf.contains(&name), "{name} not in {lf:?}");
        } else {
            let back = store
                .get(&m.key)
                .unwrap()
                .expect("re-admitted from its label");
            assert_eq!(back.meta.version, m.version);
            assert_eq!(back.meta.checksum, m.checksum);
            assert!(!lf.contains(&name), "{name} in {lf:?}");
        }
    }
    // Versions go on above everything handed out before.
    let rest = served_of(&store, 1..N);
    let m = put(&store, &key(0), b"new");
    assert!(m.version > max, "{} <= {max}", m.version);
    drop(store);

    // The journal was rewritten: the next open sees no damage and loses nothing more.
    let store = open_and_sweep(dir.path());
    assert_eq!(get_bytes(&store, &key(0)).unwrap(), b"new");
    assert_eq!(served_of(&store, 1..N), rest);
    // Only key 0's replaced version may be gone (the new PUT unlinks it).
    let after = object_names(dir.path());
    assert_eq!(
        files_before.difference(&after).count(),
        usize::from(!lost_key0)
    );
}

fn flipped_record_costs_one_object(pick: impl Fn(&Record) -> bool + Clone, clean: bool) {
    flipped_record(pick.clone(), clean, false);
    flipped_record(pick, clean, true);
}

#[test]
fn a_flipped_byte_in_the_first_put_costs_that_object_only() {
    flipped_record_costs_one_object(|r| matches!(r, Record::Put(_)), true);
}

#[test]
fn a_flipped_byte_in_the_first_put_after_a_crash_costs_that_object_only() {
    flipped_record_costs_one_object(|r| matches!(r, Record::Put(_)), false);
}

#[test]
fn a_flipped_byte_in_the_first_record_costs_no_object() {
    flipped_record_costs_one_object(|_| true, true);
}

#[test]
fn a_flipped_byte_in_a_middle_put_costs_that_object_only() {
    let pick = || {
        let seen = std::cell::Cell::new(0);
        move |r: &Record| {
            if matches!(r, Record::Put(_)) {
                seen.set(seen.get() + 1);
            }
            seen.get() == N / 2
        }
    };
    flipped_record(pick(), true, false);
    flipped_record(pick(), true, true);
}

#[test]
fn a_damaged_length_field_is_not_followed() {
    let dir = TempDir::new().unwrap();
    let (store, _) = fill(dir.path());
    store.close().unwrap();
    let (off, _, _) = records(dir.path())
        .into_iter()
        .find(|(_, _, r)| matches!(r, Record::Put(_)))
        .unwrap();
    // len is bytes 8..12 of a record: make it claim far more than the file holds.
    flip(dir.path(), off + 10);
    strip_labels(dir.path());
    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N - 1);
    assert_eq!(object_names(dir.path()).len(), N);
}

#[test]
fn a_damaged_file_header_costs_nothing() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    store.close().unwrap();
    flip(dir.path(), 10); // inside the salt
    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N);
    assert!(put(&store, &key(1), b"x").version > max);
}

#[test]
fn a_deleted_journal_is_noticed_and_rewritten() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    std::fs::remove_file(journal_path(dir.path())).unwrap();
    // The periodic checkpoint notices (the server runs one every 30 s).
    store.checkpoint().unwrap();
    assert!(journal_path(dir.path()).exists(), "journal not rewritten");
    drop(store); // crash

    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N);
    assert!(lost_found(dir.path()).is_empty());
    assert!(put(&store, &key(3), b"v").version > max);
}

#[test]
fn a_deleted_journal_is_noticed_by_the_next_append() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    std::fs::remove_file(journal_path(dir.path())).unwrap();
    let m = put_with(&store, b"later", b"L", Default::default(), true);
    assert!(m.version > max);
    assert!(journal_path(dir.path()).exists(), "journal not rewritten");
    drop(store);
    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N);
    assert_eq!(get_bytes(&store, b"later").unwrap(), b"L");
}

#[test]
fn a_journal_lost_before_it_was_noticed_keeps_every_file_and_every_version() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    let files_before = object_names(dir.path());
    std::fs::remove_file(journal_path(dir.path())).unwrap();
    drop(store); // dies before any check
    strip_labels(dir.path());

    let store = open_and_sweep(dir.path());
    // No key is known for any file: all of them are kept in lost+found/, none deleted.
    assert_eq!(object_names(dir.path()), files_before);
    assert_eq!(
        lost_found(dir.path())
            .iter()
            .filter(|f| f.len() == 49)
            .count(),
        N
    );
    // ETags are never reused: a new PUT to an old key gets a newer version.
    let m = put(&store, &key(0), b"again");
    assert!(m.version > max, "{} <= {max}", m.version);
    drop(store);
    // Even when HIGHWATER is lost as well, the file names carry the versions.
    let dir2 = TempDir::new().unwrap();
    let (store, max) = fill(dir2.path());
    drop(store);
    std::fs::remove_file(journal_path(dir2.path())).unwrap();
    std::fs::remove_file(dir2.path().join("HIGHWATER")).unwrap();
    let store = open_and_sweep(dir2.path());
    assert!(put(&store, &key(0), b"x").version > max);
}

#[test]
fn a_lost_journal_is_rebuilt_from_the_files_labels() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    // One object with metadata and an expiry, to see them come back.
    let meta = objmapper_store::PutMeta {
        content_type: Some("text/html".into()),
        custom: vec![("h:ETag".into(), b"\"v1\"".to_vec())],
        expires_at: Some(4_000_000_000),
    };
    let rich = put_with(&store, b"rich", b"<p>", meta, true);
    // One deleted and one expired object: neither may come back.
    put_with(&store, b"gone", b"deleted", Default::default(), true);
    assert!(store.delete(b"gone").unwrap());
    put_with(
        &store,
        b"stale",
        b"expired",
        objmapper_store::PutMeta {
            expires_at: Some(1),
            ..Default::default()
        },
        true,
    );
    store.close().unwrap();
    if !labels_work(dir.path()) {
        eprintln!("SKIPPED: the temp dir's filesystem keeps no user extended attributes");
        return;
    }
    std::fs::remove_file(journal_path(dir.path())).unwrap();
    std::fs::remove_file(dir.path().join("HIGHWATER")).unwrap();

    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N, "every labelled object is back");
    let back = store.get(b"rich").unwrap().expect("rich is back");
    assert_eq!(back.meta.version, rich.version);
    // The label's time is when the file was written: at or a little before the commit.
    assert!(back.meta.mtime_ns > 0 && back.meta.mtime_ns <= rich.mtime_ns);
    assert!(rich.mtime_ns - back.meta.mtime_ns < 60_000_000_000);
    assert_eq!(back.meta.content_type.as_deref(), Some("text/html"));
    assert_eq!(
        back.meta.custom,
        vec![("h:ETag".into(), (*b"\"v1\"").into())]
    );
    assert_eq!(back.meta.expires_at, Some(4_000_000_000));
    assert!(
        store.get(b"gone").unwrap().is_none(),
        "a deleted object came back"
    );
    assert!(
        store.get(b"stale").unwrap().is_none(),
        "an expired object came back"
    );
    assert!(put(&store, &key(0), b"x").version > max);
    drop(store);
    // The rebuilt journal holds them: a second open finds no damage.
    let store = open_and_sweep(dir.path());
    assert_eq!(served_of(&store, 1..N), N - 1);
    assert!(store.get(b"rich").unwrap().is_some());
}

#[test]
fn a_deleted_version_whose_file_survived_never_comes_back() {
    let dir = TempDir::new().unwrap();
    let (store, _) = fill(dir.path());
    // Keep a second name for key 0's file, delete the key, then put the file back
    // (as a crash between the DEL record and the unlink would leave it).
    let m = store.head(&key(0)).unwrap();
    let path = store.object_path(&key(0), m.version);
    let keep = dir.path().join("kept");
    std::fs::hard_link(&path, &keep).unwrap();
    assert!(store.delete(&key(0)).unwrap());
    store.close().unwrap();
    std::fs::rename(&keep, &path).unwrap();
    if !labels_work(dir.path()) {
        eprintln!("SKIPPED: the temp dir's filesystem keeps no user extended attributes");
        return;
    }
    // Damage another record so that recovery accounts for every file.
    let recs = records(dir.path());
    let (off, len, _) = recs
        .iter()
        .find(|(_, _, r)| matches!(r, Record::Put(m) if *m.key == *key(1)))
        .unwrap();
    flip(dir.path(), off + len / 2);
    let store = open_and_sweep(dir.path());
    assert!(
        store.get(&key(0)).unwrap().is_none(),
        "a deleted object came back"
    );
    assert_eq!(
        served_of(&store, 1..N),
        N - 1,
        "key 1 came back from its label"
    );
    let name = format!("{}.deleted", path.file_name().unwrap().to_str().unwrap());
    assert!(
        lost_found(dir.path()).contains(&name),
        "{:?}",
        lost_found(dir.path())
    );
}

#[test]
fn a_torn_tail_still_recovers_as_before() {
    let dir = TempDir::new().unwrap();
    let (store, _) = fill(dir.path());
    drop(store);
    let recs = records(dir.path());
    let (off, len, _) = recs.last().unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(journal_path(dir.path()))
        .unwrap();
    f.set_len((off + len / 2) as u64).unwrap();
    drop(f);
    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N - 1);
    assert_eq!(
        std::fs::metadata(journal_path(dir.path())).unwrap().len(),
        *off as u64
    );
    // A torn tail is the normal crash case: its file is an orphan, swept as before.
    assert!(!dir.path().join("lost+found").exists());
    assert_eq!(object_names(dir.path()).len(), N - 1);
}

#[test]
fn a_format_2_directory_is_read_and_upgraded() {
    let dir = TempDir::new().unwrap();
    let (store, max) = fill(dir.path());
    store.close().unwrap();
    // Rewrite the journal in format 2 framing: no file header, [len][crc][body].
    let mut old = Vec::new();
    let bytes = std::fs::read(journal_path(dir.path())).unwrap();
    for (off, len, _) in records(dir.path()) {
        let body = &bytes[off + 12..off + len];
        old.extend_from_slice(&(body.len() as u32).to_le_bytes());
        old.extend_from_slice(&(xxh3_64(body) as u32).to_le_bytes());
        old.extend_from_slice(body);
    }
    std::fs::write(journal_path(dir.path()), &old).unwrap();
    std::fs::write(dir.path().join("FORMAT"), "objmapper-store 2\n").unwrap();
    std::fs::remove_file(dir.path().join("HIGHWATER")).unwrap();

    let store = open_and_sweep(dir.path());
    assert_eq!(served(&store), N);
    assert!(put(&store, &key(2), b"x").version > max);
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("FORMAT")).unwrap(),
        b"objmapper-store 3\n"
    );
    assert!(records(dir.path()).len() > N);
    assert!(!dir.path().join("lost+found").exists());
}
