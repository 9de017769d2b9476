//! Committed objects cannot be changed through the staging fd.
// Maps a staging memfd writable (mmap) to show that sealing stops writes through it.
#![allow(unsafe_code)]

mod common;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use common::*;
use objmapper_store::{CommitError, PutMeta, PutOptions, StoreError};
use rustix::fs::SealFlags;

#[test]
fn staging_fd_is_sealed_after_commit() {
    let (_dir, store) = temp_store();
    let s = staged(&store, b"k", b"original");
    // What a client in fd mode would hold on to.
    let client: OwnedFd = rustix::io::dup(s.fd().unwrap()).unwrap();
    s.commit(8, PutMeta::default(), PutOptions::default())
        .unwrap();

    let mut f = std::fs::File::from(client);
    assert!(
        f.write_all(b"EVIL").is_err(),
        "write after commit must fail"
    );
    assert!(rustix::io::pwrite(&f, b"EVIL", 0).is_err());
    assert!(f.set_len(0).is_err(), "shrink after commit must fail");
    assert!(f.set_len(100).is_err(), "grow after commit must fail");
    let seals = rustix::fs::fcntl_get_seals(&f).unwrap();
    assert!(
        seals.contains(SealFlags::WRITE | SealFlags::SEAL),
        "{seals:?}"
    );
    assert!(rustix::fs::fcntl_add_seals(&f, SealFlags::empty()).is_err());
    assert_eq!(get_bytes(&store, b"k").unwrap(), b"original");
    // The reader's fd is read-only.
    let obj = store.get(b"k").unwrap().unwrap();
    assert!(obj.file.set_len(0).is_err(), "reader fd is read-only");
}

#[test]
fn writable_mapping_blocks_commit_until_unmapped() {
    let (_dir, store) = temp_store();
    let mut s = store.begin_put(b"k").unwrap();
    s.write_all(&[b'a'; 4096]).unwrap();
    let len = 4096;
    // SAFETY: maps a 4096-byte memfd we own; unmapped below before it is dropped.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            s.fd().unwrap().as_fd(),
            0,
        )
        .unwrap()
    };
    // SAFETY: ptr is a valid writable mapping of `len` bytes.
    unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), b'b', 1) };
    let err = s.seal().unwrap_err();
    assert!(matches!(err, CommitError::WritableMapping), "{err:?}");
    assert!(err.to_string().contains("munmap"), "{err}");
    // SAFETY: unmapping the mapping created above.
    unsafe { rustix::mm::munmap(ptr, len).unwrap() };
    s.seal().unwrap();
    s.seal().unwrap(); // idempotent
    s.commit(4096, PutMeta::default(), PutOptions::default())
        .unwrap();
    let got = get_bytes(&store, b"k").unwrap();
    assert_eq!(got[0], b'b');
    assert!(got[1..].iter().all(|&c| c == b'a'));
}

#[test]
fn commit_with_live_mapping_fails_and_publishes_nothing() {
    let (dir, store) = temp_store();
    let mut s = store.begin_put(b"k").unwrap();
    s.write_all(&[1; 100]).unwrap();
    // SAFETY: maps the memfd; unmapped below.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            100,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            s.fd().unwrap().as_fd(),
            0,
        )
        .unwrap()
    };
    let r = s.commit(100, PutMeta::default(), PutOptions::default());
    assert!(matches!(r, Err(CommitError::WritableMapping)));
    // SAFETY: unmapping the mapping created above.
    unsafe { rustix::mm::munmap(ptr, 100).unwrap() };
    assert!(store.get(b"k").unwrap().is_none());
    assert!(object_files(dir.path()).is_empty());
}

#[test]
fn client_cannot_block_sealing_silently() {
    let (_dir, store) = temp_store();
    let s = staged(&store, b"k", b"x");
    // A hostile client seals the seals without F_SEAL_WRITE.
    rustix::fs::fcntl_add_seals(s.fd().unwrap(), SealFlags::SEAL).unwrap();
    assert!(matches!(
        s.commit(1, PutMeta::default(), PutOptions::default()),
        Err(CommitError::Store(StoreError::Io { .. }))
    ));
    assert!(store.get(b"k").unwrap().is_none());
}
