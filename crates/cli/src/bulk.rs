//! `objmapper put --recursive DIR PREFIX`: load a directory tree (an nginx cache, an
//! export of objects), each regular file under PREFIX + its path relative to DIR, over
//! `--jobs` connections, with a progress bar and a summary.

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use objmapper_client::{Client, Mode, PutOptions};

use crate::args::PutArgs;
use crate::connect::{open_stream, stream_only, Target};
use crate::copy;
use crate::objects::{put_mode, put_options};
use crate::UsageError;

/// One regular file to store.
struct Item {
    /// Its path relative to DIR, `/`-separated, as bytes.
    rel: Vec<u8>,
    /// Its size when the tree was walked (for the progress bar).
    size: u64,
}

/// What the walk found besides files.
#[derive(Default)]
struct Walk {
    items: Vec<Item>,
    /// Non-regular entries (symbolic links, sockets, ...), with what they are.
    skipped: Vec<(PathBuf, &'static str)>,
    /// Directories that could not be read.
    errors: Vec<(PathBuf, String)>,
}

/// `objmapper put --recursive DIR PREFIX`.
pub fn put_recursive(a: PutArgs) -> Result<()> {
    let (target, mode) = stream_only(&a.conn, "put")?;
    let mode = put_mode(mode, &target);
    let dir = PathBuf::from(&a.key);
    let prefix = a.file.as_bytes().to_vec();
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(UsageError(format!(
                "--recursive needs a directory, and {} is not one (to store one file, drop \
                 --recursive: `objmapper put KEY FILE`)",
                dir.display()
            ))
            .into())
        }
        Err(e) => return Err(anyhow!("cannot read directory {}: {e}", dir.display())),
    }
    // Fail before walking a large tree if the server is not there.
    let first = open_stream(&target, None)?;

    let mut walk = Walk::default();
    walk_dir(&dir, &mut Vec::new(), &mut walk);
    walk.items.sort_by(|x, y| x.rel.cmp(&y.rel));
    let total: u64 = walk.items.iter().map(|i| i.size).sum();

    let bar = progress_bar(total, walk.items.len());
    for (p, what) in &walk.skipped {
        bar.suspend(|| {
            eprintln!(
                "objmapper: warning: skipped {} ({what}: only regular files are stored)",
                p.display()
            )
        });
    }

    let mut opts = put_options(&a);
    if let Some(ttl) = a.ttl {
        opts = opts.with_ttl(ttl);
    }
    let job = Job {
        dir: &dir,
        prefix: &prefix,
        items: &walk.items,
        next: AtomicUsize::new(0),
        opts: &opts,
        mode,
        target: &target,
        bar: &bar,
        verbose: a.verbose,
        failed: Mutex::new(Vec::new()),
        stored: AtomicUsize::new(0),
        bytes: std::sync::atomic::AtomicU64::new(0),
    };
    let start = Instant::now();
    let jobs = (a.jobs as usize).clamp(1, walk.items.len().max(1));
    let mut first = Some(first);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let conn = first.take();
            let job = &job;
            s.spawn(move || job.run(conn));
        }
    });
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let stored = job.stored.load(Ordering::Relaxed);
    let bytes = job.bytes.load(Ordering::Relaxed);
    let failed = job.failed.into_inner().unwrap_or_default();
    println!(
        "stored {stored} files, {bytes} bytes in {secs:.2} s ({:.1} MB/s); {} skipped, {} \
         failed",
        bytes as f64 / secs.max(1e-9) / 1e6,
        walk.skipped.len(),
        failed.len() + walk.errors.len()
    );
    if failed.is_empty() && walk.errors.is_empty() {
        return Ok(());
    }
    for (p, e) in failed.iter().chain(&walk.errors) {
        eprintln!("objmapper: failed: {}: {e}", p.display());
    }
    let unread = if walk.errors.is_empty() {
        String::new()
    } else {
        format!(", and {} entries could not be read", walk.errors.len())
    };
    Err(anyhow!(
        "{} of {} files failed{unread} (listed above)",
        failed.len(),
        walk.items.len()
    ))
}

/// The shared state of the parallel put.
struct Job<'a> {
    dir: &'a Path,
    prefix: &'a [u8],
    items: &'a [Item],
    next: AtomicUsize,
    opts: &'a PutOptions,
    mode: Mode,
    target: &'a Target,
    bar: &'a ProgressBar,
    verbose: bool,
    failed: Mutex<Vec<(PathBuf, String)>>,
    stored: AtomicUsize,
    bytes: std::sync::atomic::AtomicU64,
}

impl Job<'_> {
    /// One connection's loop: take the next file, store it; reconnect after a broken
    /// connection.
    fn run(&self, mut conn: Option<Client>) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = self.items.get(i) else {
                return;
            };
            let path = self
                .dir
                .join(Path::new(std::ffi::OsStr::from_bytes(&item.rel)));
            let mut key = self.prefix.to_vec();
            key.extend_from_slice(&item.rel);
            let res = match conn.as_mut().filter(|c| c.is_usable()) {
                Some(c) => self.put_one(c, &key, &path),
                None => match open_stream(self.target, None) {
                    Ok(c) => self.put_one(conn.insert(c), &key, &path),
                    Err(e) => Err(e),
                },
            };
            match res {
                Ok(n) => {
                    self.stored.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(n, Ordering::Relaxed);
                    if self.verbose {
                        self.bar.suspend(|| {
                            println!("stored {} ({n} bytes)", String::from_utf8_lossy(&key))
                        });
                    }
                }
                Err(e) => {
                    // Named once, in the list after the summary.
                    self.failed.lock().unwrap().push((path, format!("{e:#}")));
                }
            }
            self.bar.inc(item.size);
            self.bar.set_message(format!(
                "{} files",
                self.stored.load(Ordering::Relaxed) + self.failed.lock().unwrap().len()
            ));
        }
    }

    /// Stores one file; returns its size.
    fn put_one(&self, c: &mut Client, key: &[u8], path: &Path) -> Result<u64> {
        // O_NOFOLLOW: a file replaced by a symbolic link since the walk is refused, not
        // followed out of the tree.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|e| anyhow!("cannot open: {e}"))?;
        let m = f.metadata().map_err(|e| anyhow!("cannot stat: {e}"))?;
        if !m.is_file() {
            return Err(anyhow!("no longer a regular file"));
        }
        let len = m.len();
        if self.mode == Mode::Fd {
            // The bytes go into the server's staging memfd, not through the socket.
            c.put_fd(key, len, self.opts, |dst| {
                copy::copy(f.as_fd(), Some(0), dst.as_fd(), Some(len)).map(|_| ())
            })?;
        } else {
            let mut bytes = Vec::with_capacity(len.min(1 << 30) as usize);
            f.read_to_end(&mut bytes)
                .map_err(|e| anyhow!("cannot read: {e}"))?;
            c.put_inline(key, &bytes, self.opts, self.mode)?;
            return Ok(bytes.len() as u64);
        }
        Ok(len)
    }
}

/// Appends every regular file under `dir` (`rel` is its path so far) to `walk`. Never
/// follows symbolic links.
fn walk_dir(dir: &Path, rel: &mut Vec<u8>, walk: &mut Walk) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            walk.errors
                .push((dir.to_path_buf(), format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by_key(|e| e.as_ref().ok().map(|e| e.file_name()));
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                walk.errors
                    .push((dir.to_path_buf(), format!("cannot read directory: {e}")));
                continue;
            }
        };
        let path = entry.path();
        // file_type() does not follow symbolic links.
        let ty = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                walk.errors.push((path, format!("cannot stat: {e}")));
                continue;
            }
        };
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(entry.file_name().as_bytes());
        if ty.is_dir() {
            walk_dir(&path, rel, walk);
        } else if ty.is_file() {
            match entry.metadata() {
                Ok(m) => walk.items.push(Item {
                    rel: rel.clone(),
                    size: m.len(),
                }),
                Err(e) => walk.errors.push((path, format!("cannot stat: {e}"))),
            }
        } else {
            use std::os::unix::fs::FileTypeExt;
            let what = if ty.is_symlink() {
                "a symbolic link"
            } else if ty.is_socket() {
                "a socket"
            } else if ty.is_fifo() {
                "a FIFO"
            } else {
                "a device"
            };
            walk.skipped.push((path, what));
        }
        rel.truncate(len);
    }
}

/// A byte-count progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(total: u64, files: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} \
         {msg} of {len_files} (eta {eta})",
    )
    .map(|s| {
        s.with_key(
            "len_files",
            move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{files}");
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message("0 files");
    bar
}
