//! The client against a scripted fake server on one end of a socketpair: framing, fd
//! passing (and its failure modes), errors, and the broken-connection rule.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use objmapper_client::{
    caps, Client, DeleteOptions, Error, GetOptions, GetReply, Hello, Metadata, Mode, ObjectState,
    PutOptions, Reply, Status, Tier, Transport, V2Options,
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
            // V1 requests get V1 responses, V2 requests V2 ones.
            header: ResponseHeader::new(seen.header.version, status, seen.header.request_id),
            message: message.into(),
            meta: Metadata::default(),
            body: Vec::new(),
            fd: None,
            skip_body: false,
        }
    }

    /// Answers with `body` inline, in copy mode.
    fn copy_body(&mut self, body: Vec<u8>) {
        self.header.mode = Mode::Copy;
        self.header.flags = resp_flags::BODY;
        self.body = body;
    }

    /// [`Answer::copy_body`], by value.
    fn with_copy_body(mut self, body: Vec<u8>) -> Answer {
        self.copy_body(body);
        self
    }

    /// Says an fd (`fd`; None: the flag without one) comes with the answer, for
    /// `length` bytes.
    fn attach(&mut self, fd: Option<OwnedFd>, length: u64) {
        self.header.mode = Mode::Fd;
        self.header.flags = resp_flags::FD_ATTACHED;
        self.header.length = length;
        self.fd = fd;
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

fn send_answer(s: &mut UnixStream, a: Answer) {
    try_send_answer(s, a).unwrap()
}

fn try_send_answer(s: &mut UnixStream, mut a: Answer) -> std::io::Result<()> {
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
        SendFlags::NOSIGNAL,
    )?;
    s.write_all(&frame[n..])
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

/// `r` is an `Error::InvalidArgument` (a call the client refuses itself).
fn assert_refused_locally<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

/// After local refusals the client is still usable, and the server saw only the PING
/// sent now.
fn assert_only_ping_sent(mut c: Client, t: JoinHandle<Vec<Seen>>) {
    assert!(c.is_usable());
    c.ping().unwrap();
    drop(c);
    assert_eq!(t.join().unwrap().len(), 1, "only the PING was sent");
}

/// `r` is an `Error::Protocol` whose message contains `says`.
fn assert_protocol_error<T: std::fmt::Debug>(r: Result<T, Error>, says: &str) {
    match r {
        Err(Error::Protocol(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// `f` of each request header the fake server saw.
fn header_fields<T>(seen: &[Seen], f: impl Fn(&RequestHeader) -> T) -> Vec<T> {
    seen.iter().map(|s| f(&s.header)).collect()
}

/// Closes the client, then waits for the fake server to finish; returns what it saw.
fn hang_up<T>(c: Client, t: JoinHandle<T>) -> T {
    drop(c);
    t.join().unwrap()
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
    let seen = hang_up(c, t);
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
        a.copy_body(b"hello".to_vec());
        a.meta = obj_meta(5);
        Some(a)
    });
    let (bytes, meta) = c.get(b"/a").unwrap();
    assert_eq!(bytes, b"hello");
    assert_eq!(meta, obj_meta(5));
    hang_up(c, t);
}

#[test]
fn get_copy_large_body_arrives_whole() {
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let (mut c, t) = fake_server(move |s| {
        Some(match s.header.op {
            Op::Get => Answer::ok(s).with_copy_body(big.clone()),
            _ => Answer::ok(s),
        })
    });
    let (bytes, _) = c.get(b"big").unwrap();
    assert!(bytes == expected, "body differs");
    c.ping().unwrap();
    hang_up(c, t);
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
    hang_up(c, t);
}

#[test]
fn fd_attached_without_fd_is_protocol_error_and_breaks_client() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.attach(None, 5);
        Some(a)
    });
    assert_protocol_error(c.get_fd(b"/a"), "FD_ATTACHED");
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
    assert_protocol_error(c.ping(), "FD_ATTACHED");
    hang_up(c, t);
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
    hang_up(c, t);
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
    hang_up(c, t);
}

#[test]
fn closing_status_breaks_client() {
    let (mut c, t) = fake_server(|s| Some(Answer::status(s, Status::ProtocolError, "bad")));
    assert_eq!(c.ping().unwrap_err().status(), Some(Status::ProtocolError));
    assert!(matches!(c.ping(), Err(Error::Closed)));
    hang_up(c, t);
}

#[test]
fn wrong_request_id_is_protocol_error() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        a.header.request_id = s.header.request_id + 100;
        Some(a)
    });
    assert_protocol_error(c.ping(), "request id");
    hang_up(c, t);
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
    let seen = hang_up(c, t);
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
    let seen = hang_up(c, t);
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
    assert_refused_locally(c.begin_put(b"k", 0, &opts));
    assert_refused_locally(c.commit(1, 0, &opts));
    assert_only_ping_sent(c, t);
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
    assert_refused_locally(c.pin(b""));
    assert!(c.is_usable());
    let seen = hang_up(c, t);
    let ops: Vec<Op> = seen.iter().map(|s| s.header.op).collect();
    assert_eq!(ops, [Op::Pin, Op::Pin, Op::Unpin, Op::Unpin]);
}

#[test]
fn pin_server_error_is_an_error() {
    let (mut c, t) = fake_server(|s| Some(Answer::status(s, Status::ReadOnly, "poisoned")));
    assert_eq!(c.pin(b"k").unwrap_err().status(), Some(Status::ReadOnly));
    assert!(c.is_usable());
    hang_up(c, t);
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
    hang_up(c, t);
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
    assert_protocol_error(c.head(b"k"), "0x0007");
    assert!(!c.is_usable());
    hang_up(c, t);
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
    let seen = hang_up(c, t);
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
    hang_up(c, t);
}

#[test]
fn invalid_arguments_are_refused_locally() {
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    assert_refused_locally(c.get(b""));
    match c.get_fd(&[b'k'; 4097]) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("4096"), "{m}"),
        other => panic!("{other:?}"),
    }
    let opts = PutOptions {
        content_type: Some("x".repeat(300)),
        ..PutOptions::default()
    };
    assert_refused_locally(c.put(b"k", b"v", &opts));
    let opts = PutOptions {
        custom: vec![("big".into(), vec![0; 70_000])],
        ..PutOptions::default()
    };
    assert_refused_locally(c.put(b"k", b"v", &opts));
    assert_refused_locally(c.abort(0));
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
    assert!(c.transport().supports(Mode::Splice));
    assert!(c.transport().supports(Mode::Auto));
    assert_eq!(c.best_mode(), Mode::Copy);
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
    let fd_range = GetOptions::default().mode(Mode::Fd).range(0, 10);
    assert!(matches!(
        c.get_with(b"k", &fd_range),
        Err(Error::ModeUnsupported { .. })
    ));
    {
        let mut p = c.pipeline();
        match p.submit_get(b"k", &GetOptions::default().mode(Mode::Fd)) {
            Err(e @ Error::ModeUnsupported { .. }) => {
                assert_eq!(e.to_string(), "fd mode is not available over TCP")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.outstanding(), 0);
    }
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
    hang_up(c, t);
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
    hang_up(c, t);
}

#[test]
fn two_fds_with_one_response_is_protocol_error() {
    let (mut c, t) = piecewise_server(|s| {
        let frame = response_bytes(s, resp_flags::FD_ATTACHED, 1, b"", &Metadata::default());
        vec![(frame, vec![read_only_fd(b"a"), read_only_fd(b"b")])]
    });
    assert!(matches!(c.get_fd(b"k"), Err(Error::Protocol(_))));
    hang_up(c, t);
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
    assert_protocol_error(c.get(b"k"), "fd");
    hang_up(c, t);
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
    hang_up(c, t);
}

// ---------------------------------------------------------------------------------------
// Protocol V2: HELLO, pipelining, out-of-order replies. Ranges and conditional writes.
// ---------------------------------------------------------------------------------------

/// The answer to a HELLO: V2, BODY, the granted 16 bytes.
fn hello_answer(seen: &Seen, granted: Hello) -> Answer {
    assert_eq!(seen.header.op, Op::Hello);
    let mut a = Answer::ok(seen);
    a.header.flags = resp_flags::BODY;
    a.body = granted.encode().to_vec();
    a
}

/// What the batch server saw: each batch, and whether more bytes were already waiting
/// when the batch was complete (a client that sends past its depth).
struct BatchLog {
    batches: Vec<Vec<Seen>>,
    more_waiting: Vec<bool>,
}

/// A server that reads `sizes[i]` whole requests (bodies included), then sends the
/// answers `script` returns for that batch, in the order returned. After the last batch
/// it waits for the client to hang up.
fn batch_server<F>(sizes: Vec<usize>, mut script: F) -> (Client, JoinHandle<BatchLog>)
where
    F: FnMut(&[Seen]) -> Vec<Answer> + Send + 'static,
{
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut log = BatchLog {
            batches: Vec::new(),
            more_waiting: Vec::new(),
        };
        for n in sizes {
            let mut batch = Vec::new();
            for _ in 0..n {
                let mut seen = read_request(&mut b).expect("the client hung up early");
                b.read_exact(&mut seen.body).unwrap();
                batch.push(seen);
            }
            thread::sleep(std::time::Duration::from_millis(50));
            let mut probe = [0u8; 1];
            let waiting = rustix::net::recv(
                &b,
                &mut probe,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            )
            .is_ok_and(|(n, _)| n > 0);
            log.more_waiting.push(waiting);
            // A client that finds a reply wrong hangs up: stop answering then.
            let answers = script(&batch);
            log.batches.push(batch);
            for ans in answers {
                if try_send_answer(&mut b, ans).is_err() {
                    return log;
                }
            }
        }
        let mut sink = Vec::new();
        let _ = b.read_to_end(&mut sink);
        log
    });
    (Client::from_unix_stream(a), t)
}

const ALL_CAPS: u32 = caps::PIPELINE | caps::OUT_OF_ORDER | caps::FD_PASSING;

fn grant(capabilities: u32, depth: u16) -> Hello {
    Hello {
        version: 2,
        capabilities,
        depth,
    }
}

#[test]
fn hello_encodes_the_request_and_records_the_grant() {
    let (mut c, t) = fake_server(|s| {
        Some(match s.header.op {
            Op::Hello => hello_answer(s, grant(caps::PIPELINE | caps::OUT_OF_ORDER, 4)),
            _ => Answer::ok(s),
        })
    });
    assert_eq!(c.version(), Version::V1);
    assert_eq!((c.capabilities(), c.depth()), (0, 1));
    assert_eq!(c.best_mode(), Mode::Fd);
    let g = c
        .hello(V2Options {
            pipeline_depth: 8,
            out_of_order: true,
            fd_passing: true,
            positional_reads: false,
        })
        .unwrap();
    assert_eq!(g, grant(caps::PIPELINE | caps::OUT_OF_ORDER, 4));
    assert_eq!(c.version(), Version::V2);
    assert_eq!(c.capabilities(), caps::PIPELINE | caps::OUT_OF_ORDER);
    assert_eq!(c.depth(), 4);
    assert_eq!(c.session(), Some(g));
    // FD_PASSING was not granted: fd mode is refused locally, copy is the best mode.
    assert!(!c.supports(Mode::Fd));
    assert!(c.supports(Mode::Auto));
    assert_eq!(c.best_mode(), Mode::Copy);
    match c.get_fd(b"k") {
        Err(e @ Error::ModeUnsupported { .. }) => {
            assert!(e.to_string().contains("FD_PASSING"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.begin_put(b"k", 0, &PutOptions::default()),
        Err(Error::ModeUnsupported { .. })
    ));
    // A second HELLO is refused locally.
    assert_refused_locally(c.hello(V2Options::default()));
    c.ping().unwrap();
    assert_eq!(c.pipeline().depth(), 4);
    assert_eq!(
        c.pipeline().with_depth(100).depth(),
        4,
        "capped at the grant"
    );
    let seen = hang_up(c, t);
    assert_eq!(seen.len(), 2);
    let h = &seen[0];
    assert_eq!(
        (h.header.version, h.header.op, h.header.mode),
        (Version::V2, Op::Hello, Mode::None)
    );
    assert_eq!((h.header.length, h.header.flags), (16, 0));
    assert!(h.key.is_empty());
    let asked = Hello::decode(&h.body).unwrap();
    assert_eq!(asked, grant(ALL_CAPS, 8));
    // After HELLO every frame is V2.
    assert_eq!(
        (seen[1].header.version, seen[1].header.op),
        (Version::V2, Op::Ping)
    );
}

#[test]
fn hello_capabilities_follow_the_options_and_transport() {
    let (mut c, t) = fake_server(|s| Some(hello_answer(s, grant(0, 1))));
    c.hello(V2Options {
        pipeline_depth: 1,
        out_of_order: false,
        fd_passing: false,
        positional_reads: false,
    })
    .unwrap();
    assert_eq!((c.capabilities(), c.depth()), (0, 1));
    assert!(!c.supports(Mode::Fd), "fd passing was not asked for");
    let seen = hang_up(c, t);
    assert_eq!(Hello::decode(&seen[0].body).unwrap(), grant(0, 1));
    // Over TCP, FD_PASSING is never asked for.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; REQUEST_HEADER_LEN + 16];
        s.read_exact(&mut buf).unwrap();
        let asked = Hello::decode(&buf[REQUEST_HEADER_LEN..]).unwrap();
        let granted = Hello {
            depth: asked.depth.min(2),
            ..asked
        };
        let mut h = ResponseHeader::new(
            Version::V2,
            Status::Ok,
            u32::from_le_bytes(buf[8..12].try_into().unwrap()),
        );
        h.flags = resp_flags::BODY;
        h.length = 16;
        let mut out = Vec::new();
        encode_response(&h, "", &[], &mut out);
        out.extend_from_slice(&granted.encode());
        s.write_all(&out).unwrap();
        asked
    });
    let c = Client::connect_tcp_v2(addr, V2Options::default()).unwrap();
    let asked = server.join().unwrap();
    assert_eq!(asked, grant(caps::PIPELINE | caps::OUT_OF_ORDER, 64));
    assert_eq!(c.transport(), Transport::Tcp);
    assert_eq!(c.depth(), 2);
    assert_eq!(c.best_mode(), Mode::Copy);
}

#[test]
fn bad_grants_and_refusals_break_the_connection() {
    // Capabilities that were not asked for.
    let (mut c, t) = fake_server(|s| Some(hello_answer(s, grant(caps::FD_PASSING, 1))));
    let opts = V2Options {
        pipeline_depth: 1,
        out_of_order: false,
        fd_passing: false,
        positional_reads: false,
    };
    assert_protocol_error(c.hello(opts), "not asked for");
    assert!(!c.is_usable());
    hang_up(c, t);
    // A depth above what was asked.
    let (mut c, t) = fake_server(|s| Some(hello_answer(s, grant(0, 9))));
    assert!(matches!(c.hello(opts), Err(Error::Protocol(_))));
    hang_up(c, t);
    // VERSION_UNSUPPORTED from an old server.
    let (mut c, t) = fake_server(|s| {
        Some(Answer::status(
            s,
            Status::VersionUnsupported,
            "this server speaks version 1",
        ))
    });
    let e = c.hello(opts).unwrap_err();
    assert_eq!(e.status(), Some(Status::VersionUnsupported), "{e}");
    assert!(matches!(c.ping(), Err(Error::Closed)));
    hang_up(c, t);
    // HELLO after another request is refused locally.
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    c.ping().unwrap();
    assert_refused_locally(c.hello(opts));
    assert!(matches!(
        c.hello(V2Options {
            pipeline_depth: 0,
            ..opts
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(c.is_usable());
    drop(c);
    assert_eq!(t.join().unwrap().len(), 1);
}

/// A V2 client with everything granted at `depth`, on a batch server whose first batch
/// is the HELLO.
fn v2_batch_client<F>(
    depth: u16,
    mut sizes: Vec<usize>,
    mut script: F,
) -> (Client, JoinHandle<BatchLog>)
where
    F: FnMut(&[Seen]) -> Vec<Answer> + Send + 'static,
{
    sizes.insert(0, 1);
    let mut first = true;
    let (mut c, t) = batch_server(sizes, move |batch| {
        if std::mem::take(&mut first) {
            vec![hello_answer(&batch[0], grant(ALL_CAPS, depth))]
        } else {
            script(batch)
        }
    });
    c.hello(V2Options {
        pipeline_depth: depth,
        out_of_order: true,
        fd_passing: true,
        positional_reads: false,
    })
    .unwrap();
    assert_eq!(c.capabilities(), ALL_CAPS);
    (c, t)
}

#[test]
fn pipelined_replies_out_of_order_are_matched_by_id() {
    let (mut c, t) = v2_batch_client(4, vec![4], |batch| {
        let mut answers: Vec<Answer> = batch
            .iter()
            .map(|s| {
                let mut a = Answer::ok(s);
                match (s.header.op, s.key.as_slice()) {
                    (Op::Get, b"a") => {
                        assert_eq!(s.header.mode, Mode::Auto);
                        a.attach(Some(read_only_fd(b"aaaaa")), 5);
                        a.meta = obj_meta(5);
                    }
                    (Op::Get, b"b") => {
                        assert_eq!(s.header.mode, Mode::Auto);
                        a.copy_body(b"bb".to_vec());
                        a.meta = obj_meta(2);
                    }
                    (Op::Delete, b"c") => {
                        a = Answer::status(s, Status::NotFound, "no object under that key")
                    }
                    (Op::Put, b"d") => {
                        assert_eq!(s.body, b"dddd");
                        a.meta = obj_meta(4);
                    }
                    other => panic!("unexpected {other:?}"),
                }
                a
            })
            .collect();
        // Answer in the order 3, 1, 0, 2: nothing like the order of the requests.
        let mut order = Vec::new();
        for i in [3, 1, 0, 2] {
            order.push(std::mem::replace(&mut answers[i], Answer::ok(&batch[i])));
        }
        order
    });
    let auto = GetOptions::default().mode(Mode::Auto);
    let mut p = c.pipeline();
    assert_eq!(p.depth(), 4);
    let ia = p.submit_get(b"a", &auto).unwrap();
    let ib = p.submit_get(b"b", &auto).unwrap();
    let ic = p.submit_delete(b"c", &DeleteOptions::default()).unwrap();
    let id = p.submit_put(b"d", b"dddd", &PutOptions::default()).unwrap();
    assert_eq!(p.outstanding(), 4);
    let ids = [ia, ib, ic, id];
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(p.collect().unwrap());
    }
    assert_eq!(p.outstanding(), 0);
    assert_refused_locally(p.collect());
    drop(p);
    let order: Vec<u32> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [id, ib, ia, ic], "collected in arrival order");
    for (i, r) in got {
        match r.unwrap() {
            Reply::Get(GetReply::Fd(o)) => {
                assert_eq!(i, ia);
                let flags = rustix::io::fcntl_getfd(&o.fd).unwrap();
                assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
                assert_eq!(o.read_all().unwrap(), b"aaaaa");
            }
            Reply::Get(GetReply::Bytes(b, m)) => {
                assert_eq!(i, ib);
                assert_eq!((b.as_slice(), m.size), (&b"bb"[..], Some(2)));
            }
            Reply::Delete(found) => {
                assert_eq!(i, ic);
                assert!(!found);
            }
            Reply::Put(m) => {
                assert_eq!(i, id);
                assert_eq!(m.size, Some(4));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(c.is_usable());
    drop(c);
    let log = t.join().unwrap();
    let batch = &log.batches[1];
    assert!(batch.iter().all(|s| s.header.version == Version::V2));
    assert!(batch
        .iter()
        .all(|s| s.header.flags & req_flags::ORDERED == 0));
    let seen_ids: Vec<u32> = batch.iter().map(|s| s.header.request_id).collect();
    assert_eq!(seen_ids, ids);
}

#[test]
fn fds_are_matched_to_their_replies_when_several_arrive_together() {
    // Three fd replies in reverse order, all written before the client reads any.
    let (mut c, t) = v2_batch_client(3, vec![3], |batch| {
        batch
            .iter()
            .rev()
            .map(|s| {
                let mut a = Answer::ok(s);
                a.attach(Some(read_only_fd(&s.key)), s.key.len() as u64);
                a
            })
            .collect()
    });
    let fd = GetOptions::default().mode(Mode::Fd);
    let mut p = c.pipeline();
    let ids: Vec<u32> = [&b"x"[..], b"yy", b"zzz"]
        .iter()
        .map(|k| p.submit_get(k, &fd).unwrap())
        .collect();
    let got = p.collect_all().unwrap();
    drop(p);
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [ids[2], ids[1], ids[0]]
    );
    for (i, r) in got {
        let Ok(Reply::Get(g)) = r else {
            panic!("{r:?}")
        };
        let want: &[u8] = match i {
            i if i == ids[0] => b"x",
            i if i == ids[1] => b"yy",
            _ => b"zzz",
        };
        assert!(g.is_fd());
        assert_eq!(g.into_bytes().unwrap(), want);
    }
    hang_up(c, t);
}

#[test]
fn submit_waits_for_a_reply_at_the_granted_depth() {
    let (mut c, t) = v2_batch_client(2, vec![2, 2, 1], |batch| {
        batch.iter().rev().map(Answer::ok).collect()
    });
    let mut p = c.pipeline();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(p.submit_ping().unwrap());
        assert!(p.outstanding() <= 5);
    }
    let got = p.collect_all().unwrap();
    drop(p);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|(_, r)| matches!(r, Ok(Reply::Ping))));
    let mut collected: Vec<u32> = got.iter().map(|(i, _)| *i).collect();
    collected.sort_unstable();
    assert_eq!(collected, ids);
    drop(c);
    let log = t.join().unwrap();
    // Never more than 2 requests were waiting at the server.
    assert_eq!(log.more_waiting, [false, false, false, false]);
}

#[test]
fn ordered_flag_is_sent_on_v2_only() {
    // The middle request is ORDERED, so nothing may be swapped across it: in order.
    let (mut c, t) = v2_batch_client(3, vec![3], |batch| batch.iter().map(Answer::ok).collect());
    let mut p = c.pipeline();
    let a = p.submit_ping().unwrap();
    p.set_ordered(true);
    let b = p.submit_head(b"k").unwrap();
    p.set_ordered(false);
    let d = p.submit_ping().unwrap();
    let got = p.collect_all().unwrap();
    drop(p);
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [a, b, d]);
    drop(c);
    let log = t.join().unwrap();
    let flags: Vec<u16> = log.batches[1].iter().map(|s| s.header.flags).collect();
    assert_eq!(flags, [0, req_flags::ORDERED, 0]);

    // On V1 the flag is never sent (the fake server validates every request, and ORDERED
    // on V1 is BAD_REQUEST).
    let (mut c, t) = batch_server(vec![2], |batch| batch.iter().map(Answer::ok).collect());
    let mut p = c.pipeline().with_depth(2);
    p.set_ordered(true);
    p.submit_ping().unwrap();
    p.submit_ping().unwrap();
    assert_eq!(p.collect_all().unwrap().len(), 2);
    drop(p);
    drop(c);
    let log = t.join().unwrap();
    assert!(log.batches[0].iter().all(|s| s.header.flags == 0));
    assert!(log.batches[0]
        .iter()
        .all(|s| s.header.version == Version::V1));
}

#[test]
fn a_reply_that_overtakes_an_ordered_request_is_a_protocol_error() {
    let (mut c, t) = v2_batch_client(2, vec![2], |batch| {
        // The second request is answered first although the first is ORDERED.
        vec![Answer::ok(&batch[1]), Answer::ok(&batch[0])]
    });
    let mut p = c.pipeline();
    p.set_ordered(true);
    p.submit_ping().unwrap();
    p.set_ordered(false);
    p.submit_ping().unwrap();
    assert_protocol_error(p.collect(), "ORDERED");
    assert!(matches!(p.collect(), Err(Error::Closed)));
    drop(p);
    assert!(!c.is_usable());
    hang_up(c, t);
}

#[test]
fn v1_pipeline_answers_in_order_and_checks_it() {
    let (mut c, t) = batch_server(vec![3], |batch| {
        batch
            .iter()
            .map(|s| {
                let mut a = Answer::ok(s);
                a.copy_body(s.key.clone());
                a
            })
            .collect()
    });
    assert_eq!(c.pipeline().depth(), 1, "V1 default depth");
    let mut p = c.pipeline().with_depth(8);
    let copy = GetOptions::default().mode(Mode::Copy);
    let ids: Vec<u32> = [b"1", b"2", b"3"]
        .iter()
        .map(|k| p.submit_get(*k, &copy).unwrap())
        .collect();
    let got = p.collect_all().unwrap();
    drop(p);
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), ids);
    for ((_, r), want) in got.into_iter().zip([b"1", b"2", b"3"]) {
        match r {
            Ok(Reply::Get(GetReply::Bytes(b, _))) => assert_eq!(b, want),
            other => panic!("{other:?}"),
        }
    }
    hang_up(c, t);

    // A V1 server answering out of order is a protocol error.
    let (mut c, t) = batch_server(vec![2], |batch| {
        vec![Answer::ok(&batch[1]), Answer::ok(&batch[0])]
    });
    let mut p = c.pipeline().with_depth(2);
    p.submit_ping().unwrap();
    p.submit_ping().unwrap();
    assert_protocol_error(p.collect(), "request id");
    drop(p);
    hang_up(c, t);
}

#[test]
fn dropping_a_pipeline_drains_its_replies() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        if s.header.op == Op::Get {
            a.attach(Some(read_only_fd(b"x")), 1);
        }
        Some(a)
    });
    {
        let mut p = c.pipeline().with_depth(3);
        p.submit_get(b"k", &GetOptions::default()).unwrap();
        p.submit_ping().unwrap();
        p.submit_head(b"k").unwrap();
    }
    assert!(c.is_usable());
    c.ping().unwrap();
    let seen = hang_up(c, t);
    let ops: Vec<Op> = seen.iter().map(|s| s.header.op).collect();
    assert_eq!(ops, [Op::Get, Op::Ping, Op::Head, Op::Ping]);
    assert_eq!(seen[0].header.mode, Mode::Fd, "best mode on a Unix socket");
}

#[test]
fn a_large_put_behind_a_large_get_does_not_deadlock() {
    // The server answers the GET with 8 MiB before it reads anything else, and stops
    // reading while that reply is unread, as a real server does: the client must read
    // the reply while it is still sending the PUT's 8 MiB.
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    let reply = big.clone();
    let (mut c, t) = fake_server(move |s| {
        let mut a = Answer::ok(s);
        match s.header.op {
            Op::Hello => return Some(hello_answer(s, grant(ALL_CAPS, 2))),
            Op::Get => {
                a.copy_body(reply.clone());
            }
            _ => {}
        }
        Some(a)
    });
    c.hello(V2Options::default()).unwrap();
    c.set_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut p = c.pipeline();
    let g = p
        .submit_get(b"big", &GetOptions::default().mode(Mode::Copy))
        .unwrap();
    let u = p.submit_put(b"up", &big, &PutOptions::default()).unwrap();
    let got = p.collect_all().unwrap();
    drop(p);
    assert_eq!(got.len(), 2);
    for (i, r) in got {
        match r.unwrap() {
            Reply::Get(GetReply::Bytes(b, _)) => {
                assert_eq!(i, g);
                assert!(b == big);
            }
            Reply::Put(_) => assert_eq!(i, u),
            other => panic!("{other:?}"),
        }
    }
    let seen = hang_up(c, t);
    assert!(seen[2].body == big);
}

#[test]
fn range_requests_encode_offset_and_length() {
    let (mut c, t) = fake_server(|s| {
        assert_eq!(s.header.op, Op::Get);
        let (off, len) = (s.header.offset, s.header.length);
        let obj = b"0123456789abcdefghij";
        let mut a = Answer::ok(s);
        a.meta = obj_meta(obj.len() as u64);
        if off >= obj.len() as u64 {
            return Some(Answer::status(
                s,
                Status::RangeNotSatisfiable,
                "range starts at 99, past the end of a 20-byte object",
            ));
        }
        let end = if len == 0 {
            obj.len() as u64
        } else {
            (off + len).min(obj.len() as u64)
        };
        match s.header.mode {
            Mode::Fd => {
                // The fd covers the whole object; offset/length say where the range is.
                a.header.offset = off;
                a.attach(Some(read_only_fd(obj)), end - off);
            }
            _ => {
                a.copy_body(obj[off as usize..end as usize].to_vec());
                if s.key == b"liar" {
                    a.body = obj.to_vec(); // more than asked for
                }
            }
        }
        Some(a)
    });
    let fd = c
        .get_with(b"k", &GetOptions::default().mode(Mode::Fd).range(10, 5))
        .unwrap();
    let GetReply::Fd(o) = fd else { panic!() };
    assert_eq!((o.offset, o.length), (10, 5));
    assert_eq!(o.meta.size, Some(20), "metadata is the whole object's");
    assert_eq!(o.read_all().unwrap(), b"abcde");
    let (b, m) = c.get_range(b"k", 3, 0).unwrap();
    assert_eq!(
        (b.as_slice(), m.size),
        (&b"3456789abcdefghij"[..], Some(20))
    );
    let (b, _) = c.get_range(b"k", 18, 100).unwrap();
    assert_eq!(b, b"ij");
    let e = c.get_range(b"k", 99, 1).unwrap_err();
    assert!(e.is_range_not_satisfiable(), "{e}");
    assert!(c.is_usable());
    // A range that would overflow is refused locally.
    assert_refused_locally(c.get_range(b"k", u64::MAX, 2));
    // More bytes than asked for is a protocol error.
    assert_protocol_error(c.get_range(b"liar", 0, 4), "range");
    assert!(!c.is_usable());
    let fields = header_fields(&hang_up(c, t), |h| (h.mode, h.offset, h.length));
    assert_eq!(
        fields,
        [
            (Mode::Fd, 10, 5),
            (Mode::Copy, 3, 0),
            (Mode::Copy, 18, 100),
            (Mode::Copy, 99, 1),
            (Mode::Copy, 0, 4),
        ]
    );
}

#[test]
fn conditional_writes_encode_flags_and_the_expected_version() {
    let (mut c, t) = fake_server(move |s| {
        let mut a = Answer::ok(s);
        match s.header.op {
            Op::Put if s.header.mode == Mode::Fd => {
                a.fd = Some(memfile(b"").into());
                a.header.flags = resp_flags::FD_ATTACHED;
                a.header.mode = Mode::Fd;
                a.header.handle = 3;
            }
            Op::Put | Op::Commit | Op::Delete if s.header.offset == 666 => {
                return Some(Answer::status(
                    s,
                    Status::PreconditionFailed,
                    "the current version is 667, not 666",
                ))
            }
            _ => a.meta = obj_meta(2),
        }
        Some(a)
    });
    let v = |n| PutOptions {
        if_version: Some(n),
        ..PutOptions::default()
    };
    c.put(b"k", b"hi", &v(42)).unwrap();
    c.put(
        b"k",
        b"hi",
        &PutOptions {
            if_absent: true,
            durable: true,
            ..PutOptions::default()
        },
    )
    .unwrap();
    let e = c.put(b"k", b"hi", &v(666)).unwrap_err();
    assert!(e.is_precondition_failed(), "{e}");
    assert_eq!(
        e.to_string(),
        "PRECONDITION_FAILED: the current version is 667, not 666"
    );
    assert!(c.is_usable());
    assert!(c.delete_if_version(b"k", 7).unwrap());
    assert!(c
        .delete_if_version(b"k", 666)
        .unwrap_err()
        .is_precondition_failed());
    assert!(c
        .delete_with(
            b"k",
            &DeleteOptions {
                durable: true,
                if_version: Some(9),
            }
        )
        .unwrap());
    c.put_fd(b"k", 2, &v(5), |f| f.write_all(b"hi")).unwrap();
    // Both conditions at once are refused locally, whatever the path.
    let both = PutOptions {
        if_version: Some(1),
        if_absent: true,
        ..PutOptions::default()
    };
    for r in [
        c.put(b"k", b"v", &both),
        c.commit(1, 0, &both),
        c.put_fd(b"k", 1, &both, |_| Ok(())),
    ] {
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("contradict"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    {
        let mut p = c.pipeline();
        assert_refused_locally(p.submit_put(b"k", b"v", &both));
    }
    assert!(c.is_usable());
    c.ping().unwrap();
    let got = header_fields(&hang_up(c, t), |h| (h.op, h.flags, h.offset));
    use req_flags::{DURABLE, IF_ABSENT, IF_VERSION};
    assert_eq!(
        got,
        [
            (Op::Put, IF_VERSION, 42),
            (Op::Put, IF_ABSENT | DURABLE, 0),
            (Op::Put, IF_VERSION, 666),
            (Op::Delete, IF_VERSION, 7),
            (Op::Delete, IF_VERSION, 666),
            (Op::Delete, IF_VERSION | DURABLE, 9),
            (Op::Put, IF_VERSION, 5),
            (Op::Commit, IF_VERSION, 5),
            (Op::Ping, 0, 0),
        ]
    );
}

#[test]
fn local_refusals_by_transport_and_argument() {
    // The transport table.
    for (t, fd, copy, splice, auto) in [
        (Transport::Unix, true, true, true, true),
        (Transport::Tcp, false, true, true, true),
        (Transport::Udp, false, true, false, true),
    ] {
        assert_eq!(t.supports(Mode::Fd), fd, "{t} fd");
        assert_eq!(t.supports(Mode::Copy), copy, "{t} copy");
        assert_eq!(t.supports(Mode::Splice), splice, "{t} splice");
        assert_eq!(t.supports(Mode::Auto), auto, "{t} auto");
        assert!(!t.supports(Mode::None));
    }
    let e = Error::ModeUnsupported {
        mode: Mode::Splice,
        transport: Transport::Udp,
    };
    assert_eq!(e.to_string(), "splice mode is not available over UDP");
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    assert_refused_locally(c.get_with(b"k", &GetOptions::default().mode(Mode::None)));
    assert_refused_locally(c.put_inline(b"k", b"v", &PutOptions::default(), Mode::Fd));
    assert_refused_locally(c.put_inline(b"k", b"v", &PutOptions::default(), Mode::Auto));
    assert_only_ping_sent(c, t);
}

#[test]
fn splice_and_auto_get_accept_inline_or_fd_as_the_mode_allows() {
    let (mut c, t) = fake_server(|s| {
        let mut a = Answer::ok(s);
        // Answer with an fd whatever was asked.
        a.attach(Some(read_only_fd(b"x")), 1);
        if s.header.mode == Mode::Splice {
            a.header.mode = Mode::Splice;
            a.header.flags = resp_flags::BODY;
            a.fd = None;
            a.body = b"s".to_vec();
        }
        Some(a)
    });
    let r = c
        .get_with(b"k", &GetOptions::default().mode(Mode::Splice))
        .unwrap();
    assert_eq!(r.into_bytes().unwrap(), b"s");
    let r = c
        .get_with(b"k", &GetOptions::default().mode(Mode::Auto))
        .unwrap();
    assert!(r.is_fd());
    assert_eq!((r.len(), r.meta().size), (1, None));
    // An fd where copy was asked for is a protocol error.
    assert!(matches!(c.get(b"k"), Err(Error::Protocol(_))));
    hang_up(c, t);
}

#[test]
fn put_splice_sends_the_body_inline_with_mode_splice() {
    let (mut c, t) = fake_server(|s| Some(Answer::ok(s)));
    c.put_inline(b"k", b"abc", &PutOptions::default(), Mode::Splice)
        .unwrap();
    let seen = hang_up(c, t);
    assert_eq!(
        (seen[0].header.mode, seen[0].header.length),
        (Mode::Splice, 3)
    );
    assert_eq!(seen[0].body, b"abc");
}

/// A corked pipeline writes nothing until it flushes (explicitly, or before it waits for
/// a reply), and then writes the gathered requests in one go; dropping the pipeline
/// uncorks the client.
#[test]
fn corked_pipeline_writes_its_requests_together() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut c = Client::from_unix_stream(a);
    b.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 4096];
    {
        let mut p = c.pipeline().with_depth(8);
        p.set_corked(true).unwrap();
        let ids: Vec<u32> = (0..5).map(|_| p.submit_ping().unwrap()).collect();
        assert_eq!(p.outstanding(), 5);
        let e = b.read(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "sent while corked"
        );
        p.flush().unwrap();
        // One write, so one read takes all five (a ping is a bare header).
        assert_eq!(b.read(&mut buf).unwrap(), 5 * REQUEST_HEADER_LEN);
        for id in &ids {
            let h = ResponseHeader::new(Version::V1, Status::Ok, *id);
            let mut frame = Vec::new();
            encode_response(&h, "", &[], &mut frame);
            b.write_all(&frame).unwrap();
        }
        let mut got: Vec<u32> = p
            .collect_all()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        got.sort_unstable();
        assert_eq!(got, ids);

        // No flush: waiting for the replies sends the requests first.
        b.set_nonblocking(false).unwrap();
        let server = thread::spawn(move || {
            let seen: Vec<Seen> = (0..3).map(|_| read_request(&mut b).unwrap()).collect();
            for s in &seen {
                send_answer(&mut b, Answer::ok(s));
            }
            b
        });
        for _ in 0..3 {
            p.submit_ping().unwrap();
        }
        assert_eq!(p.collect_all().unwrap().len(), 3);
        b = server.join().unwrap();
        b.set_nonblocking(true).unwrap();
    }
    // Uncorked: a submit goes out at once.
    let mut p = c.pipeline();
    p.submit_ping().unwrap();
    assert_eq!(b.read(&mut buf).unwrap(), REQUEST_HEADER_LEN);
    drop(b);
    assert!(p.collect().is_err());
}
