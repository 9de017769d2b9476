//! The remote tier's figures for docs/BENCHMARKS.md (issue 17), every one a ratio
//! against a peer measured in the same run, on a real SeaweedFS started for the run
//! (scripts/seaweedfs): `scripts/bench-remote` builds and runs this.
//!
//! 1. A cold GET that reads through (host B has never seen the key) against a direct GET
//!    of the same bytes as a plain S3 object with a plain client (object_store), 4 KiB
//!    and 16 MiB, both reading the bytes into one reused buffer; the time until the cold
//!    GET's fd is in hand is reported too.
//! 2. Write-behind upload throughput (host A's PUTs until `remote flush` drains) against
//!    the same plain client putting the same objects with the same concurrency.
//! 3. T1 (GET 4 KiB, fd mode, one connection) with the remote tier on and off.
//! 4. A second host warming from the shared tier on a Zipf workload: origin fetches with
//!    the tier against without it.
//! 5. (`far`) The write-behind against the plain client with the store `--delay-ms`
//!    (default 10) away each way, through a delaying proxy, at several upload
//!    concurrencies: where the store's latency, not its CPU, bounds the uploads.

#[path = "../tests/util/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../../remote/tests/util/mod.rs"]
#[allow(unused_imports)]
mod seaweed;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use objmapper_client::{Client, PutOptions};
use objmapper_server::{RemoteSettings, Server, ServerConfig};

fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A server named `name`: data and socket under `dir`, its memory tier under `shm`
/// (tmpfs).
fn server(dir: &Path, shm: &Path, name: &str, remote: Option<RemoteSettings>) -> Server {
    let data = dir.join(name);
    let mut cfg = ServerConfig::new(dir.join(format!("{name}.sock")), &data);
    cfg.store.mem_dir = Some(shm.join(name));
    cfg.host_id = name.into();
    cfg.remote = remote;
    Server::start(cfg).expect("start objmapper")
}

fn flush(s: &Server) {
    let t = http::unix(s.admin_socket_path().unwrap());
    let r = http::call(
        &t,
        "POST",
        "/v1/remote/flush",
        Some(r#"{"timeout_seconds":600}"#),
    );
    assert_eq!(r.json()["drained"], true, "{}", r.text);
}

/// Whether `--sections` (comma-separated: cold, upload, t1, zipf, far; default all) names
/// `name`.
fn section(name: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--sections") {
        Some(i) => args
            .get(i + 1)
            .is_some_and(|v| v.split(',').any(|s| s == name)),
        None => true,
    }
}

fn body(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 31 + seed * 7) % 251) as u8)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rounds = arg("--rounds", 5) as usize;
    let sw = seaweed::Seaweed::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = sw.config("bench", "setup");
    rt.block_on(seaweed::create_bucket(&sw, &cfg));
    let settings = |host: &str| RemoteSettings {
        client: sw
            .config_for(&cfg.bucket, host)
            .with_timeout(Duration::from_secs(5)),
        queue_max_objects: 1_000_000,
        queue_max_bytes: 8 << 30,
        max_fetches: 64,
    };
    let raw = sw.raw(&cfg);
    let dir = tempfile::tempdir().unwrap();
    // The memory tiers' parent: /dev/shm unless `--mem-dir` names another tmpfs
    // (scripts/bench-remote --huge-tmpfs mounts one with huge=within_size).
    let mem_parent = arg_str("--mem-dir").unwrap_or("/dev/shm".into());
    let shm = tempfile::Builder::new()
        .prefix("objm-bench-remote.")
        .tempdir_in(&mem_parent)
        .unwrap_or_else(|e| panic!("a temp dir in {mem_parent}: {e}"));
    let a = server(dir.path(), shm.path(), "host-a", Some(settings("host-a")));
    let mut ca = Client::connect(a.socket_path()).unwrap();
    let tiers = http::get(&http::unix(a.admin_socket_path().unwrap()), "/v1/tiers").json();
    println!(
        "# objmapper remote tier, SeaweedFS {}; memory tiers in {mem_parent} ({}, huge pages: {})\n",
        std::env::var("OBJMAPPER_SEAWEEDFS_VERSION").unwrap_or("4.48".into()),
        tiers["memory"]["filesystem"].as_str().unwrap_or("?"),
        tiers["memory"]["huge_pages"].as_str().unwrap_or("none")
    );

    // 1. Cold read-through against a direct GET of the same remote bytes. Both sides
    // land the bytes in one buffer, written once before the first request: a fresh
    // 16 MiB buffer costs this VM 7 to 40 ms of page faults, the client's cost and not
    // either server's, and it swamped the difference being measured. The cold GET's
    // time until the fd is in hand (when a proxy can sendfile or mmap it) is a column
    // of its own.
    if section("cold") {
        println!(
            "| object | cold GET via host B, fd in hand (ms) | cold GET, bytes read (ms) | direct S3 GET, bytes read (ms) | ratio (bytes read) |"
        );
        println!("| --- | ---: | ---: | ---: | ---: |");
    }
    let cold_sizes: &[(&str, usize)] = if section("cold") {
        &[("4 KiB", 4096), ("16 MiB", 16 << 20)]
    } else {
        &[]
    };
    let mut sink = vec![1u8; cold_sizes.iter().map(|s| s.1).max().unwrap_or(0)];
    for &(label, size) in cold_sizes {
        let keys: Vec<String> = (0..rounds).map(|i| format!("cold/{label}/{i}")).collect();
        let mut sums = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let bytes = body(size, i as u64);
            sums.push(xxhash_rust::xxh3::xxh3_64(&bytes));
            ca.put(k.as_bytes(), &bytes, &PutOptions::default())
                .unwrap();
            // The same bytes as a plain S3 object, for the direct GET (the tier's own
            // object of a large version is a pointer to a multipart data object).
            let plain = object_store::path::Path::from(format!("plain/{k}"));
            rt.block_on(raw.put(&plain, bytes.into())).unwrap();
        }
        flush(&a);
        let b = server(
            dir.path(),
            shm.path(),
            &format!("host-b-{}", size),
            Some(settings("host-b")),
        );
        let mut cb = Client::connect(b.socket_path()).unwrap();
        let (mut in_hand, mut cold, mut direct) = (Vec::new(), Vec::new(), Vec::new());
        for (k, sum) in keys.iter().zip(&sums) {
            // Interleaved: the direct read of the same object first, then the cold GET.
            let name = object_store::path::Path::from(format!("plain/{k}"));
            let t = Instant::now();
            let got = rt.block_on(async {
                let mut s = raw.get(&name).await.unwrap().into_stream();
                let mut n = 0;
                while let Some(c) = futures_util::StreamExt::next(&mut s).await {
                    let c = c.unwrap();
                    sink[n..n + c.len()].copy_from_slice(&c);
                    n += c.len();
                }
                n
            });
            direct.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(got, size);
            let t = Instant::now();
            let o = cb.get_fd(k.as_bytes()).expect("read-through");
            in_hand.push(t.elapsed().as_secs_f64() * 1e3);
            let mut f = std::fs::File::from(o.fd);
            f.read_exact(&mut sink[..size]).unwrap();
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(f.read(&mut [0u8; 1]).unwrap(), 0, "{k}: longer than put");
            assert_eq!(xxhash_rust::xxh3::xxh3_64(&sink[..size]), *sum, "{k}");
        }
        let (h, c, d) = (median(in_hand), median(cold), median(direct));
        println!("| {label} | {h:.2} | {c:.2} | {d:.2} | {:.2} |", c / d);
    }

    // 2. Write-behind throughput against the plain client, same objects, same
    // concurrency, in `--wb-rounds` rounds that alternate which goes first (fresh keys
    // each round). Host A's time is split: the PUT loop (200 sequential local PUTs, the
    // uploads already running behind them) and the flush wait (POST /v1/remote/flush
    // until drained). A third column is the plain client making the requests the tier
    // makes (a conditional create, `If-None-Match: *`, with the stamp's user metadata
    // and the header in the body): what the server side of a guarded write costs.
    if section("upload") {
        let n = arg("--uploads", 200) as usize;
        let size = 64 << 10;
        let conc = sw.config_for(&cfg.bucket, "x").upload_concurrency;
        let mb = (n * size) as f64 / (1 << 20) as f64;
        let objs: Vec<Vec<u8>> = (0..n).map(|i| body(size, 1000 + i as u64)).collect();
        let plain_put = |round: usize, guarded: bool| {
            let t = Instant::now();
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(conc));
                let mut tasks = Vec::new();
                for (i, o) in objs.iter().enumerate() {
                    let raw = raw.clone();
                    let o = if guarded {
                        // What the tier sends: a header (about 100 bytes) then the bytes.
                        let mut v = vec![0u8; 100];
                        v.extend_from_slice(o);
                        v
                    } else {
                        o.clone()
                    };
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    tasks.push(tokio::spawn(async move {
                        let kind = if guarded { "guarded" } else { "plain" };
                        let p = object_store::path::Path::from(format!("{kind}/{round}/{i}"));
                        let opts = if guarded {
                            let mut a = object_store::Attributes::new();
                            a.insert(
                                object_store::Attribute::Metadata("objm-stamp".into()),
                                object_store::AttributeValue::from(format!("{i}-bench")),
                            );
                            object_store::PutOptions {
                                mode: object_store::PutMode::Create,
                                attributes: a,
                                ..Default::default()
                            }
                        } else {
                            object_store::PutOptions::default()
                        };
                        raw.put_opts(&p, o.into(), opts).await.unwrap();
                        drop(permit);
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            t.elapsed().as_secs_f64()
        };
        // The tier's client alone (no host): `Remote::put` of the same objects from
        // memory, `upload_concurrency` at once, as the upload tasks call it.
        let direct =
            objmapper_remote::Remote::new(sw.config_for(&cfg.bucket, "direct")).expect("a client");
        let direct = Arc::new(direct);
        let client_put = |round: usize| {
            let t = Instant::now();
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(conc));
                let mut tasks = Vec::new();
                for (i, o) in objs.iter().enumerate() {
                    let direct = direct.clone();
                    let o = o.clone();
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    tasks.push(tokio::spawn(async move {
                        let now = objmapper_remote::now_ns();
                        let record = objmapper_remote::Record {
                            key: format!("client/{round}/{i}").into_bytes(),
                            version: 1,
                            size: o.len() as u64,
                            mtime_ns: now,
                            checksum: xxhash_rust::xxh3::xxh3_64(&o),
                            expires_at: None,
                            pinned: false,
                            ephemeral: false,
                            content_type: None,
                            custom: Vec::new(),
                        };
                        let stamp = objmapper_remote::Stamp {
                            time_ns: now,
                            host: objmapper_remote::HostId::new("direct").unwrap(),
                        };
                        direct.put(&record, &stamp, &o[..]).await.unwrap();
                        drop(permit);
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            t.elapsed().as_secs_f64()
        };
        let write_behind = |ca: &mut Client, round: usize| {
            let t = Instant::now();
            for (i, o) in objs.iter().enumerate() {
                ca.put(
                    format!("up/{round}/{i}").as_bytes(),
                    o,
                    &PutOptions::default(),
                )
                .unwrap();
            }
            let puts = t.elapsed().as_secs_f64();
            flush(&a);
            (puts, t.elapsed().as_secs_f64() - puts)
        };
        let wb_rounds = arg("--wb-rounds", 3) as usize;
        println!(
            "\n| upload of {n} × 64 KiB, round | PUT loop (s) | flush wait (s) | \
             write-behind (s, MiB/s) | object_store, {conc} at once (s, MiB/s) | \
             same, guarded like the tier (s) | the tier's client alone (s) | \
             ratio to the plain client |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut ratios = Vec::new();
        let mut cpu = [(0u64, 0u64); 4];
        for round in 0..wb_rounds {
            // Each column's CPU: this process's (the host and the bench's client, or the
            // plain client) and SeaweedFS's, summed over the rounds.
            let mut timed = |col: usize, f: &mut dyn FnMut()| {
                let (me, store) = (cpu_ns(std::process::id()), cpu_ns(sw.pid));
                f();
                cpu[col].0 += cpu_ns(std::process::id()).saturating_sub(me);
                cpu[col].1 += cpu_ns(sw.pid).saturating_sub(store);
            };
            let (mut plain, mut guarded, mut alone, mut wb) = (0.0, 0.0, 0.0, (0.0, 0.0));
            if round % 2 == 0 {
                timed(0, &mut || wb = write_behind(&mut ca, round));
                timed(1, &mut || plain = plain_put(round, false));
                timed(2, &mut || guarded = plain_put(round, true));
                timed(3, &mut || alone = client_put(round));
            } else {
                timed(3, &mut || alone = client_put(round));
                timed(1, &mut || plain = plain_put(round, false));
                timed(2, &mut || guarded = plain_put(round, true));
                timed(0, &mut || wb = write_behind(&mut ca, round));
            }
            let (puts, wait) = wb;
            let wb = puts + wait;
            ratios.push(plain / wb);
            println!(
                "| {round} | {puts:.3} | {wait:.3} | {wb:.3}, {:.1} | {plain:.3}, {:.1} | \
                 {guarded:.3} | {alone:.3} | {:.2} |",
                mb / wb,
                mb / plain,
                plain / wb
            );
        }
        let lo = ratios.iter().cloned().fold(f64::MAX, f64::min);
        let hi = ratios.iter().cloned().fold(0.0, f64::max);
        println!(
            "| write-behind / plain, median of {} rounds (spread {lo:.2}–{hi:.2}) | | | | | | | {:.2} |",
            ratios.len(),
            median(ratios.clone())
        );
        // Load-independent: CPU per upload, whatever else ran.
        let per = (n * wb_rounds) as f64 * 1e3;
        println!("\n| CPU per upload (us), all rounds | this process | SeaweedFS |");
        println!("| --- | ---: | ---: |");
        for (i, name) in [
            "write-behind (the host, and the bench's local PUTs)",
            "object_store, plain",
            "object_store, guarded like the tier",
            "the tier's client alone",
        ]
        .iter()
        .enumerate()
        {
            println!(
                "| {name} | {:.0} | {:.0} |",
                cpu[i].0 as f64 / per,
                cpu[i].1 as f64 / per
            );
        }
    }

    // 5. A store far away: every request through a proxy that holds each chunk
    // `--delay-ms` each way. The write-behind (a host of its own per concurrency)
    // against the plain client at the same concurrency, rounds alternating.
    if section("far") {
        let delay = Duration::from_millis(arg("--delay-ms", 10));
        let n = arg("--far-uploads", 400) as usize;
        let target: std::net::SocketAddr = sw
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("SeaweedFS on an IP address");
        let proxy = format!("http://{}", rt.block_on(delaying_proxy(target, delay)));
        let far = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region("us-east-1")
            .with_endpoint(&proxy)
            .with_allow_http(true)
            .with_access_key_id(&sw.access_key)
            .with_secret_access_key(&sw.secret_key)
            .build()
            .unwrap();
        let far = Arc::new(far);
        let objs: Vec<Vec<u8>> = (0..n).map(|i| body(64 << 10, 5000 + i as u64)).collect();
        println!(
            "\n| {n} × 64 KiB, store {} ms away each way: uploads in flight | write-behind (s, uploads/s) | \
             object_store, as many at once (s, uploads/s) | ratio to the plain client |",
            delay.as_millis()
        );
        println!("| --- | ---: | ---: | ---: |");
        for conc in [4usize, 8, 16, 32, 64] {
            let mut st = settings(&format!("far-{conc}"));
            st.client = st
                .client
                .with_endpoint(&proxy)
                .with_upload_concurrency(conc)
                .with_timeout(Duration::from_secs(10));
            let h = server(dir.path(), shm.path(), &format!("far-{conc}"), Some(st));
            let mut c = Client::connect(h.socket_path()).unwrap();
            // Once through, so the check of conditional writes is behind us.
            c.put(b"far/warm", &objs[0], &PutOptions::default())
                .unwrap();
            flush(&h);
            let t = Instant::now();
            for (i, o) in objs.iter().enumerate() {
                let k = format!("far/{conc}/{i}");
                c.put(k.as_bytes(), o, &PutOptions::default()).unwrap();
            }
            flush(&h);
            let wb = t.elapsed().as_secs_f64();
            let t = Instant::now();
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(conc));
                let mut tasks = Vec::new();
                for (i, o) in objs.iter().enumerate() {
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    let (far, o) = (far.clone(), o.clone());
                    tasks.push(tokio::spawn(async move {
                        let p = object_store::path::Path::from(format!("plain-far/{conc}/{i}"));
                        far.put(&p, o.into()).await.unwrap();
                        drop(permit);
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let plain = t.elapsed().as_secs_f64();
            println!(
                "| {conc} | {wb:.2}, {:.0} | {plain:.2}, {:.0} | {:.2} |",
                n as f64 / wb,
                n as f64 / plain,
                plain / wb
            );
            let _ = h.shutdown();
        }
    }

    // 3. T1 with the remote tier on and off (local hits only), interleaved.
    if section("t1") {
        let off = server(dir.path(), shm.path(), "t1-off", None);
        let on = server(dir.path(), shm.path(), "t1-on", Some(settings("t1-on")));
        let secs = arg("--t1-seconds", 2) as f64;
        let mut ratios = Vec::new();
        let rate = |s: &Server| {
            let mut c = Client::connect(s.socket_path()).unwrap();
            c.put(b"t1", &body(4096, 9), &PutOptions::default())
                .unwrap();
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < secs {
                let o = c.get_fd(b"t1").unwrap();
                let mut buf = [0u8; 4096];
                rustix::io::pread(&o.fd, &mut buf, 0).unwrap();
                n += 1;
            }
            n as f64 / t.elapsed().as_secs_f64()
        };
        let (mut r_on, mut r_off) = (Vec::new(), Vec::new());
        for _ in 0..rounds.min(5) {
            let x = rate(&off);
            let y = rate(&on);
            ratios.push(y / x);
            r_off.push(x);
            r_on.push(y);
        }
        for s in [off, on] {
            let _ = s.shutdown();
        }
        println!("\n| T1 GET 4 KiB fd, 1 conn | GETs/s |");
        println!("| --- | ---: |");
        println!("| remote tier off | {:.0} |", median(r_off));
        println!("| remote tier on | {:.0} |", median(r_on));
        let lo = ratios.iter().cloned().fold(f64::MAX, f64::min);
        let hi = ratios.iter().cloned().fold(0.0, f64::max);
        println!(
            "| on / off (median of {} interleaved rounds, spread {lo:.2}–{hi:.2}) | {:.2} |",
            ratios.len(),
            median(ratios.clone())
        );
    }

    // 4. A second host warming from the shared tier: origin fetches with and without it.
    if section("zipf") {
        let keys = arg("--zipf-keys", 2000) as usize;
        let reqs = arg("--zipf-requests", 10000) as usize;
        let s = 1.0f64;
        let weights: Vec<f64> = (1..=keys).map(|r| 1.0 / (r as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(keys);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|c| *c < u).min(keys - 1)
        };
        let workload: Vec<usize> = (0..reqs).map(|_| next()).collect();
        // Host A (the first host) warms from the origin: every miss is an origin fetch and a PUT.
        let run = |s: &Server, prefix: &str| {
            let mut c = Client::connect(s.socket_path()).unwrap();
            let mut origin = 0u64;
            for &k in &workload {
                let key = format!("{prefix}/{k}");
                match c.get(key.as_bytes()) {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {
                        origin += 1;
                        c.put(
                            key.as_bytes(),
                            &body(4096, k as u64),
                            &PutOptions::default(),
                        )
                        .unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            origin
        };
        let first = run(&a, "zipf");
        flush(&a);
        let second_on = server(dir.path(), shm.path(), "warm-on", Some(settings("warm-on")));
        let with_tier = run(&second_on, "zipf");
        let second_off = server(dir.path(), shm.path(), "warm-off", None);
        let without = run(&second_off, "zipf");
        println!("\n| Zipf (s = 1), {keys} keys, {reqs} GETs | origin fetches |");
        println!("| --- | ---: |");
        println!("| first host | {first} |");
        println!("| second host, no shared tier | {without} |");
        println!("| second host, shared tier | {with_tier} |");
        println!(
            "| saved by the shared tier | {:.1}% |",
            100.0 * (without - with_tier) as f64 / without.max(1) as f64
        );
        for s in [second_on, second_off] {
            let _ = s.shutdown();
        }
    }
    let _ = a.shutdown();
}

/// A TCP proxy on a loopback port to `target` that passes each chunk on `delay` after
/// it arrived, in both directions: a store `2 × delay` of round trip away.
async fn delaying_proxy(target: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(s) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = (c.set_nodelay(true), s.set_nodelay(true));
                let (cr, cw) = c.into_split();
                let (sr, sw) = s.into_split();
                tokio::join!(late(cr, sw, delay), late(sr, cw, delay));
            });
        }
    });
    addr
}

/// Copies `r` to `w`, each chunk `delay` after it was read.
async fn late(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = r.read(&mut buf).await {
            if tx
                .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at + delay).await;
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(read, write);
}

/// The CPU time (ns) the threads of process `pid` have run so far, from
/// `/proc/PID/task/*/schedstat` (threads that exited are not counted: the runtimes'
/// threads and SeaweedFS's live through a section).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
