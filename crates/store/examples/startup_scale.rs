//! Start-up at scale: how long the store (and the daemon) takes to answer a
//! GET with a million objects on disk, and how much RAM it spends per object.
//!
//! ```sh
//! cargo build --release -p objmapper-cli
//! cargo build --release -p objmapper-store --example startup_scale
//! ex=target/release/examples/startup_scale
//! $ex build --dir /tmp/s/data --objects 1000000 --threads 2   # add --unclean for a crash
//! $ex open --dir /tmp/s/data --objects 1000000 --runs 3        # in-process Store::open
//! $ex daemon --bin target/release/objmapper --dir /tmp/s/data --objects 1000000 --runs 3
//! $ex daemon --bin target/release/objmapper --dir /tmp/s/empty --runs 3 --probe ping
//! $ex crash-reset --dir /tmp/s/data   # the on-disk state of a crash with no checkpoint
//! ```
//!
//! `build` writes N objects of 100 bytes (every other one with a content
//! type) through the store library with the memory tier disabled, so every
//! object is a file in the data directory, then closes the store (or, with
//! `--unclean`, drops it without `close`: no `CLEAN` marker, and no
//! checkpoint since the one `open` wrote, so the next open verifies every
//! object).
//!
//! `open` runs `open-once` in a fresh process per run (so RSS figures are
//! not muddled by the previous run's heap): `Store::open` with the daemon's
//! defaults and a fresh memory-tier directory, then GETs of a random key
//! until one succeeds, then waits for the orphan sweep thread to exit, then
//! `close`. It reports each phase's time and VmRSS/VmHWM.
//!
//! `daemon` spawns `objmapper serve` on a fresh socket and memory directory,
//! polls `objmapper get KEY -o /dev/null` (or `objmapper ping`) every 10 ms
//! from the moment of spawn until one succeeds, waits for the daemon's
//! orphan sweep thread to exit and its RSS to settle, reads VmRSS/VmHWM
//! from `/proc/<pid>/status`, then stops it with SIGTERM and waits for it.
//!
//! `crash-reset` removes `CLEAN` and `checkpoint` from a closed data
//! directory: exactly what a crash of a run that never checkpointed after
//! writing the objects leaves (a missing checkpoint counts as offset 0), so
//! the unclean-start measurement can be repeated without rebuilding.
//!
//! Run by hand; not part of CI.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use objmapper_store::{PutMeta, PutOptions, Store, StoreConfig};
use rand::Rng;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Size of every object's value.
const VALUE_LEN: usize = 100;
/// Name of the store's orphan sweep thread, as it appears in `comm`.
const SWEEP_THREAD: &str = "objmapper-sweep";

fn key(i: u64) -> String {
    format!("https://www.example.com/path/to/resource/{i:09}?v=1")
}

fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let seed = i.to_le_bytes();
    for (j, b) in v.iter_mut().enumerate() {
        *b = seed[j % 8] ^ (j as u8).wrapping_mul(31);
    }
    v
}

/// `--name value` pairs and bare `--flag`s.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        let mut m = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let val = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            m.insert(name.to_string(), val);
        }
        Ok(Args(m))
    }

    fn str(&self, name: &str) -> Result<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num(&self, name: &str, default: u64) -> Result<u64> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => Ok(v.replace('_', "").parse()?),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("usage: startup_scale build|open|open-once|daemon|crash-reset --dir DIR ...");
        return ExitCode::from(2);
    };
    let r = Args::parse(rest).and_then(|a| match cmd.as_str() {
        "build" => build(&a),
        "open" => open_runs(&a),
        "open-once" => open_once(&a),
        "daemon" => daemon_runs(&a),
        "crash-reset" => crash_reset(Path::new(a.str("dir")?)),
        other => Err(format!("unknown command {other:?}").into()),
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("startup_scale {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A sibling of `dir` named `<dir><suffix>` (memory-tier directories).
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn build(a: &Args) -> Result<()> {
    let dir = PathBuf::from(a.str("dir")?);
    let n = a.num("objects", 1_000_000)?;
    let threads = a.num("threads", 2)?.max(1);
    let unclean = a.flag("unclean");
    let mem = sibling(&dir, ".build-mem");
    let mut cfg = StoreConfig::new(&dir).without_memory_tier();
    cfg.mem_dir = Some(mem.clone());
    cfg.disk_max_objects = cfg.disk_max_objects.max(2 * n);
    let t0 = Instant::now();
    let store = Arc::new(Store::open(cfg)?);
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || -> std::result::Result<(), String> {
                let mut i = t;
                while i < n {
                    let k = key(i);
                    let v = value(i);
                    let mut put = store.begin_put(k.as_bytes()).map_err(|e| e.to_string())?;
                    put.write_all(&v).map_err(|e| e.to_string())?;
                    let meta = PutMeta {
                        content_type: (i % 2 == 0).then(|| "text/html; charset=utf-8".into()),
                        ..PutMeta::default()
                    };
                    let opts = PutOptions {
                        durable: false,
                        ..PutOptions::default()
                    };
                    put.commit(VALUE_LEN as u64, meta, opts)
                        .map_err(|e| e.to_string())?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += threads;
                }
                Ok(())
            })
        })
        .collect();
    let mut last = 0;
    while done.load(Ordering::Relaxed) < n && !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let d = done.load(Ordering::Relaxed);
        if d / 100_000 != last / 100_000 {
            eprintln!("  {d} objects, {:.1} s", t0.elapsed().as_secs_f64());
        }
        last = d;
    }
    for w in workers {
        w.join().map_err(|_| "a build thread panicked")??;
    }
    let t_commit = t0.elapsed();
    let store = Arc::into_inner(store).ok_or("store still shared")?;
    let st = store.stats();
    let t1 = Instant::now();
    if unclean {
        drop(store);
    } else {
        store.close()?;
    }
    let t_close = t1.elapsed();
    fs::remove_dir_all(&mem)?;
    println!(
        "build: {} objects ({} bytes, journal {} bytes) with {threads} threads in {:.1} s \
         ({:.0} objects/s); {} in {:.1} s",
        st.disk.objects,
        st.disk.bytes,
        st.journal_bytes,
        t_commit.as_secs_f64(),
        n as f64 / t_commit.as_secs_f64(),
        if unclean {
            "dropped without close (unclean)"
        } else {
            "closed"
        },
        t_close.as_secs_f64()
    );
    Ok(())
}

fn crash_reset(dir: &Path) -> Result<()> {
    for f in ["CLEAN", "checkpoint"] {
        match fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
fn mem_kib(pid: &str) -> Result<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("malformed status line")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Whether the process has a thread named `name`.
fn has_thread(pid: &str, name: &str) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten()
        .any(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
}

/// Waits until `pid` has no orphan sweep thread; returns how long it waited.
/// (For the daemon, whose sweep thread has long been named by the time a
/// GET from another process succeeded.)
fn wait_sweep(pid: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while has_thread(pid, SWEEP_THREAD) && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

/// In-process variant: right after `open` the sweep thread may not have
/// named itself yet, so count threads instead. This process runs only the
/// main thread and the store's two (`objmapper-bg`, `objmapper-sweep`).
fn wait_sweep_self(limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    while fs::read_dir("/proc/self/task")?.count() > 2 && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t.elapsed())
}

/// Waits until RSS moved by less than 256 KiB over one second (at most
/// `limit`); returns the last `(VmRSS, VmHWM)`.
fn settle(pid: &str, limit: Duration) -> Result<(u64, u64)> {
    let t = Instant::now();
    let mut prev = mem_kib(pid)?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let cur = mem_kib(pid)?;
        if cur.0.abs_diff(prev.0) < 256 || t.elapsed() >= limit {
            return Ok(cur);
        }
        prev = cur;
    }
}

fn random_key(a: &Args) -> Result<String> {
    if let Ok(k) = a.str("key") {
        return Ok(k.to_string());
    }
    let n = a.num("objects", 1_000_000)?;
    Ok(key(rand::thread_rng().gen_range(0..n)))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// One in-process start-up; prints one `name=value ...` line.
fn open_once(a: &Args) -> Result<()> {
    let dir = PathBuf::from(a.str("dir")?);
    let mem = PathBuf::from(a.str("mem-dir")?);
    let k = random_key(a)?;
    let mut cfg = StoreConfig::new(&dir);
    cfg.mem_dir = Some(mem);
    let (rss0, _) = mem_kib("self")?;
    let t0 = Instant::now();
    let store = Store::open(cfg)?;
    let t_open = t0.elapsed();
    let (rss_open, _) = mem_kib("self")?;
    let mut polls = 0;
    while store.get(k.as_bytes())?.is_none() {
        polls += 1;
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(format!("no GET of {k} within 600 s").into());
        }
    }
    let t_get = t0.elapsed();
    let sweep = wait_sweep_self(Duration::from_secs(600))?;
    let t_sweep = t0.elapsed();
    let (rss, hwm) = settle("self", Duration::from_secs(10))?;
    let objects = store.len() as u64;
    let t1 = Instant::now();
    store.close()?;
    let t_close = t1.elapsed();
    println!(
        "open_s={:.3} first_get_s={:.3} failed_gets={polls} sweep_done_s={:.3} sweep_wait_s={:.3} \
         close_s={:.3} objects={objects} rss_before_kib={rss0} rss_open_kib={rss_open} \
         rss_kib={rss} hwm_kib={hwm}",
        t_open.as_secs_f64(),
        t_get.as_secs_f64(),
        t_sweep.as_secs_f64(),
        sweep.as_secs_f64(),
        t_close.as_secs_f64(),
    );
    Ok(())
}

fn parse_kv(line: &str) -> HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn open_runs(a: &Args) -> Result<()> {
    let dir = PathBuf::from(a.str("dir")?);
    let runs = a.num("runs", 3)?;
    let objects = a.num("objects", 1_000_000)?;
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for r in 1..=runs {
        if a.flag("crash-reset") {
            crash_reset(&dir)?;
        }
        let mem = sibling(&dir, &format!(".open-mem-{r}"));
        let out = Command::new(&exe)
            .args(["open-once", "--dir"])
            .arg(&dir)
            .arg("--mem-dir")
            .arg(&mem)
            .args(["--objects", &objects.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let _ = fs::remove_dir_all(&mem);
        let line = String::from_utf8(out.stdout)?;
        if !out.status.success() {
            return Err(format!("open-once failed: {}", out.status).into());
        }
        println!("run {r}: {}", line.trim_end());
        rows.push(parse_kv(&line));
    }
    let col = |k: &str| -> Vec<f64> { rows.iter().map(|r| r[k]).collect() };
    let per_obj = |r: &HashMap<String, f64>| {
        (r["rss_kib"] - r["rss_before_kib"]) * 1024.0 / r["objects"].max(1.0)
    };
    println!(
        "median: open {:.3} s, first GET {:.3} s after the start of open, sweep done {:.3} s, \
         close {:.3} s, RSS delta {:.1} bytes/object, VmHWM {:.0} MiB",
        median(&col("open_s")),
        median(&col("first_get_s")),
        median(&col("sweep_done_s")),
        median(&col("close_s")),
        median(&rows.iter().map(per_obj).collect::<Vec<_>>()),
        median(&col("hwm_kib")) / 1024.0,
    );
    Ok(())
}

/// One daemon start-up; returns `name=value ...`.
fn daemon_once(a: &Args, run: u64, tmp: &Path) -> Result<String> {
    let bin = PathBuf::from(a.str("bin")?);
    let dir = PathBuf::from(a.str("dir")?);
    let probe = a.str("probe").unwrap_or("get");
    let k = random_key(a)?;
    let sock = tmp.join(format!("s{run}.sock"));
    let mem = tmp.join(format!("mem{run}"));
    let log = fs::File::create(tmp.join(format!("serve{run}.log")))?;
    let probe_cmd = || {
        let mut c = Command::new(&bin);
        match probe {
            "ping" => c.arg("ping"),
            _ => c.arg("get").arg(&k).args(["-o", "/dev/null"]),
        };
        c.arg("--socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let t0 = Instant::now();
    let mut child = Command::new(&bin)
        .arg("serve")
        .arg("--socket")
        .arg(&sock)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--mem-dir")
        .arg(&mem)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id().to_string();
    let mut t_sock = None;
    let mut polls = 0u64;
    let t_get = loop {
        let t = Instant::now();
        if t_sock.is_none() && sock.exists() {
            t_sock = Some(t0.elapsed());
        }
        if probe_cmd().status()?.success() {
            break t0.elapsed();
        }
        polls += 1;
        if let Some(st) = child.try_wait()? {
            return Err(format!("daemon exited during start-up: {st}").into());
        }
        if t0.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            return Err("no answer within 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(10).saturating_sub(t.elapsed()));
    };
    let sweep = wait_sweep(&pid, Duration::from_secs(600));
    let t_sweep = t0.elapsed();
    let (rss, hwm) = settle(&pid, Duration::from_secs(20))?;
    let t1 = Instant::now();
    let pid_raw = i32::try_from(child.id())?;
    let p = rustix::process::Pid::from_raw(pid_raw).ok_or("pid 0")?;
    rustix::process::kill_process(p, rustix::process::Signal::TERM)?;
    let status = child.wait()?;
    let t_stop = t1.elapsed();
    let _ = fs::remove_dir_all(&mem);
    Ok(format!(
        "socket_s={:.3} first_answer_s={:.3} failed_probes={polls} sweep_done_s={:.3} \
         sweep_wait_s={:.3} rss_kib={rss} hwm_kib={hwm} stop_s={:.3} exit={}",
        t_sock.unwrap_or(t_get).as_secs_f64(),
        t_get.as_secs_f64(),
        t_sweep.as_secs_f64(),
        sweep.as_secs_f64(),
        t_stop.as_secs_f64(),
        status.code().unwrap_or(-1),
    ))
}

fn daemon_runs(a: &Args) -> Result<()> {
    let dir = PathBuf::from(a.str("dir")?);
    let runs = a.num("runs", 3)?;
    let tmp = tempfile::Builder::new()
        .prefix("objm-startup-")
        .tempdir_in(dir.parent().unwrap_or(Path::new("/tmp")))?;
    let mut rows = Vec::new();
    for r in 1..=runs {
        if a.flag("crash-reset") {
            crash_reset(&dir)?;
        }
        let line = daemon_once(a, r, tmp.path())?;
        println!("run {r}: {line}");
        std::io::stdout().flush()?;
        rows.push(parse_kv(&line));
    }
    if a.flag("keep-logs") {
        let logs = sibling(&dir, ".serve-logs");
        fs::create_dir_all(&logs)?;
        for r in 1..=runs {
            let name = format!("serve{r}.log");
            fs::copy(tmp.path().join(&name), logs.join(&name))?;
        }
        println!("logs in {}", logs.display());
    }
    let col = |k: &str| -> Vec<f64> { rows.iter().map(|r| r[k]).collect() };
    println!(
        "median: socket bound {:.3} s, first answer {:.3} s after spawn, sweep done {:.3} s, \
         VmRSS {} KiB, VmHWM {} KiB, SIGTERM to exit {:.3} s",
        median(&col("socket_s")),
        median(&col("first_answer_s")),
        median(&col("sweep_done_s")),
        median(&col("rss_kib")),
        median(&col("hwm_kib")),
        median(&col("stop_s")),
    );
    Ok(())
}
