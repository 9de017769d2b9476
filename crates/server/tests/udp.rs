//! The UDP transport against a real in-process server: round trips, ranges, refusals,
//! bad datagrams, the documented vectors, and a tampering relay for lost, reordered,
//! duplicated and late datagrams.

#[path = "udp/relay.rs"]
mod relay;
mod util;

use objmapper_client::{Error, UdpClient};
use objmapper_proto::udp::{split, Reassembler, UdpHeader};
use objmapper_proto::*;
use objmapper_testkit::{pattern, protocol_vector as vector};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use relay::Relay;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use util::{assert_status, wait_for, Reply, TestServer};

fn start() -> TestServer {
    start_with(|_| {})
}

fn start_with(f: impl FnOnce(&mut objmapper_server::ServerConfig)) -> TestServer {
    TestServer::start_with(|c| {
        c.udp_listen = Some("127.0.0.1:0".parse().unwrap());
        f(c);
    })
}

fn udp_addr(ts: &TestServer) -> SocketAddr {
    ts.server().udp_addr().expect("UDP is on")
}

/// A client with generous timeouts: these tests are about answers, not loss.
fn client(addr: SocketAddr) -> UdpClient {
    let mut c = UdpClient::connect(addr).unwrap();
    c.set_timeout(Duration::from_secs(2));
    c.set_retries(2);
    c
}

fn put(ts: &TestServer, key: &[u8], body: &[u8]) -> Reply {
    let r = ts.raw().put_copy(key, body);
    assert_status(&r, Status::Ok);
    r
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One request datagram: header (id, 0, 1) and a V1 frame with the same id.
fn datagram(
    id: u32,
    op: Op,
    mode: Mode,
    key: &[u8],
    f: impl FnOnce(&mut RequestHeader),
) -> Vec<u8> {
    let mut d = UdpHeader {
        request_id: id,
        seq: 0,
        total: 1,
    }
    .encode()
    .to_vec();
    let mut h = RequestHeader::new(Version::V1, op, id);
    h.mode = mode;
    f(&mut h);
    encode_request(&h, key, &[], &mut d);
    d
}

fn raw_socket(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s
}

/// Sends `d` and returns the datagrams of its reply (by the request id in `d`'s header).
fn exchange(server: SocketAddr, d: &[u8]) -> Vec<Vec<u8>> {
    let s = raw_socket(server);
    s.send(d).unwrap();
    let id = UdpHeader::decode(d).expect("a valid header").0.request_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut r = Reassembler::new(id, 1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no complete reply within 10 s");
        s.set_read_timeout(Some(left)).unwrap();
        let n = s.recv(&mut buf).expect("a reply datagram");
        got.push(buf[..n].to_vec());
        if r.push(&buf[..n]).unwrap().is_some() {
            return got;
        }
    }
}

/// Sends `d` and decodes the reassembled reply frame.
fn ask(server: SocketAddr, d: &[u8]) -> Reply {
    let ds = exchange(server, d);
    let id = UdpHeader::decode(d).unwrap().0.request_id;
    let mut r = Reassembler::new(id, 1 << 20);
    let frame = ds.iter().find_map(|d| r.push(d).unwrap()).unwrap();
    decode_reply(&frame)
}

fn decode_reply(frame: &[u8]) -> Reply {
    let Ok(Decoded::Complete(r, used)) = decode_response(frame) else {
        panic!("not one response frame");
    };
    assert_eq!(
        frame.len() - used,
        r.header.body_len() as usize,
        "body length"
    );
    Reply {
        header: r.header,
        message: r.message_text(),
        meta: Metadata::decode(r.meta).unwrap(),
        body: frame[used..].to_vec(),
        fd: None,
    }
}

/// Sends `d` and asserts that nothing comes back for a while.
fn assert_silent(server: SocketAddr, d: &[u8]) {
    let s = raw_socket(server);
    s.send(d).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    match s.recv(&mut buf) {
        Ok(n) => panic!("expected silence, got {n} bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}

fn server_status(e: &Error) -> Status {
    e.status()
        .unwrap_or_else(|| panic!("expected a server status, got {e}"))
}

#[test]
fn udp_is_off_by_default() {
    let ts = TestServer::start();
    assert_eq!(ts.server().udp_addr(), None);
    assert_eq!(ts.server().udp_stats(), None);
}

#[test]
fn get_head_ping_round_trips() {
    let ts = start();
    let small = put(&ts, b"small", b"hello");
    let big_bytes = pattern(50 * 1024, 1);
    let big = put(&ts, b"big", &big_bytes);
    let mut c = client(udp_addr(&ts));

    c.ping().unwrap();
    let (b, m) = c.get(b"small").unwrap();
    assert_eq!(b, b"hello");
    assert_eq!(m.size, Some(5));
    assert_eq!(m.version, small.meta.version);
    assert_eq!(m.checksum, small.meta.checksum);
    let h = c.head(b"small").unwrap();
    assert_eq!(h.size, Some(5));
    assert_eq!(h.version, small.meta.version);

    let (b, m) = c.get(b"big").unwrap();
    assert_eq!(b, big_bytes);
    assert_eq!(m.version, big.meta.version);
    assert_eq!(c.head(b"big").unwrap().size, Some(50 * 1024));

    // 50 KiB really travels in many datagrams of at most 8 + 1400 bytes.
    let ds = exchange(
        udp_addr(&ts),
        &datagram(77, Op::Get, Mode::Copy, b"big", |_| {}),
    );
    assert!(ds.len() >= 37, "{} datagrams", ds.len());
    assert!(ds.iter().all(|d| d.len() <= 8 + 1400));
    let total = ds.len() as u16;
    for (i, d) in ds.iter().enumerate() {
        let (h, _) = UdpHeader::decode(d).unwrap();
        assert_eq!((h.request_id, h.seq, h.total), (77, i as u16, total));
    }

    // The counter moves just after the last datagram is sent: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = ts.server().udp_stats().unwrap();
        if s.replies >= 6 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(stats.received >= 6 && stats.replies >= 6, "{stats:?}");
    assert_eq!((stats.dropped, stats.send_failures), (0, 0));
}

#[test]
fn range_reads() {
    let ts = start();
    let bytes = pattern(50 * 1024, 2);
    put(&ts, b"big", &bytes);
    put(&ts, b"empty", b"");
    let mut c = client(udp_addr(&ts));

    let (b, m) = c.get_range(b"big", 1000, 3000).unwrap();
    assert_eq!(b, &bytes[1000..4000]);
    assert_eq!(m.size, Some(bytes.len() as u64));
    let (b, _) = c.get_range(b"big", 49_000, 0).unwrap();
    assert_eq!(b, &bytes[49_000..]);
    // Running past the end is cut at the end.
    let (b, _) = c.get_range(b"big", bytes.len() as u64 - 10, 100).unwrap();
    assert_eq!(b, &bytes[bytes.len() - 10..]);
    let (b, _) = c.get_range(b"big", bytes.len() as u64 - 1, 0).unwrap();
    assert_eq!(b, &bytes[bytes.len() - 1..]);
    // Starting at or past the end is not satisfiable.
    for off in [bytes.len() as u64, bytes.len() as u64 + 1, u64::MAX - 10] {
        let e = c.get_range(b"big", off, 1).unwrap_err();
        assert_eq!(server_status(&e), Status::RangeNotSatisfiable, "{e}");
        assert!(e.to_string().contains("past the end"), "{e}");
    }
    // Offset 0 of an empty object is fine, any other offset is not.
    assert_eq!(c.get(b"empty").unwrap().0, b"");
    assert_eq!(c.get_range(b"empty", 0, 10).unwrap().0, b"");
    let e = c.get_range(b"empty", 1, 0).unwrap_err();
    assert_eq!(server_status(&e), Status::RangeNotSatisfiable);

    // The reply says where its bytes start.
    let r = ask(
        udp_addr(&ts),
        &datagram(5, Op::Get, Mode::Copy, b"big", |h| {
            h.offset = 7;
            h.length = 3;
        }),
    );
    assert_status(&r, Status::Ok);
    assert_eq!((r.header.offset, r.header.length), (7, 3));
    assert_eq!(r.body, &bytes[7..10]);
}

#[test]
fn not_found_and_expired() {
    let ts = start();
    let mut c = client(udp_addr(&ts));
    let e = c.get(b"nothing").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(c.head(b"nothing").unwrap_err().is_not_found());

    let at = unix_now() + 2;
    let meta = Metadata {
        expires_at: Some(at),
        ..Metadata::default()
    };
    let r = ts.raw().put_copy_meta(b"ttl", b"soon gone", &meta);
    assert_status(&r, Status::Ok);
    assert_eq!(c.get(b"ttl").unwrap().0, b"soon gone");
    let deadline = Instant::now() + Duration::from_secs(10);
    while unix_now() < at {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.get(b"ttl").unwrap_err().is_not_found());
    assert!(c.head(b"ttl").unwrap_err().is_not_found());
}

#[test]
fn other_ops_are_refused() {
    let ts = start();
    put(&ts, b"k", b"still here");
    let addr = udp_addr(&ts);

    let mut put_dgram = datagram(1, Op::Put, Mode::Copy, b"k", |h| h.length = 3);
    put_dgram.extend_from_slice(b"new");
    let mut hello = UdpHeader {
        request_id: 6,
        seq: 0,
        total: 1,
    }
    .encode()
    .to_vec();
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 6);
    h.length = 16;
    encode_request(&h, b"", &[], &mut hello);
    hello.extend_from_slice(
        &Hello {
            version: 2,
            capabilities: 0,
            depth: 1,
        }
        .encode(),
    );
    let cases = [
        ("PUT", put_dgram),
        ("DELETE", datagram(2, Op::Delete, Mode::None, b"k", |_| {})),
        ("PIN", datagram(3, Op::Pin, Mode::None, b"k", |_| {})),
        (
            "COMMIT",
            datagram(4, Op::Commit, Mode::None, b"", |h| h.handle = 1),
        ),
        ("HELLO", hello),
    ];
    for (name, d) in cases {
        let r = ask(addr, &d);
        assert_status(&r, Status::OpUnsupported);
        assert!(
            r.message.contains(name) && r.message.contains("UDP serves GET, HEAD and PING"),
            "{}",
            r.message
        );
    }
    // Nothing was changed.
    assert_eq!(client(addr).get(b"k").unwrap().0, b"still here");
}

#[test]
fn responses_over_the_limit_are_refused() {
    let ts = start();
    // 40-byte header + 58 bytes of metadata + body: 65438 bytes is exactly 64 KiB.
    let fits = pattern(65_438, 3);
    let over = pattern(65_439, 4);
    put(&ts, b"fits", &fits);
    put(&ts, b"over", &over);
    let mut c = client(udp_addr(&ts));
    assert_eq!(c.get(b"fits").unwrap().0, fits);
    let e = c.get(b"over").unwrap_err();
    assert_eq!(server_status(&e), Status::ResponseTooLarge, "{e}");
    assert!(e.to_string().contains("65536"), "{e}");
    // HEAD and ranges of it still work.
    assert_eq!(c.head(b"over").unwrap().size, Some(65_439));
    assert_eq!(c.get_range(b"over", 1, 0).unwrap().0, &over[1..]);

    // A smaller limit applies to the whole frame.
    let ts = start_with(|c| c.udp_max_response = 2000);
    put(&ts, b"k", &pattern(3000, 5));
    let mut c = client(udp_addr(&ts));
    let e = c.get(b"k").unwrap_err();
    assert_eq!(server_status(&e), Status::ResponseTooLarge);
    assert!(e.to_string().contains("2000"), "{e}");
    assert_eq!(c.get_range(b"k", 0, 1000).unwrap().0.len(), 1000);
}

#[test]
fn modes() {
    let ts = start();
    put(&ts, b"k", b"bytes");
    let addr = udp_addr(&ts);
    for (i, mode) in [Mode::Fd, Mode::Splice].into_iter().enumerate() {
        let r = ask(addr, &datagram(i as u32 + 1, Op::Get, mode, b"k", |_| {}));
        assert_status(&r, Status::ModeUnsupported);
        assert!(r.message.contains("UDP"), "{}", r.message);
    }
    let r = ask(addr, &datagram(9, Op::Get, Mode::Auto, b"k", |_| {}));
    assert_status(&r, Status::Ok);
    assert_eq!(r.header.mode, Mode::Copy);
    assert_eq!(r.body, b"bytes");
    // Fields GET does not take still get BAD_REQUEST.
    let r = ask(
        addr,
        &datagram(10, Op::Get, Mode::Copy, b"k", |h| h.handle = 3),
    );
    assert_status(&r, Status::BadRequest);
    let r = ask(addr, &datagram(11, Op::Get, Mode::Copy, b"", |_| {}));
    assert_status(&r, Status::BadRequest);
}

#[test]
fn bad_datagrams() {
    let ts = start();
    put(&ts, b"k", b"value");
    let addr = udp_addr(&ts);
    let before = ts.server().udp_stats().unwrap().dropped;

    // No valid datagram header: dropped without a reply, and counted.
    assert_silent(addr, b"");
    assert_silent(addr, b"xyz");
    assert_silent(addr, &[1, 0, 0, 0, 0, 0, 0, 0, 0xa1]); // total 0
    assert_silent(addr, &[1, 0, 0, 0, 2, 0, 2, 0, 0xa1]); // seq >= total
    wait_for(
        "the drops to be counted",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || ts.server().udp_stats().unwrap().dropped >= before + 4,
    );

    // A valid header: PROTOCOL_ERROR, carrying the datagram's request id.
    let hdr = |id: u32, seq: u16, total: u16| {
        UdpHeader {
            request_id: id,
            seq,
            total,
        }
        .encode()
        .to_vec()
    };
    let get = datagram(0, Op::Get, Mode::Copy, b"k", |_| {});
    let frame = &get[8..];
    let mut cases: Vec<Vec<u8>> = vec![
        hdr(21, 0, 1),                                               // no frame at all
        [hdr(22, 0, 1), b"garbage, not a frame".to_vec()].concat(),  // bad magic
        [hdr(23, 0, 1), frame[..30].to_vec()].concat(),              // truncated header
        [hdr(24, 0, 1), frame[..frame.len() - 1].to_vec()].concat(), // truncated key
        [hdr(25, 0, 1), frame.to_vec(), b"!".to_vec()].concat(),     // stray bytes
        [hdr(26, 0, 2), frame.to_vec()].concat(),                    // a request in two datagrams
    ];
    let mut reserved = frame.to_vec();
    reserved[3] = 1;
    cases.push([hdr(27, 0, 1), reserved].concat());
    let mut v2 = frame.to_vec();
    v2[0] = MAGIC_REQ_V2;
    cases.push([hdr(28, 0, 1), v2].concat());
    for d in &cases {
        let ds = exchange(addr, d);
        assert_eq!(ds.len(), 1, "one datagram");
        let (h, chunk) = UdpHeader::decode(&ds[0]).unwrap();
        let id = UdpHeader::decode(d).unwrap().0.request_id;
        assert_eq!((h.request_id, h.seq, h.total), (id, 0, 1));
        let r = decode_reply(chunk);
        assert_status(&r, Status::ProtocolError);
        // The frame could not be trusted (or was a V2 frame): the datagram's id is used.
        if r.header.version == Version::V1 {
            assert!(r.header.request_id == id || r.header.request_id == 0);
        }
    }

    // A key over the limit is well framed: KEY_TOO_LONG.
    let long = vec![b'k'; MAX_KEY_LEN + 1];
    let r = ask(addr, &datagram(30, Op::Get, Mode::Copy, &long, |_| {}));
    assert_status(&r, Status::KeyTooLong);

    // The server keeps serving.
    let mut c = client(addr);
    c.ping().unwrap();
    assert_eq!(c.get(b"k").unwrap().0, b"value");
}

#[test]
fn the_servers_key_length_limit_applies_over_udp_too() {
    let ts = start_with(|c| c.max_key_len = 8);
    let addr = udp_addr(&ts);
    let r = ask(
        addr,
        &datagram(31, Op::Head, Mode::None, b"123456789", |_| {}),
    );
    assert_status(&r, Status::KeyTooLong);
    assert!(r.message.contains("limit of 8"), "{}", r.message);
    // At the limit: an ordinary miss.
    let r = ask(
        addr,
        &datagram(32, Op::Head, Mode::None, b"12345678", |_| {}),
    );
    assert_status(&r, Status::NotFound);
}

#[test]
fn documented_vectors() {
    let req = vector("udp-get-request");
    let (h, chunk) = UdpHeader::decode(&req).unwrap();
    assert_eq!((h.request_id, h.seq, h.total), (9, 0, 1));
    let Ok(Decoded::Complete(r, used)) = decode_request(chunk) else {
        panic!("the request vector is not a frame");
    };
    assert_eq!(used, chunk.len());
    assert_eq!(r.header.op, Op::Get);
    assert_eq!(r.header.mode, Mode::Copy);
    assert_eq!(r.header.request_id, 9);
    assert_eq!(r.key, b"/a");

    // The server's actual answer to it, byte for byte.
    let ts = start();
    let ds = exchange(udp_addr(&ts), &req);
    assert_eq!(ds, vec![vector("udp-not-found-response")]);

    // And the split of that frame is the documented datagram.
    let resp = vector("udp-not-found-response");
    assert_eq!(split(9, &resp[8..], 1400), vec![resp.clone()]);
    let r = decode_reply(&resp[8..]);
    assert_status(&r, Status::NotFound);
    assert_eq!(r.message, "no object under that key");
}

#[test]
fn small_payloads_and_bad_config() {
    let ts = start_with(|c| c.udp_payload = 100);
    let bytes = pattern(5000, 6);
    put(&ts, b"k", &bytes);
    let addr = udp_addr(&ts);
    assert_eq!(client(addr).get(b"k").unwrap().0, bytes);
    let ds = exchange(addr, &datagram(1, Op::Get, Mode::Copy, b"k", |_| {}));
    assert!(ds.len() >= 50 && ds.iter().all(|d| d.len() <= 108));

    for f in [
        (|c: &mut objmapper_server::ServerConfig| c.udp_payload = 0) as fn(&mut _),
        |c| c.udp_payload = 70_000,
        |c| c.udp_max_response = 100,
        |c| {
            c.udp_payload = 1;
            c.udp_max_response = 1 << 20;
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = util::config(dir.path().join("s.sock"), dir.path().join("data"));
        cfg.udp_listen = Some("127.0.0.1:0".parse().unwrap());
        f(&mut cfg);
        match objmapper_server::Server::start(cfg) {
            Err(objmapper_server::ServerError::Config(m)) => assert!(m.contains("udp"), "{m}"),
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("a bad UDP config was accepted"),
        }
    }
}

#[test]
fn shutdown_stops_the_udp_thread() {
    let mut ts = start();
    let addr = udp_addr(&ts);
    client(addr).ping().unwrap();
    let t = Instant::now();
    ts.stop();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Nobody answers any more (silence or port unreachable).
    let s = raw_socket(addr);
    let _ = s.send(&datagram(1, Op::Ping, Mode::None, b"", |_| {}));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(s.recv(&mut [0u8; 256]).is_err());
}

// ---- Lost, reordered, duplicated and late datagrams, through a tampering relay ----

/// A client for the relay tests: short attempts, so retries happen quickly.
fn lossy_client(addr: SocketAddr, timeout_ms: u64) -> UdpClient {
    let mut c = UdpClient::connect(addr).unwrap();
    c.set_timeout(Duration::from_millis(timeout_ms));
    c.set_retries(2);
    c
}

#[test]
fn a_lost_datagram_means_a_retry_never_wrong_bytes() {
    let ts = start();
    let bytes = pattern(50 * 1024, 7);
    put(&ts, b"big", &bytes);

    // The first reply loses one datagram; the retry (a new request id) gets through.
    let relay = Relay::start(
        udp_addr(&ts),
        Box::new(|idx, mut ds| {
            assert!(ds.len() > 10);
            if idx == 0 {
                ds.remove(5);
            }
            ds
        }),
    );
    let mut c = lossy_client(relay.addr(), 500);
    let (b, _) = c.get(b"big").unwrap();
    assert_eq!(b, bytes);
    assert!(
        relay.requests() >= 2 && relay.replies() >= 2,
        "the client retried"
    );
    drop(relay);

    // Every reply loses a datagram: a timeout after every attempt, and no bytes.
    let relay = Relay::start(
        udp_addr(&ts),
        Box::new(|_, mut ds| {
            ds.pop();
            ds
        }),
    );
    let mut c = lossy_client(relay.addr(), 200);
    let t = Instant::now();
    let e = c.get(b"big").unwrap_err();
    let Error::Timeout(msg) = &e else {
        panic!("expected a timeout, got {e}");
    };
    assert!(msg.contains("3 attempt(s) of 200 ms"), "{msg}");
    assert!(t.elapsed() >= Duration::from_millis(600));
    assert_eq!(relay.requests(), 3);
}

#[test]
fn reordered_datagrams_reassemble_exactly() {
    let ts = start();
    let bytes = pattern(50 * 1024, 8);
    put(&ts, b"big", &bytes);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let relay = Relay::start(
        udp_addr(&ts),
        Box::new(move |idx, mut ds| {
            if idx % 2 == 0 {
                ds.reverse();
            } else {
                ds.shuffle(&mut rng);
            }
            ds
        }),
    );
    let mut c = lossy_client(relay.addr(), 2000);
    for _ in 0..6 {
        assert_eq!(c.get(b"big").unwrap().0, bytes);
    }
    assert_eq!(
        c.get_range(b"big", 333, 20_000).unwrap().0,
        &bytes[333..20_333]
    );
    assert_eq!(relay.requests(), 7, "no retries were needed");
    assert_eq!(relay.replies(), 7);
}

#[test]
fn duplicated_datagrams_reassemble_exactly() {
    let ts = start();
    let bytes = pattern(50 * 1024, 9);
    put(&ts, b"big", &bytes);
    let relay = Relay::start(
        udp_addr(&ts),
        Box::new(|_, ds| {
            // Each datagram twice in a row, then the whole reply again, backwards.
            let mut out: Vec<Vec<u8>> = ds.iter().flat_map(|d| [d.clone(), d.clone()]).collect();
            out.extend(ds.into_iter().rev());
            out
        }),
    );
    let mut c = lossy_client(relay.addr(), 2000);
    // The second call also sees the first call's trailing duplicates first: ignored.
    for _ in 0..3 {
        assert_eq!(c.get(b"big").unwrap().0, bytes);
    }
    c.ping().unwrap();
    assert_eq!(c.head(b"big").unwrap().size, Some(bytes.len() as u64));
}

#[test]
fn a_late_reply_to_an_earlier_attempt_is_ignored() {
    let ts = start();
    let old = pattern(50 * 1024, 10);
    let new = pattern(50 * 1024, 11);
    put(&ts, b"big", &old);
    let socket = ts.socket();
    let replacement = new.clone();
    let mut held: Vec<Vec<u8>> = Vec::new();
    let relay = Relay::start(
        udp_addr(&ts),
        Box::new(move |idx, ds| {
            if idx == 0 {
                // Hold the first reply back (it carries the old bytes), and replace the
                // object before the client retries.
                held = ds;
                let r = util::Raw::connect(&socket).put_copy(b"big", &replacement);
                assert_eq!(r.header.status, Status::Ok);
                return Vec::new();
            }
            // The late datagrams of attempt 1 arrive around and inside attempt 2's reply.
            let late = std::mem::take(&mut held);
            let half = late.len() / 2;
            let n = ds.len();
            let mut out = late[..half].to_vec();
            for (i, d) in ds.into_iter().enumerate() {
                out.push(d);
                if let Some(l) = late.get(half + i) {
                    out.push(l.clone());
                }
            }
            out.extend(late.into_iter().skip(half + n));
            out
        }),
    );
    let mut c = lossy_client(relay.addr(), 500);
    let (b, m) = c.get(b"big").unwrap();
    assert!(b == new, "the client returned bytes of the earlier attempt");
    assert_eq!(m.size, Some(new.len() as u64));
    assert!(relay.requests() >= 2);
}
