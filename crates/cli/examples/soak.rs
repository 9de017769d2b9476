//! The soak test, driven by `scripts/soak DURATION`: starts `objmapper serve` (the binary
//! given with --bin) in a temp dir, runs several clients over several transports and
//! modes doing mixed GET/PUT/DELETE with random disconnects (some in the middle of a PUT),
//! and checks at the end that nothing acknowledged was lost, nothing is corrupt, and the
//! daemon's fd count and RSS are stable. Reports ops done, errors by status, peak RSS.
//!
//! With `--tls`, the TCP clients speak TLS 1.3 with client certificates (a throwaway CA
//! made at start), and the interrupted PUTs over TCP become junk on a TLS port.
//!
//! Each client owns its keys, so its model of them is exact: after an acknowledged PUT
//! the key holds those bytes (checksummed), after an acknowledged DELETE nothing, and an
//! interrupted PUT changes nothing.

use objmapper_client::{
    Client, Error, GetOptions, GetReply, Mode, PutOptions, TlsOptions, V2Options,
};
use objmapper_proto::{encode_request, Op, RequestHeader, Version};
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS_PER_CLIENT: usize = 48;

#[derive(Clone, Copy, Debug)]
enum Kind {
    UnixFd,
    UnixCopy,
    UnixV2Splice,
    UnixAuto,
    TcpCopy,
    TcpV2Splice,
}

const KINDS: [Kind; 6] = [
    Kind::UnixFd,
    Kind::UnixCopy,
    Kind::UnixV2Splice,
    Kind::UnixAuto,
    Kind::TcpCopy,
    Kind::TcpV2Splice,
];

struct Target {
    socket: PathBuf,
    tcp: String,
    /// TLS for the TCP clients (`--tls`).
    tls: Option<TlsOptions>,
}

#[derive(Default)]
struct Tally {
    ops: u64,
    disconnects: u64,
    interrupted_puts: u64,
    /// Objects stored at the end (acknowledged and not deleted).
    live: usize,
    /// Status name -> count, for every non-OK answer (NOT_FOUND included).
    statuses: BTreeMap<String, u64>,
    /// What must not happen: wrong content, a lost acknowledged write, transport errors.
    failures: Vec<String>,
}

fn connect(kind: Kind, t: &Target) -> Result<Client, Error> {
    let v2 = V2Options {
        pipeline_depth: 1,
        out_of_order: false,
        fd_passing: false,
        positional_reads: false,
    };
    let mut c = match kind {
        Kind::UnixFd | Kind::UnixCopy | Kind::UnixAuto => Client::connect(&t.socket)?,
        Kind::UnixV2Splice => Client::connect_v2(&t.socket, v2)?,
        Kind::TcpCopy => match &t.tls {
            Some(tls) => Client::connect_tls(&*t.tcp, tls)?,
            None => Client::connect_tcp(&t.tcp)?,
        },
        Kind::TcpV2Splice => match &t.tls {
            Some(tls) => Client::connect_tls_v2(&*t.tcp, tls, v2, None)?,
            None => Client::connect_tcp_v2(&t.tcp, v2)?,
        },
    };
    c.set_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

fn get_mode(kind: Kind) -> Mode {
    match kind {
        Kind::UnixFd => Mode::Fd,
        Kind::UnixCopy | Kind::TcpCopy => Mode::Copy,
        Kind::UnixV2Splice | Kind::TcpV2Splice => Mode::Splice,
        Kind::UnixAuto => Mode::Auto,
    }
}

fn put_mode(kind: Kind) -> Mode {
    match kind {
        Kind::UnixV2Splice | Kind::TcpV2Splice => Mode::Splice,
        _ => Mode::Copy,
    }
}

fn sum(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

/// Sends a PUT whose body is cut short, then drops the connection.
fn interrupted_put(kind: Kind, t: &Target, key: &[u8], rng: &mut impl Rng) {
    let mut h = RequestHeader::new(Version::V1, Op::Put, 1);
    h.mode = Mode::Copy;
    h.length = 100_000;
    let mut frame = Vec::new();
    encode_request(&h, key, &[], &mut frame);
    let cut = rng.gen_range(0..frame.len() + 50_000);
    frame.resize(frame.len() + 50_000, 0xEE);
    let _ = match kind {
        Kind::TcpCopy | Kind::TcpV2Splice => {
            std::net::TcpStream::connect(&t.tcp).and_then(|mut s| s.write_all(&frame[..cut]))
        }
        _ => std::os::unix::net::UnixStream::connect(&t.socket)
            .and_then(|mut s| s.write_all(&frame[..cut])),
    };
}

fn client(
    id: usize,
    kind: Kind,
    t: Arc<Target>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id as u64 * 7919 + 1);
    let mut model: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
    let mut tally = Tally::default();
    let mut c = None;
    let mut body = Vec::new();
    // First every key gets a value and is read once, so the daemon's per-object state
    // (its open-file cache: one fd per live object read) is at its full size before the
    // baseline is taken.
    match connect(kind, &t) {
        Ok(mut cl) => {
            for k in 0..KEYS_PER_CLIENT {
                let key = format!("soak/{id}/{k}").into_bytes();
                body.resize(rng.gen_range(0..16 << 10), 0);
                rng.fill_bytes(&mut body);
                let r = cl
                    .put_inline(&key, &body, &PutOptions::default(), put_mode(kind))
                    .and_then(|_| cl.get(&key));
                match r {
                    Ok((b, _)) if b == body => {
                        model.insert(key, Some(sum(&body)));
                    }
                    Ok(_) => tally
                        .failures
                        .push(format!("client {id}: initial GET differs")),
                    Err(e) => tally
                        .failures
                        .push(format!("client {id}: initial PUT/GET: {e}")),
                }
            }
        }
        Err(e) => tally.failures.push(format!("client {id}: connect: {e}")),
    }
    ready.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        if c.is_none() {
            match connect(kind, &t) {
                Ok(cl) => c = Some(cl),
                Err(e) => {
                    tally
                        .failures
                        .push(format!("client {id} ({kind:?}): connect: {e}"));
                    return tally;
                }
            }
        }
        let cl = c.as_mut().unwrap();
        let key = format!("soak/{id}/{}", rng.gen_range(0..KEYS_PER_CLIENT)).into_bytes();
        let roll = rng.gen_range(0..100);
        let result: Result<(), Error> = if roll < 55 {
            match cl.get_with(&key, &GetOptions::default().mode(get_mode(kind))) {
                Ok(reply) => {
                    let bytes = match reply {
                        GetReply::Bytes(b, _) => b,
                        GetReply::Fd(o) => o.read_all().unwrap_or_default(),
                    };
                    match model.get(&key) {
                        Some(Some(s)) if *s == sum(&bytes) => {}
                        want => tally.failures.push(format!(
                            "client {id} ({kind:?}): GET {} returned {} bytes (sum {:x}), \
                             model {want:?}",
                            String::from_utf8_lossy(&key),
                            bytes.len(),
                            sum(&bytes)
                        )),
                    }
                    Ok(())
                }
                Err(e) if e.is_not_found() && !matches!(model.get(&key), Some(Some(_))) => {
                    *tally.statuses.entry("NOT_FOUND".into()).or_default() += 1;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else if roll < 85 {
            let len = if rng.gen_range(0..10) == 0 {
                rng.gen_range(0..2 << 20)
            } else {
                rng.gen_range(0..64 << 10)
            };
            body.resize(len, 0);
            rng.fill_bytes(&mut body);
            cl.put_inline(&key, &body, &PutOptions::default(), put_mode(kind))
                .map(|_| {
                    model.insert(key.clone(), Some(sum(&body)));
                })
        } else if roll < 97 {
            cl.delete(&key, false).map(|existed| {
                let had = matches!(model.get(&key), Some(Some(_)));
                if existed != had {
                    tally.failures.push(format!(
                        "client {id}: DELETE {} said existed={existed}, model {had}",
                        String::from_utf8_lossy(&key)
                    ));
                }
                model.insert(key.clone(), None);
            })
        } else if roll < 99 {
            // A random disconnect between requests.
            c = None;
            tally.disconnects += 1;
            Ok(())
        } else {
            // A disconnect in the middle of a PUT of this key: it must change nothing.
            interrupted_put(kind, &t, &key, &mut rng);
            tally.interrupted_puts += 1;
            Ok(())
        };
        tally.ops += 1;
        if let Err(e) = result {
            let name = e.status().map_or("LOCAL/TRANSPORT", |s| s.name());
            *tally.statuses.entry(name.to_string()).or_default() += 1;
            tally.failures.push(format!("client {id} ({kind:?}): {e}"));
            c = None;
        }
    }
    // Final check of this client's keys over a fresh connection.
    match connect(kind, &t) {
        Ok(mut cl) => {
            for (key, want) in &model {
                let got = match cl.get(key) {
                    Ok((b, _)) => Some(sum(&b)),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => {
                        tally.failures.push(format!("final GET: {e}"));
                        continue;
                    }
                };
                if got != *want {
                    tally.failures.push(format!(
                        "client {id}: {} holds {got:?}, acknowledged {want:?}",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
        Err(e) => tally.failures.push(format!("final connect: {e}")),
    }
    tally.live = model.values().filter(|v| v.is_some()).count();
    tally
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    fds: usize,
    rss_kb: u64,
    hwm_kb: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Sample {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count(),
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`;
/// returns the server's TLS flags and the clients' options.
fn make_pki(dir: &Path) -> (Vec<String>, TlsOptions) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    for (name, usage) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    let flags = vec![
        "--tls-cert".into(),
        path("server.pem"),
        "--tls-key".into(),
        path("server.key"),
        "--tls-client-ca".into(),
        path("ca.pem"),
    ];
    let client = TlsOptions::new(path("ca.pem"))
        .and_then(|t| t.client_cert(path("client.pem"), path("client.key")))
        .expect("client TLS options");
    (flags, client)
}

fn start_daemon(bin: &Path, dir: &Path, extra: &[String]) -> (Child, Arc<Mutex<String>>, String) {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--mem-dir")
        .arg(dir.join("mem"))
        .args(["--mem-capacity", "32M", "--tcp", "127.0.0.1:0"])
        .args(["--log-level", "info"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start objmapper serve");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on tcp ").nth(1) {
                let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let tcp = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the daemon did not start:\n{}", log.lock().unwrap()));
    (child, log, tcp)
}

/// The daemon, killed (SIGKILL) and reaped if the driver panics before stopping it.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let mut bin = None;
    let mut secs = 60u64;
    let mut clients = 6usize;
    let mut tls = false;
    let mut args = std::env::args().skip(1);
    let usage = "usage: soak --bin PATH --duration SECS [--clients N] [--tls]";
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--bin" => bin = Some(PathBuf::from(value())),
            "--duration" => secs = value().parse().expect("--duration SECS"),
            "--clients" => clients = value().parse().expect("--clients N"),
            "--tls" => tls = true,
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    let bin = bin.unwrap_or_else(|| panic!("--bin is required; {usage}"));
    let dir = tempfile::Builder::new()
        .prefix("objmapper-soak-")
        .tempdir()
        .unwrap();
    let (flags, client_tls) = if tls {
        let (f, c) = make_pki(dir.path());
        (f, Some(c))
    } else {
        (Vec::new(), None)
    };
    let (child, log, tcp) = start_daemon(&bin, dir.path(), &flags);
    let pid = child.id();
    let mut daemon = Daemon(Some(child));
    let idle = sample(pid).expect("the daemon's /proc entry");
    let target = Arc::new(Target {
        socket: dir.path().join("s.sock"),
        tcp,
        tls: client_tls,
    });
    let kinds: Vec<String> = (0..clients)
        .map(|i| format!("{:?}", KINDS[i % KINDS.len()]))
        .collect();
    println!(
        "soak: {secs} s, {clients} clients ({}{}), daemon pid {pid}",
        kinds.join(", "),
        if tls { "; TCP over TLS" } else { "" }
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (t, s, r) = (target.clone(), stop.clone(), ready.clone());
            let kind = KINDS[i % KINDS.len()];
            std::thread::spawn(move || client(i, kind, t, s, r))
        })
        .collect();
    // Sample the daemon once a second; the baseline is taken after a warm-up (a tenth of
    // the run, 5 s to 60 s) once every client has written and read all its keys.
    let warm = Duration::from_secs((secs / 10).clamp(5, 60));
    let mut baseline: Option<Sample> = None;
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(s) = sample(pid) {
            if baseline.is_none()
                && started.elapsed() >= warm
                && ready.load(Ordering::Relaxed) == clients
            {
                baseline = Some(s);
            }
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for t in threads {
        let r = t.join().expect("a client thread panicked");
        total.ops += r.ops;
        total.disconnects += r.disconnects;
        total.interrupted_puts += r.interrupted_puts;
        total.live += r.live;
        for (k, v) in r.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        total.failures.extend(r.failures);
    }
    // Every client has disconnected: let the daemon notice, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let end = sample(pid).unwrap_or_default();
    let base = baseline.unwrap_or(end);
    let peak = samples
        .iter()
        .map(|s| s.hwm_kb)
        .max()
        .unwrap_or(0)
        .max(end.hwm_kb);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    // Stable: with every client gone, the daemon holds what it held idle at the start
    // plus at most one fd per live object (the store's open-file cache) and the workers'
    // pipe pools: nothing per connection or per request. RSS within 64 MiB of the
    // warm-up's.
    let fd_bound = idle.fds + total.live + 32;
    if end.fds > fd_bound {
        total.failures.push(format!(
            "fds leaked: {} at the end, {} idle at the start, {} live objects",
            end.fds, idle.fds, total.live
        ));
    }
    if end.rss_kb > base.rss_kb + 64 * 1024 {
        total.failures.push(format!(
            "RSS grew: {} kB after warm-up, {} kB at the end",
            base.rss_kb, end.rss_kb
        ));
    }
    let mut child = daemon.0.take().expect("still running");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM the daemon");
    let status = child.wait().unwrap();
    if !status.success() {
        total
            .failures
            .push(format!("the daemon exited with {status}"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ops: {} ({:.0}/s), random disconnects: {}, interrupted PUTs: {}",
        total.ops,
        total.ops as f64 / elapsed,
        total.disconnects,
        total.interrupted_puts
    );
    let st: Vec<String> = total
        .statuses
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let st = if st.is_empty() {
        "none".to_string()
    } else {
        st.join(", ")
    };
    println!("non-OK answers by status: {st}");
    println!(
        "daemon fds: {} idle at start, {} after warm-up, {max_fds} peak, {} at the end \
         ({} live objects); RSS: {} kB after warm-up, {} kB at the end, peak {peak} kB \
         (VmHWM)",
        idle.fds, base.fds, end.fds, total.live, base.rss_kb, end.rss_kb
    );
    if total.failures.is_empty() {
        println!("soak: PASS (nothing lost, nothing corrupt, fds and RSS stable)");
    } else {
        for f in total.failures.iter().take(20) {
            println!("FAIL: {f}");
        }
        println!(
            "soak: FAIL ({} problems); daemon log:\n{}",
            total.failures.len(),
            log.lock().unwrap()
        );
        drop(dir); // process::exit skips destructors: remove the temp dir first
        std::process::exit(1);
    }
}
