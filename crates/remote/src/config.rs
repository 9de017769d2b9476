//! The remote tier's configuration and credentials.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::format::HostId;

/// A secret string: its Debug and Display print `<redacted>`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself: only to hand to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An access key pair. The access key id is not secret (it shows in logs as the
/// identity); the secret key and the session token are [`Secret`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `AWS_SESSION_TOKEN`, if any.
    pub session_token: Option<Secret>,
}

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set,
    /// `AWS_SESSION_TOKEN`; `None` if the first two are not both set.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let id = get("AWS_ACCESS_KEY_ID").filter(|s| !s.is_empty())?;
        let secret = get("AWS_SECRET_ACCESS_KEY").filter(|s| !s.is_empty())?;
        Some(Credentials {
            access_key_id: id,
            secret_access_key: Secret(secret),
            session_token: get("AWS_SESSION_TOKEN")
                .filter(|s| !s.is_empty())
                .map(Secret),
        })
    }

    /// Reads a credentials file, which must be a regular file of mode 0600 or 0400
    /// (no access for group or others); any other mode is refused.
    ///
    /// The format is AWS's shared credentials file (`~/.aws/credentials`): `key = value`
    /// lines with the keys `aws_access_key_id`, `aws_secret_access_key` and optionally
    /// `aws_session_token`, in the `[default]` section, or with no section at all.
    /// The same keys without `aws_` (`access_key_id`, ...), which objmapper's docs once
    /// named, are read too; a key given twice, in either spelling, is refused. `#` and
    /// `;` start comments.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Config(format!("cannot read the credentials file {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(Error::Config(format!(
                "the credentials file {shown} is not a regular file"
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::Config(format!(
                "the credentials file {shown} has mode {mode:04o}: it holds a secret, so it \
                 must not be readable by group or others; run `chmod 600 {shown}`"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the credentials file {shown}: {e}")))?;
        Self::parse_file(&text)
            .map_err(|why| Error::Config(format!("the credentials file {shown}: {why}")))
    }

    fn parse_file(text: &str) -> Result<Self, String> {
        let mut section: Option<String> = None;
        let (mut id, mut secret, mut token) = (None, None, None);
        // The line that gave each key, to refuse a second one.
        let mut given: [Option<usize>; 3] = [None; 3];
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(s.trim().to_owned());
                continue;
            }
            if section.as_deref().is_some_and(|s| s != "default") {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                // Never echo the line: it may be a secret.
                return Err(format!("line {} is not `key = value`", n + 1));
            };
            let v = v.trim().to_owned();
            let k = k.trim().to_ascii_lowercase();
            let which = match k.strip_prefix("aws_").unwrap_or(&k) {
                "access_key_id" => 0,
                "secret_access_key" => 1,
                "session_token" => 2,
                _ => continue,
            };
            if let Some(first) = given[which].replace(n + 1) {
                return Err(format!(
                    "line {} gives {k} again (line {first} gave it): keep one",
                    n + 1
                ));
            }
            match which {
                0 => id = Some(v),
                1 => secret = Some(Secret(v)),
                _ => token = Some(Secret(v)),
            }
        }
        match (id, secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.0.is_empty() => Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: token,
            }),
            _ => Err(
                "no aws_access_key_id and aws_secret_access_key lines (in [default] or before \
                 any section)"
                    .into(),
            ),
        }
    }
}

/// Where the credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// The environment, read when the client is built: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`); without them, the temporary
    /// credentials the environment points at, fetched and renewed before they expire by
    /// `object_store`: a web identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` and
    /// `AWS_ROLE_ARN`, as EKS's IRSA sets; `AWS_ROLE_SESSION_NAME`,
    /// `AWS_ENDPOINT_URL_STS`), an ECS task role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`)
    /// or EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`). None of these: the client is refused.
    Env,
    /// The EC2 instance profile, from the instance metadata service (IMDSv2 only;
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides its address), renewed before it
    /// expires. Only on request: off AWS, every request would wait on a metadata
    /// service that is not there.
    Instance,
    /// A credentials file of mode 600.
    File(PathBuf),
    /// Given directly.
    Static(Credentials),
    /// No signing (a public bucket).
    Anonymous,
}

/// Configuration of the remote tier. Build with [`Config::from_url`] and the `with_`
/// setters; each documents its default.
#[derive(Clone, Debug)]
pub struct Config {
    /// The S3 endpoint, e.g. `http://127.0.0.1:8333`; `None` = AWS for the region.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The key prefix every remote object name starts with (no leading or trailing
    /// `/`; may be empty).
    pub prefix: String,
    /// The region. Default = `us-east-1`.
    pub region: String,
    /// Where the credentials come from. Default = [`CredentialSource::Env`].
    pub credentials: CredentialSource,
    /// At most this many uploads in flight; a multipart upload sends up to this many of
    /// its parts at once, at most 4. Default = 32: an upload waits on the store's
    /// latency, not on this host, so a store 20 ms away takes about 150 uploads a
    /// second with 4 in flight and about 750 with 32 (docs/BENCHMARKS.md).
    pub upload_concurrency: usize,
    /// The bytes the uploads in flight may hold in memory together: an upload in one
    /// PUT holds its version, a multipart upload its parts in flight and the one it is
    /// filling; an upload waits until its share is free. One upload that needs more
    /// than this runs alone. Default = 128 MiB.
    pub upload_memory: u64,
    /// The bound on each request's wait for an answer, and on every pause in a body
    /// being sent or received. A call that is not moving for this long fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). Default = 1 s.
    pub timeout: Duration,
    /// The bound on a whole call, however much it moves (a large upload or download).
    /// Default = 10 min.
    pub transfer_timeout: Duration,
    /// How long a remote miss is remembered, so that a storm of misses on one key
    /// asks the remote store once. Default = 2 s; zero turns it off.
    pub miss_ttl: Duration,
    /// Objects larger than this are uploaded in multipart, in parts of
    /// [`Config::part_size`]; smaller ones in one conditional PUT, which a cold read
    /// then fetches with one GET (a multipart version takes two: its pointer, then
    /// its data). An upload of one PUT holds the version in memory while it is sent.
    /// At least 5 MiB. Default = 32 MiB.
    pub multipart_threshold: u64,
    /// The part size of a multipart upload: at least 5 MiB, or larger when an object
    /// would need more than S3's 10,000 parts (then the smallest whole number of MiB
    /// that fits). An upload holds up to 5 parts in memory (see
    /// [`Config::upload_memory`]).
    /// Default = 8 MiB.
    pub part_size: u64,
    /// The largest version [`Remote::get`](crate::Remote::get) fetches: a larger one is
    /// refused from its header, before any of its bytes are read (another host may
    /// take larger objects than this one). Default = no limit.
    pub max_object_size: u64,
    /// How often a host should call [`Remote::poll_events`](crate::Remote::poll_events) and apply the events to
    /// its local tiers: the bound on how late a purge on another host reaches this
    /// one (plus one poll's time). The client does not poll by itself. Default = 4 s,
    /// so that a purge reaches every host within 5 s with a second for the requests.
    pub poll_interval: Duration,
    /// How far back [`Remote::poll_events`](crate::Remote::poll_events) looks behind
    /// its cursor for events stamped by a host whose clock lags, or written late.
    /// Default = 60 s.
    pub event_lookback: Duration,
    /// How long the invalidation log keeps its events: hosts prune older ones, and a
    /// host that has not read the log for longer drops its local copies that a pruned
    /// event may have covered. Default = 7 days.
    pub event_retention: Duration,
    /// What [`Remote::retire_horizon`](crate::Remote::retire_horizon) adds for the
    /// hosts' own delays (a host cut off drops what crossed the event retention once a
    /// minute). Default = 5 minutes; only tests have reason to change it.
    pub retire_slack: Duration,
    /// This host's id, in every stamp it writes. Default = the host name.
    pub host: HostId,
    /// Allow `http://` endpoints. Default = true for loopback endpoints, else false.
    pub allow_http: bool,
}

impl Config {
    /// A configuration for `s3://bucket/prefix` with every other setting at its
    /// default.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let (bucket, prefix) = parse_url(url)?;
        Ok(Config {
            endpoint: None,
            bucket,
            prefix,
            region: "us-east-1".into(),
            credentials: CredentialSource::Env,
            upload_concurrency: 32,
            upload_memory: 128 << 20,
            timeout: Duration::from_secs(1),
            transfer_timeout: Duration::from_secs(600),
            miss_ttl: Duration::from_secs(2),
            multipart_threshold: 32 << 20,
            part_size: 8 << 20,
            max_object_size: u64::MAX,
            poll_interval: Duration::from_secs(4),
            event_lookback: Duration::from_secs(60),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            retire_slack: Duration::from_secs(300),
            host: default_host(),
            allow_http: false,
        })
    }

    /// Sets the endpoint (and allows `http://` if it is a loopback address).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        let e = endpoint.into();
        self.allow_http = e
            .strip_prefix("http://")
            .is_some_and(|rest| is_loopback_host(endpoint_host(rest)));
        self.endpoint = Some(e);
        self
    }

    /// Checks the endpoint: `https://`, or `http://` where [`Config::allow_http`]
    /// allows it (a loopback endpoint). Plain HTTP to another host would carry the
    /// objects, and the request signatures, over the network unencrypted.
    pub fn check_endpoint(&self) -> Result<(), Error> {
        let Some(e) = &self.endpoint else {
            return Ok(());
        };
        // Before any message quotes the endpoint: a password in it must not reach one.
        let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(Error::Config(
                "the endpoint names a user (user:password@host): credentials go in \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --remote-credentials-file, \
                 never in the endpoint URL"
                    .into(),
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(Error::Config(format!(
                "the endpoint {e} has a query or fragment: give the scheme, host and port \
                 only (the bucket and prefix go in --remote s3://bucket/prefix)"
            )));
        }
        let host = match (e.strip_prefix("https://"), e.strip_prefix("http://")) {
            (Some(rest), _) => endpoint_host(rest),
            (None, Some(rest)) if self.allow_http => endpoint_host(rest),
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "the endpoint {e} is plain http:// to a host that is not loopback: use \
                     https:// (http:// is allowed only for 127.0.0.0/8, ::1 and localhost)"
                )))
            }
            _ => {
                return Err(Error::Config(format!(
                    "the endpoint {e:?} is not an http:// or https:// URL"
                )))
            }
        };
        if host.is_empty() {
            return Err(Error::Config(format!("the endpoint {e:?} names no host")));
        }
        Ok(())
    }

    /// Sets the region. Default = `us-east-1`.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets the credentials. Default = [`CredentialSource::Env`].
    pub fn with_credentials(mut self, c: CredentialSource) -> Self {
        self.credentials = c;
        self
    }

    /// Sets the upload concurrency. Default = 32.
    pub fn with_upload_concurrency(mut self, n: usize) -> Self {
        self.upload_concurrency = n.max(1);
        self
    }

    /// Sets the memory the uploads in flight may hold together (at least 1 MiB).
    /// Default = 128 MiB.
    pub fn with_upload_memory(mut self, bytes: u64) -> Self {
        self.upload_memory = bytes.max(1 << 20);
        self
    }

    /// Sets the per-request timeout. Default = 1 s.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets the whole-transfer timeout. Default = 10 min.
    pub fn with_transfer_timeout(mut self, t: Duration) -> Self {
        self.transfer_timeout = t;
        self
    }

    /// Sets the miss cache's TTL. Default = 2 s.
    pub fn with_miss_ttl(mut self, t: Duration) -> Self {
        self.miss_ttl = t;
        self
    }

    /// Sets the multipart threshold (at least 5 MiB). Default = 32 MiB.
    pub fn with_multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes.max(5 << 20);
        self
    }

    /// Sets the part size of multipart uploads (at least 5 MiB). Default = 8 MiB.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(5 << 20);
        self
    }

    /// Sets the largest version [`Remote::get`](crate::Remote::get) fetches. Default =
    /// no limit.
    pub fn with_max_object_size(mut self, bytes: u64) -> Self {
        self.max_object_size = bytes;
        self
    }

    /// Sets the poll interval. Default = 4 s.
    pub fn with_poll_interval(mut self, t: Duration) -> Self {
        self.poll_interval = t;
        self
    }

    /// Sets the event lookback. Default = 60 s.
    pub fn with_event_lookback(mut self, t: Duration) -> Self {
        self.event_lookback = t;
        self
    }

    /// Sets the event retention. Default = 7 days.
    pub fn with_event_retention(mut self, t: Duration) -> Self {
        self.event_retention = t;
        self
    }

    /// Sets [`Config::retire_slack`].
    pub fn with_retire_slack(mut self, t: Duration) -> Self {
        self.retire_slack = t;
        self
    }

    /// Sets the host id. Default = the host name.
    pub fn with_host(mut self, host: HostId) -> Self {
        self.host = host;
        self
    }

    /// The full name of a remote object, `prefix/name`.
    pub(crate) fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The credentials, resolved now.
    pub(crate) fn no_credentials() -> Error {
        Error::Config(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run where the \
             environment names a web identity token, an ECS task role or EKS Pod Identity), \
             give a credentials file of mode 600, or choose the EC2 instance profile"
                .into(),
        )
    }
}

impl fmt::Display for Config {
    /// One line for logs: where, who (the access key id is not secret), and the
    /// bounds. Never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        write!(f, " region {}", self.region)?;
        match &self.credentials {
            CredentialSource::Env => f.write_str(" credentials from the environment")?,
            CredentialSource::Instance => {
                f.write_str(" credentials of the EC2 instance profile")?
            }
            CredentialSource::File(p) => write!(f, " credentials from {}", p.display())?,
            CredentialSource::Static(c) => write!(f, " access key {}", c.access_key_id)?,
            CredentialSource::Anonymous => f.write_str(" anonymous")?,
        }
        write!(
            f,
            " host {} timeout {:?} uploads {} in {} MiB",
            self.host,
            self.timeout,
            self.upload_concurrency,
            self.upload_memory >> 20
        )
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without leading or
/// trailing `/`).
pub fn parse_url(url: &str) -> Result<(String, String), Error> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::Config(format!(
            "{url:?} is not an s3:// URL (expected s3://bucket/prefix)"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') {
        // Not quoted: what comes before the '@' may be a password.
        return Err(Error::Config(
            "the s3:// URL names a user (s3://user:password@bucket): credentials go in \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --remote-credentials-file"
                .into(),
        ));
    }
    // S3's bucket naming rules, loosely: what every S3-compatible store accepts.
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !ok {
        return Err(Error::Config(format!(
            "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-' and '.')"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.bytes().any(|b| b.is_ascii_control())
    {
        return Err(Error::Config(format!(
            "{prefix:?} is not a usable key prefix (no empty, '.' or '..' segments)"
        )));
    }
    // The S3 client percent-encodes some characters of a name (non-ASCII, '%', '?',
    // '#', '*', ...): a prefix holding one would name other objects than it says,
    // which a bucket policy or lifecycle rule on the prefix would then miss.
    if let Some(c) = prefix.chars().find(|&c| {
        // Between two letters: "." alone is a name the client refuses, not encodes.
        let s = format!("x{c}x");
        c != '/' && object_store::path::PathPart::from(s.as_str()).as_ref() != s
    }) {
        return Err(Error::Config(format!(
            "the key prefix {prefix:?} holds {c:?}, which the S3 client would write \
             percent-encoded: use ASCII letters, digits and - _ . / ! ' ( ) = + , ; : @ $ & \
             or space"
        )));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

fn default_host() -> HostId {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(crate::format::MAX_HOST_LEN)
        .collect();
    HostId::new(clean).unwrap_or_else(|_| HostId::new("localhost").expect("valid"))
}

/// Checks an endpoint URL as [`Config::with_endpoint`] followed by
/// [`Config::check_endpoint`] would: `https://`, or `http://` to a loopback host.
pub fn check_endpoint(endpoint: &str) -> Result<(), Error> {
    Config::from_url("s3://bucket")?
        .with_endpoint(endpoint)
        .check_endpoint()
}

/// The host of an endpoint URL after its scheme: `h`, `h:port`, `[v6]:port`, with
/// any path cut and any `user@` dropped.
fn endpoint_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    hostport.split(':').next().unwrap_or("")
}

/// Whether an endpoint's host is this machine: `localhost` or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        let c = |e: &str| Config::from_url("s3://bucket/p").unwrap().with_endpoint(e);
        for ok in [
            "http://127.0.0.1:8333",
            "http://127.8.9.1",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "https://s3.example.net",
            "https://10.1.2.3:8443/",
        ] {
            assert!(c(ok).check_endpoint().is_ok(), "{ok}");
        }
        for bad in [
            "http://10.1.2.3:8333",
            "http://localhost.example.com:9000",
            "http://127.0.0.1.nip.io",
            "http://user@10.0.0.1",
            "http://[::2]:9000",
            "ftp://127.0.0.1",
            "127.0.0.1:8333",
            "https://",
        ] {
            let e = c(bad).check_endpoint().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
        }
        assert!(!c("http://localhost.example.com").allow_http);
        // A user and password in the endpoint, even to loopback: refused, and the
        // message does not quote them. A query or fragment: refused.
        for bad in [
            "http://user:pw-secret@127.0.0.1:9000",
            "https://u:pw-secret@s3.example.net/",
            "http://127.0.0.1:9000?x=1",
            "https://s3.example.net/#frag",
        ] {
            let e = c(bad).check_endpoint().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
            assert!(!e.to_string().contains("pw-secret"), "{e}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://bucket/a/b/").unwrap(),
            ("bucket".into(), "a/b".into())
        );
        assert_eq!(
            parse_url("s3://bucket").unwrap(),
            ("bucket".into(), "".into())
        );
        for bad in [
            "http://bucket/x",
            "s3://B/x",
            "s3:///x",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
            "s3://ab/x",
            "s3://user:pw-secret@bucket/x",
            "s3://bucket/uni/\u{e9}",
            "s3://bucket/pct%2Fx",
            "s3://bucket/q?x=1",
            "s3://bucket/a*b",
            "s3://bucket/a~b",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
            assert!(!e.to_string().contains("pw-secret"), "{e}");
        }
        // What the client writes as it is.
        let odd = "a=b+c, d;e:f@g$h&i!j'(k)_-.0";
        assert_eq!(
            parse_url(&format!("s3://bucket/{odd}")).unwrap(),
            ("bucket".into(), odd.into())
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG"),
            session_token: Some(Secret::new("TOKEN-SECRET-123")),
        };
        let cfg = Config::from_url("s3://bucket/p")
            .unwrap()
            .with_credentials(CredentialSource::Static(c.clone()));
        for s in [
            format!("{c:?}"),
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{cfg}"),
            format!("{}", c.secret_access_key),
        ] {
            assert!(!s.contains("wJalrXUtnFEMI"), "{s}");
            assert!(!s.contains("TOKEN-SECRET"), "{s}");
        }
        assert!(format!("{cfg:?}").contains("AKIDEXAMPLE"));
        // Nor does the client (building it makes no request).
        let remote = crate::Remote::new(cfg.with_endpoint("http://127.0.0.1:9")).unwrap();
        let s = format!("{remote:?}");
        assert!(
            !s.contains("wJalrXUtnFEMI") && !s.contains("TOKEN-SECRET"),
            "{s}"
        );
    }

    #[test]
    fn credentials_file_mode_and_format() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "# test\n[other]\naws_access_key_id = NO\n[default]\naws_access_key_id = ID1\n\
             aws_secret_access_key = s3cr3t-value\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::from_file(&p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        let msg = e.to_string();
        assert!(msg.contains("0644") && msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::from_file(&p).unwrap();
        assert_eq!(c.access_key_id, "ID1");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t-value");
        // The spelling without `aws_` is read too; a key given twice is refused.
        std::fs::write(&p, "access_key_id = ID2\nsecret_access_key = s2\n").unwrap();
        let c = Credentials::from_file(&p).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.expose()),
            ("ID2", "s2")
        );
        std::fs::write(
            &p,
            "aws_access_key_id = ID3\naws_secret_access_key = s3\naccess_key_id = ID4\n",
        )
        .unwrap();
        let msg = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(msg.contains("line 3") && msg.contains("line 1"), "{msg}");
        // A malformed line is reported by number, never echoed.
        std::fs::write(&p, "aws_access_key_id = a\ns3cr3t-line\n").unwrap();
        let msg = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(msg.contains("line 2") && !msg.contains("s3cr3t"), "{msg}");
    }

    #[test]
    fn env_credentials() {
        let c = Credentials::from_lookup(|k| match k {
            "AWS_ACCESS_KEY_ID" => Some("id".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("sec".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.access_key_id, "id");
        assert!(c.session_token.is_none());
        assert!(Credentials::from_lookup(|_| None).is_none());
    }
}
