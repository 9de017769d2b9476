//! Busy polling (`ServerConfig::busy_poll`, `--busy-poll-us`): after work a worker keeps
//! asking epoll without sleeping for the configured window. Requests of every kind are
//! answered as without it, and the window is really spent (the workers' CPU time grows
//! with it), where without it an idle worker sleeps.
//!
//! One test in this file: it reads the CPU time of every `objm-worker-*` thread of the
//! process, so no other server may run beside it.

mod util;

use objmapper_proto::*;
use std::time::Duration;
use util::*;

/// CPU time of this process's worker threads, in clock ticks (utime + stime).
fn worker_ticks() -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("objm-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are the 14th
        // and 15th of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

/// 20 GETs, 30 ms apart: the workers' CPU ticks they cost, and every answer checked.
fn spaced_gets(ts: &TestServer) -> u64 {
    let mut c = ts.raw();
    assert_status(&c.put_copy(b"k", b"spaced"), Status::Ok);
    let before = worker_ticks();
    for _ in 0..20 {
        assert_eq!(c.get_copy(b"k").body, b"spaced");
        std::thread::sleep(Duration::from_millis(30));
    }
    worker_ticks() - before
}

#[test]
fn busy_polling_answers_everything_and_spends_its_window() {
    let mut ts = TestServer::start_with(|c| c.busy_poll = Duration::from_millis(10));
    // Every kind of request, pipelined and one by one, a durable PUT (on the blocking
    // pool, so its reply comes back through the worker's waker) and a DELETE.
    let mut c = ts.raw();
    for i in 0..50u32 {
        let key = format!("k{i}");
        c.send(
            Op::Put,
            Mode::Copy,
            key.as_bytes(),
            &Metadata::default(),
            |h| {
                h.length = 4;
            },
        );
        c.send_bytes(&i.to_le_bytes());
    }
    for _ in 0..50 {
        assert_status(&c.recv(), Status::Ok);
    }
    for i in 0..50u32 {
        assert_eq!(c.get_copy(format!("k{i}").as_bytes()).body, i.to_le_bytes());
    }
    c.send(Op::Put, Mode::Copy, b"durable", &Metadata::default(), |h| {
        h.length = 1;
        h.flags |= req_flags::DURABLE;
    });
    c.send_bytes(b"d");
    assert_status(&c.recv(), Status::Ok);
    assert_eq!(c.get_copy(b"durable").body, b"d");
    c.request(Op::Delete, Mode::None, b"k0");
    assert_status(&c.recv(), Status::Ok);
    assert_status(&c.get_copy(b"k0"), Status::NotFound);
    drop(c);

    // 20 windows of 10 ms: at least 80 ms of worker CPU even if preempted now and then
    // (clock ticks are 10 ms).
    let spinning = spaced_gets(&ts);
    ts.stop();
    let ts = TestServer::start();
    let sleeping = spaced_gets(&ts);
    assert!(spinning >= 8, "busy polling spent {spinning} ticks");
    assert!(
        sleeping < 5,
        "without busy polling the workers spent {sleeping} ticks"
    );
}
