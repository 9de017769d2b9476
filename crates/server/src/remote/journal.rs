//! The remote tier's own small journal, `REMOTE` in the data directory: what must
//! survive a crash for the write-behind to finish (docs/STORAGE.md, "The remote tier:
//! the upload queue on disk").
//!
//! Uploads are not listed one by one: they are rebuilt at start from the store itself,
//! every persistent object committed at or after the *watermark* (the commit stamp
//! below which every upload has finished, been superseded or been dropped). Deletes and
//! purges leave nothing in the store to rebuild them from, so each is appended here
//! when it happens and marked settled once the remote tier has it.
//!
//! One record per line, text, so an operator can read it, each line ending in a space
//! and the xxh3-64 of what comes before it on the line (16 hex digits), after a first
//! line `V 2`:
//!
//! ```text
//! T <hex>           the tier all this is about: its bucket and prefix, `bucket/prefix`
//! W <ns>            uploads below this commit stamp are done
//! E <ns>            the invalidation log has been read up to here (events, or polls)
//! D <ns> <hex key>  a delete stamped <ns>, not yet on the remote tier
//! P <ns> <hex>      a purge by prefix, not yet on the remote tier
//! S <D|P> <ns> <hex> that delete or purge is settled
//! L <version> <hex key> that version's upload was dropped from a full queue (the
//!                   last DROPPED_KEPT are kept): evicted later, it becomes a delete
//! ```
//!
//! A line whose checksum does not match is skipped: a torn last line after a crash,
//! or damage. Without the checksums a torn `D 5 6b0a20ff` read as `D 5 6b` is a delete
//! of another key, and a flipped digit of `E` a place in the log in the future, past
//! events never to be read. A damaged line that was a delete or a purge is lost (it
//! cannot be told what it was): an `ERROR` says so. A file without the `V 2` line
//! (written before the checksums) is read line by line as it was written.
//!
//! Appends are plain `write`s (no fsync): they survive a crash of the process, not a
//! power loss (then a delete made in the last seconds may not reach the other hosts).
//! When the file passes [`COMPACT_AT`] it is rewritten with what is still pending
//! (write, fsync, rename); it is also rewritten at every open.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::wire::{hex, unhex};

/// The file's name in the data directory.
pub(crate) const FILE: &str = "REMOTE";
/// Rewrite the file once it is this large (or twice what the last rewrite wrote).
const COMPACT_AT: u64 = 4 << 20;

/// Dropped uploads kept, the oldest forgotten first (as the queue remembers them).
pub(crate) const DROPPED_KEPT: usize = 100_000;

/// A delete or a purge the remote tier has not recorded yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Inval {
    /// (stamp, key)
    Delete(u64, Box<[u8]>),
    /// (stamp, prefix)
    Purge(u64, Box<[u8]>),
}

impl Inval {
    fn line(&self, settled: bool) -> String {
        let (k, s, b) = match self {
            Inval::Delete(s, b) => ('D', s, b),
            Inval::Purge(s, b) => ('P', s, b),
        };
        let h = hex(b);
        if settled {
            sealed(&format!("S {k} {s} {h}"))
        } else {
            sealed(&format!("{k} {s} {h}"))
        }
    }
}

/// What the journal said at open.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The tier the file was written for (`T`): none in a file written before it was
    /// recorded.
    pub(crate) tier: Option<String>,
    pub(crate) watermark: u64,
    pub(crate) events: u64,
    pub(crate) pending: BTreeSet<Inval>,
    /// Uploads dropped from a full queue, oldest first: (key, local version).
    pub(crate) dropped: VecDeque<(Box<[u8]>, u64)>,
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    /// What the last rewrite wrote: the next one comes at twice that, at least.
    base: u64,
    state: Replayed,
    /// An append failed (a full disk, say), perhaps halfway through its line: the next
    /// append rewrites the file instead, so that nothing is appended to a torn line
    /// and the change that failed is not lost.
    torn: bool,
}

/// Adds a dropped upload, forgetting the oldest beyond [`DROPPED_KEPT`].
fn push_dropped(d: &mut VecDeque<(Box<[u8]>, u64)>, key: Box<[u8]>, version: u64) {
    if d.len() >= DROPPED_KEPT {
        d.pop_front();
    }
    d.push_back((key, version));
}

/// The first line of a file whose lines carry checksums.
const VERSION_LINE: &str = "V 2";

/// `record` as a line: the record, a space, its xxh3-64 in hex, a newline.
fn sealed(record: &str) -> String {
    format!(
        "{record} {:016x}\n",
        xxhash_rust::xxh3::xxh3_64(record.as_bytes())
    )
}

/// The record of a sealed line, if its checksum matches.
fn unseal(line: &str) -> Option<&str> {
    let (record, sum) = line.rsplit_once(' ')?;
    let sum = u64::from_str_radix(sum, 16)
        .ok()
        .filter(|_| sum.len() == 16)?;
    (xxhash_rust::xxh3::xxh3_64(record.as_bytes()) == sum).then_some(record)
}

/// Replays the journal's text; also returns how many lines were damaged (the last
/// line, torn by a crash, not counted).
fn parse(text: &str) -> (Replayed, usize) {
    let mut r = Replayed::default();
    let mut lines: Vec<&str> = text.lines().collect();
    let sealed = lines.first() == Some(&VERSION_LINE);
    if sealed {
        lines.remove(0);
    }
    let mut damaged = 0;
    let last = lines.len().saturating_sub(1);
    for (n, line) in lines.into_iter().enumerate() {
        let line = if sealed {
            match unseal(line) {
                Some(l) => l,
                None => {
                    // A torn last append is what a crash leaves; anything else is damage.
                    if n != last || text.ends_with('\n') {
                        damaged += 1;
                    }
                    continue;
                }
            }
        } else {
            line
        };
        let f: Vec<&str> = line.split(' ').collect();
        let inval = |k: &str, s: &str, h: &str| {
            let s = s.parse().ok()?;
            let b: Box<[u8]> = unhex(h)?.into();
            match k {
                "D" => Some(Inval::Delete(s, b)),
                "P" => Some(Inval::Purge(s, b)),
                _ => None,
            }
        };
        let read = match f.as_slice() {
            ["T", h] => unhex(h)
                .and_then(|b| String::from_utf8(b).ok())
                .map(|t| r.tier = Some(t))
                .is_some(),
            ["W", n] => n.parse().map(|n| r.watermark = n).is_ok(),
            ["E", n] => n.parse().map(|n| r.events = n).is_ok(),
            [k @ ("D" | "P"), s, h] => inval(k, s, h).map(|i| r.pending.insert(i)).is_some(),
            ["S", k, s, h] => inval(k, s, h).map(|i| r.pending.remove(&i)).is_some(),
            ["L", v, h] => match (v.parse::<u64>(), unhex(h)) {
                (Ok(v), Some(k)) => {
                    push_dropped(&mut r.dropped, k.into(), v);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        // A line that does not read (of an earlier version's file, which has no
        // checksums, or sealed by a version that wrote what this one does not know):
        // skipped, and counted unless it is a torn last line.
        if !read && !line.is_empty() && (n != last || text.ends_with('\n')) {
            damaged += 1;
        }
    }
    (r, damaged)
}

/// Whether `dir` holds a journal, and the tier it names if it does: read only.
pub(crate) fn peek(dir: &Path) -> io::Result<Option<Option<String>>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(b) => Ok(Some(parse(&String::from_utf8_lossy(&b)).0.tier)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Journal {
    /// Opens (creating) `dir/REMOTE` and replays it.
    pub(crate) fn open(dir: &Path) -> io::Result<(Journal, Replayed)> {
        let path = dir.join(FILE);
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let (state, damaged) = parse(&text);
        if damaged > 0 {
            tracing::error!(
                file = %path.display(),
                damaged,
                "remote tier: damaged lines in the upload journal were skipped; a delete or \
                 a purge made here among them may not reach the other hosts: purge again \
                 what was deleted or purged here lately"
            );
        }
        let replayed = Replayed {
            tier: state.tier.clone(),
            watermark: state.watermark,
            events: state.events,
            pending: state.pending.clone(),
            dropped: state.dropped.clone(),
        };
        let mut j = Journal {
            file: File::open("/dev/null")?,
            path,
            len: 0,
            base: 0,
            state,
            torn: false,
        };
        // Start from a compact file: the replayed state only.
        j.rewrite()?;
        Ok((j, replayed))
    }

    /// Appends `line`, whose change the state already holds.
    fn append(&mut self, line: &str) -> io::Result<()> {
        if self.torn {
            // The state, this line's change included, to a new file.
            self.rewrite()?;
            self.torn = false;
            return Ok(());
        }
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            self.torn = true;
            return Err(e);
        }
        self.len += line.len() as u64;
        if self.len > COMPACT_AT.max(2 * self.base) {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the state alone to a new file and renames it over the old one.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = format!("{VERSION_LINE}\n");
        if let Some(t) = &self.state.tier {
            text.push_str(&sealed(&format!("T {}", hex(t.as_bytes()))));
        }
        text.push_str(&sealed(&format!("W {}", self.state.watermark)));
        text.push_str(&sealed(&format!("E {}", self.state.events)));
        for i in &self.state.pending {
            text.push_str(&i.line(false));
        }
        for (k, v) in &self.state.dropped {
            text.push_str(&sealed(&format!("L {v} {}", hex(k))));
        }
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = text.len() as u64;
        self.base = self.len;
        Ok(())
    }

    /// Records that `key`'s version `version` was dropped from a full queue.
    pub(crate) fn dropped(&mut self, key: &[u8], version: u64) -> io::Result<()> {
        push_dropped(&mut self.state.dropped, key.into(), version);
        self.append(&sealed(&format!("L {version} {}", hex(key))))
    }

    pub(crate) fn pending(&mut self, i: &Inval) -> io::Result<()> {
        if self.state.pending.insert(i.clone()) {
            self.append(&i.line(false))?;
        }
        Ok(())
    }

    pub(crate) fn settled(&mut self, i: &Inval) -> io::Result<()> {
        if self.state.pending.remove(i) {
            self.append(&i.line(true))?;
        }
        Ok(())
    }

    pub(crate) fn watermark(&mut self, ns: u64) -> io::Result<()> {
        if ns != self.state.watermark {
            self.state.watermark = ns;
            self.append(&sealed(&format!("W {ns}")))?;
        }
        Ok(())
    }

    pub(crate) fn events(&mut self, ns: u64) -> io::Result<()> {
        if ns != self.state.events {
            self.state.events = ns;
            self.append(&sealed(&format!("E {ns}")))?;
        }
        Ok(())
    }

    /// Makes the file about `tier` from now on, with what is known of it: where its
    /// event log is read from (`events`) and its upload watermark. Written at once.
    pub(crate) fn belong_to(&mut self, tier: &str, watermark: u64, events: u64) -> io::Result<()> {
        self.state.tier = Some(tier.to_string());
        self.state.watermark = watermark;
        self.state.events = events;
        self.rewrite()
    }

    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.state.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_what_is_pending_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, Replayed::default());
        let d = Inval::Delete(5, b"k\n \xff".to_vec().into());
        let p = Inval::Purge(6, b"img/".to_vec().into());
        j.pending(&d).unwrap();
        j.pending(&p).unwrap();
        j.settled(&p).unwrap();
        j.watermark(42).unwrap();
        j.events(7).unwrap();
        drop(j);
        // A torn append after a crash.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"D 9 6").unwrap();
        let (j, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r.watermark, 42);
        assert_eq!(r.events, 7);
        assert_eq!(r.pending.into_iter().collect::<Vec<_>>(), vec![d]);
        assert_eq!(j.pending_count(), 1);
        // Reopening rewrote it to the state alone, every line sealed.
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(
            text,
            format!(
                "V 2\n{}{}{}",
                sealed("W 42"),
                sealed("E 7"),
                sealed("D 5 6b0a20ff")
            )
        );
    }

    #[test]
    fn dropped_uploads_are_kept_across_a_restart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.dropped(b"k\n1", 7).unwrap();
        j.dropped(b"other", 9).unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path()).unwrap();
        let got: Vec<_> = r.dropped.iter().map(|(k, v)| (&k[..], *v)).collect();
        assert_eq!(got, vec![(&b"k\n1"[..], 7), (&b"other"[..], 9)]);
        // The oldest go beyond the bound.
        let mut d = VecDeque::new();
        for v in 0..DROPPED_KEPT as u64 + 2 {
            push_dropped(&mut d, b"k".to_vec().into(), v);
        }
        assert_eq!((d.len(), d.front().map(|e| e.1)), (DROPPED_KEPT, Some(2)));
    }

    #[test]
    fn after_a_failed_append_the_next_one_rewrites_the_file_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let d1 = Inval::Delete(5, b"first".to_vec().into());
        let d2 = Inval::Delete(6, b"second".to_vec().into());
        j.pending(&d1).unwrap();
        // The disk fills: the append fails.
        j.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        assert!(j.pending(&d2).is_err());
        // Room again: the next change rewrites the whole state, the failed one too.
        j.watermark(9).unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r.watermark, 9);
        assert_eq!(r.pending.into_iter().collect::<Vec<_>>(), vec![d1, d2]);
    }

    #[test]
    fn a_torn_or_damaged_line_is_never_read_as_another_record() {
        let d = Inval::Delete(5, b"key-of-a-delete".to_vec().into());
        let full = format!("V 2\n{}{}{}", sealed("W 42"), sealed("E 7"), d.line(false));
        let (r, damaged) = parse(&full);
        assert_eq!((r.pending.len(), damaged), (1, 0));
        // A crash tore the last append (short of its newline, the line is whole): its
        // prefix would be a delete of another key.
        assert_eq!(parse(&full[..full.len() - 1]).0.pending.len(), 1);
        for cut in 2..d.line(false).len() {
            let torn = &full[..full.len() - cut];
            let (r, damaged) = parse(torn);
            assert!(r.pending.is_empty(), "cut {cut}: {:?}", r.pending);
            assert_eq!(damaged, 0, "a torn last line is not damage");
        }
        // A flipped digit: the line is skipped (the older place in the log stands),
        // and counted.
        let flipped = full.replacen("E 7", "E 9", 1);
        let (r, damaged) = parse(&flipped);
        assert_eq!((r.events, r.watermark, damaged), (0, 42, 1));
        // A file from before the checksums is read as written.
        let (r, damaged) = parse("W 42\nE 7\nD 5 6b0a20ff\n");
        assert_eq!(
            (r.watermark, r.events, r.pending.len(), damaged),
            (42, 7, 1, 0)
        );
        // Lines that read as nothing, in such a file or a sealed one, are counted (a
        // file of random bytes used to be taken without a word); a torn last one is not.
        let (r, damaged) = parse("W 42\n\u{7}\u{2}garbage\nD 5 zz\nX 1\nE 7\nD 5 6");
        assert_eq!(
            (r.watermark, r.events, r.pending.len(), damaged),
            (42, 7, 0, 3)
        );
        let (_, damaged) = parse(&format!("V 2\n{}", sealed("Q 1")));
        assert_eq!(damaged, 1);
    }
}
