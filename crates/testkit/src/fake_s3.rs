//! A small S3 endpoint on a loopback port that can pass over conditional writes, for
//! what a real store cannot be made to do: play an S3 gateway that ignores
//! `If-None-Match` or `If-Match`, or answers them as not implemented.
//!
//! It keeps objects in memory and serves path-style `PUT`, `GET` (ranges too),
//! `HEAD`, `DELETE`, `POST ?delete` and `GET ?list-type=2` (one page), and checks no
//! signature. It can also break on purpose ([`Faults`]): rewrite the ETags of GETs, or
//! answer every PUT, every LIST or every request with a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the endpoint does with one conditional header on `PUT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Honour {
    /// As S3 does: `412 Precondition Failed` when the condition does not hold.
    #[default]
    Yes,
    /// Passes over it in silence: the PUT is stored.
    Ignore,
    /// `501 Not Implemented`, S3's `NotImplemented` error.
    NotImplemented,
}

/// What the endpoint does with `If-None-Match: *` and `If-Match: <etag>` on `PUT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-None-Match: *`.
    pub if_none_match: Honour,
    /// `If-Match`.
    pub if_match: Honour,
}

/// A failure the endpoint answers with instead of doing what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `503 Service Unavailable`, S3's `SlowDown` (which clients retry).
    SlowDown,
    /// `403 Forbidden`, S3's `AccessDenied` (a wrong key, or the bucket's policy).
    Forbidden,
    /// `200 OK` with a body that is not what was asked for (not XML, for a LIST).
    Garbage,
}

/// What the endpoint breaks, beyond conditional headers (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// GET and HEAD answer another ETag than the one `If-Match` takes (a gateway that
    /// rewrites ETags): every write over an existing object then loses its condition.
    pub rewrite_etags: bool,
    /// Every PUT fails so.
    pub put: Option<Failure>,
    /// Every LIST fails so.
    pub list: Option<Failure>,
    /// Every request fails so.
    pub all: Option<Failure>,
}

#[derive(Default)]
struct State {
    conditions: Conditions,
    faults: Faults,
    /// Path (`bucket/name`) to (ETag, bytes).
    objects: BTreeMap<String, (String, Vec<u8>)>,
    etags: u64,
    /// `METHOD /path?query`, in order.
    requests: Vec<String>,
}

/// The running endpoint; it serves until the test process ends.
pub struct FakeS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FakeS3 {
    /// Starts one with `conditions`.
    pub fn start(conditions: Conditions) -> FakeS3 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            conditions,
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FakeS3 { endpoint, state }
    }

    /// Changes what it does with conditional headers from now on.
    pub fn set_conditions(&self, c: Conditions) {
        self.state.lock().unwrap().conditions = c;
    }

    /// Changes what it breaks from now on.
    pub fn set_faults(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The names of the objects it holds (`bucket/name`).
    pub fn names(&self) -> Vec<String> {
        self.state.lock().unwrap().objects.keys().cloned().collect()
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (decode(path.trim_start_matches('/')), query.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Percent-decoding of a path or a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) => {
                let hex = std::str::from_utf8(h).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_value(q: &str, name: &str) -> Option<String> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(decode)
}

/// A response: status line text, extra header lines, body.
type Response = (&'static str, String, Vec<u8>);

const DATE: &str = "Sun, 06 Dec 2026 00:00:00 GMT";

fn error(status: &'static str, code: &str) -> Response {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>");
    (status, String::new(), body.into_bytes())
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let head = req.method == "HEAD";
        let (status, headers, body) = answer(&req, state);
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head {
            out.extend_from_slice(&body);
        }
        if w.write_all(&out).is_err() {
            return;
        }
    }
}

fn answer(req: &Request, state: &Mutex<State>) -> Response {
    let mut s = state.lock().unwrap();
    let line = match req.query.is_empty() {
        true => format!("{} /{}", req.method, req.path),
        false => format!("{} /{}?{}", req.method, req.path, req.query),
    };
    s.requests.push(line);
    let c = s.conditions;
    let f = s.faults;
    let listing = req.method == "GET" && req.query.contains("list-type=2");
    let failure = f
        .all
        .or(f.put.filter(|_| req.method == "PUT"))
        .or(f.list.filter(|_| listing));
    if let Some(failure) = failure {
        return fail(failure);
    }
    match req.method.as_str() {
        "PUT" => {
            let current = s.objects.get(&req.path).map(|(e, _)| e.clone());
            if req.header("if-none-match").is_some() {
                match c.if_none_match {
                    Honour::NotImplemented => {
                        return error("501 Not Implemented", "NotImplemented")
                    }
                    Honour::Yes if current.is_some() => {
                        return error("412 Precondition Failed", "PreconditionFailed")
                    }
                    _ => {}
                }
            }
            if let Some(want) = req.header("if-match") {
                match c.if_match {
                    Honour::NotImplemented => {
                        return error("501 Not Implemented", "NotImplemented")
                    }
                    Honour::Yes if current.as_deref() != Some(want) => {
                        return error("412 Precondition Failed", "PreconditionFailed")
                    }
                    _ => {}
                }
            }
            s.etags += 1;
            let etag = format!("\"e{}\"", s.etags);
            s.objects
                .insert(req.path.clone(), (etag.clone(), req.body.clone()));
            ("200 OK", format!("ETag: {etag}\r\n"), Vec::new())
        }
        "DELETE" => {
            s.objects.remove(&req.path);
            ("204 No Content", String::new(), Vec::new())
        }
        "POST" if req.query.starts_with("delete") => {
            // DeleteObjects: <Delete><Object><Key>name</Key></Object>...</Delete>.
            let bucket = req.path.trim_end_matches('/').to_owned();
            let text = String::from_utf8_lossy(&req.body).into_owned();
            let mut deleted = String::new();
            for part in text.split("<Key>").skip(1) {
                let key = part.split("</Key>").next().unwrap_or_default();
                s.objects.remove(&format!("{bucket}/{key}"));
                deleted.push_str(&format!("<Deleted><Key>{key}</Key></Deleted>"));
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>{deleted}</DeleteResult>"
            );
            (
                "200 OK",
                "Content-Type: application/xml\r\n".into(),
                body.into_bytes(),
            )
        }
        "GET" if req.query.contains("list-type=2") => list(&s, req),
        "GET" | "HEAD" => {
            let Some((etag, bytes)) = s.objects.get(&req.path) else {
                return error("404 Not Found", "NoSuchKey");
            };
            let range = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok())));
            let etag = match f.rewrite_etags {
                true => format!("\"gw-{}\"", etag.trim_matches('"')),
                false => etag.clone(),
            };
            let common = format!("ETag: {etag}\r\nLast-Modified: {DATE}\r\n");
            match range {
                Some((a, b)) if a < bytes.len() => {
                    let end = b.map_or(bytes.len() - 1, |b| b.min(bytes.len() - 1));
                    let part = bytes[a..=end].to_vec();
                    let h = format!("{common}Content-Range: bytes {a}-{end}/{}\r\n", bytes.len());
                    ("206 Partial Content", h, part)
                }
                Some(_) => error("416 Range Not Satisfiable", "InvalidRange"),
                None => ("200 OK", common, bytes.clone()),
            }
        }
        _ => error("405 Method Not Allowed", "MethodNotAllowed"),
    }
}

fn fail(f: Failure) -> Response {
    match f {
        Failure::SlowDown => error("503 Service Unavailable", "SlowDown"),
        Failure::Forbidden => error("403 Forbidden", "AccessDenied"),
        Failure::Garbage => (
            "200 OK",
            "Content-Type: application/xml\r\n".into(),
            b"<html>not what was asked for".to_vec(),
        ),
    }
}

/// One page of `ListObjectsV2`: every name under the prefix, in order.
fn list(s: &State, req: &Request) -> Response {
    let bucket = req.path.trim_end_matches('/');
    let prefix = query_value(&req.query, "prefix").unwrap_or_default();
    let after = query_value(&req.query, "start-after").unwrap_or_default();
    let mut contents = String::new();
    let mut n = 0;
    let under = format!("{bucket}/{prefix}");
    for (path, (etag, bytes)) in s.objects.range(under.clone()..) {
        if !path.starts_with(&under) {
            break;
        }
        let key = &path[bucket.len() + 1..];
        if key <= after.as_str() {
            continue;
        }
        n += 1;
        contents.push_str(&format!(
            "<Contents><Key>{key}</Key><LastModified>2026-12-06T00:00:00.000Z</LastModified>\
             <ETag>{}</ETag><Size>{}</Size></Contents>",
            etag.replace('"', "&quot;"),
            bytes.len()
        ));
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>{bucket}</Name>\
         <Prefix>{prefix}</Prefix><KeyCount>{n}</KeyCount><MaxKeys>1000</MaxKeys>\
         <IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
    );
    (
        "200 OK",
        "Content-Type: application/xml\r\n".into(),
        body.into_bytes(),
    )
}
