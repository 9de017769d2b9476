//! Nothing goes through the tier before its store has shown that it honours conditional
//! writes (docs/STORAGE.md, "A store must honour conditional writes").
//!
//! Every rule between hosts (the larger stamp wins, a delete is not undone by another
//! host's pending upload) is enforced by the store refusing conditional PUTs. A store
//! that passes over `If-None-Match` or `If-Match` accepts them all, and breaks those
//! rules without a sign. So at start a task checks the store
//! ([`objmapper_remote::Remote::check_conditional_writes`]); until it passes, uploads,
//! deletes, purges and sweeps wait in their queues, and a cold miss waits for the
//! verdict (within its timeout) before it reads through. A store found wanting keeps
//! the tier shut, shows `unguarded` in the state, and is checked again, less and less
//! often (at least every five minutes), so that a fixed or upgraded store is used
//! without a restart; a store that passed is checked again every hour. Reading the
//! event log is not gated: applying other hosts' deletes and purges here only ever
//! drops local copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use objmapper_remote::ErrorKind;
use tokio::sync::watch;

use super::Core;

/// What is known of the store's conditional writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Not checked yet (or the check could not reach the store).
    Checking,
    /// Both headers honoured.
    Honoured,
    /// Not honoured: the check's error, for the state and the log.
    Unguarded(String),
}

/// The gate: shut until the check passes.
#[derive(Debug)]
pub(super) struct Gate {
    verdict: watch::Sender<Verdict>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            verdict: watch::Sender::new(Verdict::Checking),
        }
    }
}

impl Gate {
    /// Whether the store honours conditional writes (checked and passed).
    pub(super) fn open(&self) -> bool {
        *self.verdict.borrow() == Verdict::Honoured
    }

    /// Whether the store was found not to honour them.
    pub(super) fn unguarded(&self) -> bool {
        matches!(*self.verdict.borrow(), Verdict::Unguarded(_))
    }

    /// The check's error, if the store was found not to honour them.
    pub(super) fn unguarded_error(&self) -> Option<String> {
        match &*self.verdict.borrow() {
            Verdict::Unguarded(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Waits until the gate opens.
    pub(super) async fn opened(&self) {
        let mut rx = self.verdict.subscribe();
        let _ = rx.wait_for(|v| *v == Verdict::Honoured).await;
    }

    /// Waits at most `bound` for a verdict; whether the gate is open then.
    pub(super) async fn open_within(&self, bound: Duration) -> bool {
        if self.open() {
            return true;
        }
        let mut rx = self.verdict.subscribe();
        let _ = tokio::time::timeout(bound, rx.wait_for(|v| *v != Verdict::Checking)).await;
        self.open()
    }
}

/// The longest wait between two checks of a store that failed one.
const RECHECK_MAX: Duration = Duration::from_secs(300);

/// The longest wait between two checks that could not reach the store (it answers
/// again: the gate opens within this).
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How often a store that stays unguarded is logged again.
const LOG_EVERY: Duration = Duration::from_secs(600);

/// How often a store that passed is checked again: the endpoint may come to be served
/// by something else (a gateway upgraded or replaced) without this host restarting.
const RECHECK_OPEN: Duration = Duration::from_secs(3600);

/// Checks the store until it passes, then opens the gate; checks it again every
/// [`RECHECK_OPEN`], and shuts the gate if it fails then (a check that cannot reach the
/// store leaves the gate as it is).
pub(super) async fn check_loop(core: Arc<Core>) {
    let mut wait = Duration::from_secs(1);
    let mut logged: Option<Instant> = None;
    while !core.stop.load(std::sync::atomic::Ordering::Acquire) {
        let r = core.remote.check_conditional_writes().await;
        match r {
            Ok(()) => {
                core.health.answered("checking conditional writes");
                if core.gate.unguarded() {
                    tracing::info!(
                        "remote tier: the store now honours conditional writes; reading \
                         and writing through it again"
                    );
                }
                core.gate.verdict.send_replace(Verdict::Honoured);
                core.wake.notify_waiters();
                logged = None;
                wait = RECHECK_OPEN;
            }
            Err(e) if e.kind() == ErrorKind::Unguarded => {
                core.counters.error(e.kind());
                let msg = e.to_string();
                if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::error!(state = "unguarded", error = %msg, "remote tier: {msg}");
                    logged = Some(Instant::now());
                }
                core.gate.verdict.send_replace(Verdict::Unguarded(msg));
                wait = (wait * 2).min(RECHECK_MAX);
            }
            // Unreachable, refused, no bucket: the state says so; try again soon.
            Err(e) => {
                core.note("checking conditional writes", &Err::<(), _>(e));
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
        tokio::time::sleep(wait).await;
    }
}
