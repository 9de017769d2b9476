//! A real SeaweedFS for the tests, through scripts/seaweedfs.
//!
//! If SeaweedFS cannot be installed or started, the tests fail, loudly. Setting
//! `OBJMAPPER_SKIP_SEAWEEDFS=1` makes them pass without running instead (and say so);
//! CI must not set it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use objmapper_remote::{
    Config, CredentialSource, Credentials, HostId, Record, Remote, Secret, Stamp,
};

/// scripts/seaweedfs.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/seaweedfs")
}

/// A running `weed server -s3`, stopped (by pid) when dropped; a watchdog also stops
/// it when the test process exits some other way.
pub struct Seaweed {
    pub endpoint: String,
    /// The HTTPS endpoint, when started with a certificate ([`Seaweed::start_on`]).
    pub https_endpoint: Option<String>,
    pub pid: u32,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

/// Whether the tests should skip (only with `OBJMAPPER_SKIP_SEAWEEDFS=1`).
pub fn skip() -> bool {
    if std::env::var("OBJMAPPER_SKIP_SEAWEEDFS").is_ok_and(|v| v == "1") {
        eprintln!("OBJMAPPER_SKIP_SEAWEEDFS=1: not running the SeaweedFS test");
        return true;
    }
    false
}

impl Seaweed {
    /// Starts a server of its own, on 127.0.0.1.
    pub fn start() -> Seaweed {
        Seaweed::launch(Command::new(script()))
    }

    /// Starts a server of its own listening on `ip` only (an address of this host's,
    /// a veth end, say), and with `tls` = (certificate, key) PEM files also on an
    /// HTTPS port ([`Seaweed::https_endpoint`]).
    pub fn start_on(ip: &str, tls: Option<(&Path, &Path)>) -> Seaweed {
        let mut c = Command::new(script());
        c.env("OBJMAPPER_SEAWEEDFS_IP", ip);
        if let Some((cert, key)) = tls {
            c.env("OBJMAPPER_SEAWEEDFS_TLS_CERT", cert)
                .env("OBJMAPPER_SEAWEEDFS_TLS_KEY", key);
        }
        Seaweed::launch(c)
    }

    /// Runs `script start` (as `c`, with its environment) in a fresh directory.
    fn launch(mut c: Command) -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("objm-seaweedfs.")
            .tempdir()
            .expect("temp dir");
        let out = c
            .arg("start")
            .arg(dir.path())
            .env("OBJMAPPER_SEAWEEDFS_OWNER", std::process::id().to_string())
            .output()
            .expect("run scripts/seaweedfs");
        assert!(
            out.status.success(),
            "scripts/seaweedfs start failed (set OBJMAPPER_SKIP_SEAWEEDFS=1 to skip these tests \
             on a machine without SeaweedFS):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in {text}"))
                .to_owned()
        };
        Seaweed {
            endpoint: get("SEAWEEDFS_ENDPOINT"),
            https_endpoint: text
                .lines()
                .find_map(|l| l.strip_prefix("SEAWEEDFS_HTTPS_ENDPOINT="))
                .map(str::to_owned),
            pid: get("SEAWEEDFS_PID").parse().unwrap(),
            access_key: get("SEAWEEDFS_ACCESS_KEY"),
            secret_key: get("SEAWEEDFS_SECRET_KEY"),
            _dir: dir,
        }
    }

    /// The directory `scripts/seaweedfs start` was given (its data, log and lists).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// One server shared by the tests of this binary (each uses its own bucket).
    pub fn shared() -> &'static Seaweed {
        static S: OnceLock<Seaweed> = OnceLock::new();
        S.get_or_init(Seaweed::start)
    }

    /// Sends `sig` to the server's process group.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), "--".into(), format!("-{}", self.pid)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid);
    }

    /// Freezes the server (SIGSTOP to its process group) and waits until every
    /// thread is stopped: the signal is queued at once, but a loaded machine may let
    /// a request through before the last thread stops.
    pub fn freeze(&self) {
        self.signal("STOP");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).unwrap();
            let all_stopped = tasks.filter_map(|t| t.ok()).all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .map(|st| {
                        // The state follows the command name in parentheses.
                        st.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
                    })
                    .unwrap_or(true)
            });
            if all_stopped {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "weed did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A configuration for a fresh bucket named after `test` (unique per process).
    pub fn config(&self, test: &str, host: &str) -> Config {
        static N: AtomicU32 = AtomicU32::new(0);
        let bucket = format!(
            "t-{}-{}-{}",
            test.replace('_', "-"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.config_for(&bucket, host)
    }

    /// A configuration for `bucket` as host `host`.
    pub fn config_for(&self, bucket: &str, host: &str) -> Config {
        Config::from_url(&format!("s3://{bucket}/objm/test"))
            .unwrap()
            .with_endpoint(&self.endpoint)
            .with_credentials(CredentialSource::Static(Credentials {
                access_key_id: self.access_key.clone(),
                secret_access_key: Secret::new(&self.secret_key),
                session_token: None,
            }))
            .with_host(HostId::new(host).unwrap())
            // Generous under a loaded 2-core CI machine; the fault tests set their own.
            .with_timeout(Duration::from_secs(10))
            .with_miss_ttl(Duration::ZERO)
    }

    /// The raw object store of `cfg`'s bucket, to tamper with objects.
    pub fn raw(&self, cfg: &Config) -> Arc<dyn object_store::ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&cfg.bucket)
                .with_region("us-east-1")
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.pid.to_string())
            .arg(self._dir.path())
            .status();
    }
}

/// A client configuration for `s3://fake/p` at `endpoint` (a fake or a hole, not
/// SeaweedFS) as host `host`, with a made-up key.
pub fn config_at(endpoint: &str, host: &str) -> Config {
    Config::from_url("s3://fake/p")
        .unwrap()
        .with_endpoint(endpoint)
        .with_credentials(CredentialSource::Static(Credentials {
            access_key_id: "k".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
        }))
        .with_host(HostId::new(host).unwrap())
        .with_miss_ttl(Duration::ZERO)
}

/// A record for `body` under `key`.
pub fn record(key: &[u8], body: &[u8]) -> Record {
    Record {
        key: key.to_vec(),
        version: 1,
        size: body.len() as u64,
        mtime_ns: 1,
        checksum: xxhash_rust::xxh3::xxh3_64(body),
        expires_at: None,
        pinned: false,
        ephemeral: false,
        content_type: Some("text/plain".into()),
        custom: vec![("h:ETag".into(), b"\"v1\"".to_vec())],
    }
}

/// A stamp at `t` ns by `host`.
pub fn stamp(t: u64, host: &str) -> Stamp {
    Stamp {
        time_ns: t,
        host: HostId::new(host).unwrap(),
    }
}

/// A fresh temp file.
pub fn tmpfile() -> std::fs::File {
    tempfile::tempfile().unwrap()
}

/// Reads a whole file from the start.
pub fn read_all(f: &mut std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Creates the bucket of `cfg` (SeaweedFS creates a bucket on the first PUT for
/// an admin identity; this makes it explicit by writing and removing a marker).
pub async fn create_bucket(sw: &Seaweed, cfg: &Config) {
    use object_store::ObjectStoreExt;
    let raw = sw.raw(cfg);
    let p = object_store::path::Path::from("bucket-marker");
    // The gateway can answer a moment before its filer is ready: retry for 30 s.
    let mut tries = 0;
    while let Err(e) = raw
        .put(&p, object_store::PutPayload::from_static(b"x"))
        .await
    {
        tries += 1;
        assert!(tries < 60, "cannot create the bucket with a first PUT: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    raw.delete(&p).await.unwrap();
}

/// A connected client for a fresh bucket.
pub async fn client(sw: &Seaweed, test: &str, host: &str) -> Remote {
    let cfg = sw.config(test, host);
    create_bucket(sw, &cfg).await;
    Remote::new(cfg).unwrap()
}

/// The stored bytes of the object `name` (a remote name, as `Remote::name_of` gives).
pub async fn raw_bytes(raw: &Arc<dyn object_store::ObjectStore>, name: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    raw.get(&object_store::path::Path::from(name))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Stores `body` as the object `name`, bypassing every check (to tamper with it).
pub async fn put_raw(raw: &Arc<dyn object_store::ObjectStore>, name: &str, body: Vec<u8>) {
    use object_store::ObjectStoreExt;
    raw.put(&object_store::path::Path::from(name), body.into())
        .await
        .unwrap();
}

/// A fake HTTP/1.1 endpoint on a loopback port, for what SeaweedFS cannot play (a
/// metadata service, a recorder of request headers). `answer` gets each request's
/// request line and headers, lowercased, and returns the status line's code and text
/// (`"200 OK"`), extra header lines (each ending in `\r\n`) and the body. Returns the
/// endpoint's `http://IP:PORT`; it serves until the test process ends.
pub fn fake_http(
    answer: impl Fn(&str) -> (&'static str, String, String) + Send + Sync + 'static,
) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let (mut head, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        head.push_str(&lower);
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let (status, headers, text) = answer(&head);
                    let out = format!(
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if w.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}
