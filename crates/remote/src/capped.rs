//! Bounds on what an answer of the store can make this process hold.
//!
//! object_store collects small answers (a LIST page, an error's XML, what a multipart
//! upload's start returns) into one buffer sized by the answer's `Content-Length`
//! before a byte of it has arrived. A store, or a proxy on the way, answering with a
//! `Content-Length` of 100 GB made the allocation fail, which aborts the process: the
//! host went down on an event-log poll, and could not start at all while the purge set
//! read answered so (found from outside). And an endless chunked answer to a LIST was
//! buffered whole until the request's timeout: 0.5 GB a poll on loopback.
//!
//! So every request goes through [`CappedConnector`]: an answer's size hint is held
//! to [`MAX_HINT`] (the buffer grows as bytes arrive, never ahead of them), and the
//! answers that are collected whole are cut off with an error past a bound: a LIST
//! page at [`MAX_LIST`], any answer to a request other than a GET at [`MAX_OTHER`].
//! A GET's body is left alone: object bytes are streamed by this crate's readers,
//! which bound them by the version's recorded size.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};

/// The largest buffer an answer's size hint may ask for ahead of its bytes.
pub(crate) const MAX_HINT: u64 = 1 << 20;
/// The longest LIST page taken (a page holds at most 1000 names: a few hundred KiB).
pub(crate) const MAX_LIST: u64 = 16 << 20;
/// The longest answer to a PUT, POST, DELETE or HEAD taken (XML of a few hundred
/// bytes, or an error).
pub(crate) const MAX_OTHER: u64 = 1 << 20;

/// object_store's reqwest connector, its answers bounded.
#[derive(Debug, Default)]
pub(crate) struct CappedConnector;

impl HttpConnector for CappedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Capped { inner }))
    }
}

#[derive(Debug)]
struct Capped {
    inner: HttpClient,
}

#[async_trait]
impl HttpService for Capped {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let listing = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("list-type=")));
        let limit = if listing {
            Some(MAX_LIST)
        } else if req.method() != http::Method::GET {
            Some(MAX_OTHER)
        } else {
            None
        };
        let res = self.inner.execute(req).await?;
        let (parts, body) = res.into_parts();
        let body = Bounded {
            inner: body,
            limit,
            taken: 0,
        };
        Ok(http::Response::from_parts(
            parts,
            HttpResponseBody::new(body),
        ))
    }
}

/// A body that hints at most [`MAX_HINT`] bytes, and fails past `limit` bytes.
struct Bounded {
    inner: HttpResponseBody,
    limit: Option<u64>,
    taken: u64,
}

/// An answer longer than this client takes.
#[derive(Debug, thiserror::Error)]
#[error("the store's answer is longer than {0} bytes, more than such an answer can be")]
struct TooLong(u64);

impl Body for Bounded {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.taken += data.len() as u64;
                if let Some(limit) = self.limit.filter(|l| self.taken > *l) {
                    return Poll::Ready(Some(Err(HttpError::new(
                        HttpErrorKind::Decode,
                        TooLong(limit),
                    ))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().min(MAX_HINT));
        hint
    }
}

/// The bytes of a small object the client reads whole (an event, the purge set, a
/// header), at most `max` of them: a longer answer is refused as damaged, before it
/// is held. (object_store's own `bytes()` sizes its buffer by the answer's
/// `Content-Length` first.)
pub(crate) async fn collect(
    r: object_store::GetResult,
    max: u64,
    op: &'static str,
) -> crate::error::Result<Bytes> {
    use futures_util::StreamExt;
    let name = r.meta.location.to_string();
    let too_long = || {
        crate::error::Error::corrupt(
            &name,
            format!("longer than {max} bytes, more than such an object can be"),
        )
    };
    if r.range.end.saturating_sub(r.range.start) > max {
        return Err(too_long());
    }
    let mut s = r.into_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| crate::error::Error::store(op, e))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(too_long());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}
