//! The client against a scripted fake server on one end of a socketpair: framing, fd
//! passing (and its failure modes), errors, and the broken-connection rule.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use objmapper_client::{
    Client, Error, Metadata, Mode, ObjectState, PutOptions, Status, Tier, Transport,
};
use objmapper_proto::{
    decode_request, encode_response, req_flags, resp_flags, Decoded, Op, RequestHeader,
    ResponseHeader, Version, REQUEST_HEADER_LEN,
};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// A request as the fake server saw it.
#[derive(Debug)]
struct Seen {
    header: RequestHeader,
    key: Vec<u8>,
    meta: Metadata,
    body: Vec<u8>,
}

/// What the fake server does with one request.
struct Answer {
    header: ResponseHeader,
    message: String,
    meta: Metadata,
    body: Vec<u8>,
    fd: Option<OwnedFd>,
    /// Skip reading the request's inline body (the server refused it), answer, hang up.
    skip_body: bool,
}

impl Answer {
    fn ok(seen: &Seen) -> Answer {
        Answer::status(seen, Status::Ok, "")
    }
    fn status(seen: &Seen, status: Status, message: &str) -> Answer {
        Answer {
            header: ResponseHeader::new(Version::V1, status, seen.header.request_id),
            message: message.into(),
            meta: Metadata::default(),
            body: Vec::new(),
            fd: None,
            skip_body: false,
        }
    }
}

/// Reads header, key and metadata; the body is left on the socket (`body` is zeroed).
fn read_request(s: &mut UnixStream) -> Option<Seen> {
    let mut buf = vec![0u8; REQUEST_HEADER_LEN];
    if s.read_exact(&mut buf).is_err() {
        return None;
    }
    let h = match RequestHeader::decode(&buf).unwrap() {
        Decoded::Complete(h, _) => h,
        Decoded::Incomplete(_) => unreachable!(),
    };
    buf.resize(h.frame_len(), 0);
    s.read_exact(&mut buf[REQUEST_HEADER_LEN..]).unwrap();
    let req = match decode_request(&buf).unwrap() {
        Decoded::Complete(r, _) => r,
        Decoded::Incomplete(_) => unreachable!(),
    };
    objmapper_proto::validate_request(&req).expect("client sent an invalid request");
    let body = vec![0u8; h.body_len() as usize];
    Some(Seen {
        header: req.header,
        key: req.key.to_vec(),
        meta: Metadata::decode(req.meta).unwrap(),
        body,
    })
}

fn send_answer(s: &mut UnixStream, mut a: Answer) {
    let meta = a.meta.to_bytes().unwrap();
    if a.header.has_body() {
        a.header.length = a.body.len() as u64;
    }
    let mut frame = Vec::new();
    encode_response(&a.header, &a.message, &meta, &mut frame);
    frame.extend_from_slice(&a.body);
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = &a.fd {
        fds = [fd.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    }
    // The fd travels with the first byte of the header; the rest follows with write_all.
    let n = sendmsg(
        &*s,
        &[std::io::IoSlice::new(&frame)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    s.write_all(&frame[n..]).unwrap();
}

/// Runs `script` for each request until it returns None or the client hangs up.
fn fake_server<F>(mut script: F) -> (Client, JoinHandle<Vec<Seen>>)
where
    F: FnMut(&Seen) -> Option<Answer> + Send + 'static,
{
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut all = Vec::new();
        // The script sees the header first and may refuse the body, so the body is
        // read after it decides.
        while let Some(mut seen) = read_request(&mut b) {
            let answer = script(&seen);
            let skip = answer.as_ref().is_some_and(|a| a.skip_body);
            if !skip && !seen.body.is_empty() {
                b.read_exact(&mut seen.body).unwrap();
            }
            all.push(seen);
            match answer {
                Some(ans) => send_answer(&mut b, ans),
                None => break,
            }
            if skip {
                break; // the stream is out of sync: hang up, as a real server does
            }
        }
        all
    });
    (Client::from_unix_stream(a), t)
}

fn memfile(bytes: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

fn read_only_fd(bytes: &[u8]) -> OwnedFd {
    let mut t = tempfile::NamedTempFile::new().unwrap();
    t.write_all(bytes).unwrap();
    File::open(t.path()).unwrap().into()
}

fn obj_meta(size: u64) -> Metadata {
    Metadata {
        size: Some(size),
        version: Some(42),
        mtime_ns: Some(1_700_000_000_000_000_000),
        checksum: Some(0xdead_beef),
        content_type: Some("text/plain".into()),
        expires_at: None,
        tier: Some(Tier::Disk),
        state: Some(ObjectState::default()),
        custom: vec![("lang".into(), b"en".to_vec())],
    }
}

#[test]
fn ping_ids_increment_and_are_echoed() {
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    assert_eq!(c.transport(), Transport::Unix);
    for _ in 0..3 {
        c.ping().unwrap();
    }
    drop(c);
    let seen = t.join().unwrap();
    let ids: Vec<u32> = seen.iter().map(|s| s.header.request_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert!(seen.iter().all(|s| s.header.op == Op::Ping));
}

#[test]
fn get_copy_returns_body_and_metadata() {
    let (mut c, t) = fake_server(|s| {
        assert_eq!((s.header.op, s.header.mode), (Op::Get, Mode::Copy));
        assert_eq!(s.key, b"/a");
        let mut a = Answer::ok(s);
        a.header.flags = resp_flags::BODY;
        a.header.mode = Mode::Copy;
        a.body = b"hello".to_vec();
        a.meta = obj_meta(5);
        Some(a)
    });
    let (bytes, meta) = c.get(b"/a").unwrap();
    assert_eq!(bytes, b"hello");
    assert_eq!(meta, obj_meta(5));
    drop(c);
    t.join().unwrap();
}

#[test]
fn get_copy_large_body_arrives_whole() {
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let (mut c, t) = fake_server(move |s| {
        let mut a = Answer::ok(s);
        if s.header.op != Op::Get {
            return Some(a);
        }
        a.header.flags = resp_flags::BODY;
        a.header.mode = Mode::Copy;
        a.body = big.clone();
        Some(a)
    });
    let (bytes, _) = c.get(b"big").unwrap();
    assert!(bytes == expected, "body differs");
    c.ping().unwrap();
    drop(c);
    t.join().unwrap();
}

#[test]
fn get_fd_receives_cloexec_fd_at_offset() {
    let (mut c, t) = fake_server(|s| {
        assert_eq!((s.header.op, s.header.mode), (Op::Get, Mode::Fd));
        let mut a = Answer::ok(s);
        a.header.flags = resp_flags::FD_ATTACHED;
        a.header.mode = Mode::Fd;
        a.header.offset = 3;
        a.header.length = 5;
        a.meta = obj_meta(5);
        a.fd = Some(read_only_fd(b"xxxhelloyyy"));
        Some(a)
    });
    let obj = c.get_fd(b"/a").unwrap();
    assert_eq!((obj.offset, obj.length), (3, 5));
    assert_eq!(obj.meta.version, Some(42));
    let flags = rustix::io::fcntl_getfd(&obj.fd).unwrap();
    assert!(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "fd not CLOEXEC"
    );
    assert_eq!(obj.read_all().unwrap(), b"hello");
    let mut buf = vec![1, 2, 3];
    obj.read_into(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
    drop(c);
    t.join().unwrap();
}

#[test]
fn fd_attached_without_fd_is_protocol_error_and_breaks_client() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.header.flags = resp_flags::FD_ATTACHED;
        a.header.mode = Mode::Fd;
        a.header.length = 5;
        Some(a)
    });
    match c.get_fd(b"/a") {
        Err(Error::Protocol(m)) => assert!(m.contains("FD_ATTACHED"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(!c.is_usable());
    assert!(matches!(c.ping(), Err(Error::Closed)));
    drop(c);
    assert_eq!(t.join().unwrap().len(), 1, "nothing sent after the error");
}

#[test]
fn stray_fd_is_protocol_error_and_is_closed() {
    let (r, w) = rustix::pipe::pipe().unwrap();
    let mut w = Some(w);
    let (mut c, t) = fake_server(move |s| {
        let mut a = Answer::ok(s);
        a.fd = w.take(); // an fd, but no FD_ATTACHED flag
        Some(a)
    });
    match c.ping() {
        Err(Error::Protocol(m)) => assert!(m.contains("FD_ATTACHED"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    drop(c);
    t.join().unwrap();
    // Every copy of the write end is closed, the client's included: EOF.
    let mut buf = [0u8; 1];
    assert_eq!(rustix::io::read(&r, &mut buf).unwrap(), 0);
}

#[test]
fn fd_on_copy_get_is_protocol_error() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.header.flags = resp_flags::FD_ATTACHED;
        a.fd = Some(read_only_fd(b"x"));
        Some(a)
    });
    assert!(matches!(c.get(b"k"), Err(Error::Protocol(_))));
    drop(c);
    t.join().unwrap();
}

#[test]
fn server_error_keeps_message_and_connection() {
    let (mut c, t) = fake_server(|s| {
        Some(match s.header.op {
            Op::Ping => Answer::ok(s),
            _ => Answer::status(s, Status::NotFound, "no object under that key"),
        })
    });
    let e = c.get(b"missing").unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.status(), Some(Status::NotFound));
    assert_eq!(e.to_string(), "NOT_FOUND: no object under that key");
    assert!(c.head(b"missing").unwrap_err().is_not_found());
    assert!(!c.delete(b"missing", false).unwrap());
    assert!(c.is_usable());
    c.ping().unwrap();
    drop(c);
    t.join().unwrap();
}

#[test]
fn closing_status_breaks_client() {
    let (mut c, t) = fake_server(|s| Some(Answer::status(s, Status::ProtocolError, "bad")));
    assert_eq!(c.ping().unwrap_err().status(), Some(Status::ProtocolError));
    assert!(matches!(c.ping(), Err(Error::Closed)));
    drop(c);
    t.join().unwrap();
}

#[test]
fn wrong_request_id_is_protocol_error() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.header.request_id = s.header.request_id + 100;
        Some(a)
    });
    match c.ping() {
        Err(Error::Protocol(m)) => assert!(m.contains("request id"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    drop(c);
    t.join().unwrap();
}

#[test]
fn server_hangup_is_closed() {
    let (mut c, t) = fake_server(|_| None);
    assert!(matches!(c.ping(), Err(Error::Closed)));
    assert!(matches!(c.ping(), Err(Error::Closed)));
    t.join().unwrap();
}

#[test]
fn put_copy_sends_header_meta_and_body() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.meta = obj_meta(s.header.length);
        Some(a)
    });
    let opts = PutOptions {
        durable: true,
        content_type: Some("text/plain".into()),
        custom: vec![("lang".into(), b"en".to_vec())],
        ..PutOptions::default()
    };
    let meta = c.put(b"k", &body, &opts).unwrap();
    assert_eq!(meta.size, Some(body.len() as u64));
    drop(c);
    let seen = t.join().unwrap();
    let s = &seen[0];
    assert_eq!((s.header.op, s.header.mode), (Op::Put, Mode::Copy));
    assert_eq!(s.header.flags, req_flags::DURABLE);
    assert_eq!(s.header.length, body.len() as u64);
    assert_eq!(s.meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(s.meta.custom, vec![("lang".to_string(), b"en".to_vec())]);
    assert!(s.body == body);
}

#[test]
fn put_copy_sends_tier_flags_and_expiry() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.meta = Metadata {
            expires_at: s.meta.expires_at,
            tier: Some(Tier::Memory),
            state: Some(ObjectState::new(true, true, true)),
            ..obj_meta(2)
        };
        Some(a)
    });
    let opts = PutOptions {
        ephemeral: true,
        pinned: true,
        expires_at: Some(4_000_000_000),
        ..PutOptions::default()
    };
    let meta = c.put(b"k", b"hi", &opts).unwrap();
    assert_eq!(meta.expires_at, Some(4_000_000_000));
    assert_eq!(meta.tier, Some(Tier::Memory));
    let st = meta.state.unwrap();
    assert!(st.pinned() && st.ephemeral() && st.dirty());
    drop(c);
    let seen = t.join().unwrap();
    let s = &seen[0];
    assert_eq!((s.header.op, s.header.mode), (Op::Put, Mode::Copy));
    assert_eq!(s.header.flags, req_flags::EPHEMERAL | req_flags::PIN);
    assert_eq!(
        s.meta,
        Metadata {
            expires_at: Some(4_000_000_000),
            ..Metadata::default()
        }
    );
    assert_eq!(s.body, b"hi");
}

#[test]
fn with_ttl_sets_an_absolute_expiry_rounded_up() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = now();
    let o = PutOptions::default().with_ttl(std::time::Duration::from_secs(3600));
    let after = now();
    let at = o.expires_at.unwrap();
    assert!(at >= before + 3600 && at <= after + 3601, "{at}");
    // A fraction of a second still expires in the future, never now.
    let o = PutOptions::default().with_ttl(std::time::Duration::from_millis(1));
    assert!(o.expires_at.unwrap() > before, "{o:?}");
}

#[test]
fn durable_with_ephemeral_is_refused_locally() {
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    let opts = PutOptions {
        durable: true,
        ephemeral: true,
        ..PutOptions::default()
    };
    match c.put(b"k", b"v", &opts) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("contradict"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.begin_put(b"k", 0, &opts),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.commit(1, 0, &opts),
        Err(Error::InvalidArgument(_))
    ));
    assert!(c.is_usable());
    c.ping().unwrap();
    drop(c);
    assert_eq!(t.join().unwrap().len(), 1, "only the PING was sent");
}

#[test]
fn pin_and_unpin_report_found_or_not() {
    let (mut c, t) = fake_server(|s| {
        assert_eq!(s.header.mode, Mode::None);
        assert_eq!(s.header.flags, 0);
        assert!(s.meta.is_empty());
        Some(if s.key == b"there" {
            Answer::ok(s)
        } else {
            Answer::status(s, Status::NotFound, "no object under that key")
        })
    });
    assert!(c.pin(b"there").unwrap());
    assert!(!c.pin(b"missing").unwrap());
    assert!(c.unpin(b"there").unwrap());
    assert!(!c.unpin(b"missing").unwrap());
    assert!(matches!(c.pin(b""), Err(Error::InvalidArgument(_))));
    assert!(c.is_usable());
    drop(c);
    let seen = t.join().unwrap();
    let ops: Vec<Op> = seen.iter().map(|s| s.header.op).collect();
    assert_eq!(ops, [Op::Pin, Op::Pin, Op::Unpin, Op::Unpin]);
}

#[test]
fn pin_server_error_is_an_error() {
    let (mut c, t) = fake_server(|s| Some(Answer::status(s, Status::ReadOnly, "poisoned")));
    assert_eq!(c.pin(b"k").unwrap_err().status(), Some(Status::ReadOnly));
    assert!(c.is_usable());
    drop(c);
    t.join().unwrap();
}

#[test]
fn head_parses_tier_state_and_expiry() {
    let (mut c, t) = fake_server(|s| {
        assert_eq!(s.header.op, Op::Head);
        let mut a = Answer::ok(s);
        a.header.length = 7;
        a.meta = Metadata {
            expires_at: Some(1_900_000_000),
            tier: Some(Tier::Both),
            state: Some(ObjectState::new(false, false, true)),
            ..obj_meta(7)
        };
        Some(a)
    });
    let m = c.head(b"k").unwrap();
    assert_eq!(m.size, Some(7));
    assert_eq!(m.expires_at, Some(1_900_000_000));
    assert_eq!(m.tier, Some(Tier::Both));
    let st = m.state.unwrap();
    assert!(!st.pinned() && !st.ephemeral() && st.dirty());
    drop(c);
    t.join().unwrap();
}

#[test]
fn undefined_tier_value_is_protocol_error() {
    let (mut c, t) = piecewise_server(|s| {
        let mut frame = response_bytes(s, 0, 0, b"", &Metadata::default());
        // Hand-made TIER entry with the undefined value 9.
        frame.extend_from_slice(&[0x07, 0x00, 0x01, 0x00, 0x09]);
        frame[12] = 5; // meta_len
        vec![(frame, vec![])]
    });
    match c.head(b"k") {
        Err(Error::Protocol(m)) => assert!(m.contains("0x0007"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!c.is_usable());
    drop(c);
    t.join().unwrap();
}

#[test]
fn put_copy_too_large_reports_server_reason() {
    let body = vec![0u8; 32 << 20];
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::status(
            s,
            Status::ObjectTooLarge,
            "object of 33554432 bytes exceeds the limit of 1024",
        );
        a.skip_body = true;
        Some(a)
    });
    // The fake server answers, then stops reading and hangs up: the client's write of
    // the body fails, and it reports the server's reason rather than EPIPE.
    let h = thread::spawn(move || {
        let r = c.put(b"k", &body, &PutOptions::default());
        (r, c)
    });
    let seen = t.join().unwrap();
    assert_eq!(seen.len(), 1);
    let (r, mut c) = h.join().unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(Status::ObjectTooLarge), "{e}");
    assert!(matches!(c.ping(), Err(Error::Closed)));
}

#[test]
fn put_fd_writes_staging_file_and_commits() {
    let mut staged: Option<File> = None;
    let (mut c, t) = fake_server(move |s| {
        let mut a = Answer::ok(s);
        match s.header.op {
            Op::Put => {
                assert_eq!(s.header.mode, Mode::Fd);
                assert_eq!(s.header.length, 11, "size hint");
                assert_eq!(s.header.flags, req_flags::DURABLE | req_flags::PIN);
                assert_eq!(s.meta.content_type.as_deref(), Some("a/b"));
                assert_eq!(s.meta.expires_at, Some(4_000_000_000));
                let f = memfile(b"");
                a.fd = Some(f.try_clone().unwrap().into());
                staged = Some(f);
                a.header.flags = resp_flags::FD_ATTACHED;
                a.header.mode = Mode::Fd;
                a.header.handle = 9;
            }
            Op::Commit => {
                assert_eq!((s.header.handle, s.header.length), (9, 11));
                assert_eq!(s.header.flags, req_flags::DURABLE | req_flags::PIN);
                assert!(s.meta.is_empty());
                let mut got = Vec::new();
                let f = staged.as_mut().unwrap();
                f.seek(SeekFrom::Start(0)).unwrap();
                f.read_to_end(&mut got).unwrap();
                assert_eq!(got, b"hello world");
                a.meta = obj_meta(11);
            }
            op => panic!("unexpected {op}"),
        }
        Some(a)
    });
    let opts = PutOptions {
        durable: true,
        pinned: true,
        expires_at: Some(4_000_000_000),
        content_type: Some("a/b".into()),
        ..PutOptions::default()
    };
    let meta = c
        .put_fd(b"k", 11, &opts, |f| f.write_all(b"hello world"))
        .unwrap();
    assert_eq!(meta.size, Some(11));
    drop(c);
    assert_eq!(t.join().unwrap().len(), 2);
}

#[test]
fn put_fd_writer_error_aborts() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        if s.header.op == Op::Put {
            a.fd = Some(memfile(b"").into());
            a.header.flags = resp_flags::FD_ATTACHED;
            a.header.handle = 5;
        }
        Some(a)
    });
    let e = c
        .put_fd(b"k", 3, &PutOptions::default(), |_| {
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
    assert!(
        matches!(&e, Error::Writer(io) if io.to_string() == "disk on fire"),
        "{e}"
    );
    assert!(c.is_usable());
    drop(c);
    let seen = t.join().unwrap();
    let ops: Vec<Op> = seen.iter().map(|s| s.header.op).collect();
    assert_eq!(ops, [Op::Put, Op::Abort]);
    assert_eq!(seen[1].header.handle, 5);
}

#[test]
fn begin_put_without_handle_is_protocol_error() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.fd = Some(memfile(b"").into());
        a.header.flags = resp_flags::FD_ATTACHED;
        Some(a)
    });
    assert!(matches!(
        c.begin_put(b"k", 0, &PutOptions::default()),
        Err(Error::Protocol(_))
    ));
    drop(c);
    t.join().unwrap();
}

#[test]
fn invalid_arguments_are_refused_locally() {
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    assert!(matches!(c.get(b""), Err(Error::InvalidArgument(_))));
    match c.get_fd(&[b'k'; 4097]) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("4096"), "{m}"),
        other => panic!("{other:?}"),
    }
    let opts = PutOptions {
        content_type: Some("x".repeat(300)),
        ..PutOptions::default()
    };
    assert!(matches!(
        c.put(b"k", b"v", &opts),
        Err(Error::InvalidArgument(_))
    ));
    let opts = PutOptions {
        custom: vec![("big".into(), vec![0; 70_000])],
        ..PutOptions::default()
    };
    assert!(matches!(
        c.put(b"k", b"v", &opts),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(c.abort(0), Err(Error::InvalidArgument(_))));
    assert!(c.is_usable());
    c.ping().unwrap();
    drop(c);
    assert_eq!(
        t.join().unwrap().len(),
        1,
        "only the PING reached the server"
    );
}

#[test]
fn fd_mode_over_tcp_is_refused_locally() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = Client::connect_tcp(l.local_addr().unwrap()).unwrap();
    assert_eq!(c.transport(), Transport::Tcp);
    assert!(!c.transport().supports(Mode::Fd));
    assert!(c.transport().supports(Mode::Copy));
    assert!(!Transport::Unix.supports(Mode::Splice));
    assert!(!Transport::Unix.supports(Mode::Auto));
    match c.get_fd(b"k") {
        Err(Error::ModeUnsupported { mode, transport }) => {
            assert_eq!((mode, transport), (Mode::Fd, Transport::Tcp))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.begin_put(b"k", 0, &PutOptions::default()),
        Err(Error::ModeUnsupported { .. })
    ));
    assert!(c.is_usable());
    // Nothing was sent.
    let (mut peer, _) = l.accept().unwrap();
    drop(c);
    let mut buf = Vec::new();
    peer.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty());
}

#[test]
fn connect_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.sock");
    match Client::connect(&path) {
        Err(e @ Error::Connect { .. }) => {
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// Sends `pieces` of one response, each with the fds listed for it, pausing in between
/// so the client sees them as separate reads.
fn send_pieces(s: &UnixStream, pieces: &[(Vec<u8>, Vec<OwnedFd>)]) {
    for (bytes, fds) in pieces {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        let n = sendmsg(
            s,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert_eq!(n, bytes.len());
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A one-request server that answers with hand-cut pieces.
fn piecewise_server<F>(make: F) -> (Client, JoinHandle<()>)
where
    F: FnOnce(&Seen) -> Vec<(Vec<u8>, Vec<OwnedFd>)> + Send + 'static,
{
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let seen = read_request(&mut b).unwrap();
        let pieces = make(&seen);
        send_pieces(&b, &pieces);
        // Wait for the client to hang up.
        let mut sink = Vec::new();
        let _ = b.read_to_end(&mut sink);
    });
    (Client::from_unix_stream(a), t)
}

fn response_bytes(seen: &Seen, flags: u16, length: u64, body: &[u8], meta: &Metadata) -> Vec<u8> {
    let mut h = ResponseHeader::new(Version::V1, Status::Ok, seen.header.request_id);
    h.flags = flags;
    h.length = length;
    let mut out = Vec::new();
    encode_response(&h, "", &meta.to_bytes().unwrap(), &mut out);
    out.extend_from_slice(body);
    out
}

#[test]
fn fragmented_fd_response_is_reassembled() {
    let (mut c, t) = piecewise_server(|s| {
        let frame = response_bytes(s, resp_flags::FD_ATTACHED, 4, b"", &obj_meta(4));
        vec![
            (frame[..1].to_vec(), vec![read_only_fd(b"abcd")]),
            (frame[1..30].to_vec(), vec![]),
            (frame[30..].to_vec(), vec![]),
        ]
    });
    let obj = c.get_fd(b"k").unwrap();
    assert_eq!(obj.read_all().unwrap(), b"abcd");
    assert_eq!(obj.meta, obj_meta(4));
    drop(c);
    t.join().unwrap();
}

#[test]
fn fragmented_copy_body_is_reassembled() {
    let (mut c, t) = piecewise_server(|s| {
        let frame = response_bytes(s, resp_flags::BODY, 6, b"abcdef", &Metadata::default());
        vec![
            (frame[..45].to_vec(), vec![]),
            (frame[45..].to_vec(), vec![]),
        ]
    });
    assert_eq!(c.get(b"k").unwrap().0, b"abcdef");
    drop(c);
    t.join().unwrap();
}

#[test]
fn two_fds_with_one_response_is_protocol_error() {
    let (mut c, t) = piecewise_server(|s| {
        let frame = response_bytes(s, resp_flags::FD_ATTACHED, 1, b"", &Metadata::default());
        vec![(frame, vec![read_only_fd(b"a"), read_only_fd(b"b")])]
    });
    assert!(matches!(c.get_fd(b"k"), Err(Error::Protocol(_))));
    drop(c);
    t.join().unwrap();
}

#[test]
fn fd_in_the_middle_of_a_body_is_protocol_error() {
    let (mut c, t) = piecewise_server(|s| {
        let body = vec![7u8; 200_000];
        let frame = response_bytes(
            s,
            resp_flags::BODY,
            body.len() as u64,
            &body,
            &Metadata::default(),
        );
        vec![
            (frame[..100_000].to_vec(), vec![]),
            (frame[100_000..].to_vec(), vec![read_only_fd(b"x")]),
        ]
    });
    match c.get(b"k") {
        Err(Error::Protocol(m)) => assert!(m.contains("fd"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(c);
    t.join().unwrap();
}

#[test]
fn truncated_response_is_an_error() {
    let (mut c, t) = piecewise_server(|s| {
        let frame = response_bytes(s, resp_flags::BODY, 10, b"abc", &Metadata::default());
        vec![(frame, vec![])]
    });
    // The server sends 3 of 10 body bytes and then waits for us; a timeout ends the wait.
    c.set_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    match c.get(b"k") {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    assert!(!c.is_usable());
    drop(c);
    t.join().unwrap();
}
