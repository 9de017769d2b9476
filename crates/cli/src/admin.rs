//! The management API commands: `ls`, `info`, `stats`, `migrate`, `purge`, `verify`,
//! `config`.
//! Each is one or a few HTTP requests (hyper's client over the Unix socket or loopback
//! TCP, on a current-thread tokio runtime), printed as an aligned table or, with
//! `--json`, as the API's JSON.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::args::{
    parse_size, AdminArgs, BanArgs, ConfigArgs, ConfigCommand, InfoArgs, LsArgs, MigrateArgs,
    PurgeArgs, VerifyArgs,
};
use crate::fmt::rfc3339_utc_secs;
use crate::UsageError;

/// Where the management API listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// Loopback TCP, `HOST:PORT`.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

impl Endpoint {
    /// `--admin` if given (a path, or HOST:PORT), else `--socket` + `.admin`.
    pub fn of(a: &AdminArgs) -> Endpoint {
        match &a.admin {
            Some(s) if !s.contains('/') && s.parse::<std::net::SocketAddr>().is_ok() => {
                Endpoint::Tcp(s.clone())
            }
            Some(s)
                if !s.contains('/')
                    && s.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Endpoint::Tcp(s.clone())
            }
            Some(s) => Endpoint::Unix(PathBuf::from(s)),
            None => Endpoint::Unix(objmapper_server::admin_sibling(&a.socket)),
        }
    }
}

/// An answer: the HTTP status and the body parsed as JSON (or the raw text).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// One request to the API, waiting at most `--timeout` for the connection and the
/// answer. Non-2xx answers come back as `Ok` too; see [`checked`].
pub fn request(ep: &Endpoint, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
    request_within(ep, method, path, body, crate::connect::timeout())
}

/// [`request`] with its own limit (`None`: wait as long as the server works).
pub fn request_within(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Option<std::time::Duration>,
) -> Result<Reply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP client runtime")?;
    let work = request_async(ep, method, path, body);
    rt.block_on(async {
        match limit {
            None => work.await,
            Some(t) => tokio::time::timeout(t, work).await.unwrap_or_else(|_| {
                Err(anyhow!(
                    "the management API at {ep} did not answer {method} {path} within {} s \
                     (timed out): the server is not running, still starting, stuck or \
                     overloaded; check it (`systemctl status objmapper`, its log), or wait \
                     longer with --timeout",
                    t.as_secs_f64()
                ))
            }),
        }
    })
}

async fn request_async(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply> {
    {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "objmapper");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .context("building the request")?;
        let resp = match ep {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                    format!(
                        "cannot reach the management API at {} (is the server running, with \
                         its management API on? --admin overrides the path)",
                        p.display()
                    )
                })?;
                send(hyper_util::rt::TokioIo::new(s), req).await?
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .with_context(|| format!("cannot reach the management API at {a}"))?;
                send(hyper_util::rt::TokioIo::new(s), req).await?
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body, text })
    }
}

async fn send<I>(
    io: I,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the management API")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .context("the management API did not answer")
}

/// The body of a 2xx answer, or the API's error as an error.
pub fn checked(r: Reply) -> Result<Value> {
    if (200..300).contains(&r.status) {
        return Ok(r.body);
    }
    let e = &r.body["error"];
    match (e["code"].as_str(), e["message"].as_str()) {
        (Some(code), Some(msg)) => Err(anyhow!("{}: {msg}", code.to_ascii_uppercase())),
        _ => Err(anyhow!("HTTP {}: {}", r.status, r.text.trim())),
    }
}

fn call(a: &AdminArgs, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    checked(request(&Endpoint::of(a), method, path, body)?)
}

/// Characters left as they are in a percent-encoded key: the unreserved set.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn pct(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, KEEP).to_string()
}

pub(crate) fn key_bytes(k: &OsString) -> Vec<u8> {
    k.as_bytes().to_vec()
}

/// `"key"` as text when it is UTF-8, else `"key_hex"`.
pub(crate) fn key_field(name: &str, k: &[u8]) -> (String, Value) {
    match std::str::from_utf8(k) {
        Ok(s) => (name.to_string(), json!(s)),
        Err(_) => (
            format!("{name}_hex"),
            json!(k.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        ),
    }
}

pub(crate) fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// An aligned table: the header, then the rows; numeric columns right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i > 0 {
                l.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for r in rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn show_key(o: &Value) -> String {
    match o["key"].as_str() {
        Some(k) => k.escape_debug().to_string(),
        None => format!("hex:{}", o["key_hex"].as_str().unwrap_or("")),
    }
}

fn show_time(v: &Value) -> String {
    v.as_u64().map_or("-".into(), rfc3339_utc_secs)
}

pub fn ls(a: LsArgs) -> Result<()> {
    let prefix = a.prefix.as_ref().map(key_bytes).unwrap_or_default();
    let mut cursor: Option<String> = None;
    let mut objects = Vec::new();
    loop {
        let want = a.limit.map_or(1000, |l| (l - objects.len()).clamp(1, 1000));
        let mut path = format!("/v1/objects?limit={want}&prefix={}", pct(&prefix));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", pct(c.as_bytes())));
        }
        let page = call(&a.admin, "GET", &path, None)?;
        if let Some(list) = page["objects"].as_array() {
            objects.extend(list.iter().cloned());
        }
        if a.limit.is_some_and(|l| objects.len() >= l) {
            objects.truncate(a.limit.unwrap_or(usize::MAX));
            break;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    if a.admin.json {
        return print_json(&json!({ "objects": objects }));
    }
    objects.sort_by(|x, y| x["key_hex"].as_str().cmp(&y["key_hex"].as_str()));
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            vec![
                show_key(o),
                o["size"].as_u64().unwrap_or(0).to_string(),
                o["tier"].as_str().unwrap_or("?").to_string(),
                if o["pinned"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                show_time(&o["expires_at"]),
                o["version"].as_u64().unwrap_or(0).to_string(),
                show_time(&o["last_access"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "KEY",
                "SIZE",
                "TIER",
                "PINNED",
                "EXPIRES",
                "VERSION",
                "LAST ACCESS"
            ],
            &rows,
            &[false, true, false, false, false, true, false],
        )
    );
    Ok(())
}

pub fn info(a: InfoArgs) -> Result<()> {
    let k = key_bytes(&a.key);
    let o = call(&a.admin, "GET", &format!("/v1/objects/{}", pct(&k)), None)?;
    if a.admin.json {
        return print_json(&o);
    }
    let mut rows = vec![
        vec!["key".into(), show_key(&o)],
        vec!["size".into(), o["size"].as_u64().unwrap_or(0).to_string()],
        vec![
            "version".into(),
            o["version"].as_u64().unwrap_or(0).to_string(),
        ],
        vec!["tier".into(), o["tier"].as_str().unwrap_or("?").into()],
        vec!["on disk".into(), o["on_disk"].to_string()],
        vec!["pinned".into(), o["pinned"].to_string()],
        vec!["ephemeral".into(), o["ephemeral"].to_string()],
        vec!["dirty".into(), o["dirty"].to_string()],
        vec!["expires".into(), show_time(&o["expires_at"])],
        vec!["mtime".into(), show_time(&o["mtime"])],
        vec!["last access".into(), show_time(&o["last_access"])],
        vec![
            "checksum".into(),
            o["checksum"].as_str().unwrap_or("").into(),
        ],
        vec![
            "content type".into(),
            o["content_type"].as_str().unwrap_or("-").into(),
        ],
    ];
    // Only from a server with a remote tier.
    if let Some(p) = o["remote"]["upload_pending"].as_bool() {
        rows.push(vec!["remote upload pending".into(), p.to_string()]);
        if o["filled"].as_bool() == Some(true) {
            rows.push(vec!["read through".into(), "true".into()]);
        }
    }
    if let Some(m) = o["custom"].as_object() {
        for (k, v) in m {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            rows.push(vec![format!("meta {k}"), v]);
        }
    }
    print!("{}", table(&["FIELD", "VALUE"], &rows, &[false, false]));
    Ok(())
}

/// Whether `key`'s version waits for its upload to the remote tier, and whether it
/// was read through from there (another host's write, never uploaded from here), asked
/// of the management API at `ep` (`GET /v1/objects/{key}`); `None` from a server
/// without a remote tier (or when the key is gone meanwhile).
pub fn upload_pending(ep: &Endpoint, key: &[u8]) -> Result<Option<(bool, bool)>> {
    let r = request(ep, "GET", &format!("/v1/objects/{}", pct(key)), None)?;
    if r.status == 404 {
        return Ok(None);
    }
    let o = checked(r)?;
    let filled = o["filled"].as_bool().unwrap_or(false);
    Ok(o["remote"]["upload_pending"].as_bool().map(|p| (p, filled)))
}

pub fn stats(a: AdminArgs) -> Result<()> {
    let s = call(&a, "GET", "/v1/stats", None)?;
    if a.json {
        return print_json(&s);
    }
    print!("{}", render_stats(&s));
    Ok(())
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The remote tier's state in words: what `state` says (a server that predates it
/// has only `reachable`).
fn remote_state(r: &serde_json::Value) -> &'static str {
    match r["state"].as_str() {
        Some("ok") => "reachable",
        Some("refused") => "REFUSING THIS HOST: check the credentials and the bucket's policy",
        Some("no_bucket") => "NO SUCH BUCKET at the endpoint",
        Some("purge_set_damaged") => "PURGE SET DAMAGED: nothing is read through; see the log",
        Some("unguarded") => {
            "STORE IGNORES CONDITIONAL WRITES: nothing is read through or uploaded; see the log"
        }
        Some("conflicting") => {
            "REFUSING WRITES OVER EXISTING OBJECTS (412 at every attempt): likely a gateway \
             whose ETags If-Match does not take; see the log"
        }
        Some(_) => "NOT ANSWERING",
        None if r["reachable"] == true => "reachable",
        None => "NOT ANSWERING",
    }
}

/// The human form of `GET /v1/stats`.
pub fn render_stats(s: &Value) -> String {
    let mut out = String::new();
    if let Some(host) = s["host_id"].as_str() {
        let _ = writeln!(out, "host {host}");
    }
    let _ = writeln!(
        out,
        "uptime {}s, {} objects, {}, hit ratio {:.3} ({} hits, {} misses){}\n",
        n(&s["uptime_seconds"]),
        n(&s["objects"]),
        human_bytes(n(&s["bytes"])),
        s["hit_ratio"].as_f64().unwrap_or(0.0),
        n(&s["hits"]),
        n(&s["misses"]),
        if s["poisoned"].as_bool() == Some(true) {
            ", STORE POISONED (read-only)"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = ["memory", "disk"]
        .iter()
        .map(|t| {
            let x = &s["tiers"][*t];
            vec![
                t.to_string(),
                n(&x["objects"]).to_string(),
                human_bytes(n(&x["bytes"])),
                human_bytes(n(&x["capacity_bytes"])),
                human_bytes(n(&x["free_bytes"])),
                format!("{:.1}%", x["fill_ratio"].as_f64().unwrap_or(0.0) * 100.0),
                n(&x["hits"]).to_string(),
                n(&x["evictions"]).to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TIER",
            "OBJECTS",
            "USED",
            "CAPACITY",
            "FREE",
            "FILL",
            "HITS",
            "EVICTIONS",
        ],
        &rows,
        &[false, true, true, true, true, true, true, true],
    ));
    let body = |t: &str| {
        let x = &s["tiers"][t]["body_cache_bytes"];
        let o = &s["tiers"][t]["body_cache_objects"];
        format!("{t} {} ({} objects)", human_bytes(n(x)), n(o))
    };
    if s["tiers"]["memory"]["body_cache_bytes"].is_u64() {
        let _ = writeln!(
            out,
            "body cache (small objects' bytes kept in memory): {}, {}",
            body("memory"),
            body("disk")
        );
    }
    let r = &s["remote"];
    if r.is_object() {
        let _ = writeln!(
            out,
            "remote {} ({}): {} hits, {} misses, {} fills ({} refused here, {} fetching, {} \
             misses refused at the fetch bound), queue {} objects ({}, oldest {:.1} s), {} \
             dropped, {} deletes/purges pending, {} up, {} down",
            r["name"].as_str().unwrap_or("?"),
            remote_state(r),
            n(&r["hits"]),
            n(&r["misses"]),
            n(&r["fills"]),
            n(&r["fills_refused"]),
            n(&r["fetches_running"]),
            n(&r["fetches_refused"]),
            n(&r["queue"]["objects"]),
            human_bytes(n(&r["queue"]["bytes"])),
            r["queue"]["oldest_seconds"].as_f64().unwrap_or(0.0),
            n(&r["queue"]["dropped"]),
            n(&r["invalidations_pending"]),
            human_bytes(n(&r["bytes_up"])),
            human_bytes(n(&r["bytes_down"])),
        );
        if let (false, Some(e)) = (r["state"] == "ok", r["last_error"].as_str()) {
            let _ = writeln!(out, "remote tier's last error: {e}");
        }
        let sw = &r["swept"];
        if n(&sw["orphans"]) + n(&sw["reclaimed"]) + n(&sw["purges_retired"]) > 0 {
            let _ = writeln!(
                out,
                "bucket swept by this host: {} orphaned data objects deleted ({}), {} expired \
                 or purged versions reclaimed ({}), {} purges retired",
                n(&sw["orphans"]),
                human_bytes(n(&sw["orphan_bytes"])),
                n(&sw["reclaimed"]),
                human_bytes(n(&sw["reclaimed_bytes"])),
                n(&sw["purges_retired"]),
            );
        }
    }
    let m = &s["tiers"]["memory"];
    if let (Some(true), Some(fs), Some(huge)) = (
        m["enabled"].as_bool(),
        m["filesystem"].as_str(),
        m["huge_pages"].as_str(),
    ) {
        let _ = writeln!(out, "memory tier on {fs}, huge pages: {huge}");
    }
    if m["enabled"].as_bool() == Some(true) && m["in_ram"].as_bool() == Some(false) {
        let _ = writeln!(
            out,
            "WARNING: the memory tier is not in RAM: {} is on {}, so its objects are \
             written to that disk and PUTs are slower; point --mem-dir at a tmpfs",
            m["dir"].as_str().unwrap_or("?"),
            m["filesystem"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(
        out,
        "\npromotions {}  flushes {}  flush errors {}  expirations {}  no space {}  dirty {}",
        n(&s["promotions"]),
        n(&s["flushes"]),
        n(&s["flush_errors"]),
        n(&s["expirations"]),
        n(&s["no_space"]),
        n(&s["dirty"])
    );
    let _ = writeln!(
        out,
        "connections open {}  accepted {}\n",
        n(&s["connections"]["open"]),
        n(&s["connections"]["accepted"])
    );
    let mut rows = Vec::new();
    if let Some(req) = s["requests"].as_object() {
        for (op, count) in req {
            let lat = &s["latency"][op.as_str()];
            let cnt = n(&lat["count"]);
            let mean = if cnt > 0 {
                lat["sum_seconds"].as_f64().unwrap_or(0.0) / cnt as f64 * 1e6
            } else {
                0.0
            };
            rows.push(vec![
                op.to_ascii_uppercase(),
                n(count).to_string(),
                format!("{mean:.1}"),
                format!("{:.1}", quantile(lat, 0.99) * 1e6),
            ]);
        }
    }
    out.push_str(&table(
        &["OP", "REQUESTS", "MEAN µs", "P99 ≤ µs"],
        &rows,
        &[false, true, true, true],
    ));
    if let Some(errs) = s["errors"].as_object() {
        if !errs.is_empty() {
            let rows: Vec<Vec<String>> = errs
                .iter()
                .map(|(k, v)| vec![k.to_ascii_uppercase(), n(v).to_string()])
                .collect();
            out.push('\n');
            out.push_str(&table(&["ERROR", "COUNT"], &rows, &[false, true]));
        }
    }
    out
}

/// The upper bound of the histogram bucket holding quantile `q` (seconds).
fn quantile(lat: &Value, q: f64) -> f64 {
    let count = n(&lat["count"]);
    if count == 0 {
        return 0.0;
    }
    let want = (count as f64 * q).ceil() as u64;
    let mut last = 0.0;
    for b in lat["buckets"].as_array().into_iter().flatten() {
        let bound = b[0].as_f64();
        if let Some(x) = bound {
            last = x;
        }
        if n(&b[1]) >= want {
            return bound.unwrap_or(last);
        }
    }
    last
}

pub fn migrate(a: MigrateArgs) -> Result<()> {
    let k = key_bytes(&a.key);
    let (name, val) = key_field(if a.prefix { "prefix" } else { "key" }, &k);
    let mut body = json!({ "action": a.action.name() });
    body[name] = val;
    let r = call(&a.admin, "POST", "/v1/migrate", Some(&body))?;
    if a.admin.json {
        return print_json(&r);
    }
    println!(
        "{}: {} matched, {} changed, {} skipped",
        a.action.name(),
        n(&r["matched"]),
        n(&r["changed"]),
        n(&r["skipped"])
    );
    Ok(())
}

pub fn purge(a: PurgeArgs) -> Result<()> {
    let body = match (&a.key, &a.prefix) {
        (Some(k), _) => {
            let (name, val) = key_field("key", &key_bytes(k));
            json!({ name: val })
        }
        (None, Some(p)) => {
            if !a.yes {
                return Err(UsageError(format!(
                    "purging every object under prefix {:?} needs --yes",
                    p.to_string_lossy()
                ))
                .into());
            }
            let (name, val) = key_field("prefix", &key_bytes(p));
            json!({ name: val, "confirm": true })
        }
        (None, None) => bail!(UsageError("give a KEY or --prefix PREFIX".into())),
    };
    let r = call(&a.admin, "POST", "/v1/purge", Some(&body))?;
    if a.admin.json {
        return print_json(&r);
    }
    println!("deleted {}", n(&r["deleted"]));
    Ok(())
}

/// `objmapper verify [--prefix P]`: `POST /v1/verify`. Fails (exit 1) if it found damage,
/// after listing it.
/// `objmapper reload`: `POST /v1/reload`, which re-reads the server's configuration
/// file and answers once the new settings are in force (exit 0) or were refused (exit 1,
/// with the reason; the old settings stay).
pub fn reload(a: AdminArgs) -> Result<()> {
    let ep = Endpoint::of(&a);
    let r = checked(request(&ep, "POST", "/v1/reload", Some(&json!({})))?)
        .with_context(|| format!("reload of the server at {ep}"))?;
    if a.json {
        print_json(&r)?;
    } else {
        println!(
            "reloaded: {}",
            r["message"].as_str().unwrap_or("configuration re-read")
        );
    }
    Ok(())
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    let mut body = json!({});
    if let Some(p) = &a.prefix {
        let (name, val) = key_field("prefix", &key_bytes(p));
        body[name] = val;
    }
    // A full verify re-reads every object: its answer can take long, so --timeout does
    // not apply to it.
    let ep = Endpoint::of(&a.admin);
    let r = checked(request_within(
        &ep,
        "POST",
        "/v1/verify",
        Some(&body),
        None,
    )?)?;
    let damaged = r["damaged"].as_array().cloned().unwrap_or_default();
    if a.admin.json {
        print_json(&r)?;
    } else {
        println!(
            "verified {} objects ({}) in {:.2} s: {} damaged",
            n(&r["objects"]),
            human_bytes(n(&r["bytes"])),
            r["seconds"].as_f64().unwrap_or(0.0),
            damaged.len()
        );
        if !damaged.is_empty() {
            let rows: Vec<Vec<String>> = damaged
                .iter()
                .map(|d| {
                    vec![
                        show_key(d),
                        n(&d["version"]).to_string(),
                        d["tier"].as_str().unwrap_or("").to_string(),
                        d["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["DROPPED KEY", "VERSION", "TIER", "REASON"],
                    &rows,
                    &[false, true, false, false]
                )
            );
        }
    }
    if !damaged.is_empty() {
        bail!(
            "{} damaged object version(s) dropped (moved to lost+found/)",
            damaged.len()
        );
    }
    Ok(())
}

/// `objmapper ban EXPR`: `POST /v1/bans`.
pub fn ban(a: BanArgs) -> Result<()> {
    let Some(expr) = a.expr.to_str() else {
        bail!(UsageError(
            "the ban expression must be UTF-8 text: write other bytes as \\xHH inside a string"
                .into()
        ));
    };
    let r = call(&a.admin, "POST", "/v1/bans", Some(&json!({ "expr": expr })))?;
    if a.admin.json {
        return print_json(&r);
    }
    println!("ban added (stamp {})", n(&r["stamp"]));
    Ok(())
}

/// `objmapper bans`: `GET /v1/bans`.
pub fn bans(a: AdminArgs) -> Result<()> {
    let r = call(&a, "GET", "/v1/bans", None)?;
    if a.json {
        return print_json(&r);
    }
    let rows: Vec<Vec<String>> = r["bans"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            vec![
                n(&b["stamp"]).to_string(),
                rfc3339_utc_secs(n(&b["added"])),
                b["expr"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["STAMP", "ADDED", "EXPR"], &rows, &[true, false, false])
    );
    println!("{} active", rows.len());
    Ok(())
}

/// The dotted fields of a config object, flattened, in order.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v.as_object() {
        Some(m) => {
            for (k, x) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, x, out);
            }
        }
        None => out.push((prefix.to_string(), v.clone())),
    }
}

/// `FIELD=VALUE` into a JSON patch, typed by the current value of FIELD.
fn assignment(current: &Value, s: &str, patch: &mut Value) -> Result<()> {
    let (field, raw) = s
        .split_once('=')
        .ok_or_else(|| UsageError(format!("{s:?} is not FIELD=VALUE")))?;
    let mut cur = current;
    for part in field.split('.') {
        cur = &cur[part];
    }
    let value = if cur.is_boolean() {
        match raw {
            "true" | "yes" | "on" => json!(true),
            "false" | "no" | "off" => json!(false),
            _ => bail!(UsageError(format!(
                "{field} takes true or false, not {raw:?}"
            ))),
        }
    } else if cur.is_u64() {
        let n = if field.ends_with("_bytes") || field.ends_with("threshold") {
            parse_size(raw)
        } else {
            raw.parse::<u64>()
                .map_err(|_| format!("{raw:?} is not a whole number"))
        };
        json!(n.map_err(|e| UsageError(format!("{field}: {e}")))?)
    } else if cur.is_f64() {
        json!(raw
            .parse::<f64>()
            .map_err(|_| UsageError(format!("{field}: {raw:?} is not a number")))?)
    } else {
        let mut known = Vec::new();
        flatten("", current, &mut known);
        let names: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
        bail!(UsageError(format!(
            "unknown field {field:?}; fields: {}",
            names.join(", ")
        )));
    };
    let mut slot = &mut *patch;
    for part in field.split('.') {
        slot = &mut slot[part];
    }
    *slot = value;
    Ok(())
}

pub fn config(a: ConfigArgs) -> Result<()> {
    match a.command {
        ConfigCommand::Get { field, admin } => {
            let c = call(&admin, "GET", "/v1/config", None)?;
            let mut fields = Vec::new();
            flatten("", &c, &mut fields);
            if let Some(f) = field {
                let (_, v) = fields
                    .iter()
                    .find(|(k, _)| *k == f)
                    .ok_or_else(|| UsageError(format!("no field {f:?} in the configuration")))?;
                println!("{v}");
                return Ok(());
            }
            if admin.json {
                return print_json(&c);
            }
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            print!("{}", table(&["FIELD", "VALUE"], &rows, &[false, true]));
            Ok(())
        }
        ConfigCommand::Set { assignments, admin } => {
            let current = call(&admin, "GET", "/v1/config", None)?;
            let mut patch = json!({});
            for s in &assignments {
                assignment(&current, s, &mut patch)?;
            }
            let r = call(&admin, "PATCH", "/v1/config", Some(&patch))?;
            if admin.json {
                return print_json(&r);
            }
            let changed: Vec<&str> = r["changed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if changed.is_empty() {
                println!("nothing changed");
            } else {
                println!("changed: {}", changed.join(", "));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_show_the_body_cache() {
        let s = serde_json::json!({"tiers": {
            "memory": {"body_cache_bytes": 3 << 20, "body_cache_objects": 768},
            "disk": {"body_cache_bytes": 0, "body_cache_objects": 0}
        }});
        let out = render_stats(&s);
        assert!(
            out.contains(
                "body cache (small objects' bytes kept in memory): memory 3.0 MiB (768 \
                 objects), disk 0 B (0 objects)"
            ),
            "{out}"
        );
        // An older server that does not report it: no line.
        assert!(!render_stats(&serde_json::json!({})).contains("body cache"));
    }

    #[test]
    fn stats_show_the_remote_tier_and_its_fetches() {
        let s = serde_json::json!({"remote": {
            "name": "s3://cache/objm", "reachable": true, "hits": 7, "misses": 3,
            "fills": 7, "fills_refused": 6, "fetches_running": 2, "fetches_refused": 5,
            "queue": {"objects": 4, "bytes": 2048, "oldest_seconds": 1.5, "dropped": 0},
            "invalidations_pending": 1, "bytes_up": 1 << 20, "bytes_down": 0
        }});
        let out = render_stats(&s);
        assert!(
            out.contains(
                "remote s3://cache/objm (reachable): 7 hits, 3 misses, 7 fills (6 refused \
                 here, 2 fetching, 5 misses refused at the fetch bound), queue 4 objects (2.0 \
                 KiB, oldest 1.5 s), 0 dropped, 1 deletes/purges pending, 1.0 MiB up, 0 B down"
            ),
            "{out}"
        );
        assert!(!render_stats(&serde_json::json!({})).contains("remote"));
        assert!(!out.contains("swept"), "nothing swept, no line: {out}");
        let mut s = s;
        s["remote"]["swept"] = serde_json::json!({"orphans": 2, "orphan_bytes": 4096,
            "reclaimed": 3, "reclaimed_bytes": 1 << 20, "purges_retired": 4});
        let out = render_stats(&s);
        assert!(
            out.contains(
                "bucket swept by this host: 2 orphaned data objects deleted (4.0 KiB), 3 \
                 expired or purged versions reclaimed (1.0 MiB), 4 purges retired"
            ),
            "{out}"
        );
    }

    #[test]
    fn stats_say_why_the_remote_tier_fails() {
        let with = |state: &str| {
            render_stats(&serde_json::json!({"remote": {
                "name": "s3://cache/objm", "state": state, "reachable": state != "unreachable",
                "last_error": if state == "ok" { None } else { Some("remote put was refused") },
                "queue": {}
            }}))
        };
        let out = with("refused");
        assert!(
            out.contains("remote s3://cache/objm (REFUSING THIS HOST: check the credentials"),
            "{out}"
        );
        assert!(
            out.contains("remote tier's last error: remote put was refused"),
            "{out}"
        );
        assert!(with("no_bucket").contains("(NO SUCH BUCKET at the endpoint)"));
        assert!(with("unreachable").contains("(NOT ANSWERING)"));
        assert!(with("unguarded").contains("(STORE IGNORES CONDITIONAL WRITES"));
        assert!(with("conflicting").contains("(REFUSING WRITES OVER EXISTING OBJECTS"));
        let ok = with("ok");
        assert!(
            ok.contains("(reachable)") && !ok.contains("last error"),
            "{ok}"
        );
    }

    #[test]
    fn stats_warn_when_the_memory_tier_is_not_in_ram() {
        let tiers = |in_ram: bool| {
            serde_json::json!({"tiers": {"memory": {
                "enabled": true, "in_ram": in_ram, "filesystem": if in_ram { "tmpfs" } else { "ext4" },
                "dir": "/var/lib/objmapper/mem"
            }}})
        };
        let out = render_stats(&tiers(false));
        assert!(
            out.contains(
                "WARNING: the memory tier is not in RAM: /var/lib/objmapper/mem is on ext4"
            ),
            "{out}"
        );
        assert!(!render_stats(&tiers(true)).contains("WARNING"));
        // The huge page policy, when the server reports one (a filesystem in RAM).
        assert!(!render_stats(&tiers(true)).contains("huge pages"));
        let mut t = tiers(true);
        t["tiers"]["memory"]["huge_pages"] = "within_size".into();
        let out = render_stats(&t);
        assert!(
            out.contains("memory tier on tmpfs, huge pages: within_size"),
            "{out}"
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["xyz".into(), "5".into()],
                vec!["q".into(), "1234".into()],
            ],
            &[false, true],
        );
        assert_eq!(t, "A     NUM\nxyz     5\nq    1234\n");
    }

    #[test]
    fn assignments_are_typed_by_the_current_value() {
        let cur = json!({"memory":{"capacity_bytes":1,"eviction":{"small_ratio":0.1,"ghost_main_evictions":true}}});
        let mut p = json!({});
        assignment(&cur, "memory.capacity_bytes=2K", &mut p).unwrap();
        assignment(&cur, "memory.eviction.small_ratio=0.2", &mut p).unwrap();
        assignment(&cur, "memory.eviction.ghost_main_evictions=false", &mut p).unwrap();
        assert_eq!(
            p,
            json!({"memory":{"capacity_bytes":2048,"eviction":{"small_ratio":0.2,"ghost_main_evictions":false}}})
        );
        assert!(assignment(&cur, "memory.nope=1", &mut p).is_err());
        assert!(assignment(&cur, "memory.capacity_bytes", &mut p).is_err());
    }

    #[test]
    fn admin_endpoint_from_flags() {
        let a = |admin: Option<&str>| AdminArgs {
            socket: "/run/o.sock".into(),
            admin: admin.map(String::from),
            json: false,
        };
        assert!(
            matches!(Endpoint::of(&a(None)), Endpoint::Unix(p) if p == std::path::Path::new("/run/o.sock.admin"))
        );
        assert!(matches!(
            Endpoint::of(&a(Some("127.0.0.1:9997"))),
            Endpoint::Tcp(_)
        ));
        assert!(matches!(
            Endpoint::of(&a(Some("localhost:9997"))),
            Endpoint::Tcp(_)
        ));
        assert!(matches!(
            Endpoint::of(&a(Some("/tmp/x.admin"))),
            Endpoint::Unix(_)
        ));
    }
}
