//! Bans: invalidation by expression, as Varnish's ban list.
//!
//! A ban is an expression over an object's key and custom metadata plus a stamp from the
//! store's clock (see `Inner::stamp`). An object whose commit stamp (`mtime_ns`) is lower
//! than the stamp of a ban that matches it is treated as absent by every read. Removal is
//! lazy: a read that finds a banned object queues its removal, and the ban lurker
//! (`Inner::lurk`) walks the indexes, removes what the bans cover and retires the bans.
//!
//! The grammar (docs/STORAGE.md, "Bans"):
//!
//! ```text
//! ban     := cond ( "&&" cond )*
//! cond    := subject op string
//! subject := "key" | "meta." NAME
//! op      := "==" | "!=" | "^" | "~" | "!~" | "has"
//! string  := '"' ... '"'   escapes \\ \" \n \t \r \xHH
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use regex::bytes::{Regex, RegexBuilder};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::BanError;
use crate::meta::ObjectMeta;

/// Longest ban expression, in bytes.
pub const MAX_BAN_LEN: usize = 4096;
/// Most conditions one ban may join with `&&`.
pub const MAX_BAN_CONDS: usize = 16;
/// Most bans active at once, whatever [`crate::StoreConfig::max_bans`] says.
pub const MAX_BANS: usize = 10_000;
/// Size limit of one compiled regex (`RegexBuilder::size_limit`), in bytes.
pub const BAN_REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Size limit of one regex's lazy DFA cache (`RegexBuilder::dfa_size_limit`), in bytes.
pub const BAN_REGEX_DFA_LIMIT: usize = 64 * 1024;

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    Key,
    /// A custom metadata pair, by exact name.
    Meta(Box<[u8]>),
}

#[derive(Clone, Debug)]
enum Op {
    Eq(Box<[u8]>),
    Ne(Box<[u8]>),
    Prefix(Box<[u8]>),
    Match(Regex),
    NoMatch(Regex),
    Has(Box<[u8]>),
}

#[derive(Clone, Debug)]
struct Cond {
    subject: Subject,
    op: Op,
}

impl Cond {
    fn eval(&self, value: Option<&[u8]>) -> bool {
        match (&self.op, value) {
            (Op::Ne(_) | Op::NoMatch(_), None) => true,
            (_, None) => false,
            (Op::Eq(s), Some(v)) => **s == *v,
            (Op::Ne(s), Some(v)) => **s != *v,
            (Op::Prefix(s), Some(v)) => v.starts_with(s),
            (Op::Match(r), Some(v)) => r.is_match(v),
            (Op::NoMatch(r), Some(v)) => !r.is_match(v),
            (Op::Has(s), Some(v)) => v
                .split(|b| b.is_ascii_whitespace() || *b == b',')
                .any(|t| !t.is_empty() && t == &**s),
        }
    }
}

/// A ban as a cold tier can hold it ([`BanExpr::remote_form`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RemoteForm<'a> {
    /// Every key starting with these bytes.
    Purge(&'a [u8]),
    /// This one key.
    Delete(&'a [u8]),
    /// No form there: it stays a ban of this host.
    Local,
}

/// A parsed ban expression.
#[derive(Clone, Debug)]
pub struct BanExpr {
    conds: Vec<Cond>,
    /// Whether any condition looks at metadata (else the key alone decides).
    uses_meta: bool,
}

impl BanExpr {
    /// Parses and compiles an expression; see the module documentation for the grammar.
    pub fn parse(text: &[u8]) -> Result<BanExpr, BanError> {
        Parser { s: text, at: 0 }.ban()
    }

    /// What the expression is for a cold tier shared with other hosts: a purge of a key
    /// prefix (`key ^ "P"`, or several such conditions each a prefix of the longest, as
    /// the VMOD's `store.purge()` sends with a backend prefix), a delete of one key
    /// (`key == "K"` alone), or neither.
    pub(crate) fn remote_form(&self) -> RemoteForm<'_> {
        if let [Cond {
            subject: Subject::Key,
            op: Op::Eq(k),
        }] = self.conds.as_slice()
        {
            if crate::validate_key(k).is_ok() {
                return RemoteForm::Delete(k);
            }
        }
        let mut prefixes = Vec::with_capacity(self.conds.len());
        for c in &self.conds {
            match c {
                Cond {
                    subject: Subject::Key,
                    op: Op::Prefix(p),
                } => prefixes.push(&**p),
                _ => return RemoteForm::Local,
            }
        }
        let Some(longest) = prefixes.iter().copied().max_by_key(|p| p.len()) else {
            return RemoteForm::Local;
        };
        if longest.len() > crate::MAX_KEY_LEN || !prefixes.iter().all(|p| longest.starts_with(p)) {
            return RemoteForm::Local;
        }
        RemoteForm::Purge(longest)
    }

    /// Whether the expression may match an object with this key, whatever its
    /// metadata (true for one that looks at metadata).
    pub(crate) fn may_match_key(&self, key: &[u8]) -> bool {
        self.uses_meta || self.matches(key, None)
    }

    /// Whether the expression matches an object with this key and custom metadata.
    pub fn matches(&self, key: &[u8], meta: Option<&ObjectMeta>) -> bool {
        self.conds.iter().all(|c| {
            let v = match &c.subject {
                Subject::Key => Some(key),
                Subject::Meta(name) => meta.and_then(|m| {
                    m.custom
                        .iter()
                        .find(|(n, _)| n.as_bytes() == &**name)
                        .map(|(_, v)| &**v)
                }),
            };
            c.eval(v)
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn err<T>(&self, pos: usize, message: impl Into<String>) -> Result<T, BanError> {
        Err(BanError {
            pos,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn ban(mut self) -> Result<BanExpr, BanError> {
        if self.s.is_empty() {
            return self.err(0, "empty ban expression: it needs at least one condition");
        }
        if self.s.len() > MAX_BAN_LEN {
            return self.err(
                MAX_BAN_LEN,
                format!(
                    "ban expression of {} bytes exceeds the limit of {MAX_BAN_LEN}",
                    self.s.len()
                ),
            );
        }
        let mut conds = Vec::new();
        loop {
            self.skip_ws();
            if conds.len() == MAX_BAN_CONDS {
                return self.err(
                    self.at,
                    format!("more than {MAX_BAN_CONDS} conditions joined with &&"),
                );
            }
            conds.push(self.cond()?);
            self.skip_ws();
            if self.at == self.s.len() {
                break;
            }
            if self.s[self.at..].starts_with(b"&&") {
                self.at += 2;
                continue;
            }
            return self.err(self.at, "expected && or the end of the expression");
        }
        let uses_meta = conds.iter().any(|c| matches!(c.subject, Subject::Meta(_)));
        Ok(BanExpr { conds, uses_meta })
    }

    fn word(&mut self, stop_at_quote: bool) -> Vec<u8> {
        let start = self.at;
        while self.at < self.s.len()
            && !self.s[self.at].is_ascii_whitespace()
            && !(stop_at_quote && self.s[self.at] == b'"')
        {
            self.at += 1;
        }
        self.s[start..self.at].to_vec()
    }

    fn cond(&mut self) -> Result<Cond, BanError> {
        let start = self.at;
        if start == self.s.len() {
            return self.err(start, "expected a condition (key or meta.NAME)");
        }
        let w = self.word(false);
        let subject = if w == b"key" {
            Subject::Key
        } else if let Some(name) = w.strip_prefix(b"meta.") {
            if name.is_empty() {
                return self.err(start + 5, "meta. needs a metadata name, e.g. meta.url");
            }
            Subject::Meta(name.into())
        } else {
            return self.err(
                start,
                format!(
                    "unknown subject {:?}: expected key or meta.NAME",
                    String::from_utf8_lossy(&w)
                ),
            );
        };
        self.skip_ws();
        let op_at = self.at;
        let op = self.word(true);
        if op.is_empty() {
            return self.err(op_at, "expected an operator (==, !=, ^, ~, !~ or has)");
        }
        self.skip_ws();
        let str_at = self.at;
        let value = self.string()?;
        let regex = |v: &[u8]| -> Result<Regex, BanError> {
            let pat = std::str::from_utf8(v).map_err(|_| BanError {
                pos: str_at,
                message: "a regex must be UTF-8 text (match raw bytes with (?-u:\\xHH) inside the \
                          pattern)"
                    .into(),
            })?;
            RegexBuilder::new(pat)
                .size_limit(BAN_REGEX_SIZE_LIMIT)
                .dfa_size_limit(BAN_REGEX_DFA_LIMIT)
                .build()
                .map_err(|e| BanError {
                    pos: str_at,
                    message: match e {
                        regex::Error::CompiledTooBig(n) => format!(
                            "regex too big: it compiles to more than the limit of {n} bytes"
                        ),
                        e => format!("invalid regex: {e}"),
                    },
                })
        };
        let op = match &op[..] {
            b"==" => Op::Eq(value.into()),
            b"!=" => Op::Ne(value.into()),
            b"^" => Op::Prefix(value.into()),
            b"~" => Op::Match(regex(&value)?),
            b"!~" => Op::NoMatch(regex(&value)?),
            b"has" => Op::Has(value.into()),
            other => {
                return self.err(
                    op_at,
                    format!(
                        "unknown operator {:?}: expected ==, !=, ^, ~, !~ or has",
                        String::from_utf8_lossy(other)
                    ),
                )
            }
        };
        Ok(Cond { subject, op })
    }

    fn string(&mut self) -> Result<Vec<u8>, BanError> {
        if self.s.get(self.at) != Some(&b'"') {
            return self.err(self.at, "expected a string in double quotes");
        }
        let open = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.at) else {
                return self.err(open, "unterminated string (no closing \")");
            };
            match b {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let esc = self.at;
                    let Some(&c) = self.s.get(self.at + 1) else {
                        return self.err(esc, "unterminated escape at the end of the expression");
                    };
                    self.at += 2;
                    match c {
                        b'\\' => out.push(b'\\'),
                        b'"' => out.push(b'"'),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'x' => {
                            let hex = self.s.get(self.at..self.at + 2).and_then(|h| {
                                std::str::from_utf8(h)
                                    .ok()
                                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                                    .filter(|_| h.iter().all(u8::is_ascii_hexdigit))
                            });
                            let Some(v) = hex else {
                                return self.err(esc, "\\x needs two hex digits (\\xHH)");
                            };
                            out.push(v);
                            self.at += 2;
                        }
                        other => {
                            return self.err(
                                esc,
                                format!(
                                    "unknown escape \\{}: use \\\\, \\\", \\n, \\t, \\r or \\xHH",
                                    other.escape_ascii()
                                ),
                            )
                        }
                    }
                }
                _ => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

/// One active ban as [`crate::Store::bans`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanInfo {
    /// The ban's stamp on the store's clock (ns since the epoch, strictly above every
    /// earlier commit and ban): objects committed with a lower stamp are covered.
    pub stamp: u64,
    /// Wall-clock time the ban was added, ns since the Unix epoch.
    pub added_ns: u64,
    /// The expression, as given.
    pub expr: Box<[u8]>,
}

#[derive(Debug)]
pub(crate) struct Ban {
    pub(crate) info: BanInfo,
    expr: BanExpr,
}

/// The active bans, sorted by stamp.
#[derive(Debug, Default)]
pub(crate) struct Bans {
    /// `list.len()`, read without a lock: the read path's only cost when there are none.
    active: AtomicUsize,
    list: RwLock<Vec<Arc<Ban>>>,
    /// Serializes adds and retirements (and so the ban file).
    pub(crate) write: Mutex<()>,
    pub(crate) added: AtomicU64,
    pub(crate) removed: AtomicU64,
}

impl Bans {
    pub(crate) fn is_empty(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Whether a ban newer than `mtime_ns` matches. `meta` is only asked for when a
    /// candidate ban looks at metadata.
    pub(crate) fn covers(
        &self,
        key: &[u8],
        mtime_ns: u64,
        meta: impl FnOnce() -> ObjectMeta,
    ) -> bool {
        if self.is_empty() {
            return false;
        }
        let list = self.list.read();
        covers_in(&list, key, mtime_ns, meta)
    }

    pub(crate) fn covers_meta(&self, m: &ObjectMeta) -> bool {
        self.covers_meta_after(m, 0)
    }

    /// Whether a ban newer than both the version `m` and `after` matches it: `after`
    /// is what an earlier look ([`Bans::newest`]) already checked.
    pub(crate) fn covers_meta_after(&self, m: &ObjectMeta, after: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        let list = self.list.read();
        covers_in(&list, &m.key, m.mtime_ns.max(after), || m.clone())
    }

    /// The newest ban's stamp (0 when there is none).
    pub(crate) fn newest(&self) -> u64 {
        self.list.read().last().map_or(0, |b| b.info.stamp)
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<Ban>> {
        self.list.read().clone()
    }

    pub(crate) fn infos(&self) -> Vec<BanInfo> {
        self.list.read().iter().map(|b| b.info.clone()).collect()
    }

    /// Replaces the list (the caller holds `write` and has persisted `new`).
    pub(crate) fn set(&self, new: Vec<Arc<Ban>>) {
        let mut l = self.list.write();
        self.active.store(new.len(), Ordering::Release);
        *l = new;
    }
}

/// Whether a ban in `list` (sorted by stamp) newer than `mtime_ns` matches.
pub(crate) fn covers_in(
    list: &[Arc<Ban>],
    key: &[u8],
    mtime_ns: u64,
    meta: impl FnOnce() -> ObjectMeta,
) -> bool {
    let mut decoded: Option<ObjectMeta> = None;
    let mut meta = Some(meta);
    for b in list.iter().rev() {
        if b.info.stamp <= mtime_ns {
            break;
        }
        if b.expr.uses_meta && decoded.is_none() {
            decoded = meta.take().map(|f| f());
        }
        if b.expr.matches(key, decoded.as_ref()) {
            return true;
        }
    }
    false
}

impl Ban {
    /// Whether the ban has no form a cold tier can hold ([`BanExpr::remote_form`]).
    pub(crate) fn is_local(&self) -> bool {
        self.expr.remote_form() == RemoteForm::Local
    }

    pub(crate) fn new(info: BanInfo) -> Result<Ban, BanError> {
        let expr = BanExpr::parse(&info.expr)?;
        Ok(Ban { info, expr })
    }

    pub(crate) fn with_expr(info: BanInfo, expr: BanExpr) -> Ban {
        Ban { info, expr }
    }
}

/// Name of the ban file in the data directory.
pub(crate) const BANS_FILE: &str = "BANS";
/// Its temporary name while it is replaced.
pub(crate) const BANS_TMP: &str = "BANS.tmp";
/// The fill floor's file, in the disk tier's data directory: `<ns> <xxh3-64 of the
/// decimal, 16 hex digits>` and a newline.
pub(crate) const FLOOR_FILE: &str = "FILLFLOOR";
pub(crate) const FLOOR_TMP: &str = "FILLFLOOR.tmp";
/// The local bans the lurker retired with a cold tier attached, kept to refuse the fills
/// they cover: the ban file's format, with its own magic.
pub(crate) const FILL_BANS_FILE: &str = "FILLBANS";
pub(crate) const FILL_BANS_TMP: &str = "FILLBANS.tmp";
/// Most retired bans kept for fills; beyond it the oldest go, and the fill floor rises
/// to the newest of those (docs/STORAGE.md, "On a host"). A fill of an old version is
/// matched against at most this many, under the catalog lock for those retired while
/// it was staged.
pub const MAX_FILL_BANS: usize = 1000;
const BANS_MAGIC: &[u8; 8] = b"OBJMBAN1";
const FILL_BANS_MAGIC: &[u8; 8] = b"OBJMFBN1";

/// Encodes the ban file (docs/STORAGE.md, "Bans").
pub(crate) fn encode_file(bans: &[Arc<Ban>]) -> Vec<u8> {
    encode_with(BANS_MAGIC, bans)
}

/// Decodes the ban file; `Err` names what is wrong.
pub(crate) fn decode_file(b: &[u8]) -> Result<Vec<Arc<Ban>>, String> {
    decode_with(BANS_MAGIC, b)
}

/// Encodes the file of retired bans kept for fills.
pub(crate) fn encode_fill_bans(bans: &[Arc<Ban>]) -> Vec<u8> {
    encode_with(FILL_BANS_MAGIC, bans)
}

/// Decodes the file of retired bans kept for fills.
pub(crate) fn decode_fill_bans(b: &[u8]) -> Result<Vec<Arc<Ban>>, String> {
    decode_with(FILL_BANS_MAGIC, b)
}

fn encode_with(magic: &[u8; 8], bans: &[Arc<Ban>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    out.extend_from_slice(&(bans.len() as u32).to_le_bytes());
    for b in bans {
        out.extend_from_slice(&b.info.stamp.to_le_bytes());
        out.extend_from_slice(&b.info.added_ns.to_le_bytes());
        out.extend_from_slice(&(b.info.expr.len() as u32).to_le_bytes());
        out.extend_from_slice(&b.info.expr);
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode_with(magic: &[u8; 8], b: &[u8]) -> Result<Vec<Arc<Ban>>, String> {
    if b.len() < 20 || &b[..8] != magic {
        return Err("not a ban file (bad magic or too short)".into());
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err("checksum mismatch".into());
    }
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let mut at = 12;
    let mut out: Vec<Arc<Ban>> = Vec::with_capacity(count.min(MAX_BANS));
    for i in 0..count {
        let head = body
            .get(at..at + 20)
            .ok_or_else(|| format!("ban {i} is truncated"))?;
        let stamp = u64::from_le_bytes(head[..8].try_into().expect("8"));
        let added_ns = u64::from_le_bytes(head[8..16].try_into().expect("8"));
        let len = u32::from_le_bytes(head[16..20].try_into().expect("4")) as usize;
        at += 20;
        let expr = body
            .get(at..at + len)
            .ok_or_else(|| format!("ban {i} is truncated"))?;
        at += len;
        if out.last().is_some_and(|p| p.info.stamp >= stamp) {
            return Err(format!("ban {i} is out of stamp order"));
        }
        let ban = Ban::new(BanInfo {
            stamp,
            added_ns,
            expr: expr.into(),
        })
        .map_err(|e| format!("ban {i} does not parse: {e}"))?;
        out.push(Arc::new(ban));
    }
    if at != body.len() {
        return Err("trailing bytes after the last ban".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
