//! Shared descriptions: fd-mode GETs of a client that promised POSITIONAL_READS get one
//! cached file description per version. Clients then share its offset (documented), but
//! never see the wrong object: a replaced or deleted key is answered from the index, and
//! versions are never reused. (What the promise buys and refuses: shared_descriptions.rs.)

mod util;

use objmapper_proto::*;
use util::wire::Wire;
use util::*;

fn offset_of(fd: &std::os::fd::OwnedFd) -> u64 {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).unwrap()
}

#[test]
fn shared_fds_share_one_description_and_stay_correct() {
    let ts = TestServer::start();
    let mut c = Wire::unix(&ts.socket());
    c.hello(hello::caps::FD_PASSING | hello::caps::POSITIONAL_READS, 1);
    assert_status(&c.put(b"k", Mode::Copy, b"version one"), Status::Ok);
    let a = c.get(b"k", Mode::Fd, 0, 0).fd.unwrap();
    let b = c.get(b"k", Mode::Fd, 0, 0).fd.unwrap();
    // One description: moving one offset moves the other.
    rustix::fs::seek(&a, rustix::fs::SeekFrom::Start(4)).unwrap();
    assert_eq!(offset_of(&b), 4);
    // Still read-only, and pread reads the right bytes whatever the offset.
    assert_eq!(read_fd(&b), b"version one");
    let fl = rustix::fs::fcntl_getfl(&a).unwrap();
    assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::RDONLY);
    // A new version gets a new file; old holders keep their snapshot.
    assert_status(&c.put(b"k", Mode::Copy, b"version two"), Status::Ok);
    let n = c.get(b"k", Mode::Fd, 0, 0).fd.unwrap();
    assert_eq!(read_fd(&n), b"version two");
    assert_eq!(read_fd(&a), b"version one");
    // Deleted means not found, cache or not.
    assert_status(
        &c.call(Op::Delete, Mode::None, b"k", b"", |_| {}),
        Status::Ok,
    );
    assert_status(&c.get(b"k", Mode::Fd, 0, 0), Status::NotFound);
}

#[test]
fn by_default_every_get_gets_its_own_description() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"k", b"private"), Status::Ok);
    let a = c.get_fd(b"k").fd.unwrap();
    let b = c.get_fd(b"k").fd.unwrap();
    rustix::fs::seek(&a, rustix::fs::SeekFrom::Start(4)).unwrap();
    assert_eq!(offset_of(&b), 0, "private offsets");
}
