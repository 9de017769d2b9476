//! The safe half of the VMOD: keys, the connection pool, lookups (hit / miss /
//! unavailable), the health check, and the tee that writes a fetched body into
//! objmapper with PUT (fd mode) + COMMIT. Nothing here touches Varnish; `sys` translates
//! between these types and Varnish's C structures.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use objmapper_client::{Client, Error, FdObject, GetOptions, Metadata, Mode, PutOptions};

/// How long one objmapper request may take before the fetch gives up on objmapper
/// (the VCL then falls back to the origin). Unix-socket round trips take microseconds:
/// this only bounds a daemon that is alive but stuck.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a health verdict is reused before the socket is probed again.
pub(crate) const HEALTH_TTL: Duration = Duration::from_secs(1);
/// Idle connections kept per backend object.
const POOL_MAX: usize = 64;

/// Custom metadata pair holding the HTTP status.
pub(crate) const META_STATUS: &str = "status";
/// Prefix of the custom metadata pairs holding HTTP headers (`h:<Name>` = value).
pub(crate) const META_HEADER: &str = "h:";
/// Response header the backend sets on every answer: `hit`, `miss` or `error`.
pub(crate) const RESULT_HEADER: &str = "X-Objmapper";
/// Request header that, when present, replaces host + URL in the key.
pub(crate) const KEY_HEADER: &str = "X-Objmapper-Key";

/// Headers never stored: they describe one transfer, not the object.
const HOP_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-objmapper",
];

/// One `objmapper.backend(...)` object: where the daemon is, the key prefix, a pool of
/// idle connections and the last health verdict.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    socket: PathBuf,
    prefix: String,
    pool: Mutex<Vec<Client>>,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    checked: Option<Instant>,
    healthy: bool,
    /// When the verdict last flipped, Unix seconds (what Varnish shows as "changed").
    changed: f64,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The object: its fd, where its bytes are, and the response to build.
    Hit { obj: FdObject, resp: StoredResponse },
    /// objmapper has no live object under the key.
    Miss,
    /// objmapper could not answer (down, stuck, or it refused); the reason.
    Unavailable(String),
}

/// The HTTP response stored with an object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

/// What the store filter needs to know about a response to write it.
#[derive(Debug)]
pub(crate) struct StoreRequest {
    pub(crate) key: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// `beresp.ttl` in seconds.
    pub(crate) ttl: f64,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Shared {
    pub(crate) fn new(name: &str, socket: &str, prefix: &str) -> Result<Shared, String> {
        if socket.is_empty() {
            return Err(format!(
                "objmapper.backend {name}: socket is empty; pass the daemon's Unix socket path, \
                 e.g. socket=\"/run/objmapper/objmapper.sock\""
            ));
        }
        Ok(Shared {
            name: name.to_owned(),
            socket: PathBuf::from(socket),
            prefix: prefix.to_owned(),
            pool: Mutex::new(Vec::new()),
            health: Mutex::new(Health {
                checked: None,
                healthy: false,
                changed: unix_now().as_secs_f64(),
            }),
        })
    }

    /// The key for a request: the prefix, then either the `X-Objmapper-Key` header's value
    /// or the Host header followed by the URL.
    pub(crate) fn key(
        &self,
        host: Option<&[u8]>,
        url: &[u8],
        key_header: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        match key_header {
            Some(v) => k.extend_from_slice(v),
            None => {
                k.extend_from_slice(host.unwrap_or_default());
                k.extend_from_slice(url);
            }
        }
        k
    }

    fn connect(&self) -> Result<Client, Error> {
        let mut c = Client::connect(&self.socket)?;
        c.set_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    /// A pooled connection, or a new one.
    fn client(&self) -> Result<(Client, bool), Error> {
        let pooled = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        match pooled {
            Some(c) => Ok((c, true)),
            None => self.connect().map(|c| (c, false)),
        }
    }

    fn put_back(&self, c: Client) {
        if c.is_usable() {
            if let Ok(mut p) = self.pool.lock() {
                if p.len() < POOL_MAX {
                    p.push(c);
                }
            }
        }
    }

    /// Runs `f` on a connection. A pooled connection that turns out dead (the daemon
    /// restarted since it was pooled) is replaced once by a fresh one.
    fn with_client<T>(&self, f: impl Fn(&mut Client) -> Result<T, Error>) -> Result<T, Error> {
        let (mut c, pooled) = self.client()?;
        let mut r = f(&mut c);
        if pooled && !c.is_usable() && matches!(r, Err(Error::Io(_) | Error::Closed)) {
            c = self.connect()?;
            r = f(&mut c);
        }
        self.put_back(c);
        r
    }

    /// Looks `key` up in fd mode.
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup {
        let opts = GetOptions::default().mode(Mode::Fd);
        match self.with_client(|c| c.get_with(key, &opts)) {
            Ok(objmapper_client::GetReply::Fd(obj)) => match stored_response(&obj.meta) {
                Ok(resp) => Lookup::Hit { obj, resp },
                Err(e) => Lookup::Unavailable(e),
            },
            Ok(objmapper_client::GetReply::Bytes(..)) => {
                Lookup::Unavailable("objmapper answered an fd-mode GET inline".into())
            }
            Err(e) if e.is_not_found() => Lookup::Miss,
            Err(e) => Lookup::Unavailable(e.to_string()),
        }
    }

    /// Whether the daemon answers a PING, probed at most once per [`HEALTH_TTL`], and
    /// when the verdict last changed (Unix seconds).
    pub(crate) fn healthy(&self) -> (bool, f64) {
        let mut h = match self.health.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        let fresh = h.checked.is_some_and(|t| t.elapsed() < HEALTH_TTL);
        if !fresh {
            let ok = self.with_client(|c| c.ping()).is_ok();
            if ok != h.healthy || h.checked.is_none() {
                h.changed = unix_now().as_secs_f64();
            }
            h.healthy = ok;
            h.checked = Some(Instant::now());
        }
        (h.healthy, h.changed)
    }

    /// Starts writing a response into objmapper: PUT in fd mode with the status, headers
    /// and expiry as metadata. `Ok(None)` when the response is not to be stored (a TTL
    /// that is already over).
    pub(crate) fn begin_store(&self, req: StoreRequest) -> Result<Option<Tee>, String> {
        if req.ttl.is_nan() || req.ttl < 1.0 {
            return Ok(None);
        }
        let size_hint = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let opts = put_options(&req)?;
        let mut c = self.connect().map_err(|e| e.to_string())?;
        let staging = c
            .begin_put(&req.key, size_hint, &opts)
            .map_err(|e| e.to_string())?;
        Ok(Some(Tee {
            client: Some(c),
            handle: staging.handle,
            file: File::from(staging.fd),
            written: 0,
            expected: (size_hint > 0).then_some(size_hint),
            state: TeeState::Writing,
        }))
    }

    /// Returns a tee's connection to the pool once it is done with it.
    pub(crate) fn recycle(&self, tee: &mut Tee) {
        if tee.state != TeeState::Writing {
            if let Some(c) = tee.client.take() {
                self.put_back(c);
            }
        }
    }
}

/// The PUT options for a response: status and headers as custom pairs, the content type,
/// and an expiry `ttl` seconds from now.
fn put_options(req: &StoreRequest) -> Result<PutOptions, String> {
    let mut custom = vec![(META_STATUS.to_owned(), req.status.to_string().into_bytes())];
    let mut content_type = None;
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        let meta_name = format!("{META_HEADER}{name}");
        if meta_name.len() > 255 {
            return Err(format!(
                "header name {name:?} is over 253 bytes; objmapper custom metadata names are \
                 at most 255 bytes"
            ));
        }
        if lower == "content-type" {
            content_type = std::str::from_utf8(value).ok().map(str::to_owned);
        }
        custom.push((meta_name, value.clone()));
    }
    let ttl = Duration::from_secs_f64(req.ttl);
    Ok(PutOptions {
        content_type: content_type.filter(|c| c.len() <= 255),
        custom,
        ..PutOptions::default()
    }
    .with_ttl(ttl))
}

/// The stored status and headers of an object, from its custom metadata pairs.
pub(crate) fn stored_response(meta: &Metadata) -> Result<StoredResponse, String> {
    let mut status = None;
    let mut headers = Vec::new();
    for (name, value) in &meta.custom {
        if name == META_STATUS {
            status = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|s| (100..1000).contains(s));
            if status.is_none() {
                return Err(format!(
                    "the object's {META_STATUS:?} metadata is {:?}, not an HTTP status; it was \
                     not stored by this VMOD",
                    String::from_utf8_lossy(value)
                ));
            }
        } else if let Some(h) = name.strip_prefix(META_HEADER) {
            headers.push((h.to_owned(), value.clone()));
        }
    }
    Ok(StoredResponse {
        // An object written by another client (objmapper put) is served as a plain 200.
        status: status.unwrap_or(200),
        headers,
    })
}

/// The Age to send with a hit: the stored Age (if any) plus the seconds since the
/// object was committed, so Varnish's TTL counts from when the origin answered.
pub(crate) fn age(resp: &StoredResponse, meta: &Metadata) -> u64 {
    let stored = resp
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("age"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let since = meta
        .mtime_ns
        .map(|ns| unix_now().as_secs().saturating_sub(ns / 1_000_000_000))
        .unwrap_or(0);
    stored + since
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum TeeState {
    Writing,
    Committed,
    Aborted,
}

/// A body on its way into objmapper: the staging file of an fd-mode PUT.
/// Dropped before [`Tee::finish`] succeeded, it aborts the PUT: nothing is published.
#[derive(Debug)]
pub(crate) struct Tee {
    client: Option<Client>,
    handle: u64,
    file: File,
    written: u64,
    expected: Option<u64>,
    pub(crate) state: TeeState,
}

impl Tee {
    /// Appends fetched bytes to the staging file. On failure the PUT is aborted and the
    /// reason returned; the fetch itself goes on.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.state != TeeState::Writing {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.abort();
            return Err(format!("writing the staging fd failed, PUT aborted: {e}"));
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// The body ended: COMMIT, unless fewer or more bytes came than Content-Length said.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        if self.state != TeeState::Writing {
            return Ok(());
        }
        if let Some(n) = self.expected.filter(|n| *n != self.written) {
            self.abort();
            return Err(format!(
                "the body had {} bytes, Content-Length said {n}: PUT aborted",
                self.written
            ));
        }
        let Some(c) = self.client.as_mut() else {
            self.state = TeeState::Aborted;
            return Err("no connection for COMMIT".into());
        };
        match c.commit(self.handle, self.written, &PutOptions::default()) {
            Ok(_) => {
                self.state = TeeState::Committed;
                Ok(())
            }
            Err(e) => {
                self.state = TeeState::Aborted;
                Err(format!("COMMIT failed: {e}"))
            }
        }
    }

    /// The fetch failed: discard the staged PUT.
    pub(crate) fn abort(&mut self) {
        if self.state == TeeState::Writing {
            self.state = TeeState::Aborted;
            if let Some(c) = self.client.as_mut() {
                // Best effort: if this fails the connection is dropped, and the server
                // discards every PUT staged on a closed connection.
                if c.abort(self.handle).is_err() {
                    self.client = None;
                }
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(prefix: &str) -> Shared {
        Shared::new("s", "/nonexistent/objmapper.sock", prefix).unwrap()
    }

    #[test]
    fn key_is_prefix_host_url_or_the_override() {
        let s = shared("v1:");
        assert_eq!(
            s.key(Some(b"example.com"), b"/a?b", None),
            b"v1:example.com/a?b"
        );
        assert_eq!(s.key(None, b"/a", None), b"v1:/a");
        assert_eq!(s.key(Some(b"h"), b"/a", Some(b"custom")), b"v1:custom");
    }

    #[test]
    fn empty_socket_is_refused_with_a_hint() {
        let e = Shared::new("store", "", "").unwrap_err();
        assert!(e.contains("socket is empty"), "{e}");
    }

    #[test]
    fn down_daemon_is_unavailable_and_unhealthy() {
        let s = shared("");
        match s.lookup(b"k") {
            Lookup::Unavailable(msg) => assert!(msg.contains("cannot connect"), "{msg}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(!s.healthy().0);
    }

    #[test]
    fn metadata_round_trip_keeps_status_and_headers_drops_hop_headers() {
        let req = StoreRequest {
            key: b"k".to_vec(),
            status: 203,
            headers: vec![
                ("Content-Type".into(), b"text/html".to_vec()),
                ("Content-Length".into(), b"5".to_vec()),
                ("Set-Cookie".into(), b"a=1".to_vec()),
                ("Set-Cookie".into(), b"b=2".to_vec()),
                ("Transfer-Encoding".into(), b"chunked".to_vec()),
            ],
            ttl: 60.0,
        };
        let opts = put_options(&req).unwrap();
        assert_eq!(opts.content_type.as_deref(), Some("text/html"));
        assert!(opts.expires_at.is_some());
        let meta = Metadata {
            custom: opts.custom,
            ..Metadata::default()
        };
        let resp = stored_response(&meta).unwrap();
        assert_eq!(resp.status, 203);
        assert_eq!(
            resp.headers,
            vec![
                ("Content-Type".to_owned(), b"text/html".to_vec()),
                ("Set-Cookie".to_owned(), b"a=1".to_vec()),
                ("Set-Cookie".to_owned(), b"b=2".to_vec()),
            ]
        );
    }

    #[test]
    fn a_bad_stored_status_is_an_error() {
        let meta = Metadata {
            custom: vec![(META_STATUS.into(), b"abc".to_vec())],
            ..Metadata::default()
        };
        let e = stored_response(&meta).unwrap_err();
        assert!(e.contains("not an HTTP status"), "{e}");
    }

    #[test]
    fn an_overlong_header_name_is_refused() {
        let req = StoreRequest {
            key: b"k".to_vec(),
            status: 200,
            headers: vec![("x".repeat(300), b"v".to_vec())],
            ttl: 60.0,
        };
        assert!(put_options(&req).unwrap_err().contains("over 253 bytes"));
    }

    #[test]
    fn zero_ttl_is_not_stored() {
        let s = shared("");
        let req = StoreRequest {
            key: b"k".to_vec(),
            status: 200,
            headers: vec![],
            ttl: 0.0,
        };
        assert!(s.begin_store(req).unwrap().is_none());
    }

    #[test]
    fn age_adds_stored_age_and_time_since_commit() {
        let resp = StoredResponse {
            status: 200,
            headers: vec![("Age".into(), b"10".to_vec())],
        };
        let meta = Metadata {
            mtime_ns: Some((unix_now().as_secs() - 5) * 1_000_000_000),
            ..Metadata::default()
        };
        let a = age(&resp, &meta);
        assert!((15..=16).contains(&a), "{a}");
    }
}
