//! The transport × mode × op matrix: every supported combination moves the exact bytes,
//! every unsupported one gets its exact status (and no fd ever crosses TCP or UDP).
//! Raw frames throughout, so the server's own answers are checked even where the client
//! library would refuse before sending.

mod util;

use objmapper_proto::*;
use util::wire::{pattern, pread_fd, Wire};
use util::*;

const MODES: [Mode; 4] = [Mode::Fd, Mode::Copy, Mode::Splice, Mode::Auto];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Unix,
    Tcp,
}

fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.udp_listen = Some("127.0.0.1:0".parse().unwrap());
        // Small enough that both sizes below exercise both of auto's choices.
        c.auto_fd_threshold = 8 * 1024;
    })
}

fn wire(ts: &TestServer, t: Transport) -> Wire {
    match t {
        Transport::Unix => Wire::unix(&ts.socket()),
        Transport::Tcp => Wire::tcp(ts.server().tcp_addr().unwrap()),
    }
}

/// The content a GET reply delivers: inline bytes, or `length` bytes of the fd at `offset`.
fn content(r: &Reply) -> Vec<u8> {
    match &r.fd {
        Some(fd) => pread_fd(fd, r.header.offset, r.header.length),
        None => r.body.clone(),
    }
}

/// What the server must answer for GET in `mode` on `t`.
fn get_expect(t: Transport, mode: Mode) -> Result<(), Status> {
    match (t, mode) {
        (Transport::Tcp, Mode::Fd) => Err(Status::ModeUnsupported),
        _ => Ok(()),
    }
}

/// What the server must answer for PUT in `mode` on `t`.
fn put_expect(t: Transport, mode: Mode) -> Result<(), Status> {
    match (t, mode) {
        (Transport::Tcp, Mode::Fd) => Err(Status::ModeUnsupported),
        // auto decides how to *deliver* an object; a PUT has to say how it sends one.
        (_, Mode::Auto) => Err(Status::ModeUnsupported),
        _ => Ok(()),
    }
}

#[test]
fn stream_transports_every_mode_and_op() {
    let ts = start();
    for t in [Transport::Unix, Transport::Tcp] {
        for (si, size) in [1000usize, 100_000].into_iter().enumerate() {
            let body = pattern(size, size as u64 + si as u64);
            let key = format!("m/{t:?}/{size}");
            let mut w = wire(&ts, t);
            // Seed the object over the Unix socket in copy mode.
            assert_status(
                &Wire::unix(&ts.socket()).put(key.as_bytes(), Mode::Copy, &body),
                Status::Ok,
            );
            for mode in MODES {
                let ctx = format!("{t:?} GET {mode} {size} B");
                let r = w.get(key.as_bytes(), mode, 0, 0);
                match get_expect(t, mode) {
                    Ok(()) => {
                        assert_status(&r, Status::Ok);
                        assert_eq!(content(&r), body, "{ctx}");
                        assert_eq!(r.meta.size, Some(size as u64), "{ctx}");
                        let used = r.header.mode;
                        match mode {
                            Mode::Auto => {
                                let want = if t == Transport::Unix && size >= 8 * 1024 {
                                    Mode::Fd
                                } else {
                                    Mode::Copy
                                };
                                assert_eq!(used, want, "{ctx}: auto chose");
                            }
                            m => assert_eq!(used, m, "{ctx}"),
                        }
                        assert_eq!(r.fd.is_some(), used == Mode::Fd, "{ctx}: fd iff fd mode");
                        // A range, too.
                        let r = w.get(key.as_bytes(), mode, 10, 100);
                        assert_status(&r, Status::Ok);
                        assert_eq!(content(&r), body[10..110], "{ctx} range");
                    }
                    Err(st) => {
                        assert_status(&r, st);
                        assert!(r.fd.is_none(), "{ctx}: no fd on an error");
                    }
                }
                if t == Transport::Tcp {
                    assert!(r.fd.is_none(), "{ctx}: an fd crossed TCP");
                }
            }
            for mode in MODES {
                let ctx = format!("{t:?} PUT {mode} {size} B");
                let new = pattern(size, size as u64 * 7 + 1);
                let r = if mode == Mode::Fd && put_expect(t, mode).is_ok() {
                    // fd mode: stage through the writable fd, then COMMIT.
                    let r = w.call(Op::Put, Mode::Fd, key.as_bytes(), b"", |_| {});
                    assert_status(&r, Status::Ok);
                    use std::io::Write;
                    std::fs::File::from(r.fd.expect("staging fd"))
                        .write_all(&new)
                        .unwrap();
                    let handle = r.header.handle;
                    w.call(Op::Commit, Mode::None, b"", b"", |h| {
                        h.handle = handle;
                        h.length = size as u64;
                    })
                } else if mode == Mode::Fd || mode == Mode::Auto {
                    // Refused before any body byte: send the header only.
                    w.call(Op::Put, mode, key.as_bytes(), b"", |h| h.length = 0)
                } else {
                    w.put(key.as_bytes(), mode, &new)
                };
                match put_expect(t, mode) {
                    Ok(()) => {
                        assert_status(&r, Status::Ok);
                        assert_eq!(
                            content(&w.get(key.as_bytes(), Mode::Copy, 0, 0)),
                            new,
                            "{ctx}"
                        );
                    }
                    Err(st) => {
                        assert_status(&r, st);
                        assert!(r.fd.is_none(), "{ctx}: no fd on an error");
                    }
                }
            }
            // Ops that move no bytes work on both transports.
            let h = w.head(key.as_bytes());
            assert_status(&h, Status::Ok);
            assert_eq!(h.meta.size, Some(size as u64));
            assert_status(&w.call(Op::Ping, Mode::None, b"", b"", |_| {}), Status::Ok);
            assert_status(
                &w.call(Op::Delete, Mode::None, key.as_bytes(), b"", |_| {}),
                Status::Ok,
            );
            assert_status(&w.get(key.as_bytes(), Mode::Copy, 0, 0), Status::NotFound);
            assert_eq!(w.stray_fds(), 0);
        }
    }
}

#[test]
fn udp_every_mode_and_op() {
    use objmapper_proto::udp::{split, Reassembler, UdpHeader};
    let ts = start();
    let addr = ts.server().udp_addr().unwrap();
    let body = pattern(20_000, 5);
    assert_status(
        &Wire::unix(&ts.socket()).put(b"u", Mode::Copy, &body),
        Status::Ok,
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    sock.connect(addr).unwrap();
    let mut next = 100u32;
    let mut call = |op: Op, mode: Mode, key: &[u8]| -> (ResponseHeader, Vec<u8>) {
        next += 1;
        let mut h = RequestHeader::new(Version::V1, op, next);
        h.mode = mode;
        let mut frame = Vec::new();
        encode_request(&h, key, b"", &mut frame);
        let d = split(next, &frame, 1400);
        assert_eq!(d.len(), 1);
        sock.send(&d[0]).unwrap();
        let mut r = Reassembler::new(next, 128 * 1024);
        let mut buf = vec![0u8; 65536];
        loop {
            let n = sock.recv(&mut buf).expect("a reply datagram");
            assert!(UdpHeader::decode(&buf[..n]).is_some());
            if let Some(msg) = r.push(&buf[..n]).unwrap() {
                let Decoded::Complete(resp, used) = decode_response(&msg).unwrap() else {
                    panic!("incomplete frame")
                };
                assert!(!resp.header.fd_attached(), "an fd flag over UDP");
                return (resp.header, msg[used..].to_vec());
            }
        }
    };
    for mode in MODES {
        let (h, b) = call(Op::Get, mode, b"u");
        match mode {
            Mode::Copy | Mode::Auto => {
                assert_eq!(h.status, Status::Ok, "UDP GET {mode}");
                assert_eq!(h.mode, Mode::Copy);
                assert_eq!(b, body);
            }
            _ => assert_eq!(h.status, Status::ModeUnsupported, "UDP GET {mode}"),
        }
    }
    assert_eq!(call(Op::Head, Mode::None, b"u").0.status, Status::Ok);
    assert_eq!(call(Op::Ping, Mode::None, b"").0.status, Status::Ok);
    for op in [Op::Put, Op::Delete, Op::Pin, Op::Unpin] {
        let mode = if op == Op::Put {
            Mode::Copy
        } else {
            Mode::None
        };
        assert_eq!(
            call(op, mode, b"u").0.status,
            Status::OpUnsupported,
            "UDP {op}"
        );
    }
    // Nothing changed.
    assert_eq!(
        content(&Wire::unix(&ts.socket()).get(b"u", Mode::Copy, 0, 0)),
        body
    );
}
