//! The object commands: put, get, rm, stat, pin, unpin, ping.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use objmapper_client::{
    DeleteOptions, GetOptions, GetReply, Metadata, Mode, ObjectState, PutOptions, Status, Transport,
};

use crate::args::{GetArgs, KeyArgs, PingArgs, PutArgs, RmArgs, StatArgs};
use crate::connect::{key_bytes, open_stream, open_target, resolve, stream_only, Conn, Target};
use crate::copy;
use crate::fmt::{bytes_text, json_str, rfc3339_utc, rfc3339_utc_secs};

/// Where `put` reads from.
enum Input {
    Stdin,
    File(File, PathBuf),
}

impl Input {
    fn open(path: &Path) -> Result<Input> {
        if path.as_os_str() == "-" {
            return Ok(Input::Stdin);
        }
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Input::File(f, path.to_owned()))
    }

    fn name(&self) -> String {
        match self {
            Input::Stdin => "stdin".into(),
            Input::File(_, p) => p.display().to_string(),
        }
    }

    fn with_fd<T>(&self, f: impl FnOnce(BorrowedFd<'_>) -> T) -> T {
        match self {
            Input::Stdin => f(io::stdin().as_fd()),
            Input::File(file, _) => f(file.as_fd()),
        }
    }

    /// Size of a regular file from its current position; 0 (unknown) for anything else.
    fn size_hint(&self) -> u64 {
        self.with_fd(|fd| {
            let Ok(st) = rustix::fs::fstat(fd) else {
                return 0;
            };
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return 0;
            }
            let pos = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).unwrap_or(0);
            (st.st_size as u64).saturating_sub(pos)
        })
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.size_hint().min(1 << 30) as usize);
        match self {
            Input::Stdin => io::stdin().lock().read_to_end(&mut v)?,
            Input::File(f, _) => f.read_to_end(&mut v)?,
        };
        Ok(v)
    }
}

/// `objmapper put KEY FILE|-`.
pub fn put(a: PutArgs) -> Result<()> {
    if a.recursive {
        return crate::bulk::put_recursive(a);
    }
    let (target, mode) = stream_only(&a.conn, "put")?;
    let key = key_bytes(&a.key);
    let mut input = Input::open(Path::new(&a.file))?;
    let mut opts = put_options(&a);
    // A PUT carries the bytes one way or the other: auto (a GET-side choice) means best.
    let mode = put_mode(mode, &target);
    let mut c = open_stream(&target, None)?;
    if let Some(ttl) = a.ttl {
        // From now, not from when the command started: stdin may take a while.
        opts = opts.with_ttl(ttl);
    }
    let meta = if mode == Mode::Fd {
        // Stage into the server's memfd without the bytes crossing the socket.
        let staging = c.begin_put(key, input.size_hint(), &opts)?;
        let copied = input.with_fd(|src| copy::copy(src, None, staging.fd.as_fd(), None));
        drop(staging.fd);
        let len = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = c.abort(staging.handle);
                return Err(anyhow!("reading {}: {e}", input.name()));
            }
        };
        // The flags and condition went with the PUT (the server remembers them); send them
        // again so the COMMIT alone says how to publish (the condition is checked now).
        // Its empty metadata keeps the PUT's.
        c.commit(staging.handle, len, &opts.flags_only())?
    } else {
        let bytes = input
            .read_all()
            .with_context(|| format!("reading {}", input.name()))?;
        c.put_inline(key, &bytes, &opts, mode)?
    };
    if a.verbose {
        println!(
            "stored {} ({} bytes, version {}, {mode} mode)",
            bytes_text(key),
            meta.size.map_or("?".into(), |s| s.to_string()),
            meta.version.map_or("?".into(), |v| v.to_string()),
        );
    }
    Ok(())
}

/// The options `put` sends with every object (its TTL is added when the bytes are read).
pub fn put_options(a: &PutArgs) -> PutOptions {
    PutOptions {
        durable: a.durable,
        ephemeral: a.ephemeral,
        pinned: a.pin,
        expires_at: a.expires_at,
        content_type: a.content_type.clone(),
        custom: a
            .meta
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect(),
        if_version: a.if_version,
        if_absent: a.if_absent,
    }
}

/// The mode a PUT uses: the bytes travel one way or the other, so auto (a GET-side
/// choice) means best (fd on the Unix socket, else copy).
pub fn put_mode(mode: Mode, target: &crate::connect::Target) -> Mode {
    match mode {
        Mode::Auto if target.transport() == Transport::Unix => Mode::Fd,
        Mode::Auto => Mode::Copy,
        m => m,
    }
}

/// Where `get` writes to.
enum Output {
    Stdout(io::Stdout),
    File(File, PathBuf),
}

impl Output {
    fn open(path: Option<&Path>) -> Result<Output> {
        Ok(match path {
            None => Output::Stdout(io::stdout()),
            Some(p) => Output::File(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                p.to_owned(),
            ),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Output::Stdout(s) => s.as_fd(),
            Output::File(f, _) => f.as_fd(),
        }
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout(_) => "stdout".into(),
            Output::File(_, p) => p.display().to_string(),
        }
    }

    /// Removes a partly written output file after an error.
    fn discard(self) {
        if let Output::File(f, p) = self {
            drop(f);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `objmapper get KEY [-o FILE] [--range START-END]`.
pub fn get(a: GetArgs) -> Result<()> {
    let (target, mode) = resolve(&a.conn)?;
    let key = key_bytes(&a.key);
    // Ask first, so a missing key does not leave an empty output file behind.
    let reply = match open_target(&target)? {
        Conn::Stream(mut c) => c.get_with(
            key,
            &GetOptions {
                mode: Some(mode),
                range: a.range,
            },
        )?,
        Conn::Udp(mut u) => {
            let (bytes, meta) = match a.range {
                Some((off, len)) => u.get_range(key, off, len)?,
                None => u.get(key)?,
            };
            GetReply::Bytes(bytes, meta)
        }
    };
    let out = Output::open(a.output.as_deref())?;
    let res = match &reply {
        GetReply::Fd(obj) => {
            copy::copy(obj.fd.as_fd(), Some(obj.offset), out.fd(), Some(obj.length))
                .map(drop)
                .map_err(|e| anyhow!("copying the object to {}: {e}", out.name()))
        }
        GetReply::Bytes(bytes, _) => copy::write_all(out.fd(), bytes)
            .map_err(|e| anyhow!("writing to {}: {}", out.name(), io::Error::from(e))),
    };
    if let Err(e) = res {
        out.discard();
        return Err(e);
    }
    Ok(())
}

/// `objmapper rm KEY`.
pub fn rm(a: RmArgs) -> Result<()> {
    let (target, _) = stream_only(&a.conn, "rm")?;
    let mut c = open_stream(&target, None)?;
    let opts = DeleteOptions {
        durable: a.durable,
        if_version: a.if_version,
    };
    found(c.delete_with(key_bytes(&a.key), &opts)?)
}

/// `objmapper pin KEY`.
pub fn pin(a: KeyArgs) -> Result<()> {
    let (target, _) = stream_only(&a.conn, "pin")?;
    let mut c = open_stream(&target, None)?;
    found(c.pin(key_bytes(&a.key))?)
}

/// `objmapper unpin KEY`.
pub fn unpin(a: KeyArgs) -> Result<()> {
    let (target, _) = stream_only(&a.conn, "unpin")?;
    let mut c = open_stream(&target, None)?;
    found(c.unpin(key_bytes(&a.key))?)
}

fn found(found: bool) -> Result<()> {
    if found {
        Ok(())
    } else {
        Err(anyhow!(
            "{}: nothing stored under that key",
            Status::NotFound
        ))
    }
}

/// What `stat` knows of an object's upload to the remote tier. The object protocol
/// does not say, so it is asked of the management API next to the Unix socket.
enum Upload {
    /// Not asked: `stat` went over TCP or UDP, where no management API is implied.
    NotAsked,
    /// The server has no remote tier.
    NoTier,
    /// Whether the version is not on the tier yet: its upload waits or is being sent.
    Pending(bool),
    /// Read through from the tier: another host's write, never uploaded from here.
    Filled,
    /// The management API did not answer (why).
    Unknown(String),
}

impl Upload {
    /// Asks the management API of the server at `target` (`--socket` + `.admin`, or
    /// `OBJMAPPER_ADMIN`), if it is a Unix socket.
    fn ask(target: &Target, key: &[u8]) -> Upload {
        let Target::Unix(socket) = target else {
            return Upload::NotAsked;
        };
        let ep = crate::admin::Endpoint::of(&crate::args::AdminArgs {
            socket: socket.clone(),
            admin: std::env::var("OBJMAPPER_ADMIN")
                .ok()
                .filter(|v| !v.is_empty()),
            json: false,
        });
        match crate::admin::upload_pending(&ep, key) {
            Ok(Some((_, true))) => Upload::Filled,
            Ok(Some((p, false))) => Upload::Pending(p),
            Ok(None) => Upload::NoTier,
            Err(e) => Upload::Unknown(format!("{e:#}")),
        }
    }

    /// The `remote:` line, if there is something to say.
    fn line(&self, ephemeral: bool) -> Option<String> {
        Some(match self {
            Upload::NotAsked | Upload::NoTier => return None,
            Upload::Pending(true) => "remote: upload pending".into(),
            Upload::Filled => {
                "remote: read through from the remote tier (another host's write)".into()
            }
            Upload::Pending(false) if ephemeral => "remote: not uploaded (ephemeral)".into(),
            // No record is kept of an upload dropped from a full queue (counted and
            // logged): `objmapper remote check` asks the tier itself.
            Upload::Pending(false) => {
                "remote: uploaded (no upload pending, unless a full upload queue dropped it)".into()
            }
            Upload::Unknown(why) => format!("remote: unknown ({why})"),
        })
    }

    /// The `"remote"` field of `stat --json`.
    fn json(&self) -> String {
        match self {
            Upload::NotAsked => "null".into(),
            Upload::NoTier => "\"off\"".into(),
            Upload::Pending(p) => format!("{{\"upload_pending\":{p}}}"),
            Upload::Filled => "{\"upload_pending\":false,\"filled\":true}".into(),
            Upload::Unknown(why) => format!("{{\"unknown\":{}}}", json_str(why)),
        }
    }
}

/// `objmapper stat KEY`: the object protocol's HEAD, and whether the object is uploaded
/// to the remote tier where the management API can say.
pub fn stat(a: StatArgs) -> Result<()> {
    let (target, _) = resolve(&a.conn)?;
    let key = key_bytes(&a.key);
    let meta = match open_target(&target)? {
        Conn::Stream(mut c) => c.head(key)?,
        Conn::Udp(mut u) => u.head(key)?,
    };
    let upload = Upload::ask(&target, key);
    let text = if a.json {
        stat_json(key, &meta, &upload)
    } else {
        let mut s = stat_lines(&meta);
        let ephemeral = meta.state.is_some_and(|st| st.ephemeral());
        if let Some(l) = upload.line(ephemeral) {
            s += &l;
            s.push('\n');
        }
        s
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `name: value` lines, one per field that the server sent.
fn stat_lines(m: &Metadata) -> String {
    let mut s = String::new();
    if let Some(v) = m.size {
        s += &format!("size: {v}\n");
    }
    if let Some(v) = m.version {
        s += &format!("version: {v}\n");
    }
    if let Some(v) = m.mtime_ns {
        s += &format!("mtime: {}\n", rfc3339_utc(v));
        s += &format!("mtime_ns: {v}\n");
    }
    if let Some(v) = m.checksum {
        s += &format!("checksum: xxh3-64:{v:016x}\n");
    }
    if let Some(v) = &m.content_type {
        s += &format!("content-type: {v}\n");
    }
    match m.expires_at {
        Some(v) => {
            s += &format!("expires: {}\n", rfc3339_utc_secs(v));
            s += &format!("expires_unix: {v}\n");
        }
        // A server that reports tiers would have sent EXPIRES if there were one.
        None if m.tier.is_some() || m.state.is_some() => s += "expires: never\n",
        None => {}
    }
    if let Some(t) = m.tier {
        s += &format!("tier: {t}\n");
    }
    if let Some(st) = m.state {
        let yn = |b: bool| if b { "yes" } else { "no" };
        s += &format!("pinned: {}\n", yn(st.pinned()));
        s += &format!("ephemeral: {}\n", yn(st.ephemeral()));
        s += &format!("dirty: {}\n", yn(st.dirty()));
    }
    for (name, value) in &m.custom {
        s += &format!("meta.{name}: {}\n", bytes_text(value));
    }
    s
}

fn stat_json(key: &[u8], m: &Metadata, upload: &Upload) -> String {
    let num = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let custom: Vec<String> = m
        .custom
        .iter()
        .map(|(n, v)| {
            format!(
                "{{\"name\":{},\"value\":{}}}",
                json_str(n),
                json_str(&String::from_utf8_lossy(v))
            )
        })
        .collect();
    let flag = |f: fn(ObjectState) -> bool| m.state.map_or("null".into(), |s| f(s).to_string());
    format!(
        "{{\"key\":{},\"size\":{},\"version\":{},\"mtime\":{},\"mtime_ns\":{},\"checksum\":{},\
         \"content_type\":{},\"expires\":{},\"expires_unix\":{},\"tier\":{},\"pinned\":{},\
         \"ephemeral\":{},\"dirty\":{},\"custom\":[{}],\"remote\":{}}}\n",
        json_str(&String::from_utf8_lossy(key)),
        num(m.size),
        num(m.version),
        m.mtime_ns
            .map_or("null".into(), |v| json_str(&rfc3339_utc(v))),
        num(m.mtime_ns),
        m.checksum
            .map_or("null".into(), |v| json_str(&format!("{v:016x}"))),
        m.content_type.as_deref().map_or("null".into(), json_str),
        m.expires_at
            .map_or("null".into(), |v| json_str(&rfc3339_utc_secs(v))),
        num(m.expires_at),
        m.tier.map_or("null".into(), |t| json_str(t.name())),
        flag(ObjectState::pinned),
        flag(ObjectState::ephemeral),
        flag(ObjectState::dirty),
        custom.join(","),
        upload.json(),
    )
}

/// `objmapper ping`.
pub fn ping(a: PingArgs) -> Result<()> {
    let (target, _) = resolve(&a.conn)?;
    let mut conn = open_target(&target)?;
    let t = Instant::now();
    match &mut conn {
        Conn::Stream(c) => c.ping()?,
        Conn::Udp(u) => u.ping()?,
    }
    let us = t.elapsed().as_secs_f64() * 1e6;
    println!("ok: {} answered in {us:.0} us", target.describe());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use objmapper_client::Tier;

    fn meta() -> Metadata {
        Metadata {
            size: Some(5),
            version: Some(42),
            mtime_ns: Some(1_700_000_000_123_456_789),
            checksum: Some(0xdead_beef),
            content_type: Some("text/plain".into()),
            expires_at: Some(1_900_000_000),
            tier: Some(Tier::Both),
            state: Some(ObjectState::new(true, false, true)),
            custom: vec![("lang".into(), b"en".to_vec()), ("raw".into(), vec![0xff])],
        }
    }

    #[test]
    fn stat_text() {
        assert_eq!(
            stat_lines(&meta()),
            "size: 5\nversion: 42\nmtime: 2023-11-14T22:13:20.123456789Z\n\
             mtime_ns: 1700000000123456789\nchecksum: xxh3-64:00000000deadbeef\n\
             content-type: text/plain\nexpires: 2030-03-17T17:46:40Z\n\
             expires_unix: 1900000000\ntier: both\npinned: yes\nephemeral: no\ndirty: yes\n\
             meta.lang: en\nmeta.raw: \\xff\n"
        );
        let no_expiry = Metadata {
            expires_at: None,
            ..meta()
        };
        assert!(stat_lines(&no_expiry).contains("\nexpires: never\n"));
        // An older server without tiers: no expiry line at all.
        assert!(!stat_lines(&Metadata::default()).contains("expires"));
    }

    #[test]
    fn a_read_through_copy_says_so() {
        let l = Upload::Filled.line(false).unwrap();
        assert_eq!(
            l,
            "remote: read through from the remote tier (another host's write)"
        );
        assert!(stat_json(b"/a", &meta(), &Upload::Filled)
            .contains("\"remote\":{\"upload_pending\":false,\"filled\":true}"));
    }

    #[test]
    fn stat_as_json() {
        let j = stat_json(b"/a", &meta(), &Upload::Pending(false));
        assert!(
            j.starts_with("{\"key\":\"/a\",\"size\":5,\"version\":42,"),
            "{j}"
        );
        assert!(j.contains("\"checksum\":\"00000000deadbeef\""), "{j}");
        assert!(j.contains("{\"name\":\"lang\",\"value\":\"en\"}"), "{j}");
        assert!(
            j.contains(
                "\"expires\":\"2030-03-17T17:46:40Z\",\"expires_unix\":1900000000,\
                 \"tier\":\"both\",\"pinned\":true,\"ephemeral\":false,\"dirty\":true,"
            ),
            "{j}"
        );
        assert!(
            j.ends_with(",\"remote\":{\"upload_pending\":false}}\n"),
            "{j}"
        );
        let empty = stat_json(b"k", &Metadata::default(), &Upload::NotAsked);
        assert!(empty.ends_with(",\"remote\":null}\n"), "{empty}");
        assert!(empty.contains("\"size\":null"), "{empty}");
        assert!(
            empty.contains("\"expires\":null,\"expires_unix\":null,\"tier\":null,\"pinned\":null"),
            "{empty}"
        );
    }
}
