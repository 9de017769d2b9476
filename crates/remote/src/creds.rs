//! Where credentials come from besides a static key: a file that is read again when it
//! changes, so that a rotated key (a Vault agent or a cron job rewriting the file, a
//! session token renewed before it expires) takes effect without a restart; and the
//! temporary credentials the environment points at (a web identity token, a container
//! credentials endpoint, the EC2 instance metadata service), which object_store's own
//! providers fetch and renew.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3ConfigKey, AwsCredential};
use object_store::CredentialProvider;

use crate::config::Credentials;
use crate::error::Error;

/// How often, at most, a request looks at the file (one `stat`).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What tells one version of the file from another: a rewrite in place changes the
/// modification time and usually the size, a rename over it the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Version {
    fn of(path: &Path) -> std::io::Result<Version> {
        let m = std::fs::metadata(path)?;
        Ok(Version {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

struct State {
    current: Arc<AwsCredential>,
    /// The access key id of `current` (not secret), for the log.
    key_id: String,
    /// The version last read (or last refused: it is not read again until it changes).
    seen: Option<Version>,
    looked: Instant,
}

/// A [`CredentialProvider`] over a credentials file ([`Credentials::from_file`]: mode
/// 600 or 400, AWS's format). The file is read at start (an error then fails the
/// start) and again, at most once a second, whenever it changed. A new version that
/// cannot be used (a mode others can read, a syntax error, no key) is refused with a
/// warning and the key in use is kept; so is a file that is gone (deleted, renamed
/// away), with one warning until it is back.
pub(crate) struct FileCredentials {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for FileCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential itself.
        f.debug_struct("FileCredentials")
            .field("path", &self.path)
            .finish()
    }
}

fn aws(c: &Credentials) -> Arc<AwsCredential> {
    Arc::new(AwsCredential {
        key_id: c.access_key_id.clone(),
        secret_key: c.secret_access_key.expose().to_owned(),
        token: c.session_token.as_ref().map(|t| t.expose().to_owned()),
    })
}

impl FileCredentials {
    /// Reads `path` now.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let seen = Version::of(path).ok();
        let c = Credentials::from_file(path)?;
        Ok(FileCredentials {
            path: path.to_owned(),
            state: Mutex::new(State {
                current: aws(&c),
                key_id: c.access_key_id,
                seen,
                looked: Instant::now(),
            }),
        })
    }

    /// The credential to sign with: the file's, read again first if it changed.
    pub(crate) fn current(&self) -> Arc<AwsCredential> {
        let mut s = self.state.lock().expect("not poisoned");
        if s.looked.elapsed() >= LOOK_EVERY {
            s.looked = Instant::now();
            let shown = self.path.display();
            match self.look(&mut s) {
                Looked::Same => {}
                Looked::Read(previous) => tracing::info!(
                    file = %shown,
                    access_key = %s.key_id,
                    previous = %previous,
                    "remote tier: read the changed credentials file"
                ),
                Looked::Refused(e) => tracing::warn!(
                    error = %e,
                    access_key = %s.key_id,
                    "remote tier: the changed credentials file is refused; still using the key read before"
                ),
                Looked::Gone(e) => tracing::warn!(
                    file = %shown,
                    error = %e,
                    access_key = %s.key_id,
                    "remote tier: the credentials file is gone (deleted or renamed away); still \
                     using the key read before, until a usable file is back at that path"
                ),
            }
        }
        s.current.clone()
    }

    /// Looks at the file once: reads it if it changed since the last look, and keeps
    /// what it read if it can be used.
    fn look(&self, s: &mut State) -> Looked {
        let now = match Version::of(&self.path) {
            Ok(v) => Some(v),
            // Said once: `seen` is `None` until the file is back.
            Err(e) if s.seen.is_some() => {
                s.seen = None;
                return Looked::Gone(e);
            }
            Err(_) => return Looked::Same,
        };
        if now == s.seen {
            return Looked::Same;
        }
        s.seen = now;
        match Credentials::from_file(&self.path) {
            Ok(c) => {
                s.current = aws(&c);
                Looked::Read(std::mem::replace(&mut s.key_id, c.access_key_id))
            }
            Err(e) => Looked::Refused(e),
        }
    }
}

/// What one look at the credentials file found.
#[derive(Debug)]
enum Looked {
    /// Not changed since the last look (or still gone).
    Same,
    /// A changed file, read and now in use; with the access key id used before.
    Read(String),
    /// A changed file that cannot be used (its mode, its text): the key is kept.
    Refused(Error),
    /// The file is no longer there (or cannot be looked at): the key is kept.
    Gone(std::io::Error),
}

#[async_trait::async_trait]
impl CredentialProvider for FileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        Ok(self.current())
    }
}

/// The settings for object_store's providers of temporary credentials that the
/// environment names (`get` reads a variable), in the AWS SDKs' order: a web identity
/// token (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`), an ECS task role
/// (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), EKS Pod Identity
/// (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
/// Empty if it names none.
pub(crate) fn ambient(get: impl Fn(&str) -> Option<String>) -> Vec<(AmazonS3ConfigKey, String)> {
    use AmazonS3ConfigKey as K;
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    if let (Some(token), Some(role)) = (get("AWS_WEB_IDENTITY_TOKEN_FILE"), get("AWS_ROLE_ARN")) {
        out.push((K::WebIdentityTokenFile, token));
        out.push((K::RoleArn, role));
        if let Some(s) = get("AWS_ROLE_SESSION_NAME") {
            out.push((K::RoleSessionName, s));
        }
        if let Some(e) = get("AWS_ENDPOINT_URL_STS") {
            out.push((K::StsEndpoint, e));
        }
    } else if let Some(uri) = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        out.push((K::ContainerCredentialsRelativeUri, uri));
    } else if let (Some(uri), Some(token)) = (
        get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ) {
        out.push((K::ContainerCredentialsFullUri, uri));
        out.push((K::ContainerAuthorizationTokenFile, token));
    }
    out
}

/// The settings for the instance metadata service: its address, if
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` gives one (as for the AWS SDKs).
pub(crate) fn instance(get: impl Fn(&str) -> Option<String>) -> Vec<(AmazonS3ConfigKey, String)> {
    get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .filter(|v| !v.is_empty())
        .map(|e| (AmazonS3ConfigKey::MetadataEndpoint, e))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, mode: u32, text: &str) {
        // As an agent would: a new file renamed over the old one.
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn creds(id: &str, secret: &str) -> String {
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n")
    }

    fn after_a_look(f: &FileCredentials) -> Arc<AwsCredential> {
        f.state.lock().unwrap().looked = Instant::now() - LOOK_EVERY;
        f.current()
    }

    #[test]
    fn a_rotated_file_is_used_and_a_refused_one_keeps_the_key_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        write(&p, 0o600, &creds("KEY1", "secret1"));
        let f = FileCredentials::open(&p).unwrap();
        assert_eq!(f.current().key_id, "KEY1");

        // Rotated: used at the next look, not before (at most one stat a second).
        write(&p, 0o600, &creds("KEY2", "secret2"));
        assert_eq!(f.current().key_id, "KEY1", "looked less than a second ago");
        let c = after_a_look(&f);
        assert_eq!(
            (c.key_id.as_str(), c.secret_key.as_str()),
            ("KEY2", "secret2")
        );

        // Readable by others, then not a credentials file: refused, KEY2 kept.
        write(&p, 0o644, &creds("KEY3", "secret3"));
        assert_eq!(after_a_look(&f).key_id, "KEY2");
        write(&p, 0o600, "nothing useful here\n");
        assert_eq!(after_a_look(&f).key_id, "KEY2");
        // Gone for a moment (a rotation that removes, then writes): kept too, and said
        // once, not at every look while it stays gone.
        std::fs::remove_file(&p).unwrap();
        assert_eq!(after_a_look(&f).key_id, "KEY2");
        let look = || {
            let mut s = f.state.lock().unwrap();
            f.look(&mut s)
        };
        write(&p, 0o600, &creds("KEY2", "secret2"));
        assert!(matches!(look(), Looked::Read(_)));
        std::fs::rename(&p, dir.path().join("moved-away")).unwrap();
        assert!(matches!(look(), Looked::Gone(_)));
        assert!(matches!(look(), Looked::Same), "said once per change");
        assert_eq!(f.current().key_id, "KEY2");

        // Back, then rewritten in place with a session token.
        write(&p, 0o600, &creds("KEY4", "secret4"));
        assert_eq!(after_a_look(&f).token, None);
        let text = format!("{}aws_session_token = tok4\n", creds("KEY4", "secret4"));
        std::fs::write(&p, text).unwrap();
        let c = after_a_look(&f);
        assert_eq!(
            (c.key_id.as_str(), c.token.as_deref()),
            ("KEY4", Some("tok4"))
        );
    }

    #[test]
    fn the_environment_names_one_source_of_temporary_credentials_in_the_sdks_order() {
        use AmazonS3ConfigKey as K;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(ambient(env(&[])).is_empty());
        // A token file without a role, or a full URI without its token: not a source.
        assert!(ambient(env(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")])).is_empty());
        assert!(ambient(env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://x")])).is_empty());
        let all: &'static [(&str, &str)] = &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/cache"),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds"),
        ];
        assert_eq!(
            ambient(env(all)),
            [
                (K::WebIdentityTokenFile, "/var/run/token".to_string()),
                (K::RoleArn, "arn:aws:iam::1:role/cache".to_string())
            ]
        );
        assert_eq!(
            ambient(env(&[(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/creds"
            )])),
            [(K::ContainerCredentialsRelativeUri, "/v2/creds".to_string())]
        );
        assert_eq!(
            instance(env(&[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://127.0.0.1:9"
            )])),
            [(K::MetadataEndpoint, "http://127.0.0.1:9".to_string())]
        );
        assert!(instance(env(&[])).is_empty());
    }

    #[test]
    fn the_debug_form_names_the_file_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        write(&p, 0o600, &creds("KEYID", "very-secret-value"));
        let f = FileCredentials::open(&p).unwrap();
        let shown = format!("{f:?}");
        assert!(
            shown.contains("creds") && !shown.contains("very-secret-value"),
            "{shown}"
        );
    }

    #[test]
    fn a_file_others_can_read_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        write(&p, 0o640, &creds("KEYID", "s"));
        let e = FileCredentials::open(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
