//! Bad input gets a clear status and harms nothing: after each case other connections
//! keep working and the stored objects are unchanged.

mod util;

use objmapper_proto::*;
use std::io::Write;
use std::time::{Duration, Instant};
use util::*;

/// Stores a sentinel object, runs `case`, then checks a fresh connection still works and
/// the sentinel is intact.
fn harmless(case: impl FnOnce(&TestServer)) {
    let ts = TestServer::start();
    let mut other = ts.raw();
    assert_status(&other.put_copy(b"sentinel", b"precious bytes"), Status::Ok);
    case(&ts);
    assert_status(&other.ping(), Status::Ok);
    let g = other.get_copy(b"sentinel");
    assert_status(&g, Status::Ok);
    assert_eq!(g.body, b"precious bytes");
    let mut fresh = ts.raw();
    assert_status(&fresh.ping(), Status::Ok);
    assert_eq!(
        ts.server().store().len(),
        1,
        "no object appeared or vanished"
    );
}

fn expect_fatal(c: &mut Raw, st: Status, needle: &str) {
    let r = c.recv();
    assert_status(&r, st);
    assert!(
        r.message.contains(needle),
        "{:?} lacks {needle:?}",
        r.message
    );
    assert!(c.try_recv().is_none(), "server closes after {st}");
}

#[test]
fn garbage_bytes_get_protocol_error_then_close() {
    harmless(|ts| {
        let mut c = ts.raw();
        c.send_bytes(b"GET /index.html HTTP/1.1\r\n\r\n");
        expect_fatal(&mut c, Status::ProtocolError, "bad magic");
    });
}

#[test]
fn unknown_op_gets_protocol_error_then_close() {
    harmless(|ts| {
        let mut c = ts.raw();
        let mut frame = bare_frame(Version::V1, Op::Ping, 5);
        frame[1] = 0x7f;
        c.send_bytes(&frame);
        expect_fatal(&mut c, Status::ProtocolError, "unknown op");
    });
}

#[test]
fn truncated_frame_gets_protocol_error_then_close() {
    harmless(|ts| {
        let mut c = ts.raw();
        let mut frame = Vec::new();
        let mut h = RequestHeader::new(Version::V1, Op::Get, 1);
        h.mode = Mode::Copy;
        encode_request(&h, b"some-key", b"", &mut frame);
        c.send_bytes(&frame[..frame.len() - 3]);
        c.sock.shutdown(std::net::Shutdown::Write).unwrap();
        expect_fatal(&mut c, Status::ProtocolError, "truncated");
    });
}

#[test]
fn truncated_put_body_publishes_nothing() {
    harmless(|ts| {
        let mut c = ts.raw();
        c.send(Op::Put, Mode::Copy, b"half", &Metadata::default(), |h| {
            h.length = 1000
        });
        c.send_bytes(&[7u8; 400]);
        c.sock.shutdown(std::net::Shutdown::Write).unwrap();
        expect_fatal(&mut c, Status::ProtocolError, "truncated");
        let mut d = ts.raw();
        assert_status(&d.get_copy(b"half"), Status::NotFound);
    });
}

#[test]
fn over_long_key_gets_key_too_long_and_the_connection_survives() {
    harmless(|ts| {
        let mut c = ts.raw();
        let key = vec![b'k'; MAX_KEY_LEN + 1];
        c.request(Op::Get, Mode::Copy, &key);
        let r = c.recv();
        assert_status(&r, Status::KeyTooLong);
        assert!(r.message.contains("4096"), "{}", r.message);
        // Even with a body behind it, the stream stays in sync.
        c.send(Op::Put, Mode::Copy, &key, &Metadata::default(), |h| {
            h.length = 10
        });
        c.send_bytes(b"0123456789");
        assert_status(&c.recv(), Status::KeyTooLong);
        assert_status(&c.ping(), Status::Ok);
    });
}

#[test]
fn commit_with_wrong_length_publishes_nothing() {
    harmless(|ts| {
        let mut c = ts.raw();
        c.request(Op::Put, Mode::Fd, b"mismatch");
        let r = c.recv();
        assert_status(&r, Status::Ok);
        std::fs::File::from(r.fd.unwrap())
            .write_all(b"12345")
            .unwrap();
        c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = r.header.handle;
            h.length = 6;
        });
        let e = c.recv();
        assert_status(&e, Status::LengthMismatch);
        assert!(
            e.message.contains('5') && e.message.contains('6'),
            "{}",
            e.message
        );
        assert_status(&c.get_copy(b"mismatch"), Status::NotFound);
        // The handle was consumed.
        c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = r.header.handle;
            h.length = 5;
        });
        assert_status(&c.recv(), Status::UnknownHandle);
    });
}

#[test]
fn commit_or_abort_of_unknown_handle() {
    harmless(|ts| {
        let mut c = ts.raw();
        c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = 999;
            h.length = 1;
        });
        assert_status(&c.recv(), Status::UnknownHandle);
        c.send(Op::Abort, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = 999
        });
        assert_status(&c.recv(), Status::UnknownHandle);
        // Another connection's handle is not ours to commit.
        let mut owner = ts.raw();
        owner.request(Op::Put, Mode::Fd, b"theirs");
        let r = owner.recv();
        c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = r.header.handle;
            h.length = 0;
        });
        assert_status(&c.recv(), Status::UnknownHandle);
        owner.send(Op::Abort, Mode::None, b"", &Metadata::default(), |h| {
            h.handle = r.header.handle
        });
        assert_status(&owner.recv(), Status::Ok);
    });
}

#[test]
fn get_missing_key_is_not_found() {
    harmless(|ts| {
        let mut c = ts.raw();
        let r = c.get_copy(b"nope");
        assert_status(&r, Status::NotFound);
        assert_eq!(r.message, "no object under that key");
        assert_status(&c.get_fd(b"nope"), Status::NotFound);
    });
}

#[test]
fn fd_mode_over_tcp_is_mode_unsupported_and_no_fd_is_sent() {
    let ts = TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()));
    let addr = ts.server().tcp_addr().unwrap();
    let mut unix = ts.raw();
    assert_status(&unix.put_copy(b"k", b"bytes"), Status::Ok);
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_reply = |tcp: &mut std::net::TcpStream| {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Decoded::Complete(r, n) = decode_response(&buf).unwrap() {
                let total = n + r.header.body_len() as usize;
                if buf.len() >= total {
                    return (r.header, r.message_text(), buf[n..total].to_vec());
                }
            }
            let k = tcp.read(&mut chunk).unwrap();
            assert!(k > 0, "unexpected EOF");
            buf.extend_from_slice(&chunk[..k]);
        }
    };
    for op in [Op::Get, Op::Put] {
        let mut frame = Vec::new();
        let mut h = RequestHeader::new(Version::V1, op, 1);
        h.mode = Mode::Fd;
        encode_request(&h, b"k", b"", &mut frame);
        tcp.write_all(&frame).unwrap();
        let (h, msg, _) = read_reply(&mut tcp);
        assert_eq!(h.status, Status::ModeUnsupported, "{msg}");
        assert!(!h.fd_attached());
        assert!(msg.contains("TCP"), "{msg}");
    }
    // Copy mode works on the same TCP connection.
    let mut frame = Vec::new();
    let mut h = RequestHeader::new(Version::V1, Op::Get, 2);
    h.mode = Mode::Copy;
    encode_request(&h, b"k", b"", &mut frame);
    tcp.write_all(&frame).unwrap();
    let (h, _, body) = read_reply(&mut tcp);
    assert_eq!(h.status, Status::Ok);
    assert_eq!(body, b"bytes");
}

#[test]
fn a_stalled_half_frame_does_not_block_other_clients() {
    harmless(|ts| {
        let mut staller = ts.raw();
        let frame = bare_frame(Version::V1, Op::Ping, 1);
        staller.send_bytes(&frame[..17]);
        let mut copier = ts.raw();
        copier.send(Op::Put, Mode::Copy, b"slow", &Metadata::default(), |h| {
            h.length = 100
        });
        copier.send_bytes(&[1u8; 10]);
        let t = Instant::now();
        for i in 0..50 {
            let mut c = ts.raw();
            assert_status(&c.ping(), Status::Ok);
            assert_status(&c.put_copy(format!("k{i}").as_bytes(), b"x"), Status::Ok);
            c.send(
                Op::Delete,
                Mode::None,
                format!("k{i}").as_bytes(),
                &Metadata::default(),
                |_| {},
            );
            assert_status(&c.recv(), Status::Ok);
        }
        assert!(t.elapsed() < Duration::from_secs(15));
        // The staller can still finish its frame and be answered.
        staller.send_bytes(&frame[17..]);
        assert_status(&staller.recv(), Status::Ok);
    });
}

#[test]
fn a_stalled_frame_times_out_with_protocol_error() {
    let ts = TestServer::start_with(|c| c.frame_timeout = Duration::from_secs(1));
    let mut c = ts.raw();
    c.send_bytes(&[MAGIC_REQ_V1, Op::Ping.as_u8(), 0]);
    let r = c.recv();
    assert_status(&r, Status::ProtocolError);
    assert!(r.message.contains("no progress"), "{}", r.message);
    assert!(c.try_recv().is_none());
    assert_status(&ts.raw().ping(), Status::Ok);
}

#[test]
fn a_slow_upload_that_keeps_sending_is_not_timed_out() {
    let ts = TestServer::start_with(|c| c.frame_timeout = Duration::from_secs(1));
    let mut c = ts.raw();
    c.send(Op::Put, Mode::Copy, b"slow", &Metadata::default(), |h| {
        h.length = 8
    });
    for b in b"trickled" {
        std::thread::sleep(Duration::from_millis(300));
        c.send_bytes(&[*b]);
    }
    assert_status(&c.recv(), Status::Ok);
    assert_eq!(c.get_copy(b"slow").body, b"trickled");
}

#[test]
fn invalid_requests_get_bad_request_without_closing() {
    harmless(|ts| {
        let mut c = ts.raw();
        // Empty key.
        c.request(Op::Get, Mode::Copy, b"");
        assert_status(&c.recv(), Status::BadRequest);
        // Unknown flag bit.
        c.send(Op::Get, Mode::Copy, b"k", &Metadata::default(), |h| {
            h.flags = 0x4000
        });
        assert_status(&c.recv(), Status::BadRequest);
        // Server-only metadata on a PUT: rejected, and its body skipped.
        let bad = Metadata {
            version: Some(1),
            ..Default::default()
        };
        let r = c.put_copy_meta(b"k", b"body", &bad);
        assert_status(&r, Status::BadRequest);
        assert!(r.message.contains("set by the server"), "{}", r.message);
        // Malformed metadata bytes.
        let mut frame = Vec::new();
        let mut h = RequestHeader::new(Version::V1, Op::Put, 9);
        h.mode = Mode::Copy;
        h.length = 3;
        encode_request(&h, b"k", b"\x05\x00\x09\x00ab", &mut frame);
        frame.extend_from_slice(b"xyz");
        c.send_bytes(&frame);
        assert_status(&c.recv(), Status::BadRequest);
        // auto applies to GET only: a PUT names its mode.
        c.request(Op::Put, Mode::Auto, b"k");
        let r = c.recv();
        assert_status(&r, Status::ModeUnsupported);
        assert!(r.message.contains("auto"), "{}", r.message);
        // The connection is still in sync.
        assert_status(&c.ping(), Status::Ok);
        assert_status(&c.get_copy(b"k"), Status::NotFound);
    });
}

#[test]
fn too_large_copy_put_is_refused_before_any_byte_and_closes() {
    let ts = TestServer::start_with(|c| c.store.max_object_size = 1024);
    let mut c = ts.raw();
    c.send(Op::Put, Mode::Copy, b"big", &Metadata::default(), |h| {
        h.length = 1 << 30
    });
    let r = c.recv();
    assert_status(&r, Status::ObjectTooLarge);
    assert!(r.message.contains("1024"), "{}", r.message);
    assert!(c.try_recv().is_none());
    // fd mode: the size is checked at COMMIT.
    let mut c = ts.raw();
    c.request(Op::Put, Mode::Fd, b"big");
    let s = c.recv();
    std::fs::File::from(s.fd.unwrap())
        .write_all(&[0u8; 2048])
        .unwrap();
    c.send(Op::Commit, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = s.header.handle;
        h.length = 2048;
    });
    assert_status(&c.recv(), Status::ObjectTooLarge);
    assert_status(&c.get_copy(b"big"), Status::NotFound);
}

#[test]
fn v2_frames_need_hello_first() {
    harmless(|ts| {
        let mut c = ts.raw();
        let frame = bare_frame(Version::V2, Op::Ping, 1);
        c.send_bytes(&frame);
        expect_fatal(&mut c, Status::ProtocolError, "HELLO");
    });
}

#[test]
fn hello_negotiates_v2_with_fd_passing_on_unix() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let mut frame = Vec::new();
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
    h.length = 16;
    encode_request(&h, b"", b"", &mut frame);
    frame.extend_from_slice(
        &Hello {
            version: 2,
            capabilities: hello::caps::KNOWN,
            depth: 64,
        }
        .encode(),
    );
    c.send_bytes(&frame);
    let r = c.recv();
    assert_status(&r, Status::Ok);
    let granted = Hello::decode(&r.body).unwrap();
    assert_eq!(granted.capabilities, hello::caps::KNOWN);
    assert_eq!(granted.depth, 64);
    // V2 frames now work; V1 frames are refused.
    let frame = bare_frame(Version::V2, Op::Ping, 3);
    c.send_bytes(&frame);
    let r = c.recv();
    assert_status(&r, Status::Ok);
    assert_eq!(r.header.version, Version::V2);
    assert_eq!(r.header.request_id, 3);
    c.ping();
}

#[test]
fn disconnect_with_uncommitted_puts_leaves_nothing_behind() {
    let ts = TestServer::start();
    let before = files_under(&ts.data_dir());
    {
        let mut c = ts.raw();
        for i in 0..5 {
            c.send(
                Op::Put,
                Mode::Fd,
                format!("u{i}").as_bytes(),
                &Metadata::default(),
                |_| {},
            );
            let r = c.recv();
            std::fs::File::from(r.fd.unwrap())
                .write_all(&[9u8; 50_000])
                .unwrap();
        }
        c.send(Op::Put, Mode::Copy, b"u-copy", &Metadata::default(), |h| {
            h.length = 10_000
        });
        c.send_bytes(&[1u8; 5000]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut c = ts.raw();
    for i in 0..5 {
        assert_status(&c.get_copy(format!("u{i}").as_bytes()), Status::NotFound);
    }
    assert_status(&c.get_copy(b"u-copy"), Status::NotFound);
    assert_eq!(files_under(&ts.data_dir()), before, "no file left behind");
    assert_eq!(ts.server().store().len(), 0);
}

#[test]
fn staged_puts_per_connection_are_bounded() {
    let ts = TestServer::start_with(|c| c.max_staged_puts = 3);
    let mut c = ts.raw();
    let mut handles = Vec::new();
    for i in 0..3 {
        c.send(
            Op::Put,
            Mode::Fd,
            format!("s{i}").as_bytes(),
            &Metadata::default(),
            |_| {},
        );
        handles.push(c.recv().header.handle);
    }
    c.request(Op::Put, Mode::Fd, b"s3");
    let r = c.recv();
    assert_status(&r, Status::TooManyRequests);
    assert!(r.fd.is_none());
    c.send(Op::Abort, Mode::None, b"", &Metadata::default(), |h| {
        h.handle = handles[0]
    });
    assert_status(&c.recv(), Status::Ok);
    c.request(Op::Put, Mode::Fd, b"s3");
    assert_status(&c.recv(), Status::Ok);
}

#[test]
fn a_hello_longer_than_a_token_allows_is_refused_without_waiting_for_its_body() {
    let ts = TestServer::start();
    let max = (hello::HELLO_LEN + hello::HELLO_TOKEN_MAX) as u64;
    for length in [max + 1, u64::MAX / 2, 15] {
        let mut c = ts.raw();
        let mut frame = Vec::new();
        let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
        h.length = length;
        encode_request(&h, b"", b"", &mut frame);
        frame.extend_from_slice(
            &Hello {
                version: 2,
                capabilities: 0,
                depth: 1,
            }
            .encode(),
        );
        // No more bytes follow: the answer must not wait for the declared body.
        c.send_bytes(&frame);
        expect_fatal(&mut c, Status::BadRequest, "token bytes");
    }
}

#[test]
fn a_hello_with_a_token_is_accepted_where_none_is_required() {
    let ts = TestServer::start();
    let mut c = ts.raw();
    let token = b"an unneeded but harmless token";
    let mut frame = Vec::new();
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 0);
    h.length = (hello::HELLO_LEN + token.len()) as u64;
    encode_request(&h, b"", b"", &mut frame);
    let asked = Hello {
        version: 2,
        capabilities: 0,
        depth: 1,
    };
    frame.extend_from_slice(&asked.encode());
    frame.extend_from_slice(token);
    // A PING right behind it: the token bytes must not be read as a frame.
    encode_request(
        &RequestHeader::new(Version::V2, Op::Ping, 1),
        b"",
        b"",
        &mut frame,
    );
    c.send_bytes(&frame);
    assert_status(&c.recv(), Status::Ok);
    assert_status(&c.recv(), Status::Ok);
}
