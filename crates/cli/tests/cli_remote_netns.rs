//! The remote tier between hosts on network stacks of their own (issue 17): `objmapper
//! serve` for hosts A, B and C, each in a network namespace with its own address, and
//! SeaweedFS on a stack of its own (this namespace, bound to the host end of A's veth
//! pair, an address no namespace owns). All through the real binary and real packets.
//!
//! The remote tier takes `http://` only for loopback endpoints, so the hosts reach
//! SeaweedFS over HTTPS, with a test CA in `SSL_CERT_FILE`.
//!
//! Needs root and `ip netns`; without them the test says why and passes.

mod util;

#[path = "../../remote/tests/util/mod.rs"]
mod seaweed;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use seaweed::Seaweed;
use util::netns::Netns;
use util::{eventually, serve_on, stderr, write_file, Daemon};

/// `objmapper serve` for host `id` inside `ns`, with the remote tier on `bucket` at
/// `endpoint`, trusting the CA in `ca`. Its socket and directories are in a temp dir of
/// its own; clients here reach it through the socket.
fn host(ns: &Netns, id: &str, sw: &Seaweed, endpoint: &str, bucket: &str, ca: &Path) -> Daemon {
    let (dir, socket, data) = Daemon::fresh_dir();
    let url = format!("s3://{bucket}/objm");
    let mut c = serve_on(&socket, dir.path());
    c.env("AWS_ACCESS_KEY_ID", &sw.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &sw.secret_key)
        .env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .args(["--log-level", "info"])
        .args(["--remote", &url, "--remote-endpoint", endpoint])
        .args(["--host-id", id, "--remote-timeout", "1s"]);
    let mut cmd = ns.wrap(&c);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let d = Daemon::spawn_cmd(dir, socket, data, cmd);
    // It really runs on the namespace's network stack.
    let net = |pid: String| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        net(d.pid().as_raw_nonzero().to_string()),
        net("self".into()),
        "{id} runs in this network namespace"
    );
    d
}

/// `get KEY --mode fd` against `d`.
fn get_fd(d: &Daemon, key: &str) -> Output {
    d.run(&["get", key, "--mode", "fd"])
}

fn is_not_found(out: &Output) -> bool {
    out.status.code() == Some(1) && stderr(out).starts_with("objmapper: NOT_FOUND: ")
}

/// The lines of `stat KEY` that describe the object itself (not where or how this host
/// keeps it).
fn described(d: &Daemon, key: &str) -> Vec<String> {
    let stat = String::from_utf8(d.ok(&["stat", key])).unwrap();
    stat.lines()
        .filter(|l| {
            ["size:", "content-type:", "meta.", "checksum:", "mtime_ns:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn hosts_on_network_stacks_of_their_own_share_a_bucket() {
    if seaweed::skip() {
        return;
    }
    let mut stacks = Vec::new();
    for _ in 0..3 {
        match Netns::new() {
            Ok(ns) => stacks.push(ns),
            Err(why) => {
                eprintln!("SKIPPED: cannot make a network namespace here ({why})");
                return;
            }
        }
    }
    let (a_ns, b_ns, c_ns) = (&stacks[0], &stacks[1], &stacks[2]);
    // The storage host: SeaweedFS here, on the host end of A's pair, an address of
    // this namespace that A reaches on its link and B and C through their default
    // routes.
    let s3_ip = a_ns.host_ip.clone();
    let pki = tempfile::tempdir().unwrap();
    util::pki::pki_for(pki.path(), "", &[&s3_ip]);
    let sw = Seaweed::start_on(
        &s3_ip,
        Some((
            &pki.path().join("server.pem"),
            &pki.path().join("server.key"),
        )),
    );
    let endpoint = sw.https_endpoint.clone().expect("an HTTPS endpoint");
    assert!(
        endpoint.starts_with(&format!("https://{s3_ip}:")),
        "{endpoint}"
    );
    let cfg = sw.config("netns", "setup");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(seaweed::create_bucket(&sw, &cfg));
    let ca = pki.path().join("ca.pem");
    let a = host(a_ns, "host-a", &sw, &endpoint, &cfg.bucket, &ca);
    let b = host(b_ns, "host-b", &sw, &endpoint, &cfg.bucket, &ca);

    // A put with metadata on A, pushed to the bucket.
    let body = util::pattern(300_000, 17);
    let file = write_file(&a.path("in"), &body);
    a.ok(&[
        "put",
        "page/1",
        &file,
        "--content-type",
        "text/plain",
        "--meta",
        "lang=en",
        "--meta",
        "etag=\"v1\"",
    ]);
    a.ok(&["remote", "flush", "--wait", "30"]);

    // B never saw it: read-through, in fd mode, the same bytes and metadata.
    let out = get_fd(&b, "page/1");
    assert!(out.status.success(), "{}\n{}", stderr(&out), b.log());
    assert!(out.stdout == body, "B served other bytes");
    let on_a = described(&a, "page/1");
    assert_eq!(on_a.len(), 6, "{on_a:?}");
    assert_eq!(described(&b, "page/1"), on_a);

    // C cannot reach the endpoint (its cable is pulled: every packet dropped, no error
    // back): a cold miss is NOT_FOUND within the remote timeout (1 s) and some slack.
    c_ns.set_link(false);
    let c = host(c_ns, "host-c", &sw, &endpoint, &cfg.bucket, &ca);
    let t = Instant::now();
    let out = get_fd(&c, "page/1");
    let took = t.elapsed();
    assert!(is_not_found(&out), "{}\n{}", stderr(&out), c.log());
    eprintln!("unreachable endpoint: NOT_FOUND after {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // With the cable back, the same daemon reads it through: it was the network.
    c_ns.set_link(true);
    let took = eventually(Duration::from_secs(15), "C reads through", || {
        get_fd(&c, "page/1").stdout == body
    });
    eprintln!("C read through {took:?} after the link came back");

    // A delete on A reaches B and C within the poll interval (4 s by default), plus
    // one poll (at most the remote timeout) and slack for a loaded machine.
    a.ok(&["rm", "page/1"]);
    a.ok(&["remote", "flush", "--wait", "30"]);
    let took = eventually(
        Duration::from_secs(10),
        "the delete reaches B and C",
        || is_not_found(&get_fd(&b, "page/1")) && is_not_found(&get_fd(&c, "page/1")),
    );
    eprintln!("the delete reached B and C after {took:?}");
    // And nothing brings it back.
    for d in [&a, &b, &c] {
        let out = get_fd(d, "page/1");
        assert!(is_not_found(&out), "{}", stderr(&out));
    }
    let log = a.log() + &b.log() + &c.log();
    assert!(
        !log.contains(sw.secret_key.as_str()),
        "no secret in the logs"
    );
}
