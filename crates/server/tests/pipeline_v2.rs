//! Protocol V2: HELLO grants, pipelining up to the granted depth, out-of-order replies
//! matched by request id (real: slow commits run off the event loop), ORDERED barriers,
//! V1 and V2 side by side, and TCP sessions that never get FD_PASSING.

mod util;

use objmapper_proto::hello::caps;
use objmapper_proto::*;
use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc;
use util::wire::{pattern, pread_fd, Wire};
use util::*;

fn start() -> TestServer {
    TestServer::start_with(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap()))
}

#[test]
fn hello_grants_pipeline_out_of_order_and_fd_passing_on_unix() {
    let ts = TestServer::start_with(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.max_pipeline_depth = 16;
    });
    let cases = [
        // (asked caps, asked depth) -> (granted caps on Unix, granted depth)
        (caps::KNOWN, 8, caps::KNOWN, 8),
        (caps::KNOWN, 1000, caps::KNOWN, 16),
        (caps::PIPELINE, 0, caps::PIPELINE, 1),
        (caps::OUT_OF_ORDER, 64, caps::OUT_OF_ORDER, 1),
        (caps::FD_PASSING, 64, caps::FD_PASSING, 1),
        (0, 64, 0, 1),
        (0xffff_fff0 | caps::PIPELINE, 3, caps::PIPELINE, 3),
    ];
    for (asked, depth, granted, gdepth) in cases {
        let g = Wire::unix(&ts.socket()).hello(asked, depth);
        assert_eq!(g.version, 2);
        assert_eq!(g.capabilities, granted, "unix, asked {asked:#x}");
        assert_eq!(g.depth, gdepth, "unix, asked {asked:#x} depth {depth}");
        let g = Wire::tcp(ts.server().tcp_addr().unwrap()).hello(asked, depth);
        assert_eq!(
            g.capabilities,
            granted & !caps::FD_PASSING,
            "tcp never grants FD_PASSING"
        );
        assert_eq!(g.depth, gdepth);
    }
    let cfg = config("/tmp/x.sock", "/tmp/x");
    assert_eq!(cfg.max_pipeline_depth, 128, "the documented default");
    assert_eq!(cfg.blocking_threads, 2, "the documented default");
    let g = Wire::unix(&TestServer::start().socket()).hello(caps::KNOWN, 1000);
    assert_eq!(g.depth, 128);
}

#[test]
fn over_tcp_fd_mode_is_mode_unsupported_and_no_fd_is_sent() {
    let ts = start();
    let mut w = Wire::tcp(ts.server().tcp_addr().unwrap());
    let g = w.hello(caps::KNOWN, 8);
    assert_eq!(g.capabilities & caps::FD_PASSING, 0);
    assert_status(&w.put(b"k", Mode::Copy, b"bytes"), Status::Ok);
    for op in [Op::Get, Op::Put] {
        let r = w.call(op, Mode::Fd, b"k", b"", |_| {});
        assert_status(&r, Status::ModeUnsupported);
        assert!(!r.header.fd_attached() && r.fd.is_none());
        assert!(r.message.contains("TCP"), "{}", r.message);
    }
    assert_eq!(w.stray_fds(), 0);
    assert_eq!(w.get(b"k", Mode::Splice, 0, 0).body, b"bytes");
    assert_eq!(w.get(b"k", Mode::Copy, 0, 0).body, b"bytes");
}

/// What a pipelined request expects back.
enum Expect {
    Body(Vec<u8>),
    Fd(Vec<u8>),
    Head(u64),
    Put(u64),
    NotFound,
}

/// 1,000 mixed requests on one OUT_OF_ORDER connection, written by one thread (keeping at
/// most `depth` outstanding) while another reads: every reply matches its request by id.
fn pipeline_thousand(mut w: Wire, fd_ok: bool) {
    let depth = w.hello(caps::KNOWN, 64).depth as usize;
    assert_eq!(depth, 64);
    let objects: Vec<Vec<u8>> = (0..20).map(|i| pattern(100 + i * 7919, i as u64)).collect();
    for (i, o) in objects.iter().enumerate() {
        assert_status(
            &w.put(format!("obj{i}").as_bytes(), Mode::Copy, o),
            Status::Ok,
        );
    }
    let mut frames = Vec::new();
    let mut expect = HashMap::new();
    for n in 0..1000usize {
        let i = n % objects.len();
        let key = format!("obj{i}");
        let (id, bytes, e) = match n % 9 {
            0..=2 => {
                let (id, b) = w.frame(Op::Get, Mode::Copy, key.as_bytes(), b"", |_| {});
                (id, b, Expect::Body(objects[i].clone()))
            }
            3 => {
                let (id, b) = w.frame(Op::Get, Mode::Splice, key.as_bytes(), b"", |h| {
                    h.offset = 3;
                    h.length = 50;
                });
                (id, b, Expect::Body(objects[i][3..53].to_vec()))
            }
            4 if fd_ok => {
                let (id, b) = w.frame(Op::Get, Mode::Fd, key.as_bytes(), b"", |_| {});
                (id, b, Expect::Fd(objects[i].clone()))
            }
            4 | 5 => {
                let (id, b) = w.frame(Op::Head, Mode::None, key.as_bytes(), b"", |_| {});
                (id, b, Expect::Head(objects[i].len() as u64))
            }
            6 => {
                let (id, b) = w.frame(Op::Get, Mode::Auto, b"missing", b"", |_| {});
                (id, b, Expect::NotFound)
            }
            _ => {
                let body = pattern(n, n as u64 + 1000);
                let flags = if n % 90 == 7 { req_flags::DURABLE } else { 0 };
                let mode = if n % 2 == 0 { Mode::Copy } else { Mode::Splice };
                let key = format!("new{n}");
                let (id, b) = w.frame(Op::Put, mode, key.as_bytes(), &body, |h| {
                    h.flags = flags;
                    h.length = body.len() as u64;
                });
                (id, b, Expect::Put(body.len() as u64))
            }
        };
        expect.insert(id, e);
        frames.push(bytes);
    }
    let (credit_tx, credit_rx) = mpsc::channel::<()>();
    for _ in 0..depth {
        credit_tx.send(()).unwrap();
    }
    let mut sock = w.sock.try_clone();
    let writer = std::thread::spawn(move || {
        for f in frames {
            credit_rx.recv().unwrap();
            sock.write_all(&f).unwrap();
        }
    });
    let mut order = Vec::new();
    for _ in 0..1000 {
        let r = w.recv();
        let _ = credit_tx.send(());
        let id = r.header.request_id;
        order.push(id);
        assert_eq!(r.header.version, Version::V2);
        match expect
            .remove(&id)
            .expect("a reply to a request we sent, once")
        {
            Expect::Body(b) => {
                assert_status(&r, Status::Ok);
                assert!(r.body == b, "request {id}: wrong bytes");
            }
            Expect::Fd(b) => {
                assert_status(&r, Status::Ok);
                let fd = r.fd.as_ref().expect("fd");
                assert!(
                    pread_fd(fd, 0, b.len() as u64) == b,
                    "request {id}: wrong fd"
                );
            }
            Expect::Head(size) => {
                assert_status(&r, Status::Ok);
                assert_eq!(r.meta.size, Some(size));
                assert!(r.body.is_empty());
            }
            Expect::Put(size) => {
                assert_status(&r, Status::Ok);
                assert_eq!(r.meta.size, Some(size));
            }
            Expect::NotFound => assert_status(&r, Status::NotFound),
        }
    }
    writer.join().unwrap();
    assert!(expect.is_empty());
    assert_eq!(w.stray_fds(), 0);
    // Every PUT is readable afterwards.
    for n in (0..1000usize).filter(|n| n % 9 >= 7) {
        let g = w.get(format!("new{n}").as_bytes(), Mode::Copy, 0, 0);
        assert!(g.body == pattern(n, n as u64 + 1000), "new{n}");
    }
}

#[test]
fn a_thousand_pipelined_requests_over_unix() {
    let ts = start();
    pipeline_thousand(Wire::unix(&ts.socket()), true);
}

#[test]
fn a_thousand_pipelined_requests_over_tcp() {
    let ts = start();
    pipeline_thousand(Wire::tcp(ts.server().tcp_addr().unwrap()), false);
}

/// Sends `reqs` back to back (from another thread: the server stops reading while its
/// replies back up, so a client must read while it writes) and returns the ids in the
/// order the replies came, with the replies by id.
fn burst(w: &mut Wire, reqs: Vec<(u32, Vec<u8>)>) -> (Vec<u32>, HashMap<u32, Reply>) {
    let n = reqs.len();
    let all: Vec<u8> = reqs.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut sock = w.sock.try_clone();
    let writer = std::thread::spawn(move || sock.write_all(&all).unwrap());
    let mut order = Vec::new();
    let mut by_id = HashMap::new();
    for _ in 0..n {
        let r = w.recv();
        order.push(r.header.request_id);
        by_id.insert(r.header.request_id, r);
    }
    writer.join().unwrap();
    (order, by_id)
}

fn pos(order: &[u32], id: u32) -> usize {
    order.iter().position(|x| *x == id).unwrap()
}

#[test]
fn a_get_behind_a_durable_put_is_answered_first_but_ordered_requests_are_never_overtaken() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    let g = w.hello(caps::PIPELINE | caps::OUT_OF_ORDER, 32);
    assert_eq!(g.capabilities, caps::PIPELINE | caps::OUT_OF_ORDER);
    assert_status(&w.put(b"small", Mode::Copy, b"tiny"), Status::Ok);
    let big_a = pattern(8 << 20, 1);
    let big_b = pattern(8 << 20, 2);
    let mut reqs = Vec::new();
    let durable = |h: &mut RequestHeader| h.flags = req_flags::DURABLE;
    reqs.push(w.frame(Op::Put, Mode::Copy, b"a", &big_a, durable));
    let put_a = reqs[0].0;
    let mut gets_1 = Vec::new();
    for _ in 0..10 {
        let f = w.frame(Op::Get, Mode::Copy, b"small", b"", |_| {});
        gets_1.push(f.0);
        reqs.push(f);
    }
    // ORDERED: runs after the PUT (so it reads the new bytes) and goes out after every
    // earlier reply, before every later one.
    let f = w.frame(Op::Get, Mode::Copy, b"a", b"", |h| {
        h.flags = req_flags::ORDERED;
        h.offset = 1000;
        h.length = 10;
    });
    let ordered_get = f.0;
    reqs.push(f);
    let mut gets_2 = Vec::new();
    for _ in 0..5 {
        let f = w.frame(Op::Head, Mode::None, b"small", b"", |_| {});
        gets_2.push(f.0);
        reqs.push(f);
    }
    let f = w.frame(Op::Put, Mode::Splice, b"b", &big_b, durable);
    let put_b = f.0;
    reqs.push(f);
    let mut gets_3 = Vec::new();
    for _ in 0..5 {
        let f = w.frame(Op::Get, Mode::Splice, b"small", b"", |_| {});
        gets_3.push(f.0);
        reqs.push(f);
    }
    let f = w.frame(Op::Delete, Mode::None, b"b", b"", |h| {
        h.flags = req_flags::ORDERED | req_flags::DURABLE
    });
    let ordered_delete = f.0;
    reqs.push(f);
    let f = w.frame(Op::Get, Mode::Copy, b"b", b"", |_| {});
    let after_delete = f.0;
    reqs.push(f);
    let all_ids: Vec<u32> = reqs.iter().map(|r| r.0).collect();

    let (order, by_id) = burst(&mut w, reqs);
    // Out of order is real: a GET sent after the durable PUT was answered before it.
    let first_get = gets_1.iter().map(|id| pos(&order, *id)).min().unwrap();
    assert!(
        first_get < pos(&order, put_a),
        "no GET overtook the DURABLE PUT: {order:?}"
    );
    // ORDERED requests are never overtaken, and overtake nothing.
    for ordered in [ordered_get, ordered_delete] {
        let at = pos(&order, ordered);
        let k = all_ids.iter().position(|x| *x == ordered).unwrap();
        for earlier in &all_ids[..k] {
            assert!(
                pos(&order, *earlier) < at,
                "{earlier} came after ORDERED {ordered}"
            );
        }
        for later in &all_ids[k + 1..] {
            assert!(
                pos(&order, *later) > at,
                "{later} came before ORDERED {ordered}"
            );
        }
    }
    // And they see the effects of what came before them.
    assert_status(&by_id[&put_a], Status::Ok);
    assert_eq!(by_id[&ordered_get].body, &big_a[1000..1010]);
    assert_status(&by_id[&put_b], Status::Ok);
    assert_status(&by_id[&ordered_delete], Status::Ok);
    assert_status(&by_id[&after_delete], Status::NotFound);
    for id in gets_1.iter().chain(&gets_3) {
        assert_eq!(by_id[id].body, b"tiny");
    }
    for id in &gets_2 {
        assert_eq!(by_id[id].meta.size, Some(4));
    }
}

#[test]
fn without_out_of_order_replies_come_in_request_order() {
    let ts = start();
    for ask in [caps::PIPELINE, caps::PIPELINE | caps::FD_PASSING] {
        let mut w = Wire::unix(&ts.socket());
        w.hello(ask, 16);
        assert_status(&w.put(b"small", Mode::Copy, b"tiny"), Status::Ok);
        let big = pattern(4 << 20, 3);
        let mut reqs = vec![w.frame(Op::Put, Mode::Copy, b"a", &big, |h| {
            h.flags = req_flags::DURABLE
        })];
        for _ in 0..10 {
            reqs.push(w.frame(Op::Get, Mode::Copy, b"small", b"", |_| {}));
        }
        // In order mode a request runs after the earlier ones: this GET sees the PUT.
        reqs.push(w.frame(Op::Get, Mode::Copy, b"a", b"", |_| {}));
        let ids: Vec<u32> = reqs.iter().map(|r| r.0).collect();
        let (order, by_id) = burst(&mut w, reqs);
        assert_eq!(order, ids);
        assert!(by_id[ids.last().unwrap()].body == big);
    }
}

#[test]
fn v1_back_to_back_requests_are_answered_in_order_and_see_earlier_writes() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    let big = pattern(3 << 20, 4);
    let mut reqs = Vec::new();
    for i in 0..5u8 {
        let key = format!("k{i}");
        reqs.push(w.frame(
            Op::Put,
            Mode::Copy,
            key.as_bytes(),
            &big[i as usize..],
            |h| h.flags = if i % 2 == 0 { req_flags::DURABLE } else { 0 },
        ));
        reqs.push(w.frame(Op::Get, Mode::Splice, key.as_bytes(), b"", |_| {}));
        reqs.push(w.frame(Op::Delete, Mode::None, key.as_bytes(), b"", |_| {}));
        reqs.push(w.frame(Op::Head, Mode::None, key.as_bytes(), b"", |_| {}));
    }
    let ids: Vec<u32> = reqs.iter().map(|r| r.0).collect();
    let (order, by_id) = burst(&mut w, reqs);
    assert_eq!(order, ids);
    for i in 0..5usize {
        let [put, get, del, head] = [ids[4 * i], ids[4 * i + 1], ids[4 * i + 2], ids[4 * i + 3]];
        assert_eq!(by_id[&put].header.version, Version::V1);
        assert_status(&by_id[&put], Status::Ok);
        assert!(by_id[&get].body == big[i..]);
        assert_status(&by_id[&del], Status::Ok);
        assert_status(&by_id[&head], Status::NotFound);
    }
}

#[test]
fn v1_and_v2_clients_side_by_side() {
    let ts = start();
    let socket = ts.socket();
    let tcp = ts.server().tcp_addr().unwrap();
    // Unix V1, TCP V1, Unix V2, TCP V2, all at once. Each writes objects and reads them
    // back in the same burst: V1 in order, V2 with ORDERED on the reads.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut w = if t % 2 == 0 {
                    Wire::unix(&socket)
                } else {
                    Wire::tcp(tcp)
                };
                let v2 = t >= 2;
                if v2 {
                    w.hello(caps::KNOWN, 32);
                }
                let ver = if v2 { Version::V2 } else { Version::V1 };
                for round in 0..20 {
                    let mut reqs = Vec::new();
                    let mut reads = HashMap::new();
                    for j in 0..8usize {
                        let key = format!("t{t}-{round}-{j}");
                        let body = pattern(j * 3000 + 1, (t * 1000 + round * 10 + j) as u64);
                        reqs.push(w.frame(Op::Put, Mode::Splice, key.as_bytes(), &body, |h| {
                            h.flags = if j % 4 == 0 { req_flags::DURABLE } else { 0 }
                        }));
                        let (id, b) = w.frame(Op::Get, Mode::Copy, key.as_bytes(), b"", |h| {
                            h.flags = if v2 { req_flags::ORDERED } else { 0 }
                        });
                        reads.insert(id, body);
                        reqs.push((id, b));
                    }
                    let ids: Vec<u32> = reqs.iter().map(|r| r.0).collect();
                    let (order, by_id) = burst(&mut w, reqs);
                    if !v2 {
                        assert_eq!(order, ids, "V1 replies in order");
                    }
                    for (id, r) in &by_id {
                        assert_eq!(r.header.version, ver);
                        assert_status(r, Status::Ok);
                        if let Some(body) = reads.get(id) {
                            assert!(&r.body == body, "a read after a write sees it");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// With depth 2, two slow PUTs fill the pipeline: the GET behind them is not even read
/// until one of them is answered, so its reply cannot come first.
#[test]
fn the_server_stops_reading_at_the_granted_depth() {
    let ts = TestServer::start_with(|c| c.max_pipeline_depth = 2);
    let mut w = Wire::unix(&ts.socket());
    let g = w.hello(caps::KNOWN, 64);
    assert_eq!(g.depth, 2);
    assert_status(&w.put(b"small", Mode::Copy, b"tiny"), Status::Ok);
    let big = pattern(4 << 20, 5);
    let durable = |h: &mut RequestHeader| h.flags = req_flags::DURABLE;
    let a = w.frame(Op::Put, Mode::Copy, b"p1", &big, durable);
    let b = w.frame(Op::Put, Mode::Copy, b"p2", &big, durable);
    let c = w.frame(Op::Get, Mode::Copy, b"small", b"", |_| {});
    let (ia, ib, ic) = (a.0, b.0, c.0);
    let (order, by_id) = burst(&mut w, vec![a, b, c]);
    assert!(
        pos(&order, ic) > pos(&order, ia).min(pos(&order, ib)),
        "the GET was taken beyond the depth: {order:?}"
    );
    assert_eq!(by_id[&ic].body, b"tiny");
}

#[test]
fn a_v2_session_survives_errors_and_closes_after_a_protocol_error() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    w.hello(caps::KNOWN, 8);
    // Well-framed errors keep the stream, in any order.
    let a = w.frame(Op::Get, Mode::Copy, b"", b"", |_| {});
    let b = w.frame(Op::Get, Mode::Copy, b"nope", b"", |_| {});
    let c = w.frame(Op::Ping, Mode::None, b"", b"", |h| {
        h.flags = req_flags::ORDERED
    });
    let (ia, ib, ic) = (a.0, b.0, c.0);
    let (_, by_id) = burst(&mut w, vec![a, b, c]);
    assert_status(&by_id[&ia], Status::BadRequest);
    assert_status(&by_id[&ib], Status::NotFound);
    assert_status(&by_id[&ic], Status::Ok);
    // A durable PUT still running, then garbage: the PUT's reply still comes, then the
    // PROTOCOL_ERROR, then the close.
    let big = pattern(2 << 20, 6);
    let (ip, mut bytes) = w.frame(Op::Put, Mode::Copy, b"p", &big, |h| {
        h.flags = req_flags::DURABLE
    });
    bytes.extend_from_slice(b"garbage garbage garbage garbage garbage!");
    w.send_bytes(&bytes);
    let r = w.recv();
    assert_eq!(r.header.request_id, ip);
    assert_status(&r, Status::Ok);
    let r = w.recv();
    assert_status(&r, Status::ProtocolError);
    assert!(w.try_recv().is_none());
    assert!(Wire::unix(&ts.socket()).get(b"p", Mode::Copy, 0, 0).body == big);
}

#[test]
fn blocking_threads_zero_runs_commits_on_the_workers() {
    let ts = TestServer::start_with(|c| c.blocking_threads = 0);
    let mut w = Wire::unix(&ts.socket());
    w.hello(caps::KNOWN, 8);
    let r = w.put_with(b"k", Mode::Copy, b"v", |h| h.flags = req_flags::DURABLE);
    assert_status(&r, Status::Ok);
    let r = w.call(Op::Delete, Mode::None, b"k", b"", |_| {});
    assert_status(&r, Status::Ok);
    let r = w.call(Op::Pin, Mode::None, b"k", b"", |_| {});
    assert_status(&r, Status::NotFound);
}

#[test]
fn a_failed_hello_is_answered_in_v2_and_closes() {
    let ts = start();
    let mut w = Wire::unix(&ts.socket());
    let mut h = RequestHeader::new(Version::V2, Op::Hello, 77);
    h.length = 16;
    let mut frame = Vec::new();
    encode_request(&h, b"", b"", &mut frame);
    frame.extend_from_slice(
        &Hello {
            version: 1,
            capabilities: caps::KNOWN,
            depth: 8,
        }
        .encode(),
    );
    w.send_bytes(&frame);
    let r = w.recv();
    assert_status(&r, Status::VersionUnsupported);
    assert_eq!((r.header.version, r.header.request_id), (Version::V2, 77));
    assert!(w.try_recv().is_none());
    // A V2 frame other than HELLO first: PROTOCOL_ERROR, in V2, then the close.
    let mut w = Wire::unix(&ts.socket());
    w.version = Version::V2;
    w.send(Op::Ping, Mode::None, b"", b"", |_| {});
    let r = w.recv();
    assert_status(&r, Status::ProtocolError);
    assert_eq!(r.header.version, Version::V2);
    assert!(w.try_recv().is_none());
}
