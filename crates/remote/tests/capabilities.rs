//! What the S3 gateway of SeaweedFS does with the requests the remote tier relies on,
//! measured (docs/STORAGE.md, "The remote tier", cites these): conditional create
//! (`If-None-Match: *`), conditional replace (`If-Match: <etag>`), ETags, ranged
//! reads, user metadata and multipart uploads.

mod util;

use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use util::Seaweed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_supports_what_the_remote_tier_needs() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let cfg = sw.config("caps", "h");
    util::create_bucket(sw, &cfg).await;
    let s = sw.raw(&cfg);
    let p = Path::from("x/o1");

    // If-None-Match: * -- the first create wins, the second is refused.
    let r1 = s
        .put_opts(&p, PutPayload::from_static(b"one"), PutMode::Create.into())
        .await
        .expect("first conditional create");
    let e1 = r1.e_tag.clone().expect("PUT returns an ETag");
    let second = s
        .put_opts(&p, PutPayload::from_static(b"two"), PutMode::Create.into())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "If-None-Match: * not honoured: {second:?}"
    );

    // If-Match with a stale ETag is refused; with the current one it succeeds.
    let stale = UpdateVersion {
        e_tag: Some("\"0123456789abcdef0123456789abcdef\"".into()),
        version: None,
    };
    let bad = s
        .put_opts(
            &p,
            PutPayload::from_static(b"three"),
            PutMode::Update(stale).into(),
        )
        .await;
    assert!(
        matches!(bad, Err(object_store::Error::Precondition { .. })),
        "If-Match with a wrong ETag not refused: {bad:?}"
    );
    let ok = s
        .put_opts(
            &p,
            PutPayload::from_static(b"four"),
            PutMode::Update(UpdateVersion {
                e_tag: Some(e1.clone()),
                version: None,
            })
            .into(),
        )
        .await
        .expect("If-Match with the current ETag");
    let e2 = ok.e_tag.expect("ETag");
    assert_ne!(e1, e2, "a new body has a new ETag");
    // The old ETag no longer matches.
    let again = s
        .put_opts(
            &p,
            PutPayload::from_static(b"five"),
            PutMode::Update(UpdateVersion {
                e_tag: Some(e1),
                version: None,
            })
            .into(),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::Precondition { .. })),
        "a replaced ETag still matched: {again:?}"
    );
    // If-Match on an absent object is refused.
    let absent = s
        .put_opts(
            &Path::from("x/absent"),
            PutPayload::from_static(b"x"),
            PutMode::Update(UpdateVersion {
                e_tag: Some(e2.clone()),
                version: None,
            })
            .into(),
        )
        .await;
    assert!(absent.is_err(), "If-Match on an absent object accepted");
    eprintln!("If-Match on an absent object: {absent:?}");

    // Ranged reads, with the object's ETag; a range past the end is cut.
    let r = s
        .get_opts(
            &p,
            GetOptions::default().with_range(Some(GetRange::Bounded(1..3))),
        )
        .await
        .unwrap();
    assert_eq!(r.meta.e_tag.as_deref(), Some(e2.as_str()));
    assert_eq!(&r.bytes().await.unwrap()[..], b"ou");
    let r = s
        .get_opts(
            &p,
            GetOptions::default().with_range(Some(GetRange::Bounded(0..8192))),
        )
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], b"four");
    // If-Match on GET.
    let r = s
        .get_opts(&p, GetOptions::default().with_if_match(Some("\"nope\"")))
        .await;
    assert!(
        matches!(r, Err(object_store::Error::Precondition { .. })),
        "{r:?}"
    );

    // User metadata round trip.
    let mut a = Attributes::new();
    a.insert(
        Attribute::Metadata("objm-stamp".into()),
        AttributeValue::from("123-h"),
    );
    let mp = Path::from("x/meta");
    s.put_opts(
        &mp,
        PutPayload::from_static(b"m"),
        PutOptions {
            attributes: a,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = s.get(&mp).await.unwrap();
    assert_eq!(
        r.attributes
            .get(&Attribute::Metadata("objm-stamp".into()))
            .map(|v| v.as_ref().to_owned()),
        Some("123-h".to_owned())
    );

    // Multipart: three parts of 5 MiB and a tail.
    let up = s.put_multipart(&Path::from("x/big")).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(up, 5 << 20);
    let data: Vec<u8> = (0..(16u32 << 20) + 7)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    w.write(&data);
    w.finish().await.expect("multipart upload");
    let got = s.get(&Path::from("x/big")).await.unwrap();
    assert_eq!(got.meta.size, data.len() as u64);
    assert!(got.bytes().await.unwrap() == data);
}
