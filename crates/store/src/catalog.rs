//! The journal file: appending, replaying and compacting records.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use rustix::fs::{Mode, OFlags};

use crate::error::{io_ctx, StoreError};
use crate::index::Entry;
use crate::journal::{self, RawRecord, RecordRef};
use crate::layout::{self, Dirs};
use crate::sync::Poison;

/// Read size used when replaying the journal.
const REPLAY_CHUNK: usize = 1 << 20;

/// The open journal. All appends happen under the store's journal mutex,
/// which also orders index updates.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    /// Offset of the end of the last complete record (= next append offset).
    pub(crate) len: u64,
    /// Bytes of records that replay still needs: live PUTs + one RESERVE.
    pub(crate) live_bytes: u64,
    /// Incremented every time compaction replaces the file.
    pub(crate) generation: u64,
    /// After a failed compaction, do not retry before the journal reaches this size.
    compact_retry_at: u64,
    buf: Vec<u8>,
}

impl Journal {
    pub(crate) fn new(file: File, len: u64, live_bytes: u64) -> Self {
        Journal {
            file,
            len,
            live_bytes,
            generation: 0,
            compact_retry_at: 0,
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
        journal::encode(rec, &mut self.buf).map_err(|e| StoreError::Io {
            context: "encoding journal record".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        self.write_buf(poison)
    }

    /// Appends the PUT record of an index entry.
    pub(crate) fn append_put(&mut self, entry: &Entry, poison: &Poison) -> Result<u64, StoreError> {
        self.buf.clear();
        journal::encode_put_raw(entry.payload(), &mut self.buf);
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
        self.len >= min_len
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
    /// new journal, both complete.
    pub(crate) fn compact<'a>(
        &mut self,
        dirs: &Dirs,
        live: impl Iterator<Item = &'a Entry>,
        reserve_upto: u64,
        poison: &Poison,
    ) -> Result<u64, StoreError> {
        let r = self.compact_inner(dirs, live, reserve_upto, poison);
        if r.is_err() {
            let _ = layout::unlink_if_exists(&dirs.data, layout::JOURNAL_COMPACT);
            self.compact_retry_at = self.len.saturating_mul(2);
        }
        r
    }

    fn compact_inner<'a>(
        &mut self,
        dirs: &Dirs,
        live: impl Iterator<Item = &'a Entry>,
        reserve_upto: u64,
        poison: &Poison,
    ) -> Result<u64, StoreError> {
        poison.sync(
            "syncfs before journal compaction",
            rustix::fs::syncfs(&dirs.data),
        )?;
        let fd = rustix::fs::openat(
            &dirs.data,
            layout::JOURNAL_COMPACT,
            OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io_ctx("creating journal.compact"))?;
        let file = File::from(fd);
        let mut w = BufWriter::with_capacity(REPLAY_CHUNK, &file);
        let mut buf = Vec::new();
        let mut len = 0u64;
        journal::encode(RecordRef::Reserve { upto: reserve_upto }, &mut buf)
            .expect("RESERVE records always encode");
        for e in live {
            w.write_all(&buf)
                .map_err(io_ctx("writing journal.compact"))?;
            len += buf.len() as u64;
            buf.clear();
            journal::encode_put_raw(e.payload(), &mut buf);
        }
        w.write_all(&buf)
            .map_err(io_ctx("writing journal.compact"))?;
        len += buf.len() as u64;
        w.flush().map_err(io_ctx("writing journal.compact"))?;
        drop(w);
        poison.sync("fsync journal.compact", file.sync_all())?;
        rustix::fs::renameat(
            &dirs.data,
            layout::JOURNAL_COMPACT,
            &dirs.data,
            layout::JOURNAL,
        )
        .map_err(io_ctx("renaming journal.compact over journal"))?;
        // From here on the new file is the journal.
        self.file = file;
        self.len = len;
        self.live_bytes = len;
        self.generation += 1;
        self.compact_retry_at = 0;
        poison.sync("fsync data directory", rustix::fs::fsync(&dirs.data))?;
        Ok(len)
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

/// How a replay ended.
#[derive(Debug)]
pub(crate) struct ReplayEnd {
    /// Offset just past the last valid record.
    pub(crate) valid_len: u64,
    /// File size.
    pub(crate) file_len: u64,
    /// Why replay stopped before `file_len`, if it did.
    pub(crate) stop_reason: Option<String>,
}

/// Reads `file` record by record, calling `f(offset, record)` for each valid
/// one (borrowing the read buffer: nothing is allocated per record), and
/// stops at the first incomplete or corrupt record.
pub(crate) fn replay(file: &File, mut f: impl FnMut(u64, RawRecord<'_>)) -> io::Result<ReplayEnd> {
    let file_len = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    // File offset of buf[0], and position of the next record within buf.
    let mut base = 0u64;
    let mut pos = 0usize;
    let mut eof = false;
    loop {
        match journal::decode_raw(&buf[pos..]) {
            Ok(Some((record, len))) => {
                f(base + pos as u64, record);
                pos += len;
            }
            Ok(None) if !eof => {
                buf.drain(..pos);
                base += pos as u64;
                pos = 0;
                let old = buf.len();
                buf.resize(old + REPLAY_CHUNK, 0);
                let n = loop {
                    match file.read_at(&mut buf[old..], base + old as u64) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r?,
                    }
                };
                buf.truncate(old + n);
                eof = n == 0;
            }
            Ok(None) => {
                let valid_len = base + pos as u64;
                let stop_reason = (valid_len < file_len).then(|| "incomplete record".to_string());
                return Ok(ReplayEnd {
                    valid_len,
                    file_len,
                    stop_reason,
                });
            }
            Err(c) => {
                return Ok(ReplayEnd {
                    valid_len: base + pos as u64,
                    file_len,
                    stop_reason: Some(c.to_string()),
                });
            }
        }
    }
}
