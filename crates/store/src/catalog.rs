//! The journal file: appending, replaying and compacting records.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{io_ctx, StoreError};
use crate::index::Entry;
use crate::journal::{self, Framing, RawRecord, RecordRef, MAX_RECORD_LEN, RECORD_SYNC};
use crate::layout;
use crate::sync::Poison;

/// `HIGHWATER`: the highest version that may have been handed out and the journal's
/// salt, kept outside the journal so that neither is lost with it (docs/STORAGE.md).
pub(crate) const HIGHWATER: &str = "HIGHWATER";
pub(crate) const HIGHWATER_TMP: &str = "HIGHWATER.tmp";
const HIGHWATER_LEN: usize = 24;

/// Encodes `HIGHWATER`: `upto u64, salt u64, xxh3-64 of the 16 bytes before`.
pub(crate) fn encode_highwater(upto: u64, salt: u64) -> [u8; HIGHWATER_LEN] {
    let mut b = [0; HIGHWATER_LEN];
    b[..8].copy_from_slice(&upto.to_le_bytes());
    b[8..16].copy_from_slice(&salt.to_le_bytes());
    let sum = xxh3_64(&b[..16]);
    b[16..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Decodes `HIGHWATER` into `(upto, salt)`; `None` if it is malformed.
pub(crate) fn decode_highwater(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != HIGHWATER_LEN {
        return None;
    }
    let upto = u64::from_le_bytes(b[..8].try_into().ok()?);
    let salt = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(b[16..].try_into().ok()?);
    (xxh3_64(&b[..16]) == sum).then_some((upto, salt))
}

/// Read size used when replaying the journal.
const REPLAY_CHUNK: usize = 1 << 20;

/// The open journal. All appends happen under the store's journal mutex,
/// which also orders index updates.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    /// The salt of the records' checks (the file header's).
    pub(crate) salt: u64,
    /// The tier's data directory, for `HIGHWATER`.
    dir: OwnedFd,
    /// Highest `upto` recorded in `HIGHWATER`.
    highwater: u64,
    /// The file was found unlinked (st_nlink 0): rewrite it from the index.
    pub(crate) unlinked: bool,
    /// Offset of the end of the last complete record (= next append offset).
    pub(crate) len: u64,
    /// Bytes of records that replay still needs: live PUTs + one RESERVE.
    pub(crate) live_bytes: u64,
    /// Incremented every time compaction replaces the file.
    pub(crate) generation: u64,
    /// After a failed compaction, do not retry before the journal reaches this size.
    compact_retry_at: u64,
    /// When an append last checked that the file is still linked ([`Journal::check_linked`]).
    link_checked: Option<Instant>,
    buf: Vec<u8>,
}

/// Appends check that the journal is still linked at most this often (durable ones
/// every time): the check is an `fstat`, and a default PUT is otherwise a handful of
/// system calls. The periodic checkpoint checks too, and the files' labels bring back
/// objects whose records went into an unlinked journal before a crash noticed it.
const LINK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Journal {
    pub(crate) fn new(
        file: File,
        len: u64,
        live_bytes: u64,
        salt: u64,
        dir: OwnedFd,
        highwater: u64,
    ) -> Self {
        Journal {
            file,
            salt,
            dir,
            highwater,
            unlinked: false,
            len,
            live_bytes,
            generation: 0,
            compact_retry_at: 0,
            link_checked: None,
            buf: Vec::new(),
        }
    }

    /// Appends `rec` (to the page cache, not synced) and returns its offset.
    /// A failed write is truncated away; if that fails too the store is poisoned.
    pub(crate) fn append(
        &mut self,
        rec: RecordRef<'_>,
        poison: &Poison,
    ) -> Result<u64, StoreError> {
        self.buf.clear();
        journal::encode(rec, self.salt, &mut self.buf).map_err(|e| StoreError::Io {
            context: "encoding journal record".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let off = self.write_buf(poison)?;
        if let RecordRef::Reserve { upto } = rec {
            self.record_highwater(upto, poison)?;
        }
        Ok(off)
    }

    /// Raises `HIGHWATER` to `upto` (written atomically and synced).
    pub(crate) fn record_highwater(
        &mut self,
        upto: u64,
        poison: &Poison,
    ) -> Result<(), StoreError> {
        let upto = upto.max(self.highwater);
        layout::write_file_atomic(
            &self.dir,
            HIGHWATER_TMP,
            HIGHWATER,
            &encode_highwater(upto, self.salt),
            poison,
        )?;
        self.highwater = upto;
        Ok(())
    }

    /// Whether the journal file has been unlinked (e.g. deleted by hand) while
    /// open: every later append would be lost at the next open. Logs the first time.
    pub(crate) fn check_linked(&mut self) -> bool {
        if !self.unlinked {
            if let Ok(st) = rustix::fs::fstat(&self.file) {
                if st.st_nlink == 0 {
                    tracing::error!(
                        "the journal file was unlinked while the store was running; \
                         rewriting it from the in-memory index"
                    );
                    self.unlinked = true;
                }
            }
        }
        !self.unlinked
    }

    /// Appends the PUT record of an index entry.
    pub(crate) fn append_put(&mut self, entry: &Entry, poison: &Poison) -> Result<u64, StoreError> {
        self.buf.clear();
        journal::encode_put_raw(entry.payload(), self.salt, &mut self.buf);
        self.write_buf(poison)
    }

    fn write_buf(&mut self, poison: &Poison) -> Result<u64, StoreError> {
        let off = self.len;
        if let Err(e) = self.file.write_all_at(&self.buf, off) {
            if let Err(te) = self.file.set_len(off) {
                poison.set("truncating the journal after a failed append", te);
            }
            return Err(io_ctx("appending to the journal")(e));
        }
        self.len += self.buf.len() as u64;
        let now = Instant::now();
        if self
            .link_checked
            .is_none_or(|t| now.duration_since(t) >= LINK_CHECK_INTERVAL)
        {
            self.link_checked = Some(now);
            self.check_linked();
        }
        Ok(off)
    }

    /// fdatasync the journal, leaving error handling to the caller.
    pub(crate) fn sync_io(&self) -> io::Result<()> {
        Ok(rustix::fs::fdatasync(&self.file)?)
    }

    /// fdatasync the journal; failure poisons the store.
    pub(crate) fn sync(&self, poison: &Poison) -> Result<(), StoreError> {
        poison.sync("fdatasync journal", rustix::fs::fdatasync(&self.file))
    }

    /// Whether the garbage ratio calls for compaction.
    pub(crate) fn needs_compaction(&self, min_len: u64) -> bool {
        self.unlinked
            || self.len >= min_len
                && self.len > self.live_bytes.saturating_mul(2)
                && self.len >= self.compact_retry_at
    }

    /// Rewrites the journal with only the records needed to rebuild the
    /// current state: `RESERVE{reserve_upto}` followed by one PUT per live
    /// object. Returns the new journal length, which the caller must record
    /// as the checkpoint offset.
    ///
    /// Order: syncfs (so every object file referenced by a live record is
    /// durable), write `journal.compact`, fsync it, rename over `journal`,
    /// fsync the directory. A crash at any point leaves either the old or the
    /// new journal, both complete. `data` is the data directory (recovery
    /// compacts before there are `Dirs`).
    pub(crate) fn compact<'a>(
        &mut self,
        data: &OwnedFd,
        live: impl Iterator<Item = &'a Entry>,
        reserve_upto: u64,
        poison: &Poison,
    ) -> Result<u64, StoreError> {
        let r = (|| -> Result<u64, StoreError> {
            poison.sync("syncfs before journal compaction", rustix::fs::syncfs(data))?;
            let fd = rustix::fs::openat(
                data,
                layout::JOURNAL_COMPACT,
                OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(io_ctx("creating journal.compact"))?;
            let file = File::from(fd);
            let mut w = BufWriter::with_capacity(REPLAY_CHUNK, &file);
            let mut buf = Vec::new();
            w.write_all(&journal::encode_file_header(self.salt))
                .map_err(io_ctx("writing journal.compact"))?;
            let mut len = journal::FILE_HEADER_LEN as u64;
            journal::encode(
                RecordRef::Reserve { upto: reserve_upto },
                self.salt,
                &mut buf,
            )
            .expect("RESERVE records always encode");
            for e in live {
                w.write_all(&buf)
                    .map_err(io_ctx("writing journal.compact"))?;
                len += buf.len() as u64;
                buf.clear();
                journal::encode_put_raw(e.payload(), self.salt, &mut buf);
            }
            w.write_all(&buf)
                .map_err(io_ctx("writing journal.compact"))?;
            len += buf.len() as u64;
            w.flush().map_err(io_ctx("writing journal.compact"))?;
            drop(w);
            poison.sync("fsync journal.compact", file.sync_all())?;
            rustix::fs::renameat(data, layout::JOURNAL_COMPACT, data, layout::JOURNAL)
                .map_err(io_ctx("renaming journal.compact over journal"))?;
            // From here on the new file is the journal.
            self.file = file;
            self.len = len;
            self.live_bytes = len;
            self.generation += 1;
            self.compact_retry_at = 0;
            if self.unlinked {
                tracing::warn!(bytes = len, "rewrote the unlinked journal from the index");
                self.unlinked = false;
            }
            poison.sync("fsync data directory", rustix::fs::fsync(data))?;
            Ok(len)
        })();
        if r.is_err() {
            let _ = layout::unlink_if_exists(data, layout::JOURNAL_COMPACT);
            self.compact_retry_at = self.len.saturating_mul(2);
        }
        r
    }

    /// Reads `len` bytes at `off` of the journal file.
    pub(crate) fn read_region(&self, off: u64, len: u64) -> io::Result<Vec<u8>> {
        read_region(&self.file, off, len)
    }

    /// Drops everything after `len` (a torn or corrupt tail) and syncs.
    pub(crate) fn truncate_tail(&mut self, len: u64, poison: &Poison) -> Result<(), StoreError> {
        self.file
            .set_len(len)
            .map_err(io_ctx("truncating the journal"))?;
        self.len = len;
        self.sync(poison)
    }
}

/// A region of the journal that replay skipped.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// File offset where the bad bytes start.
    pub(crate) start: u64,
    /// File offset just past them (where the next good record starts, or EOF).
    pub(crate) end: u64,
    /// What was wrong with the record at `start`.
    pub(crate) reason: String,
}

/// How a replay ended.
#[derive(Debug)]
pub(crate) struct ReplayEnd {
    /// File size.
    pub(crate) file_len: u64,
    /// Regions skipped in the middle: each is followed by a good record.
    pub(crate) damaged: Vec<Damage>,
    /// A bad region at the end with no good record after it (a torn tail, or
    /// damage to the last records: they cannot be told apart).
    pub(crate) tail: Option<Damage>,
}

/// A window on the journal file: holds at least one maximal record's worth of
/// bytes from the requested offset (or up to EOF).
struct Window<'a> {
    file: &'a File,
    file_len: u64,
    buf: Vec<u8>,
    base: u64,
}

impl Window<'_> {
    fn at(&mut self, at: u64) -> io::Result<&[u8]> {
        let end = self.base + self.buf.len() as u64;
        if at < self.base || at > end {
            self.buf.clear();
            self.base = at;
        } else if end - at < MAX_RECORD_LEN as u64 && end < self.file_len {
            self.buf.drain(..(at - self.base) as usize);
            self.base = at;
        }
        loop {
            let end = self.base + self.buf.len() as u64;
            if end - at >= MAX_RECORD_LEN as u64 || end >= self.file_len {
                break;
            }
            let old = self.buf.len();
            self.buf.resize(old + REPLAY_CHUNK, 0);
            let n = loop {
                match self.file.read_at(&mut self.buf[old..], end) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.buf.truncate(old + n);
            if n == 0 {
                // The file shrank under us: what is there is all there is.
                self.file_len = end;
                break;
            }
        }
        Ok(&self.buf[(at - self.base) as usize..])
    }
}

/// Reads `file` record by record from `start`, calling `f(offset, record)` for
/// each valid one (borrowing the read buffer: nothing is allocated per record).
/// A bad record (corrupt, or incomplete before the end of the file) does not
/// stop replay: the next offset where a record starts and checks is found
/// ([`Framing::next_candidate`]) and replay goes on from there; the skipped
/// region is reported in [`ReplayEnd::damaged`], or as [`ReplayEnd::tail`] if
/// no good record follows it.
pub(crate) fn replay(
    file: &File,
    framing: Framing,
    start: u64,
    mut f: impl FnMut(u64, RawRecord<'_>),
) -> io::Result<ReplayEnd> {
    let file_len = file.metadata()?.len();
    let mut win = Window {
        file,
        file_len,
        buf: Vec::new(),
        base: start,
    };
    let mut off = start;
    let mut damaged = Vec::new();
    let mut tail = None;
    while off < win.file_len {
        let reason = match framing.decode_raw(win.at(off)?) {
            Ok(Some((record, len))) => {
                f(off, record);
                off += len as u64;
                continue;
            }
            // The window holds a whole record unless at EOF: this one is cut short.
            Ok(None) => "incomplete record".to_string(),
            Err(c) => c.to_string(),
        };
        match resync(&mut win, framing, off + 1)? {
            Some(next) => {
                damaged.push(Damage {
                    start: off,
                    end: next,
                    reason,
                });
                off = next;
            }
            None => {
                tail = Some(Damage {
                    start: off,
                    end: win.file_len,
                    reason,
                });
                break;
            }
        }
    }
    Ok(ReplayEnd {
        file_len: win.file_len,
        damaged,
        tail,
    })
}

/// The first offset at or after `at` where a record starts and checks.
fn resync(win: &mut Window<'_>, framing: Framing, mut at: u64) -> io::Result<Option<u64>> {
    while at < win.file_len {
        let w = win.at(at)?;
        let (found, wlen) = (framing.next_candidate(w), w.len());
        match found {
            None => {
                if at + wlen as u64 >= win.file_len {
                    return Ok(None);
                }
                // A marker may straddle the window's end: keep its first bytes.
                at += wlen.saturating_sub(RECORD_SYNC.len() - 1).max(1) as u64;
            }
            Some(i) => {
                let cand = at + i as u64;
                if let Ok(Some(_)) = framing.decode_raw(win.at(cand)?) {
                    return Ok(Some(cand));
                }
                at = cand + 1;
            }
        }
    }
    Ok(None)
}

/// Reads `len` bytes of `file` at `off` (for saving a damaged region).
pub(crate) fn read_region(file: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}
