//! The store's guarantees (DESIGN.md), each checked against the real server over its socket.

mod util;

use objmapper_proto::*;
use std::io::Write;
use util::*;

#[test]
fn copy_and_fd_roundtrip_with_metadata() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let meta = Metadata {
        content_type: Some("text/html; charset=utf-8".into()),
        custom: vec![
            ("x-cache".into(), b"HIT".to_vec()),
            ("bin".into(), vec![0, 255]),
        ],
        ..Default::default()
    };
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let r = c.put_copy_meta(b"/index.html", &body, &meta);
    assert_status(&r, Status::Ok);
    let version = r.meta.version.expect("PUT reply carries the version");
    assert_eq!(r.meta.size, Some(body.len() as u64));

    let g = c.get_copy(b"/index.html");
    assert_status(&g, Status::Ok);
    assert_eq!(g.body, body);
    assert!(g.fd.is_none() && !g.header.fd_attached());
    assert_eq!(g.meta.version, Some(version));
    assert_eq!(g.meta.content_type, meta.content_type);
    assert_eq!(g.meta.custom, meta.custom);
    assert_eq!(g.meta.checksum, Some(xxhash_rust::xxh3::xxh3_64(&body)));

    let f = c.get_fd(b"/index.html");
    assert_status(&f, Status::Ok);
    assert_eq!(f.header.length, body.len() as u64);
    assert!(f.body.is_empty());
    let fd = f.fd.expect("fd attached");
    assert_eq!(read_fd(&fd), body);

    c.request(Op::Head, Mode::None, b"/index.html");
    let h = c.recv();
    assert_status(&h, Status::Ok);
    assert_eq!(h.header.length, body.len() as u64);
    assert_eq!(h.meta.version, Some(version));
    assert!(h.fd.is_none() && h.body.is_empty());
}

#[test]
fn received_fds_are_cloexec_and_read_only() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"k", b"data"), Status::Ok);
    let fd = c.get_fd(b"k").fd.unwrap();
    let flags = rustix::io::fcntl_getfd(&fd).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    let fl = rustix::fs::fcntl_getfl(&fd).unwrap();
    assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::RDONLY);
    let mut f = std::fs::File::from(fd);
    assert!(
        f.write_all(b"overwrite").is_err(),
        "a GET fd must not be writable"
    );
}

#[test]
fn keys_are_opaque_bytes_never_paths() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let outside = ts.dir.path().join("escaped");
    let keys: Vec<Vec<u8>> = vec![
        b"../../etc/passwd".to_vec(),
        format!("../../{}", outside.display()).into_bytes(),
        b"/absolute/path".to_vec(),
        b"with\0nul".to_vec(),
        vec![0xff, 0xfe, b'/', b'.', b'.'],
        b".".to_vec(),
        b"..".to_vec(),
    ];
    for (i, k) in keys.iter().enumerate() {
        let body = format!("object {i}");
        assert_status(&c.put_copy(k, body.as_bytes()), Status::Ok);
    }
    for (i, k) in keys.iter().enumerate() {
        let g = c.get_copy(k);
        assert_status(&g, Status::Ok);
        assert_eq!(g.body, format!("object {i}").as_bytes());
    }
    assert!(!outside.exists());
    // Every file the server wrote sits inside the data dir or the memory tier's
    // directory (plus the socket and the management socket).
    let admin = ts.server().admin_socket_path().map(|p| p.to_path_buf());
    for f in files_under(ts.dir.path()) {
        assert!(
            f.starts_with(ts.data_dir())
                || f.starts_with(ts.mem_dir())
                || f == ts.socket()
                || Some(&f) == admin.as_ref(),
            "stray file {}",
            f.display()
        );
    }
    assert!(std::fs::read("/etc/passwd")
        .map(|p| p != b"object 0")
        .unwrap_or(true));
}

#[test]
fn committed_bytes_are_immutable_even_through_the_put_fd() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    c.request(Op::Put, Mode::Fd, b"imm");
    let r = c.recv();
    assert_status(&r, Status::Ok);
    let handle = r.header.handle;
    assert_ne!(handle, 0);
    let mut staging = std::fs::File::from(r.fd.expect("writable staging fd"));
    staging.write_all(b"original").unwrap();
    c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = handle;
        h.length = 8;
    });
    assert_status(&c.recv(), Status::Ok);

    // The client still holds the writable fd. Every way of changing it must fail.
    use std::os::unix::fs::FileExt;
    assert!(staging.write_all(b"EVIL").is_err());
    assert!(staging.write_at(b"EVIL", 0).is_err());
    assert!(staging.set_len(0).is_err());
    assert!(staging.set_len(100).is_err());

    assert_eq!(c.get_copy(b"imm").body, b"original");
    assert_eq!(read_fd(&c.get_fd(b"imm").fd.unwrap()), b"original");
}

#[test]
fn readers_never_see_a_partial_object() {
    let ts = TestServer::start();
    let mut writer = ts.raw();
    let mut reader = ts.raw();
    assert_status(&writer.put_copy(b"k", b"version one"), Status::Ok);

    // A copy-mode PUT whose body is half sent.
    let body = vec![b'2'; 1 << 20];
    writer.send(Op::Put, Mode::Copy, b"k", &Metadata::default(), |h| {
        h.length = body.len() as u64
    });
    writer.send_bytes(&body[..body.len() / 2]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(reader.get_copy(b"k").body, b"version one");
    assert_eq!(read_fd(&reader.get_fd(b"k").fd.unwrap()), b"version one");

    // An fd-mode PUT with bytes written but no COMMIT yet.
    let mut staged = ts.raw();
    staged.request(Op::Put, Mode::Fd, b"new-key");
    let r = staged.recv();
    std::fs::File::from(r.fd.unwrap())
        .write_all(b"not yet")
        .unwrap();
    assert_status(&reader.get_copy(b"new-key"), Status::NotFound);

    writer.send_bytes(&body[body.len() / 2..]);
    assert_status(&writer.recv(), Status::Ok);
    assert_eq!(reader.get_copy(b"k").body, body);
}

#[test]
fn a_reader_keeps_its_snapshot_across_replace_and_delete() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"snap", b"first"), Status::Ok);
    let old = c.get_fd(b"snap").fd.unwrap();
    assert_status(&c.put_copy(b"snap", b"second, longer"), Status::Ok);
    assert_eq!(read_fd(&old), b"first");
    let mid = c.get_fd(b"snap").fd.unwrap();
    c.request(Op::Delete, Mode::None, b"snap");
    assert_status(&c.recv(), Status::Ok);
    assert_status(&c.get_copy(b"snap"), Status::NotFound);
    assert_eq!(read_fd(&old), b"first");
    assert_eq!(read_fd(&mid), b"second, longer");
}

#[test]
fn versions_increase_and_delete_reports_not_found_when_absent() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let v1 = c.put_copy(b"v", b"a").meta.version.unwrap();
    let v2 = c.put_copy(b"v", b"b").meta.version.unwrap();
    assert!(v2 > v1);
    c.send(Op::Delete, Mode::None, b"v", &Metadata::default(), |h| {
        h.flags = req_flags::DURABLE
    });
    assert_status(&c.recv(), Status::Ok);
    c.request(Op::Delete, Mode::None, b"v");
    assert_status(&c.recv(), Status::NotFound);
}

#[test]
fn restart_brings_every_object_back_byte_identical_with_metadata() {
    let mut ts = TestServer::start();
    let mut expected = Vec::new();
    {
        let mut c = ts.raw();
        for i in 0..20u32 {
            let key = format!("/obj/{i}").into_bytes();
            let body: Vec<u8> = (0..(i * 7919) % 300_000).map(|j| (j ^ i) as u8).collect();
            let meta = Metadata {
                content_type: Some(format!("type/{i}")),
                custom: vec![("n".into(), i.to_le_bytes().to_vec())],
                ..Default::default()
            };
            let r = if i % 2 == 0 {
                c.put_copy_meta(&key, &body, &meta)
            } else {
                c.send(Op::Put, Mode::Fd, &key, &meta, |_| {});
                let s = c.recv();
                assert_status(&s, Status::Ok);
                std::fs::File::from(s.fd.unwrap()).write_all(&body).unwrap();
                c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
                    h.handle = s.header.handle;
                    h.length = body.len() as u64;
                    h.flags = req_flags::DURABLE;
                });
                c.recv()
            };
            assert_status(&r, Status::Ok);
            expected.push((key, body, r.meta));
        }
        // Overwrite one and delete one before the restart.
        let r = c.put_copy(b"/obj/3", b"replaced");
        expected[3].1 = b"replaced".to_vec();
        expected[3].2 = r.meta;
        c.request(Op::Delete, Mode::None, b"/obj/4");
        assert_status(&c.recv(), Status::Ok);
    }
    ts.stop();
    assert!(!ts.socket().exists(), "socket removed on shutdown");
    ts.restart();
    let mut c = ts.raw();
    for (i, (key, body, meta)) in expected.iter().enumerate() {
        let g = c.get_copy(key);
        if i == 4 {
            assert_status(&g, Status::NotFound);
            continue;
        }
        assert_status(&g, Status::Ok);
        assert_eq!(&g.body, body, "object {i}");
        // TIER and STATE say where the object is now (written behind, promoted), not
        // what was committed: compare everything else.
        let committed = |m: &Metadata| Metadata {
            tier: None,
            state: None,
            ..m.clone()
        };
        assert_eq!(
            committed(&g.meta),
            committed(meta),
            "metadata of object {i}"
        );
        assert!(!g.meta.state.unwrap().pinned());
    }
}

/// A replaced version's file is unlinked after the PUT's reply is sent, off the request's
/// path, but before the connection reads its next request: once the next reply arrives,
/// only the live version's files are left (its memory copy, and its disk copy once
/// write-behind or promotion made one). A durable replace (committed on the blocking
/// pool) unlinks it there, soon after. A reader's fd keeps its snapshot throughout.
#[test]
fn a_replaced_version_leaves_no_file_behind() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    // The versions the object files are of (`<hash>-<version, 16 hex digits>`).
    let versions = || {
        let mut v: Vec<u64> = [ts.mem_dir(), ts.data_dir()]
            .iter()
            .flat_map(|d| objmapper_testkit::files_under(&d.join("objects")))
            .map(|f| {
                let name = f.file_name().unwrap().to_str().unwrap().to_owned();
                u64::from_str_radix(name.rsplit('-').next().unwrap(), 16).unwrap()
            })
            .collect();
        v.dedup();
        v
    };
    let first = c.put_copy(b"k", b"v1");
    assert_status(&first, Status::Ok);
    let snapshot = c.get_fd(b"k").fd.expect("fd");
    for i in 2..20 {
        let r = c.put_copy(b"k", format!("v{i}").as_bytes());
        assert_status(&r, Status::Ok);
        assert_status(&c.ping(), Status::Ok);
        assert_eq!(versions(), [r.meta.version.unwrap()], "after PUT {i}");
        assert_eq!(c.get_copy(b"k").body, format!("v{i}").as_bytes());
    }
    assert_eq!(read_fd(&snapshot), b"v1");

    let body = b"durable";
    c.send(Op::Put, Mode::Copy, b"k", &Metadata::default(), |h| {
        h.length = body.len() as u64;
        h.flags |= req_flags::DURABLE;
    });
    c.send_bytes(body);
    let r = c.recv();
    assert_status(&r, Status::Ok);
    let want = [r.meta.version.unwrap()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while versions() != want {
        assert!(std::time::Instant::now() < deadline, "{:?}", versions());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(c.get_copy(b"k").body, body);
}
