//! A small HTTP/1.1 client for the management API tests: hyper's client connection over
//! a Unix socket or TCP, on a current-thread tokio runtime. One request per connection.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the management API listens.
#[derive(Clone, Debug)]
pub enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics with the text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.text))
            .to_string()
    }
}

pub fn unix(path: &Path) -> Target {
    Target::Unix(path.to_path_buf())
}

/// Sends one request and reads the whole answer.
pub fn call(t: &Target, method: &str, path: &str, body: Option<&str>) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap();
        let resp = match t {
            Target::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .expect("admin socket");
                send(hyper_util::rt::TokioIo::new(s), req).await
            }
            Target::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await.expect("admin tcp");
                send(hyper_util::rt::TokioIo::new(s), req).await
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        }
    })
}

async fn send<I>(io: I, req: hyper::Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.unwrap()
}

pub fn get(t: &Target, path: &str) -> Answer {
    call(t, "GET", path, None)
}

/// Parses the Prometheus text format into `name{labels}` -> value.
pub fn prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse::<f64>().expect("value"))
        })
        .collect()
}
