//! How the remote tier answers this host, for the people running it: answering,
//! unreachable (timeouts, refused connections, server errors), refusing this host
//! (credentials, the bucket's policy), without its bucket, or refusing the conditional
//! writes over existing objects that it should take. `/v1/stats`, `/readyz?verbose`,
//! `/metrics` and `objmapper stats` show the state and the last error.
//!
//! The state is kept per kind of request (polls of the event log, uploads, deletes and
//! purges, read-throughs, ...), so that one kind failing while the others are answered
//! shows, and stays shown: a 503 on every PUT, or garbage for every LIST, used to make
//! the state flip to `ok` at each other answer and back at each failure, with a log
//! line each way (42 lines in 40 s, found from outside). A kind's failure is cleared
//! by its own answer; another kind's answer clears it only the first time (the tier was
//! down, and is back), not once it has failed again since; a poll of the event log
//! failing, a damaged purge set and conditional writes refused are cleared by nothing
//! else. The state is the gravest of the kinds failing.
//!
//! The log: a change to a bad state is logged once at `WARN` with what to do, its end
//! at `INFO` "answering again"; while it stays bad (or flaps) at most one `WARN` a
//! minute says how many requests failed and how often the state changed meanwhile, so
//! a wrong bucket name or a rotated key is seen at once, at the default log level,
//! without a line per request.

use std::collections::HashMap;
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
    /// Conditional writes over existing objects keep being refused (`412`, after every
    /// attempt): most likely a store or gateway whose ETags on GET are not the ones
    /// `If-Match` takes. Writes over existing keys and deletes of them wait.
    Conflicting,
}

impl Health {
    /// Every state, in the order of the `objmapper_remote_state` series.
    pub(crate) const ALL: [Health; 7] = [
        Health::Ok,
        Health::Unreachable,
        Health::Refused,
        Health::NoBucket,
        Health::PurgeSetDamaged,
        Health::Unguarded,
        Health::Conflicting,
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
            Health::Conflicting => "conflicting",
        }
    }

    /// How grave it is, when several kinds of request fail: the one that stops most.
    fn rank(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Conflicting => 1,
            Health::Unreachable => 2,
            Health::Refused => 3,
            Health::NoBucket => 4,
            Health::PurgeSetDamaged => 5,
            Health::Unguarded => 6,
        }
    }

    /// What a failed request says about the tier as a whole; `None` for failures of
    /// one object or one request (a damaged object, a local read). A conditional write
    /// that lost every attempt (16) is not one lost race: other hosts writing the key
    /// without pause, or, far likelier, ETags that `If-Match` refuses.
    fn of(e: &Error) -> Option<Health> {
        match e {
            Error::NoBucket { .. } => Some(Health::NoBucket),
            Error::PurgeSetDamaged { .. } => Some(Health::PurgeSetDamaged),
            Error::Unguarded { .. } => Some(Health::Unguarded),
            _ => match e.kind() {
                ErrorKind::Timeout | ErrorKind::Unavailable => Some(Health::Unreachable),
                ErrorKind::Denied => Some(Health::Refused),
                ErrorKind::Precondition => Some(Health::Conflicting),
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
            Health::Conflicting => {
                "the remote tier keeps refusing conditional writes over existing objects \
                 (412 Precondition Failed at every attempt): most likely the store, or a \
                 gateway or proxy in front of it, answers GETs with ETags that If-Match \
                 does not accept (point the host at the store itself, or make the gateway \
                 pass ETags through); else other hosts write the same keys without pause. \
                 Writes over existing keys and deletes of them wait and retry with \
                 backoff; new keys go up as usual"
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

/// How often a state that stays bad (or flaps) is logged again, at most.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// How long a kind of request's failure counts without failing again, when nothing
/// answered it (the work that failed was dropped, or is not tried that often): longer
/// than the longest backoff of the uploads (30 s) with room for their requests.
const HOLD: Duration = Duration::from_secs(120);

/// The kind of request the event-log poll is (what `event_loop` passes): the tier's
/// pulse, every `poll_interval`. Its failure is the tier failing, whatever else
/// answers, until a poll is answered.
pub(crate) const POLL: &str = "reading the event log";

/// The kind under which conditional writes refused at every attempt are kept, whatever
/// the request: only a write over an existing object taken (`If-Match` honoured), or
/// none refused for [`HOLD`], clears it.
const CONFLICTS: &str = "conditional writes";

/// The longest error text kept for the admin API.
const LAST_ERROR_MAX: usize = 512;

/// How a kind of request last failed.
#[derive(Debug)]
struct Failure {
    health: Health,
    error: String,
    at: Instant,
    /// It failed again after another kind's answer had cleared it (or it is one only
    /// its own answer clears): it fails on its own.
    alone: bool,
    /// Cleared by another kind's answer, with no answer of its own since; failing
    /// again makes it `alone`.
    excused: bool,
}

#[derive(Default)]
struct Inner {
    /// The kinds of request failing, or excused, by name.
    kinds: HashMap<&'static str, Failure>,
    /// The state last worked out, and its error.
    shown: Health,
    shown_error: Option<String>,
    bad_since: Option<Instant>,
    /// The last `WARN`, and whether the bad spell going on was logged (then its end is).
    warned_at: Option<Instant>,
    announced: bool,
    /// Failed requests and changes of state since the last `WARN`.
    failed: u64,
    changes: u64,
    /// The writes over existing objects the client had made, last seen.
    replaced: u64,
}

/// A log line the tracker decided on.
#[derive(Debug, PartialEq)]
enum Line {
    /// A bad spell begins (or is logged for the first time).
    Bad {
        state: Health,
        request: &'static str,
        error: String,
        failed: u64,
        changes: u64,
    },
    /// It goes on.
    Still {
        state: Health,
        error: String,
        failed: u64,
        changes: u64,
        for_seconds: u64,
    },
    /// It is over.
    Back { was: Health, after_seconds: f64 },
}

/// `e`'s text, at most [`LAST_ERROR_MAX`] bytes (cut on a character boundary).
fn cut(e: &Error) -> String {
    let mut last = e.to_string();
    if last.len() > LAST_ERROR_MAX {
        let mut cut = LAST_ERROR_MAX;
        while !last.is_char_boundary(cut) {
            cut -= 1;
        }
        last.truncate(cut);
        last.push_str("...");
    }
    last
}

impl Inner {
    /// Works the state out again at `now` (after a request's outcome, or for a look,
    /// `request` naming the request if any), and decides what to log.
    fn settle(&mut self, now: Instant, request: Option<&'static str>) -> Option<Line> {
        self.kinds.retain(|kind, f| {
            *kind == POLL
                || f.health == Health::PurgeSetDamaged
                || now.saturating_duration_since(f.at) < HOLD
        });
        let worst = self
            .kinds
            .values()
            .filter(|f| !f.excused)
            .max_by_key(|f| (f.health.rank(), f.at));
        let (state, error) = match worst {
            Some(f) => (f.health, Some(f.error.clone())),
            None => (Health::Ok, None),
        };
        let was = self.shown;
        let changed = state != was;
        self.shown = state;
        self.shown_error = error.clone();
        if changed {
            self.changes += 1;
        }
        if state == Health::Ok {
            let since = self.bad_since.take();
            if !changed || !std::mem::take(&mut self.announced) {
                return None;
            }
            let after_seconds =
                since.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            return Some(Line::Back { was, after_seconds });
        }
        if was == Health::Ok {
            self.bad_since = Some(now);
        }
        let request = request?;
        if self
            .warned_at
            .is_some_and(|t| now.saturating_duration_since(t) < REPEAT_EVERY)
        {
            return None;
        }
        self.warned_at = Some(now);
        let first = changed || !self.announced;
        self.announced = true;
        let (failed, changes) = (
            std::mem::take(&mut self.failed),
            std::mem::take(&mut self.changes),
        );
        let error = error.unwrap_or_default();
        Some(if first {
            Line::Bad {
                state,
                request,
                error,
                failed,
                changes,
            }
        } else {
            let for_seconds = self
                .bad_since
                .map_or(0, |t| now.saturating_duration_since(t).as_secs());
            Line::Still {
                state,
                error,
                failed,
                changes,
                for_seconds,
            }
        })
    }
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

    /// A request of the kind `what` was answered (found, absent or stored). It clears
    /// that kind's failure, and the failures of the others that have not failed again
    /// since an answer (except a damaged purge set: see
    /// [`Tracker::answered_with_purges`]).
    pub(crate) fn answered(&self, what: &'static str) {
        self.log(self.answered_at(what, false, Instant::now()));
    }

    /// A request that needed the purge set read was answered: the set is sound again
    /// (the event log or the check answering says nothing of it, and clearing it there
    /// made the state flip at every poll).
    pub(crate) fn answered_with_purges(&self, what: &'static str) {
        self.log(self.answered_at(what, true, Instant::now()));
    }

    /// A request of the kind `what` failed with `e`.
    pub(crate) fn failed(&self, what: &'static str, e: &Error) {
        self.log(self.failed_at(what, e, Instant::now()));
    }

    /// The client has made `total` writes over existing objects so far: once one more
    /// was taken, `If-Match` works, and refused conditional writes are no longer the
    /// state.
    pub(crate) fn replaced(&self, total: u64) {
        let mut i = self.inner.lock();
        if total <= i.replaced {
            return;
        }
        i.replaced = total;
        if i.kinds.remove(CONFLICTS).is_some() {
            let line = i.settle(Instant::now(), None);
            drop(i);
            self.log(line);
        }
    }

    /// The state and the last error that set it (`None` while answering).
    pub(crate) fn get(&self) -> (Health, Option<String>) {
        let (r, line) = self.get_at(Instant::now());
        self.log(line);
        r
    }

    fn get_at(&self, now: Instant) -> ((Health, Option<String>), Option<Line>) {
        let mut i = self.inner.lock();
        let line = i.settle(now, None);
        ((i.shown, i.shown_error.clone()), line)
    }

    fn answered_at(&self, what: &'static str, purges: bool, now: Instant) -> Option<Line> {
        let mut i = self.inner.lock();
        // A damaged purge set is cleared only by a request that read the set.
        i.kinds.retain(|kind, f| {
            let cleared = match f.health {
                Health::PurgeSetDamaged => purges,
                _ => *kind == what,
            };
            !cleared
        });
        for f in i.kinds.values_mut() {
            if !f.alone {
                f.excused = true;
            }
        }
        i.settle(now, None)
    }

    fn failed_at(&self, what: &'static str, e: &Error, now: Instant) -> Option<Line> {
        let health = Health::of(e)?;
        let kind = if health == Health::Conflicting {
            CONFLICTS
        } else {
            what
        };
        // Cleared by nothing but its own answer (or, for conflicts, a write over an
        // existing object taken).
        let own = kind == POLL || kind == CONFLICTS || health == Health::PurgeSetDamaged;
        let error = cut(e);
        let mut i = self.inner.lock();
        i.failed += 1;
        let f = i.kinds.entry(kind).or_insert(Failure {
            health,
            error: String::new(),
            at: now,
            alone: own,
            excused: false,
        });
        f.alone |= own || f.excused;
        f.excused = false;
        f.health = health;
        f.error = error;
        f.at = now;
        i.settle(now, Some(what))
    }

    fn log(&self, line: Option<Line>) {
        match line {
            None => {}
            Some(Line::Bad {
                state,
                request,
                error,
                failed,
                changes,
            }) => tracing::warn!(
                state = state.as_str(),
                request,
                error = %error,
                failed_requests = failed,
                state_changes = changes,
                "{}",
                state.advice(&self.credentials)
            ),
            Some(Line::Still {
                state,
                error,
                failed,
                changes,
                for_seconds,
            }) => tracing::warn!(
                state = state.as_str(),
                failed_requests = failed,
                state_changes = changes,
                for_seconds,
                last_error = %error,
                "remote tier: still failing; {}",
                state.advice(&self.credentials)
            ),
            Some(Line::Back { was, after_seconds }) => tracing::info!(
                was = was.as_str(),
                after_seconds = format_args!("{after_seconds:.1}"),
                "remote tier: answering again"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
