//! What a request brings: keys (in a path, a query, or a JSON body as text or hex), query
//! parameters, and JSON bodies of at most [`MAX_BODY`] bytes.

use axum::body::Body;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use objmapper_store::MAX_KEY_LEN;
use serde::Deserialize;

use super::reply::{err, ApiError};

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(super) use crate::wire::{hex, unhex};

/// `s` as hex, or 400 `bad_request` naming `field`.
pub(super) fn unhex_field(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    unhex(s).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{field} must be an even number of hex digits"),
        )
        .at(field)
    })
}

pub(super) fn check_key(k: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if k.is_empty() || k.len() > MAX_KEY_LEN {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("a key is 1..={MAX_KEY_LEN} bytes; got {}", k.len()),
        ));
    }
    Ok(k)
}

/// A key percent-encoded in a URL path (any byte may be encoded; `+` is a plus sign).
pub(super) fn path_key(raw: &str) -> Result<Vec<u8>, ApiError> {
    check_key(percent_encoding::percent_decode_str(raw).collect())
}

/// The query string's parameters, percent-decoded to bytes.
pub(super) fn query_params(q: &str) -> Vec<(String, Vec<u8>)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_encoding::percent_decode_str(k)
                    .decode_utf8_lossy()
                    .into_owned(),
                percent_encoding::percent_decode_str(v).collect(),
            )
        })
        .collect()
}

/// The body as JSON of type `T`: 413 `body_too_large` past [`MAX_BODY`], 400 `bad_json`
/// (with the JSON path at fault as `field`) if it does not parse as a `T`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&collect(body).await?)
}

/// [`read_json`] where no body (or only white space) means `T::default()`.
pub(super) async fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: Body,
) -> Result<T, ApiError> {
    let body = collect(body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

/// The whole body: 413 `body_too_large` past [`MAX_BODY`].
async fn collect(body: Body) -> Result<axum::body::Bytes, ApiError> {
    Ok(match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are at most {MAX_BODY} bytes"),
                ));
            }
            return Err(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the request body failed: {e}"),
            ));
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let a = err(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("invalid JSON body at {path}: {}", e.inner()),
        );
        if path != "." {
            a.at(path)
        } else {
            a
        }
    })
}

/// `key`/`key_hex` or `prefix`/`prefix_hex` of a purge or migrate body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    key: Option<String>,
    key_hex: Option<String>,
    prefix: Option<String>,
    prefix_hex: Option<String>,
    #[serde(default)]
    pub(super) confirm: bool,
    pub(super) action: Option<String>,
}

pub(super) enum Selector {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

impl Target {
    /// The one key or prefix the body names.
    pub(super) fn selector(&self) -> Result<Selector, ApiError> {
        match (&self.key, &self.key_hex, &self.prefix, &self.prefix_hex) {
            (Some(k), None, None, None) => Ok(Selector::Key(check_key(k.as_bytes().to_vec())?)),
            (None, Some(k), None, None) => {
                Ok(Selector::Key(check_key(unhex_field("key_hex", k)?)?))
            }
            (None, None, Some(p), None) => Ok(Selector::Prefix(p.as_bytes().to_vec())),
            (None, None, None, Some(p)) => Ok(Selector::Prefix(unhex_field("prefix_hex", p)?)),
            _ => Err(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of key, key_hex, prefix, prefix_hex",
            )),
        }
    }
}
