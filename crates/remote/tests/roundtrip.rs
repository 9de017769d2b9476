//! Objects go up and come back intact, small and in multipart; a remote object whose
//! key or bytes do not match is refused, never returned as data.

mod util;

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use objmapper_remote::{format, ErrorKind, Outcome, Remote};
use util::{record, stamp, Seaweed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_object_round_trip() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "small", "host-a").await;
    let key = b"../../etc/passwd?a=1";
    let mut f = util::tmpfile();
    assert_eq!(a.get(key, &f).await.unwrap(), None, "empty bucket");
    assert_eq!(a.head(key).await.unwrap(), None);

    let body = b"hello, remote tier";
    let mut rec = record(key, body);
    rec.expires_at = Some(4_000_000_000);
    rec.pinned = true;
    rec.custom.push(("big".into(), vec![0xab; 60 * 1024]));
    let st = stamp(1_000, "host-a");
    assert_eq!(a.put(&rec, &st, &body[..]).await.unwrap(), Outcome::Stored);
    assert_eq!(
        a.put(&rec, &st, &body[..]).await.unwrap(),
        Outcome::AlreadyThere
    );

    // A second client (another host) reads it.
    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let found = b.get(key, &f).await.unwrap().expect("found");
    assert_eq!(found.record, rec, "record kept, metadata included");
    assert_eq!(found.stamp, st);
    assert_eq!(util::read_all(&mut f), body);
    assert_eq!(b.head(key).await.unwrap().unwrap().record, rec);

    // The key never became a path: the object's name is its hash.
    let name = a.name_of(key);
    assert!(
        name.starts_with("objm/test/o/") && !name.contains(".."),
        "{name}"
    );

    // An empty object.
    let e = record(b"empty", b"");
    a.put(&e, &st, &b""[..]).await.unwrap();
    let found = b.get(b"empty", &f).await.unwrap().unwrap();
    assert_eq!(found.record.size, 0);
    assert!(util::read_all(&mut f).is_empty());

    // An expired object is not served.
    let mut x = record(b"expired", b"x");
    x.expires_at = Some(1);
    a.put(&x, &st, &b"x"[..]).await.unwrap();
    assert_eq!(b.get(b"expired", &f).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_does_not_match_its_record_is_not_uploaded() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "badsrc", "host-a").await;
    let rec = record(b"k", b"12345");
    let e = a
        .put(&rec, &stamp(1, "host-a"), &b"12346"[..])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let e = a
        .put(&rec, &stamp(1, "host-a"), &b"1234"[..])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    // The same from bytes in memory: different, shorter, longer.
    for bad in [&b"12346"[..], b"1234", b"123456"] {
        let e = a
            .put_bytes(&rec, &stamp(1, "host-a"), Bytes::from_static(bad))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    }
    assert_eq!(a.head(b"k").await.unwrap(), None);
}

/// A version of up to `multipart_threshold` bytes (32 MiB by default) is one remote
/// object, header then bytes, which another host reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_up_to_the_threshold_is_one_object() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "onepiece", "host-a").await;
    let threshold = a.config().multipart_threshold as usize;
    assert!(threshold >= 20 << 20, "{threshold}");
    let raw = sw.raw(a.config());
    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let mut f = util::tmpfile();
    for (i, len) in [(20usize << 20) + 3, threshold].into_iter().enumerate() {
        let key = format!("one/{i}");
        let body: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let rec = record(key.as_bytes(), &body);
        assert_eq!(
            a.put_bytes(&rec, &stamp(5, "host-a"), Bytes::from(body.clone()))
                .await
                .unwrap(),
            Outcome::Stored
        );
        let meta = raw
            .head(&Path::from(a.name_of(key.as_bytes())))
            .await
            .unwrap();
        assert!(
            meta.size as usize > len,
            "a pointer, not the bytes: {}",
            meta.size
        );
        let found = b.get(key.as_bytes(), &f).await.unwrap().expect("found");
        assert_eq!(found.record.size, len as u64);
        assert!(util::read_all(&mut f) == body, "{len} bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_object_round_trip_in_multipart() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "large", "host-a").await;
    let len = 64usize << 20;
    let mut body = vec![0u8; len];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), &body).unwrap();
    let rec = record(b"big", &body);
    let st = stamp(10, "host-a");
    let t = std::time::Instant::now();
    let file = tokio::fs::File::open(src.path()).await.unwrap();
    assert_eq!(a.put(&rec, &st, file).await.unwrap(), Outcome::Stored);
    eprintln!("64 MiB put in {:?}", t.elapsed());

    // Stored as a small pointer plus a data object written in multipart.
    let raw = sw.raw(a.config());
    let meta = raw.head(&Path::from(a.name_of(b"big"))).await.unwrap();
    assert!(
        meta.size < 4096,
        "the name object is a pointer: {}",
        meta.size
    );

    let b = Remote::new(sw.config_for(&a.config().bucket, "host-b")).unwrap();
    let mut f = util::tmpfile();
    let t = std::time::Instant::now();
    let found = b.get(b"big", &f).await.unwrap().unwrap();
    eprintln!("64 MiB get in {:?}", t.elapsed());
    assert_eq!(found.record.size, len as u64);
    assert!(util::read_all(&mut f) == body, "bytes differ");

    // A newer version replaces it, and the old data object goes away.
    let small = record(b"big", b"small now");
    a.put(&small, &stamp(11, "host-a"), &b"small now"[..])
        .await
        .unwrap();
    let found = b.get(b"big", &f).await.unwrap().unwrap();
    assert_eq!(util::read_all(&mut f), b"small now");
    assert_eq!(found.stamp, stamp(11, "host-a"));
    let data = Path::from(format!(
        "objm/test/{}",
        format::data_name(b"big", &stamp(10, "host-a"))
    ));
    assert!(matches!(
        raw.head(&data).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_misplaced_objects_are_refused() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "tamper", "host-a").await;
    let raw = sw.raw(a.config());
    let body = b"the real bytes";
    a.put(&record(b"k1", body), &stamp(5, "host-a"), &body[..])
        .await
        .unwrap();
    let good = util::raw_bytes(&raw, &a.name_of(b"k1")).await;
    let mut f = util::tmpfile();

    // 1. The bytes changed (same length): the content checksum catches it.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    util::put_raw(&raw, &a.name_of(b"k1"), bad).await;
    let e = a.get(b"k1", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");

    // 2. Truncated.
    util::put_raw(&raw, &a.name_of(b"k1"), good[..good.len() - 3].to_vec()).await;
    let e = a.get(b"k1", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // 3. Header damaged.
    let mut bad = good.clone();
    bad[30] ^= 0x40;
    util::put_raw(&raw, &a.name_of(b"k1"), bad).await;
    let e = a.get(b"k1", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let e = a.head(b"k1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // 4. A valid object of another key copied to this key's name: the key check
    // refuses it (as it would a hash collision).
    util::put_raw(&raw, &a.name_of(b"k2"), good.clone()).await;
    let e = a.get(b"k2", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    assert_eq!(a.head(b"k2").await.unwrap_err().kind(), ErrorKind::Corrupt);

    // 5. Garbage.
    util::put_raw(&raw, &a.name_of(b"k3"), b"<html>not ours</html>".to_vec()).await;
    assert_eq!(
        a.get(b"k3", &f).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );

    // An object of a newer format is neither read nor replaced.
    let mut newer = good.clone();
    newer[8] = 2;
    util::put_raw(&raw, &a.name_of(b"k4"), newer).await;
    let e = a.get(b"k4", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let e = a
        .put(&record(b"k4", b"x"), &stamp(9, "host-a"), &b"x"[..])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");

    // A damaged object does not block a new upload: it is replaced.
    let body2 = b"fresh";
    assert_eq!(
        a.put(&record(b"k1", body2), &stamp(6, "host-a"), &body2[..])
            .await
            .unwrap(),
        Outcome::Stored
    );
    a.get(b"k1", &f).await.unwrap().unwrap();
    assert_eq!(util::read_all(&mut f), body2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_refuses_writes_is_an_io_error() {
    if util::skip() {
        return;
    }
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let sw = Seaweed::shared();
    let a = util::client(sw, "refused", "host-a").await;
    // Small: written in place. 3 MiB: in batches on blocking threads.
    for (i, len) in [4096usize, 3 << 20].into_iter().enumerate() {
        let key = format!("refused/{i}");
        let body: Vec<u8> = (0..len).map(|j| (j % 253) as u8).collect();
        let rec = record(key.as_bytes(), &body);
        a.put(&rec, &stamp(1_000, "host-a"), &body[..])
            .await
            .unwrap();
        // A memfd sealed against writes: truncating the empty file is allowed, every
        // write fails with EPERM.
        let fd = memfd_create("refuses-writes", MemfdFlags::ALLOW_SEALING).unwrap();
        fcntl_add_seals(&fd, SealFlags::WRITE).unwrap();
        let dest = std::fs::File::from(fd);
        let e = a.get(key.as_bytes(), &dest).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{len} bytes: {e}");
        assert!(e.to_string().contains("writing the destination"), "{e}");
        // The same object into a writable file is intact.
        let mut f = util::tmpfile();
        a.get(key.as_bytes(), &f).await.unwrap().expect("found");
        assert_eq!(util::read_all(&mut f), body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_larger_than_this_host_takes_is_refused_unread() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "too-large", "host-a").await;
    let body = vec![7u8; 64 << 10];
    let rec = record(b"big", &body);
    a.put(&rec, &stamp(1_000, "host-a"), &body[..])
        .await
        .unwrap();
    // Host B takes at most 16 KiB, and remembers misses for a minute.
    let b = Remote::new(
        sw.config_for(&a.config().bucket, "host-b")
            .with_max_object_size(16 << 10)
            .with_miss_ttl(std::time::Duration::from_secs(60)),
    )
    .unwrap();
    let mut f = util::tmpfile();
    std::io::Write::write_all(&mut f, b"untouched").unwrap();
    let e = b.get(b"big", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains("65536 bytes") && msg.contains("16384") && msg.contains("max_object_size"),
        "{msg}"
    );
    assert_eq!(util::read_all(&mut f), b"untouched", "not a byte written");
    let st = b.stats();
    assert_eq!((st.hits, st.bytes_down), (0, 0), "{st:?}");
    // Asked again: remembered, no request.
    assert_eq!(b.get(b"big", &f).await.unwrap(), None);
    assert_eq!(b.stats().cached_misses, 1);
    // A version that fits is fetched as usual.
    let small = record(b"small", b"fits");
    a.put(&small, &stamp(1_000, "host-a"), &b"fits"[..])
        .await
        .unwrap();
    assert!(b.get(b"small", &f).await.unwrap().is_some());
    assert_eq!(util::read_all(&mut f), b"fits");
}

/// A reader that declines a version once it sees its record and stamp (its own ban or
/// delete covers it) reads none of its bytes, inline or multipart: the read answers
/// none, counts a decline (neither a hit nor a miss) and is remembered like a miss, so
/// the next reads make no request. `remember_miss` does the same for a version refused
/// after its bytes came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_reader_declines_from_its_header_is_not_fetched() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let a = util::client(sw, "declined", "host-a").await;
    let small = vec![1u8; 4 << 10];
    let large = vec![2u8; 9 << 20];
    let w = Remote::new(
        sw.config_for(&a.config().bucket, "host-a")
            .with_multipart_threshold(5 << 20),
    )
    .unwrap();
    w.put(
        &record(b"inline", &small),
        &stamp(1_000, "host-a"),
        &small[..],
    )
    .await
    .unwrap();
    w.put(
        &record(b"multi", &large),
        &stamp(2_000, "host-a"),
        &large[..],
    )
    .await
    .unwrap();
    let b = Remote::new(
        sw.config_for(&a.config().bucket, "host-b")
            .with_miss_ttl(std::time::Duration::from_secs(60)),
    )
    .unwrap();
    for (key, at) in [(&b"inline"[..], 1_000), (b"multi", 2_000)] {
        let mut seen = Vec::new();
        let got = b
            .get_with(key, |found| {
                seen.push((found.record.key.clone(), found.stamp.time_ns));
                Ok(None)
            })
            .await
            .unwrap();
        assert_eq!(got, None);
        assert_eq!(seen, vec![(key.to_vec(), at)], "asked once, with the stamp");
        assert!(b.remembers_miss(key), "remembered like a miss");
        let again = b.get_with(key, |_| panic!("not asked again")).await;
        assert_eq!(again.unwrap(), None);
    }
    let st = b.stats();
    assert_eq!(st.declined, 2, "{st:?}");
    assert_eq!((st.hits, st.bytes_down), (0, 0), "{st:?}");
    assert_eq!(
        (st.misses, st.cached_misses),
        (2, 2),
        "only the remembered ones"
    );
    // Refused after the bytes came: remembered all the same.
    let c = Remote::new(
        sw.config_for(&a.config().bucket, "host-c")
            .with_miss_ttl(std::time::Duration::from_secs(60)),
    )
    .unwrap();
    let f = util::tmpfile();
    assert!(c.get(b"inline", &f).await.unwrap().is_some());
    c.remember_miss(b"inline");
    assert_eq!(c.get(b"inline", &f).await.unwrap(), None);
    assert_eq!(c.stats().bytes_down, small.len() as u64);
}
