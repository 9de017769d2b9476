//! A large version (a pointer to a multipart data object) comes back byte for byte;
//! a data object replaced between the pointer's read and its own is read whole or
//! refused, never mixed; damaged, truncated, longer or vanished data objects are
//! refused. (docs/BENCHMARKS.md, "Session 10": parallel ranged GETs of the data object
//! were tried and did not pay on SeaweedFS here, so it is read in one GET.)

mod util;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use objmapper_remote::{format, ErrorKind, Outcome, Remote};
use util::{record, stamp, Seaweed};

/// What to do to the data object before a GET of it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Swap {
    /// Nothing.
    None,
    /// Put the same bytes again, in a multipart upload (a new ETag, the same content).
    Same,
    /// Put the same bytes with one byte of the body flipped (same length).
    Flipped,
}

/// The SeaweedFS store seen through a tap: counts the GETs of name objects and of
/// data objects, and replaces the data object once, just before the GET of it that
/// starts at offset `at` (0 for a whole-object GET), after every earlier one has been
/// read whole. Data object reads run one at a time, so the swap never races a read in
/// flight.
struct Tap {
    inner: Arc<dyn ObjectStore>,
    name_gets: AtomicU32,
    data_gets: AtomicU32,
    /// The ranges asked for, in order (`None`: the whole object).
    ranges: Mutex<Vec<Option<Range<u64>>>>,
    /// Answers refused because the object changed (412 on If-Match).
    refused: AtomicU32,
    swap: Mutex<(Swap, u64)>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    /// Parts of multipart uploads handed to the store and not yet answered, and the
    /// most there were at once.
    parts_running: Arc<AtomicU32>,
    parts_max: Arc<AtomicU32>,
    /// Bytes of PUTs and parts handed to the store and not yet answered.
    bytes: Arc<InFlight>,
}

/// Bytes in flight, and the most there were at once.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

impl InFlight {
    fn start(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn end(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Tap {
    fn new(inner: Arc<dyn ObjectStore>) -> Arc<Tap> {
        Arc::new(Tap {
            inner,
            name_gets: AtomicU32::new(0),
            data_gets: AtomicU32::new(0),
            ranges: Mutex::new(Vec::new()),
            refused: AtomicU32::new(0),
            swap: Mutex::new((Swap::None, 0)),
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
            parts_running: Arc::new(AtomicU32::new(0)),
            parts_max: Arc::new(AtomicU32::new(0)),
            bytes: Arc::default(),
        })
    }

    fn reset(&self, swap: Swap, at: u64) {
        self.name_gets.store(0, Ordering::SeqCst);
        self.data_gets.store(0, Ordering::SeqCst);
        self.refused.store(0, Ordering::SeqCst);
        self.ranges.lock().unwrap().clear();
        *self.swap.lock().unwrap() = (swap, at);
    }
}

/// A multipart upload that counts its parts in flight: from the writer handing one
/// over (its bytes held) to the store's answer.
#[derive(Debug)]
struct Counted {
    inner: Box<dyn MultipartUpload>,
    running: Arc<AtomicU32>,
    max: Arc<AtomicU32>,
    bytes: Arc<InFlight>,
}

#[async_trait::async_trait]
impl MultipartUpload for Counted {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        let running = self.running.clone();
        let (bytes, len) = (self.bytes.clone(), data.content_length() as u64);
        bytes.start(len);
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let r = part.await;
            running.fetch_sub(1, Ordering::SeqCst);
            bytes.end(len);
            r
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

impl fmt::Display for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tap({})", self.inner)
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tap({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Tap {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let len = payload.content_length() as u64;
        self.bytes.start(len);
        let r = self.inner.put_opts(location, payload, opts).await;
        self.bytes.end(len);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Counted {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            running: self.parts_running.clone(),
            max: self.parts_max.clone(),
            bytes: self.bytes.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let data = location.as_ref().contains("/d/");
        if !data {
            if location.as_ref().contains("/o/") && options.range.is_none() {
                self.name_gets.fetch_add(1, Ordering::SeqCst);
            }
            return self.inner.get_opts(location, options).await;
        }
        let r = match options.range.clone() {
            None => None,
            Some(GetRange::Bounded(r)) => Some(r),
            Some(_) => return self.inner.get_opts(location, options).await,
        };
        let start = r.as_ref().map_or(0, |r| r.start);
        let turn = self.one_at_a_time.clone().lock_owned().await;
        self.data_gets.fetch_add(1, Ordering::SeqCst);
        self.ranges.lock().unwrap().push(r);
        let swap = {
            let mut s = self.swap.lock().unwrap();
            if s.0 != Swap::None && s.1 == start {
                std::mem::replace(&mut s.0, Swap::None)
            } else {
                Swap::None
            }
        };
        if swap != Swap::None {
            let mut bytes = self.inner.get(location).await?.bytes().await?.to_vec();
            if swap == Swap::Flipped {
                *bytes.last_mut().unwrap() ^= 0x20;
            }
            if swap == Swap::Same {
                // In one multipart part: its ETag differs from a plain PUT's and from
                // the original upload's (several parts), whatever was there.
                let up = self.inner.put_multipart(location).await?;
                let mut w = object_store::WriteMultipart::new_with_chunk_size(up, bytes.len());
                w.write(&bytes);
                w.finish().await?;
            } else {
                self.inner.put(location, bytes.into()).await?;
            }
        }
        let r = match self.inner.get_opts(location, options).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, object_store::Error::Precondition { .. }) {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        // The next data read waits until this one's body has been read (or dropped).
        let GetResultPayload::Stream(s) = r.payload;
        let s: BoxStream<'static, object_store::Result<bytes::Bytes>> = s
            .chain(futures_util::stream::once(async move {
                drop(turn);
                Ok(bytes::Bytes::new())
            }))
            .filter(|b| std::future::ready(!matches!(b, Ok(b) if b.is_empty())))
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(s),
            ..r
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Bytes no two offsets of which repeat in a short period.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// Uploads `body` as `key` through a writer, and returns a reader (another host)
/// whose requests go through a tap.
async fn setup(sw: &Seaweed, test: &str, key: &[u8], body: &[u8]) -> (Remote, Arc<Tap>) {
    // Versions over 8 MiB go up in multipart here (the default threshold is larger),
    // so that these tests move tens of MiB, not hundreds.
    let cfg = sw.config(test, "host-a").with_multipart_threshold(8 << 20);
    util::create_bucket(sw, &cfg).await;
    let a = Remote::new(cfg).unwrap();
    let rec = record(key, body);
    assert_eq!(
        a.put(&rec, &stamp(10, "host-a"), body).await.unwrap(),
        Outcome::Stored
    );
    let cfg = sw.config_for(&a.config().bucket, "host-b");
    let tap = Tap::new(sw.raw(&cfg));
    let b = Remote::with_store(cfg, tap.clone());
    (b, tap)
}

/// The store path of the data object `setup` wrote for `key`.
fn data_object(key: &[u8]) -> String {
    format!("objm/test/{}", format::data_name(key, &stamp(10, "host-a")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_comes_back_byte_for_byte() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    // Not multiples of the multipart upload's parts (8 MiB) nor of a round size; past
    // the 8 MiB threshold `setup` sets.
    for (i, len) in [(8 << 20) + 1, (13 << 20) + 777, (21 << 20) - 5]
        .into_iter()
        .enumerate()
    {
        let key = format!("large/{i}");
        let body = noise(len, i as u64);
        let (b, tap) = setup(sw, &format!("large{i}"), key.as_bytes(), &body).await;
        let mut f = util::tmpfile();
        let found = b.get(key.as_bytes(), &f).await.unwrap().expect("found");
        assert_eq!(found.record.size, len as u64);
        assert!(util::read_all(&mut f) == body, "{len} bytes differ");
        // One GET of the name (the pointer), one of the data object.
        assert_eq!(tap.name_gets.load(Ordering::SeqCst), 1);
        assert_eq!(
            tap.data_gets.load(Ordering::SeqCst),
            1,
            "{:?}",
            tap.ranges.lock().unwrap()
        );
        // A file that held something longer before is truncated to the object.
        let mut f = util::tmpfile();
        f.set_len(len as u64 + 4096).unwrap();
        b.get(key.as_bytes(), &f).await.unwrap().unwrap();
        assert!(util::read_all(&mut f) == body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_object_replaced_after_its_pointer_was_read_is_never_mixed() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let len = (18 << 20) + 12_345;
    let body = noise(len, 7);
    let (b, tap) = setup(sw, "swap", b"swapped", &body).await;
    let raw = sw.raw(b.config());
    let data = data_object(b"swapped");

    // 1. The same bytes put again between the pointer's read and the data object's (a
    // new ETag, the same content): read whole.
    tap.reset(Swap::Same, 0);
    let mut f = util::tmpfile();
    let found = b.get(b"swapped", &f).await.unwrap().expect("found");
    assert_eq!(found.record.size, len as u64);
    assert!(util::read_all(&mut f) == body, "mixed or damaged");
    assert_eq!(tap.data_gets.load(Ordering::SeqCst), 1);

    // 2. Different bytes of the same length: refused, nothing returned.
    tap.reset(Swap::Flipped, 0);
    let e = b.get(b"swapped", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    // The refusal names the object whose bytes failed: the data object.
    assert!(e.to_string().contains("/d/"), "{e}");

    // Put back, it reads again.
    let mut bytes = util::raw_bytes(&raw, &data).await;
    *bytes.last_mut().unwrap() ^= 0x20;
    util::put_raw(&raw, &data, bytes).await;
    tap.reset(Swap::None, 0);
    b.get(b"swapped", &f).await.unwrap().unwrap();
    assert!(util::read_all(&mut f) == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_longer_or_vanished_data_objects_are_refused() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let len = (9 << 20) + 3;
    let body = noise(len, 3);
    let (b, _tap) = setup(sw, "damaged", b"dmg", &body).await;
    let raw = sw.raw(b.config());
    let data = data_object(b"dmg");
    let good = util::raw_bytes(&raw, &data).await;
    let mut f = util::tmpfile();

    // A byte flipped near the start, in the middle, and in the last byte.
    for at in [good.len() - len + 5, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        util::put_raw(&raw, &data, bad).await;
        let e = b.get(b"dmg", &f).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "byte {at}: {e}");
        assert!(e.to_string().contains("checksum"), "byte {at}: {e}");
    }

    // Truncated, and one byte longer.
    for bad in [good[..good.len() - 1].to_vec(), [&good[..], b"x"].concat()] {
        util::put_raw(&raw, &data, bad).await;
        let e = b.get(b"dmg", &f).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("bytes"), "{e}");
    }

    // The data object's header damaged, and the data object gone.
    let mut bad = good.clone();
    bad[30] ^= 0x40;
    util::put_raw(&raw, &data, bad).await;
    let e = b.get(b"dmg", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    raw.delete(&Path::from(data.as_str())).await.unwrap();
    let e = b.get(b"dmg", &f).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // Put back, it reads again.
    util::put_raw(&raw, &data, good).await;
    b.get(b"dmg", &f).await.unwrap().unwrap();
    assert!(util::read_all(&mut f) == body);
}

/// However many uploads run at once (`upload_concurrency`), one multipart upload
/// sends at most 4 parts at once: what uploads hold in memory grows with their number,
/// not with its square (16 uploads of 16 parts of 8 MiB would be 2 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_holds_at_most_four_parts_whatever_the_concurrency() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    for (concurrency, most) in [(16, 4), (2, 2)] {
        let cfg = sw
            .config(&format!("parts{concurrency}"), "host-a")
            .with_upload_concurrency(concurrency)
            .with_multipart_threshold(5 << 20)
            .with_part_size(5 << 20);
        util::create_bucket(sw, &cfg).await;
        let tap = Tap::new(sw.raw(&cfg));
        let a = Remote::with_store(cfg.clone(), tap.clone());
        // 12 parts and a bit: enough to fill any number of slots.
        let len = (60 << 20) + 99;
        let body = noise(len, 11);
        let key = format!("parts/{concurrency}");
        assert_eq!(
            a.put(
                &record(key.as_bytes(), &body),
                &stamp(10, "host-a"),
                &body[..]
            )
            .await
            .unwrap(),
            Outcome::Stored
        );
        let max = tap.parts_max.load(Ordering::SeqCst);
        assert!(
            (2..=most).contains(&max),
            "upload_concurrency {concurrency}: {max} parts at once"
        );
        assert_eq!(tap.parts_running.load(Ordering::SeqCst), 0);
        // And it comes back whole.
        let b = Remote::new(sw.config_for(&cfg.bucket, "host-b")).unwrap();
        let mut f = util::tmpfile();
        b.get(key.as_bytes(), &f).await.unwrap().expect("found");
        assert!(util::read_all(&mut f) == body, "{len} bytes differ");
    }
}

/// The uploads in flight hold at most `upload_memory` together, however many may run
/// at once: with 16 uploads allowed and 14 MiB, eight versions of 6 MiB in one PUT each
/// go up at most two at a time (half of them loaded by `put_loaded`, whose loads wait
/// for their share), and a multipart upload of 5 MiB parts beside them keeps as few
/// parts in flight as fit (one: the one in flight and the one being filled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_hold_at_most_the_upload_memory() {
    if util::skip() {
        return;
    }
    let sw = Seaweed::shared();
    let limit = 14 << 20;
    let cfg = sw
        .config("memory", "host-a")
        .with_upload_concurrency(16)
        .with_upload_memory(limit)
        .with_multipart_threshold(8 << 20)
        .with_part_size(5 << 20);
    util::create_bucket(sw, &cfg).await;
    let tap = Tap::new(sw.raw(&cfg));
    let a = Arc::new(Remote::with_store(cfg.clone(), tap.clone()));
    // From a load's start to its upload's end.
    let loaded = Arc::new(InFlight::default());
    let mut bodies: Vec<Vec<u8>> = (0..8).map(|i| noise(6 << 20, 20 + i)).collect();
    bodies.push(noise((20 << 20) + 7, 30));
    let tasks: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (a, body, loaded) = (a.clone(), body.clone(), loaded.clone());
            tokio::spawn(async move {
                let key = format!("mem/{i}");
                let (rec, st) = (record(key.as_bytes(), &body), stamp(10, "host-a"));
                if i % 2 == 1 && body.len() < 8 << 20 {
                    let len = body.len() as u64;
                    let load = async {
                        loaded.start(len);
                        Ok(bytes::Bytes::from(body.clone()))
                    };
                    let r = a.put_loaded(&rec, &st, load).await;
                    loaded.end(len);
                    return r;
                }
                a.put(&rec, &st, &body[..]).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Outcome::Stored);
    }
    let max = tap.bytes.max.load(Ordering::SeqCst);
    assert!(
        max <= limit,
        "{max} bytes in flight at once, above the {limit} allowed"
    );
    let max = loaded.max.load(Ordering::SeqCst);
    assert!(max <= limit, "{max} bytes loaded at once");
    assert_eq!(tap.parts_max.load(Ordering::SeqCst), 1);
    assert_eq!(tap.bytes.now.load(Ordering::SeqCst), 0);
    // Every one comes back whole.
    let b = Remote::new(sw.config_for(&cfg.bucket, "host-b")).unwrap();
    for (i, body) in bodies.iter().enumerate() {
        let mut f = util::tmpfile();
        b.get(format!("mem/{i}").as_bytes(), &f)
            .await
            .unwrap()
            .expect("found");
        assert!(util::read_all(&mut f) == *body, "mem/{i} differs");
    }
}
