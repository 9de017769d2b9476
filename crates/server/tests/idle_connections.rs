//! 10,000 idle connections must not need 10,000 threads. Alone in its own test binary so
//! the process's thread count belongs to this one server.

mod util;

use objmapper_proto::*;
use std::time::Duration;
use util::*;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn ten_thousand_idle_connections_on_a_fixed_set_of_threads() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let _ = setrlimit(Resource::Nofile, lim);
    // Each connection costs two fds in this process (client and server side).
    let max = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let n = 10_000usize.min((max as usize).saturating_sub(200) / 2);
    assert!(n >= 1000, "RLIMIT_NOFILE too small for this test: {max}");

    let ts = TestServer::start();
    let threads_before = thread_count();
    let conns: Vec<_> = (0..n)
        .map(|_| std::os::unix::net::UnixStream::connect(ts.socket()).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ts.server().connections() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ts.server().connections(), n);
    // The store's one-off orphan sweep thread may have finished meanwhile, hence `<=`.
    assert!(
        thread_count() <= threads_before,
        "no thread per connection: {} threads with {n} connections, {threads_before} before",
        thread_count()
    );
    // A new client is still served promptly.
    let mut c = ts.raw();
    assert_status(&c.ping(), Status::Ok);
    assert_status(&c.put_copy(b"k", b"v"), Status::Ok);
    drop(conns);
}
