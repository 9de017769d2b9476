//! How the remote tier answers this host, for the people running it: answering,
//! unreachable (timeouts, refused connections, server errors), refusing this host
//! (credentials, the bucket's policy) or without its bucket. A change of state is
//! logged once, at `WARN` going bad and `INFO` coming back, with what to do; while it
//! stays bad one `WARN` a minute says how many requests failed meanwhile, so a wrong
//! bucket name or a rotated key is seen at once, at the default log level, without a
//! line per request. `/v1/stats`, `/readyz?verbose`, `/metrics` and `objmapper stats`
//! show the state and the last error.

use std::time::{Duration, Instant};

use objmapper_remote::{CredentialSource, Error, ErrorKind};
use parking_lot::Mutex;

/// The remote tier's state as this host sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Health {
    /// Its last request was answered (or none was made yet).
    #[default]
    Ok,
    /// Timeouts, refused connections, server errors.
    Unreachable,
    /// It refuses this host's requests: credentials or the bucket's policy.
    Refused,
    /// The bucket does not exist at the endpoint.
    NoBucket,
    /// The purge set is damaged: nothing is read through or uploaded until repaired.
    PurgeSetDamaged,
    /// The store does not honour conditional writes: nothing is read through or
    /// written until it does (`gate.rs`).
    Unguarded,
}

impl Health {
    /// Every state, in the order of the `objmapper_remote_state` series.
    pub(crate) const ALL: [Health; 6] = [
        Health::Ok,
        Health::Unreachable,
        Health::Refused,
        Health::NoBucket,
        Health::PurgeSetDamaged,
        Health::Unguarded,
    ];

    /// Its name in the admin API and the metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unreachable => "unreachable",
            Health::Refused => "refused",
            Health::NoBucket => "no_bucket",
            Health::PurgeSetDamaged => "purge_set_damaged",
            Health::Unguarded => "unguarded",
        }
    }

    /// What a failed request says about the tier as a whole; `None` for failures of
    /// one object or one request (a damaged object, a lost race, a local read).
    fn of(e: &Error) -> Option<Health> {
        match e {
            Error::NoBucket { .. } => Some(Health::NoBucket),
            Error::PurgeSetDamaged { .. } => Some(Health::PurgeSetDamaged),
            Error::Unguarded { .. } => Some(Health::Unguarded),
            _ => match e.kind() {
                ErrorKind::Timeout | ErrorKind::Unavailable => Some(Health::Unreachable),
                ErrorKind::Denied => Some(Health::Refused),
                _ => None,
            },
        }
    }

    /// What it means for the host, and what to do; `credentials` says where this host's
    /// key comes from ([`check_credentials`]).
    fn advice(self, credentials: &str) -> String {
        let text = match self {
            Health::Ok => "",
            Health::Unreachable => {
                "the remote tier does not answer: local hits are served as usual, cold \
                 misses answer NOT_FOUND after --remote-timeout, uploads wait and retry"
            }
            Health::Refused => {
                return format!(
                    "the remote tier refuses this host's requests: check {credentials} and \
                     the bucket's policy; uploads, deletes and purges wait and retry"
                )
            }
            Health::NoBucket => {
                "the remote tier's bucket does not exist at this endpoint: create it or \
                 correct --remote; uploads, deletes and purges wait and retry"
            }
            Health::PurgeSetDamaged => {
                "the remote tier's purge set is damaged: cold misses answer NOT_FOUND \
                 without reading through, uploads and purges wait and retry, until it is \
                 restored (or deleted, and the purges made again)"
            }
            Health::Unguarded => {
                "the remote tier's store does not honour conditional writes: cold misses \
                 answer NOT_FOUND without reading through, uploads, deletes and purges \
                 wait, and the store is checked again every few minutes"
            }
        };
        text.to_string()
    }
}

/// What to check, in the advice of a refusal, for the credentials of `source`: the
/// source this host is configured with, not every source there is.
fn check_credentials(source: &CredentialSource) -> String {
    match source {
        CredentialSource::Env => "the key in the daemon's environment (AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or the web identity token, ECS task role or EKS Pod \
             Identity it names; a key from the environment changes with a restart)"
            .into(),
        CredentialSource::Instance => "the EC2 instance profile (--remote-credentials \
             instance): that the instance metadata service (IMDSv2; \
             AWS_EC2_METADATA_SERVICE_ENDPOINT if set) answers this host and that the \
             instance has a role"
            .into(),
        CredentialSource::File(p) => format!(
            "the key in the credentials file {} (--remote-credentials-file; read again \
             when it changes)",
            p.display()
        ),
        CredentialSource::Static(c) => format!("the access key {}", c.access_key_id),
        CredentialSource::Anonymous => "that the bucket takes anonymous requests".into(),
    }
}

/// How often a state that stays bad is logged again.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The longest error text kept for the admin API.
const LAST_ERROR_MAX: usize = 512;

#[derive(Default)]
struct Inner {
    health: Health,
    last_error: Option<String>,
    /// Failed requests since the last log line about them.
    unlogged: u64,
    logged_at: Option<Instant>,
    bad_since: Option<Instant>,
}

/// The remote tier's [`Health`], fed by every request's outcome.
pub(crate) struct Tracker {
    inner: Mutex<Inner>,
    /// What to check about the credentials when the tier refuses this host.
    credentials: String,
}

impl Tracker {
    /// A tracker for a tier whose key comes from `source` (named in the advice).
    pub(crate) fn new(source: &CredentialSource) -> Tracker {
        Tracker {
            inner: Mutex::default(),
            credentials: check_credentials(source),
        }
    }

    /// A request was answered (found, absent or stored). A damaged purge set stays
    /// the state: the event log or the check answering says nothing of the set, and
    /// clearing it there made the state flip at every poll (with a log line each time).
    pub(crate) fn answered(&self) {
        self.answered_reading(false)
    }

    /// A request that needed the purge set read was answered: clears any state.
    pub(crate) fn answered_with_purges(&self) {
        self.answered_reading(true)
    }

    fn answered_reading(&self, purges: bool) {
        let mut i = self.inner.lock();
        if i.health == Health::Ok || !purges && i.health == Health::PurgeSetDamaged {
            return;
        }
        let was = i.health;
        let since = i.bad_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        *i = Inner::default();
        drop(i);
        tracing::info!(
            was = was.as_str(),
            after_seconds = format_args!("{since:.1}"),
            "remote tier: answering again"
        );
    }

    /// A request failed with `e`; `what` names the request (for the log).
    pub(crate) fn failed(&self, what: &'static str, e: &Error) {
        let Some(h) = Health::of(e) else { return };
        let msg = e.to_string();
        let mut i = self.inner.lock();
        let changed = i.health != h;
        let mut last = msg.clone();
        if last.len() > LAST_ERROR_MAX {
            let mut cut = LAST_ERROR_MAX;
            while !last.is_char_boundary(cut) {
                cut -= 1;
            }
            last.truncate(cut);
            last.push_str("...");
        }
        i.last_error = Some(last);
        i.unlogged += 1;
        if changed {
            if i.health == Health::Ok {
                i.bad_since = Some(Instant::now());
            }
            i.health = h;
        } else if i.logged_at.is_some_and(|t| t.elapsed() < REPEAT_EVERY) {
            return;
        }
        let failed = std::mem::take(&mut i.unlogged);
        i.logged_at = Some(Instant::now());
        let since = i.bad_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        drop(i);
        if changed {
            tracing::warn!(
                state = h.as_str(),
                request = what,
                error = %msg,
                "{}",
                h.advice(&self.credentials)
            );
        } else {
            tracing::warn!(
                state = h.as_str(),
                failed_requests = failed,
                for_seconds = format_args!("{since:.0}"),
                last_error = %msg,
                "remote tier: still failing; {}",
                h.advice(&self.credentials)
            );
        }
    }

    /// The state and the last error that set it (`None` while answering).
    pub(crate) fn get(&self) -> (Health, Option<String>) {
        let i = self.inner.lock();
        (i.health, i.last_error.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Error {
        Error::Denied {
            op: "put",
            source: "InvalidAccessKeyId".into(),
        }
    }

    #[test]
    fn tier_wide_failures_set_the_state_and_an_answer_clears_it() {
        let t = Tracker::new(&CredentialSource::Env);
        assert_eq!(t.get(), (Health::Ok, None));
        t.failed("upload", &Error::Invalid("one object's metadata".into()));
        assert_eq!(
            t.get().0,
            Health::Ok,
            "a failure of one object says nothing"
        );
        t.failed("upload", &denied());
        let (h, last) = t.get();
        assert_eq!(h, Health::Refused);
        assert!(last.unwrap().contains("InvalidAccessKeyId"));
        t.failed("poll", &Error::NoBucket { op: "poll" });
        assert_eq!(t.get().0, Health::NoBucket);
        t.failed(
            "fetch",
            &Error::Timeout {
                op: "get",
                after: Duration::from_secs(1),
            },
        );
        assert_eq!(t.get().0, Health::Unreachable);
        t.answered();
        assert_eq!(t.get(), (Health::Ok, None));
    }

    /// A refusal's advice names the credentials this host uses, not every source.
    #[test]
    fn the_advice_of_a_refusal_names_the_configured_source() {
        let advice = |s: CredentialSource| Health::Refused.advice(&check_credentials(&s));
        let imds = advice(CredentialSource::Instance);
        assert!(imds.contains("instance metadata service"), "{imds}");
        assert!(!imds.contains("AWS_ACCESS_KEY_ID"), "{imds}");
        let file = advice(CredentialSource::File("/etc/objmapper/s3".into()));
        assert!(
            file.contains("credentials file /etc/objmapper/s3"),
            "{file}"
        );
        assert!(!file.contains("AWS_ACCESS_KEY_ID"), "{file}");
        let env = advice(CredentialSource::Env);
        assert!(env.contains("AWS_ACCESS_KEY_ID"), "{env}");
        assert!(!env.contains("--remote-credentials-file"), "{env}");
    }

    #[test]
    fn a_damaged_purge_set_stays_until_a_request_reads_the_set() {
        let t = Tracker::new(&CredentialSource::Env);
        t.failed(
            "read-through",
            &Error::PurgeSetDamaged {
                name: "p/purges".into(),
                why: "checksum".into(),
            },
        );
        assert_eq!(t.get().0, Health::PurgeSetDamaged);
        t.answered();
        assert_eq!(
            t.get().0,
            Health::PurgeSetDamaged,
            "the event log answering"
        );
        t.answered_with_purges();
        assert_eq!(t.get(), (Health::Ok, None));
    }

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary() {
        let t = Tracker::new(&CredentialSource::Env);
        let long = "é".repeat(LAST_ERROR_MAX);
        t.failed(
            "upload",
            &Error::Denied {
                op: "put",
                source: long.into(),
            },
        );
        let last = t.get().1.unwrap();
        assert!(last.len() <= LAST_ERROR_MAX + 3, "{}", last.len());
        assert!(last.ends_with("..."));
    }
}
